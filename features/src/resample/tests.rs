//! The fast passes against the straight port (`reference.rs`), bit for bit.

use super::*;
use rand::{Rng, SeedableRng};

fn random_image(rng: &mut rand::rngs::StdRng, w: u32, h: u32) -> RgbImage {
    let raw = (0..w * h * 3).map(|_| rng.gen::<u8>()).collect();
    RgbImage::from_raw(w, h, raw).unwrap()
}

/// The window of the fast passes equals the straight port's whole resize, cropped, bit for
/// bit: shrinking and enlarging, both pass orders, both filters, edge and middle windows.
#[test]
fn windows_equal_the_straight_port_cropped() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let cases = [
        ((500, 375), (448, 336)), // CUB-like 4:3 to CLIP's shortest edge 336
        ((375, 500), (336, 448)),
        ((500, 500), (336, 336)),
        ((1024, 700), (327, 224)),
        ((64, 300), (60, 40)), // height shrinks far more: vertical pass first
        ((40, 30), (97, 71)),  // enlarging
        ((33, 47), (33, 20)),  // width unchanged
        ((33, 47), (17, 47)),  // height unchanged
        ((13, 9), (13, 9)),    // nothing to resize
        ((3, 2), (1, 1)),
    ];
    for ((iw, ih), (w, h)) in cases {
        let img = random_image(&mut rng, iw, ih);
        for resample in [Resample::Bicubic, Resample::Bilinear] {
            let full = reference::pil_resize(&img, w, h, resample);
            assert_eq!(
                pil_resize(&img, w, h, resample),
                full,
                "{iw}x{ih} -> {w}x{h}"
            );
            for _ in 0..4 {
                let width = rng.gen_range(1..=w);
                let height = rng.gen_range(1..=h);
                let left = rng.gen_range(0..=w - width);
                let top = rng.gen_range(0..=h - height);
                let window = Window {
                    left,
                    top,
                    width,
                    height,
                };
                let got = pil_resize_window(&img, (w, h), resample, window);
                let want = image::imageops::crop_imm(&full, left, top, width, height).to_image();
                assert_eq!(got, want, "{iw}x{ih} -> {w}x{h}, {window:?}, {resample:?}");
                // The build for the CPU's baseline instruction set, which the dispatch
                // above skips on an AVX2 machine.
                let baseline = resize::<false>(&img, (w, h), resample, window);
                assert_eq!(baseline, want.into_raw(), "baseline build, {window:?}");
            }
        }
    }
}

#[test]
fn clip8_as_a_clamp_equals_pillows_branches() {
    let pillow = |v: i32| -> u8 {
        if v >= (1 << PRECISION_BITS << 8) {
            255
        } else if v <= 0 {
            0
        } else {
            (v >> PRECISION_BITS) as u8
        }
    };
    let edges = [
        i32::MIN,
        -1,
        0,
        1,
        (1 << 22) - 1,
        1 << 22,
        (1 << 30) - 1,
        1 << 30,
        i32::MAX,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for v in edges
        .into_iter()
        .chain((0..10_000).map(|_| rng.gen::<i32>()))
    {
        assert_eq!(clip8(v), pillow(v), "{v}");
    }
}
