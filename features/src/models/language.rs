//! LLaVA's language model as a feature source: the prompt with the image's projector tokens in
//! place of `<image>` (the image arm), or with a text in its place (the text arm: the image's
//! attributes written out, as in the Finer paper's text-only probe), run through the LLaMA
//! decoder; features are one hidden state read at the last prompt token or averaged over it.

use super::checkpoint::tensor_names;
use super::llama::{LlamaConfig, LlamaModel};
use super::prompt::Prompt;
use super::vlm::{layer_number, tensor_digests};
use super::Checkpoint;
use crate::featurepoint::LlmRead;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A LLaVA checkpoint's language model, with the prompt features are read from.
/// (Its weights' fingerprint, for a cache key, is [`language_fingerprint`]: no loading needed.)
pub struct LanguageModel {
    pub llama: LlamaModel,
    prompt: Prompt,
}

/// The language model's config: llava-hf's `text_config` (transformers' LLaMA defaults fill
/// what it leaves out), or an original LLaVA config's top level.
pub fn text_config(ck: &Checkpoint) -> Result<LlamaConfig> {
    let v = ck.config.get("text_config").unwrap_or(&ck.config);
    match v.get("model_type").and_then(Value::as_str) {
        None | Some("llama") | Some("llava") | Some("llava_llama") => {}
        Some(other) => bail!(
            "model '{}': its language model is '{other}'; LLM feature points support LLaMA \
             (LLaVA-1.5 / Vicuna) language models",
            ck.id
        ),
    }
    serde_json::from_value(v.clone())
        .with_context(|| format!("model '{}': unusable language-model config", ck.id))
}

/// For each hidden state of `tops`, a SHA-256 over the language-model tensors read to reach it
/// (embeddings, the first `top` decoder layers, the final norm for the last): over each
/// tensor's own SHA-256 (name, dtype, shape, bytes) in name order. Every tensor is read and
/// hashed once however many depths are asked for (a sweep over the 7B model's layers would
/// otherwise hash its 13 GB once per layer); nothing is loaded.
pub fn language_fingerprints(ck: &Checkpoint, tops: &[usize]) -> Result<Vec<String>> {
    let cfg = text_config(ck)?;
    let layers = cfg.num_hidden_layers;
    let files = ck.language_files()?;
    let names = tensor_names(&files)?;
    let prefix = language_prefix(&names);
    let used_at = |top: usize| -> Vec<&String> {
        let top = top.min(layers);
        names
            .iter()
            .filter(|n| {
                n.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| language_tensor_used(rest, top, layers))
            })
            .collect()
    };
    let mut all: Vec<&String> = tops.iter().flat_map(|&t| used_at(t)).collect();
    all.sort();
    all.dedup();
    let digests = tensor_digests(&files, &all)?;
    Ok(tops
        .iter()
        .map(|&t| {
            let mut h = Sha256::new();
            for name in used_at(t) {
                h.update(digests[name.as_str()]);
            }
            hex::encode(h.finalize())
        })
        .collect())
}

/// The prefix of the language model's tensors (`model.language_model.` in transformers 5's
/// llava-hf layout, `language_model.model.` in older ones).
pub(super) fn language_prefix(names: &[String]) -> String {
    names
        .iter()
        .find_map(|n| n.strip_suffix("embed_tokens.weight"))
        .expect("checked by language_files")
        .to_string()
}

impl LanguageModel {
    /// Loads the decoder up to hidden state `top` with `prompt` ([`Prompt::load`]).
    pub fn load(
        ck: &Checkpoint,
        top: usize,
        prompt: &str,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let prompt = Prompt::load(ck, prompt)?;
        let cfg = text_config(ck)?;
        let files = ck.language_files()?;
        let prefix = language_prefix(&tensor_names(&files)?);
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let vb = vb.pp(prefix.trim_end_matches('.'));
        let llama = LlamaModel::new(vb, &cfg, top)
            .with_context(|| format!("model '{}': loading its language model", ck.id))?;
        Ok(Self { llama, prompt })
    }

    /// The prompt and tokenizer features are read with.
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &LlamaConfig {
        self.llama.config()
    }

    /// The longest sequence the decoder will run: the prompt around `image_tokens` projector
    /// tokens (image arm), or around the longest of `texts` once tokenised (text arm); 0 when
    /// neither is given.
    pub fn sequence_len(&self, image_tokens: Option<usize>, texts: &[&str]) -> Result<usize> {
        let mut longest = 0;
        if let Some(n) = image_tokens {
            let (before, after) = self.prompt.image_ids()?;
            longest = before.len() + n + after.len();
        }
        for t in texts {
            longest = longest.max(self.prompt.text_ids(t)?.len());
        }
        Ok(longest)
    }

    /// Image arm: `image_tokens` [B, N, D] (the projector's output) spliced into the prompt;
    /// one [B, D] f32 feature per `(hidden_states index, read)`.
    pub fn image_features(
        &self,
        image_tokens: &Tensor,
        reads: &[(usize, LlmRead)],
    ) -> Result<Vec<Tensor>> {
        let (b, n, _) = image_tokens.dims3()?;
        let (before, after) = self.prompt.image_ids()?;
        let device = image_tokens.device();
        let embed = |ids: &[u32]| -> Result<Tensor> {
            let t = Tensor::new(ids, device)?.unsqueeze(0)?;
            Ok(self.llama.embed(&t)?.repeat((b, 1, 1))?)
        };
        let tokens = image_tokens.to_dtype(self.llama_dtype())?;
        let embeds = Tensor::cat(&[embed(&before)?, tokens, embed(&after)?], 1)?;
        let len = before.len() + n + after.len();
        self.read(&embeds, &vec![len; b], reads)
    }

    /// Text arm: one prompt per text, right-padded into one batch; one [B, D] f32 feature per
    /// `(hidden_states index, read)`.
    pub fn text_features(&self, texts: &[&str], reads: &[(usize, LlmRead)]) -> Result<Vec<Tensor>> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.prompt.text_ids(t))
            .collect::<Result<_>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let t = lens.iter().copied().max().unwrap_or(0);
        let device = self.llama.device();
        let padded: Vec<u32> = ids
            .iter()
            .flat_map(|v| v.iter().copied().chain(std::iter::repeat_n(0, t - v.len())))
            .collect();
        let ids = Tensor::from_vec(padded, (texts.len(), t), device)?;
        let embeds = self.llama.embed(&ids)?;
        self.read(&embeds, &lens, reads)
    }

    fn llama_dtype(&self) -> DType {
        self.llama.dtype()
    }

    /// Runs the decoder once and reads each sequence's last token (or its mean over its own
    /// `lens[i]` tokens, padding excluded) at every requested hidden state.
    fn read(
        &self,
        embeds: &Tensor,
        lens: &[usize],
        reads: &[(usize, LlmRead)],
    ) -> Result<Vec<Tensor>> {
        let (b, t, _) = embeds.dims3()?;
        let layers: Vec<usize> = reads.iter().map(|r| r.0).collect();
        let states = self.llama.hidden_states(embeds, &layers)?;
        let weights = |read: LlmRead| -> Result<Tensor> {
            let mut w = vec![0f32; b * t];
            for (i, &len) in lens.iter().enumerate() {
                match read {
                    LlmRead::Last => w[i * t + len - 1] = 1.0,
                    LlmRead::Mean => w[i * t..i * t + len].fill(1.0 / len as f32),
                }
            }
            Ok(Tensor::from_vec(w, (b, 1, t), embeds.device())?)
        };
        states
            .iter()
            .zip(reads)
            .map(|(s, &(_, read))| {
                let s = s.to_dtype(DType::F32)?;
                Ok(weights(read)?.matmul(&s)?.squeeze(1)?)
            })
            .collect()
    }
}

/// Whether a language-model tensor (name after its prefix) is read when running to hidden
/// state `top` of `layers`.
fn language_tensor_used(rest: &str, top: usize, layers: usize) -> bool {
    if let Some(layer) = rest.strip_prefix("layers.") {
        return layer_number(layer) < top;
    }
    rest == "embed_tokens.weight" || (top == layers && rest.starts_with("norm."))
}
