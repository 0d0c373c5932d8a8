//! Vision encoders and projectors, loaded from Hugging Face checkpoints as they are.

pub mod add_norm;
mod attention;
mod checkpoint;
mod clip;
mod convert;
mod dinov2;
pub mod fused;
#[cfg(feature = "cuda")]
mod fused_cuda;
mod fused_ops;
pub mod gemm_epilogue;
mod generate;
pub mod language;
mod layers;
mod linear;
mod llama;
mod llama_config;
#[cfg(feature = "cuda")]
mod lt_cuda;
mod norm;
mod patch_embed;
pub mod planes;
mod projector;
mod prompt;
mod random;
mod read;
mod siglip;
pub mod stages;
mod token_mean;
mod tower;
mod vlm;

pub use checkpoint::Checkpoint;
pub use clip::{resolve_layer, ClipVisionConfig, ClipVisionModel};
pub use dinov2::{Dinov2Config, Dinov2Model};
pub use generate::{answer_fingerprint, Generator};
pub use language::{language_fingerprints, text_config, LanguageModel};
pub use llama::{LlamaConfig, LlamaModel};
pub use patch_embed::PatchEmbedding;
pub use projector::{Projector, ProjectorConfig, ProjectorKind, ProjectorLayout};
pub use prompt::{Prompt, DEFAULT_PROMPT, IMAGE_PLACEHOLDER};
pub use random::{
    clip_tower_tensors, mlp2x_projector_tensors, write_random_llava, Fill, RandomLlavaSpec,
    RandomLlmSpec, TensorSpec,
};
pub use siglip::{SiglipVisionConfig, SiglipVisionModel};
pub use token_mean::{mean_tokens, mean_tokens_kernel};
pub use tower::{Family, TowerInfo, VisionTower};
pub use vlm::VisionLanguageModel;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Activation functions by their transformers names. Note that transformers' `gelu` is the exact
/// (erf) GELU, unlike candle-nn's `Activation::Gelu` alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "gelu_pytorch_tanh", alias = "gelu_new")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl Act {
    /// Applies the activation elementwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Act::Gelu => x.gelu_erf(),
            Act::GeluTanh => x.gelu(),
            Act::Relu => x.relu(),
            Act::Silu => x.silu(),
        }
    }
}
