//! One row of the host path's loss pass: log-sum-exp, its derivative along the search direction,
//! and the residuals `softmax − onehot`, in f64, written so the compiler vectorises it (an `exp`
//! of its own and reductions over eight accumulators), with AVX-512 and AVX2 + FMA builds chosen
//! at run time.
//!
//! The `exp` covers the arguments the pass needs (`x ≤ 0`, after subtracting the row maximum):
//! `2^k · p(r)` with `k = round(x / ln 2)`, `r = x − k·ln 2` (two-part `ln 2`) and `p` the degree-12
//! Taylor polynomial (truncation below 2e-16 on `|r| ≤ ln2/2`); below −708 it returns
//! `exp(−708)`, which no sum that also holds the row maximum's `1` can see.

use crate::lbfgs::dot_serial;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// `ln 2` in two parts (fdlibm's): the high part has trailing zero bits, so `k·LN2_HI` is exact.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5·2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFTER: f64 = 6_755_399_441_055_744.0;

/// `exp(x)` for `x ≤ 0` (see the module notes); `FMA`: fused multiply-adds in the polynomial
/// (only where the CPU has them: elsewhere `mul_add` is a library call).
#[inline(always)]
pub(crate) fn exp_nonpositive<const FMA: bool>(x: f64) -> f64 {
    let x = x.max(-708.0);
    let t = x * LOG2E + SHIFTER;
    let k = t - SHIFTER;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    const C: [f64; 13] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
    ];
    let mut p = C[12];
    for &c in C[..12].iter().rev() {
        p = if FMA { p.mul_add(r, c) } else { p * r + c };
    }
    // 2^k: k + 1023 into the exponent field (the shifter's high bits fall off the shift).
    p * f64::from_bits(t.to_bits().wrapping_add(1023) << 52)
}

/// Sum over eight accumulators (vectorisable; a fixed order, so deterministic).
#[inline(always)]
fn sum8(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Largest value over eight lanes.
#[inline(always)]
fn max8(v: &[f64]) -> f64 {
    let mut acc = [f64::NEG_INFINITY; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

#[inline(always)]
fn body<const FMA: bool>(
    z: &[f64],
    zp: &[f32],
    alpha: f64,
    y: usize,
    off: usize,
    r: &mut [f32],
    buf: &mut [f64],
) -> (f64, f64) {
    buf[..off].iter_mut().for_each(|v| *v = 0.0);
    if zp.is_empty() {
        buf[off..].copy_from_slice(z);
    } else {
        for ((b, &zj), &dj) in buf[off..].iter_mut().zip(z).zip(zp) {
            *b = zj + alpha * f64::from(dj);
        }
    }
    let zy = buf[y];
    let m = max8(buf);
    buf.iter_mut()
        .for_each(|v| *v = exp_nonpositive::<FMA>(*v - m));
    let s = sum8(buf);
    let loss = m + s.ln() - zy;
    let inv = 1.0 / s;
    // Probabilities of the param columns; the one-hot is subtracted at `y` afterwards.
    let probs = &mut buf[off..];
    probs.iter_mut().for_each(|p| *p *= inv);
    let mut dphi = 0.0;
    if !zp.is_empty() {
        dphi = dot_serial(probs, zp);
        if y >= off {
            dphi -= f64::from(zp[y - off]);
        }
    }
    for (rj, &p) in r.iter_mut().zip(probs.iter()) {
        *rj = p as f32;
    }
    if y >= off {
        r[y - off] = (probs[y - off] - 1.0) as f32;
    }
    (loss, dphi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn body_avx512(
    z: &[f64],
    zp: &[f32],
    alpha: f64,
    y: usize,
    off: usize,
    r: &mut [f32],
    buf: &mut [f64],
) -> (f64, f64) {
    body::<true>(z, zp, alpha, y, off, r, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(
    z: &[f64],
    zp: &[f32],
    alpha: f64,
    y: usize,
    off: usize,
    r: &mut [f32],
    buf: &mut [f64],
) -> (f64, f64) {
    body::<true>(z, zp, alpha, y, off, r, buf)
}

/// Loss of one row at logits `z + α·zp` (param columns; class 0 at logit 0 in the binomial case,
/// `off = 1`), its derivative in α, and the residual `softmax − onehot` in param columns (into
/// `r`). Without a direction (`zp` empty) the logits are `z`. `buf` holds `kp + off` values.
pub(crate) fn row_terms(
    z: &[f64],
    zp: &[f32],
    alpha: f64,
    y: usize,
    off: usize,
    r: &mut [f32],
    buf: &mut [f64],
) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { body_avx512(z, zp, alpha, y, off, r, buf) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { body_avx2(z, zp, alpha, y, off, r, buf) };
        }
    }
    body::<false>(z, zp, alpha, y, off, r, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within a few ulps of the standard library's `exp` over the range the pass uses.
    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -700.0 * (i as f64 / 200_000.0).powi(3);
            let want = x.exp();
            for got in [exp_nonpositive::<false>(x), exp_nonpositive::<true>(x)] {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 1e-15, "relative error {worst:e}");
        assert_eq!(exp_nonpositive::<false>(0.0), 1.0);
        assert!(exp_nonpositive::<false>(-1e4) < 1e-300);
    }

    /// The row's loss, derivative and residuals against a direct f64 computation, multinomial
    /// and binomial, with and without a direction.
    #[test]
    fn row_terms_match_a_direct_computation() {
        for (kp, off) in [(13usize, 0usize), (1, 1), (40, 0)] {
            let z: Vec<f64> = (0..kp).map(|j| ((j * 7) % 11) as f64 * 0.9 - 4.0).collect();
            let zp: Vec<f32> = (0..kp).map(|j| ((j * 5) % 3) as f32 - 1.0).collect();
            for dir in [false, true] {
                let zp = if dir { &zp[..] } else { &[][..] };
                for y in 0..kp + off {
                    let alpha = 0.3;
                    let mut r = vec![0f32; kp];
                    let mut buf = vec![0f64; kp + off];
                    let (loss, dphi) = row_terms(&z, zp, alpha, y, off, &mut r, &mut buf);
                    let logits: Vec<f64> = (0..kp + off)
                        .map(|j| {
                            if j < off {
                                0.0
                            } else {
                                let d = if dir { f64::from(zp[j - off]) } else { 0.0 };
                                z[j - off] + alpha * d
                            }
                        })
                        .collect();
                    let lse = logits.iter().map(|v| v.exp()).sum::<f64>().ln();
                    assert!((loss - (lse - logits[y])).abs() < 1e-12);
                    let mut want_dphi = 0.0;
                    for j in 0..kp {
                        let p = (logits[j + off] - lse).exp();
                        let res = p - if j + off == y { 1.0 } else { 0.0 };
                        assert!((f64::from(r[j]) - res).abs() < 1e-6);
                        if dir {
                            want_dphi += res * f64::from(zp[j]);
                        }
                    }
                    assert!((dphi - want_dphi).abs() < 1e-12);
                }
            }
        }
    }
}
