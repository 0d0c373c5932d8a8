//! `gapprobe probe --shots`: few-shot rows beside the standard one, their details, bad values
//! refused, and `gapprobe report` drawing the few-shot figure from results.csv.

#[path = "cache_support/mod.rs"]
mod common;

use common::*;

#[test]
fn probe_with_shots_writes_few_shot_rows_and_report_draws_them() {
    let tmp = tempfile::tempdir().unwrap();
    // 6 training images per class: 1- and 2-shot draws with a validation image to spare.
    let dir = tmp.path().join("demo");
    ok(
        bin()
            .args(["-q", "demo", "--out"])
            .arg(&dir)
            .args(["--train-per-class", "6", "--test-per-class", "2"])
            .output()
            .unwrap(),
        "demo",
    );
    let cache = dir.join("cache");
    let entry = entries(&cache)
        .into_iter()
        .find(|e| e.provenance.feature_point == "projector.mean")
        .expect("the demo caches projector.mean");
    let out = tmp.path().join("probe");
    ok(
        bin()
            .args(["-q", "probe", &entry.key[..16], "--levels", "fine,coarse"])
            .args(["--shots", "2,1", "--shot-draws", "2", "--cache"])
            .arg(&cache)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap(),
        "probe --shots",
    );
    let rows = gapprobe_reports::read_results_csv(&out.join("results.csv")).unwrap();
    let got: Vec<(&str, u64, u64)> = rows
        .iter()
        .map(|r| (r.level.as_str(), r.shots, r.draws))
        .collect();
    assert_eq!(
        got,
        vec![
            ("fine", 0, 1),
            ("fine", 1, 2),
            ("fine", 2, 2),
            ("coarse", 0, 1),
            ("coarse", 1, 2),
            ("coarse", 2, 2),
        ],
        "standard probe, then the shot counts in order"
    );
    for r in rows.iter().filter(|r| r.is_few_shot()) {
        assert_eq!(r.n_train, r.shots * r.n_classes, "{r:?}");
        assert_eq!(r.cache_key, entry.key);
    }
    // per_class.csv: the standard probes' classes only (few-shot draws have their own).
    let classes = gapprobe_reports::read_class_csv(&out.join("per_class.csv")).unwrap();
    let standard: u64 = rows
        .iter()
        .filter(|r| !r.is_few_shot())
        .map(|r| r.n_classes)
        .sum();
    assert_eq!(classes.len() as u64, standard);
    // results.json keeps each draw's report.
    let details: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let few = &details[1]["report"];
    assert_eq!(few["shots"], 1);
    assert_eq!(few["draws"].as_array().unwrap().len(), 2, "{few}");
    // Each draw as a summary: its scores and sweep, not its confusion matrix.
    assert!(few["draws"][0]["top1"].is_number() && few["draws"][0]["sweep"].is_array());
    assert!(few["draws"][0].get("confusion").is_none(), "{few}");

    // `report` re-renders from results.csv alone: the few-shot figure and section come back.
    ok(
        bin()
            .args(["-q", "report", "--results"])
            .arg(out.join("results.csv"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap(),
        "report",
    );
    assert!(out.join("few_shot.png").is_file() && out.join("few_shot.svg").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Few-shot probes")
            && md.contains("| level | feature point | 1-shot | 2-shot | all |"),
        "{md}"
    );

    // Zero shots or zero draws: refused before any work, naming the flag.
    for bad in [["--shots", "0"], ["--shot-draws", "0"]] {
        let o = bin()
            .args(["-q", "probe", &entry.key[..16], "--shots", "1"])
            .args(bad)
            .arg("--cache")
            .arg(&cache)
            .arg("--out")
            .arg(tmp.path().join("bad"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--shots") || err.contains("--shot-draws"),
            "{err}"
        );
        assert!(!tmp.path().join("bad").join("results.csv").exists());
    }
}
