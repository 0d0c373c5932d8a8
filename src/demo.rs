//! `gapprobe demo`: the whole pipeline offline on a generated fine-grained image set and a
//! random-weight LLaVA-style model, both written to disk in their real formats first.

use crate::experiment::{DatasetSection, Experiment, ModelSection, ProbeSection};
use crate::pipeline::zero_shot::Arm;
use crate::zero_shot_cmd::ZeroShotSection;
use anyhow::{Context, Result};
use gapprobe_features::batching::BatchSize;
use gapprobe_features::models::{write_random_llava, RandomLlavaSpec};
use gapprobe_features::synth::{generate, SynthConfig, MANIFEST_NAME};
use std::path::{Path, PathBuf};
use tracing::info;

/// Demo size and locations.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub cache: Option<PathBuf>,
    pub synth: SynthConfig,
    pub model_seed: u64,
}

/// Whether `dir` holds `probe` and a `.gapprobe-demo` stamp equal to `stamp`, i.e. inputs made
/// with the same settings that can be reused instead of regenerated.
fn up_to_date(dir: &Path, stamp: &str, probe: &str) -> bool {
    dir.join(probe).exists()
        && std::fs::read_to_string(dir.join(".gapprobe-demo")).is_ok_and(|s| s == stamp)
}

/// Generates (or reuses) the demo's images and model, and returns the experiment to run.
pub fn prepare(opts: &DemoOptions) -> Result<Experiment> {
    let data = opts.out.join("data");
    let model = opts.out.join("model");
    let data_stamp = format!("{:?}", opts.synth);
    if up_to_date(&data, &data_stamp, MANIFEST_NAME) {
        info!("reusing demo images in {}", data.display());
    } else {
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("clearing {}", data.display()))?;
        }
        let ds = generate(&data, &opts.synth)?;
        std::fs::write(data.join(".gapprobe-demo"), &data_stamp)?;
        info!(
            "wrote {} demo images to {}",
            ds.samples.len(),
            data.display()
        );
    }
    let spec = RandomLlavaSpec {
        seed: opts.model_seed,
        ..Default::default()
    };
    let model_stamp = format!("{spec:?}");
    if !up_to_date(&model, &model_stamp, "model.safetensors") {
        write_random_llava(&model, &spec)?;
        std::fs::write(model.join(".gapprobe-demo"), &model_stamp)?;
        info!(
            "wrote random-weight LLaVA-style checkpoint to {}",
            model.display()
        );
    }
    Ok(Experiment {
        name: "gapprobe demo: modality gap on generated fine-grained shapes".into(),
        output: opts.out.clone(),
        cache: opts.cache.clone(),
        models: Vec::new(),
        model: Some(ModelSection { id: model.to_string_lossy().into_owned(), device: "cpu".into(), dtype: "f32".into(), f32_residual: None, prompt: gapprobe_features::models::DEFAULT_PROMPT.into(), batch_size: BatchSize::Fixed(64), compress: None }),
        datasets: vec![DatasetSection {
            spec: format!("demo:{}", data.display()),
            feature_points: vec![
                "vision.layer[-2].patch.mean".into(),
                "vision.layer[1:5].cls".into(),
                "projector.mean".into(),
                "llm.image.layer[-1].last".into(),
                "llm.text.layer[-1].last".into(),
            ],
            levels: vec![],
        }],
        probe: ProbeSection { bootstrap: 500, shots: vec![1, 4, 16], ..Default::default() },
        similarity: Default::default(),
        zero_shot: ZeroShotSection {
            enabled: true,
            arms: vec![Arm::Image, Arm::Text],
            limit: Some(48),
            max_new_tokens: 8,
            ..Default::default()
        },
        notes: vec![
            "This is the offline demo. The encoder, projector and language model have random weights (seeded): they \
             demonstrate the pipeline, not a model, and the gap shown says nothing about any real VLM."
                .into(),
            "Images are generated: coarse classes differ by shape, fine classes only by a stripe's colour and a spot's position."
                .into(),
            "The two LLM points run the language model on the same prompt and read its last hidden state at the last token: \
             llm.image with the image's projector tokens in place of <image>, llm.text with the image's attribute text there \
             instead (e.g. 'shape: ring; stripe color: blue; spot: left'; about one text in five leaves one attribute out). \
             The text arm shows what the language model can do with the information stated in words; the image arm, what \
             reaches it from the pixels."
                .into(),
            "Zero-shot answers come from the same random language model: its words are drawn from the demo's vocabulary, so \
             an exact match is chance, not recognition."
                .into(),
        ],
    })
}
