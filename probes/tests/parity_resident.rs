//! The device-resident candle solver (the CUDA default) run on the CPU against the same
//! scikit-learn fixtures as `parity.rs`. Its own test binary, so setting the environment variable
//! that selects it cannot leak into other tests.

mod common;

use common::{check_parity, PARITY_CASES};
use gapprobe_probes::Solver;

#[test]
fn resident_candle_matches_sklearn() {
    std::env::set_var("GAPPROBE_PROBE_RESIDENT", "1");
    for case in PARITY_CASES {
        check_parity(Solver::Candle, case);
    }
}
