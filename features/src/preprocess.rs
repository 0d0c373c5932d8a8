//! Image preprocessing as transformers' `CLIPImageProcessor` does it, driven by a checkpoint's
//! `preprocessor_config.json`: optional pad-to-square with the mean colour (LLaVA-1.5's
//! `image_aspect_ratio: pad`), shortest-edge resize (bicubic), center crop, rescale, normalize.

use anyhow::{bail, Context, Result};
use fast_image_resize::{
    images::Image as FirImage, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Preprocessing parameters (the subset of `preprocessor_config.json` CLIP-style models use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Target length of the shorter side after resizing.
    pub shortest_edge: u32,
    /// Center crop (height, width).
    pub crop: (u32, u32),
    pub do_resize: bool,
    pub do_center_crop: bool,
    pub do_rescale: bool,
    pub rescale_factor: f32,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Pad to a square filled with the mean colour before everything else (LLaVA-1.5).
    pub pad_to_square: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeField {
    Int(u32),
    Map {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

#[derive(Deserialize)]
struct RawConfig {
    size: Option<SizeField>,
    crop_size: Option<SizeField>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f32>,
    do_normalize: Option<bool>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    resample: Option<u32>,
}

/// OpenAI CLIP's normalisation constants (transformers' defaults for CLIPImageProcessor).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl PreprocessConfig {
    /// CLIP defaults at a given resolution.
    pub fn clip(size: u32) -> Self {
        PreprocessConfig {
            shortest_edge: size,
            crop: (size, size),
            do_resize: true,
            do_center_crop: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            pad_to_square: false,
        }
    }

    /// Parses a `preprocessor_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)?;
        if let Some(r) = raw.resample {
            if r != 3 {
                bail!("resample={r} is not supported: only bicubic (3), CLIP's choice, is implemented");
            }
        }
        let shortest_edge = match raw.size {
            Some(SizeField::Int(s)) => s,
            Some(SizeField::Map {
                shortest_edge: Some(s),
                ..
            }) => s,
            Some(SizeField::Map {
                height: Some(h),
                width: Some(w),
                ..
            }) if h == w => h,
            Some(SizeField::Map { .. }) => {
                bail!("size must have shortest_edge (or equal height and width)")
            }
            None => 224,
        };
        let crop = match raw.crop_size {
            Some(SizeField::Int(s)) => (s, s),
            Some(SizeField::Map {
                height: Some(h),
                width: Some(w),
                ..
            }) => (h, w),
            Some(SizeField::Map {
                shortest_edge: Some(s),
                ..
            }) => (s, s),
            Some(SizeField::Map { .. }) => bail!("crop_size must have height and width"),
            None => (shortest_edge, shortest_edge),
        };
        Ok(PreprocessConfig {
            shortest_edge,
            crop,
            do_resize: raw.do_resize.unwrap_or(true),
            do_center_crop: raw.do_center_crop.unwrap_or(true),
            do_rescale: raw.do_rescale.unwrap_or(true),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: raw.do_normalize.unwrap_or(true),
            image_mean: raw.image_mean.unwrap_or(CLIP_MEAN),
            image_std: raw.image_std.unwrap_or(CLIP_STD),
            pad_to_square: false,
        })
    }

    /// Writes this config as a transformers-compatible `preprocessor_config.json` value.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": self.shortest_edge},
            "crop_size": {"height": self.crop.0, "width": self.crop.1},
            "do_resize": self.do_resize, "do_center_crop": self.do_center_crop,
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "do_convert_rgb": true,
            "image_mean": self.image_mean, "image_std": self.image_std, "resample": 3,
        })
    }

    /// Output (height, width) of [`PreprocessConfig::apply`].
    pub fn output_size(&self) -> (u32, u32) {
        self.crop
    }
}

/// Decodes an image file to RGB, honouring EXIF orientation; grayscale, RGBA and CMYK inputs are
/// converted as PIL's `convert("RGB")` does (alpha dropped).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let mut decoder = reader.into_decoder().with_context(|| {
        format!(
            "{} is not a readable image (corrupt or unsupported format)",
            path.display()
        )
    })?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder)
        .with_context(|| format!("{} is corrupt: decoding failed", path.display()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.to_rgb8())
}

/// Pads to a square canvas filled with `fill`, image centred (transformers' `expand2square`).
pub fn pad_to_square(img: &RgbImage, fill: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let s = w.max(h);
    let mut out = RgbImage::from_pixel(s, s, image::Rgb(fill));
    image::imageops::replace(&mut out, img, ((s - w) / 2) as i64, ((s - h) / 2) as i64);
    out
}

impl PreprocessConfig {
    /// Turns an RGB image into a normalised CHW f32 tensor of [`PreprocessConfig::output_size`].
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let padded;
        let mut img = img;
        if self.pad_to_square {
            let fill = self.image_mean.map(|m| (m * 255.0) as u8);
            padded = pad_to_square(img, fill);
            img = &padded;
        }
        let resized;
        if self.do_resize {
            let (w, h) = img.dimensions();
            let (short, long) = (w.min(h), w.max(h));
            let new_short = self.shortest_edge;
            let new_long = (new_short as u64 * long as u64 / short as u64) as u32; // int() truncation
            let (nw, nh) = if w <= h {
                (new_short, new_long)
            } else {
                (new_long, new_short)
            };
            resized = resize_bicubic(img, nw, nh)?;
            img = &resized;
        }
        let (w, h) = img.dimensions();
        let (ch, cw) = if self.do_center_crop {
            self.crop
        } else {
            (h, w)
        };
        if ch > h || cw > w {
            bail!("image of {w}x{h} after resizing is smaller than the {cw}x{ch} crop");
        }
        let (top, left) = ((h - ch) / 2, (w - cw) / 2);
        let plane = (ch * cw) as usize;
        let mut out = vec![0f32; 3 * plane];
        for y in 0..ch {
            for x in 0..cw {
                let p = img.get_pixel(left + x, top + y).0;
                for c in 0..3 {
                    let mut v = p[c] as f32;
                    if self.do_rescale {
                        v *= self.rescale_factor;
                    }
                    if self.do_normalize {
                        v = (v - self.image_mean[c]) / self.image_std[c];
                    }
                    out[c * plane + (y * cw + x) as usize] = v;
                }
            }
        }
        Ok(out)
    }
}

/// Bicubic (Catmull-Rom, a = -0.5, antialiased when shrinking) resize, as PIL's `BICUBIC`.
fn resize_bicubic(img: &RgbImage, w: u32, h: u32) -> Result<RgbImage> {
    if img.dimensions() == (w, h) {
        return Ok(img.clone());
    }
    let src = FirImage::from_vec_u8(
        img.width(),
        img.height(),
        img.as_raw().clone(),
        PixelType::U8x3,
    )?;
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(&src, &mut dst, &opts)?;
    RgbImage::from_raw(w, h, dst.into_vec()).context("resize produced a buffer of the wrong size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_size_layouts() {
        let new =
            r#"{"size":{"shortest_edge":336},"crop_size":{"height":336,"width":336},"resample":3}"#;
        let old = r#"{"size":224,"crop_size":224}"#;
        assert_eq!(
            PreprocessConfig::from_json_str(new).unwrap().crop,
            (336, 336)
        );
        let o = PreprocessConfig::from_json_str(old).unwrap();
        assert_eq!((o.shortest_edge, o.crop), (224, (224, 224)));
        assert!(PreprocessConfig::from_json_str(r#"{"resample":2}"#).is_err());
    }

    #[test]
    fn constant_image_normalises_to_known_values() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 128]));
        let cfg = PreprocessConfig::clip(16);
        let t = cfg.apply(&img).unwrap();
        assert_eq!(t.len(), 3 * 16 * 16);
        let expect_r = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0];
        let expect_g = (0.0 - CLIP_MEAN[1]) / CLIP_STD[1];
        assert!((t[0] - expect_r).abs() < 1e-5);
        assert!((t[256] - expect_g).abs() < 1e-5);
    }

    #[test]
    fn pad_to_square_centres_the_image() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([9, 9, 9]));
        let sq = pad_to_square(&img, [1, 2, 3]);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(sq.get_pixel(0, 1).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 3).0, [1, 2, 3]);
    }
}
