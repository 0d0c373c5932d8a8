//! A vision transformer's patch embedding, the convolution whose stride is its kernel size, run
//! as one GEMM over the image's patches: [B·rows·cols, C·p·p] × [C·p·p, D], tokens out as
//! [B, rows·cols, D] in memory order.
//!
//! candle's CUDA conv2d computes the same product after an im2col pass, then copies its
//! [B, rows, cols, D] result into [B, D, rows, cols]; the towers transposed that back to tokens,
//! and the class token's concatenation or the position add copied the transposed view once more.
//! At batch 256 with CLIP-L/336 each of those strided passes moves 300 MB. Here one strided copy
//! of the pixels (a permutation: each patch's C·p·p values side by side) replaces the im2col, and
//! the GEMM's output is already the tokens.

use super::linear::FusedLinear;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Patch embedding with HF's tensor names (`weight` [D, C, p, p], optional `bias` [D]).
pub struct PatchEmbedding {
    proj: FusedLinear,
    channels: usize,
    patch: usize,
}

impl PatchEmbedding {
    /// Loads the convolution's `weight` (and `bias` when `bias`) under `vb`, as
    /// `candle_nn::conv2d` would, as a Linear layer over flattened patches.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        dim: usize,
        patch: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb
            .get((dim, channels, patch, patch), "weight")?
            .reshape((dim, channels * patch * patch))?;
        let bias = if bias {
            Some(vb.get(dim, "bias")?)
        } else {
            None
        };
        let fused = super::fused::enabled_for(vb.device());
        Ok(Self {
            proj: FusedLinear::new(candle_nn::Linear::new(weight, bias), fused),
            channels,
            patch,
        })
    }

    /// Tokens [B, rows·cols, D] of pixels [B, C, H, W], row-major over the patch grid, and the
    /// grid (rows, cols) = (H / p, W / p). As with the convolution, trailing rows and columns that
    /// fill no whole patch are left out.
    pub fn forward(&self, pixels: &Tensor) -> Result<(Tensor, (usize, usize))> {
        let (b, c, h, w) = pixels.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "the patch embedding takes {} channels, the pixels have {c}",
                self.channels
            );
        }
        let p = self.patch;
        let (rows, cols) = (h / p, w / p);
        let x = if rows * p != h || cols * p != w {
            pixels.narrow(2, 0, rows * p)?.narrow(3, 0, cols * p)?
        } else {
            pixels.clone()
        };
        // [B, C, rows, p, cols, p] → [B, rows, cols, C, p, p]: the convolution's (c, y, x) order
        // within each patch, which is the weight's.
        let patches = x
            .contiguous()?
            .reshape(vec![b, c, rows, p, cols, p])?
            .permute([0, 2, 4, 1, 3, 5])?
            .contiguous()?
            .reshape((b, rows * cols, c * p * p))?;
        Ok((self.proj.forward(&patches)?, (rows, cols)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module};
    use candle_nn::{Conv2dConfig, VarMap};

    fn max_abs(t: &Tensor) -> f32 {
        let t = t.abs().unwrap().flatten_all().unwrap();
        t.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The GEMM over patches is candle's strided convolution, flattened to tokens: with and
    /// without a bias, and with trailing pixels that fill no patch.
    #[test]
    fn equals_the_strided_convolution() {
        let dev = Device::Cpu;
        for (bias, (h, w)) in [(false, (28, 42)), (true, (30, 43))] {
            let vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
            let conv_cfg = Conv2dConfig {
                stride: 7,
                ..Default::default()
            };
            // candle-nn's convolution initialises the variables (random); the embedding reads
            // the same ones back.
            let conv = if bias {
                candle_nn::conv2d(3, 16, 7, conv_cfg, vb.pp("patch")).unwrap()
            } else {
                candle_nn::conv2d_no_bias(3, 16, 7, conv_cfg, vb.pp("patch")).unwrap()
            };
            let embed = PatchEmbedding::new(vb.pp("patch"), 3, 16, 7, bias).unwrap();
            let px = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev).unwrap();
            let (got, grid) = embed.forward(&px).unwrap();
            assert_eq!(grid, (h / 7, w / 7));
            let want = conv
                .forward(&px)
                .unwrap()
                .flatten_from(2)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(
                max_abs(&want) > 0.1,
                "the convolution's weights are random, not zero"
            );
            let diff = max_abs(&(got - want).unwrap());
            assert!(diff < 1e-4, "max abs difference {diff}");
        }
    }

    #[test]
    fn the_wrong_channel_count_is_an_error() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let embed = PatchEmbedding::new(vb, 3, 8, 4, false).unwrap();
        let px = Tensor::zeros((1, 1, 8, 8), DType::F32, &dev).unwrap();
        let err = embed.forward(&px).unwrap_err().to_string();
        assert!(err.contains("3 channels"), "{err}");
    }
}
