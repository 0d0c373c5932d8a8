//! Writing results.csv/.parquet/.json, similarity.csv/.parquet, the figures and report.md.

use anyhow::{Context, Result};
use gapprobe_reports::{ClassRow, ResultRow, SimilarityRow, ZeroShotRow};
use std::path::Path;
use tracing::info;

/// The files the similarity rows are written to.
const SIMILARITY_FILES: [&str; 4] = [
    "similarity.csv",
    "similarity.parquet",
    "similarity.png",
    "similarity.svg",
];

/// Caption of the image-vs-text figure.
const TEXT_TITLE: &str = "Probes on the LLM's hidden state: the image vs its attribute text";

/// Caption of the per-class figure.
const CLASS_TITLE: &str =
    "Per-class test accuracy before vs after the projection (best probe of each stage)";

/// Caption of the few-shot figure.
const FEW_SHOT_TITLE: &str = "Few-shot linear probes: top-1 vs training images per class";

/// Caption of the zero-shot figure.
pub const ZERO_SHOT_TITLE: &str = "Zero-shot exact match by label level (Finer's metric)";

/// Removes `paths` left by an earlier run unless this run `made` them.
fn remove_unless(made: bool, paths: &[&Path]) -> Result<()> {
    if made {
        return Ok(());
    }
    for path in paths {
        if path.is_file() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// What a report is made from.
pub struct ReportInput<'a> {
    pub title: &'a str,
    /// Model id or path the features came from.
    pub model: &'a str,
    /// Caveats shown at the top of report.md.
    pub notes: &'a [String],
    pub rows: &'a [ResultRow],
    /// Each class's accuracy under each standard probe (per_class.csv when not empty).
    pub classes: &'a [ClassRow],
    /// Representation similarity between feature points (similarity.csv when not empty).
    pub similarity: &'a [SimilarityRow],
    /// Zero-shot answers' scores (zero_shot.csv/.parquet/.png/.svg when not empty).
    pub zero_shot: &'a [ZeroShotRow],
    /// Written to results.json when given; `None` leaves an existing results.json alone (the
    /// `report` command re-renders from results.csv and has no per-probe details).
    pub details: Option<&'a serde_json::Value>,
    /// Command that reproduces the report.
    pub command: &'a str,
}

/// Writes results.csv/.parquet/.json, per_class.csv/.parquet, similarity.csv/.parquet/.png/.svg,
/// the modality-gap figure,
/// the probe-accuracy-by-layer figure (layers.png/.svg, when the rows hold a layer sweep), the
/// image-vs-text figure (image_vs_text.png/.svg, when the rows hold both `llm.image` and
/// `llm.text` points), the few-shot figure (few_shot.png/.svg, when the rows hold few-shot
/// probes) and report.md into `out`.
pub fn write_report(out: &Path, input: &ReportInput) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    gapprobe_reports::write_results_csv(input.rows, &out.join("results.csv"))?;
    gapprobe_reports::write_results_parquet(input.rows, &out.join("results.parquet"))?;
    if let Some(details) = input.details {
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(details)?,
        )?;
    }
    if !input.classes.is_empty() {
        gapprobe_reports::write_class_csv(input.classes, &out.join("per_class.csv"))?;
        gapprobe_reports::write_class_parquet(input.classes, &out.join("per_class.parquet"))?;
    } else if input.details.is_some() {
        // A fresh run without class rows: an earlier run's would be read as this run's.
        remove_unless(
            false,
            &[&out.join("per_class.csv"), &out.join("per_class.parquet")],
        )?;
    }
    if input.similarity.is_empty() && input.details.is_some() {
        // A fresh run without similarity rows: an earlier run's files would be read as this
        // run's (`gapprobe report` picks up similarity.csv), so they go.
        for name in SIMILARITY_FILES {
            let path = out.join(name);
            if path.is_file() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the stale {}", path.display()))?;
                info!("removed {} from an earlier run", path.display());
            }
        }
    }
    if !input.similarity.is_empty() {
        gapprobe_reports::write_similarity_csv(input.similarity, &out.join("similarity.csv"))?;
        gapprobe_reports::write_similarity_parquet(
            input.similarity,
            &out.join("similarity.parquet"),
        )?;
        gapprobe_reports::similarity_figure(
            input.similarity,
            &out.join("similarity.png"),
            &out.join("similarity.svg"),
        )?;
    }
    let fig = gapprobe_reports::FigureOptions {
        title: input.title.to_string(),
        ..Default::default()
    };
    gapprobe_reports::modality_gap_figure(
        input.rows,
        &out.join("modality_gap.png"),
        &out.join("modality_gap.svg"),
        &fig,
    )?;
    // The optional figures are drawn from the rows alone, so one left from other rows goes.
    let (layers_png, layers_svg) = (out.join("layers.png"), out.join("layers.svg"));
    let layers = gapprobe_reports::layer_figure(input.rows, &layers_png, &layers_svg, input.title)?;
    remove_unless(layers, &[&layers_png, &layers_svg])?;
    // The image-vs-text figure, when the rows have both of the LLM's arms.
    let (text_png, text_svg) = (out.join("image_vs_text.png"), out.join("image_vs_text.svg"));
    let text =
        gapprobe_reports::image_vs_text_figure(input.rows, &text_png, &text_svg, TEXT_TITLE)?;
    remove_unless(text, &[&text_png, &text_svg])?;
    // The few-shot figure, when the rows have few-shot probes.
    let (few_png, few_svg) = (out.join("few_shot.png"), out.join("few_shot.svg"));
    let few = gapprobe_reports::few_shot_figure(input.rows, &few_png, &few_svg, FEW_SHOT_TITLE)?;
    remove_unless(few, &[&few_png, &few_svg])?;
    // The per-class figure, when per_class rows cover the best probe of both stages.
    let (class_png, class_svg) = (out.join("per_class.png"), out.join("per_class.svg"));
    let class = gapprobe_reports::class_figure(
        input.rows,
        input.classes,
        &class_png,
        &class_svg,
        CLASS_TITLE,
    )?;
    remove_unless(class, &[&class_png, &class_svg])?;
    // The zero-shot tables and figure, when there are answers. Without, zero_shot.* files are
    // left alone: `gapprobe zero-shot` may have written them into this folder.
    let zero_shot = !input.zero_shot.is_empty();
    if zero_shot {
        gapprobe_reports::write_zero_shot_csv(input.zero_shot, &out.join("zero_shot.csv"))?;
        gapprobe_reports::write_zero_shot_parquet(input.zero_shot, &out.join("zero_shot.parquet"))?;
        gapprobe_reports::zero_shot_figure(
            input.zero_shot,
            &out.join("zero_shot.png"),
            &out.join("zero_shot.svg"),
            ZERO_SHOT_TITLE,
        )?;
    }
    let ctx = gapprobe_reports::ReportContext {
        title: input.title.into(),
        model: input.model.into(),
        notes: input.notes.to_vec(),
        figure: "modality_gap.png".into(),
        command: input.command.into(),
        similarity: input.similarity.to_vec(),
        similarity_figure: if input.similarity.is_empty() {
            String::new()
        } else {
            "similarity.png".into()
        },
        layer_figure: if layers {
            "layers.png".into()
        } else {
            String::new()
        },
        text_figure: if text {
            "image_vs_text.png".into()
        } else {
            String::new()
        },
        few_shot_figure: if few {
            "few_shot.png".into()
        } else {
            String::new()
        },
        class_figure: if class {
            "per_class.png".into()
        } else {
            String::new()
        },
        classes: input.classes.to_vec(),
        zero_shot: input.zero_shot.to_vec(),
        zero_shot_figure: if zero_shot {
            "zero_shot.png".into()
        } else {
            String::new()
        },
    };
    std::fs::write(
        out.join("report.md"),
        gapprobe_reports::markdown_report(input.rows, &ctx),
    )?;
    Ok(())
}
