//! Kill -9 at several points of a real extraction, rerun, and get an entry identical to an
//! uninterrupted run (every row exactly once, bit-identical features).

#[path = "cache_support/mod.rs"]
mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// Starts an extraction that announces each recorded batch, kills it with SIGKILL after
/// `batches` announcements (plus `extra_ms`), and returns how many it saw.
fn run_and_kill(args: &[String], batches: usize, extra_ms: u64) -> usize {
    let mut child = bin()
        .args(args)
        .env("GAPPROBE_TEST_BATCH_DELAY_MS", "30")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = 0;
    if batches > 0 {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.starts_with("gapprobe-test:") {
                seen += 1;
                if seen == batches {
                    break;
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    child.kill().unwrap(); // SIGKILL on unix
    child.wait().unwrap();
    seen
}

#[test]
fn killed_extraction_resumes_to_an_identical_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, spec) = demo_inputs(&tmp.path().join("demo"));
    let reference = tmp.path().join("ref");
    let want = extract_into(&model, &spec, &reference, "reference extract");
    assert_eq!(want.len(), 2);

    let cache = tmp.path().join("killed");
    let args = extract_args(&model, &spec, &cache);
    // 72 train + 48 test images in batches of 4: 18 + 12 batches. Each run resumes the last, so
    // these are batches after the previous kill: after a few, mid-batch, near the train/test
    // boundary and late in test. Each batch's write takes at least the 30 ms delay, and the
    // writer runs beside the model, so the kills after waiting land within 5, 1 and 2 more
    // batches: at most 28 of 30 batches in all.
    for (batches, extra_ms) in [(0, 150), (2, 0), (4, 17), (8, 0), (3, 45), (3, 0)] {
        let seen = run_and_kill(&args, batches, extra_ms);
        assert_eq!(seen, batches, "the run ended before the kill point");
        assert!(
            entries(&cache).is_empty(),
            "a killed run must not leave a finished entry"
        );
    }
    assert!(
        !files_with(&cache, ".partial").is_empty(),
        "progress must survive the kills"
    );
    let out = ok(
        bin()
            .args(&args)
            .env("RUST_LOG", "gapprobe_features=info")
            .output()
            .unwrap(),
        "resumed extract",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resuming"),
        "the rerun must resume, not restart:\n{err}"
    );
    let got = entries(&cache);
    assert_eq!(got.len(), 2);
    for (a, b) in want.iter().zip(&got) {
        assert_same(a, b);
    }
    assert!(files_with(&cache, ".partial").is_empty());
    ok(
        bin()
            .args(["cache", "verify", "--cache"])
            .arg(&cache)
            .output()
            .unwrap(),
        "verify",
    );
}
