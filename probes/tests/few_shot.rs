//! Few-shot probes: k images per class, validation never in the fit, scores averaged over draws.

mod common;

use common::gaussian_classes;
use gapprobe_probes::few_shot::few_shot_split;
use gapprobe_probes::{run_few_shot_probe, run_probe, ProbeConfig};
use ndarray::{s, Array2};

fn cfg() -> ProbeConfig {
    ProbeConfig {
        bootstrap: 200,
        tol: 1e-5,
        ..Default::default()
    }
}

/// `cfg` with `draws` draws per few-shot score.
fn with_draws(cfg: &ProbeConfig, draws: usize) -> ProbeConfig {
    ProbeConfig {
        few_shot_draws: draws,
        ..cfg.clone()
    }
}

/// 8 classes, 60 training and 30 test images each (after the slice), 16 features.
fn data() -> (Array2<f32>, Vec<u32>, Array2<f32>, Vec<u32>) {
    let (x, y) = gaussian_classes(720, 16, 8, 0.9, 11);
    (
        x.slice(s![..480, ..]).to_owned(),
        y[..480].to_vec(),
        x.slice(s![480.., ..]).to_owned(),
        y[480..].to_vec(),
    )
}

#[test]
fn rows_outside_the_shots_and_their_validation_never_change_the_result() {
    let (xtr, ytr, xte, yte) = data();
    let cfg = cfg();
    let base = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        4,
    )
    .unwrap();
    assert_eq!(base.n_train, 4 * 8);
    assert_eq!(base.draws[0].n_train, 32);
    assert!(base.short_classes.is_empty());
    let split = few_shot_split(&ytr, 8, 4, cfg.seed);
    assert_eq!(split.val.len(), 4 * 8);
    // Scramble every row that is neither a shot nor a validation image: nothing changes.
    let mut other = xtr.clone();
    for i in 0..ytr.len() {
        if !split.train.contains(&i) && !split.val.contains(&i) {
            other.row_mut(i).mapv_inplace(|v| v * -7.0 + 3.0);
        }
    }
    let same = run_few_shot_probe(
        other.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        4,
    )
    .unwrap();
    assert_eq!(
        (same.top1, same.chosen_c, same.draws[0].objective),
        (base.top1, base.chosen_c, base.draws[0].objective)
    );
    // With one C there is no sweep: the validation rows cannot matter either.
    let one_c = ProbeConfig {
        c_grid: vec![0.1],
        ..cfg.clone()
    };
    let a = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&one_c, 1),
        4,
    )
    .unwrap();
    let mut val_scrambled = xtr.clone();
    for &i in &split.val {
        val_scrambled.row_mut(i).mapv_inplace(|v| v * 5.0 - 1.0);
    }
    let b = run_few_shot_probe(
        val_scrambled.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&one_c, 1),
        4,
    )
    .unwrap();
    assert_eq!(a.draws[0].objective, b.draws[0].objective);
    assert_eq!(a.top1, b.top1);
    // The shots themselves do matter.
    let mut shots_scrambled = xtr.clone();
    for &i in &split.train {
        shots_scrambled.row_mut(i).mapv_inplace(|v| v * 5.0 - 1.0);
    }
    let c = run_few_shot_probe(
        shots_scrambled.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&one_c, 1),
        4,
    )
    .unwrap();
    assert_ne!(a.draws[0].objective, c.draws[0].objective);
}

#[test]
fn draws_are_averaged_and_more_shots_score_higher() {
    let (xtr, ytr, xte, yte) = data();
    let cfg = cfg();
    let r = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 5),
        2,
    )
    .unwrap();
    assert_eq!(r.draws.len(), 5);
    let tops: Vec<f64> = r.draws.iter().map(|d| d.top1).collect();
    let mean = tops.iter().sum::<f64>() / 5.0;
    assert!((r.top1 - mean).abs() < 1e-12);
    let var = tops.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / 5.0;
    assert!((r.top1_std - var.sqrt()).abs() < 1e-12);
    assert!(
        r.top1_std > 0.0,
        "different draws, different scores: {tops:?}"
    );
    assert!(
        r.top1_ci.0 <= r.top1 && r.top1 <= r.top1_ci.1,
        "{:?}",
        r.top1_ci
    );
    // Draw i is the seed + i draw, so a rerun repeats it and draw 0 is a 1-draw run.
    let first = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        2,
    )
    .unwrap();
    assert_eq!(first.top1, r.draws[0].top1);

    let one = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 5),
        1,
    )
    .unwrap();
    let sixteen = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 5),
        16,
    )
    .unwrap();
    let full = run_probe(xtr.view(), &ytr, xte.view(), &yte, 8, &cfg).unwrap();
    assert!(
        one.top1 < sixteen.top1 && sixteen.top1 <= full.top1 + 0.02,
        "1-shot {} 16-shot {} all {}",
        one.top1,
        sixteen.top1,
        full.top1
    );
    assert!(one.top1 > 1.0 / 8.0, "above chance");
}

#[test]
fn short_classes_train_on_what_they_have_and_bad_settings_are_refused() {
    let (xtr, ytr, xte, yte) = data();
    let cfg = cfg();
    // 60 images per class: 64 shots leaves every class short, and no validation image.
    let r = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        64,
    )
    .unwrap();
    assert_eq!(r.short_classes.len(), 8);
    assert_eq!(r.n_train, 480);
    assert!(r.draws[0].sweep.is_empty(), "no validation rows, no sweep");
    let err = run_few_shot_probe(
        xtr.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        0,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("at least 1 image per class"),
        "{err}"
    );
    let mut nan = xtr.clone();
    nan[[3, 2]] = f32::NAN;
    let err = run_few_shot_probe(
        nan.view(),
        &ytr,
        xte.view(),
        &yte,
        8,
        &with_draws(&cfg, 1),
        2,
    )
    .unwrap_err();
    assert!(err.to_string().contains("row 3, column 2"), "{err}");
}
