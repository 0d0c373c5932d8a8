//! Linear probes on feature arrays: standardisation, multinomial L2 logistic regression with
//! scikit-learn's objective (candle L-BFGS or linfa-logistic), C sweeps on a validation split,
//! metrics with a bootstrap interval, few-shot probes, representation similarity (CKA, mutual k-NN),
//! and zero-shot answer scoring as the Finer paper does it (exact match, token F1). Knows nothing
//! of images or files.

pub mod bootstrap;
pub mod candle_solver;
mod device_memory;
pub mod exact_match;
pub mod few_shot;
pub mod lbfgs;
pub mod lbfgs_memory;
pub mod linesearch;
pub mod linfa_solver;
pub mod logistic;
pub mod metrics;
pub mod precond;
pub mod products;
pub mod profile;
mod protocol;
pub mod representation;
mod resident;
mod row_softmax;
pub mod split;
pub mod standardize;
pub mod sweep;

pub use few_shot::{run_few_shot_probe, FewShotReport};
pub use lbfgs::Termination;
pub use logistic::{default_device, objective, FittedLogistic, LogisticRegression};
pub use protocol::run_probe;
pub use representation::{similarity, Similarity};
pub use standardize::Standardizer;

use serde::Serialize;

/// Which optimiser fits the logistic regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// L-BFGS (Moré–Thuente) on candle tensors; CUDA with the `cuda` feature, else CPU.
    #[default]
    Candle,
    /// linfa-logistic (argmin L-BFGS, f64, CPU): the reference solver.
    Linfa,
}

impl std::str::FromStr for Solver {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "candle" => Ok(Solver::Candle),
            "linfa" => Ok(Solver::Linfa),
            _ => anyhow::bail!("unknown solver {s:?} (expected \"candle\" or \"linfa\")"),
        }
    }
}

impl std::fmt::Display for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Solver::Candle => "candle",
            Solver::Linfa => "linfa",
        })
    }
}

/// Probe protocol settings (OpenAI CLIP style).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeConfig {
    /// C values swept on validation (default `10^-3 ..= 10^3`, 7 points).
    pub c_grid: Vec<f64>,
    /// Refine around the best C: two extra points each side (`best·10^±0.25`, `best·10^±0.5`).
    pub refine: bool,
    /// Fraction of train carved out (stratified, seeded) for the sweep.
    pub val_fraction: f64,
    /// Refit the chosen C on train + validation (set false for few-shot so validation never
    /// enters training).
    pub refit_on_train_val: bool,
    /// Gradient tolerance with scikit-learn's meaning (max |grad| of the mean-scaled objective).
    pub tol: f64,
    /// Maximum L-BFGS iterations per fit.
    pub max_iter: usize,
    /// Seed for the split and the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples for the top-1 95% interval (0 disables it: NaN bounds).
    pub bootstrap: usize,
    /// Solver.
    pub solver: Solver,
    /// Few-shot probes to run besides the standard one: training images per class (e.g.
    /// `[1, 2, 4, 8, 16]`; empty: none). See [`few_shot`].
    pub few_shot: Vec<usize>,
    /// Draws of the shots each few-shot score averages.
    pub few_shot_draws: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            c_grid: (-3..=3).map(|e| 10f64.powi(e)).collect(),
            refine: true,
            val_fraction: 0.2,
            refit_on_train_val: true,
            tol: 1e-6,
            max_iter: 1000,
            seed: 0,
            bootstrap: 1000,
            solver: Solver::Candle,
            few_shot: Vec::new(),
            few_shot_draws: 3,
        }
    }
}

/// Validation top-1 at one C.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub c: f64,
    pub val_top1: f64,
}

/// Everything a probe run reports. Accuracies are fractions in `[0, 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class: f64,
    pub macro_f1: f64,
    /// 95% percentile bootstrap interval of top-1 over test samples.
    pub top1_ci: (f64, f64),
    pub chosen_c: f64,
    /// Sweep curve sorted by C (empty when the validation split was empty).
    pub sweep: Vec<SweepPoint>,
    /// Rows used for the final fit.
    pub n_train: usize,
    pub n_test: usize,
    pub n_classes: usize,
    /// `None` for a class absent from the test set.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][pred]`.
    pub confusion: Vec<Vec<u32>>,
    /// Classes with no sample in the final training rows: never predicted (probability 0).
    pub classes_absent_from_train: Vec<usize>,
    /// Final objective of the refit, `Σ CE + ½‖W‖²/C` (unscaled; scikit-learn's loss × n).
    pub objective: f64,
    /// Whether each test sample's top-1 prediction is right (kept out of results.json).
    #[serde(skip)]
    pub correct: Vec<bool>,
}
