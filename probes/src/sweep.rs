//! C sweep on a validation split with warm starts, and the refinement around the best C.

use anyhow::Result;
use candle_core::Device;
use ndarray::ArrayView2;

use crate::candle_solver::CandleProblem;
use crate::logistic::{compact_labels, FittedLogistic, LogisticRegression};
use crate::metrics::top1;
use crate::{Solver, SweepPoint};

/// One training set prepared for repeated fits at different C (data uploaded once for candle).
pub struct Fitter<'a> {
    est: LogisticRegression,
    x: ArrayView2<'a, f32>,
    y: Vec<u32>,
    present: Vec<usize>,
    n_classes: usize,
    candle: Option<CandleProblem>,
}

impl<'a> Fitter<'a> {
    /// Validate and prepare `x`, `y` for `est.solver` (`est.c` is ignored).
    pub fn new(
        est: &LogisticRegression,
        device: &Device,
        x: ArrayView2<'a, f32>,
        y: &[u32],
        n_classes: usize,
    ) -> Result<Self> {
        est.check(x, y)?;
        let comp = compact_labels(y, n_classes)?;
        let candle = match est.solver {
            Solver::Candle => Some(CandleProblem::new(x, &comp.y, comp.present.len(), device)?),
            Solver::Linfa => None,
        };
        Ok(Self {
            est: est.clone(),
            x,
            y: comp.y,
            present: comp.present,
            n_classes,
            candle,
        })
    }

    /// Fit at `c`, warm-started from `init` when it has the same classes.
    pub fn fit(&self, c: f64, init: Option<&FittedLogistic>) -> Result<FittedLogistic> {
        let init = init
            .filter(|f| f.present == self.present)
            .map(|f| f.theta.clone());
        let est = LogisticRegression {
            c,
            ..self.est.clone()
        };
        let k = self.present.len();
        let res = match &self.candle {
            Some(p) => p.solve(c, est.tol, est.max_iter, init)?,
            None => crate::linfa_solver::solve(self.x, &self.y, k, c, est.tol, est.max_iter, init)?,
        };
        let fitted = est.finish(
            self.x.ncols(),
            self.n_classes,
            self.present.clone(),
            res,
            self.x.nrows(),
        );
        if !fitted.converged() {
            tracing::warn!(
                c,
                n_iter = fitted.n_iter,
                "logistic regression did not converge (max_iter reached)"
            );
        }
        Ok(fitted)
    }
}

/// Refinement points around `best`: two extra points each side, a quarter and a half decade
/// away (`best·10^±0.25`, `best·10^±0.5`).
pub fn refine_points(best: f64) -> Vec<f64> {
    [-0.5, -0.25, 0.25, 0.5]
        .iter()
        .map(|e| best * 10f64.powf(*e))
        .collect()
}

/// Result of a sweep.
pub struct SweepResult {
    pub best_c: f64,
    /// All points, sorted by C.
    pub points: Vec<SweepPoint>,
    /// The fitted model at `best_c` (on the sweep's training rows), for warm-starting a refit.
    pub best_model: FittedLogistic,
}

/// Fit each C in `grid` (ascending, warm-started from the previous C) on `fitter`'s data, score
/// top-1 on `(val_x, val_y)`, then optionally refine around the best. The best is the highest
/// validation top-1; ties go to the smallest C (the most regularised model).
pub fn sweep(
    fitter: &Fitter,
    val_x: ArrayView2<f32>,
    val_y: &[u32],
    grid: &[f64],
    refine: bool,
) -> Result<SweepResult> {
    let mut grid: Vec<f64> = grid.to_vec();
    grid.sort_by(|a, b| a.partial_cmp(b).unwrap());
    grid.dedup();
    let mut points: Vec<(SweepPoint, FittedLogistic)> = Vec::new();
    let mut prev: Option<FittedLogistic> = None;
    for &c in &grid {
        let m = fitter.fit(c, prev.as_ref())?;
        let acc = top1(&m.predict(val_x), val_y);
        tracing::debug!(c, val_top1 = acc, n_iter = m.n_iter, "sweep point");
        points.push((SweepPoint { c, val_top1: acc }, m.clone()));
        prev = Some(m);
    }
    let best_of = |pts: &[(SweepPoint, FittedLogistic)]| -> usize {
        let mut b = 0;
        for (i, (p, _)) in pts.iter().enumerate() {
            let (bp, _) = &pts[b];
            if p.val_top1 > bp.val_top1 || (p.val_top1 == bp.val_top1 && p.c < bp.c) {
                b = i;
            }
        }
        b
    };
    if refine && !points.is_empty() {
        let b = best_of(&points);
        let best_c = points[b].0.c;
        let start = points[b].1.clone();
        let mut warm = start.clone();
        for c in refine_points(best_c) {
            if points.iter().any(|(p, _)| (p.c / c - 1.0).abs() < 1e-9) {
                continue;
            }
            // Warm-start the points below from the best, the points above from their neighbour.
            let init = if c < best_c { &start } else { &warm };
            let m = fitter.fit(c, Some(init))?;
            let acc = top1(&m.predict(val_x), val_y);
            points.push((SweepPoint { c, val_top1: acc }, m.clone()));
            if c > best_c {
                warm = m;
            }
        }
    }
    points.sort_by(|a, b| a.0.c.partial_cmp(&b.0.c).unwrap());
    let b = best_of(&points);
    let best_c = points[b].0.c;
    let best_model = points[b].1.clone();
    Ok(SweepResult {
        best_c,
        points: points.into_iter().map(|(p, _)| p).collect(),
        best_model,
    })
}
