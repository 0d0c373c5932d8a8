//! The configuration of LLaVA's LLaMA language model (transformers' `LlamaConfig`), with
//! transformers' defaults for what llava-hf configs leave out.

use super::Act;
use candle_core::Result;
use serde::{Deserialize, Serialize};

/// `LlamaConfig` fields the forward pass uses, with transformers' defaults (llava-hf configs
/// leave most of them out: `llava-1.5-7b-hf`'s `text_config` names only a few).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Grouped-query attention; `None` means one KV head per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "d_act")]
    pub hidden_act: Act,
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    /// Older configs' RoPE base; transformers 5 writes it into `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Only unscaled RoPE is supported; anything else is refused at load time.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5: `{rope_theta, rope_type}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
}

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_intermediate() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_act() -> Act {
    Act::Silu
}
fn d_eps() -> f64 {
    1e-6
}
fn d_positions() -> usize {
    2048
}

impl LlamaConfig {
    /// Width of one attention head (`head_dim`, else hidden size / heads).
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// RoPE base: `rope_parameters.rope_theta`, else `rope_theta`, else transformers' 10000.
    pub(super) fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(serde_json::Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// Refuses RoPE variants other than the plain one (scaled, YaRN, Llama-3, ...).
    pub(super) fn check_rope(&self) -> Result<()> {
        for s in [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
        {
            if s.is_null() {
                continue;
            }
            let kind = s
                .get("rope_type")
                .or(s.get("type"))
                .and_then(|t| t.as_str());
            if !matches!(kind, Some("default") | None) || s.get("factor").is_some() {
                candle_core::bail!(
                    "RoPE {s} is not supported (only unscaled RoPE, as in LLaVA-1.5's Vicuna)"
                );
            }
        }
        Ok(())
    }

    /// Key/value heads (grouped-query attention), the query heads when not given.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Resolves a transformers-style `hidden_states` index (negative counts from the end).
    pub fn resolve_layer(&self, index: i64) -> anyhow::Result<usize> {
        super::resolve_layer(self.num_hidden_layers, index)
    }
}
