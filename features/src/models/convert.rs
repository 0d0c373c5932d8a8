//! PyTorch `.bin` checkpoints (pickled state dicts): their vision and projector tensors are copied
//! once into a safetensors file under the gapprobe cache (`converted/<key>/vision.safetensors`),
//! which memory-mapped loading and the weight fingerprints then read like any other checkpoint.
//! The key hashes the `.bin` files' paths, sizes and modification times, so a changed file is
//! converted again. Same tensors, same bytes: the fingerprint (and so the cache key of extracted
//! features) equals that of the same weights shipped as safetensors.

use crate::cache::FeatureCache;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tracing::info;

/// Where converted checkpoints go: `converted/` under the default cache root
/// ([`FeatureCache::default_root`]: `$GAPPROBE_CACHE`, else `~/.cache/gapprobe`).
pub fn converted_root() -> PathBuf {
    FeatureCache::default_root().join("converted")
}

fn key(bins: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for b in bins {
        let meta = std::fs::metadata(b).with_context(|| format!("reading {}", b.display()))?;
        let abs = std::fs::canonicalize(b).unwrap_or_else(|_| b.clone());
        h.update(abs.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        if let Ok(t) = meta.modified() {
            h.update(format!("{t:?}").as_bytes());
        }
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// Copies the tensors of `bins` whose names pass `keep` into one safetensors file (made once,
/// then reused) and returns its path.
pub fn bins_to_safetensors(bins: &[PathBuf], keep: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let dir = converted_root().join(key(bins)?);
    let out = dir.join("vision.safetensors");
    if out.is_file() {
        return Ok(out);
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for bin in bins {
        let file = candle_core::pickle::PthTensors::new(bin, None).with_context(|| {
            format!(
                "{} is not a readable PyTorch checkpoint (pickled state dict)",
                bin.display()
            )
        })?;
        let mut names: Vec<String> = file.tensor_infos().keys().cloned().collect();
        names.sort();
        for name in names.into_iter().filter(|n| keep(n)) {
            let t = file
                .get(&name)
                .with_context(|| format!("reading tensor {name} from {}", bin.display()))?
                .with_context(|| format!("tensor {name} vanished from {}", bin.display()))?;
            tensors.insert(name, t);
        }
    }
    if tensors.is_empty() {
        let list: Vec<String> = bins.iter().map(|b| b.display().to_string()).collect();
        bail!("no vision or projector tensors in {}", list.join(", "));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("vision.safetensors.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming {}", tmp.display()))?;
    info!(
        "converted {} tensors from {} PyTorch file(s) to {}",
        tensors.len(),
        bins.len(),
        out.display()
    );
    Ok(out)
}

/// The `.bin` weight files of a folder: those `pytorch_model.bin.index.json` maps vision or
/// projector tensors to, else every `*.bin` in it.
pub fn bin_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let index = dir.join("pytorch_model.bin.index.json");
    if index.is_file() {
        let files = index_files(&index, wanted)?;
        return Ok(files.iter().map(|f| dir.join(f)).collect());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    Ok(files)
}

/// The files a sharded checkpoint's index (`*.index.json`) maps `wanted` tensors to, sorted,
/// each once.
pub fn index_files(index: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index)?)
        .with_context(|| format!("parsing {}", index.display()))?;
    let map = idx["weight_map"]
        .as_object()
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut files: Vec<String> = map
        .iter()
        .filter(|(k, _)| wanted(k))
        .filter_map(|(_, v)| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
