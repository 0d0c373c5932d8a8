//! Batch-size planning and out-of-memory errors on a real (tiny) checkpoint.

use candle_core::{DType, Device};
use gapprobe_features::batching::{
    bytes_per_image, explain_oom, resolve, BatchSize, Workload, CPU_BATCH,
};
use gapprobe_features::models::{Checkpoint, VisionLanguageModel};
use std::path::Path;

fn model() -> (VisionLanguageModel, Workload) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/clip_a");
    let ck = Checkpoint::from_dir("clip_a", &dir).unwrap();
    let size = ck.preprocess.output_size();
    let m = VisionLanguageModel::load(&ck, usize::MAX, &Device::Cpu, DType::F32).unwrap();
    (m, Workload::images(size))
}

#[test]
fn estimate_scales_with_dtype_and_auto_is_fixed_on_the_cpu() {
    let (m, work) = model();
    let f32b = bytes_per_image(&m, &work, &Device::Cpu, DType::F32);
    let bf16b = bytes_per_image(&m, &work, &Device::Cpu, DType::BF16);
    assert!(f32b > bf16b && bf16b > 0, "{f32b} {bf16b}");
    assert_eq!(
        resolve(BatchSize::Auto, &m, || Ok(work), &Device::Cpu, DType::F32).unwrap(),
        CPU_BATCH
    );
    assert_eq!(
        resolve(
            BatchSize::Fixed(7),
            &m,
            || Ok(work),
            &Device::Cpu,
            DType::F32
        )
        .unwrap(),
        7
    );
}

/// A bf16 model with an f32 residual stream (the fused ops' default around bf16) is planned with
/// the wider stream's bytes.
#[test]
fn estimate_counts_an_f32_residual_stream() {
    use gapprobe_features::models::fused;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/clip_a");
    let ck = Checkpoint::from_dir("clip_a", &dir).unwrap();
    let work = Workload::images(ck.preprocess.output_size());
    let load = |wide: bool| {
        fused::with_mode(true, || {
            fused::with_f32_residual(wide, || {
                VisionLanguageModel::load(&ck, usize::MAX, &Device::Cpu, DType::BF16).unwrap()
            })
        })
    };
    let (narrow, wide) = (load(false), load(true));
    assert_eq!(wide.vision.stream_dtype(), DType::F32);
    let b = |m: &VisionLanguageModel| bytes_per_image(m, &work, &Device::Cpu, DType::BF16);
    assert!(b(&wide) > b(&narrow), "{} {}", b(&wide), b(&narrow));
}

#[test]
fn out_of_memory_names_a_batch_size_and_other_errors_pass_through() {
    let (m, work) = model();
    let oom = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
    let msg = format!(
        "{:#}",
        explain_oom(oom, 64, &m, &work, &Device::Cpu, DType::BF16)
    );
    assert!(msg.contains("a batch of 64 images did not fit"), "{msg}");
    assert!(msg.contains("rerun with --batch-size "), "{msg}");
    assert!(msg.contains("rows already written are kept"), "{msg}");
    let other = anyhow::anyhow!("shape mismatch in matmul");
    let msg = format!(
        "{:#}",
        explain_oom(other, 64, &m, &work, &Device::Cpu, DType::BF16)
    );
    assert_eq!(msg, "shape mismatch in matmul");
}

/// The figure docs/feature-points.md quotes: LLaVA-1.5-7B's decoder (transformers' LlamaConfig
/// defaults, which llava-1.5-7b-hf's text_config relies on), ~600 tokens (the default prompt
/// around 576 projector tokens), one read, bf16: about 0.4 GB per image with the 25% margin,
/// the vision tower's share coming on top.
#[test]
fn llava_7b_decoder_share_per_image() {
    use gapprobe_features::batching::decoder_bytes;
    use gapprobe_features::models::LlamaConfig;
    let cfg: LlamaConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads
        ),
        (4096, 11008, 32)
    );
    let mib = decoder_bytes(&cfg, 600, 1, DType::BF16) * 1.25 / (1u64 << 20) as f64;
    assert!((390.0..400.0).contains(&mib), "{mib} MiB");
    // The scores grow with the square of the sequence: twice the tokens, more than twice the bytes.
    assert!(
        decoder_bytes(&cfg, 1200, 1, DType::BF16) > 2.0 * decoder_bytes(&cfg, 600, 1, DType::BF16)
    );
}
