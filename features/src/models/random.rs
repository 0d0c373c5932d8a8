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

/// How one tensor of a random checkpoint is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    Ones,
    Zeros,
}

/// One tensor of a random checkpoint: name (relative to the tower or projector root), shape, fill.
pub type TensorSpec = (String, Vec<usize>, Fill);

fn linear_specs(out: &mut Vec<TensorSpec>, name: &str, din: usize, dout: usize) {
    out.push((
        format!("{name}.weight"),
        vec![dout, din],
        Fill::Normal((din as f32).powf(-0.5)),
    ));
    out.push((format!("{name}.bias"), vec![dout], Fill::Normal(0.02)));
}

fn layer_norm_specs(out: &mut Vec<TensorSpec>, name: &str, d: usize) {
    out.push((format!("{name}.weight"), vec![d], Fill::Ones));
    out.push((format!("{name}.bias"), vec![d], Fill::Zeros));
}

/// The tensors of a CLIP vision tower (names under `vision_model.`) with its first `layers`
/// encoder layers; `post_layernorm` only when every layer is present. Normal stds are fan-in
/// scaled so activations stay O(1) through random layers.
pub fn clip_tower_tensors(v: &ClipVisionConfig, layers: usize) -> Vec<TensorSpec> {
    let d = v.hidden_size;
    let fan_in = v.num_channels * v.patch_size * v.patch_size;
    let mut out = vec![
        (
            "embeddings.class_embedding".into(),
            vec![d],
            Fill::Normal((d as f32).powf(-0.5)),
        ),
        (
            "embeddings.patch_embedding.weight".into(),
            vec![d, v.num_channels, v.patch_size, v.patch_size],
            Fill::Normal((fan_in as f32).powf(-0.5)),
        ),
        (
            "embeddings.position_embedding.weight".into(),
            vec![v.num_patches() + 1, d],
            Fill::Normal(0.5),
        ),
    ];
    layer_norm_specs(&mut out, "pre_layrnorm", d);
    for i in 0..layers {
        let l = format!("encoder.layers.{i}");
        layer_norm_specs(&mut out, &format!("{l}.layer_norm1"), d);
        layer_norm_specs(&mut out, &format!("{l}.layer_norm2"), d);
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear_specs(&mut out, &format!("{l}.self_attn.{p}"), d, d);
        }
        linear_specs(&mut out, &format!("{l}.mlp.fc1"), d, v.intermediate_size);
        linear_specs(&mut out, &format!("{l}.mlp.fc2"), v.intermediate_size, d);
    }
    if layers == v.num_hidden_layers {
        layer_norm_specs(&mut out, "post_layernorm", d);
    }
    out
}

/// The tensors of a LLaVA-1.5 `mlp2x_gelu` projector (llava-hf names `linear_1`, `linear_2`):
/// `d_in → hidden → out`.
pub fn mlp2x_projector_tensors(d_in: usize, hidden: usize, out_dim: usize) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    linear_specs(&mut out, "linear_1", d_in, hidden);
    linear_specs(&mut out, "linear_2", hidden, out_dim);
    out
}

/// Seeded Box-Muller normals: the same numbers on every machine for a given seed.
fn seeded_tensor(rng: &mut ChaCha8Rng, shape: &[usize], fill: Fill) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Ok(match fill {
        Fill::Ones => Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu)?,
        Fill::Zeros => Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu)?,
        Fill::Normal(std) => {
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.gen();
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                })
                .collect();
            Tensor::from_vec(data, shape, &Device::Cpu)?
        }
    })
}

/// Writes a random llava-hf checkpoint to `dir`.
pub fn write_random_llava(dir: &Path, spec: &RandomLlavaSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let v = &spec.vision;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let tower = clip_tower_tensors(v, v.num_hidden_layers)
        .into_iter()
        .map(|(n, s, f)| (format!("vision_tower.vision_model.{n}"), s, f));
    let projector = mlp2x_projector_tensors(v.hidden_size, spec.llm_hidden, spec.llm_hidden)
        .into_iter()
        .map(|(n, s, f)| (format!("multi_modal_projector.{n}"), s, f));
    let mut tensors = HashMap::new();
    // In order: the stream of normals decides the weights.
    for (name, shape, fill) in tower.chain(projector) {
        tensors.insert(name, seeded_tensor(&mut rng, &shape, fill)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;

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
