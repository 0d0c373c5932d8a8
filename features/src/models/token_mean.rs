//! Mean over the token axis, [B, T, D] → [B, D] in f32: extraction's `.mean` pooling.
//!
//! By default one batched product with a row of 1/T, whose reads run along D. (candle's `mean`
//! over the middle axis gives each of the B·D outputs its own thread block reading T values D
//! apart: 14.7 ms on an H200 for a batch of 256 × 576 × 4096, against 6.25 ms for the product,
//! docs/performance.md.) `GAPPROBE_MEAN_KERNEL=1` runs `token_mean_*` of
//! `features/kernels/fused.cu` instead, which reads the 16-bit tokens once (no f32 copy first);
//! it is off until a GPU has timed it (`gapprobe bench --ops` does, and checks it).

use super::fused;
use super::fused_ops::to_f32;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};

/// Environment variable: `1` pools `.mean` points with the token-mean kernel on CUDA.
pub const MEAN_KERNEL_ENV: &str = "GAPPROBE_MEAN_KERNEL";

/// Mean over the token axis of [B, T, D] → [B, D], accumulated in f32.
pub fn mean_tokens(x: &Tensor) -> Result<Tensor> {
    let kernel = std::env::var(MEAN_KERNEL_ENV).is_ok_and(|v| v == "1");
    if kernel && x.device().is_cuda() && fused::enabled_for(x.device()) {
        return mean_tokens_kernel(x);
    }
    let (b, t, _) = x.dims3()?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let row = Tensor::full(1f32 / t as f32, (1, 1, t), x.device())?.broadcast_as((b, 1, t))?;
    row.matmul(&x)?.squeeze(1)
}

/// [`mean_tokens`] through the token-mean op whatever the environment says: the CUDA kernel on
/// a GPU, its reference (the same order of summation, in f32) on the CPU.
pub fn mean_tokens_kernel(x: &Tensor) -> Result<Tensor> {
    x.dims3()?;
    x.contiguous()?.apply_op1_no_bwd(&TokenMean)
}

struct TokenMean;

impl candle_core::CustomOp1 for TokenMean {
    fn name(&self) -> &'static str {
        "gapprobe-token-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, d) = l.shape().dims3()?;
        let x = to_f32(s, l)?;
        let mut y = vec![0f32; b * d];
        for (i, out) in y.chunks_mut(d).enumerate() {
            for row in x[i * t * d..(i + 1) * t * d].chunks(d) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            for o in out.iter_mut() {
                *o /= t as f32;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (b, t, d) = l.shape().dims3()?;
        let y = super::fused_cuda::token_mean(s, l, (b, t, d))?;
        Ok((y, Shape::from((b, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// The product with a row of 1/T and the op's reference are the mean over the token axis,
    /// for f32 and 16-bit inputs (accumulated in f32) and for a view that is not contiguous.
    #[test]
    fn both_paths_are_the_mean_over_tokens() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 7, 5), &dev).unwrap();
        let want = x.mean(1).unwrap();
        for f in [mean_tokens, mean_tokens_kernel] {
            let got = f(&x).unwrap();
            assert_eq!(got.dims(), &[3, 5]);
            assert!(diff(&got, &want) < 1e-6);
            let half = x.to_dtype(DType::BF16).unwrap();
            let got = f(&half).unwrap();
            assert_eq!(got.dtype(), DType::F32);
            let want = half.to_dtype(DType::F32).unwrap().mean(1).unwrap();
            assert!(diff(&got, &want) < 1e-6);
            let view = x.narrow(1, 1, 6).unwrap();
            assert!(diff(&f(&view).unwrap(), &view.mean(1).unwrap()) < 1e-6);
        }
        assert!(mean_tokens_kernel(&x.flatten_all().unwrap()).is_err());
    }
}
