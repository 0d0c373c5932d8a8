//! `gapprobe bench`: encoder + projector throughput (images/s, ms/batch, TFLOP/s) per dtype and
//! batch size on random weights of a real architecture, and end to end from JPEG files through the
//! same extraction pipeline `extract` uses.
//!
//! FLOP model (the same as ../shared/anchors/torch_baseline.py, so the numbers compare):
//! FLOPs/img = 2·P·(C·p²)·d + L·(2·N·(4·d² + 2·d·f) + 4·N²·d) + 2·P·(d·h + h·o), with P patches,
//! N = P + 1 tokens, L the layers run (23 for `hidden_states[-2]` of a 24-layer tower), projector
//! d→h→o. Matmul FLOPs only; one multiply-add = 2 FLOPs.

use crate::bench_e2e::E2eRun;
use crate::device::{parse_device, parse_dtype};
use crate::ui::Ui;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use gapprobe_features::models::{
    clip_tower_tensors, fused, mlp2x_projector_tensors, Act, ClipVisionConfig, ClipVisionModel,
    Fill, Projector, ProjectorConfig, ProjectorKind, ProjectorLayout, VisionLanguageModel,
};
use std::collections::HashMap;
use std::time::Instant;

/// Benchmark settings (the `gapprobe bench` flags).
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  gapprobe bench --device cuda --dtypes bf16,f16 --batch-sizes 64,128,256 --e2e-images 2048\n  gapprobe bench --preset smoke   # CPU code-path check\n\nFLOPs/img = 2·P·(C·p²)·d + L·(2·N·(4d² + 2df) + 4N²d) + 2·P·(d·h + h·o): matmul FLOPs only, as in torch_baseline.py."
)]
pub struct BenchOptions {
    /// llava15-7b (CLIP ViT-L/14-336 + LLaVA-1.5 projector) or smoke.
    #[arg(long, default_value = "llava15-7b")]
    pub preset: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub dtypes: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub batch_sizes: Vec<usize>,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// JPEGs for the end-to-end measurement (0 skips it).
    #[arg(long, default_value_t = 0)]
    pub e2e_images: usize,
    #[arg(long, default_value_t = 64)]
    pub e2e_batch: usize,
    /// Also time the encoder layer's operations one by one (at the first batch size and dtype).
    #[arg(long)]
    pub ops: bool,
    /// Also run one batch (each dtype's first batch size) with the device synchronised after
    /// every stage of the model, and print where the time goes.
    #[arg(long)]
    pub stages: bool,
    /// Also time decoding and preprocessing alone (the end-to-end path's CPU side) over this many
    /// JPEGs, on all of rayon's threads (0 skips it).
    #[arg(long, default_value_t = 0)]
    pub preprocess_images: usize,
    /// Only the preprocessing measurement (no model is built).
    #[arg(long, requires = "preprocess_images")]
    pub preprocess_only: bool,
    /// Only the kernel checks: every fused kernel on the device against its f32 CPU reference
    /// (no model is built); fails when one is past its tolerance (1e-2 for 16-bit kernels, 1e-4
    /// for f32). Run it in a process of its own before trusting a new kernel: a kernel that
    /// faults leaves the process's CUDA context unusable.
    #[arg(long, conflicts_with = "preprocess_only")]
    pub checks_only: bool,
    /// Leave out the checks that come before the timings (each kernel against its CPU reference,
    /// the device's f32 output against the CPU's), e.g. after a `--checks-only` run; each
    /// dtype's error against the f32 model is still printed.
    #[arg(long, conflicts_with = "checks_only")]
    pub skip_checks: bool,
    /// The attention kernels the checks and `--ops` include, by their `GAPPROBE_ATTENTION`
    /// names (fa, fa128, fa8, fa_skip, fa32, wg, mma, mma8, wmma); default all that run on the
    /// device.
    #[arg(long, value_delimiter = ',')]
    pub attention_kernels: Vec<String>,
}

/// The attention kernels `--attention-kernels` names (all of them when it names none).
fn attention_kernels(names: &[String]) -> Result<Vec<fused::AttentionKernel>> {
    if names.is_empty() {
        return Ok(fused::AttentionKernel::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| {
            fused::AttentionKernel::from_name(name.trim()).with_context(|| {
                format!(
                    "--attention-kernels: no attention kernel is named '{name}' (known: {})",
                    fused::AttentionKernel::known_names()
                )
            })
        })
        .collect()
}

/// Architecture of a preset: (tower config, projector dims d→h→o, hidden state read).
fn preset(name: &str) -> Result<(ClipVisionConfig, (usize, usize, usize))> {
    let clip = |d, f, l, h, p, img| ClipVisionConfig {
        hidden_size: d,
        intermediate_size: f,
        num_hidden_layers: l,
        num_attention_heads: h,
        num_channels: 3,
        image_size: img,
        patch_size: p,
        hidden_act: Act::QuickGelu,
        layer_norm_eps: 1e-5,
    };
    Ok(match name {
        // LLaVA-1.5-7B: CLIP ViT-L/14-336 + mlp2x_gelu to a 4096-wide LLM.
        "llava15-7b" | "clip-l14-336" => (clip(1024, 4096, 24, 16, 14, 336), (1024, 4096, 4096)),
        // Same token count, tiny width: proves every code path on a CPU in seconds.
        "smoke" => (clip(64, 256, 4, 4, 14, 336), (64, 256, 256)),
        other => {
            anyhow::bail!("unknown preset '{other}': llava15-7b (alias clip-l14-336) or smoke")
        }
    })
}

/// Matmul FLOPs per image for `layers` encoder layers plus the projector.
pub fn flops_per_image(cfg: &ClipVisionConfig, layers: usize, proj: (usize, usize, usize)) -> f64 {
    let (d, f, p) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.patch_size as f64,
    );
    let patches = cfg.num_patches() as f64;
    let n = patches + 1.0;
    let embed = 2.0 * patches * (cfg.num_channels as f64 * p * p) * d;
    let layer = 2.0 * n * (4.0 * d * d + 2.0 * d * f) + 4.0 * n * n * d;
    let projector = 2.0 * patches * (proj.0 as f64 * proj.1 as f64 + proj.1 as f64 * proj.2 as f64);
    embed + layers as f64 * layer + projector
}

/// Random f32 weights for the tower's first `layers` layers (names under the tower root) and the
/// projector (under `proj.`), in the demo checkpoint's layout, created directly on the device.
/// Every normal tensor gets std 0.02, transformers' init, so the bf16 check compares like with
/// like across calls.
fn random_tensors(
    cfg: &ClipVisionConfig,
    proj: (usize, usize, usize),
    layers: usize,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let tower = clip_tower_tensors(cfg, layers);
    let projector = mlp2x_projector_tensors(proj.0, proj.1, proj.2)
        .into_iter()
        .map(|(n, s, f)| (format!("proj.{n}"), s, f));
    tower
        .into_iter()
        .chain(projector)
        .map(|(name, shape, fill)| {
            let t = match fill {
                Fill::Normal(_) => Tensor::randn(0f32, 0.02, shape, device)?,
                Fill::Ones => Tensor::ones(shape, DType::F32, device)?,
                Fill::Zeros => Tensor::zeros(shape, DType::F32, device)?,
            };
            Ok((name, t))
        })
        .collect()
}

/// The benchmark model from `tensors`, cast to `dtype`.
fn build_model(
    tensors: &HashMap<String, Tensor>,
    cfg: &ClipVisionConfig,
    proj: (usize, usize, usize),
    layers: usize,
    dtype: DType,
) -> Result<VisionLanguageModel> {
    let cast = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let device = tensors
        .values()
        .next()
        .context("no tensors")?
        .device()
        .clone();
    let vb = VarBuilder::from_tensors(cast, dtype, &device);
    let vision = ClipVisionModel::new(vb.clone(), cfg, layers)?;
    let pcfg = ProjectorConfig {
        kind: ProjectorKind::Mlp2x,
        layout: ProjectorLayout::LlavaHf,
        in_dim: proj.0,
        out_dim: proj.2,
        act: Act::Gelu,
    };
    let projector = Projector::new(vb.pp("proj"), &pcfg)?;
    Ok(VisionLanguageModel {
        vision: vision.into(),
        projector: Some(projector),
        projector_layer: layers,
        projector_drops_cls: true,
        weights_fingerprint: "random".into(),
        config_hash: "bench".into(),
        language: None,
    })
}

/// Relative error ‖a − b‖ / ‖b‖ of a reduced-precision output against the f32 reference.
pub(crate) fn relative_error(a: &Tensor, reference: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F32)?;
    let diff = (a - reference)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let norm = reference.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((diff / norm).sqrt())
}

fn sync(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

/// One encoder+projector forward on a batch, as LLaVA reads it (hidden_states[-2], patch tokens).
fn forward(model: &VisionLanguageModel, pixels: &Tensor) -> Result<Tensor> {
    let h = model
        .vision
        .hidden_states(pixels, &[model.projector_layer])?
        .remove(0);
    let t = h.dim(1)?;
    let patches = h.narrow(1, 1, t - 1)?;
    Ok(model
        .projector
        .as_ref()
        .context("projector")?
        .forward(&patches)?)
}

/// Runs the benchmark and prints one line per measurement plus a summary table.
pub fn run(opts: &BenchOptions, ui: &Ui) -> Result<()> {
    let (cfg, proj) = preset(&opts.preset)?;
    if opts.preprocess_images > 0 {
        crate::bench_e2e::preprocess_rate(
            opts.preprocess_images,
            opts.e2e_batch,
            cfg.image_size as u32,
        )?;
        if opts.preprocess_only {
            return Ok(());
        }
    }
    let device = parse_device(&opts.device)?;
    let kernels = attention_kernels(&opts.attention_kernels)?;
    if opts.checks_only {
        if !fused::enabled_for(&device) {
            anyhow::bail!(
                "--checks-only checks the fused kernels, which are off on {device:?} \
                 (GAPPROBE_KERNELS=off?)"
            );
        }
        let failures = crate::bench_checks::check_kernels(&device, &kernels)?;
        if !failures.is_empty() {
            anyhow::bail!(
                "{} kernel check(s) past tolerance on {device:?}: {}",
                failures.len(),
                failures.join("; ")
            );
        }
        println!("{:<10} every kernel check passed on {device:?}", "kernel");
        return Ok(());
    }
    let layers = cfg.num_hidden_layers - 1; // hidden_states[-2]
    let gflop = flops_per_image(&cfg, layers, proj) / 1e9;
    println!(
        "# gapprobe bench: preset {} on {:?}; {:.1} GFLOP/image (matmul FLOPs, {} layers + projector); fused kernels {}",
        opts.preset,
        device,
        gflop,
        layers,
        if fused::enabled_for(&device) { "on" } else { "off" }
    );
    println!(
        "{:<10} {:<6} {:>6} {:>10} {:>10} {:>9}",
        "what", "dtype", "batch", "ms/batch", "images/s", "TFLOP/s"
    );
    let tensors = random_tensors(&cfg, proj, layers, &device)?;
    // A fixed check batch: every dtype's output is compared with the f32 model's on it.
    let check_px = Tensor::randn(0f32, 1.0, (2, 3, cfg.image_size, cfg.image_size), &device)?;
    let reference = forward(
        &build_model(&tensors, &cfg, proj, layers, DType::F32)?,
        &check_px,
    )?;
    if !device.is_cpu() && !opts.skip_checks {
        // The device's f32 path (folded biases, device kernels) against the CPU's on the same weights.
        let cpu = Device::Cpu;
        let cpu_tensors = tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(&cpu)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let cpu_model = build_model(&cpu_tensors, &cfg, proj, layers, DType::F32)?;
        let cpu_out = forward(&cpu_model, &check_px.to_device(&cpu)?)?;
        let err = relative_error(&reference.to_device(&cpu)?, &cpu_out)?;
        println!(
            "{:<10} {:<6} relative error of the device's f32 output vs the CPU's: {err:.2e}",
            "check", "f32"
        );
    }
    if !device.is_cpu() && fused::enabled_for(&device) && !opts.skip_checks {
        // A failing check is printed, not fatal: the measurements below still run (a device
        // call is short, and an opt-in kernel's failure should not cost the defaults' figures).
        match crate::bench_checks::check_kernels(&device, &kernels) {
            Ok(failures) if failures.is_empty() => {}
            Ok(failures) => println!(
                "{:<10} {} kernel check(s) past tolerance: {}",
                "kernel",
                failures.len(),
                failures.join("; ")
            ),
            Err(e) => println!(
                "{:<10} the kernel checks stopped at a failure: {e:#}",
                "kernel"
            ),
        }
    }
    if opts.ops {
        let dtype = parse_dtype(opts.dtypes.first().map(String::as_str).unwrap_or("f32"))?;
        let batch = opts.batch_sizes.first().copied().unwrap_or(8);
        crate::bench_ops::profile(&device, dtype, batch, opts.iters, layers, &kernels)?;
    }
    for dtype_name in &opts.dtypes {
        let dtype = parse_dtype(dtype_name)?;
        crate::device::check_dtype_on(&device, dtype)?;
        let model = build_model(&tensors, &cfg, proj, layers, dtype)?;
        let err = relative_error(&forward(&model, &check_px.to_dtype(dtype)?)?, &reference)?;
        println!(
            "{:<10} {:<6} relative error of the projector output vs f32: {err:.2e}",
            "check", dtype_name
        );
        for &b in &opts.batch_sizes {
            let px = Tensor::randn(0f32, 1.0, (b, 3, cfg.image_size, cfg.image_size), &device)?
                .to_dtype(dtype)?;
            let result = (|| -> Result<Vec<f64>> {
                for _ in 0..opts.warmup {
                    forward(&model, &px)?;
                }
                sync(&device)?;
                let mut times = Vec::new();
                for _ in 0..opts.iters {
                    let t0 = Instant::now();
                    forward(&model, &px)?;
                    sync(&device)?;
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                Ok(times)
            })();
            match result {
                Ok(mut times) => {
                    times.sort_by(f64::total_cmp);
                    let ms = times[times.len() / 2];
                    let ips = b as f64 / (ms / 1e3);
                    println!(
                        "{:<10} {:<6} {:>6} {:>10.2} {:>10.1} {:>9.1}",
                        "encoder",
                        dtype_name,
                        b,
                        ms,
                        ips,
                        ips * gflop / 1e3
                    );
                }
                Err(e) => println!("{:<10} {:<6} {:>6} failed: {e:#}", "encoder", dtype_name, b),
            }
        }
        if opts.stages {
            let b = opts.batch_sizes.first().copied().unwrap_or(8);
            let px = Tensor::randn(0f32, 1.0, (b, 3, cfg.image_size, cfg.image_size), &device)?
                .to_dtype(dtype)?;
            crate::bench_ops::print_stages(&device, dtype_name, b, || forward(&model, &px))?;
        }
        if let Some(bytes) = gapprobe_features::cuda_pool::reserved_bytes(&device)? {
            println!(
                "{:<10} {:<6} the memory pool holds {:.2} GiB after the last batch's \
                 synchronisation (freed memory kept between batches: {})",
                "pool",
                dtype_name,
                bytes as f64 / (1u64 << 30) as f64,
                gapprobe_features::cuda_pool::retain_enabled()
            );
        }
        if opts.e2e_images > 0 {
            let run = E2eRun {
                images: opts.e2e_images,
                batch: opts.e2e_batch,
                image_size: cfg.image_size as u32,
                gflop,
            };
            run.measure(&model, &device, dtype, dtype_name, ui)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapprobe_features::models::stages;

    #[test]
    fn flop_model_matches_the_torch_anchor() {
        // torch_baseline.py reports 390–406 GFLOP/image for CLIP-L/14-336 + LLaVA projector.
        let (cfg, proj) = preset("llava15-7b").unwrap();
        let g = flops_per_image(&cfg, 23, proj) / 1e9;
        assert!((380.0..410.0).contains(&g), "{g}");
    }

    #[test]
    fn smoke_bench_runs_on_cpu() {
        let opts = BenchOptions {
            preset: "smoke".into(),
            device: "cpu".into(),
            dtypes: vec!["f32".into()],
            batch_sizes: vec![2],
            warmup: 0,
            iters: 1,
            e2e_images: 4,
            e2e_batch: 2,
            ops: false,
            stages: true,
            preprocess_images: 3,
            preprocess_only: false,
            checks_only: false,
            skip_checks: false,
            attention_kernels: vec![],
        };
        run(&opts, &Ui { quiet: true }).unwrap();
    }

    #[test]
    fn attention_kernels_by_name() {
        assert_eq!(
            attention_kernels(&[]).unwrap(),
            fused::AttentionKernel::ALL.to_vec()
        );
        let picked = attention_kernels(&["wg".into(), " fa_skip".into()]).unwrap();
        assert_eq!(
            picked,
            [
                fused::AttentionKernel::Warpgroup,
                fused::AttentionKernel::FlashSkip
            ]
        );
        let err = attention_kernels(&["flash".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'flash'") && err.contains("fa_skip, fa32, wg"),
            "{err}"
        );
    }

    /// A kernel check past its tolerance, or NaN, is a failure; one inside it is not.
    #[test]
    fn kernel_check_tolerances() {
        use crate::bench_checks::passes;
        // The worst measured errors (call 4: attention in bf16, the device's f32 model) pass.
        assert!(passes(2.35e-3, DType::BF16) && passes(2.9e-4, DType::F16));
        assert!(passes(1.91e-6, DType::F32) && passes(0.0, DType::F32));
        // A wrong kernel's O(1), a 16-bit kernel's error in f32, and NaN do not.
        assert!(!passes(0.8, DType::BF16) && !passes(2.35e-3, DType::F32));
        assert!(!passes(f64::NAN, DType::F16));
    }

    /// A marked pass of the fused model books every layer's stages once per layer, the last
    /// layer's residual add on its own (no next norm to fuse) and the projector's once.
    #[test]
    fn stages_name_each_layer_op() {
        let (cfg, proj) = preset("smoke").unwrap();
        let layers = cfg.num_hidden_layers - 1;
        let dev = Device::Cpu;
        let tensors = random_tensors(&cfg, proj, layers, &dev).unwrap();
        let model = fused::with_mode(true, || {
            build_model(&tensors, &cfg, proj, layers, DType::F32)
        })
        .unwrap();
        let px = Tensor::randn(0f32, 1.0, (2, 3, cfg.image_size, cfg.image_size), &dev).unwrap();
        let (_, stages) = stages::record(&dev, || {
            forward(&model, &px).map_err(|e| candle_core::Error::Msg(e.to_string()))
        })
        .unwrap();
        let calls = |name: &str| stages.iter().find(|s| s.name == name).map(|s| s.calls);
        assert_eq!(calls("embeddings: patch conv"), Some(1));
        assert_eq!(calls("embeddings: widen + pre-norm"), Some(1));
        assert_eq!(calls("first layer's norm"), Some(1));
        assert_eq!(calls("attention"), Some(layers));
        assert_eq!(calls("out GEMM + residual + norm"), Some(layers));
        assert_eq!(calls("fc1 GEMM + activation"), Some(layers));
        assert_eq!(calls("fc2 GEMM + residual + next norm"), Some(layers - 1));
        assert_eq!(calls("fc2 GEMM + residual (last layer)"), Some(1));
        assert_eq!(calls("projector: fc2 GEMM"), Some(1));
    }
}
