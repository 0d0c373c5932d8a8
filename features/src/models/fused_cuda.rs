//! Launchers for `features/kernels/fused.cu` (feature `cuda`): picks the dtype's kernel, checks
//! layouts and alignment, allocates the output and launches on candle's stream.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result};
use half::{bf16, f16};

/// The PTX that build.rs compiled from `kernels/fused.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "gapprobe_fused";

fn contiguous_range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg(format!("{what} must be contiguous for the fused kernel"))
    })
}

/// `y = act(x + bias) (+ residual)` over rows of `cols` elements.
pub(super) fn bias_act(
    x: &CudaStorage,
    lx: &Layout,
    bias: &CudaStorage,
    lb: &Layout,
    residual: Option<(&CudaStorage, &Layout)>,
    cols: usize,
    act: i32,
) -> Result<CudaStorage> {
    fn run<T: CudaDType + DeviceRepr>(
        name: &str,
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
        let out = unsafe { dev.alloc::<T>(numel)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let threads = 256u32;
        let blocks = numel.div_ceil(threads as usize).clamp(1, 1 << 20) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let (numel_arg, cols_arg) = (numel as u64, cols as u32);
        let null = 0u64;
        let res = match residual {
            Some((r, lr)) => {
                let (r0, r1) = contiguous_range(lr, "the residual")?;
                Some(r.as_cuda_slice::<T>()?.slice(r0..r1))
            }
            None => None,
        };
        let mut b = func.builder();
        b.arg(&xs);
        b.arg(&bs);
        match &res {
            Some(r) => b.arg(r),
            None => b.arg(&null),
        };
        b.arg(&out);
        b.arg(&numel_arg);
        b.arg(&cols_arg);
        b.arg(&act);
        // SAFETY: argument types and count match `bias_act_*` in fused.cu; every buffer holds
        // `numel` (x, residual, out) or `cols` (bias) elements.
        unsafe { b.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    match x.dtype() {
        DType::F32 => run::<f32>("bias_act_f32", x, lx, bias, lb, residual, cols, act),
        DType::F16 => run::<f16>("bias_act_f16", x, lx, bias, lb, residual, cols, act),
        DType::BF16 => run::<bf16>("bias_act_bf16", x, lx, bias, lb, residual, cols, act),
        other => candle_core::bail!("fused bias+activation supports f32/f16/bf16, not {other:?}"),
    }
}

/// Attention over a packed [B, N, 3·H·64] projection into a fresh [B, N, H·64] buffer.
pub(super) fn attention(
    qkv: &CudaStorage,
    l: &Layout,
    b: usize,
    n: usize,
    heads: usize,
    scale: f64,
) -> Result<CudaStorage> {
    fn run<T: CudaDType + DeviceRepr>(
        name: &str,
        qkv: &CudaStorage,
        l: &Layout,
        b: usize,
        n: usize,
        heads: usize,
        scale: f64,
    ) -> Result<CudaStorage> {
        let dev: CudaDevice = qkv.device().clone();
        let (s0, s1) = contiguous_range(l, "the packed QKV projection")?;
        if s0 % 8 != 0 {
            candle_core::bail!("packed QKV must start on a 16-byte boundary (offset {s0})");
        }
        let src = qkv.as_cuda_slice::<T>()?.slice(s0..s1);
        let out = unsafe { dev.alloc::<T>(b * n * heads * super::fused::ATTENTION_HEAD_DIM)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(64) as u32, (b * heads) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n_arg, h_arg) = (n as i32, heads as i32);
        let scale_log2 = (scale * std::f64::consts::LOG2_E) as f32;
        let mut builder = func.builder();
        builder.arg(&src);
        builder.arg(&out);
        builder.arg(&n_arg);
        builder.arg(&h_arg);
        builder.arg(&scale_log2);
        // SAFETY: argument types and count match `attention_hd64_*` in fused.cu; `src` holds
        // B·N·3·H·64 elements and `out` B·N·H·64.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
    if b * heads > 65_535 {
        candle_core::bail!(
            "batch × heads = {} exceeds the kernel's grid limit 65535",
            b * heads
        );
    }
    match qkv.dtype() {
        DType::F16 => run::<f16>("attention_hd64_f16", qkv, l, b, n, heads, scale),
        DType::BF16 => run::<bf16>("attention_hd64_bf16", qkv, l, b, n, heads, scale),
        other => candle_core::bail!("the fused attention kernel takes f16/bf16, not {other:?}"),
    }
}
