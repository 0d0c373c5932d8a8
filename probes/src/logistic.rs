//! Multinomial L2 logistic regression with scikit-learn's objective.
//!
//! Objective (reported by [`FittedLogistic::objective`]):
//! `Σ_i CE(x_i, y_i) + ½‖W‖²/C`, intercept unpenalised. scikit-learn's lbfgs minimises the same
//! function divided by `n` (mean cross-entropy + `½‖W‖²/(C·n)`); the solvers here minimise that
//! scaled form too, so `tol` has scikit-learn's meaning: stop when the largest absolute component
//! of the gradient of the *scaled* objective is `<= tol`.
//!
//! Classes absent from the training labels are handled explicitly: the model is fitted on the
//! classes present (as scikit-learn does) and each absent class gets zero weights and an intercept
//! of `-inf`, so it has probability 0 and is never predicted.
//!
//! With exactly two classes present the model is binomial, like scikit-learn's: one weight
//! vector (for the second class, the first having weights and intercept 0) penalised by
//! `½‖w‖²/C`. This is not the same optimum as a two-class softmax with both columns penalised.

use anyhow::{bail, ensure, Result};
use candle_core::Device;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::lbfgs::{LbfgsResult, Termination};
use crate::Solver;

/// Estimator settings (linfa style: configure, then [`LogisticRegression::fit`]).
#[derive(Debug, Clone)]
pub struct LogisticRegression {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// Gradient tolerance on the scaled objective (scikit-learn's `tol`).
    pub tol: f64,
    /// Maximum L-BFGS iterations.
    pub max_iter: usize,
    /// Which solver to use.
    pub solver: Solver,
}

impl Default for LogisticRegression {
    fn default() -> Self {
        Self {
            c: 1.0,
            tol: 1e-6,
            max_iter: 1000,
            solver: Solver::Candle,
        }
    }
}

/// A fitted model: `weights` is `d × n_classes`, `intercept` has `n_classes` entries.
#[derive(Debug, Clone)]
pub struct FittedLogistic {
    weights: Array2<f32>,
    intercept: Array1<f32>,
    objective: f64,
    pub(crate) theta: Vec<f64>,
    pub(crate) present: Vec<usize>,
    /// L-BFGS iterations used.
    pub n_iter: usize,
    /// Objective/gradient evaluations used.
    pub n_eval: usize,
    /// Why the solver stopped (`MaxIter` means not converged).
    pub termination: Termination,
}

/// Training data mapped onto the classes present in `y` (internal).
pub(crate) struct Compact {
    pub y: Vec<u32>,
    pub present: Vec<usize>,
}

pub(crate) fn compact_labels(y: &[u32], n_classes: usize) -> Result<Compact> {
    let mut map = vec![u32::MAX; n_classes];
    for (i, &l) in y.iter().enumerate() {
        ensure!(
            (l as usize) < n_classes,
            "label {l} at row {i} is not below n_classes = {n_classes}"
        );
        map[l as usize] = 0;
    }
    let mut present = Vec::new();
    for (k, m) in map.iter_mut().enumerate() {
        if *m == 0 {
            *m = present.len() as u32;
            present.push(k);
        }
    }
    Ok(Compact {
        y: y.iter().map(|&l| map[l as usize]).collect(),
        present,
    })
}

/// First non-finite entry of `x`, as `(row, column)`.
pub fn find_non_finite(x: ArrayView2<f32>) -> Option<(usize, usize)> {
    for (i, row) in x.outer_iter().enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Some((i, j));
        }
    }
    None
}

/// The device the candle solver uses by default: CUDA device 0 when built with the `cuda`
/// feature and a GPU is present, otherwise the CPU. On CUDA the device's default memory pool
/// keeps freed memory across synchronisations (unless `GAPPROBE_POOL_RETAIN=0`): the resident
/// solver synchronises at every scalar it reads, and CUDA's default would hand its temporaries
/// back to the driver and map them again each time.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            if std::env::var("GAPPROBE_POOL_RETAIN").map_or(true, |v| v.trim() != "0") {
                if let Err(e) = keep_freed_memory(&d) {
                    tracing::debug!("CUDA memory pool left at its default: {e:#}");
                }
            }
            return d;
        }
    }
    Device::Cpu
}

/// Raises the release threshold of the device's default memory pool to the maximum.
#[cfg(feature = "cuda")]
fn keep_freed_memory(device: &Device) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let Device::Cuda(d) = device else {
        return Ok(());
    };
    let dev = d.cuda_stream().context().cu_device();
    let mut threshold = u64::MAX;
    // SAFETY: the default pool belongs to the driver and is never destroyed; the attribute's
    // value type is cuuint64_t.
    unsafe {
        let mut pool = std::mem::MaybeUninit::uninit();
        sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), dev).result()?;
        sys::cuMemPoolSetAttribute(
            pool.assume_init(),
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()?;
    }
    Ok(())
}

impl LogisticRegression {
    /// Create with inverse regularisation `c` and defaults otherwise.
    pub fn new(c: f64) -> Self {
        Self {
            c,
            ..Default::default()
        }
    }

    /// Fit on `x` (`n × d`) with labels in `0..n_classes`, on [`default_device`].
    pub fn fit(&self, x: ArrayView2<f32>, y: &[u32], n_classes: usize) -> Result<FittedLogistic> {
        self.fit_warm(&default_device(), x, y, n_classes, None)
    }

    /// Fit on an explicit candle device, optionally warm-started from a previous fit on the same
    /// classes and feature dimension (ignored otherwise).
    pub fn fit_warm(
        &self,
        device: &Device,
        x: ArrayView2<f32>,
        y: &[u32],
        n_classes: usize,
        init: Option<&FittedLogistic>,
    ) -> Result<FittedLogistic> {
        self.check(x, y)?;
        let comp = compact_labels(y, n_classes)?;
        let init = init
            .filter(|f| f.present == comp.present && f.weights.nrows() == x.ncols())
            .map(|f| f.theta.clone());
        match self.solver {
            Solver::Candle => {
                let prob = crate::candle_solver::CandleProblem::new(
                    x,
                    &comp.y,
                    comp.present.len(),
                    device,
                )?;
                let res = prob.solve(self.c, self.tol, self.max_iter, init)?;
                Ok(self.finish(x.ncols(), n_classes, comp.present, res, x.nrows()))
            }
            Solver::Linfa => {
                let res = crate::linfa_solver::solve(
                    x,
                    &comp.y,
                    comp.present.len(),
                    self.c,
                    self.tol,
                    self.max_iter,
                    init,
                )?;
                Ok(self.finish(x.ncols(), n_classes, comp.present, res, x.nrows()))
            }
        }
    }

    pub(crate) fn check(&self, x: ArrayView2<f32>, y: &[u32]) -> Result<()> {
        ensure!(
            self.c > 0.0 && self.c.is_finite(),
            "C must be positive and finite, got {}",
            self.c
        );
        ensure!(self.tol >= 0.0, "tol must be non-negative");
        ensure!(
            x.nrows() == y.len(),
            "x has {} rows but y has {} labels",
            x.nrows(),
            y.len()
        );
        ensure!(x.nrows() > 0, "no training samples");
        if let Some((i, j)) = find_non_finite(x) {
            bail!(
                "non-finite feature value {} at row {i}, column {j}",
                x[[i, j]]
            );
        }
        Ok(())
    }

    /// Expand a compact solution (present classes only) to all `n_classes`.
    pub(crate) fn finish(
        &self,
        d: usize,
        n_classes: usize,
        present: Vec<usize>,
        res: LbfgsResult,
        n: usize,
    ) -> FittedLogistic {
        let kp = crate::candle_solver::param_cols(present.len());
        let mut weights = Array2::<f32>::zeros((d, n_classes));
        let mut intercept = Array1::<f32>::from_elem(n_classes, f32::NEG_INFINITY);
        // Binomial case: the first present class is the reference with logit 0.
        let skip = present.len() - kp;
        for &k in &present[..skip] {
            intercept[k] = 0.0;
        }
        for (ci, &k) in present[skip..].iter().enumerate() {
            for j in 0..d {
                weights[[j, k]] = res.x[j * kp + ci] as f32;
            }
            intercept[k] = res.x[d * kp + ci] as f32;
        }
        FittedLogistic {
            weights,
            intercept,
            objective: res.f * n as f64,
            theta: res.x,
            present,
            n_iter: res.n_iter,
            n_eval: res.n_eval,
            termination: res.termination,
        }
    }
}

impl FittedLogistic {
    /// Weights, `d × n_classes` (zero columns for classes absent from training).
    pub fn weights(&self) -> ArrayView2<'_, f32> {
        self.weights.view()
    }

    /// Intercepts, one per class (`-inf` for classes absent from training).
    pub fn intercept(&self) -> ArrayView1<'_, f32> {
        self.intercept.view()
    }

    /// Final objective `Σ CE + ½‖W‖²/C` on the training data (unscaled: scikit-learn's
    /// `loss` times `n`).
    pub fn objective(&self) -> f64 {
        self.objective
    }

    /// Whether the solver met its tolerance (gradient or relative objective change).
    pub fn converged(&self) -> bool {
        matches!(
            self.termination,
            Termination::Gradient | Termination::Objective
        )
    }

    /// Class indices seen in training.
    pub fn classes_present(&self) -> &[usize] {
        &self.present
    }

    /// Raw scores `x·W + b` (`n × n_classes`).
    pub fn decision_function(&self, x: ArrayView2<f32>) -> Array2<f32> {
        x.dot(&self.weights) + &self.intercept
    }

    /// Class probabilities (`n × n_classes`), softmax computed in f64.
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut z = self.decision_function(x);
        for mut row in z.axis_iter_mut(Axis(0)) {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            row.mapv_inplace(|v| ((v as f64 - m).exp() / s) as f32);
        }
        z
    }

    /// Most probable class per row (ties go to the lowest index).
    pub fn predict(&self, x: ArrayView2<f32>) -> Vec<u32> {
        let z = self.decision_function(x);
        z.outer_iter()
            .map(|r| argmax(r.as_slice().unwrap_or(&r.to_vec())) as u32)
            .collect()
    }
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `Σ_i CE + ½‖W‖²/C` for given parameters, logits in f32 and reductions in f64; classes with a
/// `-inf` intercept contribute nothing. Used to check solvers against each other.
pub fn objective(
    x: ArrayView2<f32>,
    y: &[u32],
    weights: ArrayView2<f32>,
    intercept: ArrayView1<f32>,
    c: f64,
) -> f64 {
    let z = x.dot(&weights) + intercept;
    let mut ce = 0.0f64;
    for (row, &l) in z.outer_iter().zip(y) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        ce += m + s.ln() - row[l as usize] as f64;
    }
    let reg: f64 = weights.iter().map(|&w| (w as f64) * (w as f64)).sum();
    ce + 0.5 * reg / c
}
