//! A model loaded for zero-shot answers ([`Answerer`]) and the keys its answers are stored
//! under in `answers.jsonl`.

use super::zero_shot::{Arm, ZeroShotOptions};
use anyhow::{bail, Context, Result};
use gapprobe_features::datasets::{Dataset, LabelLevel};
use gapprobe_features::models::{
    answer_fingerprint, Checkpoint, Generator, VisionLanguageModel, IMAGE_PLACEHOLDER,
};
use gapprobe_features::preprocess::PreprocessConfig;
use sha2::{Digest, Sha256};

/// A model loaded to answer: its language model, the vision tower and projector when images
/// are shown, and the fingerprints answers are keyed by. Load it once for several datasets.
pub struct Answerer {
    pub(super) generator: Generator,
    pub(super) vision: Option<VisionLanguageModel>,
    pub(super) preprocess: PreprocessConfig,
    /// SHA-256 of the language model's weights, head and tokenizer.
    language: String,
    /// SHA-256 of the vision tower's and projector's weights, config and preprocessing.
    vision_key: String,
}

impl Answerer {
    /// Loads what `opts.arms` need from `opts.model`, after checking the chat template.
    pub fn load(opts: &ZeroShotOptions) -> Result<Self> {
        if !opts.chat.contains(IMAGE_PLACEHOLDER) || !opts.chat.contains("{question}") {
            bail!(
                "the chat template {:?} needs {IMAGE_PLACEHOLDER} (where the image or its text \
                 goes) and {{question}}",
                opts.chat
            );
        }
        let ck = Checkpoint::resolve(&opts.model)?;
        let generator = Generator::load(&ck, &opts.chat, &opts.device, opts.dtype)
            .with_context(|| format!("model '{}': loading its language model", opts.model))?;
        let mut vision_key = String::new();
        let vision = if opts.arms.contains(&Arm::Image) {
            // Layer 0 asked: the tower loads only up to what the projector reads.
            let v = VisionLanguageModel::load(&ck, 0, &opts.device, opts.dtype)?;
            let mut h = Sha256::new();
            h.update(&v.weights_fingerprint);
            h.update(&v.config_hash);
            h.update(serde_json::to_string(&ck.preprocess)?);
            // An f32 residual stream around 16-bit layers changes the image tokens.
            if v.vision.stream_dtype() != opts.dtype {
                h.update(format!("{}-residual", v.vision.stream_dtype().as_str()));
            }
            vision_key = hex::encode(h.finalize());
            Some(v)
        } else {
            None
        };
        Ok(Self {
            generator,
            vision,
            preprocess: ck.preprocess.clone(),
            language: answer_fingerprint(&ck)?,
            vision_key,
        })
    }

    /// The key of one dataset, arm and level's answers: the language model, the dtype and
    /// decoding budget, the dataset's manifest, the chat and the level's question, and what the
    /// arm shows (the vision side for images; the dataset's texts for texts, which its manifest
    /// hash leaves out).
    pub(super) fn key(
        &self,
        ds: &Dataset,
        arm: Arm,
        level: LabelLevel,
        opts: &ZeroShotOptions,
    ) -> String {
        let mut h = Sha256::new();
        let budget = opts.max_new_tokens.to_string();
        for part in [
            self.language.as_str(),
            opts.dtype.as_str(),
            &budget,
            &ds.manifest_hash(),
            arm.as_str(),
            &opts.chat,
            &opts.questions[level as usize],
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        match arm {
            Arm::Image => h.update(self.vision_key.as_bytes()),
            Arm::Text => {
                for (id, text) in &ds.attributes {
                    h.update(id.as_bytes());
                    h.update([0]);
                    h.update(text.as_bytes());
                    h.update([0]);
                }
            }
        }
        hex::encode(&h.finalize()[..8])
    }
}
