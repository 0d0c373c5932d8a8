//! `--device` and `--dtype` values.

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use gapprobe_features::models::fused;

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal: usize = cuda
                .strip_prefix("cuda:")
                .map(str::parse)
                .transpose()?
                .unwrap_or(0);
            if !cfg!(feature = "cuda") {
                bail!("device '{s}': this gapprobe was built without CUDA; rebuild with `cargo build --release --features cuda`");
            }
            let device = Device::new_cuda(ordinal)?;
            // Keep freed activations in the pool between batches (see `cuda_pool`): a speed
            // setting, so a driver that refuses it leaves the device usable at CUDA's default.
            match gapprobe_features::cuda_pool::retain_freed_memory(&device) {
                Ok(kept) => tracing::debug!(
                    kept,
                    "CUDA memory pool keeps freed memory across synchronisations"
                ),
                Err(e) => tracing::warn!("CUDA memory pool left at its default: {e:#}"),
            }
            Ok(device)
        }
        _ => bail!("unknown device '{s}': expected cpu, cuda or cuda:N"),
    }
}

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => bail!("unknown dtype '{s}': expected f32, bf16 or f16"),
    }
}

/// Refuses combinations that would give poor numbers: bf16 on the CPU with candle's own ops,
/// which compute softmax, LayerNorm and activations in bf16 (relative error 0.16 at the
/// benchmark's projector output). With the fused ops' CPU references (`GAPPROBE_KERNELS=on`),
/// which widen to f32 as the CUDA kernels do, bf16 on the CPU runs (slowly: each matmul widens
/// its bf16 inputs) and reproduces the GPU's bf16 error.
pub fn check_dtype_on(device: &Device, dtype: DType) -> Result<()> {
    if device.is_cpu() && dtype == DType::BF16 && !fused::enabled_for(device) {
        bail!(
            "bf16 on the CPU runs candle's ops in bf16 (relative error about 0.16 on CLIP-L): use \
             --dtype f32 or f16 there, --device cuda, or GAPPROBE_KERNELS=on for the fused ops' \
             f32-accumulating references (as on CUDA; slow)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_on_the_cpu_needs_the_reference_ops() {
        let err = fused::with_mode(false, || check_dtype_on(&Device::Cpu, DType::BF16))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--dtype f32"), "{err}");
        assert!(err.contains("GAPPROBE_KERNELS=on"), "{err}");
        assert!(fused::with_mode(true, || check_dtype_on(&Device::Cpu, DType::BF16)).is_ok());
        assert!(check_dtype_on(&Device::Cpu, DType::F32).is_ok());
        assert!(parse_dtype("fp8").is_err());
    }
}
