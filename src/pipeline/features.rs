//! Filling the cache: resolve the model, look entries up, extract only what is missing (locked,
//! resumable, optionally sharded and compressed).

use super::RunSummary;
use crate::ui::Ui;
use anyhow::{Context, Result};
use gapprobe_features::batching::{self, BatchSize, Workload};
use gapprobe_features::cache::{
    compress, shard, source, CacheEntry, Compression, EntryLock, EntryPlan, EntryWriter,
    FeatureCache, NonFiniteRow, Provenance, Shard, SplitPlan, StorageDtype,
};
use gapprobe_features::datasets::{Dataset, LabelLevel, Sample, Split};
use gapprobe_features::extract::{extract_batches, ExtractOptions};
use gapprobe_features::featurepoint::LlmInput;
use gapprobe_features::models::{
    fused, text_config, Checkpoint, LanguageModel, Prompt, VisionLanguageModel,
};
use gapprobe_features::FeaturePoint;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tracing::info;

/// How extraction writes the cache (see docs/cache-format.md).
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Dtype `features` is stored in (part of the provenance).
    pub storage: StorageDtype,
    /// Extract only this shard's rows into a shard file (`gapprobe cache merge` joins them).
    pub shard: Option<Shard>,
    /// Fail instead of waiting when another process is writing the same entry.
    pub no_wait: bool,
    /// Dataset spec recorded in the entry so `gapprobe cache verify` can reload the dataset.
    pub dataset_spec: String,
    /// Compress each newly written entry once it is finished (`extract --compress`).
    pub compress: Option<Compression>,
}

/// Test-only: with `GAPPROBE_TEST_BATCH_DELAY_MS` set, every recorded batch is announced on stderr
/// and followed by that many milliseconds of sleep, so tests can kill a run between batches.
const TEST_DELAY_ENV: &str = "GAPPROBE_TEST_BATCH_DELAY_MS";

/// Returns finished cache entries for every feature point, extracting only the missing ones (all
/// of them in one pass over the images). Missing entries are locked, written in row blocks to
/// `.partial` files (resuming any left by an interrupted run) and renamed when complete. With a
/// shard, the returned entries are the shard files.
#[allow(clippy::too_many_arguments)]
pub fn ensure_features_with(
    cache: &FeatureCache,
    model_id: &str,
    ds: &Dataset,
    points: &[FeaturePoint],
    opts: &ExtractOptions,
    copts: &CacheOptions,
    ui: &Ui,
    summary: &mut RunSummary,
) -> Result<Vec<CacheEntry>> {
    let ck = Checkpoint::resolve(model_id)?;
    let max_layer = points
        .iter()
        .map(|p| source::point_layer(&ck, p))
        .max()
        .unwrap_or(0);
    let load = || VisionLanguageModel::load(&ck, max_layer, &opts.device, opts.dtype);
    let mut model = match opts.f32_residual {
        Some(on) => fused::with_f32_residual(on, load),
        None => load(),
    }
    .with_context(|| format!("loading model '{model_id}'"))?;
    let llm_input = llm_keys(&ck, ds, points, opts)
        .with_context(|| format!("model '{model_id}': the language model for llm.* points"))?;
    if opts.f32_residual == Some(true) && model.vision.stream_dtype() == opts.dtype {
        tracing::warn!(
            "--f32-residual has no effect here: it applies to bf16/f16 with the fused ops \
             (on CUDA by default; GAPPROBE_KERNELS=on elsewhere)"
        );
    }
    // An f32 residual stream changes the numbers, so it is part of the compute dtype (and key).
    let compute_dtype = match model.vision.stream_dtype() {
        s if s != opts.dtype => format!("{}+{}-residual", opts.dtype.as_str(), s.as_str()),
        _ => opts.dtype.as_str().to_string(),
    };
    // Refuse impossible requests (a CLS point on SigLIP, a layer past the end) before any image;
    // llm.* points' layers were checked with the keys (their model is loaded only to extract).
    for p in points {
        let needs_projector = matches!(
            p,
            FeaturePoint::Llm {
                input: LlmInput::Image,
                ..
            }
        );
        if needs_projector && model.projector.is_none() {
            anyhow::bail!("feature point {p} on model '{model_id}': this checkpoint has no projector to give the language model the image");
        }
        if !p.is_llm() {
            model
                .check_point(p)
                .with_context(|| format!("feature point {p} on model '{model_id}'"))?;
        }
    }
    // Dataset-level pixel edits (FGVC-Aircraft's banner) are part of preprocessing, so of the key.
    let mut preprocess = ck.preprocess.clone();
    preprocess.crop_bottom = ds.crop_bottom_px;
    let fingerprints = source::fingerprints(&ck, &model, points)?;
    let revision = source::revision(&ck);
    let manifest_hash = ds.manifest_hash();
    let provs: Vec<Provenance> = points
        .iter()
        .zip(&fingerprints)
        .map(|(p, (weights, config))| Provenance {
            model_id: ck.id.clone(),
            model_revision: revision.clone(),
            weights_fingerprint: weights.clone(),
            config_hash: config.clone(),
            preprocess: serde_json::to_string(&preprocess).expect("serialises"),
            feature_point: p.to_string(),
            compute_dtype: compute_dtype.clone(),
            storage_dtype: copts.storage.to_string(),
            device: format!("{:?}", opts.device).to_lowercase(),
            gapprobe_version: gapprobe_features::VERSION.into(),
            dataset: ds.name.clone(),
            manifest_hash: manifest_hash.clone(),
            llm_input: match p {
                FeaturePoint::Llm {
                    input: LlmInput::Text,
                    ..
                } => llm_input.1.clone(),
                FeaturePoint::Llm { .. } => llm_input.0.clone(),
                _ => String::new(),
            },
        })
        .collect();
    let target = |prov: &Provenance| match copts.shard {
        Some(s) => cache.shard_path(prov, s),
        None => cache.entry_path(prov),
    };
    let mut entries: Vec<Option<CacheEntry>> = vec![None; points.len()];
    let mut reuse = |i: usize, e: CacheEntry, summary: &mut RunSummary| {
        info!("reused cache entry {} for {}", e.path.display(), points[i]);
        summary.entries_reused.push(e.path.display().to_string());
        entries[i] = Some(e);
    };
    let mut missing = Vec::new();
    for (i, prov) in provs.iter().enumerate() {
        match FeatureCache::lookup_at(&target(prov), prov)? {
            Some(e) => reuse(i, e, summary),
            None => missing.push(i),
        }
    }
    // Lock in path order (no deadlock between processes), then look again: the holder we
    // waited for may have finished the entry.
    let mut order = missing.clone();
    order.sort_by_key(|&i| target(&provs[i]));
    let _locks = order
        .iter()
        .map(|&i| EntryLock::acquire(&target(&provs[i]), !copts.no_wait))
        .collect::<Result<Vec<_>>>()?;
    let mut still = Vec::new();
    for i in missing {
        match FeatureCache::lookup_at(&target(&provs[i]), &provs[i])? {
            Some(e) => reuse(i, e, summary),
            None => still.push(i),
        }
    }
    let missing = still;
    if !missing.is_empty() {
        if copts.shard.is_some() && opts.batch_size == BatchSize::Auto {
            anyhow::bail!(
                "--shard needs an explicit --batch-size (e.g. --batch-size 128): every shard must \
                 use the same one, and 'auto' depends on each machine's free GPU memory"
            );
        }
        let todo: Vec<FeaturePoint> = missing.iter().map(|&i| points[i]).collect();
        // Loaded before `auto` reads the free memory: its weights are then counted, and its
        // activations over the longest prompt are part of each image's share.
        load_language(&ck, &mut model, &todo, opts)?;
        let workload = || {
            let texts: Vec<String> = if todo.iter().any(FeaturePoint::is_text) {
                ds.samples
                    .iter()
                    .map(|s| ds.attributes[&s.id].clone())
                    .collect()
            } else {
                Vec::new()
            };
            Workload::of(&model, &todo, &texts, preprocess.output_size())
        };
        let batch =
            batching::resolve(opts.batch_size, &model, workload, &opts.device, opts.dtype)?.max(1);
        let splits: Vec<(Split, Vec<&Sample>)> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|s| (s, ds.split(s)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let split_plans: Vec<SplitPlan> = splits
            .iter()
            .map(|(split, samples)| {
                let rows = shard::plan_rows(copts.shard, samples.len(), batch);
                let part = &samples[rows.clone()];
                SplitPlan {
                    split: *split,
                    rows,
                    total: samples.len(),
                    ids: part.iter().map(|s| s.id.clone()).collect(),
                    paths: part
                        .iter()
                        .map(|s| s.path.to_string_lossy().into_owned())
                        .collect(),
                    labels: LabelLevel::ALL.map(|level| {
                        (!ds.classes(level).is_empty()).then(|| {
                            part.iter()
                                .map(|s| s.label(level).map(|l| l as i32).unwrap_or(-1))
                                .collect()
                        })
                    }),
                }
            })
            .collect();
        let mut writers = missing
            .iter()
            .map(|&i| {
                let plan = EntryPlan {
                    provenance: provs[i].clone(),
                    classes: ds.class_names.clone(),
                    splits: split_plans.clone(),
                    dataset_spec: copts.dataset_spec.clone(),
                    batch_size: batch,
                    shard: copts.shard,
                    skipped: ds
                        .skipped
                        .iter()
                        .map(|s| format!("{}\t{}\t{}", s.id, s.path.display(), s.reason))
                        .collect(),
                };
                EntryWriter::open(&target(&provs[i]), plan)
            })
            .collect::<Result<Vec<_>>>()?;
        info!(
            "extracting {} feature point(s) from {} images of '{}'{}",
            todo.len(),
            split_plans.iter().map(|s| s.rows.len()).sum::<usize>(),
            ds.name,
            copts
                .shard
                .map(|s| format!(" (shard {s})"))
                .unwrap_or_default()
        );
        let delay = std::env::var(TEST_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        // A resumed entry keeps the batch size it was started with (same batches, same numbers).
        let opts = ExtractOptions {
            batch_size: BatchSize::Fixed(writers[0].batch_size().max(1)),
            ..opts.clone()
        };
        let batch = writers[0].batch_size().max(1);
        for ((split, samples), plan) in splits.iter().zip(&split_plans) {
            let done = writers
                .iter()
                .map(|w| w.rows_done(*split))
                .min()
                .unwrap_or(0);
            let start = done / batch * batch;
            if done == plan.rows.len() {
                continue;
            }
            let rows = &samples[plan.rows.start + start..plan.rows.end];
            let paths: Vec<PathBuf> = rows.iter().map(|s| ds.image_path(s)).collect();
            let texts: Vec<String> = if todo.iter().any(FeaturePoint::is_text) {
                rows.iter().map(|s| ds.attributes[&s.id].clone()).collect()
            } else {
                Vec::new()
            };
            let bar = ui.bar(
                plan.rows.len() as u64,
                &format!("extract {}/{split}", ds.name),
            );
            bar.inc(start as u64);
            extract_batches(
                &model,
                &preprocess,
                &paths,
                &texts,
                &todo,
                &opts,
                &bar,
                |row0, feats| {
                    let n = feats[0].shape()[0];
                    for (w, f) in writers.iter_mut().zip(&feats) {
                        w.write_rows(*split, start + row0, f.view())
                            .map_err(|e| explain_write_error(e, &compute_dtype))?;
                    }
                    if let Some(ms) = delay {
                        eprintln!("gapprobe-test: {split} rows_done {}", start + row0 + n);
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    Ok(())
                },
            )
            .with_context(|| {
                format!(
                    "extracting {split} of '{}' stopped; the rows written so far are kept and a rerun resumes \
                     after them (an unreadable image can be skipped with --skip-bad)",
                    ds.name
                )
            })?;
            bar.finish_and_clear();
        }
        for (w, &i) in writers.into_iter().zip(&missing) {
            let mut entry = w.finish()?;
            if let Some(c) = copts.compress {
                // The lock is still held; the finished file is rewritten, never the partial one.
                entry = compress::compress_locked(&entry.path, c)?.0;
            }
            info!("cached {} in {}", points[i], entry.path.display());
            summary
                .entries_extracted
                .push(entry.path.display().to_string());
            entries[i] = Some(entry);
        }
    }
    Ok(entries
        .into_iter()
        .map(|e| e.expect("every point resolved"))
        .collect())
}

/// Cache-key inputs of the `llm.*` points as JSON (image arm: prompt and tokenizer; text arm:
/// also the texts' hash), after checking what can be checked without the language model's
/// weights: the prompt against the tokenizer, each point's layer, a text for every sample
/// (`Dataset::attributes`). Empty strings without such points.
fn llm_keys(
    ck: &Checkpoint,
    ds: &Dataset,
    points: &[FeaturePoint],
    opts: &ExtractOptions,
) -> Result<(String, String)> {
    if !points.iter().any(FeaturePoint::is_llm) {
        return Ok(Default::default());
    }
    let cfg = text_config(ck)?;
    for p in points {
        if let FeaturePoint::Llm { layer, .. } = p {
            cfg.resolve_layer(*layer)
                .with_context(|| format!("feature point '{p}': the language model's layers"))?;
        }
    }
    let prompt = Prompt::load(ck, &opts.prompt)?;
    let image = serde_json::json!({ "prompt": opts.prompt, "tokenizer": prompt.tokenizer_hash });
    if !points.iter().any(FeaturePoint::is_text) {
        return Ok((image.to_string(), String::new()));
    }
    let missing: Vec<&str> = ds
        .samples
        .iter()
        .filter(|s| !ds.attributes.contains_key(&s.id))
        .map(|s| s.id.as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "llm.text points need a text per image, and dataset '{}' has none for {} of its {} \
             images (first: {}); CUB-200-2011 takes them from its attributes/ files (an image none \
             of whose attributes reaches attr_certainty has none: try ?attr_certainty=2), a \
             manifest from its `attributes` column",
            ds.name,
            missing.len(),
            ds.samples.len(),
            missing[..missing.len().min(3)].join(", ")
        );
    }
    let mut h = Sha256::new();
    for s in &ds.samples {
        h.update(s.id.as_bytes());
        h.update([0]);
        h.update(ds.attributes[&s.id].as_bytes());
        h.update([0]);
    }
    let text = serde_json::json!({
        "prompt": opts.prompt,
        "tokenizer": prompt.tokenizer_hash,
        "texts": hex::encode(h.finalize()),
    });
    Ok((image.to_string(), text.to_string()))
}

/// Loads the language model (up to the deepest layer `points` read) into `model` when `points`
/// has `llm.*` points: only when they are extracted, so a cached rerun never loads it.
fn load_language(
    ck: &Checkpoint,
    model: &mut VisionLanguageModel,
    points: &[FeaturePoint],
    opts: &ExtractOptions,
) -> Result<()> {
    let cfg = text_config(ck)?;
    let mut top = None;
    for p in points {
        if let FeaturePoint::Llm { layer, .. } = p {
            top = top.max(Some(cfg.resolve_layer(*layer)?));
        }
    }
    if let Some(top) = top {
        let lm = LanguageModel::load(ck, top, &opts.prompt, &opts.device, opts.dtype)
            .with_context(|| format!("model '{}': loading the language model", ck.id))?;
        model.language = Some(lm);
    }
    Ok(())
}

/// A non-finite row computed with a float16 residual stream may be the stream's overflow (values
/// past ±65504): the error says so and what avoids it. Other errors pass unchanged.
fn explain_write_error(e: anyhow::Error, compute_dtype: &str) -> anyhow::Error {
    if compute_dtype.ends_with("+f16-residual") && e.is::<NonFiniteRow>() {
        e.context(format!(
            "computing in {compute_dtype}: a float16 residual stream overflows past ±65504; \
             GAPPROBE_RESIDUAL=f32 (or unset) keeps it in float32"
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_row_from_an_f16_stream_names_the_range_and_the_way_out() {
        let nan = || {
            anyhow::Error::from(NonFiniteRow {
                split: Split::Train,
                row: 3,
                image: "7".into(),
                partial: "x.h5.partial".into(),
            })
        };
        let hint = format!("{:#}", explain_write_error(nan(), "bf16+f16-residual"));
        assert!(
            hint.contains("±65504") && hint.contains("GAPPROBE_RESIDUAL=f32"),
            "{hint}"
        );
        assert!(
            hint.contains("feature row 3 (image 7) contains NaN or Inf"),
            "{hint}"
        );
        // Other streams, and other errors, pass unchanged.
        let plain = format!("{:#}", explain_write_error(nan(), "bf16+f32-residual"));
        assert!(!plain.contains("65504"), "{plain}");
        let other = anyhow::anyhow!("train rows 0.. exceed the 4 planned rows");
        let other = format!("{:#}", explain_write_error(other, "bf16+f16-residual"));
        assert!(!other.contains("65504"), "{other}");
    }
}
