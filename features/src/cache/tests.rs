//! Unit tests of the writer, resume, f16 storage and verify.

use super::writer::partial_path;
use super::*;
use crate::datasets::Split;
use ndarray::{ArrayD, IxDyn};

fn prov(storage: &str) -> Provenance {
    Provenance {
        model_id: "m".into(),
        model_revision: "local".into(),
        weights_fingerprint: "w".into(),
        config_hash: "c".into(),
        preprocess: "{}".into(),
        feature_point: "projector.mean".into(),
        compute_dtype: "f32".into(),
        storage_dtype: storage.into(),
        device: "cpu".into(),
        gapprobe_version: crate::VERSION.into(),
        dataset: "d".into(),
        manifest_hash: "h".into(),
        llm_input: String::new(),
    }
}

fn features(n: usize, d: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, d]), |i| (i[0] * 31 + i[1]) as f32 * 0.37 - 3.0)
}

fn plan(p: &Provenance, n: usize) -> EntryPlan {
    EntryPlan {
        provenance: p.clone(),
        classes: [vec![], vec![], vec!["a".into(), "b".into()]],
        splits: vec![SplitPlan {
            split: Split::Train,
            rows: 0..n,
            total: n,
            ids: (0..n).map(|i| format!("id{i}")).collect(),
            paths: (0..n).map(|i| format!("p{i}.jpg")).collect(),
            labels: [None, None, Some((0..n as i32).map(|i| i % 2).collect())],
        }],
        dataset_spec: String::new(),
        batch_size: 4,
        shard: None,
        skipped: Vec::new(),
    }
}

#[test]
fn interrupted_writes_resume_to_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let p = prov("f32");
    let target = cache.entry_path(&p);
    let x = features(10, 3);
    let batch = |r: std::ops::Range<usize>| x.slice(ndarray::s![r, ..]).into_dyn().to_owned();
    {
        let mut w = EntryWriter::open(&target, plan(&p, 10)).unwrap();
        w.write_rows(Split::Train, 0, batch(0..4).view()).unwrap();
        w.write_rows(Split::Train, 4, batch(4..8).view()).unwrap();
        // Dropped without finish: as if the process died.
    }
    assert!(cache.lookup(&p).unwrap().is_none());
    assert!(partial_path(&target).exists());
    let mut w = EntryWriter::open(&target, plan(&p, 10)).unwrap();
    assert_eq!(w.rows_done(Split::Train), 8);
    w.write_rows(Split::Train, 4, batch(4..8).view()).unwrap(); // already there: skipped
    w.write_rows(Split::Train, 8, batch(8..10).view()).unwrap();
    let e = w.finish().unwrap();
    assert_eq!(e.read_split(Split::Train).unwrap().features, x);
    assert!(verify::verify(&e.path, false).ok());
    assert!(cache.lookup(&p).unwrap().is_some());
}

#[test]
fn partial_files_of_other_provenance_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let p = prov("f32");
    let target = cache.entry_path(&p);
    let mut other = prov("f32");
    other.weights_fingerprint = "other".into();
    {
        let mut w = EntryWriter::open(&target, plan(&other, 10)).unwrap();
        w.write_rows(Split::Train, 0, features(4, 3).view())
            .unwrap();
    }
    let w = EntryWriter::open(&target, plan(&p, 10)).unwrap();
    assert_eq!(w.rows_done(Split::Train), 0);
    assert!(!partial_path(&target).exists());
}

#[test]
fn f16_storage_reads_back_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let p = prov("f16");
    let x = features(300, 5);
    let data = EntryData {
        classes: Default::default(),
        splits: vec![SplitData {
            split: Split::Test,
            ids: (0..300).map(|i| i.to_string()).collect(),
            paths: (0..300).map(|i| i.to_string()).collect(),
            labels: Default::default(),
            features: x.clone(),
        }],
    };
    let e = cache.write(&p, &data).unwrap();
    assert_eq!(e.split_info().unwrap()[0].dtype, "f16");
    let y = e.read_features(Split::Test).unwrap();
    let want = x.mapv(|v| half::f16::from_f32(v).to_f32());
    assert_eq!(y, want);
}

#[test]
fn verify_reports_nan_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let p = prov("f32");
    let mut w = EntryWriter::open(&cache.entry_path(&p), plan(&p, 10)).unwrap();
    w.write_rows(Split::Train, 0, features(10, 3).view())
        .unwrap();
    let e = w.finish().unwrap();
    {
        let f = hdf5::File::open_rw(&e.path).unwrap();
        let ds = f.dataset("train/features").unwrap();
        ds.write_slice(&ndarray::arr2(&[[f32::NAN, 0.0, 0.0]]), (2..3, ..))
            .unwrap();
        f.attr("dataset")
            .unwrap()
            .write_scalar(&format::vlu("x").unwrap())
            .unwrap();
    }
    let r = verify::verify(&e.path, false);
    let all = r.problems.join("\n");
    assert!(all.contains("NaN/Inf"), "{all}");
    assert!(all.contains("attribute dataset"), "{all}");
    assert!(all.contains(&e.path.display().to_string()));
}

#[test]
fn compressed_entries_read_back_bit_identical_with_the_same_key() {
    for storage in ["f32", "f16"] {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let p = prov(storage);
        // 2500 rows of 4 KiB (f32): several row chunks, the last one partial.
        let n = 2500;
        let x = features(n, 1024).mapv(|v| (v * 0.01).sin());
        let data = EntryData {
            classes: [vec![], vec![], vec!["a".into(), "b".into()]],
            splits: vec![SplitData {
                split: Split::Train,
                ids: (0..n).map(|i| format!("id{i}")).collect(),
                paths: (0..n).map(|i| format!("p{i}.jpg")).collect(),
                labels: [None, None, Some((0..n as i32).map(|i| i % 2).collect())],
                features: x,
            }],
        };
        let e = cache.write(&p, &data).unwrap();
        let want = e.read_split(Split::Train).unwrap();
        let size = std::fs::metadata(&e.path).unwrap().len();
        let c = Compression::new(5, true).unwrap();
        let (got, rewritten) = compress::compress(&e.path, c, false).unwrap();
        assert!(rewritten);
        assert_eq!(got.key, e.key);
        assert_eq!(got.provenance, e.provenance);
        assert_eq!(got.created, e.created);
        assert!(std::fs::metadata(&e.path).unwrap().len() < size);
        assert_eq!(
            compress::compression_of(&e.path).unwrap().as_deref(),
            Some("deflate:5+shuffle")
        );
        let file = hdf5::File::open(&e.path).unwrap();
        let ds = file.dataset("train/features").unwrap();
        assert_eq!(ds.filters().len(), 2);
        assert_eq!(
            ds.dtype().unwrap().size(),
            if storage == "f16" { 2 } else { 4 }
        );
        drop((ds, file));
        let s = got.read_split(Split::Train).unwrap();
        assert_eq!(s.ids, want.ids);
        assert_eq!(s.paths, want.paths);
        assert_eq!(s.labels, want.labels);
        let bits = |v: &ArrayD<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(&s.features) == bits(&want.features), "{storage}");
        assert_eq!(got.classes().unwrap(), e.classes().unwrap());
        assert_eq!(cache.lookup(&p).unwrap().unwrap().key, e.key);
        let r = verify::verify(&e.path, false);
        assert!(r.ok(), "{:?}", r.problems);
        // Same settings again: nothing to do. Another level: rewritten again.
        assert!(!compress::compress(&e.path, c, false).unwrap().1);
        let c1 = Compression::new(1, false).unwrap();
        assert!(compress::compress(&e.path, c1, false).unwrap().1);
        let s = cache
            .lookup(&p)
            .unwrap()
            .unwrap()
            .read_split(Split::Train)
            .unwrap();
        assert!(bits(&s.features) == bits(&want.features));
        assert!(!compress::tmp_path(&e.path).exists());
    }
    assert!(Compression::new(0, false).is_err());
    assert!(Compression::new(10, false).is_err());
}

/// A block with a NaN is refused as a [`NonFiniteRow`] naming the split, row and image; the rows
/// before it stay written.
#[test]
fn a_non_finite_row_is_refused_with_its_row_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(dir.path());
    let p = prov("f32");
    let mut w = EntryWriter::open(&cache.entry_path(&p), plan(&p, 10)).unwrap();
    w.write_rows(Split::Train, 0, features(4, 3).view())
        .unwrap();
    let mut bad = features(4, 3);
    bad[[2, 1]] = f32::INFINITY;
    let err = w.write_rows(Split::Train, 4, bad.view()).unwrap_err();
    let row = err.downcast_ref::<NonFiniteRow>().expect("a NonFiniteRow");
    assert_eq!(
        (row.split, row.row, row.image.as_str()),
        (Split::Train, 6, "id6")
    );
    assert!(
        err.to_string()
            .contains("feature row 6 (image id6) contains NaN or Inf"),
        "{err}"
    );
    assert_eq!(w.rows_done(Split::Train), 4);
}
