//! Seeded stratified train/validation split.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Split row indices into `(train, val)` with about `val_fraction` of the rows in validation,
/// stratified by label.
///
/// The total validation size `round(val_fraction·n)` is shared among classes by largest
/// remainder (ties broken by a seeded shuffle), never taking a class's last sample: a class with
/// a single sample always stays in train. So with very few samples per class some classes may
/// have no validation sample, and the validation set may be empty (then no sweep is possible).
pub fn stratified_split(
    y: &[u32],
    n_classes: usize,
    val_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in y.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let n = y.len();
    let frac = val_fraction.clamp(0.0, 1.0);
    let total = ((frac * n as f64).round() as usize).min(n);
    let mut quota: Vec<usize> = Vec::with_capacity(n_classes);
    let mut rema: Vec<(f64, usize)> = Vec::new();
    for (k, idx) in by_class.iter().enumerate() {
        let exact = frac * idx.len() as f64;
        let cap = idx.len().saturating_sub(1);
        let q = (exact.floor() as usize).min(cap);
        quota.push(q);
        if q < cap {
            rema.push((exact - q as f64, k));
        }
    }
    rema.shuffle(&mut rng);
    // Stable sort keeps the seeded order among equal remainders.
    rema.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut left = total.saturating_sub(quota.iter().sum());
    for &(_, k) in &rema {
        if left == 0 {
            break;
        }
        quota[k] += 1;
        left -= 1;
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (k, idx) in by_class.iter_mut().enumerate() {
        idx.shuffle(&mut rng);
        val.extend_from_slice(&idx[..quota[k]]);
        train.extend_from_slice(&idx[quota[k]..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_and_seeded() {
        let y: Vec<u32> = (0..1000).map(|i| (i % 10) as u32).collect();
        let (tr, va) = stratified_split(&y, 10, 0.2, 7);
        assert_eq!(va.len(), 200);
        assert_eq!(tr.len() + va.len(), 1000);
        for k in 0..10 {
            assert_eq!(va.iter().filter(|&&i| y[i] == k).count(), 20);
        }
        assert_eq!((tr.clone(), va.clone()), stratified_split(&y, 10, 0.2, 7));
        assert_ne!(va, stratified_split(&y, 10, 0.2, 8).1);
    }

    #[test]
    fn singletons_stay_in_train() {
        let y = vec![0, 1, 1, 2, 2, 2, 2, 2, 2, 2];
        let (tr, va) = stratified_split(&y, 4, 0.5, 0);
        assert!(tr.contains(&0));
        assert!(va.iter().all(|&i| y[i] != 0));
        for k in 1..3u32 {
            assert!(tr.iter().any(|&i| y[i] == k));
        }
        assert_eq!(va.len(), 5);
    }
}
