//! The fused ops behind [`super::fused`]'s functions, as candle custom ops: each has an f32 CPU
//! reference (what the CPU runs and what the CUDA kernels are checked against) and, under the
//! `cuda` feature, a launcher in `fused_cuda.rs`.

use super::fused::AttentionKernel;
#[cfg(feature = "cuda")]
use super::fused::ATTENTION_HEAD_DIM;
use super::Act;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};
use rayon::prelude::*;

/// The kernel's activation code (`ACT_*` in fused.cu); `fast` picks quick_gelu's fast-intrinsic
/// form.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn act_code(act: Option<Act>, fast: bool) -> i32 {
    match act {
        None => 0,
        Some(Act::QuickGelu) if fast => 6,
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

/// `v` rounded to `dtype` and back (what storing an intermediate in `dtype` does).
fn round_as(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(v).to_f32(),
        DType::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Widens any supported storage to f32 (the reference path's working type).
pub(super) fn to_f32(s: &CpuStorage, l: &Layout) -> Result<Vec<f32>> {
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
pub(super) fn from_f32(v: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
        DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
        other => candle_core::bail!("fused ops support f32/bf16/f16, not {other:?}"),
    })
}

/// Checks that `wide` is `narrow` itself or a wider stream around it ([`super::fused::wider_stream`]:
/// f32 around 16-bit layers, f16 around bf16).
fn wide_enough(wide: DType, narrow: DType, what: &str) -> Result<()> {
    if wide != narrow && !super::fused::wider_stream(wide, narrow) {
        candle_core::bail!("the {what} is {wide:?}: expected {narrow:?} or f32");
    }
    Ok(())
}

/// `act(x + bias)`, or as a three-input op `x + bias + residual` (in the residual's dtype).
pub(super) struct BiasAct {
    pub(super) act: Option<Act>,
    /// On CUDA, quick_gelu through the fast intrinsics ([`super::fused::FAST_ACT_ENV`]); the
    /// reference is the same either way.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fast: bool,
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
        let y =
            super::fused_cuda::bias_act(s1, l1, s2, l2, None, cols, act_code(self.act, self.fast))?;
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
        wide_enough(s3.dtype(), s1.dtype(), "residual")?;
        let r = to_f32(s3, l3)?;
        let y = self.reference(to_f32(s1, l1)?, &to_f32(s2, l2)?, Some(&r));
        // The residual stream's dtype: f32 around 16-bit layers when asked for.
        Ok((from_f32(y, s3.dtype())?, l1.shape().clone()))
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
        let y = super::fused_cuda::bias_act(
            s1,
            l1,
            s2,
            l2,
            Some((s3, l3)),
            cols,
            act_code(self.act, self.fast),
        )?;
        Ok((y, l1.shape().clone()))
    }
}

pub(super) struct PackedAttention {
    pub(super) heads: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f64,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) kernel: AttentionKernel,
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

impl PackedAttention {
    /// CPU path: the bias (if any) added as the kernel adds it, in f32 and rounded to the storage
    /// dtype, then the reference.
    fn cpu(
        &self,
        s: &CpuStorage,
        l: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, n, shape) = self.out_shape(l)?;
        let mut qkv = to_f32(s, l)?;
        if let Some((sb, lb)) = bias {
            let bias = to_f32(sb, lb)?;
            let width = bias.len();
            for (i, v) in qkv.iter_mut().enumerate() {
                *v = round_as(*v + bias[i % width], s.dtype());
            }
        }
        let y = self.reference(&qkv, b, n);
        Ok((from_f32(y, s.dtype())?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        bias: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (b, n, shape) = self.out_shape(l)?;
        if self.head_dim != ATTENTION_HEAD_DIM {
            candle_core::bail!(
                "the CUDA attention kernel takes head dimension {ATTENTION_HEAD_DIM}, not {}",
                self.head_dim
            );
        }
        let (heads, scale, kernel) = (self.heads, self.scale, self.kernel);
        let y = super::fused_cuda::attention(s, l, bias, b, n, heads, scale, kernel)?;
        Ok((y, shape))
    }
}

/// Without a bias (the model's path: no bias tensor to allocate, a null pointer to the kernel).
impl candle_core::CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "gapprobe-packed-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu(s, l, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(s, l, None)
    }
}

/// With the bias [3·H·hd] added as q, k and v are loaded.
impl candle_core::CustomOp2 for PackedAttention {
    fn name(&self) -> &'static str {
        "gapprobe-packed-attention-bias"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(s, l, Some((sb, lb)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(s, l, Some((sb, lb)))
    }
}

pub(super) struct LayerNormOp {
    pub(super) eps: f32,
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
        wide_enough(s1.dtype(), s2.dtype(), "layer norm input")?;
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
        // The output takes the weight's dtype: a float32 stream in, 16-bit layer input out.
        Ok((from_f32(y, s2.dtype())?, l1.shape().clone()))
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
