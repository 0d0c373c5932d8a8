//! Greedy answers from LLaVA's language model, as transformers' `generate(do_sample=False)`
//! gives them: the prompt (with the image's projector tokens, or a text, where `<image>` is) runs
//! once through the decoder, then one token at a time through a KV cache, each step taking the
//! most likely next token, until every answer has ended (an end-of-sequence token) or
//! `max_new_tokens` are out. Prompts of different lengths are left-padded; the padding is masked
//! and positions count each prompt's own tokens, so an answer does not depend on its batch.

use super::checkpoint::tensor_names;
use super::language::{language_prefix, text_config};
use super::llama::{LayerCache, LlamaModel};
use super::prompt::Prompt;
use super::vlm::tensor_digests;
use super::Checkpoint;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a masked attention score is set to: finite, so a query that may see nothing (a padding
/// position) gets a uniform softmax instead of NaN (transformers uses the dtype's minimum too).
const MASKED: f32 = f32::MIN;

/// A LLaVA checkpoint's language model with its head, ready to answer.
pub struct Generator {
    llama: LlamaModel,
    lm_head: Linear,
    tokenizer: Prompt,
    eos: Vec<u32>,
}

impl Generator {
    /// Loads every decoder layer, the final norm and `lm_head` (the embeddings when the config
    /// ties them), with the checkpoint's tokenizer. `chat` is a prompt with one `<image>`, used
    /// to check the tokenizer.
    pub fn load(ck: &Checkpoint, chat: &str, device: &Device, dtype: DType) -> Result<Self> {
        let tokenizer = Prompt::load(ck, chat)?;
        let cfg = text_config(ck)?;
        let files = ck.language_files()?;
        let names = tensor_names(&files)?;
        let prefix = language_prefix(&names);
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let root = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let llama = LlamaModel::new(
            root.pp(prefix.trim_end_matches('.')),
            &cfg,
            cfg.num_hidden_layers,
        )
        .with_context(|| format!("model '{}': loading its language model", ck.id))?;
        let shape = (cfg.vocab_size, cfg.hidden_size);
        let head = match names.iter().find(|n| n.ends_with("lm_head.weight")) {
            Some(name) => root.get(shape, name)?,
            None if ties_embeddings(&ck.config) => {
                root.get(shape, &format!("{prefix}embed_tokens.weight"))?
            }
            None => bail!(
                "model '{}': no lm_head.weight in its weights (and the config does not tie it to \
                 the embeddings); zero-shot answers need the language-model head",
                ck.id
            ),
        };
        let eos = eos_ids(ck, &tokenizer)?;
        Ok(Self {
            llama,
            lm_head: Linear::new(head, None),
            tokenizer,
            eos,
        })
    }

    /// The tokenizer (and the prompt it was checked with).
    pub fn tokenizer(&self) -> &Prompt {
        &self.tokenizer
    }

    /// The token ids that end an answer.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// The decoder.
    pub fn llama(&self) -> &LlamaModel {
        &self.llama
    }

    /// Answers for each image: `chats[i]` (one `<image>`) with `image_tokens[i]` [N, D] (the
    /// projector's output) where its `<image>` is; chats of different lengths are left-padded
    /// into one batch. Generated ids, the end token left out.
    pub fn answer_images(
        &self,
        chats: &[String],
        image_tokens: &Tensor,
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let (b, n, _) = image_tokens.dims3()?;
        if chats.len() != b {
            bail!("{} chats for {b} images", chats.len());
        }
        let parts: Vec<(Vec<u32>, Vec<u32>)> = chats
            .iter()
            .map(|c| self.tokenizer.image_ids_of(c))
            .collect::<Result<_>>()?;
        let lens: Vec<usize> = parts.iter().map(|(p, a)| p.len() + n + a.len()).collect();
        let t = lens.iter().copied().max().unwrap_or(0);
        let device = image_tokens.device();
        let embed = |ids: &[u32]| -> Result<Tensor> {
            Ok(self.llama.embed(&Tensor::new(ids, device)?.unsqueeze(0)?)?)
        };
        let tokens = image_tokens.to_dtype(self.llama.dtype())?;
        let rows = parts
            .iter()
            .zip(&lens)
            .enumerate()
            .map(|(i, ((before, after), &len))| {
                // Padding (token 0, never attended to), the prompt up to <image>, the image.
                let head: Vec<u32> = std::iter::repeat_n(0, t - len)
                    .chain(before.iter().copied())
                    .collect();
                let image = tokens.narrow(0, i, 1)?;
                Ok(Tensor::cat(&[embed(&head)?, image, embed(after)?], 1)?)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        self.greedy(&Tensor::cat(&rows, 0)?, &lens, max_new_tokens)
    }

    /// Answers to whole prompts (no `<image>`: a text stands in its place), left-padded into
    /// one batch. Generated ids, the end token left out.
    pub fn answer_texts(&self, prompts: &[String], max_new_tokens: usize) -> Result<Vec<Vec<u32>>> {
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p))
            .collect::<Result<_>>()?;
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let t = lens.iter().copied().max().unwrap_or(0);
        let padded: Vec<u32> = ids
            .iter()
            .flat_map(|v| std::iter::repeat_n(0, t - v.len()).chain(v.iter().copied()))
            .collect();
        let ids = Tensor::from_vec(padded, (prompts.len(), t), self.llama.device())?;
        let embeds = self.llama.embed(&ids)?;
        self.greedy(&embeds, &lens, max_new_tokens)
    }

    /// The text of generated ids (special tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    /// The next-token logits [B, vocab] (f32) after prompts given as input embeddings [B, T, D]
    /// whose row `i` holds `lens[i]` real tokens at its end (left padding before them).
    pub fn next_token_logits(&self, embeds: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let mut caches = self.caches(embeds.dim(1)?);
        self.prefill(embeds, lens, &mut caches)
    }

    /// Greedy decoding from input embeddings [B, T, D] whose row `i` holds `lens[i]` real
    /// tokens at its end (left padding before them).
    pub fn greedy(
        &self,
        embeds: &Tensor,
        lens: &[usize],
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let (b, t, _) = embeds.dims3()?;
        let device = self.llama.device();
        let pads: Vec<usize> = lens.iter().map(|&l| t.saturating_sub(l)).collect();
        let mut caches = self.caches(t + max_new_tokens);
        let mut logits = self.prefill(embeds, lens, &mut caches)?;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for step in 0..max_new_tokens {
            let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            for (i, &tok) in next.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if self.eos.contains(&tok) {
                    done[i] = true;
                } else {
                    out[i].push(tok);
                }
            }
            if done.iter().all(|&d| d) || step + 1 == max_new_tokens {
                break;
            }
            // One new token per row at position len + step; it sees its row's real tokens.
            let ids = Tensor::from_vec(next, (b, 1), device)?;
            let pos: Vec<u32> = lens.iter().map(|&l| (l + step) as u32).collect();
            let pos = Tensor::from_vec(pos, (b, 1), device)?;
            let mask = step_mask(&pads, t + step + 1, device)?;
            let hidden =
                self.llama
                    .forward_cached(&self.llama.embed(&ids)?, &pos, &mask, &mut caches)?;
            logits = self.head(&hidden)?;
        }
        Ok(out)
    }

    /// One empty cache per layer with room for `capacity` positions.
    fn caches(&self, capacity: usize) -> Vec<LayerCache> {
        (0..self.llama.loaded_layers())
            .map(|_| LayerCache::new(capacity))
            .collect()
    }

    /// Runs the prompts into empty `caches`; the logits after their last token [B, vocab].
    fn prefill(
        &self,
        embeds: &Tensor,
        lens: &[usize],
        caches: &mut [LayerCache],
    ) -> Result<Tensor> {
        let (b, t, _) = embeds.dims3()?;
        if lens.len() != b || lens.iter().any(|&l| l == 0 || l > t) {
            bail!(
                "{} prompt lengths for {b} prompts of {t} positions: {lens:?}",
                lens.len()
            );
        }
        let device = self.llama.device();
        let pads: Vec<usize> = lens.iter().map(|&l| t - l).collect();
        // Positions 0..len per row (the padding's are never seen), causal and padding mask.
        let positions: Vec<u32> = pads
            .iter()
            .flat_map(|&p| (0..t).map(move |j| j.saturating_sub(p) as u32))
            .collect();
        let positions = Tensor::from_vec(positions, (b, t), device)?;
        let mask = prompt_mask(&pads, t, device)?;
        let hidden = self
            .llama
            .forward_cached(embeds, &positions, &mask, caches)?;
        self.head(&hidden)
    }

    /// Logits [B, vocab] (f32) of the last position of hidden states [B, T, D].
    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
        Ok(self
            .lm_head
            .forward(&last)?
            .squeeze(1)?
            .to_dtype(DType::F32)?)
    }

    /// Stops answers at these token ids instead of the checkpoint's end-of-sequence tokens.
    pub fn set_eos(&mut self, eos: Vec<u32>) {
        self.eos = eos;
    }
}

/// SHA-256 over what the answers depend on besides the vision side: the language model's
/// tensors ([`super::language_fingerprints`] at full depth), the head's and the tokenizer.
pub fn answer_fingerprint(ck: &Checkpoint) -> Result<String> {
    let cfg = text_config(ck)?;
    let files = ck.language_files()?;
    let names = tensor_names(&files)?;
    let head: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with("lm_head.weight"))
        .collect();
    let mut h = Sha256::new();
    h.update(super::language_fingerprints(ck, &[cfg.num_hidden_layers])?[0].as_bytes());
    for d in tensor_digests(&files, &head)?.values() {
        h.update(d);
    }
    h.update(std::fs::read(ck.file("tokenizer.json")?)?);
    Ok(hex::encode(h.finalize()))
}

/// [B, 1, T, T] f32: query `i` of row `r` may see key `j` when `pad_r ≤ j ≤ i`.
fn prompt_mask(pads: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = pads
        .iter()
        .flat_map(|&p| {
            (0..t).flat_map(move |i| (0..t).map(move |j| if j < p || j > i { MASKED } else { 0.0 }))
        })
        .collect();
    Ok(Tensor::from_vec(m, (pads.len(), 1, t, t), device)?)
}

/// [B, 1, 1, seen] f32: the new token of row `r` sees every key but its row's padding.
fn step_mask(pads: &[usize], seen: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = pads
        .iter()
        .flat_map(|&p| (0..seen).map(move |j| if j < p { MASKED } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(m, (pads.len(), 1, 1, seen), device)?)
}

/// Whether the language model's head shares the embeddings (`tie_word_embeddings`, which
/// LLaMA configs default to false).
fn ties_embeddings(config: &Value) -> bool {
    let text = config.get("text_config").unwrap_or(config);
    text.get("tie_word_embeddings")
        .or(config.get("tie_word_embeddings"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The end-of-sequence ids, as transformers' generation config has them: generation_config.json,
/// else the text config's (or the top level's) `eos_token_id`, else the tokenizer's `</s>`.
fn eos_ids(ck: &Checkpoint, tokenizer: &Prompt) -> Result<Vec<u32>> {
    let ids = |v: &Value| -> Option<Vec<u32>> {
        match v.get("eos_token_id")? {
            Value::Number(n) => Some(vec![n.as_u64()? as u32]),
            Value::Array(a) => a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect(),
            _ => None,
        }
    };
    if let Some(path) = ck.optional_file("generation_config.json")? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        if let Some(e) = ids(&v) {
            return Ok(e);
        }
    }
    let text = ck.config.get("text_config").unwrap_or(&ck.config);
    if let Some(e) = ids(text).or_else(|| ids(&ck.config)) {
        return Ok(e);
    }
    tokenizer
        .token_id("</s>")
        .map(|e| vec![e])
        .with_context(|| {
            format!(
            "model '{}': no eos_token_id in its configs and no </s> token: cannot tell where an \
             answer ends",
            ck.id
        )
        })
}
