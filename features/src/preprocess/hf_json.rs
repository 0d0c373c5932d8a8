//! `preprocessor_config.json`, read as transformers reads it (both `size` layouts, the CLIP and
//! SigLIP processors' defaults) and written back in the same form.

use super::{PreprocessConfig, Resample, ResizeTo, CLIP_MEAN, CLIP_STD};
use anyhow::{bail, Result};
use serde::Deserialize;

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
#[serde(untagged)]
enum Triple {
    One(f64),
    Three([f64; 3]),
}

impl Triple {
    fn get(self) -> [f64; 3] {
        match self {
            Triple::One(v) => [v; 3],
            Triple::Three(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    size: Option<SizeField>,
    crop_size: Option<SizeField>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    do_pad: Option<bool>,
    image_mean: Option<Triple>,
    image_std: Option<Triple>,
    resample: Option<u32>,
    image_processor_type: Option<String>,
}

impl PreprocessConfig {
    /// Parses a `preprocessor_config.json`. Defaults follow `CLIPImageProcessor`, or
    /// `SiglipImageProcessor` when `image_processor_type` names it.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let siglip = raw
            .image_processor_type
            .as_deref()
            .is_some_and(|t| t.starts_with("Siglip"));
        let resample = match raw.resample {
            None | Some(3) => Resample::Bicubic,
            Some(2) => Resample::Bilinear,
            Some(r) => {
                bail!("resample={r} is not supported: bilinear (2) and bicubic (3) are implemented")
            }
        };
        let resize = match raw.size {
            Some(SizeField::Int(s)) if siglip => ResizeTo::Exact(s, s),
            Some(SizeField::Int(s)) => ResizeTo::ShortestEdge(s),
            Some(SizeField::Map {
                shortest_edge: Some(s),
                ..
            }) => ResizeTo::ShortestEdge(s),
            Some(SizeField::Map {
                height: Some(h),
                width: Some(w),
                ..
            }) => ResizeTo::Exact(h, w),
            Some(SizeField::Map { .. }) => {
                bail!("size must have shortest_edge, or height and width")
            }
            None if siglip => ResizeTo::Exact(224, 224),
            None => ResizeTo::ShortestEdge(224),
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
            None => match resize {
                ResizeTo::ShortestEdge(s) => (s, s),
                ResizeTo::Exact(h, w) => (h, w),
            },
        };
        let (mean, std) = if siglip {
            ([0.5; 3], [0.5; 3])
        } else {
            (CLIP_MEAN, CLIP_STD)
        };
        Ok(PreprocessConfig {
            resize,
            resample,
            crop,
            do_resize: raw.do_resize.unwrap_or(true),
            do_center_crop: raw.do_center_crop.unwrap_or(!siglip),
            do_rescale: raw.do_rescale.unwrap_or(true),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: raw.do_normalize.unwrap_or(true),
            image_mean: raw.image_mean.map(Triple::get).unwrap_or(mean),
            image_std: raw.image_std.map(Triple::get).unwrap_or(std),
            pad_to_square: raw.do_pad.unwrap_or(false),
            crop_bottom: 0,
        })
    }

    /// Writes this config as a transformers-compatible `preprocessor_config.json` value.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let size = match self.resize {
            ResizeTo::ShortestEdge(s) => serde_json::json!({"shortest_edge": s}),
            ResizeTo::Exact(h, w) => serde_json::json!({"height": h, "width": w}),
        };
        let resample = match self.resample {
            Resample::Bilinear => 2,
            Resample::Bicubic => 3,
        };
        serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "size": size,
            "crop_size": {"height": self.crop.0, "width": self.crop.1},
            "do_resize": self.do_resize, "do_center_crop": self.do_center_crop,
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "do_convert_rgb": true,
            "image_mean": self.image_mean, "image_std": self.image_std, "resample": resample,
        })
    }
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
        assert_eq!(
            (o.resize, o.crop),
            (ResizeTo::ShortestEdge(224), (224, 224))
        );
        assert!(PreprocessConfig::from_json_str(r#"{"resample":0}"#).is_err());
        let siglip =
            r#"{"image_processor_type":"SiglipImageProcessor","size":{"height":30,"width":30}}"#;
        let s = PreprocessConfig::from_json_str(siglip).unwrap();
        assert_eq!(s.resize, ResizeTo::Exact(30, 30));
        assert_eq!((s.resample, s.do_center_crop), (Resample::Bicubic, false));
    }
}
