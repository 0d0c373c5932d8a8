//! A residual add and the LayerNorm after it in one pass, for a residual stream wider than the
//! layers: f32 around 16-bit layers (the bf16 default), or f16 around bf16 layers
//! (`GAPPROBE_RESIDUAL=f16`, where the pass reads and writes 8 bytes per element instead of 10).
//!
//! Each CLIP/SigLIP layer adds its attention output to the stream and normalises the sum for its
//! MLP, then adds the MLP output and (in the next layer) normalises again. Separately that is a
//! bias+residual pass (reads the 16-bit output and the f32 stream, writes the stream) and a
//! LayerNorm (reads the stream again, writes 16 bits): 16 bytes per element, 0.369 + 0.324 ms
//! per pair at batch 256 on an H200 (docs/performance.md, call 6). `add_layer_norm*` of
//! `features/kernels/add_norm.cuh` does both from registers, 12 bytes per element, and gives the
//! same numbers. It runs with `GAPPROBE_ADD_NORM=1`; off until a GPU has timed and checked it
//! (`gapprobe bench --device cuda` checks it, `--ops` times it). On the CPU, and wherever the
//! kernel does not apply, the two ops run one after the other.

use super::fused;
use candle_core::{DType, Result, Tensor};
use std::cell::Cell;

/// Environment variable: `1` fuses each residual add with the LayerNorm after it when the stream
/// is f32 around 16-bit layers or f16 around bf16 layers.
pub const ADD_NORM_ENV: &str = "GAPPROBE_ADD_NORM";

/// The widest row the kernel holds in registers (8 vectors of 8 per lane, 32 lanes).
pub const MAX_KERNEL_WIDTH: usize = 2048;

thread_local! {
    static ADD_NORM: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether models built now fuse residual adds with LayerNorms ([`with_add_norm`], else
/// [`ADD_NORM_ENV`]).
pub fn enabled() -> bool {
    ADD_NORM
        .with(|c| c.get())
        .unwrap_or_else(|| std::env::var(ADD_NORM_ENV).is_ok_and(|v| v == "1"))
}

/// Runs `f` with models built on this thread fusing (or not) residual adds with LayerNorms.
pub fn with_add_norm<R>(on: bool, f: impl FnOnce() -> R) -> R {
    fused::with_override(&ADD_NORM, on, f)
}

/// `(s, LayerNorm(s))` with `s = x + bias + residual` in the residual's dtype and the norm in the
/// weight's. On CUDA one kernel when it applies (16-bit or f32 `x` with an f32 residual, or bf16
/// `x` with an f16 residual; rows of a multiple of 8 up to [`MAX_KERNEL_WIDTH`]); otherwise [`fused::bias_residual`] then
/// [`fused::layer_norm`], which is also the reference the kernel is checked against.
pub fn add_layer_norm(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    ln_bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let cols = x.dims().last().copied().unwrap_or(0);
    let dims_ok =
        residual.dims() == x.dims() && [bias, weight, ln_bias].iter().all(|t| t.dims() == [cols]);
    if !dims_ok {
        candle_core::bail!(
            "add+layer norm: input {:?}, residual {:?}, bias {:?}, weight {:?}, norm bias {:?}",
            x.dims(),
            residual.dims(),
            bias.dims(),
            weight.dims(),
            ln_bias.dims()
        );
    }
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && kernel_applies(x, bias, residual, weight, ln_bias) {
        return cuda::add_layer_norm(x, bias, residual, weight, ln_bias, eps);
    }
    let s = fused::bias_residual(x, bias, residual)?;
    let n = fused::layer_norm(&s, weight, ln_bias, eps)?;
    Ok((s, n))
}

/// Whether the kernel takes these inputs: an f32 stream with one 16-bit or f32 dtype for the rest,
/// or an f16 stream with bf16 for the rest; rows of whole 8-element vectors that fit the
/// registers.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn kernel_applies(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    ln_bias: &Tensor,
) -> bool {
    let cols = x.dims().last().copied().unwrap_or(0);
    let dtype = x.dtype();
    let stream_ok = fused::wider_stream(residual.dtype(), dtype)
        || (residual.dtype() == DType::F32 && dtype == DType::F32);
    stream_ok
        && [bias, weight, ln_bias].iter().all(|t| t.dtype() == dtype)
        && cols > 0
        && cols.is_multiple_of(8)
        && cols <= MAX_KERNEL_WIDTH
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::super::fused_cuda::{contiguous_range, MODULE, PTX};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaStorage, DType, Result, Storage, Tensor};
    use half::{bf16, f16};

    /// The kernel on contiguous copies of the inputs; both outputs are new tensors.
    pub(super) fn add_layer_norm(
        x: &Tensor,
        bias: &Tensor,
        residual: &Tensor,
        weight: &Tensor,
        ln_bias: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor)> {
        let inputs = [x, bias, residual, weight, ln_bias].map(|t| t.contiguous());
        let [x, bias, residual, weight, ln_bias] = inputs;
        let (x, bias, residual, weight, ln_bias) = (x?, bias?, residual?, weight?, ln_bias?);
        let t = [&x, &bias, &residual, &weight, &ln_bias];
        let (stream, normed) = match (x.dtype(), residual.dtype()) {
            (DType::BF16, DType::F32) => run::<bf16, f32>("bf16", t, eps)?,
            (DType::F16, DType::F32) => run::<f16, f32>("f16", t, eps)?,
            (DType::F32, DType::F32) => run::<f32, f32>("f32", t, eps)?,
            (DType::BF16, DType::F16) => run::<bf16, f16>("bf16_f16", t, eps)?,
            (x, s) => candle_core::bail!(
                "add+layer norm takes f32/f16/bf16 around an f32 stream or bf16 around f16, \
                 not {x:?} around {s:?}"
            ),
        };
        let wrap = |s: CudaStorage| {
            Tensor::from_storage(
                Storage::Cuda(s),
                x.shape().clone(),
                BackpropOp::none(),
                false,
            )
        };
        Ok((wrap(stream), wrap(normed)))
    }

    /// Launches `add_layer_norm{4,8}_{name}` on `[x, bias, residual, weight, norm bias]`, the
    /// stream (residual and first output) in `S`.
    fn run<T: CudaDType + DeviceRepr, S: CudaDType + DeviceRepr>(
        name: &str,
        t: [&Tensor; 5],
        eps: f64,
    ) -> Result<(CudaStorage, CudaStorage)> {
        let guards = t.map(|t| t.storage_and_layout());
        let mut parts = Vec::with_capacity(5);
        for (i, (g, l)) in guards.iter().enumerate() {
            let Storage::Cuda(c) = &**g else {
                candle_core::bail!("add+layer norm: input {i} is not on the GPU");
            };
            let (a, b) = contiguous_range(l, "the add+layer norm input")?;
            if !a.is_multiple_of(8) {
                candle_core::bail!(
                    "add+layer norm: input {i} does not start on a 16-byte boundary"
                );
            }
            parts.push((c, a, b));
        }
        let slice_of = |i: usize| -> Result<_> {
            let (c, a, b) = parts[i];
            Ok(c.as_cuda_slice::<T>()?.slice(a..b))
        };
        let (x, bias, w, lb) = (slice_of(0)?, slice_of(1)?, slice_of(3)?, slice_of(4)?);
        let (rc, r0, r1) = parts[2];
        let residual = rc.as_cuda_slice::<S>()?.slice(r0..r1);
        let dev = parts[0].0.device().clone();
        let cols = t[0].dims().last().copied().unwrap_or(1);
        let numel = parts[0].2 - parts[0].1;
        let rows = numel / cols;
        let vpl = if cols <= 1024 { 4 } else { 8 };
        let stream = unsafe { dev.alloc::<S>(numel)? };
        let normed = unsafe { dev.alloc::<T>(numel)? };
        let func =
            dev.get_or_load_custom_func(&format!("add_layer_norm{vpl}_{name}"), MODULE, PTX)?;
        // Four warps per block, a row each (as the LayerNorm kernel).
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(4).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows_arg, cols_arg, eps_arg) = (rows as u32, cols as u32, eps as f32);
        let mut b = func.builder();
        b.arg(&x);
        b.arg(&bias);
        b.arg(&residual);
        b.arg(&stream);
        b.arg(&w);
        b.arg(&lb);
        b.arg(&normed);
        b.arg(&rows_arg);
        b.arg(&cols_arg);
        b.arg(&eps_arg);
        // SAFETY: argument types and count match `add_layer_norm*` in add_norm.cuh; x, residual
        // and both outputs hold rows·cols elements, the bias, weight and norm bias `cols`, and
        // cols ≤ 256·vpl (checked by kernel_applies).
        unsafe { b.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(stream, dev.clone()),
            CudaStorage::wrap_cuda_slice(normed, dev),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn largest_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// Both outputs are what the bias+residual pass and the LayerNorm give one after the other,
    /// from a 16-bit layer output into an f32 stream and from f32 throughout; wrong shapes are
    /// refused with the shapes named.
    #[test]
    fn equals_the_two_ops_it_replaces() {
        let dev = Device::Cpu;
        let r = Tensor::randn(0f32, 1.0, (2, 5, 16), &dev).unwrap();
        for dtype in [DType::BF16, DType::F32] {
            let mk = |shape: &[usize]| {
                Tensor::randn(0f32, 1.0, shape, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let (x, b, w, lb) = (mk(&[2, 5, 16]), mk(&[16]), mk(&[16]), mk(&[16]));
            let (s, n) = add_layer_norm(&x, &b, &r, &w, &lb, 1e-5).unwrap();
            assert_eq!((s.dtype(), n.dtype()), (DType::F32, dtype));
            let want_s = (x
                .to_dtype(DType::F32)
                .unwrap()
                .broadcast_add(&b.to_dtype(DType::F32).unwrap())
                .unwrap()
                + &r)
                .unwrap();
            assert!(fused::tests::max_abs_diff(&s, &want_s) < 1e-6);
            let want_n = candle_nn::ops::layer_norm_slow(
                &want_s,
                &w.to_dtype(DType::F32).unwrap(),
                &lb.to_dtype(DType::F32).unwrap(),
                1e-5,
            )
            .unwrap();
            // bf16 output: one rounding, at most half an ulp (2^-9 relative) of the largest value.
            let largest = largest_abs(&want_n);
            let tol = if dtype == DType::F32 {
                1e-5
            } else {
                largest / 256.0 + 1e-5
            };
            let diff = fused::tests::max_abs_diff(&n, &want_n);
            assert!(diff < tol, "{dtype:?}: {diff} vs {tol}");
            assert!(kernel_applies(&x, &b, &r, &w, &lb));
        }
        let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let four = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let three = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let err = add_layer_norm(&x, &three, &x, &four, &four, 1e-5).unwrap_err();
        assert!(err.to_string().contains("bias [3]"), "{err}");
        // Too wide for the registers, or a 16-bit stream: the two ops run instead.
        let wide = Tensor::zeros((1, MAX_KERNEL_WIDTH + 8), DType::F32, &dev).unwrap();
        let wb = Tensor::zeros(MAX_KERNEL_WIDTH + 8, DType::F32, &dev).unwrap();
        assert!(!kernel_applies(&wide, &wb, &wide, &wb, &wb));
        let h = x.to_dtype(DType::BF16).unwrap();
        let hb = four.to_dtype(DType::BF16).unwrap();
        assert!(!kernel_applies(&h, &hb, &h, &hb, &hb));
        // An f16 stream takes it around bf16 layers only.
        let row = |dtype| Tensor::zeros((2, 8), dtype, &dev).unwrap();
        let vec = |dtype| Tensor::zeros(8, dtype, &dev).unwrap();
        let (h, hb) = (row(DType::BF16), vec(DType::BF16));
        let (half, hf) = (row(DType::F16), vec(DType::F16));
        assert!(kernel_applies(&h, &hb, &half, &hb, &hb));
        assert!(!kernel_applies(&half, &hf, &half, &hf, &hf));
    }

    /// Around an f16 stream, the stream is rounded to f16 and the norm is of the rounded stream:
    /// what the bias+residual pass into f16 and the LayerNorm from f16 give.
    #[test]
    fn an_f16_stream_is_rounded_before_it_is_normalised() {
        let dev = Device::Cpu;
        let mk = |shape: &[usize], dtype: DType| {
            let t = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            (t * 3.0).unwrap().to_dtype(dtype).unwrap()
        };
        let bf = DType::BF16;
        let (x, b, w, lb) = (
            mk(&[3, 16], bf),
            mk(&[16], bf),
            mk(&[16], bf),
            mk(&[16], bf),
        );
        let r = mk(&[3, 16], DType::F16);
        let (s, n) = add_layer_norm(&x, &b, &r, &w, &lb, 1e-5).unwrap();
        assert_eq!((s.dtype(), n.dtype()), (DType::F16, DType::BF16));
        let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want_s = ((f32_of(&x).broadcast_add(&f32_of(&b)).unwrap() + f32_of(&r)).unwrap())
            .to_dtype(DType::F16)
            .unwrap();
        assert_eq!(fused::tests::max_abs_diff(&s, &want_s), 0.0);
        let want_n =
            candle_nn::ops::layer_norm_slow(&f32_of(&want_s), &f32_of(&w), &f32_of(&lb), 1e-5)
                .unwrap();
        let largest = largest_abs(&want_n);
        let diff = fused::tests::max_abs_diff(&n, &want_n);
        assert!(diff < largest / 256.0 + 1e-5, "{diff}");
    }

    /// The switch: off unless asked, and the thread-local override wins.
    #[test]
    fn off_unless_asked() {
        if std::env::var(ADD_NORM_ENV).is_err() {
            assert!(!enabled());
        }
        assert!(with_add_norm(true, enabled));
        assert!(!with_add_norm(false, enabled));
    }
}
