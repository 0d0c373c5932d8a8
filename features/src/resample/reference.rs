//! The straight port of Pillow's passes (one tap list per output, Pillow's loop order), kept as
//! the reference the fast passes are tested against; the crate's Pillow fixtures
//! (`features/tests/models_parity.rs`) checked it before the fast passes replaced it; `tests.rs`
//! holds the fast passes to it.

use super::{fixed_point, resample_coeffs, PRECISION_BITS};
use crate::preprocess::Resample;
use image::RgbImage;

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Horizontal 8-bit pass over rows `row0..row0 + rows` of `src` (`src_w` wide, RGB).
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    row0: usize,
    rows: usize,
    taps: &[(usize, Vec<i32>)],
) -> Vec<u8> {
    let w = taps.len();
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; rows * w * 3];
    for y in 0..rows {
        let line = &src[(y + row0) * src_w * 3..(y + row0 + 1) * src_w * 3];
        for (xx, (x0, k)) in taps.iter().enumerate() {
            let mut ss = [half; 3];
            for (j, &kw) in k.iter().enumerate() {
                let p = &line[(x0 + j) * 3..(x0 + j) * 3 + 3];
                for c in 0..3 {
                    ss[c] += p[c] as i32 * kw;
                }
            }
            for c in 0..3 {
                out[(y * w + xx) * 3 + c] = clip8(ss[c]);
            }
        }
    }
    out
}

/// Vertical 8-bit pass over `src` (`w` wide, RGB); tap rows are offset by `-row0`.
fn vertical_pass(src: &[u8], w: usize, row0: usize, taps: &[(usize, Vec<i32>)]) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; taps.len() * w * 3];
    for (yy, (y0, k)) in taps.iter().enumerate() {
        let y0 = y0 - row0;
        for xx in 0..w {
            let mut ss = [half; 3];
            for (j, &kw) in k.iter().enumerate() {
                let i = ((y0 + j) * w + xx) * 3;
                for c in 0..3 {
                    ss[c] += src[i + c] as i32 * kw;
                }
            }
            for c in 0..3 {
                out[(yy * w + xx) * 3 + c] = clip8(ss[c]);
            }
        }
    }
    out
}

/// PIL's `Image.resize(size, resample)` for RGB images (`ImagingResampleInner`,
/// `reducing_gap=None`), bit-exact with Pillow: two separable passes on 8-bit fixed point, each
/// rounded to 8 bits; the horizontal pass first unless the height shrinks by more than twice as
/// many pixels as the width (Pillow's rule: vertical first, to make the second pass cheaper).
pub fn pil_resize(img: &RgbImage, w: u32, h: u32, resample: Resample) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (w, h) = (w as usize, h as usize);
    let src = img.as_raw();
    let (need_h, need_v) = (iw != w, ih != h);
    let horizontal_first = !(ih > h && (ih as i64 - h as i64) > (iw as i64 - w as i64) * 2);
    let horiz = need_h.then(|| fixed_point(resample_coeffs(iw, w, resample)));
    let vert = need_v.then(|| fixed_point(resample_coeffs(ih, h, resample)));
    let out = match (horiz, vert) {
        (None, None) => return img.clone(),
        (Some(hz), None) => horizontal_pass(src, iw, 0, ih, &hz),
        (None, Some(vt)) => vertical_pass(src, iw, 0, &vt),
        (Some(hz), Some(vt)) if horizontal_first => {
            let first = vt[0].0;
            let last = vt[h - 1].0 + vt[h - 1].1.len();
            let tmp = horizontal_pass(src, iw, first, last - first, &hz);
            vertical_pass(&tmp, w, first, &vt)
        }
        (Some(hz), Some(vt)) => {
            let tmp = vertical_pass(src, iw, 0, &vt);
            horizontal_pass(&tmp, iw, 0, h, &hz)
        }
    };
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer size")
}
