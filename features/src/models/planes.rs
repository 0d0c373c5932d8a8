//! The model input from 8-bit planes: the preprocessing's exact level table (rescale and
//! normalise per channel and level) applied on the device, one pass on CUDA
//! (`planes_input_*` in `features/kernels/fused.cu`), the same lookup on the CPU.

use super::fused_ops::from_f32;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Model input in `dtype` from 8-bit planes [B, 3, H, W] (u8) by a level table of 3·256 f32
/// values (`PreprocessConfig::level_table`: the exact rescale-and-normalise of each level), in one
/// pass on CUDA.
pub fn planes_to_input(planes: &Tensor, levels: &Tensor, dtype: DType) -> Result<Tensor> {
    let (_, _, h, w) = planes.dims4()?;
    if planes.device().is_cuda() && !(h * w).is_multiple_of(4) {
        // The kernel reads four pixels at a time: odd-sized crops take candle's ops.
        return planes_to_input_composite(planes, levels, dtype);
    }
    planes
        .contiguous()?
        .apply_op2_no_bwd(&levels.contiguous()?, &PlanesInput { dtype })
}

/// [`planes_to_input`] from candle's ops: widen, add each channel's table offset, gather.
fn planes_to_input_composite(planes: &Tensor, levels: &Tensor, dtype: DType) -> Result<Tensor> {
    let offsets = Tensor::new(&[0u32, 256, 512], planes.device())?.reshape((1, 3, 1, 1))?;
    let index = planes
        .to_dtype(DType::U32)?
        .broadcast_add(&offsets)?
        .flatten_all()?;
    levels
        .index_select(&index, 0)?
        .reshape(planes.shape())?
        .to_dtype(dtype)
}

/// Model input from 8-bit planes [B, 3, H, W] (u8) and the preprocessing's level table (3·256
/// f32 values, one row per channel), in `dtype`.
struct PlanesInput {
    dtype: DType,
}

impl PlanesInput {
    /// Pixels per plane (H·W), after checking the shapes.
    fn check(planes: &Layout, levels: &Layout) -> Result<usize> {
        let dims = planes.dims();
        if dims.len() != 4 || dims[1] != 3 {
            candle_core::bail!("8-bit planes must be [B, 3, H, W], got {dims:?}");
        }
        if levels.dims() != [768] {
            candle_core::bail!(
                "the level table has shape {:?}, expected [768]",
                levels.dims()
            );
        }
        Ok(dims[2] * dims[3])
    }
}

impl candle_core::CustomOp2 for PlanesInput {
    fn name(&self) -> &'static str {
        "gapprobe-planes-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let plane = Self::check(l1, l2)?.max(1);
        let (CpuStorage::U8(x), CpuStorage::F32(levels)) = (s1, s2) else {
            candle_core::bail!("planes input takes u8 planes and an f32 level table");
        };
        let (x0, x1) = l1
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("8-bit planes must be contiguous".into()))?;
        let l0 = l2.start_offset();
        let y: Vec<f32> = x[x0..x1]
            .par_iter()
            .enumerate()
            .map(|(i, &v)| levels[l0 + 256 * ((i / plane) % 3) + v as usize])
            .collect();
        Ok((from_f32(y, self.dtype)?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let plane = Self::check(l1, l2)?;
        let y = super::fused_cuda::planes_input(s1, l1, s2, l2, plane, self.dtype)?;
        Ok((y, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fused::tests::max_abs_diff;
    use candle_core::Device;

    /// The planes op and its composite fallback (odd-sized crops on CUDA) agree exactly.
    #[test]
    fn planes_op_equals_composite_ops() {
        let dev = Device::Cpu;
        let planes = Tensor::rand(0f32, 256.0, (2, 3, 5, 7), &dev)
            .unwrap()
            .floor()
            .unwrap()
            .to_dtype(DType::U8)
            .unwrap();
        let levels = Tensor::randn(0f32, 1.0, 768, &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let a = planes_to_input(&planes, &levels, dtype).unwrap();
            let b = planes_to_input_composite(&planes, &levels, dtype).unwrap();
            assert_eq!(a.dtype(), dtype);
            assert_eq!(max_abs_diff(&a, &b), 0.0);
        }
    }
}
