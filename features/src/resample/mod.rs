//! Pillow's 8-bit resampling (`Resample.c`), ported bit-exactly: separable convolution with
//! fixed-point coefficients, bicubic (a = -0.5) or bilinear, antialiased when shrinking, and
//! Pillow 13's pass order (vertical first when the height shrinks much more than the width).
//!
//! [`pil_resize_window`] computes only a window of the resized image (the center crop that
//! follows), which is the same numbers as resizing everything and cropping: each output pixel
//! depends on its own taps alone. The taps of one axis are padded with zero weights to one
//! length, so the passes run fixed-length loops; integer sums with zero terms are unchanged.

use crate::preprocess::Resample;
use image::RgbImage;
use std::ops::Range;

/// PIL's fixed-point precision for 8-bit resampling (`Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Resampling coefficients for one axis, as PIL's `precompute_coeffs` (and torch's antialiased
/// interpolation): for each output index, the first input index and the normalised weights.
pub(crate) fn resample_coeffs(
    in_size: usize,
    out_size: usize,
    resample: Resample,
) -> Vec<(usize, Vec<f64>)> {
    let (filter, support): (fn(f64) -> f64, f64) = match resample {
        Resample::Bilinear => (bilinear_filter, 1.0),
        Resample::Bicubic => (bicubic_filter, 2.0),
    };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| filter((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            (xmin, k)
        })
        .collect()
}

fn fixed_point(coeffs: Vec<(usize, Vec<f64>)>) -> Vec<(usize, Vec<i32>)> {
    let one = (1u32 << PRECISION_BITS) as f64;
    coeffs
        .into_iter()
        .map(|(x0, k)| {
            let k = k
                .into_iter()
                .map(|w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            (x0, k)
        })
        .collect()
}

/// PIL's `clip8`: the fixed-point sum rounded down to 8 bits and clamped (written as a clamp so
/// that the loops vectorise; the same values as Pillow's branches).
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The fixed-point taps of the outputs `range` of one axis, padded to one length: output `i`
/// reads inputs `start[i]..start[i] + len` with weights `weights[i * len..(i + 1) * len]`.
struct Taps {
    start: Vec<usize>,
    weights: Vec<i32>,
    len: usize,
}

impl Taps {
    fn new(in_size: usize, out_size: usize, resample: Resample, range: Range<usize>) -> Self {
        let taps = fixed_point(resample_coeffs(in_size, out_size, resample));
        let taps = &taps[range];
        let len = taps.iter().map(|(_, k)| k.len()).max().unwrap_or(0).max(1);
        let mut start = Vec::with_capacity(taps.len());
        let mut weights = vec![0i32; taps.len() * len];
        for (i, (x0, k)) in taps.iter().enumerate() {
            // A shorter list is padded on the right, or on the left at the image's end (no list
            // is longer than the input, so `len <= in_size`).
            let s = (*x0).min(in_size.saturating_sub(len));
            let at = i * len + (x0 - s);
            weights[at..at + k.len()].copy_from_slice(k);
            start.push(s);
        }
        Self {
            start,
            weights,
            len,
        }
    }

    /// The inputs any output reads.
    fn span(&self) -> Range<usize> {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self.start.iter().map(|s| s + self.len).max().unwrap_or(0);
        lo..hi
    }

    fn count(&self) -> usize {
        self.start.len()
    }
}

/// Horizontal 8-bit pass over `rows` of `src` (`src_w` pixels wide, RGB), input columns offset
/// by `-col0`; the output is `taps.count()` pixels wide. Each input row is widened once to four
/// i32 lanes a pixel (the fourth unused), so that one output pixel's three sums are one vector.
#[inline(always)]
fn horizontal_pass<const AVX2: bool>(
    src: &[u8],
    src_w: usize,
    rows: Range<usize>,
    col0: usize,
    taps: &Taps,
) -> Vec<u8> {
    let w = taps.count();
    let mut out = vec![0u8; rows.len() * w * 3];
    if w == 0 {
        return out;
    }
    let mut line = vec![[0i32; 4]; src_w];
    for (y, out_row) in rows.zip(out.chunks_exact_mut(w * 3)) {
        let pixels = src[y * src_w * 3..(y + 1) * src_w * 3].chunks_exact(3);
        for (l, p) in line.iter_mut().zip(pixels) {
            *l = [p[0] as i32, p[1] as i32, p[2] as i32, 0];
        }
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: `AVX2` is true only in `resize_avx2`, called once AVX2 was detected.
            unsafe { x86::horizontal_row(&line, col0, taps, out_row) };
            continue;
        }
        match taps.len {
            // The common lengths as constants, so the tap loop unrolls.
            4 => horizontal_row::<4>(&line, col0, taps, out_row),
            5 => horizontal_row::<5>(&line, col0, taps, out_row),
            6 => horizontal_row::<6>(&line, col0, taps, out_row),
            7 => horizontal_row::<7>(&line, col0, taps, out_row),
            8 => horizontal_row::<8>(&line, col0, taps, out_row),
            _ => horizontal_row_any(&line, col0, taps, out_row),
        }
    }
    out
}

#[inline(always)]
fn horizontal_row<const K: usize>(line: &[[i32; 4]], col0: usize, taps: &Taps, out: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    for ((px, &s), k) in out
        .chunks_exact_mut(3)
        .zip(&taps.start)
        .zip(taps.weights.chunks_exact(K))
    {
        let seg: &[[i32; 4]; K] = line[s - col0..s - col0 + K].try_into().expect("tap span");
        let k: &[i32; K] = k.try_into().expect("tap weights");
        let mut ss = [half; 4];
        for j in 0..K {
            for c in 0..4 {
                ss[c] += seg[j][c] * k[j];
            }
        }
        px[0] = clip8(ss[0]);
        px[1] = clip8(ss[1]);
        px[2] = clip8(ss[2]);
    }
}

#[inline(always)]
fn horizontal_row_any(line: &[[i32; 4]], col0: usize, taps: &Taps, out: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    for ((px, &s), k) in out
        .chunks_exact_mut(3)
        .zip(&taps.start)
        .zip(taps.weights.chunks_exact(taps.len))
    {
        let mut ss = [half; 4];
        for (p, &kw) in line[s - col0..s - col0 + taps.len].iter().zip(k) {
            for c in 0..4 {
                ss[c] += p[c] * kw;
            }
        }
        px[0] = clip8(ss[0]);
        px[1] = clip8(ss[1]);
        px[2] = clip8(ss[2]);
    }
}

/// Vertical 8-bit pass over columns `cols` of `src` (`src_w` pixels wide, RGB), input rows
/// offset by `-row0`; the output is `cols.len()` pixels wide and `taps.count()` rows high. Each
/// output row accumulates whole input rows, so the inner loop runs along memory.
#[inline(always)]
fn vertical_pass(
    src: &[u8],
    src_w: usize,
    cols: Range<usize>,
    row0: usize,
    taps: &Taps,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let w = cols.len() * 3;
    let mut out = vec![0u8; taps.count() * w];
    if w == 0 {
        return out;
    }
    let mut acc = vec![0i32; w];
    for ((out_row, &s), k) in out
        .chunks_exact_mut(w)
        .zip(&taps.start)
        .zip(taps.weights.chunks_exact(taps.len))
    {
        acc.fill(half);
        for (j, &kw) in k.iter().enumerate() {
            if kw == 0 {
                continue;
            }
            let at = ((s - row0 + j) * src_w + cols.start) * 3;
            for (a, &p) in acc.iter_mut().zip(&src[at..at + w]) {
                *a += p as i32 * kw;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// The pixels of `rows` × `cols` of `src` (`src_w` pixels wide, RGB).
fn copy_window(src: &[u8], src_w: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * cols.len() * 3);
    for y in rows {
        out.extend_from_slice(&src[(y * src_w + cols.start) * 3..(y * src_w + cols.end) * 3]);
    }
    out
}

/// A window of an image: `width` × `height` pixels from column `left` and row `top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// PIL's `Image.resize(size, resample)` for RGB images (`ImagingResampleInner`,
/// `reducing_gap=None`), bit-exact with Pillow: two separable passes on 8-bit fixed point, each
/// rounded to 8 bits; the horizontal pass first unless the height shrinks by more than twice as
/// many pixels as the width (Pillow's rule: vertical first, to make the second pass cheaper).
pub fn pil_resize(img: &RgbImage, w: u32, h: u32, resample: Resample) -> RgbImage {
    let all = Window {
        left: 0,
        top: 0,
        width: w,
        height: h,
    };
    pil_resize_window(img, (w, h), resample, all)
}

/// The `window` of [`pil_resize`]`(img, size.0, size.1, resample)`, computing only what the
/// window needs: the same pixels as resizing the whole image and cropping it.
///
/// # Panics
/// If `window` does not lie inside `size`.
pub fn pil_resize_window(
    img: &RgbImage,
    size: (u32, u32),
    resample: Resample,
    window: Window,
) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    let out = if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), all `resize_avx2` requires.
        unsafe { resize_avx2(img, size, resample, window) }
    } else {
        resize::<false>(img, size, resample, window)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let out = resize::<false>(img, size, resample, window);
    RgbImage::from_raw(window.width, window.height, out).expect("buffer size")
}

/// [`resize`] compiled for AVX2 (8-lane integer multiplies), chosen at run time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn resize_avx2(img: &RgbImage, size: (u32, u32), resample: Resample, window: Window) -> Vec<u8> {
    resize::<true>(img, size, resample, window)
}

/// The window's pixels (RGB, row-major), both passes inlined here so that each build of it
/// vectorises them for its own instruction set.
#[inline(always)]
fn resize<const AVX2: bool>(
    img: &RgbImage,
    size: (u32, u32),
    resample: Resample,
    window: Window,
) -> Vec<u8> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (w, h) = (size.0 as usize, size.1 as usize);
    let cols = window.left as usize..(window.left + window.width) as usize;
    let rows = window.top as usize..(window.top + window.height) as usize;
    assert!(
        cols.end <= w && rows.end <= h,
        "window {window:?} outside the {w}x{h} image"
    );
    let src = img.as_raw();
    let horizontal_first = !(ih > h && (ih as i64 - h as i64) > (iw as i64 - w as i64) * 2);
    let horiz = (iw != w).then(|| Taps::new(iw, w, resample, cols.clone()));
    let vert = (ih != h).then(|| Taps::new(ih, h, resample, rows.clone()));
    match (horiz, vert) {
        (None, None) => copy_window(src, iw, rows, cols),
        (Some(hz), None) => horizontal_pass::<AVX2>(src, iw, rows, 0, &hz),
        (None, Some(vt)) => vertical_pass(src, iw, cols, 0, &vt),
        (Some(hz), Some(vt)) if horizontal_first => {
            let span = vt.span();
            let tmp = horizontal_pass::<AVX2>(src, iw, span.clone(), 0, &hz);
            vertical_pass(&tmp, hz.count(), 0..hz.count(), span.start, &vt)
        }
        (Some(hz), Some(vt)) => {
            let span = hz.span();
            let tmp = vertical_pass(src, iw, span.clone(), 0, &vt);
            horizontal_pass::<AVX2>(&tmp, span.len(), 0..vt.count(), span.start, &hz)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests;
