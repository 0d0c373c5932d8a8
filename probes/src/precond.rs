//! Low-rank preconditioner for the candle solver: a change of variables `W = P·U` that flattens
//! the top of the data spectrum, so L-BFGS needs fewer iterations. The objective and its optimum
//! are unchanged; only the path differs (and the stopping test stays on the gradient in `W`).
//!
//! `P = I + V·diag(δ − 1)·Vᵀ`, with `V` the top-`r` eigenvectors of `X_augᵀX_aug / n` (randomised
//! subspace iteration with matmuls on the device, Rayleigh–Ritz in f64 on the host) and
//! `δ_i = sqrt((σλ_r + μ) / (σλ_i + μ))`, where `μ = 1/(C·n)` is the scaled L2 strength and
//! `σ = (1/k)(1 − 1/k)` approximates the softmax curvature at the start.

use anyhow::Result;

use crate::products::{narrow, DenseMatrix};
use candle_core::Device;
use nalgebra::{Cholesky, DMatrix, SymmetricEigen};
use ndarray::{s, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Oversampling columns of the randomised range finder.
const OVERSAMPLE: usize = 10;
/// Subspace (power) iterations.
const POWER_ITERS: usize = 2;

/// Top eigenpairs of the (augmented) data covariance.
pub struct Spectrum {
    /// `(d+1) × r` eigenvectors (f32, on the device).
    v: DenseMatrix,
    /// Eigenvalues of `X_augᵀX_aug / n`, descending.
    pub lambda: Vec<f64>,
}

/// Default rank: `min(128, (d+1)/4, n/4)`, or none (0) when that is below 16.
pub fn default_rank(n: usize, d: usize) -> usize {
    let r = 128.min((d + 1) / 4).min(n / 4);
    if r < 16 {
        0
    } else {
        r
    }
}

fn to_f64(shape: (usize, usize), v: &[f32]) -> Result<Array2<f64>> {
    Ok(Array2::from_shape_vec(
        shape,
        v.iter().map(|&x| f64::from(x)).collect(),
    )?)
}

/// Row-major f32 copy of `a`.
fn to_f32(a: &Array2<f64>) -> Vec<f32> {
    a.iter().map(|&x| x as f32).collect()
}

fn to_na(a: &Array2<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

fn from_na(m: &DMatrix<f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// Lower Cholesky factor of an SPD matrix (nalgebra), with a growing diagonal jitter if needed.
fn cholesky(g: &Array2<f64>) -> DMatrix<f64> {
    let tr: f64 = g.diag().sum();
    let mut jitter = 0.0;
    loop {
        let mut m = to_na(g);
        for i in 0..m.nrows() {
            m[(i, i)] += jitter;
        }
        if let Some(c) = Cholesky::new(m) {
            return c.l();
        }
        jitter = if jitter == 0.0 {
            1e-12 * tr.max(1e-300)
        } else {
            jitter * 100.0
        };
    }
}

/// Orthonormalise the columns of `y` (Cholesky-QR, twice): `Q = Y·L⁻ᵀ` with `LLᵀ = YᵀY`.
fn orthonormalize(mut y: Array2<f64>) -> Array2<f64> {
    for _ in 0..2 {
        let l = cholesky(&y.t().dot(&y));
        let m = l.nrows();
        let linv = l
            .solve_lower_triangular(&DMatrix::identity(m, m))
            .expect("a Cholesky factor has a nonzero diagonal");
        y = y.dot(&from_na(&linv.transpose()));
    }
    y
}

/// Eigenpairs of a small symmetric matrix (nalgebra), eigenvalues descending, vectors as columns.
fn eigh_descending(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let e = SymmetricEigen::new(to_na(a));
    let mut order: Vec<usize> = (0..e.eigenvalues.len()).collect();
    order.sort_by(|&i, &j| e.eigenvalues[j].total_cmp(&e.eigenvalues[i]));
    let vals = order.iter().map(|&i| e.eigenvalues[i]).collect();
    let vecs = Array2::from_shape_fn((a.nrows(), order.len()), |(i, j)| {
        e.eigenvectors[(i, order[j])]
    });
    (vals, vecs)
}

impl Spectrum {
    /// Top-`r` eigenpairs of `X_augᵀX_aug / n`, seeded; `V` is kept on `dev` for [`Self::apply`].
    /// Returns `None` when the computed basis is not orthonormal to 1e-3 (degenerate data), in
    /// which case the solver runs unpreconditioned.
    pub fn compute(data: &DenseMatrix, r: usize, seed: u64, dev: &Device) -> Result<Option<Self>> {
        let (n, da) = (data.rows(), data.cols());
        let cols = (r + OVERSAMPLE).min(da).min(n);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1234);
        let omega = Array2::from_shape_fn((da, cols), |_| rng.gen::<f64>() - 0.5);
        let mut q = orthonormalize(omega);
        let mut xq = vec![0f32; n * cols];
        let mut xtxq = vec![0f32; da * cols];
        for _ in 0..POWER_ITERS + 1 {
            data.mul(&to_f32(&q), cols, &mut xq)?;
            data.mul_t(&xq, cols, &mut xtxq)?;
            q = to_f64((da, cols), &xtxq)?;
            q = orthonormalize(q);
        }
        data.mul(&to_f32(&q), cols, &mut xq)?;
        let t = to_f64((n, cols), &xq)?;
        let b = t.t().dot(&t) / n as f64;
        let (vals, vecs) = eigh_descending(&b);
        let r = r.min(cols);
        let v = q.dot(&vecs.slice(s![.., ..r]));
        let gram = v.t().dot(&v);
        let err = (&gram - &Array2::<f64>::eye(gram.nrows()))
            .iter()
            .fold(0f64, |m, x| m.max(x.abs()));
        // A NaN error disables it too.
        if err > 1e-3 || err.is_nan() {
            tracing::debug!(err, "preconditioner basis not orthonormal: disabled");
            return Ok(None);
        }
        let lambda = vals[..r].iter().map(|&l| l.max(0.0)).collect();
        Ok(Some(Self {
            v: DenseMatrix::from_row_major(to_f32(&v), da, r, dev)?,
            lambda,
        }))
    }

    /// The basis `V` (`(d+1) × r`, f32) as a tensor on `device`.
    pub(crate) fn basis(&self, device: &Device) -> Result<candle_core::Tensor> {
        Ok(self.v.tensors(device)?.0)
    }

    /// Scale factors `δ` for the preconditioner at inverse regularisation `c`.
    pub fn deltas(&self, n: usize, k: usize, c: f64) -> Vec<f64> {
        let kf = k.max(2) as f64;
        let sigma = (1.0 / kf) * (1.0 - 1.0 / kf);
        let mu = 1.0 / (c * n as f64);
        let lr = *self.lambda.last().unwrap_or(&0.0);
        self.lambda
            .iter()
            .map(|&l| ((sigma * lr + mu) / (sigma * l + mu)).sqrt())
            .collect()
    }

    /// `M + V·diag(f)·Vᵀ·M` for a host `(d+1) × kp` matrix (the correction computed in f32);
    /// `f` holds one factor per eigenvector (see [`Self::deltas`]).
    pub fn apply(&self, m: &[f64], kp: usize, f: &[f64]) -> Result<Vec<f64>> {
        let (da, r) = (self.v.rows(), self.v.cols());
        let mut m32 = vec![0f32; m.len()];
        narrow(m, &mut m32);
        let mut t = vec![0f32; r * kp];
        self.v.mul_t(&m32, kp, &mut t)?;
        for (row, &fi) in t.chunks_exact_mut(kp).zip(f) {
            row.iter_mut().for_each(|v| *v *= fi as f32);
        }
        let mut corr = vec![0f32; da * kp];
        self.v.mul(&t, kp, &mut corr)?;
        Ok(m.par_iter().zip(corr).map(|(a, b)| a + b as f64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenpairs_come_in_descending_order() {
        let a = ndarray::array![[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]];
        let (vals, vecs) = eigh_descending(&a);
        for (got, want) in vals.iter().zip([5.0, 3.0, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{vals:?}");
        }
        let recon = vecs
            .dot(&Array2::from_diag(&ndarray::Array1::from(vals)))
            .dot(&vecs.t());
        assert!((&recon - &a).iter().all(|x| x.abs() < 1e-12));
    }

    #[test]
    fn orthonormal_columns() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let y = Array2::from_shape_fn((50, 8), |_| rng.gen::<f64>());
        let q = orthonormalize(y);
        let g = q.t().dot(&q);
        assert!((&g - &Array2::<f64>::eye(8))
            .iter()
            .all(|x| x.abs() < 1e-10));
    }
}
