//! SigLIP vision transformer (transformers' `SiglipVisionModel`): patch embedding with bias, no
//! CLS token, learned position embeddings, CLIP-style pre-norm layers, no pre-layernorm. As for
//! CLIP, `hidden_states[0]` is the embedding output and `hidden_states[i]` the output of layer `i`
//! (before `post_layernorm`).

use super::layers::{run_layers, EncoderLayer};
use super::patch_embed::PatchEmbedding;
use super::Act;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// `SiglipVisionConfig` fields the forward pass uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiglipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Act,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> Act {
    Act::GeluTanh
}
fn default_eps() -> f64 {
    1e-6
}

impl SiglipVisionConfig {
    /// Number of patch tokens (SigLIP has no CLS token).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// The SigLIP vision tower, loaded up to layer `max_layer`.
pub struct SiglipVisionModel {
    patch: PatchEmbedding,
    position: Tensor,
    layers: Vec<EncoderLayer>,
    cfg: SiglipVisionConfig,
    /// Add the position table with the fused kernel (see [`super::fused::add_table`]).
    fused: bool,
    /// The residual stream's dtype ([`super::fused::residual_dtype`]).
    stream: DType,
}

impl SiglipVisionModel {
    /// Builds the tower from `vb` rooted at the `vision_model` prefix, loading layers `1..=max_layer`.
    pub fn new(vb: VarBuilder, cfg: &SiglipVisionConfig, max_layer: usize) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let patch = PatchEmbedding::new(
            emb.pp("patch_embedding"),
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            true,
        )?;
        let position = emb.get(
            (cfg.num_patches(), cfg.hidden_size),
            "position_embedding.weight",
        )?;
        let layers = EncoderLayer::load_all(
            &vb,
            max_layer.min(cfg.num_hidden_layers),
            (
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_attention_heads,
            ),
            cfg.hidden_act,
            cfg.layer_norm_eps,
        )?;
        Ok(Self {
            patch,
            position,
            layers,
            cfg: cfg.clone(),
            fused: super::fused::enabled_for(vb.device()),
            stream: super::fused::residual_dtype(vb.device(), vb.dtype()),
        })
    }

    /// The residual stream's dtype.
    pub fn stream_dtype(&self) -> DType {
        self.stream
    }

    /// The configuration this tower was built from.
    pub fn config(&self) -> &SiglipVisionConfig {
        &self.cfg
    }

    /// `hidden_states[i]` for each wanted (resolved) index, each [B, T, D] (patch tokens only).
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let (x, _) = self.patch.forward(pixels)?;
        let x = super::fused::add_table(&x, &self.position, self.fused)?.to_dtype(self.stream)?;
        run_layers(x, &self.layers, wanted)
    }
}
