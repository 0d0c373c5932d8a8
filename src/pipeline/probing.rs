//! Probing cache entries: features and labels per level → probe reports → result rows.

use crate::ui::Ui;
use anyhow::{Context, Result};
use gapprobe_features::cache::{CacheEntry, SplitData};
use gapprobe_features::datasets::{LabelLevel, Split};
use gapprobe_features::FeaturePoint;
use gapprobe_probes::{run_few_shot_probe, run_probe, FewShotReport, ProbeConfig, ProbeReport};
use gapprobe_reports::{ClassRow, ResultRow};
use ndarray::{Array2, Axis};
use std::path::Path;
use tracing::{info, warn};

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

/// Result rows of one cache entry with their details for results.json and, for the standard
/// probes, each test class's accuracy.
#[derive(Default)]
pub struct Probed {
    pub rows: Vec<ResultRow>,
    pub details: Vec<serde_json::Value>,
    pub classes: Vec<ClassRow>,
}

/// Probes one cache entry at `levels` (every level it has when empty): the standard probe, then
/// each of `cfg.few_shot`'s k-shot probes over `cfg.few_shot_draws` draws.
pub fn probe_entry(
    entry: &CacheEntry,
    levels: &[LabelLevel],
    cfg: &ProbeConfig,
    ui: &Ui,
) -> Result<Probed> {
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
    let fp = &entry.provenance.feature_point;
    let mut out = Probed::default();
    let detail = |level: LabelLevel, report: serde_json::Value| {
        serde_json::json!({
            "dataset": entry.provenance.dataset, "feature_point": fp, "level": level,
            "cache_key": entry.key, "provenance": entry.provenance, "report": report,
        })
    };
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
        let spinner = ui.spinner(&format!("probe {fp} {level}"));
        let report = run_probe(xtr.view(), &ytr, xte.view(), &yte, n_classes, cfg)
            .with_context(|| format!("probing {level} on {}", entry.path.display()))?;
        spinner.finish_and_clear();
        info!(
            "{fp} {level}: top-1 {:.1}% (C = {:.3e})",
            report.top1 * 100.0,
            report.chosen_c
        );
        let row = result_row(entry, level, &report, cfg)?;
        out.classes
            .extend(class_rows(&row, &report, &classes[level as usize]));
        out.rows.push(row);
        out.details
            .push(detail(level, serde_json::to_value(&report)?));
        for &k in &cfg.few_shot {
            let spinner = ui.spinner(&format!(
                "probe {fp} {level} {k}-shot ×{}",
                cfg.few_shot_draws
            ));
            let r = run_few_shot_probe(xtr.view(), &ytr, xte.view(), &yte, n_classes, cfg, k)
                .with_context(|| {
                    format!("{k}-shot probe of {level} on {}", entry.path.display())
                })?;
            spinner.finish_and_clear();
            if !r.short_classes.is_empty() {
                warn!(
                    "{fp} {level} {k}-shot: {} of {n_classes} classes have fewer than {k} \
                     training images and train on all they have",
                    r.short_classes.len()
                );
            }
            info!(
                "{fp} {level} {k}-shot: top-1 {:.1}% ± {:.1} over {} draws",
                r.top1 * 100.0,
                r.top1_std * 100.0,
                cfg.few_shot_draws
            );
            out.rows.push(few_shot_row(entry, level, &r, cfg)?);
            out.details.push(detail(level, serde_json::to_value(&r)?));
        }
    }
    Ok(out)
}

/// One results row from a probe report.
fn result_row(
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
        shots: 0,
        draws: 1,
        top1_std: 0.0,
    })
}

/// Each class of `row`'s level with test images: its accuracy under the probe (`names` are the
/// level's class names, in index order).
fn class_rows(row: &ResultRow, report: &ProbeReport, names: &[String]) -> Vec<ClassRow> {
    report
        .per_class_accuracy
        .iter()
        .enumerate()
        .filter_map(|(k, acc)| {
            Some(ClassRow {
                dataset: row.dataset.clone(),
                model: row.model.clone(),
                feature_point: row.feature_point.clone(),
                stage: row.stage.clone(),
                level: row.level.clone(),
                class: names.get(k).cloned().unwrap_or_else(|| k.to_string()),
                class_index: k as u64,
                n_test: report.confusion[k].iter().map(|&c| c as u64).sum(),
                accuracy: (*acc)?,
                cache_key: row.cache_key.clone(),
            })
        })
        .collect()
}

/// One results row from a few-shot report: means over its draws, otherwise as a standard row.
fn few_shot_row(
    entry: &CacheEntry,
    level: LabelLevel,
    r: &FewShotReport,
    cfg: &ProbeConfig,
) -> Result<ResultRow> {
    let first = &r.draws[0];
    Ok(ResultRow {
        top1: r.top1,
        top1_ci_low: r.top1_ci.0,
        top1_ci_high: r.top1_ci.1,
        top5: r.top5,
        mean_per_class: r.mean_per_class,
        macro_f1: r.macro_f1,
        chosen_c: r.chosen_c,
        n_train: r.n_train as u64,
        shots: r.shots as u64,
        draws: r.draws.len() as u64,
        top1_std: r.top1_std,
        ..result_row(entry, level, first, cfg)?
    })
}
