//! Representation similarity of two cache entries (e.g. a vision layer and the projector's
//! output) on one split, rows matched by image id.

use crate::ui::Ui;
use anyhow::{bail, ensure, Context, Result};
use gapprobe_features::cache::{CacheEntry, SplitData};
use gapprobe_features::datasets::Split;
use gapprobe_features::FeaturePoint;
use gapprobe_probes::similarity;
use gapprobe_reports::SimilarityRow;
use ndarray::{ArrayView2, Axis, Ix2};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::HashMap;
use tracing::{debug, info, warn};

/// Settings of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareOptions {
    pub split: Split,
    /// Neighbours per sample for mutual k-NN.
    pub k: usize,
    /// Compare at most this many rows (a seeded random subset): mutual k-NN costs `O(n²·d)`.
    pub max_rows: usize,
    /// Seed of that subset.
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            split: Split::Test,
            k: 10,
            max_rows: 10_000,
            seed: 0,
        }
    }
}

/// Compares entries `a` and `b` on `opts.split`: both must come from the same dataset manifest
/// and hold pooled `[N, D]` features; rows are matched by image id.
pub fn compare_entries(
    a: &CacheEntry,
    b: &CacheEntry,
    opts: &CompareOptions,
) -> Result<SimilarityRow> {
    let (pa, pb) = (&a.provenance, &b.provenance);
    ensure!(
        pa.manifest_hash == pb.manifest_hash,
        "{} and {} were extracted from different datasets ({} / {}, manifest {} vs {}): \
         similarity needs the same images on both sides",
        a.path.display(),
        b.path.display(),
        pa.dataset,
        pb.dataset,
        short(&pa.manifest_hash),
        short(&pb.manifest_hash)
    );
    let da = a.read_split(opts.split)?;
    let db = b.read_split(opts.split)?;
    let xa = pooled(&da, a)?;
    let xb = pooled(&db, b)?;
    let (rows_a, rows_b) = matched_rows(&da, &db, a, b)?;
    let rows_shared = rows_a.len();
    let (rows_a, rows_b) = subsample(rows_a, rows_b, opts.max_rows, opts.seed);
    if rows_a.len() < rows_shared {
        info!(
            "comparing a seeded random {} of the {rows_shared} shared rows (max rows)",
            rows_a.len()
        );
    }
    let x = xa.select(Axis(0), &rows_a);
    let y = xb.select(Axis(0), &rows_b);
    let s = similarity(x.view(), y.view(), opts.k).with_context(|| {
        format!(
            "comparing {} with {} on {}",
            pa.feature_point, pb.feature_point, opts.split
        )
    })?;
    let stage = |p: &str| -> Result<String> { Ok(p.parse::<FeaturePoint>()?.stage().into()) };
    Ok(SimilarityRow {
        dataset: pa.dataset.clone(),
        model_a: pa.model_id.clone(),
        feature_point_a: pa.feature_point.clone(),
        stage_a: stage(&pa.feature_point)?,
        model_b: pb.model_id.clone(),
        feature_point_b: pb.feature_point.clone(),
        stage_b: stage(&pb.feature_point)?,
        split: opts.split.to_string(),
        n: s.n as u64,
        linear_cka: s.linear_cka,
        debiased_cka: s.debiased_cka,
        mutual_knn: s.mutual_knn,
        k: s.k as u64,
        centroid_gap: s.centroid_gap,
        cache_key_a: a.key.clone(),
        cache_key_b: b.key.clone(),
    })
}

/// Every pair `(a, b)` of `entries` (in order, `a` first) compared; a pair that cannot be
/// compared gives its error (naming both feature points) without stopping the others.
pub fn compare_pairs(
    entries: &[&CacheEntry],
    opts: &CompareOptions,
    ui: &Ui,
) -> Vec<Result<SimilarityRow>> {
    let mut out = Vec::new();
    let n_pairs = entries.len() * entries.len().saturating_sub(1) / 2;
    if n_pairs > 1 {
        info!("representation similarity of {n_pairs} pairs of feature points");
    }
    // One bar over the pairs (a layer sweep makes hundreds), with its rate and time left.
    let bar = ui.bar(n_pairs as u64, "similarity");
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            let (fa, fb) = (&a.provenance.feature_point, &b.provenance.feature_point);
            let c = compare_entries(a, b, opts)
                .with_context(|| format!("representation similarity of {fa} and {fb}"));
            bar.inc(1);
            if let Ok(c) = &c {
                debug!(
                    "{fa} vs {fb}: linear CKA {:.3}, mutual k-NN@{} {:.3}",
                    c.linear_cka, c.k, c.mutual_knn
                );
            }
            out.push(c);
        }
    }
    bar.finish_and_clear();
    out
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The split's features as `[N, D]`, or an error that says to pool them.
fn pooled<'a>(data: &'a SplitData, entry: &CacheEntry) -> Result<ArrayView2<'a, f32>> {
    data.features
        .view()
        .into_dimensionality::<Ix2>()
        .with_context(|| {
            format!(
                "{}: similarity needs pooled [N, D] features, not {:?} (use a .mean or .cls \
                 feature point)",
                entry.path.display(),
                data.features.shape()
            )
        })
}

/// Row pairs `(rows of a, rows of b)` holding the same image, in `a`'s order.
fn matched_rows(
    da: &SplitData,
    db: &SplitData,
    a: &CacheEntry,
    b: &CacheEntry,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if da.ids == db.ids {
        let all: Vec<usize> = (0..da.ids.len()).collect();
        return Ok((all.clone(), all));
    }
    let in_b: HashMap<&str, usize> = db
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let (rows_a, rows_b): (Vec<usize>, Vec<usize>) = da
        .ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| in_b.get(id.as_str()).map(|&j| (i, j)))
        .unzip();
    if rows_a.is_empty() {
        bail!(
            "{} and {} share no image id in their {} split",
            a.path.display(),
            b.path.display(),
            da.split
        );
    }
    warn!(
        "{} holds {} rows and {} holds {}: comparing the {} images both hold (items skipped in \
         one extraction but not the other?)",
        a.path.display(),
        da.ids.len(),
        b.path.display(),
        db.ids.len(),
        rows_a.len()
    );
    Ok((rows_a, rows_b))
}

/// At most `max` of the row pairs, a seeded random subset kept in order.
fn subsample(
    rows_a: Vec<usize>,
    rows_b: Vec<usize>,
    max: usize,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    if rows_a.len() <= max {
        return (rows_a, rows_b);
    }
    let mut pick: Vec<usize> = (0..rows_a.len()).collect();
    pick.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    pick.truncate(max);
    pick.sort_unstable();
    pick.iter().map(|&i| (rows_a[i], rows_b[i])).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsampling_keeps_pairs_together_in_order_and_is_seeded() {
        let a: Vec<usize> = (0..100).collect();
        let b: Vec<usize> = (0..100).map(|i| 1000 + i).collect();
        let (sa, sb) = subsample(a.clone(), b.clone(), 10, 7);
        assert_eq!(sa.len(), 10);
        assert!(sa.windows(2).all(|w| w[0] < w[1]));
        assert!(sa.iter().zip(&sb).all(|(x, y)| y - x == 1000));
        assert_eq!(subsample(a.clone(), b.clone(), 10, 7), (sa, sb));
        assert_eq!(subsample(a.clone(), b.clone(), 100, 7), (a, b));
    }
}
