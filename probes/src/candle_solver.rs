//! Objective and gradient on candle tensors (same code on CPU and CUDA), minimised by
//! [`crate::lbfgs`] on the host in f64.
//!
//! Layout: parameters `θ` are a row-major `(d+1) × kp` matrix, the last row being the intercept;
//! the data carry a trailing column of ones so one matmul gives `X·W + b`. With exactly two
//! classes the model is binomial, as in scikit-learn: `kp = 1` weight column for the second class,
//! the first class's logit fixed at 0 (see [`param_cols`]).
//!
//! Precision: the two matmuls per iteration (`X·D` for the search direction and `Xᵀ·R` for the
//! gradient) run in f32 on the device ([`DenseMatrix`]: candle, or the `gemm` crate on the CPU),
//! into buffers reused across iterations. Everything else is f64 on the host: the logits are kept as
//! `Z + α·(X·D)` so the line search sees an exactly smooth `φ(α)` (f32 rounding would otherwise
//! hide the tiny decreases needed to reach tol 1e-6), and the losses, softmax, regulariser and
//! L-BFGS algebra are f64 (the L-BFGS pairs are stored in f32, see [`crate::lbfgs_memory`]). The
//! logits are recomputed from `θ` every [`REFRESH`] iterations.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::lbfgs::{minimize_line, LbfgsOptions, LbfgsResult, LineObjective};
use crate::precond::{default_rank, Spectrum};
use crate::products::{narrow, DenseMatrix};
use crate::profile::{timed, Part};
use crate::row_softmax::row_terms;
use std::sync::OnceLock;

/// L-BFGS correction pairs kept (overridable with `GAPPROBE_LBFGS_HISTORY`).
pub const HISTORY: usize = 10;
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

/// Whether a solve on `device` keeps its whole state there ([`crate::resident`]): on every
/// device but the CPU, unless `GAPPROBE_PROBE_RESIDENT=1|0` says otherwise.
pub fn resident_default(device: &Device) -> bool {
    match std::env::var("GAPPROBE_PROBE_RESIDENT").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !device.is_cpu(),
    }
}

/// A training set uploaded once to a device, reusable across C values.
pub struct CandleProblem {
    data: DenseMatrix,
    device: Device,
    pub(crate) y: Vec<u32>,
    pub(crate) n: usize,
    pub(crate) d: usize,
    pub(crate) k: usize,
    pub(crate) kp: usize,
    spectrum: OnceLock<Option<Spectrum>>,
    rank: usize,
    resident: bool,
    tensors: OnceLock<(Tensor, Tensor)>,
}

impl CandleProblem {
    /// Upload `x` (`n × d`) and compact labels `y` in `0..k` to `device`.
    pub fn new(x: ArrayView2<f32>, y: &[u32], k: usize, device: &Device) -> Result<Self> {
        let (n, d) = x.dim();
        let data = DenseMatrix::augmented(x, device)?;
        // GAPPROBE_PRECOND_RANK overrides the preconditioner rank (0 disables it), for experiments.
        let rank = std::env::var("GAPPROBE_PRECOND_RANK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| default_rank(n, d));
        let resident = resident_default(device);
        Ok(Self {
            data,
            device: device.clone(),
            y: y.to_vec(),
            n,
            d,
            k,
            kp: param_cols(k),
            spectrum: OnceLock::new(),
            rank,
            resident,
            tensors: OnceLock::new(),
        })
    }

    /// Keep the solver's whole state on the device ([`crate::resident`]; the default on CUDA)
    /// or only the products (the host path; the default on the CPU).
    pub fn with_resident(mut self, resident: bool) -> Self {
        self.resident = resident;
        self
    }

    /// Use a preconditioner of rank `r` (0 disables it); the default is [`default_rank`].
    pub fn with_rank(mut self, r: usize) -> Self {
        self.rank = r;
        self.spectrum = OnceLock::new();
        self
    }

    fn spectrum(&self) -> Result<Option<&Spectrum>> {
        if self.spectrum.get().is_none() {
            let sp = if self.rank > 0 {
                timed(Part::Precondition, || {
                    Spectrum::compute(&self.data, self.rank, 0, &self.device)
                })?
            } else {
                None
            };
            let _ = self.spectrum.set(sp);
        }
        Ok(self.spectrum.get().and_then(|s| s.as_ref()))
    }

    /// Minimise the scaled objective `(Σ CE + ½‖W‖²/C) / n` from `init` (compact `θ`) or zeros.
    /// The returned `x` and `grad` are in the original parameters.
    pub fn solve(
        &self,
        c: f64,
        tol: f64,
        max_iter: usize,
        init: Option<Vec<f64>>,
    ) -> Result<LbfgsResult> {
        timed(Part::Total, || self.solve_untimed(c, tol, max_iter, init))
    }

    fn solve_untimed(
        &self,
        c: f64,
        tol: f64,
        max_iter: usize,
        init: Option<Vec<f64>>,
    ) -> Result<LbfgsResult> {
        let len = (self.d + 1) * self.kp;
        let theta0 = init.unwrap_or_else(|| vec![0.0; len]);
        anyhow::ensure!(theta0.len() == len, "warm start has the wrong size");
        let history = std::env::var("GAPPROBE_LBFGS_HISTORY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(HISTORY);
        let opt = LbfgsOptions {
            gtol: tol,
            max_iter,
            history,
            ..Default::default()
        };
        if self.resident {
            if self.tensors.get().is_none() {
                let _ = self.tensors.set(self.data.tensors(&self.device)?);
            }
            let (xa, xa_t) = self.tensors.get().context("device tensors")?;
            let spectrum = self.spectrum()?;
            return crate::resident::solve(self, (xa, xa_t), spectrum, c, Some(theta0), &opt)
                .context("candle L-BFGS (device-resident)");
        }
        let pre = match self.spectrum()? {
            Some(sp) => {
                let delta = sp.deltas(self.n, self.k, c);
                let fwd: Vec<f64> = delta.iter().map(|d| d - 1.0).collect();
                let inv: Vec<f64> = delta.iter().map(|d| 1.0 / d - 1.0).collect();
                Some((sp, fwd, inv))
            }
            None => None,
        };
        let u0 = match &pre {
            Some((sp, _, inv)) if theta0.iter().any(|&v| v != 0.0) => {
                sp.apply(&theta0, self.kp, inv)?
            }
            _ => theta0,
        };
        let mut line = Line::new(self, c, pre.as_ref().map(|(sp, f, _)| (*sp, &f[..])));
        let mut res = minimize_line(&mut line, u0, &opt).context("candle L-BFGS")?;
        res.x = line.theta;
        res.grad = line.g_w;
        Ok(res)
    }

    /// Scaled objective and gradient at `theta` (for tests and one-off evaluations).
    pub fn fg(&self, theta: &[f64], c: f64) -> Result<(f64, Vec<f64>)> {
        Line::new(self, c, None).eval(theta)
    }
}

/// Line-search state: base point, its logits, and the direction's logits. With a preconditioner
/// the optimiser works on `U` (`θ = P·U`); `theta`, `dir`, `g_w` are in the original parameters.
/// The `n × kp` and `(d+1) × kp` buffers are allocated once per solve.
struct Line<'a> {
    p: &'a CandleProblem,
    pre: Option<(&'a Spectrum, &'a [f64])>,
    c: f64,
    theta: Vec<f64>,
    /// Base logits `X_aug·θ`, accumulated in f64.
    z: Vec<f64>,
    /// Direction logits `X_aug·D` as the f32 product left them (also scratch for `z`).
    zp: Vec<f32>,
    /// Whether `zp` holds the current direction's logits.
    has_dir: bool,
    dir: Vec<f64>,
    /// `[θ·θ, θ·d, d·d]` over the weights (not the intercept).
    reg: [f64; 3],
    accepted: usize,
    /// Residuals `softmax − onehot` from the last line evaluation (the gradient product's input).
    resid: Vec<f32>,
    /// Parameters in f32 for a product, or the gradient product's output.
    par32: Vec<f32>,
    /// `(α, φ(α))` of the last line evaluation.
    last: Option<(f64, f64)>,
    g_w: Vec<f64>,
}

/// Block length of the parallel passes over `n × kp` buffers.
const BLOCK: usize = 1 << 14;

impl<'a> Line<'a> {
    fn new(p: &'a CandleProblem, c: f64, pre: Option<(&'a Spectrum, &'a [f64])>) -> Self {
        Self {
            p,
            pre,
            c,
            theta: Vec::new(),
            z: vec![0.0; p.n * p.kp],
            zp: vec![0.0; p.n * p.kp],
            has_dir: false,
            dir: Vec::new(),
            reg: [0.0; 3],
            accepted: 0,
            resid: vec![0.0; p.n * p.kp],
            par32: vec![0.0; (p.d + 1) * p.kp],
            last: None,
            g_w: Vec::new(),
        }
    }

    fn precondition(&self, m: &[f64]) -> Result<Vec<f64>> {
        match self.pre {
            Some((sp, f)) => timed(Part::Precondition, || sp.apply(m, self.p.kp, f)),
            None => Ok(m.to_vec()),
        }
    }

    /// `zp = X_aug · v` (f32 product of the f32-rounded `v`, staged in `par32`).
    fn project(p: &CandleProblem, v: &[f64], par32: &mut [f32], zp: &mut [f32]) -> Result<()> {
        narrow(v, par32);
        timed(Part::Products, || p.data.mul(par32, p.kp, zp))
    }

    /// Recompute the base logits `z = X_aug · θ` (through the `zp` buffer).
    fn refresh_logits(&mut self) -> Result<()> {
        Self::project(self.p, &self.theta, &mut self.par32, &mut self.zp)?;
        self.has_dir = false;
        self.z
            .par_chunks_mut(BLOCK)
            .zip(self.zp.par_chunks(BLOCK))
            .for_each(|(z, zp)| z.iter_mut().zip(zp).for_each(|(z, &v)| *z = f64::from(v)));
        Ok(())
    }

    /// Scaled `(φ(α), φ'(α))`; fills `self.resid` with the residuals at `α`.
    fn line_terms(&mut self, alpha: f64) -> (f64, f64) {
        timed(Part::Loss, || self.line_terms_untimed(alpha))
    }

    fn line_terms_untimed(&mut self, alpha: f64) -> (f64, f64) {
        let (kp, off, n) = (self.p.kp, self.p.k - self.p.kp, self.p.n);
        let (y, z) = (&self.p.y, &self.z);
        let zp: &[f32] = if self.has_dir { &self.zp } else { &[] };
        // Per-chunk partial sums in a fixed order: deterministic whatever the thread count.
        let parts: Vec<(f64, f64)> = self
            .resid
            .par_chunks_mut(CHUNK * kp)
            .enumerate()
            .map(|(ci, rch)| {
                let mut buf = vec![0.0; kp + off];
                let (mut l, mut dl) = (0.0, 0.0);
                for (li, i) in (ci * CHUNK..((ci + 1) * CHUNK).min(n)).enumerate() {
                    let zi = &z[i * kp..(i + 1) * kp];
                    let zpi = if zp.is_empty() {
                        zp
                    } else {
                        &zp[i * kp..(i + 1) * kp]
                    };
                    let ri = &mut rch[li * kp..(li + 1) * kp];
                    let (a, b) = row_terms(zi, zpi, alpha, y[i] as usize, off, ri, &mut buf);
                    l += a;
                    dl += b;
                }
                (l, dl)
            })
            .collect();
        let (ce, dce) = parts
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let [ww, wd, dd] = self.reg;
        let reg = 0.5 * (ww + 2.0 * alpha * wd + alpha * alpha * dd) / self.c;
        let dreg = (wd + alpha * dd) / self.c;
        let inv_n = 1.0 / n as f64;
        let out = ((ce + reg) * inv_n, (dce + dreg) * inv_n);
        self.last = Some((alpha, out.0));
        out
    }

    fn weights_dot(&self, a: &[f64], b: &[f64]) -> f64 {
        let nw = self.p.d * self.p.kp;
        crate::lbfgs::dot(&a[..nw], &b[..nw])
    }

    /// `[θ·θ, θ·d, d·d]` over the weights, in one pass.
    fn weights_dots(&self) -> [f64; 3] {
        let nw = self.p.d * self.p.kp;
        let parts: Vec<[f64; 3]> = self.theta[..nw]
            .par_chunks(BLOCK)
            .zip(self.dir[..nw].par_chunks(BLOCK))
            .map(|(t, d)| {
                t.iter().zip(d).fold([0.0; 3], |[a, b, c], (&t, &d)| {
                    [a + t * t, b + t * d, c + d * d]
                })
            })
            .collect();
        parts
            .iter()
            .fold([0.0; 3], |[a, b, c], p| [a + p[0], b + p[1], c + p[2]])
    }

    /// Gradient from `self.resid` (which must hold the base point's residuals); returns it in
    /// the optimiser's variables and keeps the original-parameter gradient in `g_w`.
    fn gradient(&mut self, f: f64) -> Result<(f64, Vec<f64>)> {
        timed(Part::Products, || {
            self.p.data.mul_t(&self.resid, self.p.kp, &mut self.par32)
        })?;
        let inv_n = 1.0 / self.p.n as f64;
        let inv_cn = inv_n / self.c;
        let nw = self.p.d * self.p.kp;
        let g: Vec<f64> = self
            .par32
            .par_iter()
            .zip(&self.theta)
            .enumerate()
            .map(|(i, (&gi, &ti))| {
                let gi = f64::from(gi) * inv_n;
                if i < nw {
                    gi + ti * inv_cn
                } else {
                    gi
                }
            })
            .collect();
        let gu = self.precondition(&g)?;
        self.g_w = g;
        Ok((f, gu))
    }

    fn at_base(&mut self) -> Result<(f64, Vec<f64>)> {
        self.has_dir = false;
        self.reg = [self.weights_dot(&self.theta, &self.theta), 0.0, 0.0];
        let (f, _) = self.line_terms(0.0);
        self.gradient(f)
    }
}

impl LineObjective for Line<'_> {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.theta = self.precondition(x)?;
        self.refresh_logits()?;
        self.at_base()
    }

    fn set_direction(&mut self, d: &[f64]) -> Result<()> {
        self.dir = self.precondition(d)?;
        Self::project(self.p, &self.dir, &mut self.par32, &mut self.zp)?;
        self.has_dir = true;
        self.reg = self.weights_dots();
        Ok(())
    }

    fn phi(&mut self, alpha: f64) -> Result<(f64, f64)> {
        Ok(self.line_terms(alpha))
    }

    fn accept(&mut self, alpha: f64) -> Result<(f64, Vec<f64>)> {
        self.theta
            .par_iter_mut()
            .zip(&self.dir)
            .for_each(|(t, d)| *t += alpha * d);
        self.accepted += 1;
        if self.accepted.is_multiple_of(REFRESH) {
            self.refresh_logits()?;
            return self.at_base();
        }
        self.z
            .par_chunks_mut(BLOCK)
            .zip(self.zp.par_chunks(BLOCK))
            .for_each(|(z, zp)| {
                z.iter_mut()
                    .zip(zp)
                    .for_each(|(z, &v)| *z += alpha * f64::from(v))
            });
        match self.last {
            // The last line evaluation was at this step: its residuals are the base point's.
            Some((a, f)) if a == alpha => {
                // ‖θ + αd‖² from the line's products (θ·θ is recomputed at the next direction).
                let [ww, wd, dd] = self.reg;
                self.reg = [ww + alpha * (2.0 * wd + alpha * dd), 0.0, 0.0];
                self.has_dir = false;
                self.gradient(f)
            }
            _ => self.at_base(),
        }
    }

    fn stop_metric(&self, _g: &[f64]) -> f64 {
        crate::lbfgs::max_abs(&self.g_w)
    }
}
