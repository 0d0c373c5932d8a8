//! `gapprobe bench`'s measurements from JPEG files: end to end through the extraction pipeline
//! (`--e2e-images`), and decoding and preprocessing alone (`--preprocess-images`).

use crate::ui::Ui;
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use gapprobe_features::batching::BatchSize;
use gapprobe_features::decode::decode_planes;
use gapprobe_features::extract::{extract, ExtractOptions};
use gapprobe_features::models::VisionLanguageModel;
use gapprobe_features::preprocess::PreprocessConfig;
use gapprobe_features::FeaturePoint;
use std::path::PathBuf;
use std::time::Instant;

/// The end-to-end measurement's settings: `images` JPEGs in batches of `batch`, at the model's
/// `image_size`, and the model's GFLOP per image for the TFLOP/s column.
pub struct E2eRun {
    pub images: usize,
    pub batch: usize,
    pub image_size: u32,
    pub gflop: f64,
}

impl E2eRun {
    /// Writes the JPEGs, extracts `projector.mean` from one batch (warm-up) and then from all of
    /// them, as `extract` does, and prints the timed pass's rate.
    pub fn measure(
        &self,
        model: &VisionLanguageModel,
        device: &Device,
        dtype: DType,
        dtype_name: &str,
        ui: &Ui,
    ) -> Result<()> {
        let dir = std::env::temp_dir().join(format!("gapprobe-bench-jpegs-{}", std::process::id()));
        let paths = write_jpegs(&dir, self.images)?;
        let pre = PreprocessConfig::clip(self.image_size);
        // Pooled on the device, as `extract` stores it: the host receives [B, D], not [B, T, D].
        let points: Vec<FeaturePoint> = vec!["projector.mean".parse()?];
        let eo = ExtractOptions {
            batch_size: BatchSize::Fixed(self.batch),
            device: device.clone(),
            dtype,
            ..Default::default()
        };
        let bar = ui.bar(paths.len() as u64, "bench e2e");
        // Warm-up pass over one batch, then the timed pass over all images.
        extract(
            model,
            &pre,
            &paths[..self.batch.min(paths.len())],
            &[],
            &points,
            &eo,
            &indicatif::ProgressBar::hidden(),
        )?;
        if device.is_cuda() {
            // The timed pass should find the warm-up's page-locked buffer (no pinning in it).
            println!(
                "{:<10} {:<6} page-locked staging buffer kept from the warm-up pass: {}",
                "upload",
                dtype_name,
                gapprobe_features::upload::spare_staging_for(device)
            );
        }
        let t0 = Instant::now();
        extract(model, &pre, &paths, &[], &points, &eo, &bar)?;
        device.synchronize()?;
        let s = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        std::fs::remove_dir_all(&dir).ok();
        let ips = paths.len() as f64 / s;
        println!(
            "{:<10} {:<6} {:>6} {:>10.2} {:>10.1} {:>9.1}",
            "e2e-jpeg",
            dtype_name,
            self.batch,
            s * 1e3 / (paths.len() as f64 / self.batch as f64),
            ips,
            ips * self.gflop / 1e3
        );
        Ok(())
    }
}

/// Decoding and preprocessing alone, as `extract` does it (batches of `batch`, each decoded into
/// one buffer) but on all of rayon's threads (extraction on a GPU leaves two cores free):
/// images/s overall and per thread.
pub fn preprocess_rate(n: usize, batch: usize, image_size: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("gapprobe-bench-pre-{}", std::process::id()));
    let paths = write_jpegs(&dir, n)?;
    let pre = PreprocessConfig::clip(image_size);
    decode_planes(&paths[..batch.min(n)], &pre)?;
    let t0 = Instant::now();
    for chunk in paths.chunks(batch.max(1)) {
        decode_planes(chunk, &pre)?;
    }
    let s = t0.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir).ok();
    let threads = rayon::current_num_threads();
    let ips = n as f64 / s;
    println!(
        "{:<10} {:>6} images in {:.2} s: {:.1} images/s on {threads} threads ({:.1} per thread), \
         decode + resize + crop to 8-bit planes",
        "preprocess",
        n,
        s,
        ips,
        ips / threads as f64
    );
    Ok(())
}

/// Writes `n` CUB-sized (500×375) JPEGs with smooth colour fields and noise.
fn write_jpegs(dir: &std::path::Path, n: usize) -> Result<Vec<PathBuf>> {
    use rayon::prelude::*;
    std::fs::create_dir_all(dir)?;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let img = image::RgbImage::from_fn(500, 375, |x, y| {
                let v = (x as usize * 7 + y as usize * 13 + i * 31) as u32;
                image::Rgb([
                    (x + i as u32) as u8,
                    (y * 2) as u8,
                    ((v ^ (v >> 3)) & 0xff) as u8,
                ])
            });
            let p = dir.join(format!("{i:05}.jpg"));
            img.save(&p)
                .with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        })
        .collect()
}
