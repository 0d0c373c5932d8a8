//! Parity with scikit-learn (fixtures from tools/probe_fixtures.py): at tol 1e-6, test accuracy
//! within 0.3 points and the objective within 1e-4 relative of scikit-learn's.

mod common;

use common::{check_parity as check, PARITY_CASES as CASES};
use gapprobe_probes::Solver;

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
