//! Batch size: given, or chosen from the device's free memory; and out-of-memory errors that say
//! which batch size would fit.

use crate::models::{fused, LlamaConfig, VisionLanguageModel};
use crate::FeaturePoint;
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Images per forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "BatchSizeRepr", into = "BatchSizeRepr")]
pub enum BatchSize {
    /// From free GPU memory ([`auto_batch_size`]); [`CPU_BATCH`] on the CPU.
    #[default]
    Auto,
    Fixed(usize),
}

/// Batch size `auto` picks on the CPU, where memory is rarely the limit.
pub const CPU_BATCH: usize = 32;
/// Largest batch `auto` picks: throughput is flat beyond it, and smaller batches resume sooner.
pub const MAX_AUTO_BATCH: usize = 256;
/// Share of free memory `auto` plans to use.
const MEMORY_SHARE: f64 = 0.8;

impl FromStr for BatchSize {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(BatchSize::Auto),
            n => match n.parse::<usize>() {
                Ok(0) | Err(_) => bail!("batch size '{s}': expected a positive number or 'auto'"),
                Ok(n) => Ok(BatchSize::Fixed(n)),
            },
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Auto => f.write_str("auto"),
            BatchSize::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// TOML/JSON form: a number or the string "auto".
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BatchSizeRepr {
    Number(usize),
    Text(String),
}

impl TryFrom<BatchSizeRepr> for BatchSize {
    type Error = anyhow::Error;
    fn try_from(r: BatchSizeRepr) -> Result<Self> {
        match r {
            BatchSizeRepr::Number(n) => n.to_string().parse(),
            BatchSizeRepr::Text(s) => s.parse(),
        }
    }
}

impl From<BatchSize> for BatchSizeRepr {
    fn from(b: BatchSize) -> Self {
        match b {
            BatchSize::Auto => BatchSizeRepr::Text("auto".into()),
            BatchSize::Fixed(n) => BatchSizeRepr::Number(n),
        }
    }
}

/// What one image's forward pass runs, for the memory estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Model input size (height, width).
    pub size: (u32, u32),
    /// Whether the vision tower (and projector) runs: not for `llm.text` points alone.
    pub vision: bool,
    /// Longest sequence the language model runs per image (`llm.*` points); 0 without them.
    pub llm_tokens: usize,
    /// Language-model hidden states kept per image until they are read.
    pub llm_reads: usize,
}

impl Workload {
    /// The vision tower and projector at input `size`, no language model.
    pub fn images(size: (u32, u32)) -> Self {
        Self {
            size,
            vision: true,
            llm_tokens: 0,
            llm_reads: 0,
        }
    }

    /// The work of extracting `points` at input `size`: the language model's longest sequence
    /// is the prompt around the projector's tokens (image arm) or around the longest of `texts`
    /// (text arm), tokenised with the loaded prompt. Without a loaded language model, or
    /// without `llm.*` points, only the vision part counts.
    pub fn of(
        model: &VisionLanguageModel,
        points: &[FeaturePoint],
        texts: &[String],
        size: (u32, u32),
    ) -> Result<Self> {
        let mut w = Self::images(size);
        w.vision = points.iter().any(|p| !p.is_text());
        let Some(lm) = &model.language else {
            return Ok(w);
        };
        let image_arm = points.iter().any(|p| p.is_llm() && !p.is_text());
        let text_arm = points.iter().any(|p| p.is_llm() && p.is_text());
        let info = model.vision.config();
        let p = info.patch_size.max(1) as u32;
        let image_tokens = image_arm.then_some(((size.0 / p) * (size.1 / p)) as usize);
        let texts: Vec<&str> = if text_arm {
            texts.iter().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        w.llm_tokens = lm.sequence_len(image_tokens, &texts)?;
        w.llm_reads = points.iter().filter(|p| p.is_llm()).count();
        Ok(w)
    }
}

/// Estimated device memory one image needs in a forward pass, in bytes: the activations live at
/// once inside an encoder layer (residual, norms, q|k|v, attention output, both MLP
/// activations), the attention scores when the composite path runs, the projector's activations,
/// the input pixels; with `llm.*` points, a decoder layer's activations over the longest
/// sequence (its f32 attention scores grow with the square of it) and the hidden states kept for
/// reading; and a 25% margin for allocator slack.
pub fn bytes_per_image(
    model: &VisionLanguageModel,
    work: &Workload,
    device: &Device,
    dtype: DType,
) -> u64 {
    let s = dtype.size_in_bytes() as f64;
    let mut bytes = 0.0;
    if work.vision {
        let info = model.vision.config();
        let (h, w) = (work.size.0 as f64, work.size.1 as f64);
        let p = info.patch_size.max(1) as f64;
        let t = (h / p).floor() * (w / p).floor() + info.prefix_tokens as f64;
        let (d, f, heads) = (
            info.hidden_size as f64,
            info.intermediate_size as f64,
            info.num_attention_heads.max(1) as f64,
        );
        let mut elems = t * (9.0 * d + 2.0 * f);
        let head_dim = info.hidden_size / info.num_attention_heads.max(1);
        // The composite attention keeps split q, k, v and the score and probability matrices.
        if !fused::attention_supported(device, dtype, head_dim) {
            elems += 3.0 * t * d + 2.0 * heads * t * t;
        }
        if let Some((hidden, out)) = model.projector.as_ref().map(|p| p.widths()) {
            elems += t * (2.0 * hidden as f64 + out as f64);
        }
        bytes += elems * s + 3.0 * h * w * (4.0 + s);
        // An f32 residual stream around 16-bit layers: the stream's tensors in flight (the
        // layer's input, the sum after attention, the output) are wider than the layers'.
        let stream = model.vision.stream_dtype().size_in_bytes() as f64;
        bytes += 3.0 * t * d * (stream - s).max(0.0);
    }
    if let (Some(lm), true) = (&model.language, work.llm_tokens > 0) {
        bytes += decoder_bytes(lm.config(), work.llm_tokens, work.llm_reads, dtype);
    }
    (bytes * 1.25) as u64
}

/// Bytes one sequence of `tokens` tokens needs inside a decoder layer of `c` at `dtype`, with
/// `reads` hidden states kept for reading (before the 25% margin): the attention's input, norm,
/// q, k, v, rotated q and k, k and v repeated for grouped queries, output and its projection;
/// the MLP's gate, up, product and down; RMSNorm's f32 copies; the scores (16-bit product,
/// scaled, f32, masked, softmax, 16-bit probabilities).
pub fn decoder_bytes(c: &LlamaConfig, tokens: usize, reads: usize, dtype: DType) -> f64 {
    let s = dtype.size_in_bytes() as f64;
    let t = tokens as f64;
    let d = c.hidden_size as f64;
    let heads = c.num_attention_heads.max(1) as f64;
    let kv = (c.head_dim() * c.kv_heads()) as f64;
    let f = c.intermediate_size as f64;
    let layer = t * s * (8.0 * d + 4.0 * kv + 4.0 * f + 2.0 * d) + 2.0 * t * d * 4.0;
    let scores = heads * t * t * (12.0 + s);
    let kept = (reads as f64 + 1.0) * t * d * (s + 4.0);
    layer + scores + kept
}

/// Free and total memory of a CUDA device in bytes; `None` on the CPU. Waits for the device and
/// first hands the memory its pool keeps unused back to the driver ([`crate::cuda_pool::trim`]),
/// so the free figure counts it.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    if let Err(e) = crate::cuda_pool::trim(device) {
        tracing::debug!("trimming the CUDA memory pool failed: {e:#}");
    }
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, total)| (free as u64, total as u64)),
        _ => None,
    }
}

/// The batch that fits `share` of `free` bytes at `per_image` bytes each: at least 1, at most
/// [`MAX_AUTO_BATCH`], a multiple of 8 from 8 up.
pub fn fitting_batch(free: u64, per_image: u64) -> usize {
    let n = ((free as f64 * MEMORY_SHARE) / per_image.max(1) as f64) as usize;
    let n = n.clamp(1, MAX_AUTO_BATCH);
    if n >= 8 {
        n / 8 * 8
    } else {
        n
    }
}

/// Resolves `batch` for `model` on `device`: a fixed size as given; `auto` from free memory on
/// CUDA (call after the model is loaded, so its weights are already counted), [`CPU_BATCH`]
/// elsewhere. `work` is asked for only on CUDA with `auto` (sizing the language model's
/// sequences tokenises every text).
pub fn resolve(
    batch: BatchSize,
    model: &VisionLanguageModel,
    work: impl FnOnce() -> Result<Workload>,
    device: &Device,
    dtype: DType,
) -> Result<usize> {
    if let BatchSize::Fixed(n) = batch {
        return Ok(n);
    }
    Ok(match device_memory(device) {
        None => CPU_BATCH,
        Some((free, _)) => {
            let per = bytes_per_image(model, &work()?, device, dtype);
            let n = fitting_batch(free, per);
            tracing::info!(
                "batch size {n} (auto: {:.1} GiB free, about {:.0} MiB per image)",
                free as f64 / GIB,
                per as f64 / MIB
            );
            n
        }
    })
}

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Whether an error is the device running out of memory.
pub fn is_out_of_memory(err: &anyhow::Error) -> bool {
    let msg = format!("{err:#}").to_lowercase();
    msg.contains("out_of_memory") || msg.contains("out of memory")
}

/// Turns an out-of-memory failure of a batch of `batch` images into an error that names the
/// batch size that would fit; other errors pass through.
pub fn explain_oom(
    err: anyhow::Error,
    batch: usize,
    model: &VisionLanguageModel,
    work: &Workload,
    device: &Device,
    dtype: DType,
) -> anyhow::Error {
    if !is_out_of_memory(&err) {
        return err;
    }
    let per = bytes_per_image(model, work, device, dtype);
    let (free, total) = device_memory(device).unwrap_or((0, 0));
    let fit = fitting_batch(free, per).min(batch / 2).max(1);
    err.context(format!(
        "a batch of {batch} images did not fit in {:?}'s memory ({:.1} of {:.1} GiB free now; \
         about {:.0} MiB per image for this model at {dtype:?}): rerun with --batch-size {fit} \
         (or batch_size = {fit} in the experiment's [model]); rows already written are kept",
        device,
        free as f64 / GIB,
        total as f64 / GIB,
        per as f64 / MIB
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_auto() {
        assert_eq!("auto".parse::<BatchSize>().unwrap(), BatchSize::Auto);
        assert_eq!("64".parse::<BatchSize>().unwrap(), BatchSize::Fixed(64));
        for bad in ["0", "-3", "lots"] {
            let e = bad.parse::<BatchSize>().unwrap_err().to_string();
            assert!(e.contains("positive number or 'auto'"), "{e}");
        }
        #[derive(Deserialize)]
        struct T {
            b: BatchSize,
        }
        let t: T = toml::from_str("b = 128").unwrap();
        assert_eq!(t.b, BatchSize::Fixed(128));
        let t: T = toml::from_str("b = \"auto\"").unwrap();
        assert_eq!(t.b, BatchSize::Auto);
        assert!(toml::from_str::<T>("b = 0").is_err());
    }

    #[test]
    fn fitting_batch_rounds_and_clamps() {
        let mib = 1u64 << 20;
        assert_eq!(fitting_batch(100 * 1024 * mib, 50 * mib), MAX_AUTO_BATCH);
        assert_eq!(fitting_batch(1000 * mib, 50 * mib), 16); // 0.8 · 1000 / 50 = 16
        assert_eq!(fitting_batch(1100 * mib, 50 * mib), 16); // 17.6 → 16
        assert_eq!(fitting_batch(300 * mib, 50 * mib), 4);
        assert_eq!(fitting_batch(10 * mib, 50 * mib), 1);
    }

    #[test]
    fn oom_is_recognised_in_cuda_driver_messages() {
        let e = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        assert!(is_out_of_memory(&e));
        assert!(!is_out_of_memory(&anyhow::anyhow!("shape mismatch")));
    }
}
