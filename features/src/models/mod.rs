//! Vision encoders and projectors, loaded from Hugging Face checkpoints as they are.

mod checkpoint;
mod clip;
mod projector;
mod random;

pub use checkpoint::{Checkpoint, VisionLanguageModel};
pub use clip::{mean_tokens, ClipVisionConfig, ClipVisionModel};
pub use projector::{Projector, ProjectorConfig, ProjectorKind, ProjectorLayout};
pub use random::{write_random_llava, RandomLlavaSpec};

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
}

impl Act {
    /// Applies the activation elementwise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Act::Gelu => x.gelu_erf(),
            Act::GeluTanh => x.gelu(),
            Act::Relu => x.relu(),
        }
    }
}
