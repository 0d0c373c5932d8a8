//! Image preprocessing as transformers' slow (PIL-backend) image processors do it, driven by a
//! checkpoint's `preprocessor_config.json`: optional pad-to-square with the mean colour (LLaVA-1.5's
//! `image_aspect_ratio: pad`, `LlavaImageProcessor`'s `do_pad`), resize (shortest edge as
//! `CLIPImageProcessor`/`BitImageProcessor`, or to a fixed height × width as
//! `SiglipImageProcessor`) with PIL's own resampling (bit-exact 8-bit fixed point), center crop,
//! rescale, normalize.

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;

pub use crate::resample::{pil_resize, pil_resize_window, Window};

mod hf_json;

/// How the image is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeTo {
    /// Shorter side to this length, aspect kept (`size: {"shortest_edge": N}` or `size: N`).
    ShortestEdge(u32),
    /// Exactly this (height, width), aspect not kept (`size: {"height": H, "width": W}`).
    Exact(u32, u32),
}

/// PIL resampling filters by their PIL numbers (`resample` in `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resample {
    /// PIL `BILINEAR` (2).
    Bilinear,
    /// PIL `BICUBIC` (3), a = −0.5.
    Bicubic,
}

/// Preprocessing parameters (the subset of `preprocessor_config.json` these models use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    pub resize: ResizeTo,
    pub resample: Resample,
    /// Center crop (height, width).
    pub crop: (u32, u32),
    pub do_resize: bool,
    pub do_center_crop: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// Pad to a square filled with the mean colour (`int(m * 255)`) before everything else.
    pub pad_to_square: bool,
    /// Rows removed from the bottom of every image first (a dataset property, e.g. FGVC-Aircraft's
    /// 20-pixel copyright banner). Omitted from the serialised form when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crop_bottom: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// OpenAI CLIP's normalisation constants (transformers' defaults for CLIPImageProcessor).
pub const CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// ImageNet normalisation (DINOv2's `BitImageProcessor`).
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl PreprocessConfig {
    /// CLIP defaults at a given resolution.
    pub fn clip(size: u32) -> Self {
        PreprocessConfig {
            resize: ResizeTo::ShortestEdge(size),
            resample: Resample::Bicubic,
            crop: (size, size),
            do_resize: true,
            do_center_crop: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            pad_to_square: false,
            crop_bottom: 0,
        }
    }

    /// SigLIP defaults (`SiglipImageProcessor`): bicubic resize to size × size, mean = std = 0.5.
    pub fn siglip(size: u32) -> Self {
        PreprocessConfig {
            resize: ResizeTo::Exact(size, size),
            crop: (size, size),
            do_center_crop: false,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ..Self::clip(size)
        }
    }

    /// DINOv2 defaults (`BitImageProcessor`): shortest edge 256/224 × crop, bicubic, ImageNet stats.
    pub fn dinov2(crop: u32) -> Self {
        PreprocessConfig {
            resize: ResizeTo::ShortestEdge(crop * 256 / 224),
            image_mean: IMAGENET_MEAN,
            image_std: IMAGENET_STD,
            ..Self::clip(crop)
        }
    }

    /// Output (height, width) of [`PreprocessConfig::apply`] (for images large enough to crop).
    pub fn output_size(&self) -> (u32, u32) {
        match (self.do_center_crop, self.resize) {
            (true, _) => self.crop,
            (false, ResizeTo::Exact(h, w)) if self.do_resize => (h, w),
            (false, ResizeTo::ShortestEdge(s)) if self.do_resize => (s, s),
            _ => self.crop,
        }
    }

    /// The pad colour: `tuple(int(x * 255) for x in image_mean)`, as LLaVA's `expand2square`.
    pub fn pad_fill(&self) -> [u8; 3] {
        self.image_mean.map(|m| (m * 255.0).clamp(0.0, 255.0) as u8)
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
    Ok(img.into_rgb8())
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
    /// The image after padding and resizing (before crop), as 8-bit RGB.
    pub fn resized(&self, img: &RgbImage) -> RgbImage {
        let img = self.padded(img);
        match self.resize_size(&img) {
            Some((w, h)) => pil_resize(&img, w, h, self.resample),
            None => img.into_owned(),
        }
    }

    /// The image after the bottom crop and padding (borrowed when neither applies).
    fn padded<'a>(&self, img: &'a RgbImage) -> Cow<'a, RgbImage> {
        let img = if self.crop_bottom > 0 && img.height() > self.crop_bottom {
            let (w, h) = img.dimensions();
            Cow::Owned(image::imageops::crop_imm(img, 0, 0, w, h - self.crop_bottom).to_image())
        } else {
            Cow::Borrowed(img)
        };
        if self.pad_to_square && img.width() != img.height() {
            Cow::Owned(pad_to_square(&img, self.pad_fill()))
        } else {
            img
        }
    }

    /// The (width, height) `img` is resized to, or `None` without a resize.
    fn resize_size(&self, img: &RgbImage) -> Option<(u32, u32)> {
        if !self.do_resize {
            return None;
        }
        let (w, h) = img.dimensions();
        Some(match self.resize {
            ResizeTo::Exact(th, tw) => (tw, th),
            ResizeTo::ShortestEdge(s) => {
                // transformers' get_resize_output_image_size: int(size * long / short)
                let (short, long) = (w.min(h), w.max(h));
                let new_long = (s as f64 * long as f64 / short as f64) as u32;
                if w <= h {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        })
    }

    /// Turns an RGB image into a normalised CHW f32 tensor of [`PreprocessConfig::output_size`].
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let levels = self.level_table();
        let planes = self.apply_u8(img)?;
        let plane = planes.len() / 3;
        Ok(planes
            .iter()
            .enumerate()
            .map(|(i, &v)| levels[(i / plane) * 256 + v as usize])
            .collect())
    }

    /// The padded, resized and cropped image as CHW 8-bit planes of
    /// [`PreprocessConfig::output_size`], before rescaling and normalisation: a quarter of the
    /// f32 bytes to move to the device, where [`PreprocessConfig::level_table`] finishes the job.
    pub fn apply_u8(&self, img: &RgbImage) -> Result<Vec<u8>> {
        let img = self.padded(img);
        let (w, h) = self.resize_size(&img).unwrap_or(img.dimensions());
        let (ch, cw) = if self.do_center_crop {
            self.crop
        } else {
            (h, w)
        };
        if ch > h || cw > w {
            bail!("image of {w}x{h} after resizing is smaller than the {cw}x{ch} crop");
        }
        // Only the crop is resized: the same pixels as resizing all and cropping (without a
        // resize, the size is the image's own and the window is copied).
        let window = Window {
            left: (w - cw) / 2,
            top: (h - ch) / 2,
            width: cw,
            height: ch,
        };
        let crop = pil_resize_window(&img, (w, h), self.resample, window);
        let plane = (ch * cw) as usize;
        let mut out = vec![0u8; 3 * plane];
        let (r, gb) = out.split_at_mut(plane);
        let (g, b) = gb.split_at_mut(plane);
        for (i, p) in crop.as_raw().chunks_exact(3).enumerate() {
            r[i] = p[0];
            g[i] = p[1];
            b[i] = p[2];
        }
        Ok(out)
    }

    /// The model input for each 8-bit level of each channel, at `[channel * 256 + level]`:
    /// rescaled in f64 then cast to f32 and normalised in f32, as transformers does. Pixels are a
    /// function of (channel, level) only, so a lookup is exact.
    pub fn level_table(&self) -> Vec<f32> {
        let mean = self.image_mean.map(|m| m as f32);
        let std = self.image_std.map(|s| s as f32);
        let mut t = Vec::with_capacity(3 * 256);
        for c in 0..3 {
            for level in 0..256u32 {
                let mut v = level as f32;
                if self.do_rescale {
                    v = (level as f64 * self.rescale_factor) as f32;
                }
                if self.do_normalize {
                    v = (v - mean[c]) / std[c];
                }
                t.push(v);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_bottom_removes_the_banner_before_anything_else() {
        // A 12x16 image whose bottom 4 rows are a white banner: after cropping, a 12x12 black square.
        let mut img = RgbImage::from_pixel(12, 16, image::Rgb([0, 0, 0]));
        for y in 12..16 {
            for x in 0..12 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let mut cfg = PreprocessConfig::clip(12);
        cfg.crop_bottom = 4;
        assert_eq!(cfg.resized(&img).dimensions(), (12, 12));
        let t = cfg.apply(&img).unwrap();
        let black = (0.0 - CLIP_MEAN[0] as f32) / CLIP_STD[0] as f32;
        assert!(
            t[..144].iter().all(|v| (v - black).abs() < 1e-5),
            "banner pixels leaked into the crop"
        );
        // 0 keeps the serialised form (and so cache keys) unchanged.
        assert!(!serde_json::to_string(&PreprocessConfig::clip(12))
            .unwrap()
            .contains("crop_bottom"));
    }

    #[test]
    fn constant_image_normalises_to_known_values() {
        let img = RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 128]));
        let cfg = PreprocessConfig::clip(16);
        let t = cfg.apply(&img).unwrap();
        assert_eq!(t.len(), 3 * 16 * 16);
        let expect_r = ((1.0 - CLIP_MEAN[0]) / CLIP_STD[0]) as f32;
        let expect_g = ((0.0 - CLIP_MEAN[1]) / CLIP_STD[1]) as f32;
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
