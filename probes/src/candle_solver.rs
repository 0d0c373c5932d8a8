//! Objective and gradient on candle tensors (same code on CPU and CUDA), minimised by
//! [`crate::lbfgs`] on the host in f64.
//!
//! Layout: parameters `θ` are a row-major `(d+1) × K` matrix, the last row being the intercept;
//! the data carry a trailing column of ones so one matmul gives `X·W + b`. Matmuls, the softmax
//! and per-row losses run in f32 on the device; the loss is summed, the regulariser added and
//! the L-BFGS algebra done in f64 on the host.
//!
//! With exactly two classes the model is binomial, as in scikit-learn: one weight column for the
//! second class, the first class's logit fixed at 0 (see [`param_cols`]).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use ndarray::ArrayView2;

use crate::lbfgs::{minimize, LbfgsOptions, LbfgsResult};

/// A training set uploaded once to a device, reusable across C values.
pub struct CandleProblem {
    zeros: Option<Tensor>,
    xa: Tensor,
    xa_t: Tensor,
    onehot: Tensor,
    yidx: Tensor,
    n: usize,
    d: usize,
    k: usize,
    kp: usize,
}

/// Number of parameter columns for `k` classes: 1 for the binomial case `k == 2`, else `k`.
pub fn param_cols(k: usize) -> usize {
    if k == 2 {
        1
    } else {
        k
    }
}

impl CandleProblem {
    /// Upload `x` (`n × d`) and compact labels `y` in `0..k` to `device`.
    pub fn new(x: ArrayView2<f32>, y: &[u32], k: usize, device: &Device) -> Result<Self> {
        let (n, d) = x.dim();
        let mut buf = Vec::with_capacity(n * (d + 1));
        for row in x.outer_iter() {
            buf.extend(row.iter().copied());
            buf.push(1.0f32);
        }
        let xa = Tensor::from_vec(buf, (n, d + 1), device)?;
        // A contiguous transpose makes the gradient matmul a plain GEMM on every backend.
        let xa_t = xa.t()?.contiguous()?;
        let mut oh = vec![0f32; n * k];
        for (i, &l) in y.iter().enumerate() {
            oh[i * k + l as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(oh, (n, k), device)?;
        let yidx = Tensor::from_vec(y.to_vec(), (n, 1), device)?;
        let kp = param_cols(k);
        let zeros = (kp != k)
            .then(|| Tensor::zeros((n, 1), DType::F32, device))
            .transpose()?;
        Ok(Self {
            zeros,
            xa,
            xa_t,
            onehot,
            yidx,
            n,
            d,
            k,
            kp,
        })
    }

    /// Scaled objective `(Σ CE + ½‖W‖²/C) / n` and its gradient at `theta`.
    pub fn fg(&self, theta: &[f64], c: f64) -> Result<(f64, Vec<f64>)> {
        let (n, d, kp) = (self.n, self.d, self.kp);
        let w32: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
        let w = Tensor::from_vec(w32, (d + 1, kp), self.xa.device())?;
        let mut z = self.xa.matmul(&w)?;
        if let Some(zeros) = &self.zeros {
            z = Tensor::cat(&[zeros, &z], 1)?;
        }
        let m = z.max_keepdim(1)?;
        let zs = z.broadcast_sub(&m)?;
        let e = zs.exp()?;
        let s = e.sum_keepdim(1)?;
        let p = e.broadcast_div(&s)?;
        let row_loss = (s.log()? - zs.gather(&self.yidx, 1)?)?;
        let mut r = (p - &self.onehot)?;
        if self.zeros.is_some() {
            r = r.narrow(1, 1, 1)?.contiguous()?;
        }
        let grad = self.xa_t.matmul(&r)?;
        let losses: Vec<f32> = row_loss.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let g32: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let inv_n = 1.0 / n as f64;
        let ce: f64 = losses.iter().map(|&v| v as f64).sum();
        let nw = d * kp;
        let reg: f64 = theta[..nw].iter().map(|v| v * v).sum::<f64>();
        let f = (ce + 0.5 * reg / c) * inv_n;
        let mut g: Vec<f64> = g32.iter().map(|&v| v as f64 * inv_n).collect();
        for (gi, ti) in g[..nw].iter_mut().zip(&theta[..nw]) {
            *gi += ti / c * inv_n;
        }
        Ok((f, g))
    }

    /// Minimise for inverse regularisation `c`, from `init` (compact `θ`) or zeros.
    pub fn solve(
        &self,
        c: f64,
        tol: f64,
        max_iter: usize,
        init: Option<Vec<f64>>,
    ) -> Result<LbfgsResult> {
        let len = (self.d + 1) * self.kp;
        let x0 = init.unwrap_or_else(|| vec![0.0; len]);
        anyhow::ensure!(x0.len() == len, "warm start has the wrong size");
        let _ = self.k;
        let opt = LbfgsOptions {
            gtol: tol,
            max_iter,
            ..Default::default()
        };
        minimize(|t| self.fg(t, c), x0, &opt).context("candle L-BFGS")
    }
}
