//! CLIP vision transformer (transformers' `CLIPVisionModel`), with hidden-state selection that
//! follows transformers: `hidden_states[0]` is the embedding output after `pre_layrnorm`,
//! `hidden_states[i]` the output of encoder layer `i`, so `hidden_states[-2]` is the output of
//! the second-to-last layer. Only the layers a request needs are run.

use super::fused;
use super::layers::{run_layers, EncoderLayer};
use super::norm::{layer_norm, FusedLayerNorm as LayerNorm};
use super::patch_embed::PatchEmbedding;
use super::stages::mark;
use super::Act;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// `CLIPVisionConfig` fields the forward pass uses (names as in `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
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
    Act::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// Number of patch tokens (without CLS).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Resolves a transformers-style hidden-state index (negative counts from the end) to
    /// `0..=num_hidden_layers`.
    pub fn resolve_layer(&self, index: i64) -> anyhow::Result<usize> {
        resolve_layer(self.num_hidden_layers, index)
    }
}

/// Resolves a transformers-style `hidden_states` index for an encoder of `layers` layers.
pub fn resolve_layer(layers: usize, index: i64) -> anyhow::Result<usize> {
    {
        let n = layers as i64;
        let r = if index < 0 { n + 1 + index } else { index };
        if !(0..=n).contains(&r) {
            anyhow::bail!(
                "layer index {index} is out of range: this encoder has hidden states 0..={n} (or -{}..=-1)",
                n + 1
            );
        }
        Ok(r as usize)
    }
}

struct Embeddings {
    patch: PatchEmbedding,
    class: Tensor,
    position: Tensor,
    /// Add the position table with the fused kernel (candle's broadcast add is slow on CUDA).
    fused: bool,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let patch = PatchEmbedding::new(
            vb.pp("patch_embedding"),
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            false,
        )?;
        let class = vb.get(cfg.hidden_size, "class_embedding")?;
        let position = vb.get(
            (cfg.num_patches() + 1, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        Ok(Self {
            patch,
            class,
            position,
            fused: fused::enabled_for(vb.device()),
        })
    }

    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let (patches, _) = self.patch.forward(pixels)?; // [B, T, D]
        mark(&patches, "embeddings: patch conv")?;
        let d = patches.dim(2)?;
        let cls = self
            .class
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .to_dtype(patches.dtype())?;
        let x = fused::add_table(
            &Tensor::cat(&[&cls, &patches], 1)?,
            &self.position,
            self.fused,
        )?;
        mark(&x, "embeddings: class + positions")?;
        Ok(x)
    }
}

/// The CLIP vision tower. Loads only the layers below `max_layer`, so a layer −2 request never
/// reads the last layer's weights.
pub struct ClipVisionModel {
    embeddings: Embeddings,
    /// In the residual stream's dtype ([`super::fused::residual_dtype`]): the stream starts here.
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    cfg: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Builds the tower from `vb` rooted at the `vision_model` prefix, loading layers `1..=max_layer`.
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig, max_layer: usize) -> Result<Self> {
        let embeddings = Embeddings::new(vb.pp("embeddings"), cfg)?;
        let pre_layernorm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?
            .to_dtype(fused::residual_dtype(vb.device(), vb.dtype()))?;
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
            embeddings,
            pre_layernorm,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// The residual stream's dtype (where its pre-LayerNorm writes).
    pub fn stream_dtype(&self) -> candle_core::DType {
        self.pre_layernorm.dtype()
    }

    /// The configuration this tower was built from.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Runs the tower on normalised pixels [B, C, H, W] and returns `hidden_states[i]` for each
    /// requested (resolved, non-negative) index, in request order. Each is [B, 1 + T, D].
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        // The embeddings widened to the stream's dtype first, so its first value is not rounded.
        let stream = self.pre_layernorm.dtype();
        let x = self
            .pre_layernorm
            .forward(&self.embeddings.forward(pixels)?.to_dtype(stream)?)?;
        mark(&x, "embeddings: widen + pre-norm")?;
        run_layers(x, &self.layers, wanted)
    }
}
