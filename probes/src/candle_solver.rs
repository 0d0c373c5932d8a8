//! Objective and gradient on candle tensors (same code on CPU and CUDA), minimised by
//! [`crate::lbfgs`] on the host in f64.
//!
//! Layout: parameters `θ` are a row-major `(d+1) × kp` matrix, the last row being the intercept;
//! the data carry a trailing column of ones so one matmul gives `X·W + b`. With exactly two
//! classes the model is binomial, as in scikit-learn: `kp = 1` weight column for the second class,
//! the first class's logit fixed at 0 (see [`param_cols`]).
//!
//! Precision: the two matmuls per iteration (`X·D` for the search direction and `Xᵀ·R` for the
//! gradient) run in f32 on the device. Everything else is f64 on the host: the logits are kept as
//! `Z + α·(X·D)` so the line search sees an exactly smooth `φ(α)` (f32 rounding would otherwise
//! hide the tiny decreases needed to reach tol 1e-6), and the losses, softmax, regulariser and
//! L-BFGS algebra are f64. The logits are recomputed from `θ` every [`REFRESH`] iterations.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::lbfgs::{minimize_line, LbfgsOptions, LbfgsResult, LineObjective};

/// Iterations between exact recomputations of the logits.
pub const REFRESH: usize = 20;
const CHUNK: usize = 256;

/// Number of parameter columns for `k` classes: 1 for the binomial case `k == 2`, else `k`.
pub fn param_cols(k: usize) -> usize {
    if k == 2 {
        1
    } else {
        k
    }
}

/// A training set uploaded once to a device, reusable across C values.
pub struct CandleProblem {
    xa: Tensor,
    xa_t: Tensor,
    y: Vec<u32>,
    n: usize,
    d: usize,
    k: usize,
    kp: usize,
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
        Ok(Self {
            xa,
            xa_t,
            y: y.to_vec(),
            n,
            d,
            k,
            kp: param_cols(k),
        })
    }

    /// `X_aug · M` for a host `(d+1) × kp` matrix, back on the host in f64.
    fn project(&self, m: &[f64]) -> Result<Vec<f64>> {
        let m32: Vec<f32> = m.iter().map(|&v| v as f32).collect();
        let t = Tensor::from_vec(m32, (self.d + 1, self.kp), self.xa.device())?;
        let z: Vec<f32> = self.xa.matmul(&t)?.flatten_all()?.to_vec1()?;
        Ok(z.into_iter().map(f64::from).collect())
    }

    /// `X_augᵀ · R` for a host `n × kp` residual matrix.
    fn back(&self, r: &[f64]) -> Result<Vec<f64>> {
        let r32: Vec<f32> = r.iter().map(|&v| v as f32).collect();
        let t = Tensor::from_vec(r32, (self.n, self.kp), self.xa.device())?;
        let g: Vec<f32> = self.xa_t.matmul(&t)?.flatten_all()?.to_vec1()?;
        Ok(g.into_iter().map(f64::from).collect())
    }

    /// Minimise the scaled objective `(Σ CE + ½‖W‖²/C) / n` from `init` (compact `θ`) or zeros.
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
        let opt = LbfgsOptions {
            gtol: tol,
            max_iter,
            ..Default::default()
        };
        let mut line = Line {
            p: self,
            c,
            theta: Vec::new(),
            z: Vec::new(),
            zp: Vec::new(),
            dir: Vec::new(),
            reg: [0.0; 3],
            accepted: 0,
        };
        minimize_line(&mut line, x0, &opt).context("candle L-BFGS")
    }

    /// Scaled objective and gradient at `theta` (for tests and one-off evaluations).
    pub fn fg(&self, theta: &[f64], c: f64) -> Result<(f64, Vec<f64>)> {
        let mut line = Line {
            p: self,
            c,
            theta: Vec::new(),
            z: Vec::new(),
            zp: Vec::new(),
            dir: Vec::new(),
            reg: [0.0; 3],
            accepted: 0,
        };
        line.eval(theta)
    }
}

/// Line-search state: base point, its logits, and the direction's logits.
struct Line<'a> {
    p: &'a CandleProblem,
    c: f64,
    theta: Vec<f64>,
    z: Vec<f64>,
    zp: Vec<f64>,
    dir: Vec<f64>,
    /// `[θ·θ, θ·d, d·d]` over the weights (not the intercept).
    reg: [f64; 3],
    accepted: usize,
}

/// Loss of one row at logits `z + α·zp` (param columns; class 0 at logit 0 in the binomial case),
/// its derivative in α, and optionally the residual `softmax − onehot` in param columns.
fn row_terms(
    z: &[f64],
    zp: &[f64],
    alpha: f64,
    y: usize,
    off: usize,
    mut r: Option<&mut [f64]>,
) -> (f64, f64) {
    let kp = z.len();
    let full = |j: usize| {
        if j < off {
            0.0
        } else {
            z[j - off] + alpha * zp[j - off]
        }
    };
    let kf = kp + off;
    let m = (0..kf).map(full).fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = (0..kf).map(|j| (full(j) - m).exp()).sum();
    let loss = m + s.ln() - full(y);
    let mut dphi = 0.0;
    for j in 0..kp {
        let pj = (full(j + off) - m).exp() / s - if j + off == y { 1.0 } else { 0.0 };
        dphi += pj * zp[j];
        if let Some(r) = r.as_deref_mut() {
            r[j] = pj;
        }
    }
    (loss, dphi)
}

impl Line<'_> {
    /// Scaled `(φ(α), φ'(α))` and, when `resid` is given, the residuals at `α`.
    fn line_terms(&self, alpha: f64, resid: Option<&mut [f64]>) -> (f64, f64) {
        let (kp, off) = (self.p.kp, self.p.k - self.p.kp);
        let zero = vec![0.0; kp];
        let y = &self.p.y;
        let partial = |ci: usize, rch: Option<&mut [f64]>| -> (f64, f64) {
            let rows = (ci * CHUNK)..((ci + 1) * CHUNK).min(self.p.n);
            let mut rch = rch;
            let (mut l, mut dl) = (0.0, 0.0);
            for (li, i) in rows.enumerate() {
                let zi = &self.z[i * kp..(i + 1) * kp];
                let zpi = if self.zp.is_empty() {
                    &zero[..]
                } else {
                    &self.zp[i * kp..(i + 1) * kp]
                };
                let ri = rch.as_deref_mut().map(|r| &mut r[li * kp..(li + 1) * kp]);
                let (a, b) = row_terms(zi, zpi, alpha, y[i] as usize, off, ri);
                l += a;
                dl += b;
            }
            (l, dl)
        };
        let n_chunks = self.p.n.div_ceil(CHUNK);
        // Per-chunk partial sums in a fixed order: deterministic whatever the thread count.
        let parts: Vec<(f64, f64)> = match resid {
            Some(r) => r
                .par_chunks_mut(CHUNK * kp)
                .enumerate()
                .map(|(ci, rch)| partial(ci, Some(rch)))
                .collect(),
            None => (0..n_chunks)
                .into_par_iter()
                .map(|ci| partial(ci, None))
                .collect(),
        };
        let (ce, dce) = parts
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let [ww, wd, dd] = self.reg;
        let reg = 0.5 * (ww + 2.0 * alpha * wd + alpha * alpha * dd) / self.c;
        let dreg = (wd + alpha * dd) / self.c;
        let inv_n = 1.0 / self.p.n as f64;
        ((ce + reg) * inv_n, (dce + dreg) * inv_n)
    }

    fn weights_dot(&self, a: &[f64], b: &[f64]) -> f64 {
        let nw = self.p.d * self.p.kp;
        a[..nw].iter().zip(&b[..nw]).map(|(x, y)| x * y).sum()
    }

    /// Objective and gradient at the base point (`zp` must be empty or α = 0).
    fn at_base(&mut self) -> Result<(f64, Vec<f64>)> {
        self.zp.clear();
        self.reg = [self.weights_dot(&self.theta, &self.theta), 0.0, 0.0];
        let mut r = vec![0.0; self.p.n * self.p.kp];
        let (f, _) = self.line_terms(0.0, Some(&mut r));
        let mut g = self.p.back(&r)?;
        let inv_n = 1.0 / self.p.n as f64;
        let nw = self.p.d * self.p.kp;
        for (i, gi) in g.iter_mut().enumerate() {
            *gi *= inv_n;
            if i < nw {
                *gi += self.theta[i] / self.c * inv_n;
            }
        }
        Ok((f, g))
    }
}

impl LineObjective for Line<'_> {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.theta = x.to_vec();
        self.z = self.p.project(&self.theta)?;
        self.at_base()
    }

    fn set_direction(&mut self, d: &[f64]) -> Result<()> {
        self.zp = self.p.project(d)?;
        self.dir = d.to_vec();
        self.reg = [
            self.weights_dot(&self.theta, &self.theta),
            self.weights_dot(&self.theta, d),
            self.weights_dot(d, d),
        ];
        Ok(())
    }

    fn phi(&mut self, alpha: f64) -> Result<(f64, f64)> {
        Ok(self.line_terms(alpha, None))
    }

    fn accept(&mut self, alpha: f64) -> Result<(f64, Vec<f64>)> {
        self.theta
            .iter_mut()
            .zip(&self.dir)
            .for_each(|(t, d)| *t += alpha * d);
        self.accepted += 1;
        if self.accepted % REFRESH == 0 {
            self.z = self.p.project(&self.theta)?;
        } else {
            self.z
                .iter_mut()
                .zip(&self.zp)
                .for_each(|(z, zp)| *z += alpha * zp);
        }
        self.at_base()
    }
}
