//! A Linear layer's GEMM with its bias and residual add in the GEMM's epilogue: `x Wᵀ + b (+ r)`
//! in one cuBLASLt call on CUDA (`CUBLASLT_EPILOGUE_BIAS`, the residual as the `β·C` term, the
//! output in a new buffer), instead of a GEMM followed by a pass that reads its output back.
//! Chosen per model at build time ([`enabled_for`]); on by default with the fused ops (the model
//! 2.4% faster on an H200, docs/performance.md); `GAPPROBE_GEMM_EPILOGUE=0` (or [`with_epilogue`]
//! for one thread) keeps the GEMM and a separate pass. An f32 residual stream around 16-bit
//! layers keeps its separate pass: a 16-bit GEMM writing the f32 sum measured no faster. On the
//! CPU the op runs an f32 reference (candle's matmul, rounded once to the dtype), which is also
//! what the cuBLASLt call is checked against.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use std::cell::Cell;

/// Environment variable: `0` (or `off`) keeps the bias and residual adds of models built from
/// now in separate passes after the GEMMs; unset or anything else puts them into the GEMMs'
/// epilogues (with the fused ops on; residuals of the layer's own dtype).
pub const EPILOGUE_ENV: &str = "GAPPROBE_GEMM_EPILOGUE";

thread_local! {
    static EPILOGUE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `f` with models built on this thread using (or not) the GEMM epilogue, whatever
/// [`EPILOGUE_ENV`] says.
pub fn with_epilogue<R>(on: bool, f: impl FnOnce() -> R) -> R {
    super::fused::with_override(&EPILOGUE, on, f)
}

/// Whether models built now for `device` add biases and residuals in the GEMMs' epilogues.
pub fn enabled_for(device: &Device) -> bool {
    let asked = EPILOGUE
        .with(|c| c.get())
        .unwrap_or_else(|| !std::env::var(EPILOGUE_ENV).is_ok_and(|v| v == "0" || v == "off"));
    asked && super::fused::enabled_for(device)
}

/// `x Wᵀ + b (+ residual)` for `x` [.., in], `w` [out, in], `b` [out] and a residual of the
/// output's shape and `x`'s dtype, rounded once to that dtype.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inp = *dims.last().expect("Linear input has a last dimension");
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let out_dim = w.dim(0)?;
    let residual = match residual {
        Some(r) => {
            if r.elem_count() != rows * out_dim || r.dtype() != x.dtype() {
                candle_core::bail!(
                    "residual {:?} {:?} does not match the output [{rows}, {out_dim}] {:?}",
                    r.dims(),
                    r.dtype(),
                    x.dtype()
                );
            }
            Some(r.reshape((rows, out_dim))?.contiguous()?)
        }
        None => None,
    };
    let y = x.reshape((rows, inp))?.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &b.contiguous()?,
        &LinearEpilogue { residual },
    )?;
    let mut out = dims;
    *out.last_mut().expect("non-empty") = out_dim;
    y.reshape(out)
}

/// The op: inputs `x` [rows, in], `w` [out, in], `b` [out]; the residual [rows, out] rides along.
struct LinearEpilogue {
    residual: Option<Tensor>,
}

impl LinearEpilogue {
    fn shapes(x: &Layout, w: &Layout, b: &Layout) -> Result<(usize, usize, usize)> {
        let (rows, inp) = x.shape().dims2()?;
        let (out, w_in) = w.shape().dims2()?;
        if w_in != inp || b.dims() != [out] {
            candle_core::bail!(
                "linear: x [{rows}, {inp}], weight {:?}, bias {:?}",
                w.dims(),
                b.dims()
            );
        }
        Ok((rows, inp, out))
    }
}

/// A contiguous f32/bf16/f16 input as an f32 CPU tensor.
fn cpu_tensor(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    Tensor::from_vec(super::fused_ops::to_f32(s, l)?, l.shape(), &Device::Cpu)
}

impl candle_core::CustomOp3 for LinearEpilogue {
    fn name(&self) -> &'static str {
        "gapprobe-linear-epilogue"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, _, out) = Self::shapes(xl, wl, bl)?;
        let y = cpu_tensor(x, xl)?
            .matmul(&cpu_tensor(w, wl)?.t()?)?
            .broadcast_add(&cpu_tensor(b, bl)?)?;
        let y = match &self.residual {
            Some(r) => (y + r.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)?,
            None => y,
        };
        let v: Vec<f32> = y.flatten_all()?.to_vec1()?;
        Ok((
            super::fused_ops::from_f32(v, x.dtype())?,
            Shape::from((rows, out)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, inp, out) = Self::shapes(xl, wl, bl)?;
        let guard;
        let residual = match &self.residual {
            Some(r) => {
                guard = r.storage_and_layout();
                match &*guard.0 {
                    candle_core::Storage::Cuda(s) => Some((s, guard.1)),
                    _ => candle_core::bail!("linear op: the residual is not on the GPU"),
                }
            }
            None => None,
        };
        let storage =
            super::lt_cuda::linear((x, xl), (w, wl), (b, bl), residual, (rows, inp, out))?;
        Ok((storage, Shape::from((rows, out))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fused::tests::max_abs_diff;
    use super::*;

    /// The op equals candle's Linear plus the residual, in f32; in bf16 it rounds once, so it is
    /// within half a bf16 ulp of the f32 result on the same (bf16) inputs.
    #[test]
    fn epilogue_equals_linear_plus_residual() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 11), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev).unwrap();
        let lin = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let plain = candle_core::Module::forward(&lin, &x).unwrap();
        let got = linear(&x, &w, &b, None).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5]);
        assert!(max_abs_diff(&got, &plain) < 1e-5);
        let got = linear(&x, &w, &b, Some(&r)).unwrap();
        assert!(max_abs_diff(&got, &(&plain + &r).unwrap()) < 1e-5);
        let h = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let want = (candle_core::Module::forward(
            &candle_nn::Linear::new(
                h(&w).to_dtype(DType::F32).unwrap(),
                Some(h(&b).to_dtype(DType::F32).unwrap()),
            ),
            &h(&x).to_dtype(DType::F32).unwrap(),
        )
        .unwrap()
            + h(&r).to_dtype(DType::F32).unwrap())
        .unwrap();
        let once = linear(&h(&x), &h(&w), &h(&b), Some(&h(&r))).unwrap();
        assert_eq!(once.dtype(), DType::BF16);
        let err = max_abs_diff(&once.to_dtype(DType::F32).unwrap(), &want);
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // One rounding to bf16 (8 significant bits): at most half an ulp of the largest value.
        assert!(
            err <= scale / 256.0,
            "bf16 epilogue off by {err} at scale {scale}"
        );
        // A residual of the wrong shape or dtype is an error, not a broadcast.
        assert!(linear(&x, &w, &b, Some(&r.narrow(2, 0, 4).unwrap())).is_err());
        assert!(linear(&x, &w, &b, Some(&h(&r))).is_err());
    }
}
