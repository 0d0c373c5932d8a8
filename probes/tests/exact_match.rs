//! Zero-shot answer scoring against Finer's own Python (`llava/eval/eval_fgvc.py`), run by
//! `tools/exact_match_fixtures.py` on varied cases: prefixes, "</s>" tails, case, punctuation,
//! articles, Unicode, the 20-word exact-match window and the 10-word F1 truth cut.

use gapprobe_probes::exact_match::{
    answer_text, exact_match, normalize_answer, score_answer, token_f1,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    generated: String,
    prefix: String,
    accepted: Vec<String>,
    answer: String,
    normalized_answer: String,
    exact: bool,
    f1: f64,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/exact_match.json"
    );
    let text = std::fs::read_to_string(path).expect("run tools/exact_match_fixtures.py");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_case_scores_as_finer_python_does() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for c in &cases {
        let ctx = format!("generated {:?}, accepted {:?}", c.generated, c.accepted);
        let answer = answer_text(&c.generated, &c.prefix);
        assert_eq!(answer, c.answer, "answer_text: {ctx}");
        assert_eq!(
            normalize_answer(&answer),
            c.normalized_answer,
            "normalize: {ctx}"
        );
        let accepted: Vec<&str> = c.accepted.iter().map(String::as_str).collect();
        let score = score_answer(&answer, &accepted);
        assert_eq!(score.exact, c.exact, "exact: {ctx}");
        assert!(
            (score.f1 - c.f1).abs() <= 1e-12,
            "f1 {} vs {}: {ctx}",
            score.f1,
            c.f1
        );
        // The per-label functions agree with the best-of score.
        assert_eq!(
            score.exact,
            accepted.iter().any(|t| exact_match(&answer, t))
        );
        let best = accepted
            .iter()
            .map(|t| token_f1(&answer, t))
            .fold(0.0, f64::max);
        assert_eq!(score.f1, best);
    }
}

#[test]
fn substring_quirks_of_finer_are_kept() {
    assert!(exact_match("eagles", "eagle"));
    assert!(exact_match("A western gull", "tern"));
    assert!(!exact_match("a golden eagle", "bald eagle"));
    // An empty normalised truth is a substring of anything, as in Python.
    assert!(exact_match("mallard", "The."));
}
