//! run_probe end to end, the degenerate inputs of the issue, and determinism.

mod common;

use common::gaussian_classes;
use gapprobe_probes::{run_probe, LogisticRegression, ProbeConfig, Solver, Standardizer};
use ndarray::{s, Array2};

fn quick_cfg() -> ProbeConfig {
    ProbeConfig {
        bootstrap: 200,
        tol: 1e-5,
        ..Default::default()
    }
}

#[test]
fn separable_data_scores_high_and_report_is_consistent() {
    let (xall, yall) = gaussian_classes(900, 20, 6, 1.5, 1);
    let (xtr, ytr) = (xall.slice(s![..600, ..]).to_owned(), yall[..600].to_vec());
    let (xte, yte) = (xall.slice(s![600.., ..]).to_owned(), yall[600..].to_vec());
    let cfg = quick_cfg();
    let r = run_probe(xtr.view(), &ytr, xte.view(), &yte, 6, &cfg).unwrap();
    assert!(r.top1 > 0.9, "top1 {}", r.top1);
    assert!(r.top5 >= r.top1);
    assert_eq!(r.n_train, 600);
    assert_eq!(r.n_test, 300);
    assert!(r.top1_ci.0 <= r.top1 && r.top1 <= r.top1_ci.1);
    assert_eq!(
        r.confusion
            .iter()
            .flatten()
            .map(|&v| v as usize)
            .sum::<usize>(),
        300
    );
    let diag: u32 = (0..6).map(|k| r.confusion[k][k]).sum();
    assert!((diag as f64 / 300.0 - r.top1).abs() < 1e-12);
    // 7 grid points + 4 refinement points (none coincide with the decade grid).
    assert_eq!(r.sweep.len(), 11);
    assert!(r.sweep.windows(2).all(|w| w[0].c < w[1].c));
    let best = r.sweep.iter().map(|p| p.val_top1).fold(0.0, f64::max);
    let chosen = r.sweep.iter().find(|p| p.c == r.chosen_c).unwrap();
    assert_eq!(chosen.val_top1, best);
    assert!(r.classes_absent_from_train.is_empty());
    assert!(r.objective > 0.0);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"chosen_c\""));
}

#[test]
fn deterministic_across_runs() {
    let (x, y) = gaussian_classes(400, 30, 8, 0.6, 3);
    let (xtr, ytr) = (x.slice(s![..300, ..]), &y[..300]);
    let (xte, yte) = (x.slice(s![300.., ..]), &y[300..]);
    let cfg = quick_cfg();
    let a = run_probe(xtr, ytr, xte, yte, 8, &cfg).unwrap();
    let b = run_probe(xtr, ytr, xte, yte, 8, &cfg).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

#[test]
fn nan_is_an_error_naming_row_and_column() {
    let (mut x, y) = gaussian_classes(100, 10, 4, 1.0, 5);
    x[[17, 3]] = f32::NAN;
    let err = run_probe(x.view(), &y, x.view(), &y, 4, &quick_cfg())
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 17") && err.contains("column 3"), "{err}");
    let err = LogisticRegression::default()
        .fit(x.view(), &y, 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 17") && err.contains("column 3"), "{err}");
    let (mut xt, yt) = gaussian_classes(20, 10, 4, 1.0, 6);
    xt[[2, 9]] = f32::INFINITY;
    let (x, y) = gaussian_classes(100, 10, 4, 1.0, 5);
    let err = run_probe(x.view(), &y, xt.view(), &yt, 4, &quick_cfg())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test_x") && err.contains("row 2") && err.contains("column 9"),
        "{err}"
    );
}

#[test]
fn label_out_of_range_is_an_error() {
    let (x, mut y) = gaussian_classes(50, 5, 3, 1.0, 2);
    y[4] = 3;
    assert!(run_probe(x.view(), &y, x.view(), &y, 3, &quick_cfg()).is_err());
}

#[test]
fn class_with_one_sample_trains_and_stays_in_train() {
    let (x, mut y) = gaussian_classes(200, 10, 4, 2.0, 8);
    // Make class 4 exist with exactly one training sample.
    y[0] = 4;
    let (xte, yte) = gaussian_classes(80, 10, 4, 2.0, 8);
    let r = run_probe(x.view(), &y, xte.view(), &yte, 5, &quick_cfg()).unwrap();
    assert!(r.classes_absent_from_train.is_empty());
    assert_eq!(r.per_class_accuracy[4], None); // absent from test
    assert!(r.top1 > 0.8);
    // Few-shot: no refit, the singleton still trains (it can never be in validation).
    let cfg = ProbeConfig {
        refit_on_train_val: false,
        ..quick_cfg()
    };
    let r = run_probe(x.view(), &y, xte.view(), &yte, 5, &cfg).unwrap();
    assert!(r.classes_absent_from_train.is_empty());
    assert_eq!(r.n_train, 200 - 40);
}

#[test]
fn class_absent_from_train_is_reported_and_never_predicted() {
    let (x, y) = gaussian_classes(300, 10, 5, 2.0, 9);
    let keep: Vec<usize> = (0..300).filter(|&i| y[i] != 2).collect();
    let xtr = x.select(ndarray::Axis(0), &keep);
    let ytr: Vec<u32> = keep.iter().map(|&i| y[i]).collect();
    let r = run_probe(xtr.view(), &ytr, x.view(), &y, 5, &quick_cfg()).unwrap();
    assert_eq!(r.classes_absent_from_train, vec![2]);
    assert!(r.confusion.iter().all(|row| row[2] == 0));
    assert_eq!(r.per_class_accuracy[2], Some(0.0));
    let m = LogisticRegression::default()
        .fit(xtr.view(), &ytr, 5)
        .unwrap();
    let p = m.predict_proba(x.view());
    assert!(p.column(2).iter().all(|&v| v == 0.0));
    assert!(p.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-5));
}

#[test]
fn constant_features_get_scale_one() {
    let (mut x, y) = gaussian_classes(200, 8, 4, 1.5, 10);
    x.column_mut(2).fill(5.0);
    x.column_mut(6).fill(0.0);
    let s = Standardizer::fit(x.view()).unwrap();
    assert_eq!(s.scale[2], 1.0);
    assert_eq!(s.scale[6], 1.0);
    assert_eq!(s.n_constant(), 2);
    let t = s.transform(x.view()).unwrap();
    assert!(t.column(2).iter().all(|&v| v == 0.0));
    let r = run_probe(x.view(), &y, x.view(), &y, 4, &quick_cfg()).unwrap();
    assert!(r.top1 > 0.8);
}

#[test]
fn d_much_larger_than_n() {
    let (x, y) = gaussian_classes(60, 2000, 3, 0.3, 11);
    let (xtr, ytr) = (x.slice(s![..45, ..]), &y[..45]);
    let (xte, yte) = (x.slice(s![45.., ..]), &y[45..]);
    let r = run_probe(xtr, ytr, xte, yte, 3, &quick_cfg()).unwrap();
    assert!(r.top1 > 0.6, "top1 {}", r.top1);
}

#[test]
fn few_shot_single_sample_per_class_has_no_sweep() {
    let (x, y) = gaussian_classes(50, 10, 5, 2.0, 12);
    let (xtr, ytr) = (x.slice(s![..5, ..]), &y[..5]);
    let cfg = ProbeConfig {
        refit_on_train_val: false,
        ..quick_cfg()
    };
    let r = run_probe(xtr, ytr, x.slice(s![5.., ..]), &y[5..], 5, &cfg).unwrap();
    assert!(r.sweep.is_empty());
    assert_eq!(r.chosen_c, cfg.c_grid[0]);
    assert_eq!(r.n_train, 5);
}

#[test]
fn solvers_agree_on_a_small_problem() {
    let (x, y) = gaussian_classes(300, 12, 4, 0.7, 13);
    let fit = |solver| {
        LogisticRegression {
            c: 0.5,
            tol: 1e-7,
            max_iter: 2000,
            solver,
        }
        .fit(x.view(), &y, 4)
        .unwrap()
    };
    let (a, b) = (fit(Solver::Candle), fit(Solver::Linfa));
    assert!(
        (a.objective() - b.objective()).abs() <= 1e-5 * b.objective(),
        "{} vs {}",
        a.objective(),
        b.objective()
    );
    let wa: Array2<f32> = a.weights().to_owned();
    let diff = (&wa - &b.weights())
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-2, "max weight diff {diff}");
}

#[test]
fn solver_parses_and_displays() {
    assert_eq!("candle".parse::<Solver>().unwrap(), Solver::Candle);
    assert_eq!("LINFA".parse::<Solver>().unwrap(), Solver::Linfa);
    assert!("sgd".parse::<Solver>().is_err());
    assert_eq!(Solver::Linfa.to_string(), "linfa");
}

#[test]
fn preconditioner_changes_the_path_not_the_optimum() {
    use gapprobe_probes::candle_solver::CandleProblem;
    // Correlated features: a shared low-rank component dominates the spectrum.
    let (x0, y) = gaussian_classes(800, 96, 12, 0.5, 14);
    let (f, _) = gaussian_classes(800, 4, 1, 0.0, 15);
    let x = Array2::from_shape_fn((800, 96), |(i, j)| x0[[i, j]] + 3.0 * f[[i, j % 4]]);
    let dev = candle_core::Device::Cpu;
    let plain = CandleProblem::new(x.view(), &y, 12, &dev)
        .unwrap()
        .with_rank(0);
    let pre = CandleProblem::new(x.view(), &y, 12, &dev)
        .unwrap()
        .with_rank(24);
    let a = plain.solve(10.0, 1e-7, 3000, None).unwrap();
    let b = pre.solve(10.0, 1e-7, 3000, None).unwrap();
    assert!((a.f - b.f).abs() <= 1e-6 * a.f, "{} vs {}", a.f, b.f);
    let gmax = b.grad.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(gmax <= 1e-7, "gradient in the original parameters {gmax}");
    eprintln!(
        "iterations: plain {}, preconditioned {}",
        a.n_iter, b.n_iter
    );
}

#[test]
fn all_constant_features_fall_back_to_class_priors() {
    // Rank-0 data with a preconditioner requested: must neither hang nor fail.
    let x = Array2::<f32>::from_elem((200, 100), 3.0);
    let y: Vec<u32> = (0..200).map(|i| if i % 4 == 0 { 1 } else { 2 }).collect();
    let r = run_probe(x.view(), &y, x.view(), &y, 3, &quick_cfg()).unwrap();
    // Every prediction is the majority class (2).
    assert!(r.confusion.iter().all(|row| row[0] == 0 && row[1] == 0));
    assert!((r.top1 - 0.75).abs() < 1e-12);
    assert_eq!(r.classes_absent_from_train, vec![0]);
}

#[test]
fn d_much_larger_than_n_with_preconditioner() {
    let (x, y) = gaussian_classes(300, 3000, 5, 0.15, 16);
    let (xtr, ytr) = (x.slice(s![..200, ..]), &y[..200]);
    let (xte, yte) = (x.slice(s![200.., ..]), &y[200..]);
    let r = run_probe(xtr, ytr, xte, yte, 5, &quick_cfg()).unwrap();
    assert!(r.top1 > 0.6, "top1 {}", r.top1);
}
