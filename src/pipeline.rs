//! Orchestration: dataset + model → cached features → probes → report. The only place that wires
//! gapprobe-features, gapprobe-probes and gapprobe-reports together.

use crate::device::{parse_device, parse_dtype};
use crate::experiment::Experiment;
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use gapprobe_features::cache::{CacheEntry, EntryData, FeatureCache, Provenance, SplitData};
use gapprobe_features::datasets::{Dataset, LabelLevel, Split};
use gapprobe_features::extract::{extract, forward_passes, ExtractOptions};
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

/// Returns finished cache entries for every feature point, extracting only the missing ones
/// (all of them in one pass over the images).
pub fn ensure_features(
    cache: &FeatureCache,
    model_id: &str,
    ds: &Dataset,
    points: &[FeaturePoint],
    opts: &ExtractOptions,
    ui: &Ui,
    summary: &mut RunSummary,
) -> Result<Vec<CacheEntry>> {
    let ck = Checkpoint::resolve(model_id)?;
    let max_layer = points
        .iter()
        .filter_map(|p| match p {
            FeaturePoint::Vision { layer, .. } => Some(*layer),
            FeaturePoint::Projector { .. } => None,
        })
        .map(|l| {
            let n = ck.config.get("vision_config").unwrap_or(&ck.config)["num_hidden_layers"]
                .as_i64()
                .unwrap_or(0);
            if l < 0 { n + 1 + l } else { l }.max(0) as usize
        })
        .max()
        .unwrap_or(0);
    let model = VisionLanguageModel::load(&ck, max_layer, &opts.device, opts.dtype)
        .with_context(|| format!("loading model '{model_id}'"))?;
    let revision = ck
        .dir
        .parent()
        .filter(|p| p.ends_with("snapshots"))
        .and_then(|_| ck.dir.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "local".into());
    let manifest_hash = ds.manifest_hash();
    let provenance = |p: &FeaturePoint| Provenance {
        model_id: ck.id.clone(),
        model_revision: revision.clone(),
        weights_fingerprint: model.weights_fingerprint.clone(),
        config_hash: model.config_hash.clone(),
        preprocess: serde_json::to_string(&ck.preprocess).expect("serialises"),
        feature_point: p.to_string(),
        compute_dtype: format!("{:?}", opts.dtype).to_lowercase(),
        device: format!("{:?}", opts.device).to_lowercase(),
        gapprobe_version: gapprobe_features::VERSION.into(),
        dataset: ds.name.clone(),
        manifest_hash: manifest_hash.clone(),
    };
    let mut entries: Vec<Option<CacheEntry>> = Vec::new();
    let mut missing = Vec::new();
    for p in points {
        match cache.lookup(&provenance(p))? {
            Some(e) => {
                info!("reused cache entry {} for {p}", e.path.display());
                summary.entries_reused.push(e.path.display().to_string());
                entries.push(Some(e));
            }
            None => {
                missing.push(*p);
                entries.push(None);
            }
        }
    }
    if !missing.is_empty() {
        info!(
            "extracting {} feature point(s) from {} images of '{}'",
            missing.len(),
            ds.samples.len(),
            ds.name
        );
        let mut per_point: Vec<Vec<SplitData>> = vec![Vec::new(); missing.len()];
        for split in [Split::Train, Split::Val, Split::Test] {
            let samples = ds.split(split);
            if samples.is_empty() {
                continue;
            }
            let paths: Vec<PathBuf> = samples.iter().map(|s| ds.image_path(s)).collect();
            let bar = ui.bar(paths.len() as u64, &format!("extract {}/{split}", ds.name));
            let feats = extract(&model, &ck.preprocess, &paths, &missing, opts, &bar)?;
            bar.finish_and_clear();
            for (i, f) in feats.into_iter().enumerate() {
                let labels = LabelLevel::ALL.map(|level| {
                    (!ds.classes(level).is_empty()).then(|| {
                        samples
                            .iter()
                            .map(|s| s.label(level).map(|l| l as i32).unwrap_or(-1))
                            .collect()
                    })
                });
                per_point[i].push(SplitData {
                    split,
                    ids: samples.iter().map(|s| s.id.clone()).collect(),
                    paths: samples
                        .iter()
                        .map(|s| s.path.to_string_lossy().into_owned())
                        .collect(),
                    labels,
                    features: f,
                });
            }
        }
        for (p, splits) in missing.iter().zip(per_point) {
            let entry = cache.write(
                &provenance(p),
                &EntryData {
                    classes: ds.class_names.clone(),
                    splits,
                },
            )?;
            info!("cached {p} in {}", entry.path.display());
            summary
                .entries_extracted
                .push(entry.path.display().to_string());
            let slot = points
                .iter()
                .position(|q| q == p)
                .expect("missing points come from points");
            entries[slot] = Some(entry);
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
    for section in &exp.datasets {
        let (spec, points, levels) = section.parse()?;
        let ds = spec
            .load()
            .with_context(|| format!("loading dataset {spec}"))?;
        if ds.split(Split::Train).is_empty() || ds.split(Split::Test).is_empty() {
            bail!("dataset {spec} needs both train and test images to probe");
        }
        let entries =
            ensure_features(&cache, &exp.model.id, &ds, &points, &opts, ui, &mut summary)?;
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
        &exp.notes,
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
