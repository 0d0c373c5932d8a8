//! CUDA's stream-ordered allocator: keep freed memory in the device's pool across
//! synchronisations instead of handing it back to the driver at each one.
//!
//! candle allocates through cudarc's `cuMemAllocAsync`, from the device's default memory pool,
//! whose release threshold is 0: at every synchronisation (extraction reads each batch's
//! features back, the benchmark waits for each batch) the pool returns the batch's freed
//! activations, gigabytes at batch 256, and the next batch maps them again while the GPU waits for
//! the host. PyTorch's caching allocator keeps them; raising the threshold to the maximum makes the
//! pool do the same. [`trim`] hands the unused memory back when the free-memory figure has to be
//! true (before the batch-size planner reads it).

use anyhow::Result;
use candle_core::Device;

/// `GAPPROBE_POOL_RETAIN=0` keeps CUDA's default (release at every synchronisation), for A/B runs.
pub const RETAIN_ENV: &str = "GAPPROBE_POOL_RETAIN";

/// Whether [`retain_freed_memory`] is on: unless [`RETAIN_ENV`] is `0`.
pub fn retain_enabled() -> bool {
    std::env::var(RETAIN_ENV).map_or(true, |v| v.trim() != "0")
}

/// Raises the release threshold of `device`'s default memory pool to the maximum, so freed
/// blocks stay in the pool for the next batch. Returns whether it did (false on the CPU, when
/// [`RETAIN_ENV`] is `0`, or when the driver has no memory pools).
pub fn retain_freed_memory(device: &Device) -> Result<bool> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) if retain_enabled() => {
            let Some(pool) = default_pool(d)? else {
                return Ok(false);
            };
            let mut threshold = u64::MAX;
            // SAFETY: `pool` is the device's default pool (owned by the driver, never destroyed);
            // the attribute's value type is cuuint64_t.
            unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut threshold as *mut u64).cast(),
                )
                .result()?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Waits for `device`'s work and returns the unused memory its default pool holds to the driver,
/// so that the driver's free-memory figure counts it. A no-op on the CPU.
pub fn trim(device: &Device) -> Result<()> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            device.synchronize()?;
            if let Some(pool) = default_pool(d)? {
                // SAFETY: as in `retain_freed_memory`; trimming keeps every block in use.
                unsafe { sys::cuMemPoolTrimTo(pool, 0).result()? };
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Bytes the device's default pool holds from the driver now (in use or kept), `None` on the CPU.
pub fn reserved_bytes(device: &Device) -> Result<Option<u64>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let Some(pool) = default_pool(d)? else {
                return Ok(None);
            };
            let mut bytes = 0u64;
            // SAFETY: as in `retain_freed_memory`; the attribute's value type is cuuint64_t.
            unsafe {
                sys::cuMemPoolGetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                    (&mut bytes as *mut u64).cast(),
                )
                .result()?;
            }
            Ok(Some(bytes))
        }
        _ => Ok(None),
    }
}

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::sys;

/// The device's default memory pool, or `None` when the driver does not support memory pools.
#[cfg(feature = "cuda")]
fn default_pool(d: &candle_core::CudaDevice) -> Result<Option<sys::CUmemoryPool>> {
    let ctx = d.cuda_stream().context().clone();
    let dev = ctx.cu_device();
    let mut supported = 0i32;
    // SAFETY: plain attribute queries on a device the context holds open.
    unsafe {
        sys::cuDeviceGetAttribute(
            &mut supported,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED,
            dev,
        )
        .result()?;
        if supported == 0 {
            return Ok(None);
        }
        let mut pool = std::mem::MaybeUninit::uninit();
        sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), dev).result()?;
        Ok(Some(pool.assume_init()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_pool_to_keep_or_trim() {
        assert!(!retain_freed_memory(&Device::Cpu).unwrap());
        trim(&Device::Cpu).unwrap();
        assert_eq!(reserved_bytes(&Device::Cpu).unwrap(), None);
    }

    /// On a GPU: a freed 256 MiB block stays in the pool across a synchronisation when retained,
    /// and `trim` hands it back.
    #[cfg(feature = "cuda")]
    #[test]
    fn a_freed_block_outlives_the_synchronisation_until_trimmed() {
        let Ok(dev) = Device::new_cuda(0) else {
            eprintln!("no CUDA device: skipped");
            return;
        };
        std::env::remove_var(RETAIN_ENV);
        assert!(retain_freed_memory(&dev).unwrap());
        let before = reserved_bytes(&dev).unwrap().unwrap();
        let block = candle_core::Tensor::zeros(64 << 20, candle_core::DType::F32, &dev).unwrap();
        drop(block);
        dev.synchronize().unwrap();
        let kept = reserved_bytes(&dev).unwrap().unwrap();
        assert!(kept >= before + (256 << 20), "{before} -> {kept}");
        trim(&dev).unwrap();
        assert!(reserved_bytes(&dev).unwrap().unwrap() < kept);
    }
}
