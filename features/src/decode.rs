//! Decoding and preprocessing images on CPU threads into 8-bit CHW planes, for extraction's
//! producer thread (and `gapprobe bench --preprocess-only`).

use crate::preprocess::{load_rgb, PreprocessConfig};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rayon::prelude::*;
use std::path::PathBuf;

/// `GAPPROBE_DECODE_THREADS=N`: decode on N threads when extracting on a GPU (default: every
/// core but two, which stay free for the thread driving the GPU and the uploading thread, as
/// PyTorch's DataLoader leaves the main process cores of its own).
pub const DECODE_THREADS_ENV: &str = "GAPPROBE_DECODE_THREADS";

/// The decoding thread pool for extraction on `device`: on a GPU, every core but two (or
/// [`DECODE_THREADS_ENV`]); on the CPU none (rayon's global pool, shared with the model's work).
pub(crate) fn decode_pool(device: &Device) -> Result<Option<rayon::ThreadPool>> {
    if device.is_cpu() {
        return Ok(None);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match std::env::var(DECODE_THREADS_ENV) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{DECODE_THREADS_ENV}={v:?}: expected a thread count"))?,
        Err(_) => cores.saturating_sub(2).max(1),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("gapprobe-decode-{i}"))
        .build()?;
    Ok(Some(pool))
}

/// Decodes and preprocesses `paths` on rayon's threads into one buffer of CHW 8-bit planes,
/// image after image (each thread writes its images' slices: no concatenation pass after).
pub fn decode_planes(paths: &[PathBuf], pre: &PreprocessConfig) -> Result<Vec<u8>> {
    let (h, w) = pre.output_size();
    let mut out = vec![0u8; paths.len() * 3 * h as usize * w as usize];
    decode_planes_into(paths, pre, &mut out)?;
    Ok(out)
}

/// [`decode_planes`] into `out`, which holds exactly `paths.len()` images' planes.
pub fn decode_planes_into(paths: &[PathBuf], pre: &PreprocessConfig, out: &mut [u8]) -> Result<()> {
    let (h, w) = pre.output_size();
    let per_image = 3 * h as usize * w as usize;
    anyhow::ensure!(
        out.len() == paths.len() * per_image,
        "a buffer of {} bytes for {} images of {per_image} bytes",
        out.len(),
        paths.len()
    );
    out.par_chunks_mut(per_image)
        .zip(paths.par_iter())
        .try_for_each(|(dst, p)| -> Result<()> {
            let planes = load_rgb(p).and_then(|img| {
                pre.apply_u8(&img)
                    .with_context(|| format!("preprocessing {}", p.display()))
            })?;
            if planes.len() != dst.len() {
                bail!(
                    "{}: preprocessing gave {} values, expected {}",
                    p.display(),
                    planes.len(),
                    dst.len()
                );
            }
            dst.copy_from_slice(&planes);
            Ok(())
        })
}
