//! Experiment files: one TOML names the model, datasets, feature points, probe settings and the
//! output folder. `gapprobe run experiment.toml` executes extract → cache → probe → report.

use crate::zero_shot_cmd::ZeroShotSection;
use anyhow::{bail, Context, Result};
use gapprobe_features::batching::BatchSize;
use gapprobe_features::datasets::{DatasetSpec, LabelLevel};
use gapprobe_features::FeaturePoint;
use gapprobe_probes::{ProbeConfig, Solver};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment, as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Title of the report.
    pub name: String,
    /// Folder for report.md, figures, results.csv / .json.
    pub output: PathBuf,
    /// Cache root; default `<output>/cache`.
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// The model (`[model]`); or several, compared in one report (`[[models]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSection>,
    pub datasets: Vec<DatasetSection>,
    #[serde(default)]
    pub probe: ProbeSection,
    #[serde(default)]
    pub similarity: SimilaritySection,
    /// Zero-shot answers scored with Finer's exact match (`[zero_shot]`, off by default).
    #[serde(default, skip_serializing_if = "ZeroShotSection::is_off")]
    pub zero_shot: ZeroShotSection,
    /// Caveats printed at the top of the report.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Which checkpoint, and how to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Local folder or Hugging Face hub id.
    pub id: String,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Keep the residual stream in f32 around bf16/f16 layers (`extract --f32-residual`);
    /// unset: f32 around bf16, f16 around f16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_residual: Option<bool>,
    /// The language model's prompt for `llm.*` feature points (`extract --prompt`), `<image>`
    /// where the image or its attribute text goes.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Images per forward pass, or "auto" (the default): from free GPU memory, 32 on the CPU.
    #[serde(default)]
    pub batch_size: BatchSize,
    /// Deflate level (1-9) to compress each new cache entry with once it is finished; absent:
    /// uncompressed. Storage only: the cache key does not change.
    #[serde(default)]
    pub compress: Option<u8>,
}

/// One dataset and what to read from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSection {
    /// Dataset spec, e.g. `manifest:/data/birds.csv`.
    pub spec: String,
    pub feature_points: Vec<String>,
    /// Label levels to probe; default: every level the dataset has.
    #[serde(default)]
    pub levels: Vec<String>,
}

/// Probe settings (see gapprobe-probes' `ProbeConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    #[serde(default = "default_grid")]
    pub c_grid: Vec<f64>,
    #[serde(default = "yes")]
    pub refine: bool,
    #[serde(default = "default_val")]
    pub val_fraction: f64,
    #[serde(default = "yes")]
    pub refit_on_train_val: bool,
    #[serde(default = "default_tol")]
    pub tol: f64,
    #[serde(default = "default_iter")]
    pub max_iter: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_boot")]
    pub bootstrap: usize,
    #[serde(default = "default_solver")]
    pub solver: String,
    /// Few-shot probes besides the standard one: training images per class, e.g. [1, 2, 4, 8, 16].
    #[serde(default)]
    pub shots: Vec<usize>,
    /// Random draws each few-shot score averages.
    #[serde(default = "default_draws")]
    pub shot_draws: usize,
}

fn default_draws() -> usize {
    ProbeConfig::default().few_shot_draws
}
fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}
fn default_prompt() -> String {
    gapprobe_features::models::DEFAULT_PROMPT.into()
}
fn default_grid() -> Vec<f64> {
    ProbeConfig::default().c_grid
}
fn yes() -> bool {
    true
}
fn default_val() -> f64 {
    ProbeConfig::default().val_fraction
}
fn default_tol() -> f64 {
    ProbeConfig::default().tol
}
fn default_iter() -> usize {
    ProbeConfig::default().max_iter
}
fn default_boot() -> usize {
    ProbeConfig::default().bootstrap
}
fn default_solver() -> String {
    ProbeConfig::default().solver.to_string()
}

impl Default for ProbeSection {
    fn default() -> Self {
        toml::from_str("").expect("all probe fields have defaults")
    }
}

impl ProbeSection {
    /// The probe configuration these settings describe.
    pub fn to_config(&self) -> Result<ProbeConfig> {
        let solver: Solver = self.solver.parse()?;
        if self.c_grid.is_empty() || self.c_grid.iter().any(|c| *c <= 0.0 || !c.is_finite()) {
            bail!("probe.c_grid must be a non-empty list of positive numbers");
        }
        if self.shots.contains(&0) || self.shot_draws == 0 {
            bail!(
                "probe.shots (--shots) must list positive numbers of training images per class (e.g. \
                 [1, 2, 4, 8, 16]) and probe.shot_draws (--shot-draws) must be at least 1"
            );
        }
        let mut shots = self.shots.clone();
        shots.sort_unstable();
        shots.dedup();
        Ok(ProbeConfig {
            c_grid: self.c_grid.clone(),
            refine: self.refine,
            val_fraction: self.val_fraction,
            refit_on_train_val: self.refit_on_train_val,
            tol: self.tol,
            max_iter: self.max_iter,
            seed: self.seed,
            bootstrap: self.bootstrap,
            solver,
            few_shot: shots,
            few_shot_draws: self.shot_draws,
        })
    }
}

/// Representation similarity (linear CKA, debiased CKA, mutual k-NN) between every pair of a
/// dataset's pooled feature points, in report.md and similarity.csv.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilaritySection {
    /// Compute it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Split compared: train, val or test.
    #[serde(default = "default_similarity_split")]
    pub split: String,
    /// Neighbours per image for mutual k-NN.
    #[serde(default = "default_k")]
    pub k: usize,
    /// At most this many images (a seeded random subset): mutual k-NN costs O(N²·D).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_similarity_split() -> String {
    "test".into()
}
fn default_k() -> usize {
    10
}
fn default_max_rows() -> usize {
    10_000
}

impl Default for SimilaritySection {
    fn default() -> Self {
        toml::from_str("").expect("all similarity fields have defaults")
    }
}

impl SimilaritySection {
    /// The comparison settings these describe.
    pub fn to_options(&self) -> Result<crate::pipeline::CompareOptions> {
        if self.k == 0 || self.max_rows < 2 {
            bail!("similarity.k must be at least 1 and similarity.max_rows at least 2");
        }
        Ok(crate::pipeline::CompareOptions {
            split: self.split.parse().context("similarity.split")?,
            k: self.k,
            max_rows: self.max_rows,
            seed: self.seed,
        })
    }
}

impl DatasetSection {
    /// Parsed spec, feature points and levels, with errors that name the bad value.
    pub fn parse(&self) -> Result<(DatasetSpec, Vec<FeaturePoint>, Vec<LabelLevel>)> {
        let spec: DatasetSpec = self.spec.parse()?;
        if self.feature_points.is_empty() {
            bail!("dataset '{}' lists no feature_points", self.spec);
        }
        let points =
            gapprobe_features::featurepoint::parse_feature_point_list(&self.feature_points)?;
        let levels = self
            .levels
            .iter()
            .map(|l| l.parse())
            .collect::<Result<Vec<LabelLevel>>>()?;
        Ok((spec, points, levels))
    }
}

impl Experiment {
    /// Reads and validates an experiment file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment {}", path.display()))?;
        let mut exp: Experiment = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid experiment", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        exp.resolve_relative(base);
        exp.validate()?;
        Ok(exp)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.output);
        if let Some(c) = &mut self.cache {
            fix(c);
        }
        for m in self.model.iter_mut().chain(self.models.iter_mut()) {
            if Path::new(&m.id).is_relative() && base.join(&m.id).is_dir() {
                m.id = base.join(&m.id).to_string_lossy().into_owned();
            }
        }
        for d in &mut self.datasets {
            if let Ok(mut spec) = d.spec.parse::<DatasetSpec>() {
                if spec.path.is_relative() {
                    spec.path = base.join(&spec.path);
                }
                // A label map named relative to the experiment file is found from anywhere.
                if let Some(map) = spec.options.get_mut("labelmap") {
                    if Path::new(map.as_str()).is_relative() {
                        *map = base.join(&*map).to_string_lossy().into_owned();
                    }
                }
                d.spec = spec.to_string();
            }
        }
    }

    /// Checks every field that can be checked before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.datasets.is_empty() {
            bail!("experiment '{}' has no [[datasets]]", self.name);
        }
        for d in &self.datasets {
            d.parse()?;
        }
        self.probe.to_config()?;
        self.similarity.to_options()?;
        let models = self.all_models()?;
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.id == m.id) {
                bail!("model '{}' is listed twice in [[models]]", m.id);
            }
            crate::device::parse_device(&m.device)?;
            crate::device::parse_dtype(&m.dtype)?;
            if let Some(l) = m.compress {
                gapprobe_features::cache::Compression::new(l, false)
                    .with_context(|| format!("model '{}': compress", m.id))?;
            }
        }
        Ok(())
    }

    /// The models to run: `[model]`, or each of `[[models]]` in order (exactly one of the two
    /// forms).
    pub fn all_models(&self) -> Result<Vec<&ModelSection>> {
        match (&self.model, self.models.is_empty()) {
            (Some(m), true) => Ok(vec![m]),
            (None, false) => Ok(self.models.iter().collect()),
            (Some(_), false) => bail!(
                "experiment '{}' has both [model] and [[models]]: use [model] for one model, \
                 [[models]] (one table each) to compare several in one report",
                self.name
            ),
            (None, true) => bail!(
                "experiment '{}' names no model: add a [model] table (id = \"llava-hf/llava-1.5-7b-hf\") \
                 or [[models]] tables",
                self.name
            ),
        }
    }

    /// The cache root in effect.
    pub fn cache_root(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| self.output.join("cache"))
    }
}

#[cfg(test)]
#[path = "experiment_tests.rs"]
mod tests;
