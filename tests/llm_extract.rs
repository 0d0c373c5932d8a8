//! `gapprobe extract` with language-model feature points on the tiny transformers-made LLaVA of
//! features/tests/fixtures/llm: both arms cached, reused on a rerun, a new prompt or new texts
//! give new entries, and a dataset without texts is a clear error before any work.

use std::path::{Path, PathBuf};

mod cache_support;
use cache_support::{bin, ok};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("features/tests/fixtures")
}

/// A manifest of the fixture images (two classes), with an `attributes` column unless `texts`
/// is false.
fn manifest(dir: &Path, texts: bool, text_of: &dyn Fn(usize) -> String) -> PathBuf {
    let images = fixture().join("models/images");
    let mut csv = String::from(if texts {
        "path,split,fine,attributes\n"
    } else {
        "path,split,fine\n"
    });
    for (i, name) in ["wide.png", "tall.png", "gray.png", "rgba.png"]
        .iter()
        .enumerate()
    {
        let split = if i < 2 { "train" } else { "test" };
        let path = images.join(name);
        let class = if i % 2 == 0 { "a" } else { "b" };
        if texts {
            csv += &format!("{},{split},{class},{}\n", path.display(), text_of(i));
        } else {
            csv += &format!("{},{split},{class}\n", path.display());
        }
    }
    let p = dir.join(if texts { "m.csv" } else { "bare.csv" });
    std::fs::write(&p, csv).unwrap();
    p
}

fn extract(cache: &Path, spec: &str, extra: &[&str]) -> std::process::Output {
    let model = fixture().join("llm/llava_tiny");
    let mut cmd = bin();
    cmd.args(["-q", "extract", "--model", model.to_str().unwrap()])
        .args(["--dataset", spec, "--cache", cache.to_str().unwrap()])
        .args([
            "-f",
            "llm.image.layer[-1].last",
            "-f",
            "llm.text.layer[1:3].mean",
        ])
        .args(extra);
    cmd.output().unwrap()
}

/// (key prefix, feature point) of each printed entry line.
fn entries(out: &std::process::Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next().unwrap().to_string();
            (key, parts.next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn llm_points_are_cached_keyed_by_prompt_and_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let words = |i: usize| {
        format!(
            "bill shape: {}; wing color: blue",
            ["dagger", "cone"][i % 2]
        )
    };
    let spec = format!("manifest:{}", manifest(tmp.path(), true, &words).display());
    let first = entries(&ok(extract(&cache, &spec, &[]), "first extract"));
    let points: Vec<&str> = first.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        points,
        [
            "llm.image.layer[-1].last",
            "llm.text.layer[1].mean",
            "llm.text.layer[2].mean"
        ]
    );
    // A rerun reuses every entry: same keys, files untouched.
    let stamps = |out: &std::process::Output| -> Vec<std::time::SystemTime> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let path = l.split_whitespace().nth(2).unwrap();
                std::fs::metadata(path).unwrap().modified().unwrap()
            })
            .collect()
    };
    let first_out = extract(&cache, &spec, &[]);
    let before = stamps(&first_out);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = ok(extract(&cache, &spec, &[]), "rerun");
    assert_eq!(entries(&again), first);
    assert_eq!(stamps(&again), before, "a rerun must not rewrite entries");
    // Another prompt: all three are new entries.
    let prompt = ok(
        extract(
            &cache,
            &spec,
            &["--prompt", "USER: <image>\nWhich bird? ASSISTANT:"],
        ),
        "new prompt",
    );
    for ((k1, _), (k2, _)) in first.iter().zip(entries(&prompt)) {
        assert_ne!(*k1, k2, "a new prompt must not reuse an entry");
    }
    // Other texts: only the text arm changes.
    let other = |i: usize| format!("bill shape: {}; wing color: red", ["dagger", "cone"][i % 2]);
    std::fs::create_dir_all(tmp.path().join("o")).unwrap();
    let spec2 = format!(
        "manifest:{}",
        manifest(&tmp.path().join("o"), true, &other).display()
    );
    let changed = entries(&ok(extract(&cache, &spec2, &[]), "new texts"));
    assert_eq!(changed[0].0, first[0].0, "image arm unchanged by the texts");
    assert_ne!(changed[1].0, first[1].0, "text arm keyed by the texts");

    // The stored features are the model's: the h5 entry holds finite rows for every image.
    let info = ok(
        bin()
            .args([
                "cache",
                "info",
                &first[1].0,
                "--cache",
                cache.to_str().unwrap(),
            ])
            .output()
            .unwrap(),
        "cache info",
    );
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("llm_input") && info.contains("texts"),
        "{info}"
    );
}

#[test]
fn text_points_without_texts_or_a_prompt_without_image_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let bare = format!(
        "manifest:{}",
        manifest(tmp.path(), false, &|_| String::new()).display()
    );
    let out = extract(&cache, &bare, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need a text per image")
            && err.contains("wide.png")
            && err.contains("attributes"),
        "{err}"
    );
    let words = |_| "size: small".to_string();
    let spec = format!("manifest:{}", manifest(tmp.path(), true, &words).display());
    let out = extract(&cache, &spec, &["--prompt", "USER: hello ASSISTANT:"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exactly once"), "{err}");
    // A layer past the decoder's 3.
    let model = fixture().join("llm/llava_tiny");
    let out = bin()
        .args([
            "-q",
            "extract",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            &spec,
        ])
        .args([
            "--cache",
            cache.to_str().unwrap(),
            "-f",
            "llm.text.layer[7].last",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("llm.text.layer[7].last") && err.contains("out of range"),
        "{err}"
    );
    // Nothing was written for any of them.
    let listed = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(listed, 0, "no cache entry for a refused request");
}
