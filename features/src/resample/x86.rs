//! The horizontal pass's row in SSE4.1 vectors (available wherever AVX2 is): one output pixel's
//! three channel sums (and an unused fourth) in one vector of i32 lanes.

use super::{Taps, PRECISION_BITS};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn horizontal_row(line: &[[i32; 4]], col0: usize, taps: &Taps, out: &mut [u8]) {
    let half = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for ((px, &s), k) in out
        .chunks_exact_mut(3)
        .zip(&taps.start)
        .zip(taps.weights.chunks_exact(taps.len))
    {
        let seg = &line[s - col0..s - col0 + taps.len];
        let mut ss = half;
        for (p, &kw) in seg.iter().zip(k) {
            // SAFETY: `p` is 16 readable bytes; the load is unaligned.
            let v = unsafe { _mm_loadu_si128(p.as_ptr().cast()) };
            ss = _mm_add_epi32(ss, _mm_mullo_epi32(v, _mm_set1_epi32(kw)));
        }
        // `clip8`: shift, then the saturating packs clamp to 0..=255.
        let v = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(ss);
        let v = _mm_packs_epi32(v, v);
        let v = _mm_packus_epi16(v, v);
        let rgb = (_mm_cvtsi128_si32(v) as u32).to_le_bytes();
        px.copy_from_slice(&rgb[..3]);
    }
}
