//! End-to-end: the demo pipeline at reduced size through the real CLI binary.

use polars::prelude::SerReader;
use std::path::Path;
use std::process::Command;

mod cache_support;
use cache_support::{bin, ok};

/// Runs the binary and asserts it succeeded.
fn gapprobe(args: &[&str]) -> std::process::Output {
    ok(
        bin().args(args).output().expect("gapprobe runs"),
        &format!("gapprobe {args:?}"),
    )
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run_summary.json")).unwrap()).unwrap()
}

#[test]
fn demo_runs_end_to_end_and_second_run_reuses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let out_s = out.to_str().unwrap();
    let args = [
        "-q",
        "demo",
        "--out",
        out_s,
        "--train-per-class",
        "20",
        "--test-per-class",
        "10",
    ];
    let demo_run = gapprobe(&args);
    // Piped stderr (a log file, a SLURM job's output) gets plain text, not terminal colours.
    let log = String::from_utf8_lossy(&demo_run.stderr);
    assert!(log.contains(" INFO "), "no log lines on stderr: {log}");
    assert!(!log.contains('\x1b'), "escape codes in a piped log: {log}");

    for f in [
        "report.md",
        "modality_gap.png",
        "modality_gap.svg",
        "results.csv",
        "results.json",
        "results.parquet",
        "similarity.csv",
        "similarity.parquet",
        "similarity.png",
        "similarity.svg",
        "layers.png",
        "layers.svg",
        "experiment.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(out.join("modality_gap.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("random weights"),
        "the report must say the weights are random"
    );

    let df = polars::prelude::CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(out.join("results.csv")))
        .unwrap()
        .finish()
        .unwrap();
    // 8 feature points (the demo sweeps vision.layer[1:5].cls; two llm points) × 3 levels, each
    // probed on the whole training split and 1-, 4- and 16-shot.
    assert_eq!(df.height(), 24 * 4, "{df}");
    for col in [
        "top1",
        "top5",
        "mean_per_class",
        "top1_ci_low",
        "top1_ci_high",
    ] {
        let c = df
            .column(col)
            .unwrap()
            .cast(&polars::prelude::DataType::Float64)
            .unwrap();
        for v in c.f64().unwrap().iter() {
            let v = v.unwrap();
            assert!((0.0..=1.0).contains(&v), "{col} = {v} outside [0, 1]");
        }
    }
    // results.parquet holds the same rows, typed.
    let parquet = polars::prelude::ParquetReader::new(
        std::fs::File::open(out.join("results.parquet")).unwrap(),
    )
    .finish()
    .unwrap();
    assert_eq!(parquet.height(), 24 * 4);
    assert_eq!(parquet.get_column_names(), df.get_column_names());
    assert_eq!(
        parquet.column("n_test").unwrap().dtype(),
        &polars::prelude::DataType::UInt64
    );
    assert!(parquet
        .column("top1")
        .unwrap()
        .equals(df.column("top1").unwrap()));
    let all_rows = gapprobe_reports::read_results_csv(&out.join("results.csv")).unwrap();
    let (few, rows): (Vec<_>, Vec<_>) = all_rows.iter().cloned().partition(|r| r.is_few_shot());
    assert_eq!(rows.len(), 24);
    assert!(rows.iter().all(|r| (r.draws, r.top1_std) == (1, 0.0)));
    let fine_pre = rows
        .iter()
        .find(|r| r.level == "fine" && r.feature_point == "vision.layer[-2].patch.mean")
        .expect("fine pre-projection row");
    let chance = 1.0 / fine_pre.n_classes as f64;
    assert_eq!(fine_pre.n_classes, 24);
    assert_eq!(fine_pre.n_test, 24 * 10);
    // Clear margin: the whole 95% interval sits well above chance.
    assert!(
        fine_pre.top1 > 3.0 * chance && fine_pre.top1_ci_low > 2.0 * chance,
        "fine top-1 {} (CI low {}) is not clearly above chance {chance}",
        fine_pre.top1,
        fine_pre.top1_ci_low
    );

    // per_class.csv: every class of every standard probe, its test images adding up to the
    // probe's, its accuracies averaging to the probe's mean per-class accuracy.
    let classes = gapprobe_reports::read_class_csv(&out.join("per_class.csv")).unwrap();
    assert_eq!(
        classes.len(),
        8 * (2 + 6 + 24),
        "8 points × the classes of 3 levels"
    );
    for r in &rows {
        let mine: Vec<_> = classes
            .iter()
            .filter(|c| c.feature_point == r.feature_point && c.level == r.level)
            .collect();
        assert_eq!(mine.len() as u64, r.n_classes, "{r:?}");
        assert_eq!(mine.iter().map(|c| c.n_test).sum::<u64>(), r.n_test);
        let mean = mine.iter().map(|c| c.accuracy).sum::<f64>() / mine.len() as f64;
        assert!((mean - r.mean_per_class).abs() < 1e-9, "{mean} vs {r:?}");
        assert!(mine.iter().all(|c| c.cache_key == r.cache_key));
    }
    assert!(out.join("per_class.png").is_file() && out.join("per_class.svg").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Classes the projection loses")
            && report.contains("![classes the projection loses](per_class.png)")
            && report.contains("**demo · fine** ("),
        "{report}"
    );

    // Few-shot rows: every point and level at 1, 4 and 16 shots per class, 3 draws each, trained
    // on k images per class and scored on the same test images as the standard probe.
    for r in &rows {
        let ks: Vec<u64> = few
            .iter()
            .filter(|f| f.feature_point == r.feature_point && f.level == r.level)
            .map(|f| f.shots)
            .collect();
        assert_eq!(ks, vec![1, 4, 16], "{r:?}");
    }
    for f in &few {
        assert_eq!((f.draws, f.n_test), (3, fine_pre.n_test), "{f:?}");
        assert_eq!(f.n_train, f.shots * f.n_classes, "{f:?}");
        assert!(f.top1_std >= 0.0 && f.top1_ci_low <= f.top1 && f.top1 <= f.top1_ci_high);
    }
    // The text arm's fine probe learns from few examples: 16 shots beat 1 shot, and both beat
    // chance by far.
    let text_fine_k = |k: u64| {
        few.iter()
            .find(|f| {
                f.feature_point == "llm.text.layer[-1].last" && f.level == "fine" && f.shots == k
            })
            .unwrap()
            .top1
    };
    assert!(
        text_fine_k(16) > text_fine_k(1) && text_fine_k(1) > 5.0 * chance,
        "text arm fine: 1-shot {} 16-shot {}",
        text_fine_k(1),
        text_fine_k(16)
    );
    for f in ["few_shot.png", "few_shot.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Few-shot probes")
            && report.contains("![few-shot probes](few_shot.png)")
            && report.contains("| level | feature point | 1-shot | 4-shot | 16-shot | all |")
            && report.contains("### Modality gap by shots"),
        "{report}"
    );

    // The language model's two arms: every level for both, the same images and classes.
    let llm_row = |point: &str, level: &str| {
        rows.iter()
            .find(|r| r.feature_point == point && r.level == level)
            .unwrap_or_else(|| panic!("no {point} row at level {level}"))
    };
    for level in ["superordinate", "coarse", "fine"] {
        let pre = rows
            .iter()
            .find(|r| r.level == level && r.feature_point == "vision.layer[-2].patch.mean")
            .unwrap();
        for point in ["llm.image.layer[-1].last", "llm.text.layer[-1].last"] {
            let r = llm_row(point, level);
            assert_eq!(
                (r.n_classes, r.n_test),
                (pre.n_classes, pre.n_test),
                "{r:?}"
            );
        }
    }
    // The text arm reads the attribute text, which names the shape, the stripe's colour and the
    // spot's side (one text in five leaves one out): far above chance at the fine level, and
    // above the image arm, whose random-weight encoder sees only pixels.
    let (text_fine, image_fine) = (
        llm_row("llm.text.layer[-1].last", "fine"),
        llm_row("llm.image.layer[-1].last", "fine"),
    );
    assert!(
        text_fine.top1 > 10.0 * chance && text_fine.top1_ci_low > 5.0 * chance,
        "text-arm fine top-1 {} (CI low {}) is not clearly above chance {chance}",
        text_fine.top1,
        text_fine.top1_ci_low
    );
    assert!(
        text_fine.top1_ci_low > image_fine.top1_ci_high,
        "text arm {} vs image arm {}",
        text_fine.top1,
        image_fine.top1
    );
    // Their figure and report section.
    for f in ["image_vs_text.png", "image_vs_text.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Image vs text in the language model")
            && report.contains("![image vs text](image_vs_text.png)")
            && report.contains("(`llm.text.layer[-1].last`) |"),
        "{report}"
    );
    // The manifest carries the texts the text arm read; the experiment explains the two arms.
    let manifest = std::fs::read_to_string(out.join("data").join("manifest.csv")).unwrap();
    assert!(
        manifest.lines().next().unwrap().ends_with(",attributes")
            && manifest.contains("shape: ring; stripe color: blue; spot: left"),
        "{}",
        &manifest[..manifest.len().min(400)]
    );
    let toml = std::fs::read_to_string(out.join("experiment.toml")).unwrap();
    assert!(
        toml.contains("llm.image with the image's projector tokens")
            && toml.contains("llm.text with the image's attribute text"),
        "{toml}"
    );

    let first = summary(&out);
    assert!(first["forward_passes"].as_u64().unwrap() > 0);
    // Zero-shot answers: 48 images × 3 levels × 2 arms, scored, drawn and in the report.
    let zero_shot = gapprobe_reports::read_zero_shot_csv(&out.join("zero_shot.csv")).unwrap();
    assert_eq!(zero_shot.len(), 6);
    assert!(zero_shot.iter().all(|r| r.n == 48));
    let answers = std::fs::read_to_string(out.join("answers.jsonl")).unwrap();
    assert_eq!(answers.lines().count(), 6 * 48);
    assert!(out.join("zero_shot.png").is_file() && out.join("zero_shot.svg").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Zero-shot answers"), "{report}");
    assert_eq!(first["entries_extracted"].as_array().unwrap().len(), 8);

    // Second run: everything from the cache, zero forward passes, same numbers.
    gapprobe(&args);
    let second = summary(&out);
    assert_eq!(second["forward_passes"].as_u64().unwrap(), 0, "{second}");
    assert_eq!(second["entries_reused"].as_array().unwrap().len(), 8);
    assert_eq!(second["entries_extracted"].as_array().unwrap().len(), 0);
    let again = gapprobe_reports::read_results_csv(&out.join("results.csv")).unwrap();
    assert_eq!(
        again, all_rows,
        "a cached rerun must reproduce the numbers exactly"
    );
    // And every answer came from answers.jsonl: none asked again, the same scores.
    assert_eq!(
        std::fs::read_to_string(out.join("answers.jsonl")).unwrap(),
        answers
    );
    assert_eq!(
        gapprobe_reports::read_zero_shot_csv(&out.join("zero_shot.csv")).unwrap(),
        zero_shot
    );

    // The cache commands see the entries.
    let ls = gapprobe(&[
        "cache",
        "ls",
        "--cache",
        out.join("cache").to_str().unwrap(),
    ]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert_eq!(ls.lines().count(), 8, "{ls}");
    let key = &rows[0].cache_key[..12];
    let info = gapprobe(&[
        "cache",
        "info",
        key,
        "--cache",
        out.join("cache").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("weights_fingerprint"));
    // The text arm's entry records its input: the prompt, the tokenizer and the texts' hash.
    let text_key = &text_fine.cache_key[..12];
    let info = gapprobe(&[
        "cache",
        "info",
        text_key,
        "--cache",
        out.join("cache").to_str().unwrap(),
    ]);
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("llm_input: {\"prompt\":\"USER: <image>") && info.contains("\"texts\":"),
        "{info}"
    );

    // The layer sweep: a row per layer and level, a figure, and a table in report.md.
    let layers: Vec<&str> = rows
        .iter()
        .filter(|r| r.level == "fine" && r.feature_point.ends_with(".cls"))
        .map(|r| r.feature_point.as_str())
        .collect();
    assert_eq!(
        layers,
        (1..5)
            .map(|k| format!("vision.layer[{k}].cls"))
            .collect::<Vec<_>>()
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Probe accuracy by layer")
            && report.contains("![probe accuracy by layer](layers.png)")
            && report.contains("| layer | superordinate | coarse | fine |"),
        "{report}"
    );

    // Representation similarity: every pair of the eight pooled points, in similarity.csv and
    // report.md, and the `compare` command on any two entries.
    let sims = gapprobe_reports::read_similarity_csv(&out.join("similarity.csv")).unwrap();
    assert_eq!(sims.len(), 28, "{sims:?}");
    for s in &sims {
        assert_eq!((s.n, s.k, s.split.as_str()), (24 * 10, 10, "test"), "{s:?}");
        assert!(
            (0.0..=1.0).contains(&s.linear_cka) && (0.0..=1.0).contains(&s.mutual_knn),
            "{s:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Representation similarity"), "{report}");
    // The language model's two arms at one point share a space: Liang et al.'s centroid gap is
    // filled for them (and for any pair of one width), empty where widths differ.
    let arms = sims
        .iter()
        .find(|s| {
            s.feature_point_a == "llm.image.layer[-1].last"
                && s.feature_point_b == "llm.text.layer[-1].last"
        })
        .expect("image vs text arms compared");
    let gap = arms.centroid_gap.expect("one space, so a centroid gap");
    assert!(gap > 0.0 && gap <= 2.0, "{arms:?}");
    assert!(
        report.contains("### Modality gap between the arms")
            && report.contains(&format!(
                "| demo | test | `llm.{{image,text}}.layer[-1].last` | {gap:.3} |"
            )),
        "{report}"
    );
    let cache = out.join("cache");
    let cache = cache.to_str().unwrap();
    let key_of = |point: &str| {
        rows.iter()
            .find(|r| r.feature_point == point)
            .map(|r| r.cache_key.clone())
            .unwrap()
    };
    let (pre, post) = (
        key_of("vision.layer[-2].patch.mean"),
        key_of("projector.mean"),
    );
    let same = gapprobe(&["compare", &pre, &pre, "--cache", cache]);
    let same = String::from_utf8_lossy(&same.stdout);
    assert!(
        same.contains("1-2     240      1.0000        1.0000          1.0000"),
        "an entry compared with itself must score 1: {same}"
    );
    assert!(
        same.lines()
            .any(|l| l.starts_with("    1-2") && l.ends_with(" 0.0000")),
        "an entry compared with itself has no centroid gap: {same}"
    );
    let json = tmp.path().join("similarity.json");
    gapprobe(&[
        "compare",
        &pre,
        &post,
        "--cache",
        cache,
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let v = &v[0];
    let row = sims
        .iter()
        .find(|s| s.cache_key_a == pre && s.cache_key_b == post)
        .expect("pre vs post row");
    assert_eq!(v["n"].as_u64(), Some(240));
    // Encoder and projector widths differ: no centroid gap between them.
    assert!(
        v["centroid_gap"].is_null() && row.centroid_gap.is_none(),
        "{v}"
    );
    for field in ["linear_cka", "debiased_cka", "mutual_knn"] {
        let csv = match field {
            "linear_cka" => row.linear_cka,
            "debiased_cka" => row.debiased_cka,
            _ => row.mutual_knn,
        };
        assert!(
            (v[field].as_f64().unwrap() - csv).abs() < 1e-12,
            "{field}: compare {} vs similarity.csv {csv}",
            v[field]
        );
    }

    // `report` re-renders from results.csv in place: results.json (the probes' details), the
    // similarity table and the per-class section (from per_class.csv) survive.
    let details = std::fs::read_to_string(out.join("results.json")).unwrap();
    gapprobe(&[
        "report",
        "--results",
        out.join("results.csv").to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("results.json")).unwrap(),
        details
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## Representation similarity")
            && report.contains("## Classes the projection loses")
            && out.join("per_class.png").is_file(),
        "{report}"
    );

    // `run` on the experiment the demo wrote reproduces it from the cache.
    let run = gapprobe(&["-q", "run", out.join("experiment.toml").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("0 forward passes"));

    // A similarity split the dataset lacks (the demo has no 'val') costs the similarity table,
    // not the run: the probes' results are written and the report says what was not computed.
    let toml = std::fs::read_to_string(out.join("experiment.toml"))
        .unwrap()
        .replace("split = \"test\"", "split = \"val\"");
    assert!(
        toml.contains("[similarity]\nenabled = true\nsplit = \"val\""),
        "{toml}"
    );
    let exp = tmp.path().join("val-similarity.toml");
    std::fs::write(&exp, toml).unwrap();
    gapprobe(&["-q", "run", exp.to_str().unwrap()]);
    assert_eq!(
        gapprobe_reports::read_results_csv(&out.join("results.csv")).unwrap(),
        all_rows
    );
    // The earlier run's similarity files are gone, not passed off as this run's.
    for f in [
        "similarity.csv",
        "similarity.parquet",
        "similarity.png",
        "similarity.svg",
    ] {
        assert!(!out.join(f).exists(), "stale {f}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("representation similarity of vision.layer[-2].patch.mean and")
            && report.contains("no 'val' split"),
        "{report}"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_gapprobe"))
        .args(["run", "/nonexistent/experiment.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/experiment.toml"));

    let out = Command::new(env!("CARGO_BIN_EXE_gapprobe"))
        .args([
            "extract",
            "--model",
            "/nonexistent/model",
            "--dataset",
            "manifest:/nonexistent.csv",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.csv"));
}
