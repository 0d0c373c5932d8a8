//! Finding and loading checkpoints: a local folder, the local Hugging Face cache, or a hub id.
//! Layouts: standalone CLIP / SigLIP (`vision_model.*`, or `*.vision_model.*` inside a full
//! model), DINOv2 (`embeddings.*`, `encoder.layer.*`, optionally under `dinov2.`), llava-hf
//! (`vision_tower.vision_model.*` + `multi_modal_projector.*`) and original LLaVA
//! (`model.mm_projector.*`, with the tower either inside or in the separate checkpoint named by
//! `mm_vision_tower`).

use super::convert;
use super::Family;
use crate::preprocess::PreprocessConfig;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A resolved checkpoint: its folder, weight files and configs.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// How the user named it (folder path or hub id).
    pub id: String,
    pub dir: PathBuf,
    /// The `*.safetensors` files that hold vision or projector tensors (shards with only
    /// language-model tensors are left out, and never downloaded).
    pub weight_files: Vec<PathBuf>,
    pub config: Value,
    pub preprocess: PreprocessConfig,
    /// A separate checkpoint holding the vision tower, for projector-only checkpoints (original
    /// LLaVA: the CLIP named by `mm_vision_tower`). `None` when the tower is in this checkpoint.
    pub tower: Option<Box<Checkpoint>>,
}

/// Where a checkpoint's files come from.
enum Source {
    Dir(PathBuf),
    Hub(String),
}

/// The hub cache folder (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
fn hub_cache() -> hf_hub::Cache {
    match std::env::var("HF_HUB_CACHE") {
        Ok(p) if !p.is_empty() => hf_hub::Cache::new(PathBuf::from(p)),
        _ => hf_hub::Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Source {
    /// Path of `file`, or `Ok(None)` when this optional file is absent everywhere.
    fn get(&self, file: &str, required: bool) -> Result<Option<PathBuf>> {
        match self {
            Source::Dir(dir) => {
                let p = dir.join(file);
                if p.is_file() {
                    Ok(Some(p))
                } else if required {
                    bail!("model folder {}: missing {file}", dir.display())
                } else {
                    Ok(None)
                }
            }
            Source::Hub(id) => {
                let cache = hub_cache();
                if let Some(p) = cache.model(id.clone()).get(file) {
                    return Ok(Some(p));
                }
                let where_ = cache
                    .path()
                    .join(format!("models--{}", id.replace('/', "--")))
                    .join("snapshots");
                if offline() {
                    if required {
                        bail!("'{file}' of model '{id}' is not in the Hugging Face cache (looked in {}/*/) and HF_HUB_OFFLINE is set", where_.display());
                    }
                    return Ok(None);
                }
                let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
                    .build()
                    .context("initialising the Hugging Face hub client")?;
                match api.model(id.clone()).get(file) {
                    Ok(p) => Ok(Some(p)),
                    Err(e) if required => bail!(
                        "'{file}' of model '{id}' is not in the Hugging Face cache (looked in {}/*/) and downloading it failed: {e}",
                        where_.display()
                    ),
                    Err(_) => Ok(None),
                }
            }
        }
    }
}

/// Whether a tensor name belongs to a vision tower or projector (not to a language model).
fn is_vision_tensor(name: &str) -> bool {
    name.contains("vision")
        || name.contains("mm_projector")
        || name.contains("multi_modal_projector")
        || name.starts_with("embeddings.")
        || name.starts_with("encoder.")
        || name.starts_with("dinov2.")
        || name.starts_with("layernorm.")
}

/// Whether a tensor belongs to a language model (what converting a PyTorch checkpoint skips).
fn is_language_tensor(name: &str) -> bool {
    name.contains("language_model")
        || name.starts_with("lm_head")
        || name.starts_with("model.layers.")
        || name.starts_with("model.embed_tokens")
        || name.starts_with("model.norm")
}

/// Tensors worth converting from a PyTorch checkpoint: the vision tower and projector, i.e.
/// everything but the language model.
fn is_convertible(name: &str) -> bool {
    is_vision_tensor(name) || !is_language_tensor(name)
}

impl Checkpoint {
    /// Resolves `model` as a local folder, else as a hub id (the local Hugging Face cache first,
    /// then a download through hf-hub unless `HF_HUB_OFFLINE` is set). A projector-only
    /// checkpoint (original LLaVA) gets its tower from `mm_vision_tower`, resolved the same way.
    pub fn resolve(model: &str) -> Result<Self> {
        let ck = Self::resolve_one(model)?;
        if ck.has_tower()? {
            return Ok(ck);
        }
        let Some(tower_id) = ck.config.get("mm_vision_tower").and_then(Value::as_str) else {
            bail!(
                "model '{model}': its weights have no vision tower (no CLIP, SigLIP or DINOv2 embeddings) and its config names no mm_vision_tower"
            );
        };
        let tower = Self::resolve_one(tower_id).with_context(|| {
            format!("model '{model}' takes its vision tower from mm_vision_tower = '{tower_id}'")
        })?;
        ck.with_tower(tower)
    }

    /// Resolves one checkpoint without looking for a separate tower.
    pub fn resolve_one(model: &str) -> Result<Self> {
        let local = Path::new(model);
        if local.is_dir() {
            return Self::load_from(model, Source::Dir(local.to_path_buf()));
        }
        if local.exists() || model.starts_with('.') || model.starts_with('/') {
            bail!("model '{model}' is not a folder with config.json and *.safetensors or PyTorch *.bin weights");
        }
        Self::load_from(model, Source::Hub(model.to_string()))
    }

    /// Reads a checkpoint folder: `config.json`, `preprocessor_config.json` (optional) and the
    /// `*.safetensors` files.
    pub fn from_dir(id: &str, dir: &Path) -> Result<Self> {
        Self::load_from(id, Source::Dir(dir.to_path_buf()))
    }

    /// Uses `tower` (a CLIP, SigLIP or DINOv2 checkpoint) as the vision tower of this
    /// projector-only checkpoint, with the tower's preprocessing (plus this checkpoint's
    /// `image_aspect_ratio: pad`).
    pub fn with_tower(mut self, tower: Checkpoint) -> Result<Self> {
        if !tower.has_tower()? {
            bail!("'{}' has no vision tower in its weights", tower.id);
        }
        let pad = self.preprocess.pad_to_square;
        if !self.dir.join("preprocessor_config.json").is_file() {
            self.preprocess = tower.preprocess.clone();
        }
        self.preprocess.pad_to_square = pad || self.preprocess.pad_to_square;
        self.tower = Some(Box::new(tower));
        Ok(self)
    }

    fn load_from(id: &str, src: Source) -> Result<Self> {
        let cfg_path = src.get("config.json", true)?.expect("required");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("model '{id}': reading {}", cfg_path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", cfg_path.display()))?;
        let dir = cfg_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut preprocess = match src.get("preprocessor_config.json", false)? {
            Some(pp_path) => {
                let t = std::fs::read_to_string(&pp_path)?;
                PreprocessConfig::from_json_str(&t)
                    .with_context(|| format!("parsing {}", pp_path.display()))?
            }
            None => default_preprocess(&config),
        };
        // Original LLaVA-1.5 configs say `image_aspect_ratio: pad`; llava-hf's processor pads
        // only with `do_pad`.
        if config.get("image_aspect_ratio").and_then(Value::as_str) == Some("pad") {
            preprocess.pad_to_square = true;
        }
        let weight_files = match src.get("model.safetensors.index.json", false)? {
            Some(index) => convert::index_files(&index, is_vision_tensor)?
                .iter()
                .map(|f| Ok(src.get(f, true)?.expect("required")))
                .collect::<Result<Vec<_>>>()?,
            None => match &src {
                Source::Dir(d) => {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                        .with_context(|| format!("listing {}", d.display()))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                        .collect();
                    files.sort();
                    files
                }
                Source::Hub(_) => src.get("model.safetensors", false)?.into_iter().collect(),
            },
        };
        // No safetensors: PyTorch *.bin files, their vision/projector tensors converted once.
        let weight_files = if weight_files.is_empty() {
            let bins = match &src {
                Source::Dir(d) => convert::bin_files(d, is_vision_tensor)?,
                Source::Hub(_) => {
                    let mut found = Vec::new();
                    if let Some(index) = src.get("pytorch_model.bin.index.json", false)? {
                        let d = index.parent().map(Path::to_path_buf).unwrap_or_default();
                        for f in convert::bin_files(&d, is_vision_tensor)? {
                            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                            if let Some(p) = src.get(name.as_deref().unwrap_or_default(), true)? {
                                found.push(p);
                            }
                        }
                    } else {
                        for name in ["pytorch_model.bin", "mm_projector.bin"] {
                            found.extend(src.get(name, false)?);
                        }
                    }
                    found
                }
            };
            if bins.is_empty() {
                bail!(
                    "model '{id}': no *.safetensors or PyTorch *.bin weights in {}",
                    dir.display()
                );
            }
            vec![convert::bins_to_safetensors(&bins, is_convertible)
                .with_context(|| format!("model '{id}': converting its PyTorch weights"))?]
        } else {
            weight_files
        };
        Ok(Self {
            id: id.to_string(),
            dir,
            weight_files,
            config,
            preprocess,
            tower: None,
        })
    }

    /// Whether this checkpoint's own weights contain a vision tower.
    pub fn has_tower(&self) -> Result<bool> {
        let names = tensor_names(&self.weight_files)?;
        Ok(tower_prefix(&names).is_some())
    }

    /// The checkpoint that holds the vision tower (this one or [`Checkpoint::tower`]).
    pub fn tower_checkpoint(&self) -> &Checkpoint {
        self.tower.as_deref().unwrap_or(self)
    }

    /// Where this checkpoint's files come from: its folder, or its hub id.
    fn source(&self) -> Source {
        let from_hub = self.dir.parent().is_some_and(|p| p.ends_with("snapshots"));
        if from_hub {
            Source::Hub(self.id.clone())
        } else {
            Source::Dir(self.dir.clone())
        }
    }

    /// Path of one of the checkpoint's files (`tokenizer.json`, ...), downloaded if needed;
    /// an error naming the folder or hub id when it is missing.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        Ok(self.source().get(name, true)?.expect("required"))
    }

    /// A file of the checkpoint that may be absent (fetched from the hub when it is there).
    pub fn optional_file(&self, name: &str) -> Result<Option<PathBuf>> {
        self.source().get(name, false)
    }

    /// The safetensors files holding the language model (fetched only when asked for: vision
    /// features never download the LLM's shards).
    pub fn language_files(&self) -> Result<Vec<PathBuf>> {
        let src = self.source();
        let files = match src.get("model.safetensors.index.json", false)? {
            Some(index) => convert::index_files(&index, is_language_tensor)?
                .iter()
                .map(|f| Ok(src.get(f, true)?.expect("required")))
                .collect::<Result<Vec<_>>>()?,
            None => self.weight_files.clone(),
        };
        let names = tensor_names(&files)?;
        if !names.iter().any(|n| n.ends_with("embed_tokens.weight")) {
            bail!(
                "model '{}': no language model (no *embed_tokens.weight) in its safetensors weights; \
                 LLM feature points need a LLaVA checkpoint with its language model in safetensors \
                 (e.g. llava-hf/llava-1.5-7b-hf)",
                self.id
            );
        }
        Ok(files)
    }

    /// The encoder family of the vision tower.
    pub fn family(&self) -> Result<Family> {
        let t = self.tower_checkpoint();
        let names = tensor_names(&t.weight_files)?;
        Ok(tower_prefix(&names)
            .with_context(|| format!("model '{}': no vision tower in its weights", t.id))?
            .1)
    }

    /// Number of encoder layers of the vision tower (what negative layer indices count from).
    pub fn vision_num_layers(&self) -> Result<usize> {
        let t = self.tower_checkpoint();
        vision_config_value(&t.config)["num_hidden_layers"]
            .as_u64()
            .map(|n| n as usize)
            .with_context(|| format!("model '{}': config has no num_hidden_layers", t.id))
    }
}

/// Preprocessing when a checkpoint has no `preprocessor_config.json`: the family's defaults at
/// the config's image size.
pub(super) fn default_preprocess(config: &Value) -> PreprocessConfig {
    let v = vision_config_value(config);
    let size = v["image_size"].as_u64().unwrap_or(224) as u32;
    match v["model_type"].as_str().unwrap_or("") {
        t if t.starts_with("siglip") => PreprocessConfig::siglip(size),
        t if t.starts_with("dinov2") => PreprocessConfig::dinov2(224),
        _ => PreprocessConfig::clip(size),
    }
}

/// The vision config inside a CLIP, SigLIP, LLaVA or DINOv2 `config.json`.
pub(super) fn vision_config_value(config: &Value) -> &Value {
    config.get("vision_config").unwrap_or(config)
}

/// Finds the tower in tensor names: (prefix ending in `.` or empty, family).
pub(super) fn tower_prefix(names: &[String]) -> Option<(String, Family)> {
    for n in names {
        if let Some(p) = n.strip_suffix("embeddings.patch_embeddings.projection.weight") {
            return Some((p.to_string(), Family::Dinov2));
        }
        if let Some(p) = n.strip_suffix("embeddings.patch_embedding.weight") {
            let clip = names
                .iter()
                .any(|m| m == &format!("{p}embeddings.class_embedding"));
            let fam = if clip { Family::Clip } else { Family::Siglip };
            return Some((p.to_string(), fam));
        }
    }
    None
}

/// Names of all tensors across the checkpoint's files (reads only the safetensors headers).
pub(super) fn tensor_names(files: &[PathBuf]) -> Result<Vec<String>> {
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
