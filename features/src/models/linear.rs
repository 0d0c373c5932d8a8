//! Linear layers whose bias rides inside the matrix product on CUDA.
//!
//! candle adds a Linear's bias with a broadcast kernel that costs about 9× the GEMM itself on an
//! H200 (../shared/gpu/README.md). On CUDA the bias is folded into the weights instead:
//! `[x | 1 … 1] · [Wᵀ ; b ; 0 … 0]`, with the ones/zero rows padding K to a multiple of 8 so tensor
//! cores stay usable. The ones columns cost one contiguous concat; the bias is then accumulated in
//! the GEMM's f32 accumulator. On the CPU the plain candle Linear runs (bit-identical to before);
//! `GAPPROBE_PLAIN_LINEAR=1` keeps it on CUDA as well, to measure one against the other.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Set to anything to keep candle's plain Linear on CUDA too (for A/B measurements).
pub const PLAIN_ENV: &str = "GAPPROBE_PLAIN_LINEAR";

/// A Linear layer (`y = x Wᵀ + b`) with the bias folded into the GEMM on CUDA.
#[derive(Debug, Clone)]
pub struct FoldedLinear {
    plain: candle_nn::Linear,
    /// `[in + 1 + pad, out]`: Wᵀ, the bias row, then zero rows (CUDA with bias only).
    folded: Option<Tensor>,
    /// Ones columns appended to the input: 1 (bias) + pad.
    extra: usize,
}

/// Loads `weight` [out, in] and `bias` [out] under `vb`, like `candle_nn::linear`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<FoldedLinear> {
    FoldedLinear::new(candle_nn::linear(in_dim, out_dim, vb)?)
}

impl FoldedLinear {
    /// Wraps a candle Linear, folding its bias on CUDA devices.
    pub fn new(plain: candle_nn::Linear) -> Result<Self> {
        let w = plain.weight();
        let (folded, extra) = match plain.bias() {
            Some(b) if w.device().is_cuda() && std::env::var_os(PLAIN_ENV).is_none() => {
                let (out, inp) = w.dims2()?;
                let pad = (8 - (inp + 1) % 8) % 8;
                let mut rows = vec![w.t()?.contiguous()?, b.reshape((1, out))?];
                if pad > 0 {
                    rows.push(Tensor::zeros((pad, out), w.dtype(), w.device())?);
                }
                (Some(Tensor::cat(&rows, 0)?.contiguous()?), 1 + pad)
            }
            _ => (None, 0),
        };
        Ok(Self {
            plain,
            folded,
            extra,
        })
    }
}

impl Module for FoldedLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(w) = &self.folded else {
            return self.plain.forward(x);
        };
        let dims = x.dims().to_vec();
        let inp = *dims.last().expect("Linear input has a last dimension");
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, inp))?;
        let ones = Tensor::ones((rows, self.extra), x.dtype(), x.device())?;
        let y = Tensor::cat(&[&x2, &ones], 1)?.matmul(w)?;
        let mut out = dims;
        *out.last_mut().expect("non-empty") = w.dim(1)?;
        y.reshape(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The folded product is the same function as the plain Linear (checked on the CPU by forcing
    /// the folded path, which CUDA takes).
    #[test]
    fn folded_bias_equals_broadcast_bias() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 11), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let plain = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let pad = (8 - 12 % 8) % 8;
        let folded = Tensor::cat(
            &[
                w.t().unwrap().contiguous().unwrap(),
                b.reshape((1, 5)).unwrap(),
                Tensor::zeros((pad, 5), DType::F32, &dev).unwrap(),
            ],
            0,
        )
        .unwrap();
        let lin = FoldedLinear {
            plain: plain.clone(),
            folded: Some(folded),
            extra: 1 + pad,
        };
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11), &dev).unwrap();
        let a = lin.forward(&x).unwrap();
        let e = plain.forward(&x).unwrap();
        assert_eq!(a.dims(), &[2, 3, 5]);
        let err = (a - e)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(err < 1e-5, "{err}");
    }
}
