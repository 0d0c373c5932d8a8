//! Zero-shot answers (the *Finer* paper's Fig. 2 and its image-vs-text knowledge probe): the
//! language model is asked, for each test image and label level, the level's question, with the
//! image's projector tokens (image arm) or the image's attributes written out (text arm) where
//! the chat template's `<image>` is; its greedy answer is scored with Finer's exact match.

pub use super::answerer::Answerer;
use super::answers::{Answer, AnswerStore};
use crate::ui::Ui;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use gapprobe_features::datasets::{Dataset, LabelLevel, Sample, Split};
use gapprobe_features::extract::image_tokens;
use gapprobe_features::models::{Generator, VisionLanguageModel, IMAGE_PLACEHOLDER};
use gapprobe_features::preprocess::PreprocessConfig;
use gapprobe_probes::exact_match::{answer_text, score_answer, summarize, AnswerScore};
use gapprobe_reports::ZeroShotRow;
use std::collections::HashSet;
use std::path::PathBuf;

/// LLaVA-1.5's chat format around the question; `<image>` is where the image (or its text) goes.
pub const DEFAULT_CHAT: &str = "USER: <image>\n{question} ASSISTANT:";

/// The questions per level (Finer's wording, shortened): `{concept}` is the image's
/// superordinate label in lower case ("bird"), or "object" where the dataset has none.
pub const DEFAULT_QUESTIONS: [&str; 3] = [
    "What is the name of the object that appears in this image? Provide your answer after \"Answer:\".",
    "What is the name of the {concept} that appears in this image? Give a coarse-grained label. Provide your answer after \"Answer:\".",
    "What is the name of the {concept} that appears in this image? Give a fine-grained label: the specific species, breed or model. Provide your answer after \"Answer:\".",
];

/// Which input stands where `<image>` is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    /// The photo, through the vision tower and projector.
    Image,
    /// The image's attributes written out (the dataset's per-image text).
    Text,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Image => "image",
            Arm::Text => "text",
        }
    }
}

/// What to ask and how.
#[derive(Debug, Clone)]
pub struct ZeroShotOptions {
    pub model: String,
    pub split: Split,
    pub levels: Vec<LabelLevel>,
    pub arms: Vec<Arm>,
    /// Ask about at most this many images (spread evenly over the split); all when `None`.
    pub limit: Option<usize>,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    /// Chat template with `<image>` and `{question}`.
    pub chat: String,
    /// Question template per level (superordinate, coarse, fine).
    pub questions: [String; 3],
    pub device: Device,
    pub dtype: DType,
    /// Where `answers.jsonl` is kept.
    pub out: PathBuf,
}

/// What can be checked of a dataset before any model is loaded: images to ask about, labels at
/// every level asked, and a text for every image when the text arm is asked.
pub fn check(ds: &Dataset, opts: &ZeroShotOptions) -> Result<()> {
    let samples = pick(ds.split(opts.split), opts.limit);
    if samples.is_empty() {
        bail!(
            "dataset '{}' has no {} images to ask about",
            ds.name,
            opts.split
        );
    }
    for &level in &opts.levels {
        if ds.classes(level).is_empty() {
            bail!("dataset '{}' has no {level} labels to ask about", ds.name);
        }
    }
    if opts.arms.contains(&Arm::Text) {
        if let Some(s) = samples.iter().find(|s| !ds.attributes.contains_key(&s.id)) {
            bail!(
                "the text arm needs a text per image and dataset '{}' has none for image '{}'; \
                 CUB-200-2011 takes them from its attributes/ files, a manifest from its \
                 `attributes` column (or ask with --arms image)",
                ds.name,
                s.id
            );
        }
    }
    Ok(())
}

/// Asks every question not yet answered under the same settings and returns one summary row
/// per arm and level (over this run's images).
pub fn zero_shot(
    model: &Answerer,
    ds: &Dataset,
    opts: &ZeroShotOptions,
    ui: &Ui,
) -> Result<Vec<ZeroShotRow>> {
    check(ds, opts)?;
    let samples = pick(ds.split(opts.split), opts.limit);
    if opts.arms.contains(&Arm::Image) && model.vision.is_none() {
        bail!("the image arm needs the vision side, which this model was loaded without");
    }
    let mut store = AnswerStore::open(&opts.out)?;
    let mut pre = model.preprocess.clone();
    pre.crop_bottom = ds.crop_bottom_px;
    let mut rows = Vec::new();
    for &arm in &opts.arms {
        for &level in &opts.levels {
            let key = model.key(ds, arm, level, opts);
            let todo: Vec<&Sample> = samples
                .iter()
                .copied()
                .filter(|s| s.label(level).is_some())
                .filter(|s| !store.has(&key, &ds.name, arm.as_str(), level.as_str(), &s.id))
                .collect();
            let asked = samples.iter().filter(|s| s.label(level).is_some()).count();
            if todo.len() < asked {
                tracing::info!(
                    "{} {} {level}: {} of {asked} answers reused from {}",
                    ds.name,
                    arm.as_str(),
                    asked - todo.len(),
                    opts.out.join("answers.jsonl").display()
                );
            }
            let bar = ui.bar(
                todo.len() as u64,
                &format!("{} {} {level}", ds.name, arm.as_str()),
            );
            for chunk in todo.chunks(opts.batch_size.max(1)) {
                let texts = ask(
                    &model.generator,
                    model.vision.as_ref(),
                    &pre,
                    ds,
                    chunk,
                    level,
                    arm,
                    opts,
                )
                .with_context(|| {
                    format!(
                        "{} answers ({} arm, {level}, from image '{}'); if the device ran out of \
                         memory, lower --batch-size (zero_shot.batch_size; now {})",
                        chunk.len(),
                        arm.as_str(),
                        chunk[0].id,
                        opts.batch_size
                    )
                })?;
                let answers = chunk
                    .iter()
                    .zip(texts)
                    .map(|(s, output)| answer(ds, s, level, arm, &key, &opts.model, opts, output))
                    .collect();
                store.append(answers)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            // This run's images only (an earlier run may have asked more), scored anew from the
            // stored output (the scoring is cheap; a stored score could predate a fix).
            let asked: HashSet<&str> = samples
                .iter()
                .filter(|s| s.label(level).is_some())
                .map(|s| s.id.as_str())
                .collect();
            let done: Vec<&Answer> = store
                .of(&key, &ds.name, arm.as_str(), level.as_str())
                .into_iter()
                .filter(|a| asked.contains(a.sample_id.as_str()))
                .collect();
            if done.is_empty() {
                tracing::warn!(
                    "{}: no {} image has a {level} label: nothing asked",
                    ds.name,
                    opts.split
                );
                continue;
            }
            let scores: Vec<AnswerScore> =
                done.iter().map(|a| score(&a.output, &a.accepted)).collect();
            let s = summarize(&scores, 0);
            rows.push(ZeroShotRow {
                dataset: ds.name.clone(),
                model: opts.model.clone(),
                arm: arm.as_str().into(),
                level: level.as_str().into(),
                n: s.n as u64,
                exact_match: s.exact_match,
                em_ci_low: s.ci_low,
                em_ci_high: s.ci_high,
                f1: s.f1,
                prompt: opts
                    .chat
                    .replace("{question}", &opts.questions[level as usize]),
                max_new_tokens: opts.max_new_tokens as u64,
                model_key: key,
            });
        }
    }
    Ok(rows)
}

/// The generated text of each sample of `chunk` at `level` in `arm`.
#[allow(clippy::too_many_arguments)]
fn ask(
    generator: &Generator,
    vision: Option<&VisionLanguageModel>,
    pre: &PreprocessConfig,
    ds: &Dataset,
    chunk: &[&Sample],
    level: LabelLevel,
    arm: Arm,
    opts: &ZeroShotOptions,
) -> Result<Vec<String>> {
    match arm {
        Arm::Image => {
            let model = vision.expect("loaded for the image arm");
            let paths: Vec<PathBuf> = chunk.iter().map(|s| ds.image_path(s)).collect();
            let tokens = image_tokens(model, pre, &paths, &opts.device, opts.dtype)?;
            let chats: Vec<String> = chunk.iter().map(|s| prompt(ds, s, level, opts)).collect();
            let ids = generator.answer_images(&chats, &tokens, opts.max_new_tokens)?;
            decode_all(generator, &ids)
        }
        Arm::Text => {
            let prompts: Vec<String> = chunk
                .iter()
                .map(|s| {
                    prompt(ds, s, level, opts).replacen(IMAGE_PLACEHOLDER, &ds.attributes[&s.id], 1)
                })
                .collect();
            let ids = generator.answer_texts(&prompts, opts.max_new_tokens)?;
            decode_all(generator, &ids)
        }
    }
}

fn decode_all(generator: &Generator, ids: &[Vec<u32>]) -> Result<Vec<String>> {
    ids.iter().map(|v| generator.decode(v)).collect()
}

/// The chat template with the level's question, its `{concept}` filled in for this image.
fn prompt(ds: &Dataset, s: &Sample, level: LabelLevel, opts: &ZeroShotOptions) -> String {
    let concept = s
        .label(LabelLevel::Superordinate)
        .map(|i| ds.classes(LabelLevel::Superordinate)[i as usize].to_lowercase())
        .unwrap_or_else(|| "object".into());
    let question = opts.questions[level as usize].replace("{concept}", &concept);
    opts.chat.replace("{question}", &question)
}

/// The labels counted right at `level`: that level's and every finer one's (as Finer's
/// evaluation accepts a fine label for a coarse question).
fn accepted(ds: &Dataset, s: &Sample, level: LabelLevel) -> Vec<String> {
    LabelLevel::ALL
        .iter()
        .filter(|&&l| l >= level)
        .filter_map(|&l| s.label(l).map(|i| ds.classes(l)[i as usize].clone()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn answer(
    ds: &Dataset,
    s: &Sample,
    level: LabelLevel,
    arm: Arm,
    key: &str,
    model: &str,
    opts: &ZeroShotOptions,
    output: String,
) -> Answer {
    let accepted = accepted(ds, s, level);
    let score = score(&output, &accepted);
    let label = s.label(level).expect("asked only with a label");
    Answer {
        key: key.into(),
        dataset: ds.name.clone(),
        model: model.into(),
        arm: arm.as_str().into(),
        level: level.as_str().into(),
        sample_id: s.id.clone(),
        label: ds.classes(level)[label as usize].clone(),
        accepted,
        question: prompt(ds, s, level, opts),
        answer: answer_text(&output, ANSWER_PREFIX),
        output,
        exact: score.exact,
        f1: score.f1,
    }
}

/// Where the scored answer starts in a generated text (Finer's prompts ask for it).
const ANSWER_PREFIX: &str = "Answer:";

/// Finer's exact match and F1 of a generated text against its accepted labels.
fn score(output: &str, accepted: &[String]) -> AnswerScore {
    let refs: Vec<&str> = accepted.iter().map(String::as_str).collect();
    score_answer(&answer_text(output, ANSWER_PREFIX), &refs)
}

/// At most `limit` samples, spread evenly over the split's order (so every part of a sorted
/// split, every class of a class-ordered one, is asked about).
fn pick(samples: Vec<&Sample>, limit: Option<usize>) -> Vec<&Sample> {
    match limit {
        Some(k) if k < samples.len() => (0..k).map(|i| samples[i * samples.len() / k]).collect(),
        _ => samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_spreads_the_limit_over_the_split() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                id: format!("s{i}"),
                path: PathBuf::from(format!("{i}.png")),
                split: Split::Test,
                labels: [Some(0), None, None],
            })
            .collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let ids = |v: Vec<&Sample>| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(pick(refs.clone(), Some(4))), ["s0", "s2", "s5", "s7"]);
        assert_eq!(pick(refs.clone(), Some(20)).len(), 10);
        assert_eq!(pick(refs, None).len(), 10);
    }
}
