//! Limited-memory BFGS with the Moré–Thuente line search (a port of MINPACK-2 `dcsrch`/`dcstep`,
//! the line search used by scipy's L-BFGS-B), on host `f64` vectors. The direction comes from the
//! compact form of the inverse-Hessian approximation ([`crate::lbfgs_memory`]).
//!
//! The objective is a [`LineObjective`] (or a closure returning `(f, grad)`); it may evaluate on
//! any device.
//! Stopping rules mirror scipy's L-BFGS-B as called by scikit-learn:
//! `max |grad| <= gtol`, relative reduction `(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`,
//! or `max_iter` iterations.

use crate::lbfgs_memory::Memory;
use crate::linesearch::dcsrch;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Options for [`minimize`].
#[derive(Debug, Clone)]
pub struct LbfgsOptions {
    /// Stop when the largest absolute gradient component is at most this.
    pub gtol: f64,
    /// Stop when the relative objective reduction is at most this (scipy uses 64·eps in sklearn).
    pub ftol: f64,
    /// Maximum number of iterations.
    pub max_iter: usize,
    /// Number of correction pairs kept.
    pub history: usize,
    /// Maximum objective evaluations per line search.
    pub max_ls: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        Self {
            gtol: 1e-5,
            ftol: 64.0 * f64::EPSILON,
            max_iter: 1000,
            history: 10,
            max_ls: 50,
        }
    }
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Termination {
    /// Gradient tolerance reached.
    Gradient,
    /// Relative objective reduction below `ftol`.
    Objective,
    /// Iteration limit reached (not converged).
    MaxIter,
    /// The line search could not make progress even along steepest descent.
    LineSearch,
}

/// Result of [`minimize`].
#[derive(Debug, Clone)]
pub struct LbfgsResult {
    pub x: Vec<f64>,
    pub f: f64,
    pub grad: Vec<f64>,
    pub n_iter: usize,
    pub n_eval: usize,
    pub termination: Termination,
}

/// `aᵀb` accumulated in f64 with eight accumulators (so it vectorises), for f32 or f64 operands.
#[inline]
pub(crate) fn dot_serial<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x.into() * y.into())
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i].into() * y[i].into();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Block size for parallel vector operations (fixed, so results do not depend on thread count).
const PAR_BLOCK: usize = 1 << 15;

/// Dot product: eight accumulators per block, blocks in parallel, partial sums added in order
/// (vectorised, and deterministic whatever the thread count).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    if a.len() <= PAR_BLOCK {
        return dot_serial(a, b);
    }
    let parts: Vec<f64> = a
        .par_chunks(PAR_BLOCK)
        .zip(b.par_chunks(PAR_BLOCK))
        .map(|(x, y)| dot_serial(x, y))
        .collect();
    parts.iter().sum()
}

/// Largest absolute component (parallel over blocks for long vectors).
pub fn max_abs(a: &[f64]) -> f64 {
    a.par_chunks(PAR_BLOCK)
        .map(|c| c.iter().fold(0.0f64, |m, v| m.max(v.abs())))
        .reduce(|| 0.0, f64::max)
}

/// The accepted step in one pass: `s = stp·d`, `x += s`, `y = g_new − g`, and `(sᵀy, yᵀy)`
/// (block partial sums added in order, so deterministic whatever the thread count).
fn step_pair(
    stp: f64,
    d: &[f64],
    x: &mut [f64],
    g_new: &[f64],
    g: &[f64],
) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let n = d.len();
    let (mut s, mut y) = (vec![0.0; n], vec![0.0; n]);
    let parts: Vec<(f64, f64)> = s
        .par_chunks_mut(PAR_BLOCK)
        .zip(y.par_chunks_mut(PAR_BLOCK))
        .zip(x.par_chunks_mut(PAR_BLOCK))
        .enumerate()
        .map(|(b, ((sc, yc), xc))| {
            let off = b * PAR_BLOCK;
            let (mut sy, mut yy) = (0.0, 0.0);
            for i in 0..sc.len() {
                let si = stp * d[off + i];
                let yi = g_new[off + i] - g[off + i];
                sc[i] = si;
                yc[i] = yi;
                xc[i] += si;
                sy += si * yi;
                yy += yi * yi;
            }
            (sy, yy)
        })
        .collect();
    let (sy, yy) = parts
        .iter()
        .fold((0.0, 0.0), |(a, b), (p, q)| (a + p, b + q));
    (s, y, sy, yy)
}

/// An objective whose restriction to a line can be evaluated cheaply and consistently once the
/// direction is known (for a linear model: from the logits `X·w` and `X·d`).
pub trait LineObjective {
    /// Objective and gradient at `x`; makes `x` the base point.
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)>;
    /// Fix the search direction `d` from the base point.
    fn set_direction(&mut self, d: &[f64]) -> Result<()>;
    /// `φ(α) = f(x + α·d)` and `φ'(α)`.
    fn phi(&mut self, alpha: f64) -> Result<(f64, f64)>;
    /// Move the base point to `x + α·d`; objective and gradient there.
    fn accept(&mut self, alpha: f64) -> Result<(f64, Vec<f64>)>;
    /// The largest absolute gradient component used for the stopping test (default: of `g`).
    fn stop_metric(&self, g: &[f64]) -> f64 {
        max_abs(g)
    }
}

/// Adapter turning a closure `x -> (f, grad)` into a [`LineObjective`].
pub struct Plain<F> {
    fg: F,
    x: Vec<f64>,
    d: Vec<f64>,
    last: Option<(f64, f64, Vec<f64>)>,
}

impl<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>> Plain<F> {
    pub fn new(fg: F) -> Self {
        Self {
            fg,
            x: Vec::new(),
            d: Vec::new(),
            last: None,
        }
    }
    fn at(&self, alpha: f64) -> Vec<f64> {
        self.x
            .iter()
            .zip(&self.d)
            .map(|(x, d)| x + alpha * d)
            .collect()
    }
}

impl<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>> LineObjective for Plain<F> {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)> {
        self.x = x.to_vec();
        (self.fg)(x)
    }
    fn set_direction(&mut self, d: &[f64]) -> Result<()> {
        self.d = d.to_vec();
        Ok(())
    }
    fn phi(&mut self, alpha: f64) -> Result<(f64, f64)> {
        let xt = self.at(alpha);
        let (f, g) = (self.fg)(&xt)?;
        let dg = dot(&g, &self.d);
        self.last = Some((alpha, f, g));
        Ok((f, dg))
    }
    fn accept(&mut self, alpha: f64) -> Result<(f64, Vec<f64>)> {
        let xt = self.at(alpha);
        let out = match self.last.take() {
            Some((a, f, g)) if a == alpha => (f, g),
            _ => (self.fg)(&xt)?,
        };
        self.x = xt;
        Ok(out)
    }
}

/// Minimise the closure `fg` (objective and gradient) from `x0`.
pub fn minimize<F>(fg: F, x0: Vec<f64>, opt: &LbfgsOptions) -> Result<LbfgsResult>
where
    F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
{
    minimize_line(&mut Plain::new(fg), x0, opt)
}

/// Minimise a [`LineObjective`] from `x0`.
pub fn minimize_line<P: LineObjective>(
    prob: &mut P,
    x0: Vec<f64>,
    opt: &LbfgsOptions,
) -> Result<LbfgsResult> {
    let n = x0.len();
    let mut x = x0;
    let (mut f, mut g) = prob.eval(&x)?;
    let mut n_eval = 1;
    if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
        bail!("objective or gradient is not finite at the starting point");
    }
    let mut memory = Memory::new(opt.history);
    let mut termination = Termination::MaxIter;
    let mut n_iter = 0;
    let mut d = vec![0.0; n];
    if prob.stop_metric(&g) <= opt.gtol {
        return Ok(LbfgsResult {
            x,
            f,
            grad: g,
            n_iter,
            n_eval,
            termination: Termination::Gradient,
        });
    }
    while n_iter < opt.max_iter {
        memory.direction(&g, &mut d);
        let mut gd = dot(&g, &d);
        // NaN counts as not descending too.
        if gd >= 0.0 || gd.is_nan() {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            memory.clear();
            d.iter_mut().zip(&g).for_each(|(di, gi)| *di = -gi);
            gd = dot(&g, &d);
        }
        let stp0 = if memory.is_empty() {
            (1.0 / dot(&d, &d).sqrt()).min(1e10)
        } else {
            1.0
        };
        prob.set_direction(&d)?;
        let mut evals = 0;
        let ls = {
            let mut phi = |a: f64| {
                evals += 1;
                prob.phi(a)
            };
            dcsrch(&mut phi, f, gd, stp0, 1e-3, 0.9, 0.1, 0.0, 1e10, opt.max_ls)?
        };
        n_eval += evals;
        match ls {
            Some((stp, f_new)) if f_new.is_finite() && f_new <= f => {
                n_iter += 1;
                let (f_acc, g_new) = prob.accept(stp)?;
                let (s, y, sy, yy) = step_pair(stp, &d, &mut x, &g_new, &g);
                if sy > f64::EPSILON * yy && sy > 0.0 {
                    memory.push(&s, &y);
                }
                let f_old = f;
                g = g_new;
                f = f_acc;
                if prob.stop_metric(&g) <= opt.gtol {
                    termination = Termination::Gradient;
                    break;
                }
                if (f_old - f_new) / f_old.abs().max(f_new.abs()).max(1.0) <= opt.ftol {
                    termination = Termination::Objective;
                    break;
                }
            }
            _ => {
                // Line search failed: retry once from steepest descent, as L-BFGS-B does.
                if memory.is_empty() {
                    termination = Termination::LineSearch;
                    break;
                }
                memory.clear();
            }
        }
    }
    Ok(LbfgsResult {
        x,
        f,
        grad: g,
        n_iter,
        n_eval,
        termination,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock_converges() {
        let fg = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let (a, b) = (x[0], x[1]);
            let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            Ok((f, g))
        };
        let opt = LbfgsOptions {
            gtol: 1e-8,
            ftol: 0.0,
            ..Default::default()
        };
        let r = minimize(fg, vec![-1.2, 1.0], &opt).unwrap();
        assert_eq!(r.termination, Termination::Gradient);
        assert!(
            (r.x[0] - 1.0).abs() < 1e-6 && (r.x[1] - 1.0).abs() < 1e-6,
            "{:?}",
            r.x
        );
        assert!(r.n_iter < 100, "took {} iterations", r.n_iter);
    }

    #[test]
    fn ill_conditioned_quadratic() {
        let scales: Vec<f64> = (0..50).map(|i| 10f64.powf(i as f64 / 49.0 * 4.0)).collect();
        let sc = scales.clone();
        let fg = move |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let f = x
                .iter()
                .zip(&sc)
                .map(|(v, s)| 0.5 * s * (v - 1.0).powi(2))
                .sum();
            let g = x.iter().zip(&sc).map(|(v, s)| s * (v - 1.0)).collect();
            Ok((f, g))
        };
        let opt = LbfgsOptions {
            gtol: 1e-6,
            ftol: 0.0,
            max_iter: 5000,
            ..Default::default()
        };
        let r = minimize(fg, vec![0.0; 50], &opt).unwrap();
        eprintln!(
            "iters {} evals {} f {:e} gmax {:e}",
            r.n_iter,
            r.n_eval,
            r.f,
            max_abs(&r.grad)
        );
        assert_eq!(r.termination, Termination::Gradient);
        // scipy's L-BFGS-B needs 781 iterations here.
        assert!(r.n_iter < 1500, "{} iterations", r.n_iter);
        for (v, s) in r.x.iter().zip(&scales) {
            assert!((v - 1.0).abs() * s <= 1e-6 + 1e-12);
        }
    }
}
