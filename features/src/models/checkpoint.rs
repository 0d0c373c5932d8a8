//! Finding and loading checkpoints: a local folder, the local Hugging Face cache, or a hub id.
//! Layouts: standalone CLIP (`vision_model.*`, or `*.vision_model.*` inside a full CLIP),
//! llava-hf (`vision_tower.vision_model.*` + `multi_modal_projector.*`).

use super::{
    Act, ClipVisionConfig, ClipVisionModel, Projector, ProjectorConfig, ProjectorKind,
    ProjectorLayout,
};
use crate::preprocess::PreprocessConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A resolved checkpoint: its folder, weight files and configs.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// How the user named it (folder path or hub id).
    pub id: String,
    pub dir: PathBuf,
    pub weight_files: Vec<PathBuf>,
    pub config: Value,
    pub preprocess: PreprocessConfig,
}

impl Checkpoint {
    /// Resolves `model` as a local folder, else as a hub id through hf-hub (its cache first).
    pub fn resolve(model: &str) -> Result<Self> {
        let local = Path::new(model);
        if local.is_dir() {
            return Self::from_dir(model, local);
        }
        if local.exists() || model.starts_with('.') || model.starts_with('/') {
            bail!("model '{model}' is not a folder with config.json and *.safetensors");
        }
        Self::from_hub(model)
    }

    fn from_hub(repo_id: &str) -> Result<Self> {
        let api =
            hf_hub::api::sync::Api::new().context("initialising the Hugging Face hub client")?;
        let repo = api.model(repo_id.to_string());
        let get = |f: &str| {
            repo.get(f).with_context(|| {
                format!("'{f}' of model '{repo_id}' is neither in the local Hugging Face cache (HF_HOME) nor downloadable")
            })
        };
        let config = get("config.json")?;
        let _ = get("preprocessor_config.json");
        let weights = match get("model.safetensors.index.json") {
            Ok(index) => {
                let idx: Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
                let mut files: Vec<String> = idx["weight_map"]
                    .as_object()
                    .context("index without weight_map")?
                    .values()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect();
                files.sort();
                files.dedup();
                files.iter().map(|f| get(f)).collect::<Result<Vec<_>>>()?
            }
            Err(_) => vec![get("model.safetensors")?],
        };
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut ck = Self::from_dir(repo_id, &dir)?;
        ck.weight_files = weights;
        Ok(ck)
    }

    /// Reads a checkpoint folder: `config.json`, `preprocessor_config.json` (optional) and the
    /// `*.safetensors` files.
    pub fn from_dir(id: &str, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("model '{id}': missing {}", cfg_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
        let pp_path = dir.join("preprocessor_config.json");
        let mut preprocess = match std::fs::read_to_string(&pp_path) {
            Ok(t) => PreprocessConfig::from_json_str(&t)
                .with_context(|| format!("parsing {}", pp_path.display()))?,
            Err(_) => PreprocessConfig::clip(vision_config(&config)?.image_size as u32),
        };
        // Original LLaVA-1.5 configs say `image_aspect_ratio: pad`; llava-hf's processor does not pad.
        preprocess.pad_to_square =
            config.get("image_aspect_ratio").and_then(Value::as_str) == Some("pad");
        let mut weight_files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        weight_files.sort();
        if weight_files.is_empty() {
            bail!("model '{id}': no *.safetensors file in {}", dir.display());
        }
        Ok(Self {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            weight_files,
            config,
            preprocess,
        })
    }
}

/// The vision config inside a CLIP, CLIPVision or LLaVA `config.json`.
fn vision_config(config: &Value) -> Result<ClipVisionConfig> {
    let v = config.get("vision_config").unwrap_or(config);
    serde_json::from_value(v.clone()).context("config.json has no usable CLIP vision config")
}

/// Names of all tensors across the checkpoint's files (reads only the safetensors headers).
fn tensor_names(files: &[PathBuf]) -> Result<Vec<String>> {
    use std::io::Read;
    let mut names = Vec::new();
    for f in files {
        let bad = || {
            format!(
                "{} is not a safetensors file (truncated or corrupt header)",
                f.display()
            )
        };
        let mut file =
            std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).with_context(bad)?;
        let len = u64::from_le_bytes(len);
        if len > 100_000_000 {
            bail!(bad());
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).with_context(bad)?;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&header).with_context(bad)?;
        names.extend(
            header
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "__metadata__"),
        );
    }
    Ok(names)
}

/// A vision tower and (when the checkpoint has one) its projector, ready to run.
pub struct VisionLanguageModel {
    pub vision: ClipVisionModel,
    pub projector: Option<Projector>,
    /// `hidden_states` index (resolved) that feeds the projector.
    pub projector_layer: usize,
    /// Whether the projector sees only patch tokens (`default`) or CLS too (`full`).
    pub projector_drops_cls: bool,
    /// SHA-256 over the name, dtype, shape and bytes of every tensor this model reads.
    pub weights_fingerprint: String,
    /// SHA-256 of the canonical `config.json`.
    pub config_hash: String,
}

impl VisionLanguageModel {
    /// Loads the vision tower up to hidden state `max_layer` (at least what the projector needs)
    /// and the projector, reading only those tensors.
    pub fn load(ck: &Checkpoint, max_layer: usize, device: &Device, dtype: DType) -> Result<Self> {
        let vcfg = vision_config(&ck.config)?;
        let names = tensor_names(&ck.weight_files)?;
        let tower_prefix = names
            .iter()
            .find_map(|n| n.strip_suffix("embeddings.patch_embedding.weight"))
            .with_context(|| format!("model '{}': no CLIP vision tower (embeddings.patch_embedding.weight) in its weights", ck.id))?
            .trim_end_matches('.')
            .to_string();
        let proj = projector_config(&ck.config, &names, &vcfg)?;
        let (projector_layer, projector_drops_cls) = match &proj {
            Some(_) => {
                let layer = ck
                    .config
                    .get("vision_feature_layer")
                    .or(ck.config.get("mm_vision_select_layer"));
                let layer = layer.and_then(Value::as_i64).unwrap_or(-2);
                let strategy = ck
                    .config
                    .get("vision_feature_select_strategy")
                    .or(ck.config.get("mm_vision_select_feature"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                (
                    vcfg.resolve_layer(layer)?,
                    matches!(strategy, "default" | "patch"),
                )
            }
            None => (0, true),
        };
        let files = ck.weight_files.clone();
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let top = max_layer.max(if proj.is_some() { projector_layer } else { 0 });
        let vision = ClipVisionModel::new(vb.pp(&tower_prefix), &vcfg, top)?;
        let projector = match &proj {
            Some((prefix, pc)) => Some(Projector::new(vb.pp(prefix), pc)?),
            None => None,
        };
        let used: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.strip_prefix(&tower_prefix)
                    .is_some_and(|rest| tensor_used(rest, top))
                    || proj
                        .as_ref()
                        .is_some_and(|(p, _)| n.starts_with(p.as_str()))
            })
            .collect();
        Ok(Self {
            vision,
            projector,
            projector_layer,
            projector_drops_cls,
            weights_fingerprint: fingerprint(&files, &used)?,
            config_hash: hex::encode(Sha256::digest(serde_json::to_vec(&ck.config)?)),
        })
    }
}

/// Whether a tower tensor (name after the tower prefix) is read when running `top` layers.
fn tensor_used(rest: &str, top: usize) -> bool {
    let rest = rest.trim_start_matches('.');
    if let Some(layer) = rest.strip_prefix("encoder.layers.") {
        let i: usize = layer
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        return i < top;
    }
    rest.starts_with("embeddings.") || rest.starts_with("pre_layrnorm.")
}

/// Detects the projector's layout, kind and prefix from the tensor names.
fn projector_config(
    config: &Value,
    names: &[String],
    vcfg: &ClipVisionConfig,
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
        .or(config
            .get("hidden_size")
            .filter(|_| config.get("mm_projector_type").is_some()))
        .and_then(Value::as_u64)
        .map(|v| v as usize);
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
            in_dim: vcfg.hidden_size,
            out_dim: dim,
            act,
        };
        return Ok(Some((format!("{prefix}multi_modal_projector"), pc)));
    }
    if let Some(prefix) = find("mm_projector.0.weight") {
        let dim = llm_dim.context("llava config without hidden_size")?;
        let pc = ProjectorConfig {
            kind: ProjectorKind::Mlp2x,
            layout: ProjectorLayout::Original,
            in_dim: vcfg.hidden_size,
            out_dim: dim,
            act,
        };
        return Ok(Some((format!("{prefix}mm_projector"), pc)));
    }
    if let Some(prefix) = find("mm_projector.weight") {
        let dim = llm_dim.context("llava config without hidden_size")?;
        let pc = ProjectorConfig {
            kind: ProjectorKind::Linear,
            layout: ProjectorLayout::Original,
            in_dim: vcfg.hidden_size,
            out_dim: dim,
            act,
        };
        return Ok(Some((format!("{prefix}mm_projector"), pc)));
    }
    Ok(None)
}

/// SHA-256 over (name, dtype, shape, bytes) of the named tensors, in name order.
fn fingerprint(files: &[PathBuf], used: &[&String]) -> Result<String> {
    let mut sorted: Vec<&String> = used.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
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
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", view.dtype(), view.shape()).as_bytes());
        h.update(view.data());
    }
    Ok(hex::encode(h.finalize()))
}
