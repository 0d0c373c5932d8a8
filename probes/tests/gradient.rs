//! The candle objective's gradient against central finite differences, and against the f64
//! host implementation used to report linfa's result (multinomial and binomial cases).

mod common;

use common::gaussian_classes;
use gapprobe_probes::candle_solver::{param_cols, CandleProblem};
use gapprobe_probes::linfa_solver::host_fg;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn check(k: usize) {
    let (x, y) = gaussian_classes(120, 7, k, 0.8, 21 + k as u64);
    let kp = param_cols(k);
    let p = CandleProblem::new(x.view(), &y, k, &candle_core::Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let theta: Vec<f64> = (0..8 * kp).map(|_| rng.gen::<f64>() - 0.5).collect();
    let c = 0.7;
    let (f, g) = p.fg(&theta, c).unwrap();
    let (fh, gh) = host_fg(x.view(), &y, k, &theta, c);
    assert!(
        (f - fh).abs() < 1e-6 * fh.abs(),
        "k={k}: f {f} vs host {fh}"
    );
    for (a, b) in g.iter().zip(&gh) {
        assert!((a - b).abs() < 1e-5, "k={k}: grad {a} vs host {b}");
    }
    let h = 1e-5;
    for i in (0..theta.len()).step_by(3) {
        let mut tp = theta.clone();
        tp[i] += h;
        let mut tm = theta.clone();
        tm[i] -= h;
        let fd =
            (host_fg(x.view(), &y, k, &tp, c).0 - host_fg(x.view(), &y, k, &tm, c).0) / (2.0 * h);
        assert!(
            (fd - gh[i]).abs() < 1e-6,
            "k={k} param {i}: finite difference {fd} vs {}",
            gh[i]
        );
    }
}

#[test]
fn multinomial_gradient() {
    check(5);
}

#[test]
fn binomial_gradient() {
    check(2);
}
