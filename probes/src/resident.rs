//! The candle solver with everything on the device: parameters, gradient, logits, the L-BFGS
//! pairs and the line's loss passes stay candle tensors, and only scalars cross to the host (the
//! line search's `φ(α)` and `φ'(α)`, a few inner products per iteration, the compact form's
//! `2m` coefficients). The default on CUDA, where the host path's per-iteration transfers and
//! host passes over `n × K` and `(d+1) × K` buffers cost more than the GPU's products
//! (`GAPPROBE_PROBE_RESIDENT=1|0` overrides the choice, for benchmarks and tests).
//!
//! The numerics are the host path's ([`crate::candle_solver`]): the two products per iteration
//! in f32, logits kept in f64 as `Z + α·(X·D)` and recomputed every [`REFRESH`] steps, losses,
//! softmax, vectors and pairs in f64, the same Moré–Thuente line search ([`dcsrch`]) and the same
//! compact-form direction ([`DeviceMemory`]), and the same low-rank preconditioner ([`Spectrum`]),
//! applied on the device: the basis is built once per problem through the device's products,
//! and `GAPPROBE_PRECOND_RANK=0` turns it off.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use crate::candle_solver::{CandleProblem, REFRESH};
use crate::device_memory::DeviceMemory;
use crate::lbfgs::{LbfgsOptions, LbfgsResult, Termination};
use crate::linesearch::dcsrch;
use crate::precond::Spectrum;
use crate::profile::{timed, Part};

/// The problem's tensors for one solve: data in both orientations (f32), one-hot labels over all
/// `k` classes and the weight-row mask (f64).
struct Data<'a> {
    p: &'a CandleProblem,
    xa: &'a Tensor,
    xa_t: &'a Tensor,
    onehot: Tensor,
    wmask: Tensor,
    c: f64,
}

/// Cross-entropy sum, its derivative along the direction, and the residuals `softmax − onehot`
/// (param columns) at logits `z + α·zd`.
struct Terms {
    ce: f64,
    dce: f64,
    resid: Tensor,
}

/// Downloads 0-d f64 tensors in one transfer.
fn fetch(ts: &[Tensor]) -> Result<Vec<f64>> {
    Ok(Tensor::stack(ts, 0)?.to_vec1::<f64>()?)
}

/// Sum of a matrix's entries, by rows first: candle's CUDA reductions give each output one
/// block, so a one-stage sum over a million entries would run on a single SM.
fn total(t: &Tensor) -> Result<Tensor> {
    Ok(t.sum(1)?.sum_all()?)
}

fn dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    total(&(a * b)?)
}

/// Largest absolute entry of a matrix (by rows first, as [`total`]).
fn max_abs(t: &Tensor) -> Result<Tensor> {
    Ok(t.abs()?.max(1)?.max_all()?)
}

impl Data<'_> {
    fn device(&self) -> &Device {
        self.xa.device()
    }

    /// `X_aug·v` (f32 product of the f32-rounded `v`), widened to f64.
    fn logits(&self, v: &Tensor) -> Result<Tensor> {
        Ok(self
            .xa
            .matmul(&v.to_dtype(DType::F32)?)?
            .to_dtype(DType::F64)?)
    }

    fn terms(&self, z: &Tensor, zd: Option<(&Tensor, f64)>) -> Result<Terms> {
        let (n, kp, k) = (self.p.n, self.p.kp, self.p.k);
        let l = match zd {
            Some((zd, alpha)) => (z + zd.affine(alpha, 0.0)?)?,
            None => z.clone(),
        };
        // Binomial: class 0's logit is fixed at 0.
        let lf = if kp < k {
            Tensor::cat(&[Tensor::zeros((n, 1), DType::F64, self.device())?, l], 1)?
        } else {
            l
        };
        let m = lf.max_keepdim(1)?;
        let e = lf.broadcast_sub(&m)?.exp()?;
        let s = e.sum_keepdim(1)?;
        let lse = (m + s.log()?)?.sum_all()?;
        let picked = dot(&lf, &self.onehot)?;
        let resid = (e.broadcast_div(&s)? - &self.onehot)?.narrow(1, k - kp, kp)?;
        let ce = (lse - picked)?;
        // Without a direction there is no derivative to fetch.
        let (ce, dce) = match zd {
            Some((zd, _)) => {
                let v = fetch(&[ce, dot(&resid, zd)?])?;
                (v[0], v[1])
            }
            None => (fetch(&[ce])?[0], 0.0),
        };
        Ok(Terms { ce, dce, resid })
    }

    /// Scaled gradient `(Xᵀ·R + W/C) / n` (intercept unpenalised).
    fn gradient(&self, resid: &Tensor, theta: &Tensor) -> Result<Tensor> {
        let inv_n = 1.0 / self.p.n as f64;
        let data = self
            .xa_t
            .matmul(&resid.to_dtype(DType::F32)?)?
            .to_dtype(DType::F64)?
            .affine(inv_n, 0.0)?;
        let reg = theta
            .broadcast_mul(&self.wmask)?
            .affine(inv_n / self.c, 0.0)?;
        Ok((data + reg)?)
    }

    /// `‖W‖²` over the weight rows.
    fn weights_sq(&self, theta: &Tensor) -> Result<Tensor> {
        dot(&theta.broadcast_mul(&self.wmask)?, theta)
    }

    /// Scaled objective from the cross-entropy sum and `‖W‖²`.
    fn scaled(&self, ce: f64, ww: f64) -> f64 {
        (ce + 0.5 * ww / self.c) / self.p.n as f64
    }
}

/// The preconditioner `P = I + V·diag(f)·Vᵀ` ([`crate::precond`]) on the device, in f64: the
/// optimiser's variables are `U` with `θ = P·U`, so its gradient is `P·∇θ` and its direction
/// maps to `P·d` in the parameters.
struct DevicePrecond {
    v: Tensor,
    vt: Tensor,
    f: Tensor,
}

impl DevicePrecond {
    fn new(sp: &Spectrum, f: Vec<f64>, device: &Device) -> Result<Self> {
        let v = sp.basis(device)?.to_dtype(DType::F64)?;
        let r = f.len();
        Ok(Self {
            vt: v.t()?.contiguous()?,
            v,
            f: Tensor::from_vec(f, (r, 1), device)?,
        })
    }

    fn apply(&self, m: &Tensor) -> Result<Tensor> {
        let t = self.vt.matmul(m)?.broadcast_mul(&self.f)?;
        Ok((m + self.v.matmul(&t)?)?)
    }
}

/// `P·m`, or `m` without a preconditioner.
fn precondition(pre: Option<&DevicePrecond>, m: &Tensor) -> Result<Tensor> {
    match pre {
        Some(pre) => pre.apply(m),
        None => Ok(m.clone()),
    }
}

/// Minimise the scaled objective of `p` at `c` from `init` (or zeros) with `xa`/`xa_t` the
/// augmented data on the device, preconditioned by `spectrum` when given (scale factors from
/// [`Spectrum::deltas`]); `x` and `grad` of the result are downloaded at the end.
pub(crate) fn solve(
    p: &CandleProblem,
    (xa, xa_t): (&Tensor, &Tensor),
    spectrum: Option<&Spectrum>,
    c: f64,
    init: Option<Vec<f64>>,
    opt: &LbfgsOptions,
) -> Result<LbfgsResult> {
    let device = xa.device();
    let (n, d, k, kp) = (p.n, p.d, p.k, p.kp);
    let mut onehot = vec![0f64; n * k];
    for (i, &yi) in p.y.iter().enumerate() {
        onehot[i * k + yi as usize] = 1.0;
    }
    let mut wmask = vec![1f64; d + 1];
    wmask[d] = 0.0;
    let data = Data {
        p,
        xa,
        xa_t,
        onehot: Tensor::from_vec(onehot, (n, k), device)?,
        wmask: Tensor::from_vec(wmask, (d + 1, 1), device)?,
        c,
    };
    let pre = match spectrum {
        Some(sp) => {
            let f = sp.deltas(n, k, c).iter().map(|d| d - 1.0).collect();
            Some(DevicePrecond::new(sp, f, device)?)
        }
        None => None,
    };
    let pre = pre.as_ref();
    let theta0 = init.unwrap_or_else(|| vec![0.0; (d + 1) * kp]);
    let mut theta = Tensor::from_vec(theta0, (d + 1, kp), device)?;

    // The base point: its logits, objective and gradient.
    let base = |theta: &Tensor| -> Result<(Tensor, f64, Tensor)> {
        let z = data.logits(theta)?;
        let t = timed(Part::Loss, || data.terms(&z, None))?;
        let ww = fetch(&[data.weights_sq(theta)?])?[0];
        let g = data.gradient(&t.resid, theta)?;
        Ok((z, data.scaled(t.ce, ww), g))
    };
    let (mut z, mut f, mut g) = base(&theta)?;
    // The optimiser's gradient (in U).
    let mut gu = precondition(pre, &g)?;
    let mut n_eval = 1;
    let gmax = fetch(&[max_abs(&g)?])?[0];
    if !f.is_finite() || !gmax.is_finite() {
        bail!("objective or gradient is not finite at the starting point");
    }
    let mut memory = DeviceMemory::new(opt.history, (d + 1) * kp, device)?;
    let (mut n_iter, mut accepted) = (0, 0);
    let mut termination = if gmax <= opt.gtol {
        Termination::Gradient
    } else {
        Termination::MaxIter
    };
    while termination == Termination::MaxIter && n_iter < opt.max_iter {
        // The direction in U, and in the parameters.
        let mut dir_u = memory.direction(&gu)?;
        let mut dir = precondition(pre, &dir_u)?;
        let wd = |dir_u: &Tensor, dir: &Tensor| -> Result<Vec<f64>> {
            let tw = theta.broadcast_mul(&data.wmask)?;
            fetch(&[
                dot(&gu, dir_u)?,
                dot(dir_u, dir_u)?,
                dot(&tw, &theta)?,
                dot(&tw, dir)?,
                data.weights_sq(dir)?,
            ])
        };
        let mut dots = wd(&dir_u, &dir)?;
        // NaN counts as not descending too.
        if dots[0] >= 0.0 || dots[0].is_nan() {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            memory.clear();
            dir_u = gu.neg()?;
            dir = precondition(pre, &dir_u)?;
            dots = wd(&dir_u, &dir)?;
        }
        let [gd, dd_all, ww, wdir, dd] = dots[..] else {
            unreachable!()
        };
        let stp0 = if memory.is_empty() {
            (1.0 / dd_all.sqrt()).min(1e10)
        } else {
            1.0
        };
        let zd = data.logits(&dir)?;
        let mut last: Option<(f64, f64, Tensor)> = None;
        let mut phi = |alpha: f64| -> Result<(f64, f64)> {
            let t = timed(Part::Loss, || data.terms(&z, Some((&zd, alpha))))?;
            let reg = 0.5 * (ww + 2.0 * alpha * wdir + alpha * alpha * dd) / c;
            let dreg = (wdir + alpha * dd) / c;
            let out = ((t.ce + reg) / n as f64, (t.dce + dreg) / n as f64);
            last = Some((alpha, out.0, t.resid));
            Ok(out)
        };
        let mut evals = 0;
        let ls = dcsrch(
            &mut |a| {
                evals += 1;
                phi(a)
            },
            f,
            gd,
            stp0,
            1e-3,
            0.9,
            0.1,
            0.0,
            1e10,
            opt.max_ls,
        )?;
        n_eval += evals;
        match ls {
            Some((stp, f_new)) if f_new.is_finite() && f_new <= f => {
                n_iter += 1;
                accepted += 1;
                let step = dir.affine(stp, 0.0)?;
                theta = (&theta + &step)?;
                let (f_acc, g_new) = match last {
                    Some((a, fa, resid)) if a == stp && accepted % REFRESH != 0 => {
                        z = (&z + zd.affine(stp, 0.0)?)?;
                        (fa, data.gradient(&resid, &theta)?)
                    }
                    _ => {
                        let (z_new, fa, g_new) = base(&theta)?;
                        z = z_new;
                        (fa, g_new)
                    }
                };
                let gu_new = precondition(pre, &g_new)?;
                let step_u = dir_u.affine(stp, 0.0)?;
                let y = (&gu_new - &gu)?;
                let v = fetch(&[dot(&step_u, &y)?, dot(&y, &y)?, max_abs(&g_new)?])?;
                let (sy, yy, gmax) = (v[0], v[1], v[2]);
                if sy > f64::EPSILON * yy && sy > 0.0 {
                    memory.push(&step_u, &y)?;
                }
                let f_old = f;
                g = g_new;
                gu = gu_new;
                f = f_acc;
                if gmax <= opt.gtol {
                    termination = Termination::Gradient;
                } else if (f_old - f_new) / f_old.abs().max(f_new.abs()).max(1.0) <= opt.ftol {
                    termination = Termination::Objective;
                }
            }
            _ => {
                // Line search failed: retry once from steepest descent, as L-BFGS-B does.
                if memory.is_empty() {
                    termination = Termination::LineSearch;
                }
                memory.clear();
            }
        }
    }
    Ok(LbfgsResult {
        x: theta.flatten_all()?.to_vec1()?,
        f,
        grad: g.flatten_all()?.to_vec1()?,
        n_iter,
        n_eval,
        termination,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// With the same preconditioner the device-resident solve follows the host path: the same
    /// optimum and (up to rounding in the pairs' storage) the same number of iterations.
    #[test]
    fn follows_the_host_path() {
        let (n, d, k) = (400usize, 48usize, 6usize);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
        let x = ndarray::Array2::from_shape_fn((n, d), |(i, j)| {
            let signal = if j % k == y[i] as usize { 1.0 } else { 0.0 };
            signal + rng.gen_range(-1.0f32..1.0) * (1.0 + j as f32 / 8.0)
        });
        let solve = |resident: bool| {
            CandleProblem::new(x.view(), &y, k, &Device::Cpu)
                .unwrap()
                .with_rank(12)
                .with_resident(resident)
                .solve(1.0, 1e-6, 1000, None)
                .unwrap()
        };
        let (host, dev) = (solve(false), solve(true));
        eprintln!(
            "iterations: host {}, device-resident {}",
            host.n_iter, dev.n_iter
        );
        assert_eq!(dev.termination, Termination::Gradient);
        let rel = (dev.f - host.f).abs() / host.f;
        // Both stop at max|∇| ≤ 1e-6, a few iterations apart: objectives agree to about that.
        assert!(rel < 1e-6, "objective {} vs {} ({rel:e})", dev.f, host.f);
        assert!(
            dev.n_iter.abs_diff(host.n_iter) <= 2,
            "{} vs {} iterations",
            dev.n_iter,
            host.n_iter
        );
        let gap = dev
            .x
            .iter()
            .zip(&host.x)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap < 1e-3, "parameters differ by {gap}");
    }
}
