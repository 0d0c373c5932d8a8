//! Writing results.csv, results.json, the figure and report.md.

use anyhow::{Context, Result};
use gapprobe_reports::ResultRow;
use std::path::Path;

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
