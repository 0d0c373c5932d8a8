//! One type over the supported vision encoders, with the token layout feature points need.

use super::clip::resolve_layer;
use super::{ClipVisionModel, Dinov2Model, SiglipVisionModel};
use candle_core::{Result, Tensor};

/// Encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    Clip,
    Siglip,
    Dinov2,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Clip => "CLIP",
            Family::Siglip => "SigLIP",
            Family::Dinov2 => "DINOv2",
        })
    }
}

/// What a feature point needs to know about a tower: depth and token layout
/// (`[CLS?, registers…, patches…]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TowerInfo {
    pub family: Family,
    pub num_hidden_layers: usize,
    pub hidden_size: usize,
    /// Whether token 0 is a CLS token.
    pub has_cls: bool,
    /// Tokens before the first patch token (CLS and registers).
    pub prefix_tokens: usize,
    pub patch_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
}

impl TowerInfo {
    /// Resolves a transformers-style `hidden_states` index (negative counts from the end) to
    /// `0..=num_hidden_layers`.
    pub fn resolve_layer(&self, index: i64) -> anyhow::Result<usize> {
        resolve_layer(self.num_hidden_layers, index)
    }
}

/// A loaded vision encoder.
pub enum VisionTower {
    Clip(ClipVisionModel),
    Siglip(SiglipVisionModel),
    Dinov2(Dinov2Model),
}

impl From<ClipVisionModel> for VisionTower {
    fn from(m: ClipVisionModel) -> Self {
        VisionTower::Clip(m)
    }
}
impl From<SiglipVisionModel> for VisionTower {
    fn from(m: SiglipVisionModel) -> Self {
        VisionTower::Siglip(m)
    }
}
impl From<Dinov2Model> for VisionTower {
    fn from(m: Dinov2Model) -> Self {
        VisionTower::Dinov2(m)
    }
}

impl VisionTower {
    /// The residual stream's dtype: the model's, or f32 around 16-bit layers
    /// ([`super::fused::residual_dtype`]).
    pub fn stream_dtype(&self) -> candle_core::DType {
        match self {
            VisionTower::Clip(m) => m.stream_dtype(),
            VisionTower::Siglip(m) => m.stream_dtype(),
            VisionTower::Dinov2(m) => m.stream_dtype(),
        }
    }

    /// Depth and token layout.
    pub fn config(&self) -> TowerInfo {
        match self {
            VisionTower::Clip(m) => TowerInfo {
                family: Family::Clip,
                num_hidden_layers: m.config().num_hidden_layers,
                hidden_size: m.config().hidden_size,
                has_cls: true,
                prefix_tokens: 1,
                patch_size: m.config().patch_size,
                intermediate_size: m.config().intermediate_size,
                num_attention_heads: m.config().num_attention_heads,
            },
            VisionTower::Siglip(m) => TowerInfo {
                family: Family::Siglip,
                num_hidden_layers: m.config().num_hidden_layers,
                hidden_size: m.config().hidden_size,
                has_cls: false,
                prefix_tokens: 0,
                patch_size: m.config().patch_size,
                intermediate_size: m.config().intermediate_size,
                num_attention_heads: m.config().num_attention_heads,
            },
            VisionTower::Dinov2(m) => TowerInfo {
                family: Family::Dinov2,
                num_hidden_layers: m.config().num_hidden_layers,
                hidden_size: m.config().hidden_size,
                has_cls: true,
                prefix_tokens: 1 + m.config().num_register_tokens,
                patch_size: m.config().patch_size,
                intermediate_size: (m.config().hidden_size as f64 * m.config().mlp_ratio) as usize,
                num_attention_heads: m.config().num_attention_heads,
            },
        }
    }

    /// Resolves a transformers-style `hidden_states` index.
    pub fn resolve_layer(&self, index: i64) -> anyhow::Result<usize> {
        self.config().resolve_layer(index)
    }

    /// Runs the encoder on normalised pixels [B, C, H, W] and returns `hidden_states[i]` for each
    /// requested (resolved) index, in request order, each [B, prefix + T, D]. Only the layers up
    /// to the deepest request run.
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        match self {
            VisionTower::Clip(m) => m.hidden_states(pixels, wanted),
            VisionTower::Siglip(m) => m.hidden_states(pixels, wanted),
            VisionTower::Dinov2(m) => m.hidden_states(pixels, wanted),
        }
    }
}
