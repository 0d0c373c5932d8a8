//! `skip_bad`: a missing and a corrupt image are skipped, named in the report and stored with the cache entry;
//! without it the run stops with an error naming the file.

use std::process::Command;

mod cache_support;

/// Runs the binary; the caller checks the status.
fn gapprobe(args: &[&str]) -> std::process::Output {
    cache_support::bin()
        .args(args)
        .output()
        .expect("gapprobe runs")
}

#[test]
fn missing_or_corrupt_images_are_an_error_or_a_recorded_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let out = gapprobe(&[
        "-q",
        "demo",
        "--out",
        demo.to_str().unwrap(),
        "--train-per-class",
        "3",
        "--test-per-class",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let victim = demo.join("data/images/circle-warm-stripe-spot-left/train_001.jpg");
    std::fs::remove_file(&victim).unwrap();
    let corrupt = demo.join("data/images/square-cool-stripe-spot-right/test_000.jpg");
    std::fs::write(&corrupt, b"not a jpeg").unwrap();

    let experiment = |skip: bool| {
        let spec = format!(
            "demo:{}{}",
            demo.join("data").display(),
            if skip { "?skip_bad=1" } else { "" }
        );
        let text = format!(
            "name = \"skip\"\noutput = \"{}\"\n[model]\nid = \"{}\"\n[[datasets]]\nspec = \"{spec}\"\nfeature_points = [\"vision.layer[-2].cls\"]\nlevels = [\"coarse\"]\n[probe]\nbootstrap = 10\n",
            tmp.path().join(if skip { "with-skip" } else { "strict" }).display(),
            demo.join("model").display()
        );
        let path = tmp
            .path()
            .join(if skip { "skip.toml" } else { "strict.toml" });
        std::fs::write(&path, text).unwrap();
        gapprobe(&["-q", "run", path.to_str().unwrap()])
    };

    let strict = experiment(false);
    assert!(!strict.status.success());
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(
        err.contains("train_001.jpg"),
        "the error must name the missing file: {err}"
    );

    // `run --skip-bad` applies skip_bad=1 to every dataset of the experiment.
    let flag = gapprobe(&[
        "-q",
        "run",
        "--skip-bad",
        tmp.path().join("strict.toml").to_str().unwrap(),
    ]);
    assert!(
        flag.status.success(),
        "{}",
        String::from_utf8_lossy(&flag.stderr)
    );
    let report = std::fs::read_to_string(tmp.path().join("strict/report.md")).unwrap();
    assert!(report.contains("2 item(s) were skipped"), "{report}");

    let skipped = experiment(true);
    assert!(
        skipped.status.success(),
        "{}",
        String::from_utf8_lossy(&skipped.stderr)
    );
    let report = std::fs::read_to_string(tmp.path().join("with-skip/report.md")).unwrap();
    assert!(
        report.contains("2 item(s) were skipped")
            && report.contains("train_001.jpg")
            && report.contains("test_000.jpg"),
        "{report}"
    );
    let entries: Vec<_> = walk(&tmp.path().join("with-skip/cache"));
    assert_eq!(entries.len(), 1);
    let info = Command::new(env!("CARGO_BIN_EXE_gapprobe"))
        .args(["cache", "info", "--json", entries[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let h5 = hdf5_skipped(&entries[0]);
    assert_eq!(h5.len(), 2, "{h5:?}");
    assert!(
        h5.iter().any(|s| s.contains("train_001.jpg"))
            && h5.iter().any(|s| s.contains("test_000.jpg"))
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "h5") {
            out.push(p);
        }
    }
    out
}

fn hdf5_skipped(path: &std::path::Path) -> Vec<String> {
    gapprobe_features::cache::CacheEntry::open(path)
        .unwrap()
        .skipped()
        .unwrap()
}
