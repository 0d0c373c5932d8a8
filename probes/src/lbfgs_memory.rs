//! The L-BFGS correction pairs and the product `−H·g` in compact form (Byrd, Nocedal & Schnabel,
//! "Representations of quasi-Newton matrices", 1994, eq. 3.1), which gives the same direction
//! as the two-loop recursion but reads the stored pairs twice per iteration instead of four
//! times: one blocked pass for all the inner products, one for the linear combination. For a
//! probe the pairs are `(d+1)·K` long (3.3 MB each in f32 at d = 4096, K = 200), so the
//! recursion is bound by memory traffic, not arithmetic; for the same reason the pairs are stored
//! in f32 (all products accumulate in f64, from the stored values, so `R` and `YᵀY` are exactly
//! those of the stored pairs; rounding them only perturbs the search direction, not the
//! objective or the stopping test).
//!
//! With `S`, `Y` the stored pairs (oldest first), `R` the upper triangle of `SᵀY`, `D` its
//! diagonal and `γ = sᵀy / yᵀy` of the newest pair:
//! `H·g = γg + S·R⁻ᵀ((D + γYᵀY)·R⁻¹Sᵀg − γYᵀg) − γY·R⁻¹Sᵀg`.

use crate::lbfgs::dot_serial;
use crate::products::narrow;
use rayon::prelude::*;
use std::collections::VecDeque;

/// Block length of the passes (fixed, so sums do not depend on the thread count).
const BLOCK: usize = 1 << 14;

/// Stored correction pairs with their inner products.
pub struct Memory {
    cap: usize,
    s: VecDeque<Vec<f32>>,
    y: VecDeque<Vec<f32>>,
    gram: PairGram,
    /// The newest pair's products (with itself and the older pairs) are still to be computed.
    pending: bool,
}

/// The inner products of stored pairs (oldest first) and the compact form's small algebra, apart
/// from where the pairs live: shared by the host [`Memory`] and the device-resident solver.
#[derive(Default)]
pub(crate) struct PairGram {
    /// `sy[i][j] = s_iᵀy_j` for `i ≤ j`, and `yy[i][j] = y_iᵀy_j`.
    sy: VecDeque<VecDeque<f64>>,
    yy: VecDeque<VecDeque<f64>>,
}

impl PairGram {
    /// Number of pairs.
    pub(crate) fn len(&self) -> usize {
        self.sy.len()
    }

    /// Forget the oldest pair.
    pub(crate) fn pop_oldest(&mut self) {
        self.sy.pop_front();
        self.yy.pop_front();
        self.sy.iter_mut().for_each(|r| {
            r.pop_front();
        });
        self.yy.iter_mut().for_each(|r| {
            r.pop_front();
        });
    }

    /// Add the newest pair from `s_iᵀy_new` and `y_iᵀy_new` over all pairs, itself last.
    pub(crate) fn push(&mut self, s_dot_ynew: &[f64], y_dot_ynew: &[f64]) {
        let k = self.len() + 1;
        debug_assert!(s_dot_ynew.len() == k && y_dot_ynew.len() == k);
        for i in 0..k - 1 {
            self.sy[i].push_back(s_dot_ynew[i]);
            self.yy[i].push_back(y_dot_ynew[i]);
        }
        let mut sy = VecDeque::from(vec![0.0; k]);
        sy[k - 1] = s_dot_ynew[k - 1];
        self.sy.push_back(sy);
        self.yy.push_back(y_dot_ynew.iter().copied().collect());
    }

    /// The direction's coefficients from `a = Sᵀg` and `b = Yᵀg`: `(γ, c_s, c_y)` with
    /// `−H·g = −γg + Σ c_s[i]·s_i + Σ c_y[i]·y_i`.
    pub(crate) fn coefficients(&self, a: &[f64], b: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let k = self.len();
        let r = |i: usize, j: usize| self.sy[i][j];
        let gamma = r(k - 1, k - 1) / self.yy[k - 1][k - 1];
        // p = R⁻¹·Sᵀg (R upper triangular).
        let mut p = vec![0.0; k];
        for i in (0..k).rev() {
            let t: f64 = (i + 1..k).map(|j| r(i, j) * p[j]).sum();
            p[i] = (a[i] - t) / r(i, i);
        }
        // w = (D + γYᵀY)·p − γYᵀg, then top = R⁻ᵀ·w.
        let w: Vec<f64> = (0..k)
            .map(|i| {
                let yyp: f64 = (0..k).map(|j| self.yy[i][j] * p[j]).sum();
                r(i, i) * p[i] + gamma * yyp - gamma * b[i]
            })
            .collect();
        let mut top = vec![0.0; k];
        for i in 0..k {
            let t: f64 = (0..i).map(|j| r(j, i) * top[j]).sum();
            top[i] = (w[i] - t) / r(i, i);
        }
        // −H·g = −γg − S·top + γY·p.
        let cy = p.iter().map(|v| gamma * v).collect();
        (gamma, top.iter().map(|v| -v).collect(), cy)
    }
}

impl Memory {
    /// Memory of at most `cap` pairs.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            s: VecDeque::new(),
            y: VecDeque::new(),
            gram: PairGram::default(),
            pending: false,
        }
    }

    /// Number of stored pairs.
    pub fn len(&self) -> usize {
        self.s.len()
    }

    /// Whether no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    /// Forget every pair (restart from steepest descent).
    pub fn clear(&mut self) {
        *self = Self::new(self.cap);
    }

    /// Store the pair `(s, y)` (rounded to f32; the caller has checked `sᵀy > 0`), dropping the
    /// oldest pair when full.
    pub fn push(&mut self, s: &[f64], y: &[f64]) {
        if self.pending {
            // Two pushes without a direction in between: settle the previous pair first.
            self.products(None);
        }
        let (mut sb, mut yb) = (Vec::new(), Vec::new());
        if self.s.len() == self.cap {
            // Reuse the evicted pair's buffers.
            sb = self.s.pop_front().unwrap_or_default();
            yb = self.y.pop_front().unwrap_or_default();
            self.gram.pop_oldest();
        }
        narrow_into(s, &mut sb);
        narrow_into(y, &mut yb);
        self.s.push_back(sb);
        self.y.push_back(yb);
        // The new pair's products come with the next pass.
        self.pending = true;
    }

    /// One blocked pass over the pairs: `Sᵀg` and `Yᵀg` (when `g` is given), and the newest
    /// pair's products with the older ones when pending. Returns `(Sᵀg, Yᵀg)`.
    fn products(&mut self, g: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
        let k = self.len();
        let pending = self.pending;
        let width = 4 * k;
        let n = self.s[0].len();
        let (s, y) = (&self.s, &self.y);
        let parts: Vec<Vec<f64>> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let r = b * BLOCK..((b + 1) * BLOCK).min(n);
                let mut acc = vec![0.0; width];
                let y_new = &y[k - 1][r.clone()];
                for i in 0..k {
                    let (si, yi) = (&s[i][r.clone()], &y[i][r.clone()]);
                    if let Some(g) = g {
                        let g = &g[r.clone()];
                        acc[i] = dot_serial(si, g);
                        acc[k + i] = dot_serial(yi, g);
                    }
                    if pending {
                        acc[2 * k + i] = dot_serial(si, y_new);
                        acc[3 * k + i] = dot_serial(yi, y_new);
                    }
                }
                acc
            })
            .collect();
        let mut tot = vec![0.0; width];
        for p in &parts {
            tot.iter_mut().zip(p).for_each(|(t, v)| *t += v);
        }
        if pending {
            self.gram.push(&tot[2 * k..3 * k], &tot[3 * k..4 * k]);
            self.pending = false;
        }
        (tot[..k].to_vec(), tot[k..2 * k].to_vec())
    }

    /// The L-BFGS direction `−H·g` into `d` (`−g` without pairs).
    pub fn direction(&mut self, g: &[f64], d: &mut [f64]) {
        let k = self.len();
        if k == 0 {
            d.iter_mut().zip(g).for_each(|(di, gi)| *di = -gi);
            return;
        }
        let (a, b) = self.products(Some(g));
        let (gamma, cs, cy) = self.gram.coefficients(&a, &b);
        // d = −γg + S·c_s + Y·c_y, in one pass.
        let (s, y) = (&self.s, &self.y);
        d.par_chunks_mut(BLOCK)
            .zip(g.par_chunks(BLOCK))
            .enumerate()
            .for_each(|(bi, (dc, gc))| {
                let off = bi * BLOCK;
                dc.iter_mut().zip(gc).for_each(|(di, gi)| *di = -gamma * gi);
                for i in 0..k {
                    let (ci, ei) = (cs[i], cy[i]);
                    let (si, yi) = (&s[i][off..off + dc.len()], &y[i][off..off + dc.len()]);
                    for ((di, &sv), &yv) in dc.iter_mut().zip(si).zip(yi) {
                        *di += ci * f64::from(sv) + ei * f64::from(yv);
                    }
                }
            });
    }
}

/// `dst = src` rounded to f32, resizing `dst`.
fn narrow_into(src: &[f64], dst: &mut Vec<f32>) {
    dst.resize(src.len(), 0.0);
    narrow(src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The textbook two-loop recursion, for comparison.
    fn two_loop(s: &[Vec<f64>], y: &[Vec<f64>], g: &[f64]) -> Vec<f64> {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let k = s.len();
        let mut q: Vec<f64> = g.to_vec();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            alpha[i] = dot(&s[i], &q) / dot(&s[i], &y[i]);
            q.iter_mut()
                .zip(&y[i])
                .for_each(|(q, y)| *q -= alpha[i] * y);
        }
        let gamma = dot(&s[k - 1], &y[k - 1]) / dot(&y[k - 1], &y[k - 1]);
        q.iter_mut().for_each(|v| *v *= gamma);
        for i in 0..k {
            let beta = dot(&y[i], &q) / dot(&s[i], &y[i]);
            q.iter_mut()
                .zip(&s[i])
                .for_each(|(q, s)| *q += (alpha[i] - beta) * s);
        }
        q.iter().map(|v| -v).collect()
    }

    /// Pairs from a random SPD quadratic (so `sᵀy > 0`), more than the memory holds, with
    /// vectors longer than one block: the compact form must give the two-loop direction of the
    /// stored (f32-rounded) pairs.
    #[test]
    fn matches_the_two_loop_recursion() {
        let n = BLOCK * 2 + 123;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let diag: Vec<f64> = (0..n).map(|_| rng.gen_range(0.1..10.0)).collect();
        let mut mem = Memory::new(4);
        let (mut hs, mut hy) = (Vec::new(), Vec::new());
        for step in 0..7 {
            let s: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let y: Vec<f64> = s.iter().zip(&diag).map(|(s, h)| s * h).collect();
            mem.push(&s, &y);
            let round = |v: &[f64]| v.iter().map(|&x| f64::from(x as f32)).collect::<Vec<_>>();
            hs.push(round(&s));
            hy.push(round(&y));
            if hs.len() > 4 {
                hs.remove(0);
                hy.remove(0);
            }
            // Every other step pushes twice before asking for a direction.
            if step % 2 == 1 {
                continue;
            }
            let g: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut d = vec![0.0; n];
            mem.direction(&g, &mut d);
            let want = two_loop(&hs, &hy, &g);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = d
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-10 * scale, "step {step}: error {err:e}");
        }
    }
}
