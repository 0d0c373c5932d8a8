//! `gapprobe bench --ops`: the encoder layer's operations timed one by one at the benchmark's
//! shapes (CLIP ViT-L/14-336: 577 tokens, width 1024, MLP 4096, 16 heads; LLaVA-1.5 projector),
//! so a slow kernel shows up by name. Each op runs on random inputs, synchronised before and after.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use gapprobe_features::models::{
    add_norm, fused, gemm_epilogue, mean_tokens, mean_tokens_kernel, planes, stages, Act,
    PatchEmbedding,
};
use std::time::Instant;

/// One marked pass of `forward` ([`stages::record`]) after one unmarked: prints each stage's
/// total, its calls and its share of the pass, so the gap between the per-op sum and the batch
/// time has names.
pub fn print_stages(
    device: &Device,
    dtype_name: &str,
    batch: usize,
    forward: impl Fn() -> Result<Tensor>,
) -> Result<()> {
    forward()?;
    let (_, stages) = stages::record(device, || {
        forward().map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    })?;
    let total: f64 = stages.iter().map(|s| s.ms).sum();
    println!("# stages of one marked pass at batch {batch} ({dtype_name}); ms summed over calls");
    for s in &stages {
        println!(
            "{:<10} {:<6} {:<36} {:>5} calls {:>9.3} ms {:>6.1}%",
            "stage",
            dtype_name,
            s.name,
            s.calls,
            s.ms,
            100.0 * s.ms / total
        );
    }
    println!(
        "{:<10} {:<6} {:<36} {:>11} {:>9.3} ms",
        "stage", dtype_name, "marked pass", "", total
    );
    Ok(())
}

/// Median milliseconds of `iters` runs of `f` after one warm-up.
fn time_ms(device: &Device, iters: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        let y = f()?;
        device.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(y);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Prints one line per operation and the per-layer and per-batch sums.
pub fn profile(
    device: &Device,
    dtype: DType,
    batch: usize,
    iters: usize,
    layers: usize,
    attention_kernels: &[fused::AttentionKernel],
) -> Result<()> {
    let (t, d, f, heads) = (577usize, 1024usize, 4096usize, 16usize);
    let rows = batch * t;
    let rnd = |shape: (usize, usize)| -> Result<Tensor> {
        Ok(Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype)?)
    };
    let x = rnd((rows, d))?;
    let w_qkv = rnd((3 * d, d))?;
    let w_out = rnd((d, d))?;
    let w_fc1 = rnd((f, d))?;
    let w_fc2 = rnd((d, f))?;
    let (b_d, b_3d, b_f) = (
        rnd((1, d))?.squeeze(0)?,
        rnd((1, 3 * d))?.squeeze(0)?,
        rnd((1, f))?.squeeze(0)?,
    );
    let ln_w = Tensor::ones(d, dtype, device)?;
    let qkv = x.matmul(&w_qkv.t()?)?;
    let attn_in = qkv.reshape((batch, t, 3 * d))?;
    let h = x.matmul(&w_fc1.t()?)?;
    let fused_on = fused::enabled_for(device);
    println!(
        "# ops at batch {batch} ({rows} token rows), {dtype:?}; ms per call, median of {iters}"
    );
    let mut layer = Vec::new();
    let mut add = |name: &str, ms: f64, in_layer: bool| {
        println!("{:<10} {:<28} {:>9.3}", "op", name, ms);
        if in_layer {
            layer.push(ms);
        }
    };
    use fused::AttentionKernel::{
        Flash as fa, Flash128 as fa128, Flash32 as fa32, Flash8 as fa8, FlashSkip as fa_skip,
        Mma as mma, Mma8 as mma8, Warpgroup as wg, Wmma as wmma,
    };
    // The mma kernels get the q|k|v bias from its own pass; the fa kernels fold it in.
    let attention = |kernel, with_bias: bool| -> Result<Tensor> {
        let bias = with_bias.then_some(&b_3d);
        Ok(fused::attention_packed_with(
            &attn_in, bias, heads, 0.125, kernel,
        )?)
    };
    if fused_on {
        let ms = time_ms(device, iters, || {
            Ok(fused::layer_norm(&x, &ln_w, &b_d, 1e-5)?)
        })?;
        add("layer_norm (×2 per layer)", 2.0 * ms, true);
    }
    let ms = time_ms(device, iters, || {
        Ok(candle_nn::ops::layer_norm(&x, &ln_w, &b_d, 1e-5)?)
    })?;
    add("layer_norm candle (×2)", 2.0 * ms, !fused_on);
    let ms = time_ms(device, iters, || Ok(x.matmul(&w_qkv.t()?)?))?;
    add("gemm q|k|v 1024→3072", ms, true);
    if fused_on {
        let ms = time_ms(device, iters, || Ok(fused::bias_act(&qkv, &b_3d, None)?))?;
        add("bias q|k|v", ms, true);
        if matches!(dtype, DType::BF16 | DType::F16) {
            let mut att = |name: &str,
                           kernel: fused::AttentionKernel,
                           with_bias,
                           in_layer: bool|
             -> Result<()> {
                // The layer's own line always runs; the A/B lines only for the chosen kernels.
                let chosen = attention_kernels.contains(&kernel) && kernel.runs_on(device);
                if !in_layer && !chosen {
                    return Ok(());
                }
                add(
                    name,
                    time_ms(device, iters, || attention(kernel, with_bias))?,
                    in_layer,
                );
                Ok(())
            };
            att("attention (mma)", mma, false, true)?;
            att("attention+bias in-kernel (mma)", mma, true, false)?;
            att("attention (mma, 8 warps)", mma8, false, false)?;
            att("attention (wmma)", wmma, false, false)?;
            att("attention+bias folded (fa)", fa, true, false)?;
            att("attention+bias folded (fa128)", fa128, true, false)?;
            att("attention+bias folded (fa8)", fa8, true, false)?;
            att("attention+bias folded (fa_skip)", fa_skip, true, false)?;
            att("attention+bias folded (fa32)", fa32, true, false)?;
            att("attention+bias folded (wg)", wg, true, false)?;
        }
    }
    add(
        "gemm out 1024→1024",
        time_ms(device, iters, || Ok(x.matmul(&w_out.t()?)?))?,
        true,
    );
    if fused_on {
        add(
            "bias+residual (×2 per layer)",
            2.0 * time_ms(device, iters, || Ok(fused::bias_residual(&x, &b_d, &x)?))?,
            true,
        );
        // The wider residual streams' versions of the stream's passes: f32 around 16-bit layers
        // (GAPPROBE_RESIDUAL=f32, the bf16 default), f16 around bf16 (GAPPROBE_RESIDUAL=f16, the
        // bf16 stream's bytes); the last line of each is both in one pass (GAPPROBE_ADD_NORM=1),
        // to compare with the sum of the first two.
        let streams: &[(DType, &str)] = match dtype {
            DType::BF16 => &[(DType::F32, "f32"), (DType::F16, "f16")],
            DType::F16 => &[(DType::F32, "f32")],
            _ => &[],
        };
        for &(stream, name) in streams {
            let wide = x.to_dtype(stream)?;
            add(
                &format!("bias+residual {name} stream (×2)"),
                2.0 * time_ms(device, iters, || Ok(fused::bias_residual(&x, &b_d, &wide)?))?,
                false,
            );
            add(
                &format!("layer_norm from {name} stream (×2)"),
                2.0 * time_ms(device, iters, || {
                    Ok(fused::layer_norm(&wide, &ln_w, &b_d, 1e-5)?)
                })?,
                false,
            );
            add(
                &format!("add+layer_norm {name} stream (×2)"),
                2.0 * time_ms(device, iters, || {
                    let (s, n) = add_norm::add_layer_norm(&x, &b_d, &wide, &ln_w, &b_d, 1e-5)?;
                    drop(s);
                    Ok(n)
                })?,
                false,
            );
        }
    }
    if fused_on {
        // The same Linear layers with the bias (and residual) in the GEMM's epilogue (the
        // default; GAPPROBE_GEMM_EPILOGUE=0 turns it off): compare with the GEMM plus its pass
        // above and below.
        let lt = |w: &Tensor, b: &Tensor, input: &Tensor, res: Option<&Tensor>| {
            time_ms(device, iters, || {
                Ok(gemm_epilogue::linear(input, w, b, res)?)
            })
        };
        add(
            "epilogue: q|k|v + bias",
            lt(&w_qkv, &b_3d, &x, None)?,
            false,
        );
        add(
            "epilogue: out + bias+res",
            lt(&w_out, &b_d, &x, Some(&x))?,
            false,
        );
        add(
            "epilogue: fc2 + bias+res",
            lt(&w_fc2, &b_d, &h, Some(&x))?,
            false,
        );
    }
    add(
        "gemm fc1 1024→4096",
        time_ms(device, iters, || Ok(x.matmul(&w_fc1.t()?)?))?,
        true,
    );
    if fused_on {
        add(
            "bias+quick_gelu 4096",
            time_ms(device, iters, || {
                Ok(fused::bias_act(&h, &b_f, Some(Act::QuickGelu))?)
            })?,
            true,
        );
        // Through the fast intrinsics (GAPPROBE_FAST_ACT=1).
        add(
            "bias+quick_gelu fast",
            time_ms(device, iters, || {
                Ok(fused::with_fast_act(true, || {
                    fused::bias_act(&h, &b_f, Some(Act::QuickGelu))
                })?)
            })?,
            false,
        );
    }
    add(
        "gemm fc2 4096→1024",
        time_ms(device, iters, || Ok(h.matmul(&w_fc2.t()?)?))?,
        true,
    );
    add(
        "broadcast add (candle)",
        time_ms(device, iters, || Ok(h.broadcast_add(&b_f)?))?,
        false,
    );
    // Once per batch, before the layers: the 8-bit planes' upload and their conversion to the
    // model input (the end-to-end path's extra work over the encoder-only figure).
    let planes = vec![128u8; batch * 3 * 336 * 336];
    let upload = time_ms(device, iters, || {
        Ok(Tensor::from_slice(&planes, (batch, 3, 336, 336), device)?)
    })?;
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch", "upload 8-bit planes", upload
    );
    // The same through extraction's page-locked staging buffer (GAPPROBE_PINNED=0: pageable).
    // The buffer is written once; the timed uploads leave it as it is (decoding writes it).
    let mut uploader = gapprobe_features::upload::Uploader::new(device, planes.len())?;
    uploader.upload((batch, 3, 336, 336), |buf| {
        buf.fill(128);
        Ok(())
    })?;
    let staged = time_ms(device, iters, || {
        uploader.upload((batch, 3, 336, 336), |_| Ok(()))
    })?;
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch",
        if uploader.is_pinned() {
            "upload, pinned staging"
        } else {
            "upload, pageable staging"
        },
        staged
    );
    // After the projector: the `.mean` pooling of extraction's feature points, [B, 576, 4096].
    let tokens = Tensor::zeros((batch, 576, 4096), dtype, device)?;
    let pooled = time_ms(device, iters, || Ok(mean_tokens(&tokens)?))?;
    let candle_mean = time_ms(device, iters, || {
        Ok(tokens.to_dtype(DType::F32)?.mean(1)?)
    })?;
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch", "mean over 576 tokens", pooled
    );
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch", "the same, candle's mean", candle_mean
    );
    if fused_on {
        let kernel = time_ms(device, iters, || Ok(mean_tokens_kernel(&tokens)?))?;
        println!(
            "{:<10} {:<28} {:>9.3}",
            "batch", "the same, token-mean kernel", kernel
        );
    }
    let on_device = Tensor::from_slice(&planes, (batch, 3, 336, 336), device)?;
    let levels = Tensor::zeros(768, DType::F32, device)?;
    let input = time_ms(device, iters, || {
        Ok(planes::planes_to_input(&on_device, &levels, dtype)?)
    })?;
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch", "planes → model input", input
    );
    // The patch embedding and the class token, as the tower runs them before 2026-12-07
    // (candle's conv2d, its tokens transposed back and concatenated) and since (a GEMM over
    // the permuted patches: tokens in memory order).
    let (px, w_patch) = (
        Tensor::randn(0f32, 1.0, (batch, 3, 336, 336), device)?.to_dtype(dtype)?,
        Tensor::randn(0f32, 0.02, (d, 3, 14, 14), device)?.to_dtype(dtype)?,
    );
    let cls = rnd((1, d))?
        .reshape((1, 1, d))?
        .broadcast_as((batch, 1, d))?;
    let conv_cfg = candle_nn::Conv2dConfig {
        stride: 14,
        ..Default::default()
    };
    let conv = candle_nn::Conv2d::new(w_patch.clone(), None, conv_cfg);
    // candle's CPU convolution has no bf16 matmul (its matmul op widens bf16; conv2d does not).
    let conv_ms = time_ms(device, iters, || {
        use candle_core::Module;
        let p = conv.forward(&px)?.flatten_from(2)?.transpose(1, 2)?;
        Ok(Tensor::cat(&[&cls, &p], 1)?.contiguous()?)
    });
    let vb = candle_nn::VarBuilder::from_tensors(
        [("weight".to_string(), w_patch)].into(),
        dtype,
        device,
    );
    let embed = PatchEmbedding::new(vb, 3, d, 14, false)?;
    let gemm_ms = time_ms(device, iters, || {
        let (p, _) = embed.forward(&px)?;
        Ok(Tensor::cat(&[&cls, &p], 1)?)
    })?;
    match conv_ms {
        Ok(ms) => println!(
            "{:<10} {:<28} {:>9.3}",
            "batch", "patches: conv2d + class", ms
        ),
        Err(e) => println!(
            "{:<10} {:<28} failed: {}",
            "batch",
            "patches: conv2d + class",
            e.to_string().lines().next().unwrap_or_default()
        ),
    }
    println!(
        "{:<10} {:<28} {:>9.3}",
        "batch", "patches: GEMM + class", gemm_ms
    );
    let per_layer: f64 = layer.iter().sum();
    println!("{:<10} {:<28} {:>9.3}", "sum", "per layer", per_layer);
    println!(
        "{:<10} {:<28} {:>9.3}",
        "sum",
        format!("× {layers} layers"),
        per_layer * layers as f64
    );
    Ok(())
}
