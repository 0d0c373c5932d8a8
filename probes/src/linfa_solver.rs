//! Reference CPU solver: linfa-logistic (argmin L-BFGS with Moré–Thuente, f64).
//!
//! linfa minimises the unscaled `Σ CE + ½·alpha·‖W‖²` (intercept unpenalised) and stops when the
//! L2 norm of that gradient is below its tolerance; with `alpha = 1/C` and tolerance `tol·n` this
//! is at least as strict as scikit-learn's max-norm test on the scaled gradient. ndarray 0.16
//! (`ndarray016`) is used only at this boundary.

use anyhow::{Context, Result};
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_logistic::{LogisticRegression as BinomialLogistic, MultiLogisticRegression};
use ndarray::ArrayView2;
use ndarray016 as nd16;

use crate::candle_solver::param_cols;
use crate::lbfgs::{LbfgsResult, Termination};

/// Fit with linfa on compact labels `y` in `0..k`; returns the compact `θ` (`(d+1) × kp`, last row
/// intercept, `kp` = [`param_cols`]`(k)`) with the *scaled* objective, like the candle solver.
/// Two classes use linfa's binomial model (scikit-learn's binary objective).
pub fn solve(
    x: ArrayView2<f32>,
    y: &[u32],
    k: usize,
    c: f64,
    tol: f64,
    max_iter: usize,
    init: Option<Vec<f64>>,
) -> Result<LbfgsResult> {
    let (n, d) = x.dim();
    let kp = param_cols(k);
    let x64 = || nd16::Array2::from_shape_fn((n, d), |(i, j)| x[[i, j]] as f64);
    let y16 = nd16::Array1::from_iter(y.iter().map(|&v| v as usize));
    let theta = if k < 2 {
        // A single class: the softmax is constant, nothing to fit.
        vec![0.0; (d + 1) * k]
    } else if k == 2 {
        let ds = DatasetBase::new(x64(), y16);
        let mut params = BinomialLogistic::default()
            .alpha(1.0 / c)
            .gradient_tolerance(tol * n as f64)
            .max_iterations(max_iter as u64)
            .with_intercept(true);
        if let Some(t) = init {
            params = params.initial_params(nd16::Array1::from_vec(t));
        }
        let fitted = params.fit(&ds).context("linfa-logistic fit")?;
        // linfa labels the larger class value +1: compact class 1, the one with parameters.
        let mut theta: Vec<f64> = fitted.params().to_vec();
        theta.push(fitted.intercept());
        theta
    } else {
        let ds = DatasetBase::new(x64(), y16);
        let mut params = MultiLogisticRegression::default()
            .alpha(1.0 / c)
            .gradient_tolerance(tol * n as f64)
            .max_iterations(max_iter as u64)
            .with_intercept(true);
        if let Some(t) = init {
            params = params.initial_params(nd16::Array2::from_shape_vec((d + 1, k), t)?);
        }
        let fitted = params.fit(&ds).context("linfa-logistic fit")?;
        // linfa orders its columns by sorted class value; compact labels are 0..k, all present.
        let (w, b) = (fitted.params(), fitted.intercept());
        let mut theta = vec![0.0; (d + 1) * k];
        for (ci, &cls) in fitted.classes().iter().enumerate() {
            for j in 0..d {
                theta[j * k + cls] = w[[j, ci]];
            }
            theta[d * k + cls] = b[ci];
        }
        theta
    };
    debug_assert_eq!(theta.len(), (d + 1) * kp);
    let (f, grad) = host_fg(x, y, k, &theta, c);
    let gmax = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let termination = if gmax <= tol * 1.0001 {
        Termination::Gradient
    } else {
        Termination::MaxIter
    };
    Ok(LbfgsResult {
        x: theta,
        f,
        grad,
        n_iter: 0,
        n_eval: 0,
        termination,
    })
}

/// Scaled objective and gradient on the host in f64 (used to report linfa's result).
pub fn host_fg(x: ArrayView2<f32>, y: &[u32], k: usize, theta: &[f64], c: f64) -> (f64, Vec<f64>) {
    let (n, d) = x.dim();
    let kp = param_cols(k);
    let off = k - kp; // 1 in the binomial case: logit 0 for class 0
    let mut f = 0.0;
    let mut g = vec![0.0; (d + 1) * kp];
    let mut z = vec![0.0f64; k];
    for (row, &l) in x.outer_iter().zip(y) {
        z[..off].iter_mut().for_each(|v| *v = 0.0);
        z[off..].copy_from_slice(&theta[d * kp..]);
        for (j, &xv) in row.iter().enumerate() {
            let xv = xv as f64;
            let wr = &theta[j * kp..(j + 1) * kp];
            z[off..]
                .iter_mut()
                .zip(wr)
                .for_each(|(zi, wi)| *zi += xv * wi);
        }
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        f += m + s.ln() - z[l as usize];
        z.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
        z[l as usize] -= 1.0;
        let r = &z[off..];
        for (j, &xv) in row.iter().enumerate() {
            let xv = xv as f64;
            g[j * kp..(j + 1) * kp]
                .iter_mut()
                .zip(r)
                .for_each(|(gi, ri)| *gi += xv * ri);
        }
        g[d * kp..].iter_mut().zip(r).for_each(|(gi, ri)| *gi += ri);
    }
    let nw = d * kp;
    f += 0.5 * theta[..nw].iter().map(|v| v * v).sum::<f64>() / c;
    for (gi, ti) in g[..nw].iter_mut().zip(&theta[..nw]) {
        *gi += ti / c;
    }
    let inv = 1.0 / n as f64;
    g.iter_mut().for_each(|v| *v *= inv);
    (f * inv, g)
}
