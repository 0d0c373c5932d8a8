//! The probe protocol: standardise, sweep C on validation, refit, evaluate.

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayView2, Axis};

use crate::logistic::{default_device, find_non_finite, LogisticRegression};
use crate::sweep::{sweep, Fitter};
use crate::{bootstrap, metrics, split, ProbeConfig, ProbeReport, Standardizer};

fn check_input(name: &str, x: ArrayView2<f32>, y: &[u32], n_classes: usize) -> Result<()> {
    ensure!(
        x.nrows() == y.len(),
        "{name}_x has {} rows but {name}_y has {} labels",
        x.nrows(),
        y.len()
    );
    if let Some(i) = y.iter().position(|&l| l as usize >= n_classes) {
        bail!(
            "{name}_y[{i}] = {} is not below n_classes = {n_classes}",
            y[i]
        );
    }
    if let Some((i, j)) = find_non_finite(x) {
        bail!(
            "{name}_x has a non-finite value ({}) at row {i}, column {j}",
            x[[i, j]]
        );
    }
    Ok(())
}

/// Standardise with train stats, sweep C on a validation split carved from train, refit, evaluate on test.
///
/// * The standardiser is fitted on the rows of the final fit (train + validation, or train only
///   when `refit_on_train_val` is false) and applied to everything.
/// * If the validation split is empty (too few samples per class), or the grid has a single
///   value, no sweep is run and the first grid value is used.
/// * Without `refit_on_train_val` the final model is the sweep's model at the chosen C, trained
///   on the train part only.
/// * Classes absent from the final training rows are listed in `classes_absent_from_train` and are
///   never predicted.
pub fn run_probe(
    train_x: ArrayView2<f32>,
    train_y: &[u32],
    test_x: ArrayView2<f32>,
    test_y: &[u32],
    n_classes: usize,
    cfg: &ProbeConfig,
) -> anyhow::Result<ProbeReport> {
    check_all(train_x, train_y, test_x, test_y, n_classes, cfg)?;
    let (tr_idx, va_idx) = split::stratified_split(train_y, n_classes, cfg.val_fraction, cfg.seed);
    let all: Vec<usize> = (0..train_y.len()).collect();
    let rows = Rows {
        fit: &tr_idx,
        val: &va_idx,
        pool: &all,
        refit: cfg.refit_on_train_val,
    };
    probe_on(train_x, train_y, test_x, test_y, n_classes, cfg, &rows)
}

/// The checks every protocol makes before any work.
pub(crate) fn check_all(
    train_x: ArrayView2<f32>,
    train_y: &[u32],
    test_x: ArrayView2<f32>,
    test_y: &[u32],
    n_classes: usize,
    cfg: &ProbeConfig,
) -> Result<()> {
    ensure!(n_classes > 0, "n_classes must be positive");
    ensure!(!train_y.is_empty(), "empty training set");
    ensure!(!test_y.is_empty(), "empty test set");
    ensure!(!cfg.c_grid.is_empty(), "empty C grid");
    ensure!(
        cfg.c_grid.iter().all(|c| *c > 0.0 && c.is_finite()),
        "C values must be positive and finite"
    );
    ensure!(
        train_x.ncols() == test_x.ncols(),
        "train has {} features, test has {}",
        train_x.ncols(),
        test_x.ncols()
    );
    check_input("train", train_x, train_y, n_classes)?;
    check_input("test", test_x, test_y, n_classes)
}

/// Which training rows a probe uses: the sweep fits on `fit` and scores on `val`; the final
/// model is refitted on `pool` when `refit` (or when no sweep runs), else it is the sweep's
/// model on `fit`.
pub(crate) struct Rows<'a> {
    pub fit: &'a [usize],
    pub val: &'a [usize],
    pub pool: &'a [usize],
    pub refit: bool,
}

/// Standardise, sweep, fit and evaluate on the given rows of the training arrays.
pub(crate) fn probe_on(
    train_x: ArrayView2<f32>,
    train_y: &[u32],
    test_x: ArrayView2<f32>,
    test_y: &[u32],
    n_classes: usize,
    cfg: &ProbeConfig,
    rows: &Rows,
) -> Result<ProbeReport> {
    let device = default_device();
    let est = LogisticRegression {
        c: cfg.c_grid[0],
        tol: cfg.tol,
        max_iter: cfg.max_iter,
        solver: cfg.solver,
    };
    let (tr_idx, va_idx) = (rows.fit, rows.val);
    let do_sweep = !va_idx.is_empty() && cfg.c_grid.len() > 1;
    let final_rows: &[usize] = if rows.refit || !do_sweep {
        rows.pool
    } else {
        tr_idx
    };
    let scaler = Standardizer::fit(train_x.select(Axis(0), final_rows).view())?;
    let xs = scaler.transform(train_x)?;
    let xt = scaler.transform(test_x)?;

    let (chosen_c, sweep_pts, warm) = if do_sweep {
        let xtr = xs.select(Axis(0), tr_idx);
        let ytr: Vec<u32> = tr_idx.iter().map(|&i| train_y[i]).collect();
        let xva = xs.select(Axis(0), va_idx);
        let yva: Vec<u32> = va_idx.iter().map(|&i| train_y[i]).collect();
        let fitter = Fitter::new(&est, &device, xtr.view(), &ytr, n_classes)?;
        let r = sweep(&fitter, xva.view(), &yva, &cfg.c_grid, cfg.refine)?;
        (r.best_c, r.points, Some(r.best_model))
    } else {
        (cfg.c_grid[0], Vec::new(), None)
    };

    let model = match (&warm, rows.refit || !do_sweep) {
        (Some(m), false) => m.clone(),
        (w, _) => {
            let fit = |x: ArrayView2<f32>, y: &[u32]| -> Result<_> {
                let fitter = Fitter::new(&est, &device, x, y, n_classes)?;
                fitter.fit(chosen_c, w.as_ref())
            };
            if final_rows.len() == train_y.len() {
                fit(xs.view(), train_y)?
            } else {
                let y: Vec<u32> = final_rows.iter().map(|&i| train_y[i]).collect();
                fit(xs.select(Axis(0), final_rows).view(), &y)?
            }
        }
    };
    let mut seen = vec![false; n_classes];
    final_rows
        .iter()
        .for_each(|&i| seen[train_y[i] as usize] = true);
    let classes_absent_from_train: Vec<usize> = (0..n_classes).filter(|&k| !seen[k]).collect();

    let scores = model.decision_function(xt.view());
    let m = metrics::compute(scores.view(), test_y, n_classes);
    let top1_ci = bootstrap::top1_ci(&m.correct, cfg.bootstrap, cfg.seed);
    Ok(ProbeReport {
        top1: m.top1,
        top5: m.top5,
        mean_per_class: m.mean_per_class,
        macro_f1: m.macro_f1,
        top1_ci,
        chosen_c,
        sweep: sweep_pts,
        n_train: final_rows.len(),
        n_test: test_y.len(),
        n_classes,
        per_class_accuracy: m.per_class_accuracy,
        confusion: m.confusion,
        classes_absent_from_train,
        objective: model.objective(),
        correct: m.correct,
    })
}
