//! Sharded extraction + merge equals a single-machine run; the entry lock; verify, import, gc.

#[path = "cache_support/mod.rs"]
mod common;

use common::*;
use gapprobe_features::cache::{npy, EntryLock, FeatureCache};
use gapprobe_features::datasets::Split;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn shards_merge_lock_verify_import_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, spec) = demo_inputs(&tmp.path().join("demo"));
    let single = tmp.path().join("single");
    let want = extract_into(&model, &spec, &single, "single extract");

    // Three shards, then merge each point's shard files.
    let sharded = tmp.path().join("sharded");
    // A shard with the default batch size ('auto') is refused: shards must agree on boundaries.
    let mut a = extract_args(&model, &spec, &tmp.path().join("auto"));
    let at = a.iter().position(|x| x == "--batch-size").unwrap();
    a.drain(at..at + 2);
    a.extend(["--shard".into(), "0/3".into()]);
    let out = bin().args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("explicit --batch-size"),
        "{err}"
    );
    for i in 0..3 {
        let mut a = extract_args(&model, &spec, &sharded);
        a.extend(["--shard".into(), format!("{i}/3")]);
        ok(bin().args(&a).output().unwrap(), "shard extract");
    }
    assert!(entries(&sharded).is_empty(), "shard files are not entries");
    let shard_files = files_with(&sharded, ".h5");
    assert_eq!(shard_files.len(), 6);
    for point in ["patch.mean-", "projector.mean-"] {
        let files: Vec<_> = shard_files
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(point))
            .cloned()
            .collect();
        assert_eq!(files.len(), 3, "{point}: {shard_files:?}");
        // Missing a shard is refused.
        let out = bin()
            .args(["cache", "merge", "--cache"])
            .arg(&sharded)
            .args(&files[..2])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("shard"));
        ok(
            bin()
                .args(["cache", "merge", "--cache"])
                .arg(&sharded)
                .args(&files)
                .output()
                .unwrap(),
            "merge",
        );
    }
    let got = entries(&sharded);
    assert_eq!(got.len(), 2);
    for (a, b) in want.iter().zip(&got) {
        assert_same(a, b);
        assert_eq!(
            a.path.strip_prefix(&single).unwrap(),
            b.path.strip_prefix(&sharded).unwrap()
        );
    }
    let v = ok(
        bin()
            .args(["cache", "verify", "--cache"])
            .arg(&sharded)
            .output()
            .unwrap(),
        "verify",
    );
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.contains("fingerprint the same") && v.contains("hashes the same"),
        "{v}"
    );

    // Lock: a held entry makes --no-wait fail clearly and a plain run wait.
    let target = want[1].path.clone();
    std::fs::remove_file(&target).unwrap();
    let lock = EntryLock::acquire(&target, false).unwrap();
    let out = bin()
        .args(extract_args(&model, &spec, &single))
        .arg("--no-wait")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is being written by") && err.contains("--no-wait"),
        "{err}"
    );
    let mut waiter = bin()
        .args(extract_args(&model, &spec, &single))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the second process must wait for the lock"
    );
    drop(lock);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting for"));
    assert_same(&want[1], &entries(&single)[1]);

    // Import: the reference features as .npy + label text files, then probe the imported entry.
    let classes = want[0].classes().unwrap()[2].clone();
    let mut split_args = Vec::new();
    for split in [Split::Train, Split::Test] {
        let d = want[0].read_split(split).unwrap();
        let f = tmp.path().join(format!("{split}.npy"));
        npy::write_npy_f32(&f, &d.features).unwrap();
        let l = tmp.path().join(format!("{split}.txt"));
        let names: Vec<String> = d.labels[2]
            .as_ref()
            .unwrap()
            .iter()
            .map(|&i| classes[i as usize].clone())
            .collect();
        std::fs::write(&l, names.join("\n")).unwrap();
        split_args.extend([
            "--split".to_string(),
            format!("{split}={},{}", f.display(), l.display()),
        ]);
    }
    let imported = tmp.path().join("imported");
    let out = ok(
        bin()
            .args([
                "cache",
                "import",
                "--feature-point",
                "vision.layer[-2].patch.mean",
                "--dataset",
                "demo",
                "--cache",
            ])
            .arg(&imported)
            .args(&split_args)
            .output()
            .unwrap(),
        "import",
    );
    let key = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let e = &entries(&imported)[0];
    assert!(e.provenance.model_id.starts_with("imported:"));
    assert_eq!(
        e.read_split(Split::Train).unwrap().features,
        want[0].read_split(Split::Train).unwrap().features
    );
    let probe_out = tmp.path().join("probe");
    ok(
        bin()
            .args(["-q", "probe", &key, "--levels", "fine", "--cache"])
            .arg(&imported)
            .arg("--out")
            .arg(&probe_out)
            .output()
            .unwrap(),
        "probe on imported",
    );
    assert!(probe_out.join("results.csv").is_file());
    ok(
        bin()
            .args(["cache", "verify", "--cache"])
            .arg(&imported)
            .output()
            .unwrap(),
        "verify imported",
    );

    // gc: a stray partial file is listed by a dry run and removed with --yes; entries stay.
    let stray = single.join("stray.h5.partial");
    std::fs::write(&stray, b"junk").unwrap();
    let dry = ok(
        bin()
            .args(["cache", "gc", "--cache"])
            .arg(&single)
            .output()
            .unwrap(),
        "gc dry run",
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would remove"));
    assert!(stray.exists());
    ok(
        bin()
            .args(["cache", "gc", "--yes", "--cache"])
            .arg(&single)
            .output()
            .unwrap(),
        "gc",
    );
    assert!(!stray.exists());
    assert_eq!(FeatureCache::new(&single).list().unwrap().len(), 2);

    // rm by key prefix.
    ok(
        bin()
            .args(["cache", "rm", &want[0].key[..12], "--cache"])
            .arg(&single)
            .output()
            .unwrap(),
        "rm",
    );
    assert_eq!(entries(&single).len(), 1);
}
