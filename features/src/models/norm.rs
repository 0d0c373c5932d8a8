//! LayerNorm that runs gapprobe's one-warp-per-row kernel on CUDA (candle's fused LayerNorm is
//! ~6× slower than memory bandwidth allows at [147712, 1024] on an H200) and candle's elsewhere.

use super::fused;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A LayerNorm with weight and bias, as transformers' `nn.LayerNorm`.
#[derive(Debug, Clone)]
pub struct FusedLayerNorm {
    plain: candle_nn::LayerNorm,
    eps: f64,
    fused: bool,
}

/// Loads `weight` and `bias` [size] under `vb`, like `candle_nn::layer_norm`.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<FusedLayerNorm> {
    // The kernel reads rows in 16-byte vectors: every width it meets in practice is a multiple of 8.
    let fused = fused::enabled_for(vb.device()) && size.is_multiple_of(8);
    let weight = vb.get(size, "weight")?;
    let bias = vb.get(size, "bias")?;
    Ok(FusedLayerNorm {
        plain: candle_nn::LayerNorm::new(weight, bias, eps),
        eps,
        fused,
    })
}

impl Module for FusedLayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match (self.fused, self.plain.bias()) {
            (true, Some(b)) => fused::layer_norm(x, self.plain.weight(), b, self.eps),
            _ => self.plain.forward(x),
        }
    }
}
