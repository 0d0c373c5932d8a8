//! Linear layers whose bias, activation and residual add run in one fused pass on CUDA.
//!
//! candle adds a Linear's bias with a broadcast kernel that costs about 9× the GEMM itself on an
//! H200 (../shared/gpu/README.md), and composes activations from several kernels. With the fused
//! ops on ([`super::fused::enabled_for`]) the input is flattened to one 2-D GEMM and its output
//! goes through a single `act(y + b) (+ residual)` kernel; otherwise candle's Linear and
//! composite ops run, as on the CPU.

use super::norm::FusedLayerNorm;
use super::Act;
use super::{add_norm, fused, gemm_epilogue};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A Linear layer (`y = x Wᵀ + b`) with optional fused activation or residual add.
#[derive(Debug, Clone)]
pub struct FusedLinear {
    plain: candle_nn::Linear,
    fused: bool,
    /// Bias (and residual) adds in the GEMM's epilogue ([`super::gemm_epilogue`]).
    epilogue: bool,
}

/// Loads `weight` [out, in] and `bias` [out] under `vb`, like `candle_nn::linear`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<FusedLinear> {
    let fused = fused::enabled_for(vb.device());
    Ok(FusedLinear::new(
        candle_nn::linear(in_dim, out_dim, vb)?,
        fused,
    ))
}

/// Stacks Linear layers of the same input width along the output axis (one GEMM for q, k, v).
pub fn stack(layers: &[candle_nn::Linear], fused: bool) -> Result<FusedLinear> {
    let weights: Vec<&Tensor> = layers.iter().map(|l| l.weight()).collect();
    let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.bias()).collect();
    let bias = match biases {
        Some(b) => Some(Tensor::cat(&b, 0)?),
        None => None,
    };
    Ok(FusedLinear::new(
        candle_nn::Linear::new(Tensor::cat(&weights, 0)?, bias),
        fused,
    ))
}

impl FusedLinear {
    /// Wraps a candle Linear; `fused` selects the fused path.
    pub fn new(plain: candle_nn::Linear, fused: bool) -> Self {
        let epilogue = fused && gemm_epilogue::enabled_for(plain.weight().device());
        Self {
            plain,
            fused,
            epilogue,
        }
    }

    /// The same layer followed by an elementwise scale of its outputs (`s ⊙ (x Wᵀ + b)`), folded
    /// into the weights: DINOv2's layer scale without its broadcast multiply.
    pub fn scaled_outputs(&self, s: &Tensor) -> Result<FusedLinear> {
        let s = s.to_dtype(self.plain.weight().dtype())?;
        let w = self.plain.weight().broadcast_mul(&s.unsqueeze(1)?)?;
        let b = self.plain.bias().map(|b| b.mul(&s)).transpose()?;
        Ok(FusedLinear::new(candle_nn::Linear::new(w, b), self.fused))
    }

    /// Whether the fused path runs.
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// Whether the bias (and residual) adds run in the GEMM's epilogue.
    #[cfg(test)]
    pub fn uses_epilogue(&self) -> bool {
        self.epilogue
    }

    /// The weights' dtype (what the layer computes in).
    pub fn dtype(&self) -> DType {
        self.plain.weight().dtype()
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.plain.weight().dims()[0]
    }

    /// `x Wᵀ` (no bias) as one 2-D GEMM, reshaped back to `x`'s leading dimensions.
    fn gemm(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.plain.weight();
        let dims = x.dims().to_vec();
        let inp = *dims.last().expect("Linear input has a last dimension");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, inp))?.matmul(&w.t()?)?;
        let mut out = dims;
        *out.last_mut().expect("non-empty") = w.dim(0)?;
        y.reshape(out)
    }

    /// `x Wᵀ` and the bias left to add, for a consumer that adds it more cheaply itself (the
    /// fused attention kernels). Unfused, the bias is added here and none is returned.
    pub fn forward_unbiased(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        if self.fused {
            Ok((self.gemm(x)?, self.plain.bias()))
        } else {
            Ok((self.plain.forward(x)?, None))
        }
    }

    /// `act(x Wᵀ + b)`.
    pub fn forward_act(&self, x: &Tensor, act: Option<Act>) -> Result<Tensor> {
        match (self.fused, self.plain.bias()) {
            (true, Some(b)) if self.epilogue && act.is_none() => {
                gemm_epilogue::linear(x, self.plain.weight(), b, None)
            }
            (true, Some(b)) => fused::bias_act(&self.gemm(x)?, b, act),
            _ => {
                let y = self.plain.forward(x)?;
                match act {
                    Some(a) => a.forward(&y),
                    None => Ok(y),
                }
            }
        }
    }

    /// `x Wᵀ + b + residual`, in the residual's dtype (f32 around 16-bit layers when asked).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match (self.fused, self.plain.bias()) {
            (true, Some(b)) if self.epilogue && residual.dtype() == self.dtype() => {
                gemm_epilogue::linear(x, self.plain.weight(), b, Some(residual))
            }
            (true, Some(b)) => fused::bias_residual(&self.gemm(x)?, b, residual),
            _ => self.plain.forward(x)?.to_dtype(residual.dtype())? + residual,
        }
    }

    /// `(s, norm(s))` with `s = x Wᵀ + b + residual`: the residual add and the LayerNorm after
    /// it. With `fuse`, a layer around a wider stream ([`fused::wider_stream`]) and a
    /// kernel-backed norm, one pass after the GEMM ([`add_norm::add_layer_norm`]); otherwise
    /// [`Self::forward_residual`] and the norm (the same numbers).
    pub fn forward_residual_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        norm: &FusedLayerNorm,
        fuse: bool,
    ) -> Result<(Tensor, Tensor)> {
        let wide_stream = fused::wider_stream(residual.dtype(), self.dtype());
        if let (true, true, Some(b), Some((w, lb, eps))) = (
            fuse && self.fused,
            wide_stream,
            self.plain.bias(),
            norm.fused_parts(),
        ) {
            return add_norm::add_layer_norm(&self.gemm(x)?, b, residual, w, lb, eps);
        }
        let s = self.forward_residual(x, residual)?;
        let n = norm.forward(&s)?;
        Ok((s, n))
    }
}

impl Module for FusedLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fused::tests::max_abs_diff;
    use super::*;
    use candle_core::{DType, Device};

    /// The fused path (2-D GEMM + bias/activation/residual op) is the same function as candle's
    /// Linear followed by the composite ops (checked on the CPU with the reference op).
    #[test]
    fn fused_linear_equals_plain_linear() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 11), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let plain = candle_nn::Linear::new(w, Some(b));
        let (on, off) = (
            FusedLinear::new(plain.clone(), true),
            FusedLinear::new(plain, false),
        );
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap();
        for act in [None, Some(Act::QuickGelu), Some(Act::Gelu)] {
            let a = on.forward_act(&x, act).unwrap();
            assert_eq!(a.dims(), &[2, 3, 5]);
            assert!(max_abs_diff(&a, &off.forward_act(&x, act).unwrap()) < 1e-5);
        }
        let a = on.forward_residual(&x, &r).unwrap();
        assert!(max_abs_diff(&a, &off.forward_residual(&x, &r).unwrap()) < 1e-5);
        // Unbiased: fused hands the bias over, unfused adds it itself.
        let (y, bias) = on.forward_unbiased(&x).unwrap();
        let y = y
            .broadcast_add(bias.expect("fused hands the bias over"))
            .unwrap();
        let (z, none) = off.forward_unbiased(&x).unwrap();
        assert!(none.is_none());
        assert!(max_abs_diff(&y, &z) < 1e-5);
        assert!(max_abs_diff(&y, &off.forward_act(&x, None).unwrap()) < 1e-5);
    }

    /// Built with the epilogue asked for, the layer takes it (fused ops on) and computes the same
    /// outputs; the activation keeps the separate pass, an f32 residual around a 16-bit layer
    /// the fused residual kernel.
    #[test]
    fn epilogue_linear_equals_plain_linear() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 11), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let plain = candle_nn::Linear::new(w, Some(b));
        let build = |on| {
            fused::with_mode(true, || {
                gemm_epilogue::with_epilogue(on, || FusedLinear::new(plain.clone(), true))
            })
        };
        let (lt, off) = (build(true), build(false));
        assert!(lt.uses_epilogue() && !off.uses_epilogue());
        assert!(!fused::with_mode(false, || gemm_epilogue::with_epilogue(
            true,
            || { FusedLinear::new(plain.clone(), false).uses_epilogue() }
        )));
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap();
        for act in [None, Some(Act::QuickGelu)] {
            let a = lt.forward_act(&x, act).unwrap();
            assert!(max_abs_diff(&a, &off.forward_act(&x, act).unwrap()) < 1e-5);
        }
        let a = lt.forward_residual(&x, &r).unwrap();
        assert!(max_abs_diff(&a, &off.forward_residual(&x, &r).unwrap()) < 1e-5);
        let h = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let lt16 = fused::with_mode(true, || {
            gemm_epilogue::with_epilogue(true, || {
                FusedLinear::new(
                    candle_nn::Linear::new(h(plain.weight()), plain.bias().map(h)),
                    true,
                )
            })
        });
        let wide = lt16.forward_residual(&h(&x), &r).unwrap();
        assert_eq!(wide.dtype(), DType::F32);
    }

    /// The residual add with the LayerNorm after it, fused or not, around an f32 stream and in
    /// the layer's own dtype: the stream and the norm are those of the separate steps.
    #[test]
    fn residual_norm_equals_residual_then_norm() {
        let dev = Device::Cpu;
        let h = |t: Tensor| t.to_dtype(DType::BF16).unwrap();
        let w = h(Tensor::randn(0f32, 1.0, (8, 11), &dev).unwrap());
        let b = h(Tensor::randn(0f32, 1.0, 8, &dev).unwrap());
        let lin = FusedLinear::new(candle_nn::Linear::new(w, Some(b)), true);
        let vb = candle_nn::VarBuilder::from_tensors(
            [
                (
                    "weight".to_string(),
                    Tensor::randn(0f32, 1.0, 8, &dev).unwrap(),
                ),
                (
                    "bias".to_string(),
                    Tensor::randn(0f32, 1.0, 8, &dev).unwrap(),
                ),
            ]
            .into(),
            DType::BF16,
            &dev,
        );
        let norm = fused::with_mode(true, || super::super::norm::layer_norm(8, 1e-5, vb)).unwrap();
        assert!(norm.fused_parts().is_some());
        let x = h(Tensor::randn(0f32, 1.0, (2, 3, 11), &dev).unwrap());
        let wide = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap();
        for residual in [wide.clone(), h(wide)] {
            let want_s = lin.forward_residual(&x, &residual).unwrap();
            let want_n = norm.forward(&want_s).unwrap();
            for fuse in [true, false] {
                let (s, n) = lin
                    .forward_residual_norm(&x, &residual, &norm, fuse)
                    .unwrap();
                assert_eq!((s.dtype(), n.dtype()), (residual.dtype(), DType::BF16));
                assert_eq!(max_abs_diff(&s, &want_s), 0.0);
                assert_eq!(max_abs_diff(&n, &want_n), 0.0);
            }
        }
    }

    /// Folding an output scale into the weights equals scaling the outputs.
    #[test]
    fn scaled_outputs_fold_the_scale() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let lin = FusedLinear::new(candle_nn::Linear::new(w, Some(b)), false);
        let s = Tensor::new(&[0.5f32, -2.0, 1e-3, 3.0], &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 6), &dev).unwrap();
        let want = lin.forward(&x).unwrap().broadcast_mul(&s).unwrap();
        let got = lin.scaled_outputs(&s).unwrap().forward(&x).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    /// Stacking q, k, v gives one layer whose output is their concatenation.
    #[test]
    fn stacked_linear_concatenates_outputs() {
        let dev = Device::Cpu;
        let mk = |o| {
            candle_nn::Linear::new(
                Tensor::randn(0f32, 1.0, (o, 4), &dev).unwrap(),
                Some(Tensor::randn(0f32, 1.0, o, &dev).unwrap()),
            )
        };
        let (a, b) = (mk(3), mk(2));
        let x = Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let s = stack(&[a.clone(), b.clone()], false)
            .unwrap()
            .forward(&x)
            .unwrap();
        let want = Tensor::cat(&[a.forward(&x).unwrap(), b.forward(&x).unwrap()], 1).unwrap();
        assert_eq!(s.dtype(), DType::F32);
        assert!(max_abs_diff(&s, &want) < 1e-5);
    }
}
