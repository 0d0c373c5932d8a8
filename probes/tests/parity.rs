//! Parity with scikit-learn (fixtures from tools/probe_fixtures.py): at tol 1e-6, test accuracy
//! within 0.3 points and the objective within 1e-4 relative of scikit-learn's.

mod common;

use common::load_fixture;
use gapprobe_probes::{objective, LogisticRegression, Solver};

const CASES: &[&str] = &["k2_d16", "k10_d64", "k200_d64", "k4_d4096", "ill_k5_d26"];

fn check(solver: Solver, case: &str) {
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

#[test]
fn candle_matches_sklearn() {
    for case in CASES {
        check(Solver::Candle, case);
    }
}

#[test]
fn linfa_matches_sklearn() {
    for case in CASES {
        check(Solver::Linfa, case);
    }
}
