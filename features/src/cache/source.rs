//! What a feature point's provenance says about its model: the hidden-state layer it needs and
//! the fingerprint of exactly the tensors read to produce it, so `verify` can recompute it later.

use crate::models::{Checkpoint, VisionLanguageModel};
use crate::FeaturePoint;
use anyhow::{Context, Result};
use candle_core::{DType, Device};

/// Hidden-state index a feature point needs from the tower (0 for projector points: the
/// projector's own layer is added by [`VisionLanguageModel::load`]).
pub fn point_layer(ck: &Checkpoint, p: &FeaturePoint) -> usize {
    match p {
        FeaturePoint::Vision { layer, .. } => {
            // The tower's depth (an original LLaVA config's top-level count is the LLM's).
            let n = ck.vision_num_layers().unwrap_or(0) as i64;
            if *layer < 0 { n + 1 + layer } else { *layer }.max(0) as usize
        }
        FeaturePoint::Projector { .. } => 0,
    }
}

/// Hub commit of a checkpoint from the hub cache, or `local` for a folder.
pub fn revision(ck: &Checkpoint) -> String {
    ck.dir
        .parent()
        .filter(|p| p.ends_with("snapshots"))
        .and_then(|_| ck.dir.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "local".into())
}

/// Top hidden state `load(ck, layer)` runs to, given a loaded model of the same checkpoint.
pub fn top_layer(model: &VisionLanguageModel, layer: usize) -> usize {
    layer.max(if model.projector.is_some() {
        model.projector_layer
    } else {
        0
    })
}

/// (weights fingerprint, config hash) of feature point `p`: loads the tensors it needs on CPU.
pub fn fingerprint(ck: &Checkpoint, p: &FeaturePoint) -> Result<(String, String)> {
    let m = VisionLanguageModel::load(ck, point_layer(ck, p), &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model '{}' to fingerprint {p}", ck.id))?;
    Ok((m.weights_fingerprint, m.config_hash))
}

/// Fingerprints of every point, reusing `model` (loaded up to the highest layer any point
/// needs) where it reads exactly the same tensors.
pub fn fingerprints(
    ck: &Checkpoint,
    model: &VisionLanguageModel,
    points: &[FeaturePoint],
) -> Result<Vec<(String, String)>> {
    let top = points
        .iter()
        .map(|p| top_layer(model, point_layer(ck, p)))
        .max()
        .unwrap_or(0);
    let mut cache: Vec<(usize, (String, String))> = Vec::new();
    points
        .iter()
        .map(|p| {
            let t = top_layer(model, point_layer(ck, p));
            if t == top {
                return Ok((model.weights_fingerprint.clone(), model.config_hash.clone()));
            }
            if let Some((_, f)) = cache.iter().find(|(l, _)| *l == t) {
                return Ok(f.clone());
            }
            let f = fingerprint(ck, p)?;
            cache.push((t, f.clone()));
            Ok(f)
        })
        .collect()
}
