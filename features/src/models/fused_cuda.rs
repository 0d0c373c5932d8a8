//! Launchers for `features/kernels/fused.cu` (feature `cuda`): picks the dtype's kernel, checks
//! layouts and alignment, allocates the output and launches on candle's stream.

use super::fused::AttentionKernel;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result};
use half::{bf16, f16};

/// The PTX that build.rs compiled from `kernels/fused.cu`.
pub(super) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
pub(super) const MODULE: &str = "gapprobe_fused";
/// The PTX that build.rs compiled from `kernels/attention_wg.cu` for compute_90a.
const WG_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention_wg.ptx"));
const WG_MODULE: &str = "gapprobe_attention_wg";

/// The device's compute capability (major, minor), if the driver tells it.
pub(super) fn compute_capability(dev: &CudaDevice) -> Option<(i32, i32)> {
    dev.cuda_stream().context().compute_capability().ok()
}

pub(super) fn contiguous_range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg(format!("{what} must be contiguous for the fused kernel"))
    })
}

/// `y = act(x + bias) (+ residual)` over rows of `cols` elements. The residual (and then the
/// output) may be f32 around 16-bit `x` and `bias`: a float32 residual stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn bias_act(
    x: &CudaStorage,
    lx: &Layout,
    bias: &CudaStorage,
    lb: &Layout,
    residual: Option<(&CudaStorage, &Layout)>,
    cols: usize,
    act: i32,
) -> Result<CudaStorage> {
    #[allow(clippy::too_many_arguments)]
    fn run<T: CudaDType + DeviceRepr, R: CudaDType + DeviceRepr>(
        names: &str,
        x: &CudaStorage,
        lx: &Layout,
        bias: &CudaStorage,
        lb: &Layout,
        residual: Option<(&CudaStorage, &Layout)>,
        cols: usize,
        act: i32,
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = x.device().clone();
        let (x0, x1) = contiguous_range(lx, "the GEMM output")?;
        let (b0, b1) = contiguous_range(lb, "the bias")?;
        let xs = x.as_cuda_slice::<T>()?.slice(x0..x1);
        let bs = bias.as_cuda_slice::<T>()?.slice(b0..b1);
        let numel = x1 - x0;
        let out = unsafe { dev.alloc::<R>(numel)? };
        let (res, r0) = match residual {
            Some((r, lr)) => {
                let (r0, r1) = contiguous_range(lr, "the residual")?;
                (Some(r.as_cuda_slice::<R>()?.slice(r0..r1)), r0)
            }
            None => (None, 0),
        };
        // The vector kernel takes rows of whole 8-element groups starting on 16-byte boundaries
        // (allocations are aligned, so the offsets decide).
        let rows = numel / cols.max(1);
        let vectorised = cols.is_multiple_of(8) && [x0, b0, r0].iter().all(|o| o.is_multiple_of(8));
        let (kernel, cfg) = if vectorised {
            let cfg = LaunchConfig {
                grid_dim: (rows.clamp(1, 1 << 16) as u32, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            (format!("bias_act_rows_{names}"), cfg)
        } else {
            let threads = 256u32;
            let blocks = numel.div_ceil(threads as usize).clamp(1, 1 << 20) as u32;
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            (format!("bias_act_{names}"), cfg)
        };
        let func = dev.get_or_load_custom_func(&kernel, MODULE, PTX)?;
        let (numel_arg, rows_arg, cols_arg) = (numel as u64, rows as u32, cols as u32);
        let null = 0u64;
        let mut b = func.builder();
        b.arg(&xs);
        b.arg(&bs);
        match &res {
            Some(r) => b.arg(r),
            None => b.arg(&null),
        };
        b.arg(&out);
        if vectorised {
            b.arg(&rows_arg);
        } else {
            b.arg(&numel_arg);
        }
        b.arg(&cols_arg);
        b.arg(&act);
        // SAFETY: argument types and count match `bias_act_*` / `bias_act_rows_*` in fused.cu;
        // every buffer holds `numel` (x, residual, out) or `cols` (bias) elements.
        unsafe { b.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    let wide = residual.map(|(r, _)| r.dtype());
    match (x.dtype(), wide) {
        (DType::F32, None | Some(DType::F32)) => {
            run::<f32, f32>("f32", x, lx, bias, lb, residual, cols, act)
        }
        (DType::F16, None | Some(DType::F16)) => {
            run::<f16, f16>("f16", x, lx, bias, lb, residual, cols, act)
        }
        (DType::BF16, None | Some(DType::BF16)) => {
            run::<bf16, bf16>("bf16", x, lx, bias, lb, residual, cols, act)
        }
        (DType::F16, Some(DType::F32)) => {
            run::<f16, f32>("f16_f32", x, lx, bias, lb, residual, cols, act)
        }
        (DType::BF16, Some(DType::F32)) => {
            run::<bf16, f32>("bf16_f32", x, lx, bias, lb, residual, cols, act)
        }
        (DType::BF16, Some(DType::F16)) => {
            run::<bf16, f16>("bf16_f16", x, lx, bias, lb, residual, cols, act)
        }
        (x, r) => candle_core::bail!(
            "fused bias+activation takes f32/f16/bf16 (with an f32 residual), not {x:?} with {r:?}"
        ),
    }
}

/// Attention over a packed [B, N, 3·H·64] projection (the bias [3·H·64], if given, added as
/// values are loaded) into a fresh [B, N, H·64] buffer.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    qkv: &CudaStorage,
    l: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    b: usize,
    n: usize,
    heads: usize,
    scale: f64,
    kernel: AttentionKernel,
) -> Result<CudaStorage> {
    #[allow(clippy::too_many_arguments)]
    fn run<T: CudaDType + DeviceRepr>(
        name: &str,
        kernel: AttentionKernel,
        qkv: &CudaStorage,
        l: &Layout,
        bias: Option<(&CudaStorage, &Layout)>,
        b: usize,
        n: usize,
        heads: usize,
        scale: f64,
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = qkv.device().clone();
        let (s0, s1) = contiguous_range(l, "the packed QKV projection")?;
        let bs = match bias {
            Some((bias, lb)) => {
                let (b0, b1) = contiguous_range(lb, "the QKV bias")?;
                if b0 % 8 != 0 {
                    candle_core::bail!("the QKV bias must start on a 16-byte boundary");
                }
                Some(bias.as_cuda_slice::<T>()?.slice(b0..b1))
            }
            None => None,
        };
        if s0 % 8 != 0 {
            candle_core::bail!("packed QKV must start on a 16-byte boundary (offset {s0})");
        }
        let src = qkv.as_cuda_slice::<T>()?.slice(s0..s1);
        let null = 0u64;
        let out = unsafe { dev.alloc::<T>(b * n * heads * super::fused::ATTENTION_HEAD_DIM)? };
        let (module, ptx) = if kernel.needs_sm90() {
            let cap = compute_capability(&dev);
            if cap != Some((9, 0)) {
                candle_core::bail!(
                    "GAPPROBE_ATTENTION=wg needs a GPU of compute capability 9.0 (H100, H200); this one is {cap:?}: use fa"
                );
            }
            (WG_MODULE, WG_PTX)
        } else {
            (MODULE, PTX)
        };
        let func = dev.get_or_load_custom_func(name, module, ptx)?;
        // [`AttentionKernel::warps`] warps of [`AttentionKernel::queries_per_warp`] queries.
        let warps = kernel.warps();
        let per_block = warps * kernel.queries_per_warp();
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(per_block) as u32, (b * heads) as u32, 1),
            block_dim: (32 * warps as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n_arg, h_arg) = (n as i32, heads as i32);
        let scale_log2 = (scale * std::f64::consts::LOG2_E) as f32;
        let mut builder = func.builder();
        builder.arg(&src);
        match &bs {
            Some(bs) => builder.arg(bs),
            None => builder.arg(&null),
        };
        builder.arg(&out);
        builder.arg(&n_arg);
        builder.arg(&h_arg);
        builder.arg(&scale_log2);
        // SAFETY: argument types and count match `attention_*` in fused.cu and attention_wg.cu; `src` holds
        // B·N·3·H·64 elements, the bias (or null) 3·H·64 and `out` B·N·H·64.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    if b * heads > 65_535 {
        candle_core::bail!(
            "batch × heads = {} exceeds the kernel's grid limit 65535",
            b * heads
        );
    }
    let (f16_name, bf16_name) = match kernel {
        AttentionKernel::Mma => ("attention_mma_f16", "attention_mma_bf16"),
        AttentionKernel::Mma8 => ("attention_mma8_f16", "attention_mma8_bf16"),
        AttentionKernel::Wmma => ("attention_hd64_f16", "attention_hd64_bf16"),
        AttentionKernel::Flash => ("attention_fa_f16", "attention_fa_bf16"),
        AttentionKernel::Flash128 => ("attention_fa128_f16", "attention_fa128_bf16"),
        AttentionKernel::Flash8 => ("attention_fa8_f16", "attention_fa8_bf16"),
        AttentionKernel::FlashSkip => ("attention_fa_skip_f16", "attention_fa_skip_bf16"),
        AttentionKernel::Flash32 => ("attention_fa32_f16", "attention_fa32_bf16"),
        AttentionKernel::Warpgroup => ("attention_wg_f16", "attention_wg_bf16"),
    };
    match qkv.dtype() {
        DType::F16 => run::<f16>(f16_name, kernel, qkv, l, bias, b, n, heads, scale),
        DType::BF16 => run::<bf16>(bf16_name, kernel, qkv, l, bias, b, n, heads, scale),
        other => candle_core::bail!("the fused attention kernel takes f16/bf16, not {other:?}"),
    }
}

/// LayerNorm over rows of `cols` (a multiple of 8); one warp per row. The input may be f32 around
/// a 16-bit weight, bias and output (a float32 residual stream feeding 16-bit layers).
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_norm(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    cols: usize,
    eps: f32,
) -> Result<CudaStorage> {
    #[allow(clippy::too_many_arguments)]
    fn run<X: CudaDType + DeviceRepr, T: CudaDType + DeviceRepr>(
        name: &str,
        x: &CudaStorage,
        lx: &Layout,
        w: &CudaStorage,
        lw: &Layout,
        b: &CudaStorage,
        lb: &Layout,
        cols: usize,
        eps: f32,
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = x.device().clone();
        let (x0, x1) = contiguous_range(lx, "the layer norm input")?;
        let (w0, w1) = contiguous_range(lw, "the layer norm weight")?;
        let (b0, b1) = contiguous_range(lb, "the layer norm bias")?;
        if !cols.is_multiple_of(8) || [x0, w0, b0].iter().any(|o| !o.is_multiple_of(8)) {
            candle_core::bail!(
                "fused layer norm needs rows of whole 8-element groups (width {cols})"
            );
        }
        let xs = x.as_cuda_slice::<X>()?.slice(x0..x1);
        let ws = w.as_cuda_slice::<T>()?.slice(w0..w1);
        let bs = b.as_cuda_slice::<T>()?.slice(b0..b1);
        let numel = x1 - x0;
        let rows = numel / cols.max(1);
        let out = unsafe { dev.alloc::<T>(numel)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(4).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows_arg, cols_arg) = (rows as u32, cols as u32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ws);
        builder.arg(&bs);
        builder.arg(&out);
        builder.arg(&rows_arg);
        builder.arg(&cols_arg);
        builder.arg(&eps);
        // SAFETY: argument types and count match `layer_norm_*` in fused.cu; x and out hold
        // rows·cols elements, weight and bias `cols`.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    match (x.dtype(), w.dtype()) {
        (DType::F32, DType::F32) => {
            run::<f32, f32>("layer_norm_f32", x, lx, w, lw, b, lb, cols, eps)
        }
        (DType::F16, DType::F16) => {
            run::<f16, f16>("layer_norm_f16", x, lx, w, lw, b, lb, cols, eps)
        }
        (DType::BF16, DType::BF16) => {
            run::<bf16, bf16>("layer_norm_bf16", x, lx, w, lw, b, lb, cols, eps)
        }
        (DType::F32, DType::F16) => {
            run::<f32, f16>("layer_norm_f32_f16", x, lx, w, lw, b, lb, cols, eps)
        }
        (DType::F32, DType::BF16) => {
            run::<f32, bf16>("layer_norm_f32_bf16", x, lx, w, lw, b, lb, cols, eps)
        }
        (DType::F16, DType::BF16) => {
            run::<f16, bf16>("layer_norm_f16_bf16", x, lx, w, lw, b, lb, cols, eps)
        }
        (x, w) => {
            candle_core::bail!("fused layer norm takes f32/f16/bf16 (from f32), not {x:?} to {w:?}")
        }
    }
}

/// Model input [B, 3, plane] in `T` from 8-bit planes and a level table of 3·256 f32 values.
pub(super) fn planes_input(
    x: &CudaStorage,
    lx: &Layout,
    levels: &CudaStorage,
    ll: &Layout,
    plane: usize,
    dtype: DType,
) -> Result<CudaStorage> {
    fn run<T: CudaDType + DeviceRepr>(
        name: &str,
        x: &CudaStorage,
        lx: &Layout,
        levels: &CudaStorage,
        ll: &Layout,
        plane: usize,
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = x.device().clone();
        let (x0, x1) = contiguous_range(lx, "the 8-bit planes")?;
        let (l0, l1) = contiguous_range(ll, "the level table")?;
        let numel = x1 - x0;
        if !plane.is_multiple_of(4) || !x0.is_multiple_of(4) || !numel.is_multiple_of(4) {
            candle_core::bail!(
                "the planes kernel needs planes of a multiple of 4 pixels ({plane})"
            );
        }
        let xs = x.as_cuda_slice::<u8>()?.slice(x0..x1);
        let ls = levels.as_cuda_slice::<f32>()?.slice(l0..l1);
        let out = unsafe { dev.alloc::<T>(numel)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let quads = numel / 4;
        let cfg = LaunchConfig {
            grid_dim: (quads.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (quads_arg, plane_arg) = (quads as u64, (plane / 4) as u32);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ls);
        builder.arg(&out);
        builder.arg(&quads_arg);
        builder.arg(&plane_arg);
        // SAFETY: argument types and count match `planes_input_*` in fused.cu; x and out hold
        // `numel` elements, the level table 768.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    match dtype {
        DType::F32 => run::<f32>("planes_input_f32", x, lx, levels, ll, plane),
        DType::F16 => run::<f16>("planes_input_f16", x, lx, levels, ll, plane),
        DType::BF16 => run::<bf16>("planes_input_bf16", x, lx, levels, ll, plane),
        other => candle_core::bail!("model input in f32/f16/bf16, not {other:?}"),
    }
}

/// Mean over the token axis of a contiguous [B, T, D] tensor, in f32 ([B, D]).
pub(super) fn token_mean(
    x: &CudaStorage,
    lx: &Layout,
    (b, t, d): (usize, usize, usize),
) -> Result<CudaStorage> {
    fn run<T: CudaDType + DeviceRepr>(
        name: &str,
        x: &CudaStorage,
        lx: &Layout,
        (b, t, d): (usize, usize, usize),
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = x.device().clone();
        let (x0, x1) = contiguous_range(lx, "the tokens")?;
        if x1 - x0 != b * t * d {
            candle_core::bail!("token mean: {} values for [{b}, {t}, {d}]", x1 - x0);
        }
        let xs = x.as_cuda_slice::<T>()?.slice(x0..x1);
        let outputs = b * d;
        // SAFETY: every one of the `outputs` values is written by the kernel.
        let out = unsafe { dev.alloc::<f32>(outputs)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (outputs.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (t_arg, d_arg, n_arg) = (t as u32, d as u32, outputs as u64);
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&out);
        builder.arg(&t_arg);
        builder.arg(&d_arg);
        builder.arg(&n_arg);
        // SAFETY: argument types and count match `token_mean_*` in fused.cu; x holds b·t·d
        // elements, out b·d.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    match x.dtype() {
        DType::F32 => run::<f32>("token_mean_f32", x, lx, (b, t, d)),
        DType::F16 => run::<f16>("token_mean_f16", x, lx, (b, t, d)),
        DType::BF16 => run::<bf16>("token_mean_bf16", x, lx, (b, t, d)),
        other => candle_core::bail!("token mean of f32/f16/bf16, not {other:?}"),
    }
}
