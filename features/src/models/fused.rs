//! Fused operations for the encoder's hot loop: bias + activation (+ residual) in one pass over a
//! GEMM's output, and attention over a packed QKV projection without a score matrix in memory.
//!
//! On CUDA they run gapprobe's own kernels (`features/kernels/fused.cu`, compiled to PTX by
//! `build.rs`); elsewhere a straightforward f32 reference runs, which is also what the kernels are
//! checked against (`gapprobe bench --device cuda` on a GPU, the tests here on the CPU). The ops
//! and their references are in `fused_ops.rs`, the CUDA launchers in `fused_cuda.rs`; attention
//! and the choice of its kernel are in `attention.rs` (re-exported here).
//! Whether a model uses them is decided when it is built: on CUDA by default, never on the CPU
//! unless asked (`GAPPROBE_KERNELS=on|off`, or [`with_mode`] for one thread).

use super::fused_ops::{BiasAct, LayerNormOp};
use super::Act;
use candle_core::{DType, Device, Result, Tensor};
use std::cell::Cell;

pub use super::attention::{
    attention_packed, attention_packed_with, attention_supported, with_attention_kernel,
    AttentionKernel, ATTENTION_ENV, ATTENTION_HEAD_DIM,
};

/// Environment variable: `off` keeps candle's composite ops even on CUDA (for A/B measurements),
/// `on` uses the fused ops everywhere (the CPU gets the f32 reference).
pub const KERNELS_ENV: &str = "GAPPROBE_KERNELS";

/// Environment variable: `f32` keeps the residual stream (the hidden states between layers) in
/// float32 around bf16/f16 layers: LayerNorms read it in f32 and hand 16-bit inputs to the
/// layers, whose outputs are added to it in f32. About halves the bf16 error at layer −2 for
/// twice the stream's memory traffic. `f16` keeps it in float16 around bf16 layers: the same
/// bytes as a bf16 stream, three more mantissa bits, float16's range (±65504). Any other value
/// keeps the stream in the model's dtype. Unset: f32 around bf16 layers (bf16's 8-bit mantissa
/// is what puts a 16-bit stream over 1e-2 relative error), f16's stream in f16.
pub const RESIDUAL_ENV: &str = "GAPPROBE_RESIDUAL";

/// Where the residual stream is kept, around 16-bit layers ([`RESIDUAL_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualStream {
    /// In the layers' dtype.
    Model,
    /// In f32 around bf16 or f16 layers.
    F32,
    /// In f16 around bf16 layers (f16 layers keep theirs in f16 anyway).
    F16,
}

thread_local! {
    static MODE: Cell<Option<bool>> = const { Cell::new(None) };
    static RESIDUAL: Cell<Option<ResidualStream>> = const { Cell::new(None) };
    static FAST_ACT: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Environment variable: `1` runs quick_gelu on CUDA through the fast intrinsics (`__expf`,
/// `__fdividef`, about 2 ulp in f32) instead of `expf` and an IEEE division. Off until a GPU has
/// timed and checked it (`gapprobe bench --device cuda` does both).
pub const FAST_ACT_ENV: &str = "GAPPROBE_FAST_ACT";

/// Whether [`bias_act`] asks for the fast quick_gelu now ([`with_fast_act`], else
/// [`FAST_ACT_ENV`], read once per process: `bias_act` runs for every Linear layer).
pub fn fast_act() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    FAST_ACT.with(|c| c.get()).unwrap_or_else(|| {
        *FROM_ENV.get_or_init(|| std::env::var(FAST_ACT_ENV).is_ok_and(|v| v == "1"))
    })
}

/// Runs `f` with the fast quick_gelu on or off on this thread, whatever the environment says.
pub fn with_fast_act<R>(on: bool, f: impl FnOnce() -> R) -> R {
    with_override(&FAST_ACT, on, f)
}

/// Runs `f` with `cell` (one of the thread-local overrides above) set to `value`, then restores it.
pub(super) fn with_override<T: Copy + 'static, R>(
    cell: &'static std::thread::LocalKey<Cell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let prev = cell.with(|c| c.replace(Some(value)));
    let r = f();
    cell.with(|c| c.set(prev));
    r
}

/// Runs `f` with models built on this thread keeping (or not) an f32 residual stream around
/// 16-bit layers, whatever `GAPPROBE_RESIDUAL` or the default says.
pub fn with_f32_residual<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let stream = if on {
        ResidualStream::F32
    } else {
        ResidualStream::Model
    };
    with_residual_stream(stream, f)
}

/// Runs `f` with models built on this thread keeping their residual stream as `stream` says,
/// whatever `GAPPROBE_RESIDUAL` or the default says.
pub fn with_residual_stream<R>(stream: ResidualStream, f: impl FnOnce() -> R) -> R {
    with_override(&RESIDUAL, stream, f)
}

/// Whether a residual stream in `stream` is a wider one around layers in `layer`: f32 around
/// bf16 or f16, or f16 around bf16 (the pairs the fused ops and [`residual_dtype`] take).
pub fn wider_stream(stream: DType, layer: DType) -> bool {
    matches!(
        (stream, layer),
        (DType::F32, DType::BF16 | DType::F16) | (DType::F16, DType::BF16)
    )
}

/// The residual stream's dtype for a model built now that computes in `dtype` on `device`, when
/// the fused ops are on (they take the mixed dtypes): f32 around 16-bit layers, or f16 around
/// bf16 layers, when asked for ([`with_residual_stream`], else [`RESIDUAL_ENV`], else f32 around
/// bf16 by default); else `dtype`.
pub fn residual_dtype(device: &Device, dtype: DType) -> DType {
    let asked = RESIDUAL.with(|m| m.get()).unwrap_or_else(|| {
        match std::env::var(RESIDUAL_ENV).as_deref() {
            Ok("f32") => ResidualStream::F32,
            Ok("f16") => ResidualStream::F16,
            Ok(_) => ResidualStream::Model,
            Err(_) if dtype == DType::BF16 => ResidualStream::F32,
            Err(_) => ResidualStream::Model,
        }
    });
    if !enabled_for(device) {
        return dtype;
    }
    match (asked, dtype) {
        (ResidualStream::F32, DType::BF16 | DType::F16) => DType::F32,
        (ResidualStream::F16, DType::BF16) => DType::F16,
        _ => dtype,
    }
}

/// Runs `f` with the fused ops forced on or off for models built on this thread.
pub fn with_mode<R>(on: bool, f: impl FnOnce() -> R) -> R {
    with_override(&MODE, on, f)
}

/// Whether models built now for `device` use the fused ops.
pub fn enabled_for(device: &Device) -> bool {
    if let Some(on) = MODE.with(|m| m.get()) {
        return on;
    }
    match std::env::var(KERNELS_ENV).ok().as_deref() {
        Some("off") | Some("0") => false,
        Some("on") | Some("1") => true,
        _ => device.is_cuda(),
    }
}

/// `act(x + bias)` over the last dimension of `x` (bias: [cols]).
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Option<Act>) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(
        &bias.contiguous()?,
        &BiasAct {
            act,
            fast: fast_act(),
        },
    )
}

/// `x + table` for `x` [B, T, D] and a position table of T·D values shared by every image: with
/// `fused`, one vectorised pass (each image's T·D values plus the flattened table) instead of
/// candle's broadcast add.
pub fn add_table(x: &Tensor, table: &Tensor, fused: bool) -> Result<Tensor> {
    if !fused {
        return x.broadcast_add(table);
    }
    let (b, t, d) = x.dims3()?;
    bias_act(&x.reshape((b, t * d))?, &table.flatten_all()?, None)?.reshape((b, t, d))
}

/// `x + bias + residual` (bias: [cols], residual: the shape of `x`).
pub fn bias_residual(x: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &bias.contiguous()?,
        &residual.contiguous()?,
        &BiasAct {
            act: None,
            fast: false,
        },
    )
}

/// `LayerNorm` over the last dimension: `(x − mean) / √(var + eps) · weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.contiguous()?,
        &LayerNormOp { eps: eps as f32 },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The residual stream's default: f32 around bf16 (the 1e-2 error goal), the layers' own
    /// dtype around f16 and f32; asked either way, the override wins; the fused ops are needed.
    #[test]
    fn residual_stream_defaults_to_f32_around_bf16() {
        if std::env::var(RESIDUAL_ENV).is_ok() {
            return; // the variable replaces the default this test is about
        }
        let cpu = Device::Cpu;
        with_mode(true, || {
            assert_eq!(residual_dtype(&cpu, DType::BF16), DType::F32);
            assert_eq!(residual_dtype(&cpu, DType::F16), DType::F16);
            assert_eq!(residual_dtype(&cpu, DType::F32), DType::F32);
            with_f32_residual(false, || {
                assert_eq!(residual_dtype(&cpu, DType::BF16), DType::BF16)
            });
            with_f32_residual(true, || {
                assert_eq!(residual_dtype(&cpu, DType::F16), DType::F32)
            });
            // A float16 stream is for bf16 layers; f16 and f32 layers keep their own.
            with_residual_stream(ResidualStream::F16, || {
                assert_eq!(residual_dtype(&cpu, DType::BF16), DType::F16);
                assert_eq!(residual_dtype(&cpu, DType::F16), DType::F16);
                assert_eq!(residual_dtype(&cpu, DType::F32), DType::F32);
            });
        });
        with_mode(false, || {
            assert_eq!(residual_dtype(&cpu, DType::BF16), DType::BF16)
        });
    }

    /// Largest absolute difference, in f32 (shared with the Linear tests).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The reference bias+activation equals candle's composite ops for every activation.
    #[test]
    fn bias_act_matches_composite_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 8), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 8, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap();
        for act in [
            None,
            Some(Act::QuickGelu),
            Some(Act::Gelu),
            Some(Act::GeluTanh),
            Some(Act::Relu),
            Some(Act::Silu),
        ] {
            let pre = x.broadcast_add(&b).unwrap();
            let want = match act {
                Some(a) => a.forward(&pre).unwrap(),
                None => pre,
            };
            let got = bias_act(&x, &b, act).unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-5, "{act:?}");
        }
        let want = (x.broadcast_add(&b).unwrap() + &r).unwrap();
        assert!(max_abs_diff(&bias_residual(&x, &b, &r).unwrap(), &want) < 1e-5);
    }

    /// The reference LayerNorm equals candle-nn's.
    #[test]
    fn layer_norm_matches_candle() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (4, 6, 32), &dev).unwrap() + 5.0).unwrap();
        let w = Tensor::randn(0f32, 1.0, 32, &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 32, &dev).unwrap();
        let want = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5).unwrap();
        assert!(max_abs_diff(&layer_norm(&x, &w, &b, 1e-5).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn rejects_a_bias_of_the_wrong_shape() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        assert!(bias_act(&x, &b, None)
            .unwrap_err()
            .to_string()
            .contains("bias has shape"));
    }
}
