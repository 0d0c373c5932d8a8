//! gapprobe-reports: probe scores → figures and tables.
//!
//! Knows nothing of models or images: it takes [`ResultRow`]s (and [`SimilarityRow`]s, and
//! [`ClassRow`]s: each class's accuracy under each standard probe) and writes `results.csv`
//! ([`write_results_csv`]; `similarity.csv`, [`write_similarity_csv`]; `per_class.csv`,
//! [`write_class_csv`]), the modality-gap figure as PNG and SVG ([`modality_gap_figure`]; probe
//! accuracy by layer, [`layer_figure`]; few-shot probe accuracy against training images per
//! class, [`few_shot_figure`]; per-class accuracy before against after the projection,
//! [`class_figure`]; the similarity matrices, [`similarity_figure`]) and a markdown report
//! ([`markdown_report`]; its per-class section lists the classes the projection loses). Few-shot
//! rows (`shots > 0`) appear only in `results.csv`, the few-shot figure and the report's few-shot
//! section; every other figure and table reads the standard probes alone. Rows of several models
//! (two runs' results together) are kept apart: a series, panel or table row per model, named by
//! its short name; rows of one model render as they always have. Text is drawn with an embedded
//! DejaVu Sans, so no system fonts or fontconfig are needed.

mod class_figure;
mod class_section;
mod class_table;
mod few_shot_figure;
mod few_shot_table;
mod figure;
mod layer_figure;
mod layer_section;
mod markdown;
mod models;
mod similarity_figure;
mod similarity_section;
mod similarity_table;
mod style;
mod table;

pub use class_figure::class_figure;
pub use class_table::{read_class_csv, write_class_csv, write_class_parquet};
pub use few_shot_figure::few_shot_figure;
pub use figure::{image_vs_text_figure, modality_gap_figure, FigureOptions};
pub use layer_figure::layer_figure;
pub use markdown::{markdown_report, ReportContext};
pub use similarity_figure::similarity_figure;
pub use similarity_table::{read_similarity_csv, write_similarity_csv, write_similarity_parquet};
pub use table::{read_results_csv, write_results_csv, write_results_parquet};

use serde::{Deserialize, Serialize};

/// One probe result: a dataset × feature point × label level (× shots per class for few-shot
/// probes, whose scores are means over `draws` random draws of the training images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub dataset: String,
    pub model: String,
    pub feature_point: String,
    /// `pre-projection`, `post-projection`, or the language model's `llm-image` / `llm-text`.
    pub stage: String,
    pub level: String,
    pub top1: f64,
    pub top1_ci_low: f64,
    pub top1_ci_high: f64,
    pub top5: f64,
    pub mean_per_class: f64,
    pub macro_f1: f64,
    pub chosen_c: f64,
    pub n_train: u64,
    pub n_test: u64,
    pub n_classes: u64,
    pub solver: String,
    /// Key of the cache entry the features came from.
    pub cache_key: String,
    /// Training images per class: 0 for the whole training split (the standard probe), `k` for
    /// a `k`-shot probe.
    #[serde(default)]
    pub shots: u64,
    /// Random draws of the `k` shots the scores average (1 for the standard probe).
    #[serde(default = "one")]
    pub draws: u64,
    /// Standard deviation of top-1 over the draws (0 for a single draw).
    #[serde(default)]
    pub top1_std: f64,
}

fn one() -> u64 {
    1
}

impl ResultRow {
    /// Whether this is a few-shot row (`shots > 0`).
    pub fn is_few_shot(&self) -> bool {
        self.shots > 0
    }
}

/// The standard probes' rows (`shots == 0`): every figure and table but the few-shot ones reads
/// only these, so few-shot rows never change them.
pub(crate) fn standard_rows(rows: &[ResultRow]) -> Vec<ResultRow> {
    rows.iter().filter(|r| !r.is_few_shot()).cloned().collect()
}

/// One class's test accuracy under one standard probe: how well a feature point tells that class
/// apart (top-1 recall over the class's test images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    pub dataset: String,
    pub model: String,
    pub feature_point: String,
    /// As in [`ResultRow::stage`].
    pub stage: String,
    pub level: String,
    /// The class's name at `level`.
    pub class: String,
    /// Its index in the dataset's class list at `level`.
    pub class_index: u64,
    /// Test images of the class.
    pub n_test: u64,
    /// Fraction of them the probe labels right.
    pub accuracy: f64,
    /// Key of the cache entry the features came from.
    pub cache_key: String,
}

/// Representation similarity of two feature points of one dataset (same images, one split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarityRow {
    pub dataset: String,
    pub model_a: String,
    pub feature_point_a: String,
    /// `pre-projection` or `post-projection`.
    pub stage_a: String,
    pub model_b: String,
    pub feature_point_b: String,
    pub stage_b: String,
    pub split: String,
    /// Rows compared.
    pub n: u64,
    /// Linear CKA (Kornblith et al. 2019).
    pub linear_cka: f64,
    /// Debiased linear CKA (unbiased HSIC).
    pub debiased_cka: f64,
    /// Mutual k-NN alignment (Huh et al. 2024) with `k` neighbours.
    pub mutual_knn: f64,
    pub k: u64,
    /// Centroid modality gap (Liang et al. 2022) when both have the same width; meaningful when
    /// the two share one space (`llm.image` and `llm.text` at one layer and read).
    #[serde(default)]
    pub centroid_gap: Option<f64>,
    pub cache_key_a: String,
    pub cache_key_b: String,
}

/// Result (and class) rows for the crate's tests.
#[cfg(test)]
pub(crate) mod test_rows {
    use crate::{ClassRow, ResultRow};

    /// Class `index` (named `class`) of the probe `r`, with `n_test` test images and `accuracy`.
    pub fn class_row(
        r: &ResultRow,
        index: u64,
        class: &str,
        n_test: u64,
        accuracy: f64,
    ) -> ClassRow {
        ClassRow {
            dataset: r.dataset.clone(),
            model: r.model.clone(),
            feature_point: r.feature_point.clone(),
            stage: r.stage.clone(),
            level: r.level.clone(),
            class: class.into(),
            class_index: index,
            n_test,
            accuracy,
            cache_key: r.cache_key.clone(),
        }
    }

    /// `r` as a probe of `model`.
    pub fn of_model(r: ResultRow, model: &str) -> ResultRow {
        ResultRow {
            model: model.into(),
            ..r
        }
    }

    /// A row of `dataset` with a ±3-point interval, 4 classes and 10 train / test images; the
    /// stage follows the feature point (`vision…` is pre-projection, anything else post).
    pub fn result_row(dataset: &str, feature_point: &str, level: &str, top1: f64) -> ResultRow {
        let stage = if feature_point.starts_with("vision") {
            "pre-projection"
        } else if feature_point.starts_with("llm.image") {
            "llm-image"
        } else if feature_point.starts_with("llm.text") {
            "llm-text"
        } else {
            "post-projection"
        };
        ResultRow {
            dataset: dataset.into(),
            model: "m".into(),
            feature_point: feature_point.into(),
            stage: stage.into(),
            level: level.into(),
            top1,
            top1_ci_low: top1 - 0.03,
            top1_ci_high: top1 + 0.03,
            top5: 1.0,
            mean_per_class: top1,
            macro_f1: top1,
            chosen_c: 1.0,
            n_train: 10,
            n_test: 10,
            n_classes: 4,
            solver: "candle".into(),
            cache_key: "k".into(),
            shots: 0,
            draws: 1,
            top1_std: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_rows::result_row as row;
    use crate::*;
    use std::path::Path;

    /// A few-shot copy of `r` at `shots` with another score.
    fn at(r: &ResultRow, shots: u64) -> ResultRow {
        ResultRow {
            shots,
            draws: 5,
            top1_std: 0.03,
            top1: r.top1 * 0.5 + 0.01 * shots as f64,
            ..r.clone()
        }
    }

    /// What every figure but the few-shot one writes (its PNG and SVG bytes, and whether it drew).
    fn figures(rows: &[ResultRow], dir: &Path) -> Vec<(bool, Vec<u8>, Vec<u8>)> {
        let files = |name: &str| {
            (
                dir.join(format!("{name}.png")),
                dir.join(format!("{name}.svg")),
            )
        };
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        let mut out = Vec::new();
        let (png, svg) = files("gap");
        let drew = modality_gap_figure(rows, &png, &svg, &FigureOptions::default()).is_ok();
        out.push((drew, read(&png), read(&svg)));
        let (png, svg) = files("text");
        let drew = image_vs_text_figure(rows, &png, &svg, "t").unwrap();
        out.push((drew, read(&png), read(&svg)));
        let (png, svg) = files("layers");
        let drew = layer_figure(rows, &png, &svg, "t").unwrap();
        out.push((drew, read(&png), read(&svg)));
        out
    }

    #[test]
    fn few_shot_rows_change_no_other_figure_or_table() {
        // Standard rows for every section: a layer sweep, the projector, both LLM arms.
        let mut standard = vec![row("d", "projector.mean", "fine", 0.4)];
        for (k, v) in [(1, 0.2), (2, 0.55), (3, 0.5)] {
            standard.push(row("d", &format!("vision.layer[{k}].cls"), "fine", v));
            standard.push(row("d", &format!("llm.image.layer[{k}].last"), "fine", v));
            standard.push(row(
                "d",
                &format!("llm.text.layer[{k}].last"),
                "fine",
                v + 0.3,
            ));
        }
        // Few-shot copies at two shot counts, plus points, layers, levels and a dataset only
        // few-shot rows have; some before the standard rows, so they would lead any order.
        let mut extra = vec![
            row("d", "vision.layer[4].cls", "fine", 0.9),
            row("d", "projector.cls", "coarse", 0.9),
            row("other", "llm.text.layer[1].last", "fine", 0.9),
        ];
        extra.extend(standard.iter().cloned());
        let few: Vec<ResultRow> = extra.iter().flat_map(|r| [at(r, 1), at(r, 8)]).collect();
        let (head, tail) = few.split_at(few.len() / 2);
        let mixed: Vec<ResultRow> = [head, &standard, tail].concat();

        let ctx = ReportContext {
            figure: "modality_gap.png".into(),
            layer_figure: "layers.png".into(),
            text_figure: "image_vs_text.png".into(),
            few_shot_figure: "few_shot.png".into(),
            ..Default::default()
        };
        let plain = markdown_report(&standard, &ctx);
        let md = markdown_report(&mixed, &ctx);
        assert!(!plain.contains("Few-shot"), "{plain}");
        // Only the new section differs, and it sits between the layer and image-vs-text ones.
        let (before, rest) = md
            .split_once("\n## Few-shot probes\n")
            .expect("the section");
        let after = &rest[rest.find("\n## ").expect("a section after it")..];
        assert!(before.contains("## Probe accuracy by layer"), "{md}");
        assert!(after.starts_with("\n## Image vs text"), "{md}");
        assert_eq!(format!("{before}{after}"), plain);

        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let drawn = figures(&standard, a.path());
        assert!(drawn
            .iter()
            .all(|(drew, png, svg)| *drew && !png.is_empty() && !svg.is_empty()));
        assert!(drawn == figures(&mixed, b.path()), "a figure changed");

        // Sweeps and arms that only few-shot rows have draw no figure and no section.
        let standard = vec![
            row("d", "vision.a", "fine", 0.6),
            row("d", "projector.mean", "fine", 0.4),
        ];
        let mixed = [&standard[..], &few].concat();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let drawn = figures(&mixed, a.path());
        assert!(drawn == figures(&standard, b.path()), "a figure changed");
        assert_eq!(
            drawn.iter().map(|d| d.0).collect::<Vec<_>>(),
            [true, false, false]
        );
        let md = markdown_report(&mixed, &ReportContext::default());
        assert!(
            !md.contains("by layer") && !md.contains("Image vs text"),
            "{md}"
        );
        // With only few-shot rows there is no modality-gap figure to draw, as with no rows.
        assert!(modality_gap_figure(
            &few,
            &a.path().join("g.png"),
            &a.path().join("g.svg"),
            &FigureOptions::default()
        )
        .is_err());
    }
}
