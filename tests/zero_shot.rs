//! `gapprobe zero-shot` on the tiny transformers-made LLaVA of features/tests/fixtures/llm:
//! its answers are transformers' greedy `generate` answers (from the image files, and from the
//! texts in the image's place), exact match is scored as Finer scores it, a rerun reuses every
//! answer and a changed setting asks again, and bad requests fail before any work.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod cache_support;
use cache_support::{bin, ok};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("features/tests/fixtures")
}

fn generation() -> Value {
    let p = fixture().join("llm/generation.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The fixture's two images as test images, with the fixture's first two texts as their
/// attributes. The first image's fine label is what transformers answers for it, so that one
/// answer is right; the second's is a word no answer holds.
fn manifest(dir: &Path, texts: bool) -> PathBuf {
    let g = generation();
    let images = fixture().join("models/images");
    let mut csv = String::from("path,split,superordinate,fine");
    csv += if texts { ",attributes\n" } else { "\n" };
    let names: Vec<&String> = g["images"].as_object().unwrap().keys().collect();
    for (i, name) in names.iter().enumerate() {
        let fine = if i == 0 {
            g["images"][name.as_str()]["text"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            "zzqx".to_string()
        };
        let path = images.join(format!("{name}.png"));
        csv += &format!("{},test,Thing,{}", path.display(), csv_field(&fine));
        if texts {
            let text = g["texts"][i]["prompt"].as_str().unwrap();
            // The fixture's text prompts are "USER: {text}\nWhat is this? ASSISTANT:".
            let text = text
                .strip_prefix("USER: ")
                .unwrap()
                .split('\n')
                .next()
                .unwrap();
            csv += &format!(",{}", csv_field(text));
        }
        csv += "\n";
    }
    let p = dir.join(if texts { "m.csv" } else { "bare.csv" });
    std::fs::write(&p, csv).unwrap();
    p
}

fn zero_shot(dataset: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixture().join("llm/llava_tiny");
    let mut cmd = bin();
    cmd.args(["-q", "zero-shot", "--model", model.to_str().unwrap()])
        .args(["--dataset", &format!("manifest:{}", dataset.display())])
        .args(["--out", out.to_str().unwrap()])
        .args(["--ask", "fine=What is this?"])
        .args(extra);
    // The fixture's budget unless the test sets its own.
    if !extra.contains(&"--max-new-tokens") {
        cmd.args(["--max-new-tokens", "12"]);
    }
    cmd.output().unwrap()
}

fn answers(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn answers_are_transformers_greedy_answers_scored_by_exact_match() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("zs");
    let m = manifest(tmp.path(), true);
    let args = ["--arms", "image,text", "--levels", "superordinate,fine"];
    ok(zero_shot(&m, &out, &args), "zero-shot");
    let g = generation();
    let all = answers(&out);
    assert_eq!(all.len(), 2 * 2 * 2, "2 images × 2 arms × 2 levels");
    let fine = |arm: &str| -> Vec<&Value> {
        all.iter()
            .filter(|a| a["arm"] == arm && a["level"] == "fine")
            .collect()
    };
    // Image arm: the chat around "What is this?" is the fixture's image prompt.
    for (a, (name, want)) in fine("image").iter().zip(g["images"].as_object().unwrap()) {
        assert!(a["sample_id"].as_str().unwrap().contains(name.as_str()));
        assert_eq!(a["output"], want["text"], "image {name}");
        assert_eq!(
            a["question"].as_str().unwrap(),
            g["image_prompt"].as_str().unwrap()
        );
    }
    for (i, a) in fine("text").iter().enumerate() {
        assert_eq!(a["output"], g["texts"][i]["text"], "text {i}");
    }
    let image = fine("image");
    assert_eq!(image[0]["exact"], true);
    assert_eq!(image[1]["exact"], false);
    assert_eq!(image[0]["f1"].as_f64().unwrap(), 1.0);
    // Superordinate questions accept the superordinate and the fine label.
    let sup = all.iter().find(|a| a["level"] == "superordinate").unwrap();
    assert_eq!(sup["accepted"].as_array().unwrap().len(), 2);
    assert!(sup["question"].as_str().unwrap().contains("Answer:"));

    let csv = std::fs::read_to_string(out.join("zero_shot.csv")).unwrap();
    let rows = gapprobe_reports::read_zero_shot_csv(&out.join("zero_shot.csv")).unwrap();
    assert_eq!(rows.len(), 4, "{csv}");
    let image_fine = rows
        .iter()
        .find(|r| r.arm == "image" && r.level == "fine")
        .unwrap();
    assert_eq!((image_fine.n, image_fine.exact_match), (2, 0.5));
    for f in [
        "zero_shot.png",
        "zero_shot.svg",
        "zero_shot.md",
        "zero_shot.parquet",
    ] {
        assert!(out.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    let md = std::fs::read_to_string(out.join("zero_shot.md")).unwrap();
    assert!(md.contains("50.0"), "{md}");

    // A rerun asks nothing; a new decoding budget asks again, keeping the old answers.
    ok(zero_shot(&m, &out, &args), "rerun");
    assert_eq!(answers(&out).len(), 8);
    // A smaller --limit asks nothing new and scores only its own images.
    let mut fewer = args.to_vec();
    fewer.extend(["--limit", "1"]);
    ok(zero_shot(&m, &out, &fewer), "limit 1");
    assert_eq!(answers(&out).len(), 8);
    let rows = gapprobe_reports::read_zero_shot_csv(&out.join("zero_shot.csv")).unwrap();
    assert!(rows.iter().all(|r| r.n == 1), "{rows:?}");
    let image_fine = rows
        .iter()
        .find(|r| r.arm == "image" && r.level == "fine")
        .unwrap();
    assert_eq!(
        image_fine.exact_match, 1.0,
        "the first image is the one answered right"
    );
    // Text answers do not depend on whether images were asked about in the same run.
    ok(
        zero_shot(&m, &out, &["--arms", "text", "--levels", "fine"]),
        "text only",
    );
    assert_eq!(answers(&out).len(), 8);
    let longer = [
        "--arms",
        "image",
        "--levels",
        "fine",
        "--max-new-tokens",
        "4",
    ];
    ok(zero_shot(&m, &out, &longer), "shorter budget");
    let after = answers(&out);
    assert_eq!(after.len(), 10);
    let short = &after[8]["output"];
    let full = g["images"].as_object().unwrap().values().next().unwrap()["text"]
        .as_str()
        .unwrap();
    assert!(
        full.starts_with(short.as_str().unwrap().trim()),
        "{short} vs {full}"
    );

    // Changed texts (which the manifest's hash leaves out) are asked again.
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains("dagger"));
    std::fs::write(&m, text.replace("dagger", "cone")).unwrap();
    ok(
        zero_shot(&m, &out, &["--arms", "text", "--levels", "fine"]),
        "new texts",
    );
    assert_eq!(answers(&out).len(), 12);

    // `gapprobe report` takes a zero_shot.csv beside results.csv into report.md.
    let row = gapprobe_reports::ResultRow {
        dataset: "m".into(),
        model: "llava_tiny".into(),
        feature_point: "projector.mean".into(),
        stage: "post-projection".into(),
        level: "fine".into(),
        top1: 0.5,
        top1_ci_low: 0.4,
        top1_ci_high: 0.6,
        top5: 1.0,
        mean_per_class: 0.5,
        macro_f1: 0.5,
        chosen_c: 1.0,
        n_train: 2,
        n_test: 2,
        n_classes: 2,
        solver: "candle".into(),
        cache_key: "k".into(),
        shots: 0,
        draws: 1,
        top1_std: 0.0,
    };
    gapprobe_reports::write_results_csv(&[row], &out.join("results.csv")).unwrap();
    let rendered = tmp.path().join("report");
    let r = bin()
        .args([
            "-q",
            "report",
            "--results",
            out.join("results.csv").to_str().unwrap(),
        ])
        .args(["--out", rendered.to_str().unwrap()])
        .output()
        .unwrap();
    ok(r, "report");
    let md = std::fs::read_to_string(rendered.join("report.md")).unwrap();
    assert!(
        md.contains("## Zero-shot answers") && md.contains("## Results"),
        "{md}"
    );
    assert!(rendered.join("zero_shot.png").is_file());
}

#[test]
fn bad_requests_fail_before_any_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("zs");
    let bare = manifest(tmp.path(), false);
    let r = zero_shot(&bare, &out, &["--arms", "text"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("the text arm needs a text per image"), "{err}");
    assert!(!out.join("answers.jsonl").exists());

    let r = zero_shot(&bare, &out, &["--ask", "finest=What?"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("unknown label level 'finest'"));
    let r = zero_shot(&bare, &out, &["--chat", "USER: {question} ASSISTANT:"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("needs <image>"));
    let r = zero_shot(&bare, &out, &["--levels", "coarse"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("no coarse labels"));
}
