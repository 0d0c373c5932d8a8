//! gapprobe-reports: probe scores → figures and tables.
//!
//! Knows nothing of models or images: it takes [`ResultRow`]s (and [`SimilarityRow`]s) and writes
//! `results.csv` ([`write_results_csv`]; `similarity.csv`, [`write_similarity_csv`]), the
//! modality-gap figure as PNG and SVG ([`modality_gap_figure`]; probe accuracy by layer,
//! [`layer_figure`]; the similarity matrices, [`similarity_figure`]) and a markdown report
//! ([`markdown_report`]). Text is drawn with an embedded DejaVu Sans, so no
//! system fonts or fontconfig are needed.

mod figure;
mod layer_figure;
mod markdown;
mod similarity_figure;
mod similarity_table;
mod table;

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

/// Result rows for the crate's tests.
#[cfg(test)]
pub(crate) mod test_rows {
    use crate::ResultRow;

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
