//! LayerNorm that runs gapprobe's one-warp-per-row kernel on CUDA (candle's fused LayerNorm is
//! ~6× slower than memory bandwidth allows at [147712, 1024] on an H200) and candle's elsewhere.

use super::fused;
use candle_core::{DType, Module, Result, Tensor};
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

impl FusedLayerNorm {
    /// The weight's dtype (the output's).
    pub fn dtype(&self) -> DType {
        self.plain.weight().dtype()
    }

    /// Weight, bias and eps when this norm runs gapprobe's kernel, so that a fused residual add
    /// + LayerNorm ([`super::add_norm`]) may stand in for it; `None` for candle's LayerNorm.
    pub fn fused_parts(&self) -> Option<(&Tensor, &Tensor, f64)> {
        match (self.fused, self.plain.bias()) {
            (true, Some(b)) => Some((self.plain.weight(), b, self.eps)),
            _ => None,
        }
    }

    /// The same norm with its weight and bias in `dtype` (its output takes their dtype).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let bias = self.plain.bias().map(|b| b.to_dtype(dtype)).transpose()?;
        let weight = self.plain.weight().to_dtype(dtype)?;
        let plain = match bias {
            Some(b) => candle_nn::LayerNorm::new(weight, b, self.eps),
            None => candle_nn::LayerNorm::new_no_bias(weight, self.eps),
        };
        Ok(Self {
            plain,
            eps: self.eps,
            fused: self.fused,
        })
    }
}

impl Module for FusedLayerNorm {
    /// Normalises `x` into the weight's dtype (`x` may be a wider f32 residual stream).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match (self.fused, self.plain.bias()) {
            (true, Some(b)) => fused::layer_norm(x, self.plain.weight(), b, self.eps),
            _ => self
                .plain
                .forward(&x.to_dtype(self.plain.weight().dtype())?),
        }
    }
}
