#!/usr/bin/env python3
"""Reference cases for gapprobe-probes' zero-shot answer scoring (probes/src/exact_match.rs).

The scoring functions below are those of the Finer paper's evaluation (Kim & Ji, EMNLP 2024;
its repository's llava/eval/eval_fgvc.py): SQuAD's answer normalisation, token F1 with the
truth cut to its first 10 words, and Finer's modified exact match (the normalised truth found
as a substring of the first 20 normalised words of the prediction). A question's score is the
max over its accepted labels.

Writes probes/tests/fixtures/exact_match.json: a list of cases
{generated, prefix, accepted, answer, normalized_answer, exact, f1} where
answer = remove_ans_prefix(generated, prefix) and exact / f1 are the max over `accepted`.
Before writing, it checks that the character rule the Rust code uses for removing articles
(a maximal run of word characters equal to "a", "an" or "the" becomes a space) gives what
re.sub(r'\\b(a|an|the)\\b', ' ', text) gives, on hand-picked and random strings.

Usage (from the repository root; standard library only):
    python3 tools/exact_match_fixtures.py
"""
import json
import random
import re
import string
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "probes/tests/fixtures/exact_match.json"


# --- Finer's llava/eval/eval_fgvc.py (behaviour verbatim) ---------------------------------
def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def f1_score(prediction, ground_truth):
    normalized_prediction = normalize_answer(prediction)
    normalized_ground_truth = " ".join(normalize_answer(ground_truth).split()[:10])
    prediction_tokens = normalized_prediction.split()
    ground_truth_tokens = normalized_ground_truth.split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    if normalize_answer(ground_truth) in " ".join(normalize_answer(prediction).split()[:20]):
        return 1.0
    return int(normalize_answer(prediction) == normalize_answer(ground_truth))


def remove_ans_prefix(text, prefix="Answer:"):
    i = text.find(prefix)
    start = 0 if i == -1 else i + len(prefix)
    return text[start:].strip().replace("</s>", "")


# --- check of the Rust side's article rule ---------------------------------------------------
def articles_by_runs(text):
    """Maximal runs of word characters (str.isalnum() or '_') equal to a/an/the become ' '."""
    out, run = [], []

    def flush():
        word = ''.join(run)
        out.append(' ' if word in ('a', 'an', 'the') else word)
        run.clear()

    for ch in text:
        if ch.isalnum() or ch == '_':
            run.append(ch)
        else:
            flush()
            out.append(ch)
    flush()
    return ''.join(out)


def check_article_rule():
    fixed = ["theater", "a_b", "an1", "a.", "the-end", "a an the", "thea", "ana", "é a é",
             "aé", "a\u0301", "the\u00a0a", "1a", "_a_", "a", "", "an an", "the_", "ß the ß",
             "a\u0345", "a\u24b6", "a²", "aⅫ", "the٣", "a\u200bb"]
    alphabet = list("athen _-.1é\u0301\u00a0ß²Ⅻ٣\u0345") + [" a ", " an ", " the "]
    rng = random.Random(0)
    randoms = [''.join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
               for _ in range(20000)]
    for text in fixed + randoms:
        want = re.sub(r'\b(a|an|the)\b', ' ', text)
        assert articles_by_runs(text) == want, (text, articles_by_runs(text), want)


# --- cases -------------------------------------------------------------------------------------
LONG = " ".join(f"w{i}" for i in range(1, 20))  # 19 filler words
CASES = [
    # (generated, prefix, accepted)
    ("bald eagle", "Answer:", ["bald eagle"]),
    ("The Bald Eagle.", "Answer:", ["bald eagle"]),
    ("Answer: The Bald Eagle.</s>", "Answer:", ["Bald Eagle"]),
    ("The bird is a bald eagle.", "Answer:", ["bald eagle"]),
    ("It's an American robin!", "Answer:", ["American Robin"]),
    ("This is a golden eagle", "Answer:", ["bald eagle"]),
    ("eagles", "Answer:", ["eagle"]),
    ("A western gull", "Answer:", ["tern"]),
    ("a black tern", "Answer:", ["tern"]),
    ("sparrow", "Answer:", ["House Sparrow"]),
    (LONG + " bald eagle", "Answer:", ["bald eagle"]),  # truth starts at word 20: cut
    (LONG + " eagle", "Answer:", ["eagle"]),  # truth is word 20: hit
    (LONG + " w20 eagle", "Answer:", ["eagle"]),  # word 21: miss
    (LONG + " w20 w21", "Answer:", [LONG + " w20 w21"]),  # > 20 words, equal: hit by ==
    ("The superordinate is bird, the species a Cardinal.", "Answer:", ["bird", "Cardinal", "Northern Cardinal"]),
    ("Northern Cardinal", "Answer:", ["bird", "Cardinal", "Northern Cardinal"]),
    ("a plane", "Answer:", ["airplane", "aircraft", "Boeing 737-800"]),
    ("Boeing 737 800 jet", "Answer:", ["airplane", "Boeing 737-800"]),
    ("no prefix here, just a Mallard", "Answer:", ["mallard"]),
    ("Question: what bird? Answer: Mallard", "Answer:", ["mallard"]),
    ("Answer: Mallard. Answer: Gadwall", "Answer:", ["gadwall"]),
    ("Answer:Answer: Mallard", "Answer:", ["mallard"]),
    ("ASSISTANT: a mallard</s>", "ASSISTANT:", ["mallard"]),
    ("Answer:   Mallard </s>  ", "Answer:", ["mallard"]),
    ("Answer: Mall</s>ard", "Answer:", ["mallard"]),
    ("", "Answer:", ["mallard"]),
    ("Answer:", "Answer:", ["mallard"]),
    ("</s>", "Answer:", ["mallard"]),
    ("Mallard", "", ["mallard"]),
    ("Crème Brûlée", "Answer:", ["crème brûlée"]),
    ("CRÈME BRÛLÉE", "Answer:", ["creme brulee"]),
    ("STRASSE and Straße", "Answer:", ["straße"]),
    ("GROẞE Trappe", "Answer:", ["große trappe"]),
    ("bald\u00a0eagle", "Answer:", ["bald eagle"]),
    ("bald\u2009eagle\u3000bird", "Answer:", ["bald eagle"]),
    ("bald\u001feagle", "Answer:", ["bald eagle"]),
    ("\u2003Answer:\u00a0bald eagle\u2028", "Answer:", ["bald eagle"]),
    ("Cooper’s Hawk", "Answer:", ["Cooper's Hawk"]),
    ("Coopers Hawk", "Answer:", ["Cooper's Hawk"]),
    ("Cooper’s Hawk", "Answer:", ["Cooper’s Hawk"]),
    ("the theater", "Answer:", ["theater"]),
    ("a_b an1", "Answer:", ["ab an1"]),
    ("A.", "Answer:", ["a"]),
    ("the-end", "Answer:", ["theend"]),
    ("A an THE", "Answer:", ["the"]),
    ("Black-throated Blue Warbler", "Answer:", ["Black-throated Blue Warbler"]),
    ("black throated blue warbler", "Answer:", ["Black-throated Blue Warbler"]),
    ("Blackthroated blue warbler", "Answer:", ["Black-throated Blue Warbler"]),
    ("blue warbler", "Answer:", ["Black-throated Blue Warbler"]),
    ("one two three four five six seven eight nine ten",
     "Answer:", ["one two three four five six seven eight nine ten eleven twelve"]),
    ("eleven twelve", "Answer:", ["one two three four five six seven eight nine ten eleven twelve"]),
    ("eagle eagle eagle", "Answer:", ["bald eagle"]),
    ("bald eagle", "Answer:", ["eagle eagle bald"]),
    ("the eagle eagle bald bald bald", "Answer:", ["bald bald eagle hawk"]),
    ("ΟΔΟΣ ΣΑΣ", "Answer:", ["οδος σας"]),
    ("İstanbul pigeon", "Answer:", ["istanbul pigeon"]),
    ("a\u0301 bird", "Answer:", ["bird"]),
    ("Mallard", "Answer:", []),
    ("  ", "Answer:", ["mallard", "duck"]),
]


def main():
    check_article_rule()
    cases = []
    for generated, prefix, accepted in CASES:
        answer = remove_ans_prefix(generated, prefix)
        exact = max((exact_match_score(answer, t) for t in accepted), default=0)
        f1 = max((f1_score(answer, t) for t in accepted), default=0)
        cases.append({
            "generated": generated, "prefix": prefix, "accepted": accepted,
            "answer": answer, "normalized_answer": normalize_answer(answer),
            "exact": bool(exact), "f1": float(f1),
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} cases; article rule checked)")


if __name__ == "__main__":
    main()
