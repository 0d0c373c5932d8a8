//! `gapprobe zero-shot`: ask the language model to name each test image's class at each label
//! level, score its answers with Finer's exact match, and write the tables and the figure.

use crate::device::{check_dtype_on, parse_device, parse_dtype};
use crate::pipeline::zero_shot::{
    check, zero_shot, Answerer, Arm, ZeroShotOptions, DEFAULT_CHAT, DEFAULT_QUESTIONS,
};
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use gapprobe_features::datasets::{Dataset, DatasetSpec, LabelLevel, Split};
use gapprobe_reports::ZeroShotRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `gapprobe zero-shot`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  gapprobe zero-shot --model llava-hf/llava-1.5-7b-hf --dataset cub:/data/CUB_200_2011 \\\n    --arms image,text --limit 1000 --device cuda --dtype bf16 --out results/zero-shot\n\nWrites answers.jsonl (every answer, appended as generated: a rerun asks only what is missing), zero_shot.csv/.parquet (exact match with a 95% bootstrap interval and token F1 per arm and level), zero_shot.png/.svg (the performance cliff) and zero_shot.md. Answers are greedy; an answer is right when a label (at the superordinate level any of the superordinate, coarse or fine labels; at the coarse level coarse or fine) occurs, normalised, within the first 20 normalised words of the answer after \"Answer:\", as the Finer paper scores them. `gapprobe report` adds zero_shot.csv found beside results.csv."
)]
pub struct ZeroShotArgs {
    /// Checkpoint folder or Hugging Face hub id (a llava-hf LLaVA checkpoint).
    #[arg(long)]
    pub model: String,
    /// Dataset spec, e.g. cub:/data/CUB_200_2011 (repeatable).
    #[arg(long, required = true)]
    pub dataset: Vec<String>,
    /// Split whose images are asked about.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Label levels [default: all the dataset has].
    #[arg(long, value_delimiter = ',')]
    pub levels: Vec<String>,
    /// image (the photo), text (the image's attributes written out in its place), or both.
    #[arg(long, value_delimiter = ',', default_value = "image")]
    pub arms: Vec<Arm>,
    /// Ask about at most this many images per dataset, spread evenly over the split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Greedy decoding budget per answer.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Questions answered together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Chat template: `<image>` is where the image (or its text) goes, `{question}` the question.
    #[arg(long, default_value = DEFAULT_CHAT)]
    pub chat: String,
    /// A level's question, LEVEL=TEMPLATE (repeatable); `{concept}` is the image's
    /// superordinate label in lower case. Defaults follow the Finer paper's wording.
    #[arg(long = "ask", value_name = "LEVEL=TEMPLATE")]
    pub ask: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `gapprobe zero-shot`.
pub fn run(args: ZeroShotArgs, ui: &Ui, command: &str) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    check_dtype_on(&device, dtype)?;
    let mut asked = Vec::new();
    for a in &args.ask {
        let Some((level, template)) = a.split_once('=') else {
            bail!("--ask {a:?}: expected LEVEL=TEMPLATE, e.g. fine=\"What species is this?\"");
        };
        asked.push((level, template));
    }
    let questions = questions(asked)?;
    let levels: Vec<LabelLevel> = args
        .levels
        .iter()
        .map(|l| l.parse())
        .collect::<Result<_>>()?;
    let mut opts = ZeroShotOptions {
        model: args.model.clone(),
        split: args.split.parse::<Split>()?,
        levels: Vec::new(),
        arms: args.arms.clone(),
        limit: args.limit,
        max_new_tokens: args.max_new_tokens,
        batch_size: args.batch_size,
        chat: args.chat.clone(),
        questions,
        device,
        dtype,
        out: args.out.clone(),
    };
    // Datasets are loaded (and checked) before the model, which is loaded once for all.
    let datasets = args
        .dataset
        .iter()
        .map(|spec| spec.parse::<DatasetSpec>()?.load())
        .collect::<Result<Vec<_>>>()?;
    let levels_of = |ds: &Dataset| {
        if levels.is_empty() {
            ds.levels()
        } else {
            levels.clone()
        }
    };
    for ds in &datasets {
        opts.levels = levels_of(ds);
        check(ds, &opts)?;
    }
    let model = Answerer::load(&opts)?;
    let mut rows = Vec::new();
    for ds in &datasets {
        opts.levels = levels_of(ds);
        rows.extend(zero_shot(&model, ds, &opts, ui)?);
    }
    write_outputs(&rows, &args.out, command)?;
    for r in &rows {
        println!(
            "{:<12} {:<5} {:<13} exact match {:>5.1}% [{:.1}, {:.1}]  F1 {:.3}  (n = {})",
            r.dataset,
            r.arm,
            r.level,
            r.exact_match * 100.0,
            r.em_ci_low * 100.0,
            r.em_ci_high * 100.0,
            r.f1,
            r.n
        );
    }
    println!(
        "zero-shot report: {}",
        args.out.join("zero_shot.md").display()
    );
    Ok(())
}

/// The default questions with `asked` (level name, template) in their place.
fn questions<'a>(asked: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<[String; 3]> {
    let mut questions = DEFAULT_QUESTIONS.map(String::from);
    for (level, template) in asked {
        let level: LabelLevel = level.trim().parse()?;
        questions[level as usize] = template.to_string();
    }
    Ok(questions)
}

/// An experiment's `[zero_shot]`: after the probes, the language model of each model names each
/// dataset's test images per label level (the dataset's levels), scored with Finer's exact
/// match, into zero_shot.csv and a report section. Off unless `enabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotSection {
    #[serde(default)]
    pub enabled: bool,
    /// `image`, `text` (the image's attributes in its place) or both.
    #[serde(default = "image_arm")]
    pub arms: Vec<Arm>,
    /// At most this many test images per dataset, spread evenly (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Questions answered together.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Chat template with `<image>` and `{question}`.
    #[serde(default = "default_chat")]
    pub chat: String,
    /// Question templates by level name, replacing the defaults (`{concept}`: the
    /// superordinate label in lower case).
    #[serde(default)]
    pub questions: BTreeMap<String, String>,
}

fn image_arm() -> Vec<Arm> {
    vec![Arm::Image]
}
fn default_max_new_tokens() -> usize {
    32
}
fn default_batch() -> usize {
    16
}
fn default_chat() -> String {
    DEFAULT_CHAT.into()
}

impl Default for ZeroShotSection {
    fn default() -> Self {
        toml::from_str("").expect("all zero_shot fields have defaults")
    }
}

impl ZeroShotSection {
    /// Whether the section is off (then it is left out of a written experiment file).
    pub fn is_off(&self) -> bool {
        !self.enabled
    }

    /// The options for one model (its device and dtype) and dataset levels, answers kept in `out`.
    pub fn to_options(
        &self,
        model: &str,
        levels: Vec<LabelLevel>,
        device: &Device,
        dtype: DType,
        out: &Path,
    ) -> Result<ZeroShotOptions> {
        if self.arms.is_empty() || self.max_new_tokens == 0 {
            bail!("zero_shot.arms must name at least one arm and zero_shot.max_new_tokens be at least 1");
        }
        Ok(ZeroShotOptions {
            model: model.into(),
            split: Split::Test,
            levels,
            arms: self.arms.clone(),
            limit: self.limit,
            max_new_tokens: self.max_new_tokens,
            batch_size: self.batch_size,
            chat: self.chat.clone(),
            questions: questions(self.questions.iter().map(|(l, t)| (l.as_str(), t.as_str())))
                .context("zero_shot.questions")?,
            device: device.clone(),
            dtype,
            out: out.into(),
        })
    }
}

/// Writes zero_shot.csv/.parquet, the figure and zero_shot.md into `out`.
pub fn write_outputs(rows: &[ZeroShotRow], out: &Path, command: &str) -> Result<()> {
    std::fs::create_dir_all(out)?;
    gapprobe_reports::write_zero_shot_csv(rows, &out.join("zero_shot.csv"))?;
    gapprobe_reports::write_zero_shot_parquet(rows, &out.join("zero_shot.parquet"))?;
    let figure = gapprobe_reports::zero_shot_figure(
        rows,
        &out.join("zero_shot.png"),
        &out.join("zero_shot.svg"),
        crate::pipeline::ZERO_SHOT_TITLE,
    )?;
    let ctx = gapprobe_reports::ReportContext {
        title: "Zero-shot answers".into(),
        model: rows.first().map(|r| r.model.clone()).unwrap_or_default(),
        command: command.into(),
        zero_shot: rows.to_vec(),
        zero_shot_figure: if figure {
            "zero_shot.png".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    std::fs::write(
        out.join("zero_shot.md"),
        gapprobe_reports::markdown_report(&[], &ctx),
    )?;
    Ok(())
}
