//! Zero-shot answer scoring as the Finer paper (Kim & Ji, EMNLP 2024) scores a VLM's generated
//! answers (its repository's `llava/eval/eval_fgvc.py`): SQuAD's answer normalisation, token F1
//! with the truth cut to its first 10 words, and Finer's modified exact match, which counts a hit
//! when the normalised truth occurs *as a substring* of the first 20 normalised words of the
//! prediction (so truth "eagle" hits "eagles" and "tern" hits "western": kept, as in the paper).
//!
//! Python's semantics are reproduced without a regex dependency: `str.split()` splits on
//! Python's whitespace (Rust's `char::is_whitespace` plus U+001C..U+001F), `string.punctuation`
//! is the 32 ASCII punctuation characters (`char::is_ascii_punctuation`), and
//! `re.sub(r'\b(a|an|the)\b', ' ', text)` becomes "every maximal run of word characters equal to
//! `a`, `an` or `the` is replaced by a space" (checked against the regex by
//! `tools/exact_match_fixtures.py`). Known differences from Python, none reachable with real
//! class names: word characters are `char::is_alphanumeric() || '_'`, which (unlike Python's
//! `str.isalnum()`) also admits the combining marks and circled letters of Unicode's
//! Other_Alphabetic (e.g. U+0345, U+24B6), so an article touching one of them is kept; and
//! lower-casing and character classes follow Rust's Unicode version, not Python's.
//! The reference cases are `probes/tests/fixtures/exact_match.json`.

use serde::Serialize;
use std::collections::HashMap;

use crate::bootstrap::top1_ci;

/// Words of the prediction the modified exact match searches.
const EM_WORDS: usize = 20;
/// Words of the truth token F1 keeps.
const F1_TRUTH_WORDS: usize = 10;
/// Bootstrap resamples of [`summarize`]'s interval.
const BOOTSTRAP: usize = 1000;

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` (no argument): runs of whitespace separate, no empty words.
fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// A word character of Python's `re` (str patterns), up to the difference the module notes.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: maximal word-character runs equal to an article
/// become one space; everything else is kept as it is.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if is_word(c) {
            let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
            let run = &rest[..end];
            out.push_str(if matches!(run, "a" | "an" | "the") {
                " "
            } else {
                run
            });
            rest = &rest[end..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Finer's answer normalisation (SQuAD's): lower case, ASCII punctuation removed, articles
/// a/an/the removed, whitespace collapsed to single spaces (none at either end).
pub fn normalize_answer(s: &str) -> String {
    let no_punc: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    py_split(&remove_articles(&no_punc))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer part of a generated text: after the first `prefix` (e.g. "Answer:"), trimmed,
/// "</s>" removed; the whole text when the prefix is absent (or empty). As in Python, trimming
/// comes before the "</s>" removal, so "Mallard </s>" gives "Mallard ".
pub fn answer_text(generated: &str, prefix: &str) -> String {
    let start = generated.find(prefix).map_or(0, |i| i + prefix.len());
    generated[start..]
        .trim_matches(is_py_space)
        .replace("</s>", "")
}

/// Finer's modified exact match of one prediction against one label: the normalised truth is a
/// substring of the prediction's first 20 normalised words, or the two normalised strings are
/// equal. A truth that normalises to "" (e.g. "the", or an empty label) matches anything, as in
/// Python; callers never pass empty labels.
pub fn exact_match(prediction: &str, truth: &str) -> bool {
    let truth = normalize_answer(truth);
    let prediction = normalize_answer(prediction);
    let head = py_split(&prediction)
        .take(EM_WORDS)
        .collect::<Vec<_>>()
        .join(" ");
    head.contains(&truth) || prediction == truth
}

/// Token-level F1 (truth cut to its first 10 words), 0 when nothing is shared. Shared tokens
/// count with multiplicity (the minimum of the two counts, as Python's `Counter &`).
pub fn token_f1(prediction: &str, truth: &str) -> f64 {
    let prediction = normalize_answer(prediction);
    let truth = normalize_answer(truth);
    let pred_tokens: Vec<&str> = py_split(&prediction).collect();
    let truth_tokens: Vec<&str> = py_split(&truth).take(F1_TRUTH_WORDS).collect();
    let mut truth_counts: HashMap<&str, usize> = HashMap::new();
    for t in &truth_tokens {
        *truth_counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &pred_tokens {
        if let Some(left) = truth_counts.get_mut(t).filter(|n| **n > 0) {
            *left -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred_tokens.len() as f64;
    let recall = same as f64 / truth_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// One answer's score: the best over its accepted labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerScore {
    /// Modified exact match with at least one accepted label.
    pub exact: bool,
    /// Highest token F1 over the accepted labels.
    pub f1: f64,
}

/// Scores `prediction` (already passed through [`answer_text`] by the caller) against every
/// accepted label (the caller decides which: e.g. at the superordinate level Finer accepts the
/// superordinate, coarse or fine label) and keeps the best exact match and the best F1. With no
/// accepted label: not exact, F1 0.
pub fn score_answer(prediction: &str, accepted: &[&str]) -> AnswerScore {
    AnswerScore {
        exact: accepted.iter().any(|t| exact_match(prediction, t)),
        f1: accepted
            .iter()
            .map(|t| token_f1(prediction, t))
            .fold(0.0, f64::max),
    }
}

/// A set of answers' scores: exact-match rate with a 95% percentile-bootstrap interval, and
/// mean F1. Rates are fractions in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerSummary {
    /// Answers scored.
    pub n: usize,
    /// Fraction of exact matches.
    pub exact_match: f64,
    /// 95% percentile-bootstrap interval of `exact_match` (1000 resamples).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Mean token F1.
    pub f1: f64,
}

/// Summarises `scores`; the bootstrap is [`top1_ci`] with 1000 resamples and `seed`. With no
/// scores every field but `n` is NaN (serialised as `null` by serde_json).
pub fn summarize(scores: &[AnswerScore], seed: u64) -> AnswerSummary {
    let n = scores.len();
    let correct: Vec<bool> = scores.iter().map(|s| s.exact).collect();
    let (ci_low, ci_high) = top1_ci(&correct, BOOTSTRAP, seed);
    let mean = |sum: f64| if n == 0 { f64::NAN } else { sum / n as f64 };
    AnswerSummary {
        n,
        exact_match: mean(correct.iter().filter(|&&c| c).count() as f64),
        ci_low,
        ci_high,
        f1: mean(scores.iter().map(|s| s.f1).sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_are_whole_word_runs() {
        // Expected values are Python's re.sub(r'\b(a|an|the)\b', ' ', text).
        for (text, want) in [
            ("theater", "theater"),
            ("a_b", "a_b"),
            ("an1", "an1"),
            ("a.", " ."),
            ("the-end", " -end"),
            ("a an the", "     "),
            ("é a é", "é   é"),
            ("aé", "aé"),
            ("a\u{301}", " \u{301}"),
            ("1a _a_", "1a _a_"),
            ("", ""),
        ] {
            assert_eq!(remove_articles(text), want, "{text:?}");
        }
    }

    #[test]
    fn python_whitespace_includes_ascii_separators() {
        let words: Vec<&str> = py_split("a\u{1c}b\u{a0}c\u{3000} d\u{200b}e").collect();
        assert_eq!(words, ["a", "b", "c", "d\u{200b}e"]);
    }

    fn score(exact: bool, f1: f64) -> AnswerScore {
        AnswerScore { exact, f1 }
    }

    #[test]
    fn summary_of_three_hits_in_four() {
        let scores = [
            score(true, 1.0),
            score(true, 0.5),
            score(false, 0.25),
            score(true, 0.75),
        ];
        let s = summarize(&scores, 7);
        assert_eq!(s.n, 4);
        assert_eq!(s.exact_match, 0.75);
        assert_eq!(s.f1, 0.625);
        assert!(0.0 <= s.ci_low && s.ci_low <= 0.75 && 0.75 <= s.ci_high && s.ci_high <= 1.0);
        assert!(s.ci_low < s.ci_high, "{s:?}");
        assert_eq!(s, summarize(&scores, 7));
    }

    #[test]
    fn empty_summary_is_nan() {
        let s = summarize(&[], 0);
        assert_eq!(s.n, 0);
        assert!(s.exact_match.is_nan() && s.ci_low.is_nan() && s.ci_high.is_nan());
        assert!(s.f1.is_nan());
    }

    #[test]
    fn no_accepted_label_scores_zero() {
        assert_eq!(score_answer("mallard", &[]), score(false, 0.0));
    }
}
