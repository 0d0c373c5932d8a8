//! `gapprobe cache compress` and `extract --compress`: smaller files, same key, bit-identical
//! features, `verify` passes, `probe` gives the same results.

#[path = "cache_support/mod.rs"]
mod common;

use common::*;
use gapprobe_features::cache::compress::{compression_of, tmp_path};
use gapprobe_features::cache::CacheEntry;
use std::path::Path;

fn probe_csv(cache: &Path, key: &str, out: &Path) -> String {
    ok(
        bin()
            .args(["-q", "probe", key, "--levels", "fine", "--cache"])
            .arg(cache)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap(),
        "probe",
    );
    std::fs::read_to_string(out.join("results.csv")).unwrap()
}

#[test]
fn compress_keeps_key_features_and_results() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, spec) = demo_inputs(&tmp.path().join("demo"));
    let cache = tmp.path().join("cache");
    let before = extract_into(&model, &spec, &cache, "extract");
    assert_eq!(before.len(), 2);
    // Untouched copies to compare against.
    let orig = tmp.path().join("orig");
    std::fs::create_dir_all(&orig).unwrap();
    let copies: Vec<CacheEntry> = before
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = orig.join(format!("{i}.h5"));
            std::fs::copy(&e.path, &p).unwrap();
            CacheEntry::open(&p).unwrap()
        })
        .collect();
    let sizes: Vec<u64> = before
        .iter()
        .map(|e| std::fs::metadata(&e.path).unwrap().len())
        .collect();
    let want_csv = probe_csv(&cache, &before[1].key[..16], &tmp.path().join("p1"));

    // One by key prefix, one by path.
    let out = ok(
        bin()
            .args(["cache", "compress", "--shuffle", "--level", "6", "--cache"])
            .arg(&cache)
            .arg(&before[0].key[..12])
            .arg(&before[1].path)
            .output()
            .unwrap(),
        "cache compress",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deflate:6+shuffle"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = entries(&cache);
    for ((a, b), (c, size)) in before.iter().zip(&after).zip(copies.iter().zip(&sizes)) {
        assert_eq!(a.path, b.path);
        assert_eq!(a.key, b.key);
        assert_eq!(a.created, b.created);
        assert_same(c, b);
        let now = std::fs::metadata(&b.path).unwrap().len();
        assert!(now < *size, "{}: {now} >= {size} bytes", b.path.display());
        assert_eq!(
            compression_of(&b.path).unwrap().as_deref(),
            Some("deflate:6+shuffle")
        );
        assert_eq!(compression_of(&c.path).unwrap(), None);
        assert!(!tmp_path(&b.path).exists());
    }
    let info = ok(
        bin()
            .args(["cache", "info", "--cache"])
            .arg(&cache)
            .arg(&after[0].key[..16])
            .output()
            .unwrap(),
        "info",
    );
    assert!(String::from_utf8_lossy(&info.stdout).contains("compression: deflate:6+shuffle"));
    let v = ok(
        bin()
            .args(["cache", "verify", "--cache"])
            .arg(&cache)
            .output()
            .unwrap(),
        "verify",
    );
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(v.contains("2 cache file(s) verified"), "{v}");
    assert_eq!(
        probe_csv(&cache, &after[1].key[..16], &tmp.path().join("p2")),
        want_csv
    );

    // A second run is a no-op; extraction reuses the compressed entries.
    let out = ok(
        bin()
            .args(["cache", "compress", "--shuffle", "--level", "6", "--cache"])
            .arg(&cache)
            .arg(&before[0].key[..12])
            .output()
            .unwrap(),
        "cache compress again",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("already"));
    for e in extract_into(&model, &spec, &cache, "extract again") {
        assert!(compression_of(&e.path).unwrap().is_some(), "re-extracted");
    }

    // extract --compress writes the same entries, compressed at level 4 by default.
    let cz = tmp.path().join("cz");
    let mut a = extract_args(&model, &spec, &cz);
    a.push("--compress".into());
    ok(bin().args(&a).output().unwrap(), "extract --compress");
    let got = entries(&cz);
    for (c, g) in copies.iter().zip(&got) {
        assert_same(c, g);
        assert_eq!(
            compression_of(&g.path).unwrap().as_deref(),
            Some("deflate:4")
        );
    }
    let cz9 = tmp.path().join("cz9");
    let mut a = extract_args(&model, &spec, &cz9);
    a.push("--compress=9".into());
    ok(bin().args(&a).output().unwrap(), "extract --compress=9");
    assert_eq!(
        compression_of(&entries(&cz9)[0].path).unwrap().as_deref(),
        Some("deflate:9")
    );

    // A stale temporary file of a killed compress is collected by gc.
    let stale = tmp_path(&after[0].path);
    std::fs::write(&stale, b"junk").unwrap();
    ok(
        bin()
            .args(["cache", "gc", "--yes", "--cache"])
            .arg(&cache)
            .output()
            .unwrap(),
        "gc",
    );
    assert!(!stale.exists());
    assert_eq!(entries(&cache).len(), 2);
}
