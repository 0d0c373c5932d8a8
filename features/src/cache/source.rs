//! What a feature point's provenance says about its model: the hidden-state layer it needs and
//! the fingerprint of exactly the tensors read to produce it, so `verify` can recompute it later.

use crate::models::{language_fingerprints, text_config, Checkpoint, VisionLanguageModel};
use crate::FeaturePoint;
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use sha2::{Digest, Sha256};

/// Hidden-state index a feature point needs from the tower (0 for projector points: the
/// projector's own layer is added by [`VisionLanguageModel::load`]).
pub fn point_layer(ck: &Checkpoint, p: &FeaturePoint) -> usize {
    match p {
        FeaturePoint::Vision { layer, .. } => {
            // The tower's depth (an original LLaVA config's top-level count is the LLM's).
            let n = ck.vision_num_layers().unwrap_or(0) as i64;
            if *layer < 0 { n + 1 + layer } else { *layer }.max(0) as usize
        }
        FeaturePoint::Projector { .. } | FeaturePoint::Llm { .. } => 0,
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
/// An `llm.*` point also covers the language-model tensors up to its layer.
pub fn fingerprint(ck: &Checkpoint, p: &FeaturePoint) -> Result<(String, String)> {
    let m = VisionLanguageModel::load(ck, point_layer(ck, p), &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model '{}' to fingerprint {p}", ck.id))?;
    Ok((with_language(ck, p, m.weights_fingerprint)?, m.config_hash))
}

/// `weights` combined with the fingerprint of the language-model tensors an `llm.*` point
/// reads (unchanged for other points).
pub fn with_language(ck: &Checkpoint, p: &FeaturePoint, weights: String) -> Result<String> {
    let lm = language_of(ck, std::slice::from_ref(p))?;
    Ok(combine(weights, &lm[0]))
}

/// The language-model fingerprint of each `llm.*` point (`None` for others), the language
/// model's tensors hashed once for all of them ([`language_fingerprints`]).
fn language_of(ck: &Checkpoint, points: &[FeaturePoint]) -> Result<Vec<Option<String>>> {
    let tops: Vec<Option<usize>> = points
        .iter()
        .map(|p| match p {
            FeaturePoint::Llm { layer, .. } => Ok(Some(text_config(ck)?.resolve_layer(*layer)?)),
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    let wanted: Vec<usize> = tops.iter().flatten().copied().collect();
    if wanted.is_empty() {
        return Ok(vec![None; points.len()]);
    }
    let prints = language_fingerprints(ck, &wanted)?;
    Ok(tops
        .iter()
        .map(|t| {
            t.and_then(|t| wanted.iter().position(|w| *w == t))
                .map(|i| prints[i].clone())
        })
        .collect())
}

/// A point's weights fingerprint with its language-model part, if any.
fn combine(weights: String, language: &Option<String>) -> String {
    match language {
        Some(lm) => hex::encode(Sha256::digest(format!("{weights}{lm}"))),
        None => weights,
    }
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
    let language = language_of(ck, points)?;
    points
        .iter()
        .zip(&language)
        .map(|(p, lm)| {
            let t = top_layer(model, point_layer(ck, p));
            let (w, c) = if t == top {
                (model.weights_fingerprint.clone(), model.config_hash.clone())
            } else if let Some((_, f)) = cache.iter().find(|(l, _)| *l == t) {
                f.clone()
            } else {
                let m = VisionLanguageModel::load(ck, t, &Device::Cpu, DType::F32)
                    .with_context(|| format!("loading model '{}' to fingerprint {p}", ck.id))?;
                let f = (m.weights_fingerprint, m.config_hash);
                cache.push((t, f.clone()));
                f
            };
            Ok((combine(w, lm), c))
        })
        .collect()
}
