//! A loaded vision tower + projector: only the tensors a request needs are read, and every
//! tensor read is fingerprinted.

use super::checkpoint::{tensor_names, tower_prefix, vision_config_value};
use super::{
    Act, Checkpoint, ClipVisionConfig, ClipVisionModel, Dinov2Config, Dinov2Model, Family,
    LanguageModel, Projector, ProjectorConfig, ProjectorKind, ProjectorLayout, SiglipVisionConfig,
    SiglipVisionModel, VisionTower,
};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// A vision tower and (when the checkpoint has one) its projector, ready to run.
pub struct VisionLanguageModel {
    pub vision: VisionTower,
    pub projector: Option<Projector>,
    /// `hidden_states` index (resolved) that feeds the projector.
    pub projector_layer: usize,
    /// Whether the projector sees only patch tokens (`default`) or CLS too (`full`).
    pub projector_drops_cls: bool,
    /// SHA-256 over the name, dtype, shape and bytes of every tensor this model reads.
    pub weights_fingerprint: String,
    /// SHA-256 of the canonical `config.json` (and the tower's, for a separate tower).
    pub config_hash: String,
    /// The language model, loaded only for `llm.*` feature points ([`LanguageModel::load`]).
    pub language: Option<LanguageModel>,
}

impl VisionLanguageModel {
    /// Loads the vision tower up to hidden state `max_layer` (at least what the projector needs;
    /// values past the last layer load all layers) and the projector, reading only those tensors.
    pub fn load(ck: &Checkpoint, max_layer: usize, device: &Device, dtype: DType) -> Result<Self> {
        let tck = ck.tower_checkpoint();
        let tower_names = tensor_names(&tck.weight_files)?;
        let (tower_prefix, family) = tower_prefix(&tower_names).with_context(|| {
            format!(
                "model '{}': no vision tower (CLIP/SigLIP embeddings.patch_embedding.weight or DINOv2 embeddings.patch_embeddings.projection.weight) in its weights",
                tck.id
            )
        })?;
        let vjson = vision_config_value(&tck.config).clone();
        let bad_cfg = |e: serde_json::Error| {
            anyhow::anyhow!(
                "model '{}': config.json has no usable {family} vision config: {e}",
                tck.id
            )
        };
        let (n_layers, hidden) = (
            vjson["num_hidden_layers"].as_u64().unwrap_or(0) as usize,
            vjson["hidden_size"].as_u64().unwrap_or(0) as usize,
        );
        let layers = |l: i64| super::resolve_layer(n_layers, l);
        let names = if tck.id == ck.id && ck.tower.is_none() {
            tower_names.clone()
        } else {
            tensor_names(&ck.weight_files)?
        };
        let proj = projector_config(&ck.config, &names, hidden)?;
        let (projector_layer, projector_drops_cls) = match &proj {
            Some(_) => {
                let layer = ck
                    .config
                    .get("vision_feature_layer")
                    .or(ck.config.get("mm_vision_select_layer"));
                if layer.is_some_and(Value::is_array) {
                    bail!("model '{}': a list of vision_feature_layer (concatenated layers) is not supported", ck.id);
                }
                let layer = layer.and_then(Value::as_i64).unwrap_or(-2);
                let strategy = ck
                    .config
                    .get("vision_feature_select_strategy")
                    .or(ck.config.get("mm_vision_select_feature"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let drops = match strategy {
                    "default" | "patch" => true,
                    "full" | "cls_patch" => false,
                    other => bail!(
                        "model '{}': unknown vision feature select strategy '{other}'",
                        ck.id
                    ),
                };
                (layers(layer)?, drops)
            }
            None => (0, true),
        };
        let top = max_layer
            .max(if proj.is_some() { projector_layer } else { 0 })
            .min(n_layers);
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let tvb = unsafe { VarBuilder::from_mmaped_safetensors(&tck.weight_files, dtype, device)? };
        let tvb = if tower_prefix.is_empty() {
            tvb
        } else {
            tvb.pp(tower_prefix.trim_end_matches('.'))
        };
        let vision: VisionTower = match family {
            Family::Clip => {
                let c: ClipVisionConfig = serde_json::from_value(vjson).map_err(bad_cfg)?;
                ClipVisionModel::new(tvb, &c, top)?.into()
            }
            Family::Siglip => {
                let c: SiglipVisionConfig = serde_json::from_value(vjson).map_err(bad_cfg)?;
                SiglipVisionModel::new(tvb, &c, top)?.into()
            }
            Family::Dinov2 => {
                let c: Dinov2Config = serde_json::from_value(vjson).map_err(bad_cfg)?;
                Dinov2Model::new(tvb, &c, top)?.into()
            }
        };
        let projector = match &proj {
            Some((prefix, pc)) => {
                // SAFETY: as above.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&ck.weight_files, dtype, device)?
                };
                Some(Projector::new(vb.pp(prefix), pc).with_context(|| {
                    format!("model '{}': loading the projector at {prefix}", ck.id)
                })?)
            }
            None => None,
        };
        let used_tower: Vec<&String> = tower_names
            .iter()
            .filter(|n| {
                n.strip_prefix(tower_prefix.as_str())
                    .is_some_and(|rest| tensor_used(rest, top))
            })
            .collect();
        let mut fp = fingerprint(&tck.weight_files, &used_tower)?;
        if let Some((p, _)) = &proj {
            let used_proj: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with(&format!("{p}.")))
                .collect();
            let pf = fingerprint(&ck.weight_files, &used_proj)?;
            if ck.tower.is_some() {
                fp = hex::encode(Sha256::digest(format!("{fp}{pf}")));
            } else {
                let mut all = used_tower.clone();
                all.extend(used_proj);
                fp = fingerprint(&ck.weight_files, &all)?;
            }
        }
        let mut config_bytes = serde_json::to_vec(&ck.config)?;
        if let Some(t) = &ck.tower {
            config_bytes.extend(serde_json::to_vec(&t.config)?);
        }
        Ok(Self {
            vision,
            projector,
            projector_layer,
            projector_drops_cls,
            weights_fingerprint: fp,
            config_hash: hex::encode(Sha256::digest(config_bytes)),
            language: None,
        })
    }
}

/// Whether a tower tensor (name after the tower prefix) is read when running `top` layers.
fn tensor_used(rest: &str, top: usize) -> bool {
    let rest = rest.trim_start_matches('.');
    if let Some(layer) = rest
        .strip_prefix("encoder.layers.")
        .or(rest.strip_prefix("encoder.layer."))
    {
        return layer_number(layer) < top;
    }
    (rest.starts_with("embeddings.") || rest.starts_with("pre_layrnorm."))
        && !rest.ends_with("position_ids")
        && !rest.ends_with("mask_token")
}

/// The layer index at the start of a tensor name's rest (`"3.mlp.fc1.weight"` → 3); `usize::MAX`
/// when there is none.
pub(super) fn layer_number(rest: &str) -> usize {
    rest.split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Detects the projector's layout, kind and prefix from the tensor names.
fn projector_config(
    config: &Value,
    names: &[String],
    vision_hidden: usize,
) -> Result<Option<(String, ProjectorConfig)>> {
    let find = |suffix: &str| {
        names
            .iter()
            .find_map(|n| n.strip_suffix(suffix).map(str::to_string))
    };
    let act_name = config
        .get("projector_hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    let act: Act = serde_json::from_value(Value::String(act_name.into()))
        .with_context(|| format!("unsupported projector_hidden_act '{act_name}'"))?;
    let llm_dim = config
        .get("text_config")
        .and_then(|t| t.get("hidden_size"))
        .or(config.get("hidden_size").filter(|_| {
            config.get("mm_projector_type").is_some() || config.get("mm_vision_tower").is_some()
        }))
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        // llava-hf's own configs (llava-1.5-7b-hf) leave the LLaMA defaults out of text_config,
        // hidden_size 4096 among them, as transformers' LlamaConfig fills them in.
        .or_else(|| {
            let t = config.get("text_config")?;
            let cfg: super::LlamaConfig = serde_json::from_value(t.clone()).ok()?;
            Some(cfg.hidden_size)
        });
    let in_dim = config
        .get("mm_hidden_size")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .unwrap_or(vision_hidden);
    if let Some(prefix) = find("multi_modal_projector.linear_1.weight") {
        let dim = llm_dim.context("llava config without text_config.hidden_size")?;
        let kind = if names
            .iter()
            .any(|n| n.ends_with("multi_modal_projector.linear_2.weight"))
        {
            ProjectorKind::Mlp2x
        } else {
            ProjectorKind::Linear
        };
        let pc = ProjectorConfig {
            kind,
            layout: ProjectorLayout::LlavaHf,
            in_dim,
            out_dim: dim,
            act,
        };
        return Ok(Some((format!("{prefix}multi_modal_projector"), pc)));
    }
    let ptype = config.get("mm_projector_type").and_then(Value::as_str);
    if let Some(prefix) = find("mm_projector.0.weight") {
        match ptype {
            None | Some("mlp2x_gelu") => {}
            Some(t) => {
                bail!("mm_projector_type '{t}' is not supported (mlp2x_gelu and linear are)")
            }
        }
        let dim = llm_dim.context("llava config without hidden_size")?;
        let pc = ProjectorConfig {
            kind: ProjectorKind::Mlp2x,
            layout: ProjectorLayout::Original,
            in_dim,
            out_dim: dim,
            act: Act::Gelu,
        };
        return Ok(Some((format!("{prefix}mm_projector"), pc)));
    }
    if let Some(prefix) = find("mm_projector.weight") {
        if let Some(t) = ptype.filter(|t| *t != "linear") {
            bail!("mm_projector_type '{t}' but the checkpoint has a single Linear mm_projector");
        }
        let dim = llm_dim.context("llava config without hidden_size")?;
        let pc = ProjectorConfig {
            kind: ProjectorKind::Linear,
            layout: ProjectorLayout::Original,
            in_dim,
            out_dim: dim,
            act,
        };
        return Ok(Some((format!("{prefix}mm_projector"), pc)));
    }
    Ok(None)
}

/// SHA-256 over (name, dtype, shape, bytes) of the named tensors, in name order.
pub(super) fn fingerprint(files: &[PathBuf], used: &[&String]) -> Result<String> {
    let mut h = Sha256::new();
    for_each_tensor(files, used, |name, view| {
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
        h.update(view.data());
    })?;
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 over (name, dtype, shape, bytes) of each named tensor on its own, by name, each
/// tensor read once: what fingerprints of overlapping sets (a layer sweep) are combined from.
pub(super) fn tensor_digests(
    files: &[PathBuf],
    used: &[&String],
) -> Result<std::collections::BTreeMap<String, [u8; 32]>> {
    let mut out = std::collections::BTreeMap::new();
    for_each_tensor(files, used, |name, view| {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
        h.update(view.data());
        out.insert(name.to_string(), h.finalize().into());
    })?;
    Ok(out)
}

/// Calls `visit` with every named tensor of the memory-mapped `files`, in name order.
fn for_each_tensor(
    files: &[PathBuf],
    used: &[&String],
    mut visit: impl FnMut(&str, &safetensors::tensor::TensorView),
) -> Result<()> {
    let mut sorted: Vec<&String> = used.to_vec();
    sorted.sort();
    // SAFETY: read-only maps of files that must not change while gapprobe runs.
    let buffers: Vec<memmap2::Mmap> = files
        .iter()
        .map(|f| std::fs::File::open(f).and_then(|f| unsafe { memmap2::Mmap::map(&f) }))
        .collect::<std::io::Result<_>>()?;
    let tensors: Vec<SafeTensors> = buffers
        .iter()
        .map(|b| SafeTensors::deserialize(b))
        .collect::<std::result::Result<_, _>>()?;
    for name in sorted {
        let view = tensors
            .iter()
            .find_map(|t| t.tensor(name).ok())
            .with_context(|| format!("tensor {name} vanished"))?;
        visit(name, &view);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llava-hf/llava-1.5-7b-hf's config.json, whose text_config names no hidden_size.
    #[test]
    fn llava_hf_text_config_without_hidden_size_takes_llamas_default() {
        let config = serde_json::json!({
            "model_type": "llava",
            "image_token_index": 32000,
            "projector_hidden_act": "gelu",
            "text_config": {
                "_name_or_path": "lmsys/vicuna-7b-v1.5",
                "architectures": ["LlamaForCausalLM"],
                "max_position_embeddings": 4096,
                "model_type": "llama",
                "rms_norm_eps": 1e-05,
                "torch_dtype": "float16",
                "vocab_size": 32064
            },
            "vision_feature_layer": -2
        });
        let names: Vec<String> = ["linear_1.weight", "linear_2.weight"]
            .iter()
            .map(|n| format!("multi_modal_projector.{n}"))
            .collect();
        let (prefix, pc) = projector_config(&config, &names, 1024).unwrap().unwrap();
        assert_eq!(prefix, "multi_modal_projector");
        assert_eq!((pc.in_dim, pc.out_dim), (1024, 4096));
        let llama: super::super::LlamaConfig =
            serde_json::from_value(config["text_config"].clone()).unwrap();
        assert_eq!(
            (
                llama.hidden_size,
                llama.intermediate_size,
                llama.num_hidden_layers
            ),
            (4096, 11008, 32)
        );
        assert_eq!((llama.num_attention_heads, llama.vocab_size), (32, 32064));
        assert_eq!(llama.rms_norm_eps, 1e-5);
    }
}
