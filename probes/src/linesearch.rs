//! The Moré–Thuente line search: a port of MINPACK-2 `dcsrch`/`dcstep`, as scipy's L-BFGS-B
//! uses it (sufficient decrease + curvature conditions with safeguarded cubic/quadratic steps).

use anyhow::Result;

/// Moré–Thuente line search (MINPACK-2 `dcsrch`). `phi(stp)` returns `(f, f')` along the
/// direction. Returns the accepted step and its objective, or `None` if the search failed
/// (error conditions, or `max_ls` evaluations without satisfying the conditions or a warning exit).
#[allow(clippy::too_many_arguments)]
pub fn dcsrch<P>(
    phi: &mut P,
    finit: f64,
    ginit: f64,
    mut stp: f64,
    ftol: f64,
    gtol: f64,
    xtol: f64,
    stpmin: f64,
    stpmax: f64,
    max_ls: usize,
) -> Result<Option<(f64, f64)>>
where
    P: FnMut(f64) -> Result<(f64, f64)>,
{
    const XTRAPL: f64 = 1.1;
    const XTRAPU: f64 = 4.0;
    if stp < stpmin || stp > stpmax || ginit >= 0.0 || !stp.is_finite() {
        return Ok(None);
    }
    let mut brackt = false;
    let mut stage = 1;
    let gtest = ftol * ginit;
    let mut width = stpmax - stpmin;
    let mut width1 = width / 0.5;
    let (mut stx, mut fx, mut gx) = (0.0, finit, ginit);
    let (mut sty, mut fy, mut gy) = (0.0, finit, ginit);
    let mut stmin = 0.0;
    let mut stmax = stp + XTRAPU * stp;
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..max_ls {
        let (f, g) = phi(stp)?;
        if f.is_finite() && f < finit && best.is_none_or(|(_, fb)| f < fb) {
            best = Some((stp, f));
        }
        if !f.is_finite() || !g.is_finite() {
            // Step too long (overflow): shrink towards the best bracket end.
            brackt = true;
            sty = stp;
            fy = f64::MAX / 4.0;
            gy = 0.0;
            stmax = stp;
            stp = stx + 0.5 * (stp - stx);
            if stp <= stpmin || (stmax - stx).abs() <= xtol * stmax {
                return Ok(best);
            }
            continue;
        }
        let ftest = finit + stp * gtest;
        if stage == 1 && f <= ftest && g >= 0.0 {
            stage = 2;
        }
        // Warnings: accept the current point when it decreases f, as L-BFGS-B does.
        let warn = (brackt && (stp <= stmin || stp >= stmax || stmax - stmin <= xtol * stmax))
            || (stp == stpmax && f <= ftest && g <= gtest)
            || (stp == stpmin && (f > ftest || g >= gtest));
        if warn {
            return Ok(if f < finit { Some((stp, f)) } else { best });
        }
        if f <= ftest && g.abs() <= gtol * (-ginit) {
            return Ok(Some((stp, f)));
        }
        if stage == 1 && f <= fx && f > ftest {
            let fm = f - stp * gtest;
            let mut fxm = fx - stx * gtest;
            let mut fym = fy - sty * gtest;
            let gm = g - gtest;
            let mut gxm = gx - gtest;
            let mut gym = gy - gtest;
            dcstep(
                &mut stx,
                &mut fxm,
                &mut gxm,
                &mut sty,
                &mut fym,
                &mut gym,
                &mut stp,
                fm,
                gm,
                &mut brackt,
                stmin,
                stmax,
            );
            fx = fxm + stx * gtest;
            fy = fym + sty * gtest;
            gx = gxm + gtest;
            gy = gym + gtest;
        } else {
            dcstep(
                &mut stx,
                &mut fx,
                &mut gx,
                &mut sty,
                &mut fy,
                &mut gy,
                &mut stp,
                f,
                g,
                &mut brackt,
                stmin,
                stmax,
            );
        }
        if brackt {
            if (sty - stx).abs() >= 0.66 * width1 {
                stp = stx + 0.5 * (sty - stx);
            }
            width1 = width;
            width = (sty - stx).abs();
            stmin = stx.min(sty);
            stmax = stx.max(sty);
        } else {
            stmin = stp + XTRAPL * (stp - stx);
            stmax = stp + XTRAPU * (stp - stx);
        }
        stp = stp.max(stpmin).min(stpmax);
        if brackt && (stp <= stmin || stp >= stmax || stmax - stmin <= xtol * stmax) {
            stp = stx;
        }
    }
    // Evaluation budget exhausted: L-BFGS-B would fail; we keep a point that decreased f.
    Ok(best)
}

/// MINPACK-2 `dcstep`: safeguarded cubic/quadratic step for the Moré–Thuente search.
#[allow(clippy::too_many_arguments)]
fn dcstep(
    stx: &mut f64,
    fx: &mut f64,
    dx: &mut f64,
    sty: &mut f64,
    fy: &mut f64,
    dy: &mut f64,
    stp: &mut f64,
    fp: f64,
    dp: f64,
    brackt: &mut bool,
    stpmin: f64,
    stpmax: f64,
) {
    let sgnd = dp * (*dx / dx.abs());
    let stpf;
    if fp > *fx {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp < *stx {
            gamma = -gamma;
        }
        let p = (gamma - *dx) + theta;
        let q = ((gamma - *dx) + gamma) + dp;
        let r = p / q;
        let stpc = *stx + r * (*stp - *stx);
        let stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) * (*stp - *stx);
        stpf = if (stpc - *stx).abs() < (stpq - *stx).abs() {
            stpc
        } else {
            stpc + (stpq - stpc) / 2.0
        };
        *brackt = true;
    } else if sgnd < 0.0 {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dx;
        let r = p / q;
        let stpc = *stp + r * (*stx - *stp);
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        stpf = if (stpc - *stp).abs() > (stpq - *stp).abs() {
            stpc
        } else {
            stpq
        };
        *brackt = true;
    } else if dp.abs() < dx.abs() {
        let theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dx / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *stx {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = (gamma + (*dx - dp)) + gamma;
        let r = p / q;
        let stpc = if r < 0.0 && gamma != 0.0 {
            *stp + r * (*stx - *stp)
        } else if *stp > *stx {
            stpmax
        } else {
            stpmin
        };
        let stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if *brackt {
            let mut sf = if (stpc - *stp).abs() < (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            if *stp > *stx {
                sf = sf.min(*stp + 0.66 * (*sty - *stp));
            } else {
                sf = sf.max(*stp + 0.66 * (*sty - *stp));
            }
            stpf = sf;
        } else {
            let sf = if (stpc - *stp).abs() > (stpq - *stp).abs() {
                stpc
            } else {
                stpq
            };
            stpf = sf.min(stpmax).max(stpmin);
        }
    } else if *brackt {
        let theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
        let s = theta.abs().max(dy.abs()).max(dp.abs());
        let mut gamma = s * ((theta / s).powi(2) - (*dy / s) * (dp / s)).max(0.0).sqrt();
        if *stp > *sty {
            gamma = -gamma;
        }
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + *dy;
        let r = p / q;
        stpf = *stp + r * (*sty - *stp);
    } else if *stp > *stx {
        stpf = stpmax;
    } else {
        stpf = stpmin;
    }
    if fp > *fx {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if sgnd < 0.0 {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}
