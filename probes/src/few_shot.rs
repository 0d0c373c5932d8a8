//! Few-shot probes: `k` training images per class, drawn several times.
//!
//! Each draw takes, per class and seeded, `k` training rows and a disjoint validation set of
//! `min(k, 4)` rows from the rest of the training split (CoOp's linear-probe protocol), sweeps C
//! on that validation set, and keeps the model fitted on the `k` shots alone: validation rows
//! never enter the final fit (CLIP_benchmark's few-shot refit on train + validation leaked them,
//! LAION-AI/CLIP_benchmark#125). The standardiser is fitted on the `k` shots. The sweep uses
//! the C grid without refinement around the best value: a validation set of at most 4 images
//! per class cannot tell C values apart more finely than the grid's steps. Every draw is scored
//! on the whole test split; the scores are averaged over draws.

use crate::logistic::default_device;
use crate::protocol::{check_all, probe_on, Rows};
use crate::{bootstrap, ProbeConfig, ProbeReport};
use anyhow::{ensure, Result};
use ndarray::ArrayView2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Validation images per class of a draw: `min(k, VAL_SHOTS_MAX)`.
pub const VAL_SHOTS_MAX: usize = 4;

/// The rows of one draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FewShotSplit {
    /// `k` rows per class (all of a class's rows when it has no more than `k`), sorted.
    pub train: Vec<usize>,
    /// Up to `min(k, 4)` further rows per class, disjoint from `train`, sorted.
    pub val: Vec<usize>,
    /// Classes with fewer than `k` rows (they train on what they have).
    pub short_classes: Vec<usize>,
}

/// Draws `shots` training rows and `min(shots, 4)` validation rows per class from `y`
/// (seeded; classes without rows are skipped).
pub fn few_shot_split(y: &[u32], n_classes: usize, shots: usize, seed: u64) -> FewShotSplit {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in y.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let val_shots = shots.min(VAL_SHOTS_MAX);
    let (mut train, mut val, mut short_classes) = (Vec::new(), Vec::new(), Vec::new());
    for (k, idx) in by_class.iter_mut().enumerate() {
        if idx.is_empty() {
            continue;
        }
        if idx.len() < shots {
            short_classes.push(k);
        }
        idx.shuffle(&mut rng);
        let t = shots.min(idx.len());
        let v = val_shots.min(idx.len() - t);
        train.extend_from_slice(&idx[..t]);
        val.extend_from_slice(&idx[t..t + v]);
    }
    train.sort_unstable();
    val.sort_unstable();
    FewShotSplit {
        train,
        val,
        short_classes,
    }
}

/// Scores of a `k`-shot probe over several draws.
#[derive(Debug, Clone, Serialize)]
pub struct FewShotReport {
    /// Training images per class.
    pub shots: usize,
    /// Mean top-1 over draws.
    pub top1: f64,
    /// Standard deviation of top-1 over draws (population form; 0 for one draw).
    pub top1_std: f64,
    pub top5: f64,
    pub mean_per_class: f64,
    pub macro_f1: f64,
    /// 95% bootstrap interval over test images of each image's fraction of right answers.
    pub top1_ci: (f64, f64),
    /// Median of the draws' chosen C.
    pub chosen_c: f64,
    /// Training rows of a draw (`k` × classes, fewer where classes are short).
    pub n_train: usize,
    pub n_test: usize,
    pub n_classes: usize,
    /// Classes with fewer than `k` training images (they train on all they have).
    pub short_classes: Vec<usize>,
    /// Each draw's full report (draw `i` used seed `cfg.seed + i`; no bootstrap of its own, so
    /// its `top1_ci` is NaN), serialised as
    /// [`DrawSummary`]s: a confusion matrix per draw would swell results.json by the number of
    /// draws and shot counts.
    #[serde(serialize_with = "summaries")]
    pub draws: Vec<ProbeReport>,
}

/// What results.json keeps of one draw.
#[derive(Debug, Clone, Serialize)]
pub struct DrawSummary<'a> {
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class: f64,
    pub chosen_c: f64,
    pub n_train: usize,
    pub classes_absent_from_train: &'a [usize],
    pub sweep: &'a [crate::SweepPoint],
    pub objective: f64,
}

impl<'a> From<&'a ProbeReport> for DrawSummary<'a> {
    fn from(r: &'a ProbeReport) -> Self {
        Self {
            top1: r.top1,
            top5: r.top5,
            mean_per_class: r.mean_per_class,
            chosen_c: r.chosen_c,
            n_train: r.n_train,
            classes_absent_from_train: &r.classes_absent_from_train,
            sweep: &r.sweep,
            objective: r.objective,
        }
    }
}

fn summaries<S: serde::Serializer>(draws: &[ProbeReport], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(draws.iter().map(DrawSummary::from))
}

/// A `shots`-shot probe over `cfg.few_shot_draws` draws (seeds `cfg.seed`, `cfg.seed + 1`, …);
/// see the module doc for the protocol. `cfg.val_fraction`, `cfg.refit_on_train_val` and
/// `cfg.refine` do not apply.
pub fn run_few_shot_probe(
    train_x: ArrayView2<f32>,
    train_y: &[u32],
    test_x: ArrayView2<f32>,
    test_y: &[u32],
    n_classes: usize,
    cfg: &ProbeConfig,
    shots: usize,
) -> Result<FewShotReport> {
    let draws = cfg.few_shot_draws;
    ensure!(shots > 0, "few-shot probes need at least 1 image per class");
    ensure!(draws > 0, "few-shot probes need at least 1 draw");
    check_all(train_x, train_y, test_x, test_y, n_classes, cfg)?;
    let draw = |d: usize| -> Result<(ProbeReport, Vec<usize>)> {
        let seed = cfg.seed.wrapping_add(d as u64);
        let split = few_shot_split(train_y, n_classes, shots, seed);
        let rows = Rows {
            fit: &split.train,
            val: &split.val,
            pool: &split.train,
            refit: false,
        };
        // No bootstrap per draw: the interval reported is the one over the draws' mean.
        let draw_cfg = ProbeConfig {
            seed,
            refine: false,
            bootstrap: 0,
            ..cfg.clone()
        };
        let report = probe_on(
            train_x, train_y, test_x, test_y, n_classes, &draw_cfg, &rows,
        )?;
        Ok((report, split.short_classes))
    };
    // Small fits leave the CPU's cores idle: draws run side by side there (collected in order,
    // so the result is the same). On a GPU they queue on one device, one after another.
    let done: Vec<(ProbeReport, Vec<usize>)> = if default_device().is_cpu() {
        (0..draws)
            .into_par_iter()
            .map(draw)
            .collect::<Result<_>>()?
    } else {
        (0..draws).map(draw).collect::<Result<_>>()?
    };
    let short_classes = done[0].1.clone();
    let reports: Vec<ProbeReport> = done.into_iter().map(|(r, _)| r).collect();
    let mean = |f: fn(&ProbeReport) -> f64| reports.iter().map(f).sum::<f64>() / draws as f64;
    let top1 = mean(|r| r.top1);
    let top1_std = (reports
        .iter()
        .map(|r| (r.top1 - top1) * (r.top1 - top1))
        .sum::<f64>()
        / draws as f64)
        .sqrt();
    let right: Vec<f64> = (0..test_y.len())
        .map(|i| reports.iter().filter(|r| r.correct[i]).count() as f64 / draws as f64)
        .collect();
    let mut cs: Vec<f64> = reports.iter().map(|r| r.chosen_c).collect();
    cs.sort_by(f64::total_cmp);
    Ok(FewShotReport {
        shots,
        top1,
        top1_std,
        top5: mean(|r| r.top5),
        mean_per_class: mean(|r| r.mean_per_class),
        macro_f1: mean(|r| r.macro_f1),
        top1_ci: bootstrap::mean_ci(&right, cfg.bootstrap, cfg.seed),
        chosen_c: cs[cs.len() / 2],
        n_train: reports[0].n_train,
        n_test: test_y.len(),
        n_classes,
        short_classes,
        draws: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_k_per_class_and_a_disjoint_validation_set() {
        // 3 classes of 10, 6 and 2 rows.
        let y: Vec<u32> = [vec![0; 10], vec![1; 6], vec![2; 2]].concat();
        let s = few_shot_split(&y, 4, 4, 7);
        let count = |rows: &[usize], k: u32| rows.iter().filter(|&&i| y[i] == k).count();
        assert_eq!(
            [0, 1, 2].map(|k| count(&s.train, k)),
            [4, 4, 2],
            "k per class, all of a short class"
        );
        assert_eq!(
            [0, 1, 2].map(|k| count(&s.val, k)),
            [4, 2, 0],
            "min(k, 4), what is left"
        );
        assert!(s.train.iter().all(|i| !s.val.contains(i)));
        assert_eq!(s.short_classes, vec![2]);
        assert_eq!(s, few_shot_split(&y, 4, 4, 7), "seeded");
        assert_ne!(s.train, few_shot_split(&y, 4, 4, 8).train);
        // 1-shot: one validation image per class.
        let one = few_shot_split(&y, 4, 1, 0);
        assert_eq!(([0, 1, 2].map(|k| count(&one.train, k))), [1, 1, 1]);
        assert_eq!(([0, 1, 2].map(|k| count(&one.val, k))), [1, 1, 1]);
        // 16-shot validation is capped at 4.
        let y: Vec<u32> = vec![0; 40];
        let big = few_shot_split(&y, 1, 16, 0);
        assert_eq!((big.train.len(), big.val.len()), (16, 4));
    }
}
