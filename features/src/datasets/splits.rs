//! Derived splits: a seeded, stratified validation split carved from train, and few-shot
//! subsets of k training images per class.

use super::{Dataset, LabelLevel, Split};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The finest level the dataset has (stratification key).
fn strat_level(ds: &Dataset) -> Option<LabelLevel> {
    ds.levels().into_iter().next_back()
}

/// Indices of the samples in `split`, grouped by their label at the finest level, each group
/// shuffled with a generator seeded by `seed` (groups in label order, so the result is
/// deterministic).
fn shuffled_groups(ds: &Dataset, split: Split, seed: u64) -> Vec<Vec<usize>> {
    let level = strat_level(ds);
    let mut groups: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, s) in ds.samples.iter().enumerate() {
        if s.split == split {
            groups
                .entry(level.and_then(|l| s.label(l)))
                .or_default()
                .push(i);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    groups
        .into_values()
        .map(|mut g| {
            g.shuffle(&mut rng);
            g
        })
        .collect()
}

/// Moves `fraction` of each class's training images to [`Split::Val`] (rounded, and at least one
/// for a class with two or more training images when `fraction > 0`; a class with a single
/// training image keeps it). Seeded and stratified by the finest label level.
pub fn carve_val(ds: &mut Dataset, fraction: f64, seed: u64) -> Result<usize> {
    carve(ds, Split::Train, Split::Val, fraction, seed)
}

/// Moves `fraction` of each class's `from` images to `to` (see [`carve_val`]).
pub fn carve(ds: &mut Dataset, from: Split, to: Split, fraction: f64, seed: u64) -> Result<usize> {
    ensure!(
        (0.0..1.0).contains(&fraction),
        "split fraction must be in [0, 1), got {fraction}"
    );
    let mut moved = 0;
    for g in shuffled_groups(ds, from, seed) {
        let mut n = (g.len() as f64 * fraction).round() as usize;
        if fraction > 0.0 && g.len() >= 2 {
            n = n.clamp(1, g.len() - 1);
        } else {
            n = n.min(g.len().saturating_sub(1));
        }
        for &i in &g[..n] {
            ds.samples[i].split = to;
        }
        moved += n;
    }
    Ok(moved)
}

/// Keeps `k` training images per class (all of them for a class with fewer), chosen with a
/// generator seeded by `seed`; other training images are removed. Val and test are untouched.
/// Returns how many training images were removed.
pub fn few_shot(ds: &mut Dataset, k: usize, seed: u64) -> Result<usize> {
    ensure!(k > 0, "few_shot needs k >= 1");
    let mut drop = vec![false; ds.samples.len()];
    for g in shuffled_groups(ds, Split::Train, seed) {
        for &i in g.iter().skip(k) {
            drop[i] = true;
        }
    }
    let before = ds.samples.len();
    let mut it = drop.into_iter();
    ds.samples.retain(|_| !it.next().unwrap_or(false));
    Ok(before - ds.samples.len())
}
