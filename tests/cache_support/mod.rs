//! Shared helpers for the cache end-to-end tests (a folder, so cargo does not build it as a test).
#![allow(dead_code)]

use gapprobe_features::cache::CacheEntry;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const POINTS: [&str; 2] = ["vision.layer[-2].patch.mean", "projector.mean"];

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gapprobe"))
}

pub fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes the demo's images and random-weight model under `dir` (tiny), returns (model, dataset spec).
pub fn demo_inputs(dir: &Path) -> (String, String) {
    ok(
        bin()
            .args(["-q", "demo", "--out"])
            .arg(dir)
            .args(["--train-per-class", "3", "--test-per-class", "2"])
            .output()
            .unwrap(),
        "demo",
    );
    (
        dir.join("model").display().to_string(),
        format!("demo:{}", dir.join("data").display()),
    )
}

/// `gapprobe extract` arguments for the demo inputs into `cache`, batch size 4.
pub fn extract_args(model: &str, spec: &str, cache: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-q",
        "extract",
        "--model",
        model,
        "--dataset",
        spec,
        "--batch-size",
        "4",
        "--cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(cache.display().to_string());
    for p in POINTS {
        a.extend(["-f".to_string(), p.to_string()]);
    }
    a
}

/// Finished entries under `cache`, by feature point.
/// Runs `gapprobe extract` of the demo inputs into `cache` (must succeed) and returns the
/// finished entries.
pub fn extract_into(model: &str, spec: &str, cache: &Path, what: &str) -> Vec<CacheEntry> {
    ok(
        bin()
            .args(extract_args(model, spec, cache))
            .output()
            .unwrap(),
        what,
    );
    entries(cache)
}

pub fn entries(cache: &Path) -> Vec<CacheEntry> {
    let mut v = gapprobe_features::cache::FeatureCache::new(cache)
        .list()
        .unwrap();
    v.sort_by(|a, b| a.provenance.feature_point.cmp(&b.provenance.feature_point));
    v
}

/// Asserts two entries hold identical provenance, rows, labels and bit-identical features.
pub fn assert_same(a: &CacheEntry, b: &CacheEntry) {
    assert_eq!(a.key, b.key);
    assert_eq!(a.provenance, b.provenance);
    assert_eq!(a.classes().unwrap(), b.classes().unwrap());
    assert_eq!(a.splits().unwrap(), b.splits().unwrap());
    for s in a.splits().unwrap() {
        let (x, y) = (a.read_split(s).unwrap(), b.read_split(s).unwrap());
        assert_eq!(x.ids, y.ids);
        assert_eq!(x.paths, y.paths);
        assert_eq!(x.labels, y.labels);
        assert_eq!(x.features.shape(), y.features.shape());
        let bits = |v: &ndarray::ArrayD<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&x.features) == bits(&y.features),
            "{s} features differ between {} and {}",
            a.path.display(),
            b.path.display()
        );
    }
}

pub fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
