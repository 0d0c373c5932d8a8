//! `gapprobe run` with `[[models]]`: two checkpoints on the same images in one report.

#[path = "cache_support/mod.rs"]
mod common;

use common::*;

fn demo(dir: &std::path::Path, seed: &str) {
    ok(
        bin()
            .args(["-q", "demo", "--out"])
            .arg(dir)
            .args([
                "--train-per-class",
                "4",
                "--test-per-class",
                "2",
                "--seed",
                seed,
            ])
            .output()
            .unwrap(),
        "demo",
    );
}

#[test]
fn two_models_are_extracted_probed_and_reported_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    demo(&a, "0");
    // Another seed: other random weights (and images, unused here).
    demo(&b, "7");
    let out = tmp.path().join("out");
    let exp = tmp.path().join("two.toml");
    std::fs::write(
        &exp,
        format!(
            r#"name = "two models"
output = "{out}"

[[models]]
id = "{a}/model"
batch_size = 16

[[models]]
id = "{b}/model"
batch_size = 16

[[datasets]]
spec = "demo:{a}/data"
feature_points = ["vision.layer[-2].patch.mean", "projector.mean"]
levels = ["fine"]
"#,
            out = out.display(),
            a = a.display(),
            b = b.display()
        ),
    )
    .unwrap();
    ok(bin().args(["-q", "run"]).arg(&exp).output().unwrap(), "run");
    let rows = gapprobe_reports::read_results_csv(&out.join("results.csv")).unwrap();
    let ids = [
        format!("{}/model", a.display()),
        format!("{}/model", b.display()),
    ];
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.model.as_str(), r.feature_point.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[0].as_str(), "vision.layer[-2].patch.mean"),
            (ids[0].as_str(), "projector.mean"),
            (ids[1].as_str(), "vision.layer[-2].patch.mean"),
            (ids[1].as_str(), "projector.mean"),
        ]
    );
    // Different weights, same images: same test set, different features.
    assert_eq!(rows[0].n_test, rows[2].n_test);
    assert_ne!(rows[0].cache_key, rows[2].cache_key);
    // Similarity within each model only; per-class rows for every probe.
    let sims = gapprobe_reports::read_similarity_csv(&out.join("similarity.csv")).unwrap();
    assert_eq!(sims.len(), 2, "{sims:?}");
    assert!(sims.iter().all(|s| s.model_a == s.model_b));
    let classes = gapprobe_reports::read_class_csv(&out.join("per_class.csv")).unwrap();
    assert_eq!(classes.len(), 4 * 24);
    // The report names both models and gives each its own gap.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!("Models: `{}`, `{}`", ids[0], ids[1])),
        "{md}"
    );
    let gap_rows = md
        .lines()
        .filter(|l| l.starts_with("| demo | ") && l.contains(" | fine | ") && l.ends_with(" |"))
        .filter(|l| l.split('|').count() == 8)
        .count();
    assert_eq!(gap_rows, 2, "a gap row per model: {md}");
    // A rerun reuses all four entries.
    let summary = |o: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(o.join("run_summary.json")).unwrap()).unwrap()
    };
    assert_eq!(
        summary(&out)["entries_extracted"].as_array().unwrap().len(),
        4
    );
    ok(
        bin().args(["-q", "run"]).arg(&exp).output().unwrap(),
        "rerun",
    );
    assert_eq!(summary(&out)["forward_passes"], 0);

    // Both forms at once, or a model listed twice: refused before any work.
    let text = std::fs::read_to_string(&exp).unwrap();
    for (bad, want) in [
        (
            text.replacen("[[models]]", "[model]\nid = \"x\"\n\n[[models]]", 1),
            "both [model] and [[models]]",
        ),
        (
            text.replace(&format!("{}/model", b.display()), &ids[0]),
            "listed twice",
        ),
    ] {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let o = bin().args(["-q", "run"]).arg(&path).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
}
