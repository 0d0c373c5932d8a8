//! `gapprobe bench --device cuda`'s first step: every fused kernel on the device against its f32
//! CPU reference, on the same random inputs at the benchmark's shapes.

use crate::bench::relative_error;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use fused::AttentionKernel;
use gapprobe_features::models::{add_norm, fused, gemm_epilogue, mean_tokens_kernel, planes, Act};
use std::cell::RefCell;

/// The largest relative error a kernel may show against its f32 CPU reference: the attention
/// kernels' rounding of probabilities to 16 bits gives 2.35e-3 in bf16 (every other 16-bit kernel
/// less), f32 kernels differ by their summation order (about 1e-6); a wrong kernel gives O(1).
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 | DType::F64 => 1e-4,
        _ => 1e-2,
    }
}

/// Whether a kernel's relative error `err` in `dtype` passes its check (NaN does not).
pub fn passes(err: f64, dtype: DType) -> bool {
    err <= tolerance(dtype)
}

/// Runs each fused kernel on the device and its f32 reference on the CPU, on the same random
/// inputs at the benchmark's shapes, and prints the relative error ‖a − b‖ / ‖b‖ of each.
/// Attention runs each of `attention`'s kernels that can run on `device`. Returns the checks
/// whose error is past [`tolerance`] (or NaN), each as "what (dtype): error".
pub fn check_kernels(device: &Device, attention: &[AttentionKernel]) -> Result<Vec<String>> {
    let cpu = Device::Cpu;
    let failures = RefCell::new(Vec::new());
    let report = |what: &str, dtype: DType, got: &Tensor, want: &Tensor| -> Result<()> {
        let err = relative_error(&got.to_device(&cpu)?, &want.to_dtype(DType::F32)?)?;
        let dtype_name = format!("{dtype:?}").to_lowercase();
        let tol = tolerance(dtype);
        let failed = !passes(err, dtype);
        println!(
            "{:<10} {dtype_name:<6} relative error of the {what} kernel vs its CPU reference: {err:.2e}{}",
            "kernel",
            if failed {
                format!(" FAILED (tolerance {tol:.0e})")
            } else {
                String::new()
            }
        );
        if failed {
            failures
                .borrow_mut()
                .push(format!("{what} ({dtype_name}): {err:.2e}"));
        }
        Ok(())
    };
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        // Inputs rounded to `dtype` first, so both sides see identical values.
        let x = Tensor::randn(0f32, 1.0, (3, 577, 1024), &cpu)?.to_dtype(dtype)?;
        let b = Tensor::randn(0f32, 1.0, 1024, &cpu)?.to_dtype(dtype)?;
        let r = Tensor::randn(0f32, 1.0, (3, 577, 1024), &cpu)?.to_dtype(dtype)?;
        let on = |t: &Tensor| t.to_device(device);
        for act in [Act::QuickGelu, Act::Gelu] {
            let got = fused::bias_act(&on(&x)?, &on(&b)?, Some(act))?;
            let want = fused::bias_act(&x, &b, Some(act))?;
            report(&format!("bias+{act:?}"), dtype, &got, &want)?;
        }
        // quick_gelu through the fast intrinsics (GAPPROBE_FAST_ACT=1); the reference is exact.
        let got = fused::with_fast_act(true, || {
            fused::bias_act(&on(&x)?, &on(&b)?, Some(Act::QuickGelu))
        })?;
        let want = fused::bias_act(&x, &b, Some(Act::QuickGelu))?;
        report("bias+QuickGelu (fast)", dtype, &got, &want)?;
        let got = fused::bias_residual(&on(&x)?, &on(&b)?, &on(&r)?)?;
        report(
            "bias+residual",
            dtype,
            &got,
            &fused::bias_residual(&x, &b, &r)?,
        )?;
        if dtype != DType::F32 {
            // Around an f32 residual stream (GAPPROBE_RESIDUAL=f32): 16-bit layer output plus
            // f32 residual into f32, and the LayerNorm from the f32 stream into 16 bits.
            let wide = Tensor::randn(0f32, 1.0, (3, 577, 1024), &cpu)?;
            let got = fused::bias_residual(&on(&x)?, &on(&b)?, &on(&wide)?)?;
            let want = fused::bias_residual(&x, &b, &wide)?;
            report("bias+residual (f32 stream)", dtype, &got, &want)?;
            let w = Tensor::randn(0f32, 1.0, 1024, &cpu)?.to_dtype(dtype)?;
            let got = fused::layer_norm(&on(&wide)?, &on(&w)?, &on(&b)?, 1e-5)?;
            let want = fused::layer_norm(&wide, &w, &b, 1e-5)?;
            report("layer norm (from the f32 stream)", dtype, &got, &want)?;
            if dtype == DType::BF16 {
                // Around a float16 stream (GAPPROBE_RESIDUAL=f16): bf16 output plus f16
                // residual into f16, and the LayerNorm from the f16 stream into bf16.
                let half = wide.to_dtype(DType::F16)?;
                let got = fused::bias_residual(&on(&x)?, &on(&b)?, &on(&half)?)?;
                let want = fused::bias_residual(&x, &b, &half)?;
                report("bias+residual (f16 stream)", dtype, &got, &want)?;
                let got = fused::layer_norm(&on(&half)?, &on(&w)?, &on(&b)?, 1e-5)?;
                let want = fused::layer_norm(&half, &w, &b, 1e-5)?;
                report("layer norm (from the f16 stream)", dtype, &got, &want)?;
            }
            // The residual add and the next LayerNorm in one pass (GAPPROBE_ADD_NORM=1), at
            // CLIP-L's width, at one whose rows end inside a lane's last vector, and at SigLIP
            // so400m's (the 8-vector kernel).
            for width in [1024, 1000, 1152] {
                let rows = |w: usize| Tensor::randn(0f32, 1.0, (3, 577, w), &cpu);
                let vec = |w: usize| -> Result<Tensor> {
                    Ok(Tensor::randn(0f32, 1.0, w, &cpu)?.to_dtype(dtype)?)
                };
                let (xw, rw) = (rows(width)?.to_dtype(dtype)?, rows(width)?);
                let (bw, ww) = (vec(width)?, vec(width)?);
                // Around the f32 stream, and around an f16 stream with bf16 layers
                // (GAPPROBE_RESIDUAL=f16 with GAPPROBE_ADD_NORM=1).
                let mut streams = vec![(rw.clone(), "")];
                if dtype == DType::BF16 {
                    streams.push((rw.to_dtype(DType::F16)?, " f16 stream,"));
                }
                for (res, which) in &streams {
                    let (s, n) = add_norm::add_layer_norm(
                        &on(&xw)?,
                        &on(&bw)?,
                        &on(res)?,
                        &on(&ww)?,
                        &on(&bw)?,
                        1e-5,
                    )?;
                    let (ws, wn) = add_norm::add_layer_norm(&xw, &bw, res, &ww, &bw, 1e-5)?;
                    let what = |out: &str| format!("add+layer norm,{which} {out} (width {width})");
                    report(&what("stream"), dtype, &s, &ws)?;
                    report(&what("norm"), dtype, &n, &wn)?;
                }
            }
        }
        // A Linear with its bias and residual in the GEMM's epilogue (the default).
        let wl = Tensor::randn(0f32, 0.05, (1024, 1024), &cpu)?.to_dtype(dtype)?;
        for residual in [None, Some(&r)] {
            let got = gemm_epilogue::linear(
                &on(&x)?,
                &on(&wl)?,
                &on(&b)?,
                residual.map(on).transpose()?.as_ref(),
            )?;
            let want = gemm_epilogue::linear(&x, &wl, &b, residual)?;
            let what = match residual {
                Some(_) => "GEMM+bias+residual epilogue",
                None => "GEMM+bias epilogue",
            };
            report(what, dtype, &got, &want)?;
        }
        // The token mean of `.mean` points (GAPPROBE_MEAN_KERNEL=1), 577 tokens of 1024.
        let got = mean_tokens_kernel(&on(&x)?)?;
        report("token mean", dtype, &got, &mean_tokens_kernel(&x)?)?;
        // 8-bit planes through a level table (the model input): the CPU reference is exact.
        let planes = Tensor::rand(0f32, 256.0, (2, 3, 336, 336), &cpu)?
            .floor()?
            .to_dtype(DType::U8)?;
        let levels = Tensor::randn(0f32, 1.0, 768, &cpu)?;
        let got = planes::planes_to_input(&on(&planes)?, &on(&levels)?, dtype)?;
        let want = planes::planes_to_input(&planes, &levels, dtype)?;
        report("planes input", dtype, &got, &want)?;
        let w = Tensor::randn(0f32, 1.0, 1024, &cpu)?.to_dtype(dtype)?;
        let shifted = (&x * 3.0)?.affine(1.0, 2.0)?;
        let got = fused::layer_norm(&on(&shifted)?, &on(&w)?, &on(&b)?, 1e-5)?;
        report(
            "layer norm",
            dtype,
            &got,
            &fused::layer_norm(&shifted, &w, &b, 1e-5)?,
        )?;
        // A width that is no multiple of the vector: the scalar kernel.
        let xo = x.narrow(2, 0, 1001)?.contiguous()?;
        let bo = b.narrow(0, 0, 1001)?.contiguous()?;
        let got = fused::bias_act(&on(&xo)?, &on(&bo)?, Some(Act::QuickGelu))?;
        let want = fused::bias_act(&xo, &bo, Some(Act::QuickGelu))?;
        report("bias+QuickGelu (width 1001)", dtype, &got, &want)?;
        if dtype != DType::F32 {
            // 577 tokens (not a multiple of the tiles), 16 heads of 64, 2 images.
            let qkv = Tensor::randn(0f32, 1.0, (2, 577, 3 * 1024), &cpu)?.to_dtype(dtype)?;
            let qb = Tensor::randn(0f32, 1.0, 3 * 1024, &cpu)?.to_dtype(dtype)?;
            let qb_dev = on(&qb)?;
            for bias in [None, Some(&qb)] {
                let want = fused::attention_packed(&qkv, bias, 16, 0.125)?;
                let bias_dev = bias.map(|_| &qb_dev);
                for &kernel in attention {
                    if !kernel.runs_on(device) {
                        println!(
                            "{:<10} {kernel:?} skipped: needs compute capability 9.0",
                            "kernel"
                        );
                        continue;
                    }
                    let got =
                        fused::attention_packed_with(&on(&qkv)?, bias_dev, 16, 0.125, kernel)?;
                    let what = if bias.is_some() {
                        "attention+bias"
                    } else {
                        "attention"
                    };
                    report(&format!("{what} ({kernel:?})"), dtype, &got, &want)?;
                }
                // fa_skip leaves out only products whose results are masked or zero, and fa32
                // does each row's arithmetic as fa does: both give fa's bits, element for element.
                // wg does too as the host emulation sums its products, but the tensor cores'
                // order inside a wgmma may differ from mma.sync's: its count is for information.
                let run = |kernel| {
                    fused::attention_packed_with(&on(&qkv)?, bias_dev, 16, 0.125, kernel)?
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()
                };
                let fa = run(AttentionKernel::Flash)?;
                for kernel in [
                    AttentionKernel::FlashSkip,
                    AttentionKernel::Flash32,
                    AttentionKernel::Warpgroup,
                ] {
                    if !attention.contains(&kernel) || !kernel.runs_on(device) {
                        continue;
                    }
                    let expected = if kernel.needs_sm90() {
                        "the error above decides"
                    } else {
                        "0 expected"
                    };
                    let differ = run(kernel)?
                        .iter()
                        .zip(&fa)
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    println!(
                        "{:<10} {:<6} {kernel:?} against Flash{}: {differ} of {} values differ ({expected})",
                        "kernel",
                        format!("{dtype:?}").to_lowercase(),
                        if bias.is_some() { " with bias" } else { "" },
                        fa.len()
                    );
                }
            }
        }
    }
    Ok(failures.into_inner())
}
