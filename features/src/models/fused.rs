//! Fused operations for the encoder's hot loop: bias + activation (+ residual) in one pass over a
//! GEMM's output, and attention over a packed QKV projection without a score matrix in memory.
//!
//! On CUDA they run gapprobe's own kernels (`features/kernels/fused.cu`, compiled to PTX by
//! `build.rs`); elsewhere a straightforward f32 reference runs, which is also what the kernels are
//! checked against (`gapprobe bench --check-kernels` on a GPU, the tests here on the CPU).
//! Whether a model uses them is decided when it is built: on CUDA by default, never on the CPU
//! unless asked (`GAPPROBE_KERNELS=on|off`, or [`with_mode`] for one thread).

use super::Act;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::Cell;

/// Environment variable: `off` keeps candle's composite ops even on CUDA (for A/B measurements),
/// `on` uses the fused ops everywhere (the CPU gets the f32 reference).
pub const KERNELS_ENV: &str = "GAPPROBE_KERNELS";

/// Head dimension the fused attention kernel is written for (CLIP, DINOv2; SigLIP-so400m's 72
/// takes the composite path).
pub const ATTENTION_HEAD_DIM: usize = 64;

thread_local! {
    static MODE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `f` with the fused ops forced on or off for models built on this thread.
pub fn with_mode<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let prev = MODE.with(|m| m.replace(Some(on)));
    let r = f();
    MODE.with(|m| m.set(prev));
    r
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

/// Whether the fused attention applies to this dtype and head dimension. The CUDA kernel needs
/// head dimension 64 and 16-bit inputs (tensor cores; f32 runs the composite path); the CPU
/// reference takes any.
pub fn attention_supported(device: &Device, dtype: DType, head_dim: usize) -> bool {
    enabled_for(device)
        && (!device.is_cuda()
            || (head_dim == ATTENTION_HEAD_DIM && matches!(dtype, DType::BF16 | DType::F16)))
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn act_code(act: Option<Act>) -> i32 {
    match act {
        None => 0,
        Some(Act::QuickGelu) => 1,
        Some(Act::Gelu) => 2,
        Some(Act::GeluTanh) => 3,
        Some(Act::Relu) => 4,
        Some(Act::Silu) => 5,
    }
}

fn activate(v: f32, act: Option<Act>) -> f32 {
    match act {
        None => v,
        Some(Act::QuickGelu) => v / (1.0 + (-1.702 * v).exp()),
        Some(Act::Gelu) => {
            0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
        }
        Some(Act::GeluTanh) => {
            let u = 0.797_884_6 * (v + 0.044715 * v * v * v);
            0.5 * v * (1.0 + u.tanh())
        }
        Some(Act::Relu) => v.max(0.0),
        Some(Act::Silu) => v / (1.0 + (-v).exp()),
    }
}

/// `act(x + bias)` over the last dimension of `x` (bias: [cols]).
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Option<Act>) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { act })
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
        &BiasAct { act: None },
    )
}

/// Which CUDA attention kernel runs (the CPU reference ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Scores, probabilities and output in registers (mma.sync), 4 warps per block; the default.
    Mma,
    /// The same with 8 warps (128 queries) per block (`GAPPROBE_ATTENTION=mma8`).
    Mma8,
    /// The first version: WMMA products, softmax through shared memory (`GAPPROBE_ATTENTION=wmma`).
    Wmma,
}

/// Environment variable choosing the attention kernel: `mma` (default), `mma8` or `wmma`.
pub const ATTENTION_ENV: &str = "GAPPROBE_ATTENTION";

impl AttentionKernel {
    /// The kernel chosen by `GAPPROBE_ATTENTION`.
    pub fn from_env() -> Self {
        match std::env::var(ATTENTION_ENV).ok().as_deref() {
            Some("wmma") => AttentionKernel::Wmma,
            Some("mma8") => AttentionKernel::Mma8,
            _ => AttentionKernel::Mma,
        }
    }
}

/// Multi-head attention `softmax(Q Kᵀ · scale) V` from a packed projection `qkv` [B, N, 3·H·hd]
/// (all query heads, then key heads, then value heads) plus its bias [3·H·hd] if any, added as
/// the values are read; returns [B, N, H·hd]. The CUDA kernel takes hd = 64.
pub fn attention_packed(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    attention_packed_with(qkv, bias, heads, scale, AttentionKernel::from_env())
}

/// [`attention_packed`] with a given CUDA kernel.
pub fn attention_packed_with(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    scale: f64,
    kernel: AttentionKernel,
) -> Result<Tensor> {
    let (_, _, w) = qkv.dims3()?;
    if heads == 0 || w % (3 * heads) != 0 {
        candle_core::bail!("packed attention expects [B, N, 3·{heads}·head_dim], got width {w}");
    }
    // Without a bias the kernel gets a null pointer; the op still takes a (zero) tensor.
    let has_bias = bias.is_some();
    let bias = match bias {
        Some(b) if b.dims() == [w] => b.contiguous()?,
        Some(b) => candle_core::bail!(
            "packed attention bias has shape {:?}, expected [{w}]",
            b.dims()
        ),
        None => Tensor::zeros(w, qkv.dtype(), qkv.device())?,
    };
    let head_dim = w / (3 * heads);
    qkv.contiguous()?.apply_op2_no_bwd(
        &bias,
        &PackedAttention {
            heads,
            head_dim,
            scale,
            kernel,
            has_bias,
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

/// `v` rounded to `dtype` and back (what storing an intermediate in `dtype` does).
fn round_as(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(v).to_f32(),
        DType::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Widens any supported storage to f32 (the reference path's working type).
fn to_f32(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op input must be contiguous".into()))?;
    Ok(match s {
        CpuStorage::F32(v) => v[a..b].to_vec(),
        CpuStorage::BF16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::F16(v) => v[a..b].iter().map(|x| x.to_f32()).collect(),
        other => candle_core::bail!("fused ops support f32/bf16/f16, not {:?}", other.dtype()),
    })
}

/// Narrows f32 results back to `dtype` (round to nearest even, as the kernels do).
fn from_f32(v: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
        other => candle_core::bail!("fused ops support f32/bf16/f16, not {other:?}"),
    })
}

/// `act(x + bias)`, or as a three-input op `x + bias + residual`.
struct BiasAct {
    act: Option<Act>,
}

impl BiasAct {
    fn reference(&self, x: Vec<f32>, bias: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        let cols = bias.len();
        let mut y = x;
        y.par_chunks_mut(cols.max(1))
            .enumerate()
            .for_each(|(row, chunk)| {
                for (c, v) in chunk.iter_mut().enumerate() {
                    let mut t = activate(*v + bias[c], self.act);
                    if let Some(r) = residual {
                        t += r[row * cols + c];
                    }
                    *v = t;
                }
            });
        y
    }

    fn check(x: &Layout, bias: &Layout) -> Result<usize> {
        let cols = *x.dims().last().unwrap_or(&0);
        if bias.dims() != [cols] {
            candle_core::bail!("bias has shape {:?}, expected [{cols}]", bias.dims());
        }
        Ok(cols)
    }
}

impl candle_core::CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "gapprobe-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::check(l1, l2)?;
        let y = self.reference(to_f32(s1, l1)?, &to_f32(s2, l2)?, None);
        Ok((from_f32(y, s1.dtype())?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let cols = Self::check(l1, l2)?;
        let y = super::fused_cuda::bias_act(s1, l1, s2, l2, None, cols, act_code(self.act))?;
        Ok((y, l1.shape().clone()))
    }
}

impl candle_core::CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "gapprobe-bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::check(l1, l2)?;
        if l3.dims() != l1.dims() {
            candle_core::bail!(
                "residual has shape {:?}, expected {:?}",
                l3.dims(),
                l1.dims()
            );
        }
        let r = to_f32(s3, l3)?;
        let y = self.reference(to_f32(s1, l1)?, &to_f32(s2, l2)?, Some(&r));
        Ok((from_f32(y, s1.dtype())?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let cols = Self::check(l1, l2)?;
        if l3.dims() != l1.dims() {
            candle_core::bail!(
                "residual has shape {:?}, expected {:?}",
                l3.dims(),
                l1.dims()
            );
        }
        let y =
            super::fused_cuda::bias_act(s1, l1, s2, l2, Some((s3, l3)), cols, act_code(self.act))?;
        Ok((y, l1.shape().clone()))
    }
}

struct PackedAttention {
    heads: usize,
    head_dim: usize,
    scale: f64,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernel: AttentionKernel,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    has_bias: bool,
}

impl PackedAttention {
    /// f32 reference: per (batch, head), scores, a max-subtracted softmax and the weighted sum.
    fn reference(&self, qkv: &[f32], b: usize, n: usize) -> Vec<f32> {
        let (h, hd) = (self.heads, self.head_dim);
        let width = 3 * h * hd;
        let mut out = vec![0f32; b * n * h * hd];
        // One output block per (batch, query row): rows are disjoint, so they fill in parallel.
        out.par_chunks_mut(h * hd)
            .enumerate()
            .for_each(|(bq, orow)| {
                let (bi, qi) = (bq / n, bq % n);
                let rows = &qkv[bi * n * width..(bi + 1) * n * width];
                let mut p = vec![0f32; n];
                for head in 0..h {
                    let q = &rows[qi * width + head * hd..][..hd];
                    let mut max = f32::NEG_INFINITY;
                    for (ki, pk) in p.iter_mut().enumerate() {
                        let k = &rows[ki * width + (h + head) * hd..][..hd];
                        let s: f32 =
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * self.scale as f32;
                        *pk = s;
                        max = max.max(s);
                    }
                    let mut sum = 0f32;
                    for pk in p.iter_mut() {
                        *pk = (*pk - max).exp();
                        sum += *pk;
                    }
                    let o = &mut orow[head * hd..][..hd];
                    for (ki, pk) in p.iter().enumerate() {
                        let v = &rows[ki * width + (2 * h + head) * hd..][..hd];
                        for (oc, vc) in o.iter_mut().zip(v) {
                            *oc += pk / sum * vc;
                        }
                    }
                }
            });
        out
    }

    fn out_shape(&self, l: &Layout) -> Result<(usize, usize, Shape)> {
        let (b, n, _) = l.shape().dims3()?;
        Ok((b, n, Shape::from((b, n, self.heads * self.head_dim))))
    }
}

impl candle_core::CustomOp2 for PackedAttention {
    fn name(&self) -> &'static str {
        "gapprobe-packed-attention"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, n, shape) = self.out_shape(l)?;
        let bias = to_f32(sb, lb)?;
        let width = bias.len();
        let mut qkv = to_f32(s, l)?;
        // The bias is added as the kernel adds it: in f32, rounded to the storage dtype.
        for (i, v) in qkv.iter_mut().enumerate() {
            *v = round_as(*v + bias[i % width], s.dtype());
        }
        let y = self.reference(&qkv, b, n);
        Ok((from_f32(y, s.dtype())?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (b, n, shape) = self.out_shape(l)?;
        if self.head_dim != ATTENTION_HEAD_DIM {
            candle_core::bail!(
                "the CUDA attention kernel takes head dimension {ATTENTION_HEAD_DIM}, not {}",
                self.head_dim
            );
        }
        let (heads, scale, kernel) = (self.heads, self.scale, self.kernel);
        let y =
            super::fused_cuda::attention(s, l, sb, lb, self.has_bias, b, n, heads, scale, kernel)?;
        Ok((y, shape))
    }
}

struct LayerNormOp {
    eps: f32,
}

impl LayerNormOp {
    fn check(x: &Layout, w: &Layout, b: &Layout) -> Result<usize> {
        let cols = *x.dims().last().unwrap_or(&0);
        if w.dims() != [cols] || b.dims() != [cols] {
            candle_core::bail!(
                "layer norm weight/bias must be [{cols}], got {:?} / {:?}",
                w.dims(),
                b.dims()
            );
        }
        Ok(cols)
    }
}

impl candle_core::CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "gapprobe-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let cols = Self::check(l1, l2, l3)?.max(1);
        let (w, b) = (to_f32(s2, l2)?, to_f32(s3, l3)?);
        let mut y = to_f32(s1, l1)?;
        y.par_chunks_mut(cols).for_each(|row| {
            let mean = row.iter().sum::<f32>() / cols as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for (c, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) * rstd * w[c] + b[c];
            }
        });
        Ok((from_f32(y, s1.dtype())?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let cols = Self::check(l1, l2, l3)?;
        let y = super::fused_cuda::layer_norm(s1, l1, s2, l2, s3, l3, cols, self.eps)?;
        Ok((y, l1.shape().clone()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    /// The packed attention reference equals the composite multi-head attention (split heads,
    /// scores, softmax, weighted sum, merge heads).
    #[test]
    fn packed_attention_matches_composite() {
        let dev = Device::Cpu;
        let (b, n, h, hd) = (2, 7, 3, ATTENTION_HEAD_DIM);
        let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * h * hd), &dev).unwrap();
        let scale = (hd as f64).powf(-0.5);
        let split = |i: usize| {
            qkv.narrow(2, i * h * hd, h * hd)
                .unwrap()
                .reshape((b, n, h, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        let want = p
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, h * hd))
            .unwrap();
        let got = attention_packed(&qkv, None, h, scale).unwrap();
        assert_eq!(got.dims(), &[b, n, h * hd]);
        assert!(max_abs_diff(&got, &want) < 1e-5);
        // bf16 storage: one rounding of inputs and output.
        let got16 = attention_packed(&qkv.to_dtype(DType::BF16).unwrap(), None, h, scale).unwrap();
        assert_eq!(got16.dtype(), DType::BF16);
        assert!(max_abs_diff(&got16, &want) < 3e-2);
    }

    /// A bias handed to the attention is the same as adding it to the projection first.
    #[test]
    fn packed_attention_bias_equals_adding_it_first() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3 * 2 * 8), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 3 * 2 * 8, &dev).unwrap();
        let got = attention_packed(&qkv, Some(&bias), 2, 0.3).unwrap();
        let want = attention_packed(&qkv.broadcast_add(&bias).unwrap(), None, 2, 0.3).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
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
    fn rejects_wrong_width_and_bias_shape() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((1, 4, 100), DType::F32, &dev).unwrap();
        assert!(attention_packed(&qkv, None, 3, 0.125)
            .unwrap_err()
            .to_string()
            .contains("expects"));
        let x = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        assert!(bias_act(&x, &b, None)
            .unwrap_err()
            .to_string()
            .contains("bias has shape"));
    }
}
