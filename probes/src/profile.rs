//! Where a candle-solver fit spends its time, for benchmarks (`bench_probe --profile`): wall time
//! of the data products (with their transfers on CUDA), the loss/softmax passes, the
//! preconditioner, and the rest (L-BFGS algebra, vector updates). Accumulated per thread across
//! fits until [`take`]; measuring costs two clock reads per section.

use serde::Serialize;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Seconds per part of the solver, summed over the fits since the last [`take`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SolverTimes {
    /// Whole `solve` calls.
    pub total_s: f64,
    /// `X·M` and `Xᵀ·R` products, transfers to and from the device included.
    pub products_s: f64,
    /// Losses, softmax and residuals over the `n × K` logits (line evaluations).
    pub loss_s: f64,
    /// Building and applying the preconditioner.
    pub precondition_s: f64,
    /// Calls of the products.
    pub n_products: usize,
}

impl SolverTimes {
    /// Everything else: L-BFGS algebra, vector updates, the gradient's assembly.
    pub fn rest_s(&self) -> f64 {
        self.total_s - self.products_s - self.loss_s - self.precondition_s
    }
}

thread_local! {
    static TIMES: RefCell<SolverTimes> = RefCell::new(SolverTimes::default());
}

/// The part of the solver a timed section belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    Total,
    Products,
    Loss,
    Precondition,
}

/// Runs `f`, adding its wall time to `part`.
pub(crate) fn timed<R>(part: Part, f: impl FnOnce() -> R) -> R {
    let t0 = Instant::now();
    let r = f();
    add(part, t0.elapsed());
    r
}

fn add(part: Part, d: Duration) {
    let s = d.as_secs_f64();
    TIMES.with(|t| {
        let mut t = t.borrow_mut();
        match part {
            Part::Total => t.total_s += s,
            Part::Products => {
                t.products_s += s;
                t.n_products += 1;
            }
            Part::Loss => t.loss_s += s,
            Part::Precondition => t.precondition_s += s,
        }
    });
}

/// The times accumulated on this thread since the last call, and a reset.
pub fn take() -> SolverTimes {
    TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}
