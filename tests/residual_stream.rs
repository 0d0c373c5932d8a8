//! `extract --f32-residual`: an f32 residual stream around 16-bit layers is its own cache entry
//! (the compute dtype says so), lands closer to the f32 features, and is a no-op where it cannot
//! apply; `--f32-residual=false` asks for the layers' own dtype (f16's default). f16 on the CPU
//! through the fused ops' references (GAPPROBE_KERNELS=on). bf16 too (the references widen its
//! matmuls), with `GAPPROBE_RESIDUAL=f16` for a float16 stream around the bf16 layers.

mod cache_support;
use cache_support::*;
use gapprobe_features::cache::{CacheEntry, FeatureCache};

fn extract(model: &str, spec: &str, cache: &std::path::Path, extra: &[&str]) -> Vec<CacheEntry> {
    extract_with(model, spec, cache, extra, None)
}

/// [`extract`] with `GAPPROBE_RESIDUAL` set to `stream` (unset with `None`).
fn extract_with(
    model: &str,
    spec: &str,
    cache: &std::path::Path,
    extra: &[&str],
    stream: Option<&str>,
) -> Vec<CacheEntry> {
    let mut a = extract_args(model, spec, cache);
    a.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = bin();
    cmd.env("GAPPROBE_KERNELS", "on")
        .env_remove("GAPPROBE_RESIDUAL");
    if let Some(s) = stream {
        cmd.env("GAPPROBE_RESIDUAL", s);
    }
    ok(
        cmd.args(&a).output().unwrap(),
        &format!("extract {extra:?} GAPPROBE_RESIDUAL={stream:?}"),
    );
    entries(cache)
}

/// Relative distance ‖a − b‖ / ‖b‖ of two entries' train features.
fn distance(a: &CacheEntry, b: &CacheEntry) -> f64 {
    let split = a.splits().unwrap()[0];
    let (x, y) = (a.read_split(split).unwrap(), b.read_split(split).unwrap());
    let (mut d, mut n) = (0f64, 0f64);
    for (p, q) in x.features.iter().zip(y.features.iter()) {
        d += ((p - q) as f64).powi(2);
        n += (*q as f64).powi(2);
    }
    (d / n).sqrt()
}

#[test]
fn f32_residual_is_its_own_entry_and_closer_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = demo_inputs(dir.path());
    let (c32, c16, cwide) = (
        dir.path().join("f32"),
        dir.path().join("f16"),
        dir.path().join("wide"),
    );
    let full = extract(&model, &spec, &c32, &["--dtype", "f32"]);
    let half = extract(&model, &spec, &c16, &["--dtype", "f16"]);
    let wide = extract(&model, &spec, &cwide, &["--dtype", "f16", "--f32-residual"]);
    assert_eq!(wide.len(), 2);
    for ((f, h), w) in full.iter().zip(&half).zip(&wide) {
        assert_eq!(h.provenance.compute_dtype, "f16");
        assert_eq!(w.provenance.compute_dtype, "f16+f32-residual");
        assert_ne!(h.key, w.key, "the stream's dtype must be part of the key");
        let (eh, ew) = (distance(h, f), distance(w, f));
        assert!(
            ew <= eh,
            "{}: f32 stream {ew:.2e} vs f16 stream {eh:.2e}",
            w.provenance.feature_point
        );
        assert!(
            eh < 1e-2,
            "{}: f16 features {eh:.2e} from f32",
            h.provenance.feature_point
        );
    }
    // f16's default stream is f16: asking for it explicitly reuses the same entries.
    let narrow = extract(
        &model,
        &spec,
        &c16,
        &["--dtype", "f16", "--f32-residual=false"],
    );
    assert_eq!(
        narrow.iter().map(|e| &e.key).collect::<Vec<_>>(),
        half.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    assert_eq!(FeatureCache::new(&c16).list().unwrap().len(), 2);
    // Where it cannot apply (f32), the flag changes nothing: the same entries are reused.
    let again = extract(&model, &spec, &c32, &["--dtype", "f32", "--f32-residual"]);
    assert_eq!(
        again.iter().map(|e| &e.key).collect::<Vec<_>>(),
        full.iter().map(|e| &e.key).collect::<Vec<_>>()
    );
    assert_eq!(FeatureCache::new(&c32).list().unwrap().len(), 2);
}

/// bf16 layers: the default f32 stream, a bf16 stream and an f16 stream are three entries, and the
/// f16 stream's features are closer to f32's than the bf16 stream's.
#[test]
fn bf16_streams_are_their_own_entries_and_f16_beats_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let (model, spec) = demo_inputs(dir.path());
    let c32 = dir.path().join("f32");
    let full = extract(&model, &spec, &c32, &["--dtype", "f32"]);
    let run = |name: &str, stream: Option<&str>| {
        extract_with(
            &model,
            &spec,
            &dir.path().join(name),
            &["--dtype", "bf16"],
            stream,
        )
    };
    let (wide, narrow, half) = (
        run("wide", None),
        run("narrow", Some("model")),
        run("half", Some("f16")),
    );
    for (((f, w), n), h) in full.iter().zip(&wide).zip(&narrow).zip(&half) {
        assert_eq!(w.provenance.compute_dtype, "bf16+f32-residual");
        assert_eq!(n.provenance.compute_dtype, "bf16");
        assert_eq!(h.provenance.compute_dtype, "bf16+f16-residual");
        assert!(
            h.key != w.key && h.key != n.key,
            "the stream's dtype is part of the key"
        );
        let (en, eh) = (distance(n, f), distance(h, f));
        assert!(
            eh < en,
            "{}: f16 stream {eh:.2e} vs bf16 stream {en:.2e}",
            h.provenance.feature_point
        );
    }
}
