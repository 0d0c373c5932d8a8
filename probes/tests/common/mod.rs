//! Shared helpers for the integration tests: fixture loading and synthetic data.
#![allow(dead_code)]

use gapprobe_probes::{objective, LogisticRegression, Solver};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
pub struct SkResult {
    pub c: f64,
    pub test_acc: f64,
    pub objective: f64,
    pub n_iter: usize,
    pub converged: bool,
}

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub name: String,
    pub n_train: usize,
    pub n_test: usize,
    pub d: usize,
    pub n_classes: usize,
    pub tol: f64,
    pub max_iter: usize,
    pub y_train: Vec<u32>,
    pub y_test: Vec<u32>,
    pub results: Vec<SkResult>,
    #[serde(skip)]
    pub x_train: Array2<f32>,
    #[serde(skip)]
    pub x_test: Array2<f32>,
}

/// IEEE half to single (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn load_fixture(name: &str) -> Fixture {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture json");
    let mut fx: Fixture = serde_json::from_str(&text).expect("parse fixture");
    let raw = std::fs::read(dir.join(format!("{name}.f16"))).expect("fixture f16");
    let vals: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    assert_eq!(vals.len(), (fx.n_train + fx.n_test) * fx.d);
    let (tr, te) = vals.split_at(fx.n_train * fx.d);
    fx.x_train = Array2::from_shape_vec((fx.n_train, fx.d), tr.to_vec()).unwrap();
    fx.x_test = Array2::from_shape_vec((fx.n_test, fx.d), te.to_vec()).unwrap();
    fx
}

pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Gaussian classes: class means `sep·N(0, I)` in `d` dims plus unit noise; balanced labels.
pub fn gaussian_classes(
    n: usize,
    d: usize,
    k: usize,
    sep: f32,
    seed: u64,
) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let means: Vec<Vec<f32>> = (0..k)
        .map(|_| (0..d).map(|_| sep * normal(&mut rng)).collect())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1000));
    let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| means[y[i] as usize][j] + normal(&mut rng));
    (x, y)
}

/// The scikit-learn fixtures every solver must match.
pub const PARITY_CASES: &[&str] = &["k2_d16", "k10_d64", "k200_d64", "k4_d4096", "ill_k5_d26"];

/// Fit `case`'s training split at each fixture C with `solver`: converged, objective within 1e-4
/// relative of scikit-learn's, test accuracy within 0.3 points.
pub fn check_parity(solver: Solver, case: &str) {
    let fx = load_fixture(case);
    for r in &fx.results {
        assert!(r.converged, "{case}: sklearn did not converge at C={}", r.c);
        let est = LogisticRegression {
            c: r.c,
            tol: fx.tol,
            max_iter: fx.max_iter,
            solver,
        };
        let m = est
            .fit(fx.x_train.view(), &fx.y_train, fx.n_classes)
            .unwrap();
        // Objective recomputed independently of the solver from the returned parameters.
        let obj = objective(
            fx.x_train.view(),
            &fx.y_train,
            m.weights(),
            m.intercept(),
            r.c,
        );
        let rel = (obj - r.objective) / r.objective;
        let pred = m.predict(fx.x_test.view());
        let acc =
            pred.iter().zip(&fx.y_test).filter(|(p, t)| p == t).count() as f64 / fx.n_test as f64;
        eprintln!(
            "{solver} {case} C={}: objective {obj:.6} vs sklearn {:.6} (rel {rel:+.2e}), reported {:.6}; \
             acc {acc:.4} vs {:.4}; iters {} vs {}",
            r.c, r.objective, m.objective(), r.test_acc, m.n_iter, r.n_iter
        );
        assert!(m.converged(), "{solver} {case} C={}: not converged", r.c);
        assert!(
            rel.abs() <= 1e-4,
            "{solver} {case} C={}: objective rel diff {rel:e}",
            r.c
        );
        assert!(
            (m.objective() - obj).abs() <= 1e-4 * obj,
            "reported objective disagrees with recomputed"
        );
        assert!(
            (acc - r.test_acc).abs() <= 0.003 + 1e-12,
            "{solver} {case} C={}: acc {acc} vs {}",
            r.c,
            r.test_acc
        );
    }
}
