//! The prompt of LLaVA's language model and the checkpoint's tokenizer: `<image>` marks where the
//! image's projector tokens (or the text standing for the image) go. Loading it is cheap (no
//! weights), so a cache lookup can key entries by it without loading the language model.

use super::Checkpoint;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

/// Where the image (or the text standing for it) goes in a prompt.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// LLaVA-1.5's chat format (llava-hf's chat template) with a neutral question; the same prompt
/// serves both arms, so the two differ only in what stands where `<image>` is.
pub const DEFAULT_PROMPT: &str =
    "USER: <image>\nWhat is the name of the object in the image? ASSISTANT:";

/// A prompt with exactly one `<image>`, and the tokenizer that encodes it.
pub struct Prompt {
    tokenizer: Tokenizer,
    image_token: u32,
    text: String,
    /// SHA-256 of `tokenizer.json`.
    pub tokenizer_hash: String,
}

impl Prompt {
    /// Reads the checkpoint's `tokenizer.json` and checks `prompt`: exactly one `<image>`, a
    /// token the tokenizer knows (and config.json's `image_token_index`, when it names one).
    pub fn load(ck: &Checkpoint, prompt: &str) -> Result<Self> {
        let path = ck.file("tokenizer.json").with_context(|| {
            format!(
                "model '{}': LLM feature points need its tokenizer.json (llava-hf checkpoints \
                 have one; for others, save one with transformers' AutoTokenizer.save_pretrained)",
                ck.id
            )
        })?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer.json: {e}", path.display()))?;
        let configured = ck
            .config
            .get("image_token_index")
            .or(ck.config.get("image_token_id"))
            .and_then(Value::as_u64)
            .map(|v| v as u32);
        let image_token = match (configured, tokenizer.token_to_id(IMAGE_PLACEHOLDER)) {
            (Some(c), Some(t)) if c != t => bail!(
                "model '{}': config.json's image token is {c} but its tokenizer maps <image> to {t}",
                ck.id
            ),
            (_, Some(t)) => t,
            (_, None) => bail!(
                "model '{}': its tokenizer has no <image> token (an original LLaVA checkpoint?); \
                 LLM feature points need a llava-hf checkpoint such as llava-hf/llava-1.5-7b-hf",
                ck.id
            ),
        };
        let p = Self {
            tokenizer,
            image_token,
            text: prompt.to_string(),
            tokenizer_hash: hex::encode(Sha256::digest(&bytes)),
        };
        p.image_ids()?;
        Ok(p)
    }

    /// The prompt as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Token ids of `text` as the tokenizer encodes it (BOS included).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of the prompt before and after its `<image>` (BOS included).
    pub fn image_ids(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        self.image_ids_of(&self.text)
    }

    /// Token ids of another prompt `text` before and after its `<image>` (BOS included).
    pub fn image_ids_of(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if text.matches(IMAGE_PLACEHOLDER).count() != 1 {
            bail!(
                "prompt {text:?} must contain {IMAGE_PLACEHOLDER} exactly once (where the image, or \
                 the text standing for it, goes)"
            );
        }
        let ids = self.encode(text)?;
        let at = ids
            .iter()
            .position(|&t| t == self.image_token)
            .context("the tokenizer did not keep <image> as one token")?;
        Ok((ids[..at].to_vec(), ids[at + 1..].to_vec()))
    }

    /// Text of generated token ids, special tokens left out (transformers'
    /// `decode(ids, skip_special_tokens=True)`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("decoding tokens {ids:?}: {e}"))
    }

    /// The id of `token` in the vocabulary, if it has one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Token ids of the prompt with `text` in place of `<image>`.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(&self.text.replacen(IMAGE_PLACEHOLDER, text, 1))
    }
}
