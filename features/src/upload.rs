//! Decoded images onto the device: a batch of 8-bit planes is written straight into a staging
//! buffer and copied from there. On CUDA the buffer is page-locked (pinned) host memory, so the
//! copy is one DMA transfer at the bus's rate instead of the driver's staged copy from pageable
//! memory (12.5 ms per batch of 256 CLIP-336 images on an H200 machine, docs/performance.md),
//! and the buffer is allocated once, not once per batch: when an extraction ends its buffer is
//! kept for the next one on the same device (pinning and unpinning 86 MB costs tens of
//! milliseconds each, at every extraction's start and end), unless `GAPPROBE_POOL_RETAIN=0`.
//!
//! The copy runs on the calling thread's stream (candle's CUDA device uses per-thread default
//! streams), so on the decoding thread it overlaps the previous batch's compute; [`Uploader::upload`]
//! waits for it to land before it returns the tensor, so the tensor is safe on any thread.

use anyhow::Result;
use candle_core::{Device, Shape, Tensor};

/// `GAPPROBE_PINNED=0` uploads from ordinary (pageable) host memory, for A/B runs.
pub const PINNED_ENV: &str = "GAPPROBE_PINNED";

/// Whether CUDA uploads go through page-locked memory: unless [`PINNED_ENV`] is `0`.
pub fn pinned_enabled() -> bool {
    std::env::var(PINNED_ENV).map_or(true, |v| v.trim() != "0")
}

/// A reusable staging buffer for uploads of up to `capacity` bytes to one device.
pub struct Uploader {
    device: Device,
    capacity: usize,
    staging: Staging,
}

enum Staging {
    /// A fresh host vector per batch, handed to candle (CPU, or CUDA with pinning off).
    Pageable,
    /// One page-locked buffer, reused for every batch.
    #[cfg(feature = "cuda")]
    Pinned(candle_core::cuda_backend::cudarc::driver::PinnedHostSlice<u8>),
}

impl Uploader {
    /// Stages uploads of up to `capacity` bytes for `device`. On CUDA this allocates the pinned
    /// buffer (unless [`PINNED_ENV`] is `0`); should the driver refuse page-locked memory, it
    /// falls back to pageable uploads with a warning.
    pub fn new(device: &Device, capacity: usize) -> Result<Self> {
        let staging = match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) if pinned_enabled() && capacity > 0 => {
                match spare::take(device, capacity) {
                    Some(p) => Staging::Pinned(p),
                    // SAFETY: the buffer is written (by the decoder) before any byte is copied out.
                    None => match unsafe {
                        d.cuda_stream()
                            .context()
                            .alloc_pinned_with_flags::<u8>(capacity, 0)
                    } {
                        Ok(p) => Staging::Pinned(p),
                        Err(e) => {
                            tracing::warn!(
                                "no page-locked staging buffer of {capacity} bytes ({e:?}); \
                                 uploading from pageable memory"
                            );
                            Staging::Pageable
                        }
                    },
                }
            }
            _ => Staging::Pageable,
        };
        Ok(Self {
            device: device.clone(),
            capacity,
            staging,
        })
    }

    /// Whether uploads go through a page-locked buffer.
    pub fn is_pinned(&self) -> bool {
        !matches!(self.staging, Staging::Pageable)
    }

    /// Lets `fill` write `len` bytes (the planes of `shape`, u8) into the staging buffer, copies
    /// them to the device, and returns them as a tensor once the copy has landed.
    pub fn upload(
        &mut self,
        shape: impl Into<Shape>,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let len = shape.elem_count();
        anyhow::ensure!(
            len <= self.capacity,
            "upload of {len} bytes exceeds the {}-byte staging buffer",
            self.capacity
        );
        match &mut self.staging {
            Staging::Pageable => {
                let mut host = vec![0u8; len];
                fill(&mut host)?;
                let t = Tensor::from_vec(host, shape, &self.device)?;
                self.device.synchronize()?;
                Ok(t)
            }
            #[cfg(feature = "cuda")]
            Staging::Pinned(pinned) => {
                use anyhow::Context;
                let Device::Cuda(d) = &self.device else {
                    unreachable!("pinned staging only for CUDA devices")
                };
                // Waits for the previous copy out of the buffer (already done: see below).
                let host = pinned.as_mut_slice().context("staging buffer")?;
                fill(&mut host[..len])?;
                let stream = d.cuda_stream();
                // SAFETY: every byte is written by the copy below before anything reads it.
                let mut dst = unsafe { d.alloc::<u8>(len) }.context("device buffer")?;
                stream
                    .memcpy_htod(&host[..len], &mut dst)
                    .context("copying the planes to the device")?;
                stream.synchronize().context("waiting for the upload")?;
                let storage = candle_core::CudaStorage::wrap_cuda_slice(dst, d.clone());
                Ok(Tensor::from((candle_core::Storage::Cuda(storage), shape)))
            }
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        if let Staging::Pinned(p) = std::mem::replace(&mut self.staging, Staging::Pageable) {
            spare::put(&self.device, p);
        }
    }
}

/// The page-locked buffer the last extraction on a device gave back (one, the latest).
#[cfg(feature = "cuda")]
mod spare {
    use candle_core::cuda_backend::cudarc::driver::PinnedHostSlice;
    use candle_core::Device;
    use std::sync::Mutex;

    static SPARE: Mutex<Option<(Device, PinnedHostSlice<u8>)>> = Mutex::new(None);

    /// The spare buffer if it belongs to `device` and holds `capacity` bytes; a smaller one is
    /// freed (the caller allocates a larger one).
    pub(super) fn take(device: &Device, capacity: usize) -> Option<PinnedHostSlice<u8>> {
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        match spare.take() {
            Some((d, p)) if d.same_device(device) && p.len() >= capacity => Some(p),
            Some(other) => {
                // Another device's buffer stays for that device; a short one is dropped.
                if !other.0.same_device(device) {
                    *spare = Some(other);
                }
                None
            }
            None => None,
        }
    }

    /// Keeps `buffer` for the next extraction on `device` (unless `GAPPROBE_POOL_RETAIN=0`).
    pub(super) fn put(device: &Device, buffer: PinnedHostSlice<u8>) {
        if crate::cuda_pool::retain_enabled() {
            *SPARE.lock().unwrap_or_else(|e| e.into_inner()) = Some((device.clone(), buffer));
        }
    }

    /// Whether a spare buffer is kept for `device`.
    pub fn held_for(device: &Device) -> bool {
        let spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        spare.as_ref().is_some_and(|(d, _)| d.same_device(device))
    }
}

/// Whether a page-locked staging buffer from a finished extraction is kept for `device`'s next
/// one (always false without the `cuda` feature or off CUDA).
pub fn spare_staging_for(device: &Device) -> bool {
    #[cfg(feature = "cuda")]
    return spare::held_for(device);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU the staged bytes arrive as they were written, in the given shape; a batch
    /// larger than the buffer is an error, not a reallocation.
    #[test]
    fn upload_returns_the_written_planes() {
        let mut up = Uploader::new(&Device::Cpu, 24).unwrap();
        assert!(!up.is_pinned());
        let t = up
            .upload((2, 3, 2, 2), |buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = i as u8;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(t.dims(), &[2, 3, 2, 2]);
        let v: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, (0..24).collect::<Vec<u8>>());
        let short = up.upload((1, 3, 2, 2), |buf| {
            buf.fill(7);
            Ok(())
        });
        assert_eq!(
            short
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap(),
            vec![7; 12]
        );
        assert!(up.upload((5, 5), |_| Ok(())).is_err());
        let failed = up.upload((2, 2), |_| anyhow::bail!("corrupt image"));
        assert!(failed.unwrap_err().to_string().contains("corrupt image"));
    }
}
