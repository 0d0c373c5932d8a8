//! Seeded random-weight checkpoints in the llava-hf layout (`config.json`,
//! `preprocessor_config.json`, `model.safetensors`), loaded back through the same loader as real
//! checkpoints. The demo uses one; random weights demonstrate the pipeline, not a model.

use super::ClipVisionConfig;
use crate::preprocess::PreprocessConfig;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// Shape of the random LLaVA-style model.
#[derive(Debug, Clone)]
pub struct RandomLlavaSpec {
    pub vision: ClipVisionConfig,
    /// The "LLM" embedding width the projector maps to.
    pub llm_hidden: usize,
    pub seed: u64,
}

impl Default for RandomLlavaSpec {
    fn default() -> Self {
        RandomLlavaSpec {
            vision: ClipVisionConfig {
                hidden_size: 256,
                intermediate_size: 1024,
                num_hidden_layers: 4,
                num_attention_heads: 8,
                num_channels: 3,
                image_size: 64,
                patch_size: 8,
                hidden_act: super::Act::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            llm_hidden: 512,
            seed: 0,
        }
    }
}

struct Init {
    rng: ChaCha8Rng,
    tensors: HashMap<String, Tensor>,
}

impl Init {
    fn normal(&mut self, name: &str, shape: &[usize], std: f32) -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller: deterministic across machines for a given seed.
                let u1: f32 = self.rng.gen_range(f32::EPSILON..1.0);
                let u2: f32 = self.rng.gen();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        self.tensors
            .insert(name.into(), Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    }
    fn constant(&mut self, name: &str, len: usize, v: f32) -> Result<()> {
        self.tensors
            .insert(name.into(), Tensor::full(v, len, &Device::Cpu)?);
        Ok(())
    }
    fn linear(&mut self, name: &str, din: usize, dout: usize) -> Result<()> {
        self.normal(
            &format!("{name}.weight"),
            &[dout, din],
            (din as f32).powf(-0.5),
        )?;
        self.normal(&format!("{name}.bias"), &[dout], 0.02)
    }
    fn layer_norm(&mut self, name: &str, d: usize) -> Result<()> {
        self.constant(&format!("{name}.weight"), d, 1.0)?;
        self.constant(&format!("{name}.bias"), d, 0.0)
    }
}

/// Writes a random llava-hf checkpoint to `dir`.
pub fn write_random_llava(dir: &Path, spec: &RandomLlavaSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let v = &spec.vision;
    let d = v.hidden_size;
    let mut init = Init {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        tensors: HashMap::new(),
    };
    let t = "vision_tower.vision_model";
    init.normal(
        &format!("{t}.embeddings.class_embedding"),
        &[d],
        (d as f32).powf(-0.5),
    )?;
    let fan_in = v.num_channels * v.patch_size * v.patch_size;
    init.normal(
        &format!("{t}.embeddings.patch_embedding.weight"),
        &[d, v.num_channels, v.patch_size, v.patch_size],
        (fan_in as f32).powf(-0.5),
    )?;
    init.normal(
        &format!("{t}.embeddings.position_embedding.weight"),
        &[v.num_patches() + 1, d],
        0.5,
    )?;
    init.layer_norm(&format!("{t}.pre_layrnorm"), d)?;
    for i in 0..v.num_hidden_layers {
        let l = format!("{t}.encoder.layers.{i}");
        init.layer_norm(&format!("{l}.layer_norm1"), d)?;
        init.layer_norm(&format!("{l}.layer_norm2"), d)?;
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            init.linear(&format!("{l}.self_attn.{p}"), d, d)?;
        }
        init.linear(&format!("{l}.mlp.fc1"), d, v.intermediate_size)?;
        init.linear(&format!("{l}.mlp.fc2"), v.intermediate_size, d)?;
    }
    init.layer_norm(&format!("{t}.post_layernorm"), d)?;
    init.linear("multi_modal_projector.linear_1", d, spec.llm_hidden)?;
    init.linear(
        "multi_modal_projector.linear_2",
        spec.llm_hidden,
        spec.llm_hidden,
    )?;
    candle_core::safetensors::save(&init.tensors, dir.join("model.safetensors"))?;

    let mut vision = serde_json::to_value(v)?;
    vision["model_type"] = "clip_vision_model".into();
    let config = serde_json::json!({
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "vision_config": vision,
        "text_config": {"model_type": "llama", "hidden_size": spec.llm_hidden},
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "image_aspect_ratio": "pad",
        "gapprobe_note": format!("random weights (seed {}) written by gapprobe: they demonstrate the pipeline, not a model", spec.seed),
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let pp = PreprocessConfig::clip(v.image_size as u32).to_hf_json();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&pp)?,
    )?;
    Ok(())
}
