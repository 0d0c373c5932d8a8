//! Experiment files: one TOML names the model, datasets, feature points, probe settings and the
//! output folder. `gapprobe run experiment.toml` executes extract → cache → probe → report.

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
    /// Keep the residual stream in f32 around bf16/f16 layers (`extract --f32-residual`).
    #[serde(default)]
    pub f32_residual: bool,
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
mod tests {
    use super::*;

    #[test]
    fn minimal_experiment_parses_with_defaults() {
        let exp: Experiment = toml::from_str(
            r#"
            name = "t"
            output = "out"
            [model]
            id = "m"
            [[datasets]]
            spec = "manifest:/d/m.csv"
            feature_points = ["vision.layer[-2].patch.mean", "projector.mean"]
            "#,
        )
        .unwrap();
        exp.validate().unwrap();
        assert_eq!(exp.all_models().unwrap()[0].dtype, "f32");
        assert_eq!(
            exp.probe.to_config().unwrap().c_grid,
            ProbeConfig::default().c_grid
        );
        let sim = exp.similarity.to_options().unwrap();
        assert!(exp.similarity.enabled);
        assert_eq!(
            (sim.split.as_str(), sim.k, sim.max_rows),
            ("test", 10, 10_000)
        );
        let bad = r#"
            name = "t"
            output = "o"
            typo = 1
            [model]
            id = "m"
            [[datasets]]
            spec = "manifest:/d"
            feature_points = ["projector.mean"]
        "#;
        assert!(toml::from_str::<Experiment>(bad).is_err());
    }

    #[test]
    fn layer_sweeps_expand_in_order_without_duplicates() {
        let section = DatasetSection {
            spec: "manifest:/d/m.csv".into(),
            feature_points: vec![
                "vision.layer[-2].cls".into(),
                "vision.layer[-3:].cls".into(),
                "projector.mean".into(),
            ],
            levels: vec![],
        };
        let (_, points, _) = section.parse().unwrap();
        let names: Vec<String> = points.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "vision.layer[-2].cls",
                "vision.layer[-3].cls",
                "vision.layer[-1].cls",
                "projector.mean"
            ]
        );
        let bad = DatasetSection {
            feature_points: vec!["vision.layer[4:].cls".into()],
            ..section
        };
        let err = format!("{:#}", bad.parse().unwrap_err());
        assert!(
            err.contains("vision.layer[4:].cls") && err.contains("depth"),
            "{err}"
        );
    }

    #[test]
    fn one_model_or_a_list_of_models() {
        let exp = |models: &str| -> Experiment {
            toml::from_str(&format!(
                "name = \"t\"\noutput = \"o\"\n{models}\n[[datasets]]\nspec = \"manifest:/d/m.csv\"\n\
                 feature_points = [\"projector.mean\"]\n"
            ))
            .unwrap()
        };
        let one = exp("[model]\nid = \"a\"");
        assert_eq!(one.all_models().unwrap()[0].id, "a");
        let two = exp("[[models]]\nid = \"a\"\n[[models]]\nid = \"b\"\ndtype = \"bf16\"");
        let ids: Vec<&str> = two
            .all_models()
            .unwrap()
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        two.validate().unwrap();
        let err = exp("").validate().unwrap_err().to_string();
        assert!(err.contains("names no model"), "{err}");
        let err = exp("[[models]]\nid = \"a\"\n[[models]]\nid = \"a\"")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
        // Written back (the demo writes the experiment it ran), one model stays `[model]`.
        let text = toml::to_string_pretty(&one).unwrap();
        assert!(
            text.contains("[model]") && !text.contains("models"),
            "{text}"
        );
    }

    #[test]
    fn few_shot_settings_are_sorted_and_checked() {
        let probe = |section: &str| toml::from_str::<ProbeSection>(section).unwrap().to_config();
        let cfg = probe("").unwrap();
        assert!(cfg.few_shot.is_empty());
        assert_eq!(cfg.few_shot_draws, 3);
        let cfg = probe("shots = [16, 1, 4, 4]\nshot_draws = 5").unwrap();
        assert_eq!((cfg.few_shot, cfg.few_shot_draws), (vec![1, 4, 16], 5));
        for bad in ["shots = [0, 4]", "shots = [4]\nshot_draws = 0"] {
            let err = probe(bad).unwrap_err().to_string();
            assert!(err.contains("probe.shots"), "{bad}: {err}");
        }
    }

    #[test]
    fn similarity_settings_are_checked_before_any_work() {
        let exp = |section: &str| -> Result<Experiment> {
            let exp: Experiment = toml::from_str(&format!(
                "name = \"t\"\noutput = \"o\"\n[model]\nid = \"m\"\n[[datasets]]\n\
                 spec = \"manifest:/d/m.csv\"\nfeature_points = [\"projector.mean\"]\n\
                 [similarity]\n{section}"
            ))?;
            exp.validate()?;
            Ok(exp)
        };
        let e = exp("split = \"train\"\nk = 5\nmax_rows = 2000\nenabled = false").unwrap();
        assert!(!e.similarity.enabled);
        assert_eq!(e.similarity.to_options().unwrap().k, 5);
        let err = exp("split = \"tset\"").unwrap_err();
        assert!(format!("{err:#}").contains("similarity.split"), "{err:#}");
        assert!(exp("k = 0").is_err());
        assert!(exp("neighbours = 3").is_err(), "unknown fields are refused");
    }

    #[test]
    fn relative_paths_resolve_against_the_experiment_file() {
        let dir = std::env::temp_dir().join(format!("gapprobe-exp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.toml");
        std::fs::write(
            &path,
            r#"
            name = "t"
            output = "out"
            [model]
            id = "m"
            [[datasets]]
            spec = "cub:data/CUB?labelmap=maps/cub.csv"
            feature_points = ["projector.mean"]
            "#,
        )
        .unwrap();
        let exp = Experiment::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(exp.output, dir.join("out"));
        let spec: DatasetSpec = exp.datasets[0].spec.parse().unwrap();
        assert_eq!(spec.path, dir.join("data/CUB"));
        assert_eq!(
            spec.options["labelmap"],
            dir.join("maps/cub.csv").to_string_lossy()
        );
    }

    /// The example experiments shipped in `experiments/` stay valid (specs, feature points, probe
    /// settings; the device is not opened).
    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let exp: Experiment = toml::from_str(&text)
                    .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
                for d in &exp.datasets {
                    d.parse()
                        .unwrap_or_else(|err| panic!("{}: {err:#}", e.path().display()));
                }
                exp.probe.to_config().unwrap();
                for m in exp.all_models().unwrap() {
                    crate::device::parse_dtype(&m.dtype).unwrap();
                }
                n += 1;
            }
        }
        assert!(n >= 1, "no example experiment in {}", dir.display());
    }

    /// README's experiment example is a valid experiment.
    #[test]
    fn readme_example_parses() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let start = readme.find("```toml\n").expect("README has a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let exp: Experiment = toml::from_str(&readme[start..end]).unwrap();
        for d in &exp.datasets {
            d.parse().unwrap();
        }
        exp.probe.to_config().unwrap();
    }
}
