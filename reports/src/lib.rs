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
//! its short name; rows of one model render as they always have. Zero-shot answers
//! ([`ZeroShotRow`]s: the language model's greedy answer to "what is the name of the … in this
//! image?", with the photo or the image's attributes written out in its place, scored with the
//! Finer paper's exact match) go to `zero_shot.csv` ([`write_zero_shot_csv`]), the
//! performance-cliff figure, exact match by label level ([`zero_shot_figure`]), and the report's
//! zero-shot section; a report of zero-shot answers without probe rows leaves the probe tables
//! out. Text is drawn with an embedded DejaVu Sans, so no system fonts or fontconfig are needed.

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
mod zero_shot_figure;
mod zero_shot_section;
mod zero_shot_table;

pub use class_figure::class_figure;
pub use class_table::{read_class_csv, write_class_csv, write_class_parquet};
pub use few_shot_figure::few_shot_figure;
pub use figure::{image_vs_text_figure, modality_gap_figure, FigureOptions};
pub use layer_figure::layer_figure;
pub use markdown::{markdown_report, ReportContext};
pub use similarity_figure::similarity_figure;
pub use similarity_table::{read_similarity_csv, write_similarity_csv, write_similarity_parquet};
pub use table::{read_results_csv, write_results_csv, write_results_parquet};
pub use zero_shot_figure::zero_shot_figure;
pub use zero_shot_table::{read_zero_shot_csv, write_zero_shot_csv, write_zero_shot_parquet};

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

/// Zero-shot answers of one model on one dataset, arm and label level, scored with Finer's exact
/// match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotRow {
    pub dataset: String,
    /// Model id or path that answered.
    pub model: String,
    /// `image` (the photo) or `text` (the image's attributes written out in its place).
    pub arm: String,
    /// Label level asked for: `superordinate`, `coarse` or `fine`.
    pub level: String,
    /// Questions asked (test images).
    pub n: u64,
    /// Fraction of answers right under Finer's exact match (the normalised label within the
    /// first 20 words of the normalised answer), in [0, 1].
    pub exact_match: f64,
    /// Lower end of the 95% bootstrap interval of `exact_match`.
    pub em_ci_low: f64,
    /// Upper end of the 95% bootstrap interval of `exact_match`.
    pub em_ci_high: f64,
    /// Mean token F1 between answer and label, in [0, 1].
    pub f1: f64,
    /// The question template as asked.
    pub prompt: String,
    /// Greedy decoding's budget of new tokens.
    pub max_new_tokens: u64,
    /// Fingerprint of the weights and tokenizer the answers came from.
    pub model_key: String,
}

/// Result (class and zero-shot) rows for the crate's tests.
#[cfg(test)]
pub(crate) mod test_rows {
    use crate::{ClassRow, ResultRow, ZeroShotRow};

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

    /// A zero-shot answer of model `m` on `dataset`: 100 questions, a ±5-point interval (within
    /// 0–100%), F1 halfway between `em` and 1, Finer's question, 32 new tokens, key `k`.
    pub fn zero_shot_row(dataset: &str, arm: &str, level: &str, em: f64) -> ZeroShotRow {
        ZeroShotRow {
            dataset: dataset.into(),
            model: "m".into(),
            arm: arm.into(),
            level: level.into(),
            n: 100,
            exact_match: em,
            em_ci_low: (em - 0.05).max(0.0),
            em_ci_high: (em + 0.05).min(1.0),
            f1: (em + 1.0) / 2.0,
            prompt: "What is the name of the {concept} in this image?".into(),
            max_new_tokens: 32,
            model_key: "k".into(),
        }
    }
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
