//! Orchestration: dataset + model → cached features → probes → report. The only place that wires
//! gapprobe-features, gapprobe-probes and gapprobe-reports together.

use crate::device::{parse_device, parse_dtype};
use crate::experiment::Experiment;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use gapprobe_features::cache::{
    compress, shard, source, CacheEntry, Compression, EntryLock, EntryPlan, EntryWriter,
    FeatureCache, Provenance, Shard, SplitData, SplitPlan, StorageDtype,
};
use gapprobe_features::datasets::{Dataset, LabelLevel, Sample, Split};
use gapprobe_features::extract::{extract_batches, forward_passes, ExtractOptions};
use gapprobe_features::models::{Checkpoint, VisionLanguageModel};
use gapprobe_features::FeaturePoint;
use gapprobe_probes::{run_probe, ProbeConfig, ProbeReport};
use gapprobe_reports::ResultRow;
use ndarray::{Array2, Axis};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tracing::info;

/// What a run did, written to `run_summary.json`.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    /// Encoder forward passes (batches) this run performed: 0 when everything came from the cache.
    pub forward_passes: u64,
    pub entries_reused: Vec<String>,
    pub entries_extracted: Vec<String>,
    pub results: usize,
}

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

/// Returns finished cache entries for every feature point, extracting only the missing ones
/// (all of them in one pass over the images).
#[allow(dead_code)]
pub fn ensure_features(
    cache: &FeatureCache,
    model_id: &str,
    ds: &Dataset,
    points: &[FeaturePoint],
    opts: &ExtractOptions,
    ui: &Ui,
    summary: &mut RunSummary,
) -> Result<Vec<CacheEntry>> {
    let copts = CacheOptions::default();
    ensure_features_with(cache, model_id, ds, points, opts, &copts, ui, summary)
}

/// [`ensure_features`] with explicit cache options. Missing entries are locked, written in
/// row blocks to `.partial` files (resuming any left by an interrupted run) and renamed when
/// complete. With a shard, the returned entries are the shard files.
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
    let model = VisionLanguageModel::load(&ck, max_layer, &opts.device, opts.dtype)
        .with_context(|| format!("loading model '{model_id}'"))?;
    // Refuse impossible requests (a CLS point on SigLIP, a layer past the end) before any image.
    for p in points {
        model
            .check_point(p)
            .with_context(|| format!("feature point {p} on model '{model_id}'"))?;
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
            compute_dtype: format!("{:?}", opts.dtype).to_lowercase(),
            storage_dtype: copts.storage.to_string(),
            device: format!("{:?}", opts.device).to_lowercase(),
            gapprobe_version: gapprobe_features::VERSION.into(),
            dataset: ds.name.clone(),
            manifest_hash: manifest_hash.clone(),
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
        let batch = opts.batch_size.max(1);
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
        let todo: Vec<FeaturePoint> = missing.iter().map(|&i| points[i]).collect();
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
        let opts = ExtractOptions {
            batch_size: writers[0].batch_size().max(1),
            ..opts.clone()
        };
        for ((split, samples), plan) in splits.iter().zip(&split_plans) {
            let done = writers
                .iter()
                .map(|w| w.rows_done(*split))
                .min()
                .unwrap_or(0);
            let start = done / opts.batch_size * opts.batch_size;
            if done == plan.rows.len() {
                continue;
            }
            let paths: Vec<PathBuf> = samples[plan.rows.start + start..plan.rows.end]
                .iter()
                .map(|s| ds.image_path(s))
                .collect();
            let bar = ui.bar(
                plan.rows.len() as u64,
                &format!("extract {}/{split}", ds.name),
            );
            bar.inc(start as u64);
            extract_batches(
                &model,
                &preprocess,
                &paths,
                &todo,
                &opts,
                &bar,
                |row0, feats| {
                    let n = feats[0].shape()[0];
                    for (w, f) in writers.iter_mut().zip(&feats) {
                        w.write_rows(*split, start + row0, f.view())?;
                    }
                    if let Some(ms) = delay {
                        eprintln!("gapprobe-test: {split} rows_done {}", start + row0 + n);
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    Ok(())
                },
            )?;
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

/// Features and labels of one split at one level, rows without a label dropped.
fn level_arrays(
    data: &SplitData,
    level: LabelLevel,
    path: &Path,
) -> Result<(Array2<f32>, Vec<u32>)> {
    let labels = data.labels[level as usize]
        .as_ref()
        .with_context(|| format!("{} has no {level} labels", path.display()))?;
    let x = data
        .features
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .with_context(|| {
            format!(
                "{}: probes need pooled [N, D] features, not {:?}",
                path.display(),
                data.features.shape()
            )
        })?;
    let keep: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] >= 0).collect();
    Ok((
        x.select(Axis(0), &keep),
        keep.iter().map(|&i| labels[i] as u32).collect(),
    ))
}

/// Probes one cache entry at `levels` (every level it has when empty).
pub fn probe_entry(
    entry: &CacheEntry,
    levels: &[LabelLevel],
    cfg: &ProbeConfig,
    ui: &Ui,
) -> Result<Vec<(LabelLevel, ProbeReport)>> {
    let classes = entry.classes()?;
    let train = entry.read_split(Split::Train)?;
    let test = entry.read_split(Split::Test)?;
    let levels: Vec<LabelLevel> = if levels.is_empty() {
        LabelLevel::ALL
            .into_iter()
            .filter(|l| !classes[*l as usize].is_empty())
            .collect()
    } else {
        levels.to_vec()
    };
    let mut out = Vec::new();
    for level in levels {
        let n_classes = classes[level as usize].len();
        if n_classes < 2 {
            info!(
                "skipping {level} of {}: it has {n_classes} class(es), nothing to probe",
                entry.path.display()
            );
            continue;
        }
        let (xtr, ytr) = level_arrays(&train, level, &entry.path)?;
        let (xte, yte) = level_arrays(&test, level, &entry.path)?;
        let spinner = ui.spinner(&format!("probe {} {level}", entry.provenance.feature_point));
        let report = run_probe(xtr.view(), &ytr, xte.view(), &yte, n_classes, cfg)
            .with_context(|| format!("probing {level} on {}", entry.path.display()))?;
        spinner.finish_and_clear();
        info!(
            "{} {level}: top-1 {:.1}% (C = {:.3e})",
            entry.provenance.feature_point,
            report.top1 * 100.0,
            report.chosen_c
        );
        out.push((level, report));
    }
    Ok(out)
}

/// One results row from a probe report.
pub fn result_row(
    entry: &CacheEntry,
    level: LabelLevel,
    r: &ProbeReport,
    cfg: &ProbeConfig,
) -> Result<ResultRow> {
    let fp: FeaturePoint = entry.provenance.feature_point.parse()?;
    Ok(ResultRow {
        dataset: entry.provenance.dataset.clone(),
        model: entry.provenance.model_id.clone(),
        feature_point: fp.to_string(),
        stage: fp.stage().into(),
        level: level.to_string(),
        top1: r.top1,
        top1_ci_low: r.top1_ci.0,
        top1_ci_high: r.top1_ci.1,
        top5: r.top5,
        mean_per_class: r.mean_per_class,
        macro_f1: r.macro_f1,
        chosen_c: r.chosen_c,
        n_train: r.n_train as u64,
        n_test: r.n_test as u64,
        n_classes: r.n_classes as u64,
        solver: cfg.solver.to_string(),
        cache_key: entry.key.clone(),
    })
}

/// Writes results.csv, results.json, the figure and report.md into `out`.
pub fn write_report(
    out: &Path,
    title: &str,
    model: &str,
    notes: &[String],
    rows: &[ResultRow],
    details: &serde_json::Value,
    command: &str,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    gapprobe_reports::write_results_csv(rows, &out.join("results.csv"))?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(details)?,
    )?;
    let fig = gapprobe_reports::FigureOptions {
        title: title.to_string(),
        ..Default::default()
    };
    gapprobe_reports::modality_gap_figure(
        rows,
        &out.join("modality_gap.png"),
        &out.join("modality_gap.svg"),
        &fig,
    )?;
    let ctx = gapprobe_reports::ReportContext {
        title: title.into(),
        model: model.into(),
        notes: notes.to_vec(),
        figure: "modality_gap.png".into(),
        command: command.into(),
    };
    std::fs::write(
        out.join("report.md"),
        gapprobe_reports::markdown_report(rows, &ctx),
    )?;
    Ok(())
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
    let opts = ExtractOptions {
        batch_size: exp.model.batch_size,
        device: parse_device(&exp.model.device)?,
        dtype: parse_dtype(&exp.model.dtype)?,
    };
    let mut summary = RunSummary::default();
    let mut rows = Vec::new();
    let mut details = Vec::new();
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
        let entries = ensure_features_with(
            &cache,
            &exp.model.id,
            &ds,
            &points,
            &opts,
            &CacheOptions {
                dataset_spec: spec.to_string(),
                compress: exp
                    .model
                    .compress
                    .map(|l| Compression::new(l, false))
                    .transpose()?,
                ..Default::default()
            },
            ui,
            &mut summary,
        )?;
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
            for (level, report) in probe_entry(entry, &levels, &cfg, ui)? {
                rows.push(result_row(entry, level, &report, &cfg)?);
                details.push(serde_json::json!({
                    "dataset": ds.name, "feature_point": entry.provenance.feature_point, "level": level,
                    "cache_key": entry.key, "provenance": entry.provenance, "report": report,
                }));
            }
        }
    }
    write_report(
        &exp.output,
        &exp.name,
        &exp.model.id,
        &notes,
        &rows,
        &serde_json::Value::Array(details),
        command,
    )?;
    summary.forward_passes = forward_passes() - start_passes;
    summary.results = rows.len();
    std::fs::write(
        exp.output.join("run_summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}
