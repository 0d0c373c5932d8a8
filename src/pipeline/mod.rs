//! Orchestration: dataset + model → cached features → probes → report. The only place that wires
//! gapprobe-features, gapprobe-probes and gapprobe-reports together.
//!
//! [`features`] fills the cache, [`probing`] turns entries into scores, [`similarity`] compares
//! two entries' representations, [`report`] writes files;
//! [`run_experiment`] runs all three for an experiment TOML.

mod answerer;
mod answers;
mod features;
mod probing;
mod report;
mod similarity;
pub mod zero_shot;

pub use features::{ensure_features_with, CacheOptions};
pub use probing::probe_entry;
pub use report::{write_report, ReportInput, ZERO_SHOT_TITLE};
pub use similarity::{compare_pairs, CompareOptions};

use crate::device::{parse_device, parse_dtype};
use crate::experiment::Experiment;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use gapprobe_features::cache::{Compression, FeatureCache};
use gapprobe_features::datasets::Split;
use gapprobe_features::extract::{forward_passes, ExtractOptions};
use gapprobe_features::FeaturePoint;
use serde::Serialize;
use tracing::{info, warn};

/// What a run did, written to `run_summary.json`.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    /// Encoder forward passes (batches) this run performed: 0 when everything came from the cache.
    pub forward_passes: u64,
    pub entries_reused: Vec<String>,
    pub entries_extracted: Vec<String>,
    pub results: usize,
}

/// A report note listing what the loader skipped (`skip_bad`), the first ten by name.
fn skipped_note(dataset: &str, skipped: &[gapprobe_features::datasets::SkippedItem]) -> String {
    let mut s = format!(
        "Dataset '{dataset}': {} item(s) were skipped (skip_bad) and are not in any result; each cache entry lists them in its `skipped` attribute.",
        skipped.len()
    );
    for item in skipped.iter().take(10) {
        s.push_str(&format!(" `{}`: {};", item.path.display(), item.reason));
    }
    if skipped.len() > 10 {
        s.push_str(&format!(" and {} more.", skipped.len() - 10));
    }
    s
}

/// Runs a whole experiment and returns what it did.
pub fn run_experiment(exp: &Experiment, ui: &Ui, command: &str) -> Result<RunSummary> {
    let start_passes = forward_passes();
    let cache = FeatureCache::new(exp.cache_root());
    let cfg = exp.probe.to_config()?;
    let models = exp.all_models()?;
    let mut model_opts = Vec::new();
    for m in &models {
        let opts = ExtractOptions {
            batch_size: m.batch_size,
            device: parse_device(&m.device)?,
            dtype: parse_dtype(&m.dtype)?,
            f32_residual: m.f32_residual,
            prompt: m.prompt.clone(),
        };
        crate::device::check_dtype_on(&opts.device, opts.dtype)?;
        model_opts.push(opts);
    }
    let mut summary = RunSummary::default();
    let mut rows = Vec::new();
    let mut details = Vec::new();
    let mut class_rows = Vec::new();
    let mut similarity_rows = Vec::new();
    let mut zero_shot_rows = Vec::new();
    let similarity_opts = exp.similarity.to_options()?;
    let mut notes = exp.notes.clone();
    for section in &exp.datasets {
        let (spec, points, levels) = section.parse()?;
        let ds = spec
            .load()
            .with_context(|| format!("loading dataset {spec}"))?;
        if ds.split(Split::Train).is_empty() || ds.split(Split::Test).is_empty() {
            bail!("dataset {spec} needs both train and test images to probe");
        }
        if !ds.skipped.is_empty() {
            notes.push(skipped_note(&ds.name, &ds.skipped));
        }
        // Each model on the same images; similarity compares points within one model.
        for (m, opts) in models.iter().zip(&model_opts) {
            let entries = ensure_features_with(
                &cache,
                &m.id,
                &ds,
                &points,
                opts,
                &CacheOptions {
                    dataset_spec: spec.to_string(),
                    compress: m.compress.map(|l| Compression::new(l, false)).transpose()?,
                    ..Default::default()
                },
                ui,
                &mut summary,
            )?;
            let mut pooled = Vec::new();
            for entry in &entries {
                if !entry
                    .provenance
                    .feature_point
                    .parse::<FeaturePoint>()?
                    .is_pooled()
                {
                    info!(
                        "not probing {}: unpooled features are cached for other uses",
                        entry.provenance.feature_point
                    );
                    continue;
                }
                pooled.push(entry);
                let probed = probe_entry(entry, &levels, &cfg, ui)?;
                rows.extend(probed.rows);
                details.extend(probed.details);
                class_rows.extend(probed.classes);
            }
            if exp.similarity.enabled {
                // Similarity is an addition to the probes: a pair that cannot be compared becomes
                // a note in the report, never a run that loses the probe results above.
                for c in compare_pairs(&pooled, &similarity_opts, ui) {
                    match c {
                        Ok(row) => similarity_rows.push(row),
                        Err(e) => {
                            warn!("{e:#}");
                            let which = if models.len() > 1 {
                                format!("Dataset '{}', model '{}'", ds.name, m.id)
                            } else {
                                format!("Dataset '{}'", ds.name)
                            };
                            notes
                                .push(format!("{which}: {e:#}. The other results are unaffected."));
                        }
                    }
                }
            }
            if exp.zero_shot.enabled {
                let levels = if levels.is_empty() {
                    ds.levels()
                } else {
                    levels.clone()
                };
                let zopts = exp.zero_shot.to_options(
                    &m.id,
                    levels,
                    &opts.device,
                    opts.dtype,
                    &exp.output,
                )?;
                zero_shot::check(&ds, &zopts)?;
                let model = zero_shot::Answerer::load(&zopts)?;
                zero_shot_rows.extend(zero_shot::zero_shot(&model, &ds, &zopts, ui)?);
            }
        }
    }
    let details = serde_json::Value::Array(details);
    write_report(
        &exp.output,
        &ReportInput {
            title: &exp.name,
            model: &models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            notes: &notes,
            rows: &rows,
            classes: &class_rows,
            similarity: &similarity_rows,
            zero_shot: &zero_shot_rows,
            details: Some(&details),
            command,
        },
    )?;
    summary.forward_passes = forward_passes() - start_passes;
    summary.results = rows.len();
    std::fs::write(
        exp.output.join("run_summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}
