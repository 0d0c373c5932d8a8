//! Batched feature extraction: images are decoded and preprocessed on CPU threads one batch ahead
//! of the model (bounded queue), every requested feature point is read from one forward pass.

use crate::batching::{self, BatchSize, Workload};
use crate::decode::{decode_planes, decode_planes_into, decode_pool};
use crate::featurepoint::{FeaturePoint, LlmRead};
use crate::models::{planes, LanguageModel, VisionLanguageModel};
use crate::preprocess::PreprocessConfig;
use crate::upload::Uploader;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use indicatif::ProgressBar;
use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};
use tracing::info;

static FORWARD_PASSES: AtomicU64 = AtomicU64::new(0);

/// Number of encoder forward passes (batches) run by this process so far.
pub fn forward_passes() -> u64 {
    FORWARD_PASSES.load(Ordering::Relaxed)
}

/// How to run an extraction.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Images per forward pass, or `auto` (from free GPU memory; see [`crate::batching`]).
    pub batch_size: BatchSize,
    pub device: Device,
    pub dtype: DType,
    /// Keep the residual stream in f32 around bf16/f16 layers (`Some(true)`), in the layers'
    /// dtype (`Some(false)`), or as [`crate::models::fused::RESIDUAL_ENV`] and the default say
    /// (`None`: f32 around bf16, f16 around f16).
    pub f32_residual: Option<bool>,
    /// The language model's prompt for `llm.*` points, with `<image>` where the image (or the
    /// text standing for it) goes; part of those points' cache key.
    pub prompt: String,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            batch_size: BatchSize::Fixed(32),
            device: Device::Cpu,
            dtype: DType::F32,
            f32_residual: None,
            prompt: crate::models::DEFAULT_PROMPT.to_string(),
        }
    }
}

/// Runs `model` over `paths` and returns one array per feature point: [N, D] for pooled points,
/// [N, T, D] for `.none`. `texts` (one per path) feed `llm.text.*` points; empty without them.
/// `progress` is advanced by one per image.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    model: &VisionLanguageModel,
    pre: &PreprocessConfig,
    paths: &[PathBuf],
    texts: &[String],
    points: &[FeaturePoint],
    opts: &ExtractOptions,
    progress: &ProgressBar,
) -> Result<Vec<ArrayD<f32>>> {
    let mut outputs: Vec<Vec<f32>> = vec![Vec::new(); points.len()];
    let mut shapes: Vec<Vec<usize>> = vec![Vec::new(); points.len()];
    extract_batches(
        model,
        pre,
        paths,
        texts,
        points,
        opts,
        progress,
        |_, feats| {
            for (i, f) in feats.into_iter().enumerate() {
                if shapes[i].is_empty() {
                    shapes[i] = f.shape()[1..].to_vec();
                }
                outputs[i].extend(f.iter().copied());
            }
            Ok(())
        },
    )?;
    outputs
        .into_iter()
        .zip(shapes)
        .map(|(data, inner)| {
            let mut shape = vec![paths.len()];
            shape.extend(inner);
            Ok(ArrayD::from_shape_vec(IxDyn(&shape), data)?)
        })
        .collect()
}

/// Runs `model` over `paths` in batches of `opts.batch_size` and hands each batch to
/// `on_batch(first row, one array per feature point)` as soon as it is computed, so callers can
/// write results incrementally. `on_batch` runs on a thread of its own, one batch behind the
/// model: writing a batch overlaps computing the next one. When the model fails, every batch
/// computed before is still handed over before the error returns; when `on_batch` fails, the
/// model stops and its error is returned. Batches are `paths[0..B]`, `paths[B..2B]`, …: to resume an
/// interrupted run identically, pass the remaining paths starting at a batch boundary.
/// `llm.*` points run the language model ([`VisionLanguageModel::language`]) after the vision
/// pass; `llm.text.*` points read `texts[i]` (one per path) and need no pixels: when every point
/// is a text point, no image is decoded.
#[allow(clippy::too_many_arguments)]
pub fn extract_batches(
    model: &VisionLanguageModel,
    pre: &PreprocessConfig,
    paths: &[PathBuf],
    texts: &[String],
    points: &[FeaturePoint],
    opts: &ExtractOptions,
    progress: &ProgressBar,
    mut on_batch: impl FnMut(usize, Vec<ArrayD<f32>>) -> Result<()> + Send,
) -> Result<()> {
    if points.is_empty() {
        bail!("no feature point requested");
    }
    if points
        .iter()
        .any(|p| matches!(p, FeaturePoint::Projector { .. }))
        && model.projector.is_none()
    {
        bail!("projector features requested but this checkpoint has no projector (it is not a LLaVA checkpoint)");
    }
    for p in points {
        model.check_point(p)?;
    }
    if points.iter().any(FeaturePoint::is_text) && texts.len() != paths.len() {
        bail!(
            "llm.text points need one text per image: {} texts for {} images",
            texts.len(),
            paths.len()
        );
    }
    let reads = Reads::plan(model, points)?;
    let needs_pixels = reads.needs_pixels;
    let (h, w) = pre.output_size();
    // Tokenising every text to size the language model's sequences costs a pass over them:
    // only when `auto` needs it, or to explain an out-of-memory failure.
    let workload = || Workload::of(model, points, texts, (h, w));
    let batch =
        batching::resolve(opts.batch_size, model, workload, &opts.device, opts.dtype)?.max(1);

    let started = Instant::now();
    let per_image = 3 * h as usize * w as usize;
    let mut uploader = Uploader::new(
        &opts.device,
        if needs_pixels {
            batch.min(paths.len()) * per_image
        } else {
            0
        },
    )?;
    let decoders = decode_pool(&opts.device)?;
    let uploader_pinned = uploader.is_pinned();
    let decode_threads = decoders
        .as_ref()
        .map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
    let stats = std::thread::scope(|scope| -> Result<Timings> {
        // 8-bit planes cross to the device; the level table turns them into model inputs there.
        // The decoding thread also uploads them (through a pinned buffer on CUDA): candle's CUDA
        // device issues work on each host thread's own default stream, so the copy overlaps the
        // previous batch's compute on this thread's stream. It waits for its copy to land before
        // handing the tensor over.
        let (tx, rx) = sync_channel::<Result<Tensor>>(2);
        let levels = Tensor::from_vec(pre.level_table(), 3 * 256, &opts.device)?;
        let device = &opts.device;
        let decoders = decoders.as_ref();
        scope.spawn(move || {
            for chunk in paths.chunks(batch) {
                if !needs_pixels {
                    // Text points only: nothing to decode (the tensor is never read).
                    let none = Tensor::zeros(1, DType::U8, device).map_err(anyhow::Error::from);
                    if tx.send(none).is_err() {
                        return;
                    }
                    continue;
                }
                let shape = (chunk.len(), 3, h as usize, w as usize);
                let pixels = uploader.upload(shape, |buf| match decoders {
                    Some(pool) => pool.install(|| decode_planes_into(chunk, pre, buf)),
                    None => decode_planes_into(chunk, pre, buf),
                });
                if tx.send(pixels).is_err() {
                    return;
                }
            }
        });
        // The cache writer runs one batch behind the device, so the device does not wait for
        // a write (only for the writer to take the batch when writing is the slower side).
        // It receives host tensors and also copies them into arrays.
        let (done_tx, done_rx) = sync_channel::<(usize, Vec<Tensor>)>(1);
        let writer = scope.spawn(move || -> Result<Duration> {
            let mut busy = Duration::ZERO;
            for (row0, feats) in done_rx {
                let n = feats.first().map_or(0, |f| f.dims()[0]);
                let t0 = Instant::now();
                let feats = feats
                    .into_iter()
                    .map(|f| {
                        let shape = f.dims().to_vec();
                        let data = f.flatten_all()?.to_vec1::<f32>()?;
                        Ok(ArrayD::from_shape_vec(IxDyn(&shape), data)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                on_batch(row0, feats)?;
                busy += t0.elapsed();
                progress.inc(n as u64);
            }
            Ok(busy)
        });
        // Where the time goes: waiting for decoded images vs. the device's work (logged at the end).
        let mut t = Timings {
            setup: started.elapsed(),
            ..Timings::default()
        };
        let computed = (|| -> Result<()> {
            let mut row0 = 0;
            let mut chunks = paths.chunks(batch);
            loop {
                let t0 = Instant::now();
                let Some(chunk) = chunks.next() else { break };
                let Ok(pixels) = rx.recv() else { break };
                let t1 = Instant::now();
                if row0 == 0 {
                    t.first_wait = t1 - t0;
                } else {
                    t.waited += t1 - t0;
                }
                let n = chunk.len();
                let feats = (|| -> Result<Vec<Tensor>> {
                    let texts = texts.get(row0..row0 + n).unwrap_or_default();
                    let read = reads.queue(&pixels?, &levels, opts.dtype, texts)?;
                    // Until here the host only queued work (on a GPU); reading back waits for it.
                    t.issued += t1.elapsed();
                    // Reading back waits for this thread's stream, so it stays on this thread;
                    // the copy into an array is the writer's.
                    read.into_iter()
                        .map(|f| Ok(f.to_dtype(DType::F32)?.to_device(&Device::Cpu)?))
                        .collect()
                })()
                .map_err(|e| {
                    let work = workload().unwrap_or(Workload::images((h, w)));
                    batching::explain_oom(e, n, model, &work, &opts.device, opts.dtype)
                })?;
                t.computed += t1.elapsed();
                let t2 = Instant::now();
                let taken = done_tx.send((row0, feats)).is_ok();
                t.handing += t2.elapsed();
                if !taken {
                    // The writer stopped on an error, returned below.
                    break;
                }
                row0 += n;
            }
            t.images = row0;
            Ok(())
        })();
        drop(rx);
        drop(done_tx);
        // The writer first finishes every batch computed before a failure: nothing computed is
        // lost. Its error comes first, as it concerns earlier rows.
        t.writing = match writer.join() {
            Ok(written) => written?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        t.loop_end = Some(Instant::now());
        computed?;
        Ok(t)
    })?;
    // What follows the last batch: joining the decoding thread (which gives the staging buffer
    // back) and stopping the decoding pool.
    drop(decoders);
    let teardown = stats.loop_end.map_or(Duration::ZERO, |e| e.elapsed());
    info!(
        "extracted {} images in batches of {batch}: {:.3} s setting up, {:.3} s waiting for the \
         first batch's images, {:.3} s waiting for later ones, {:.3} s computing and reading back \
         ({:.3} s of it queueing the work on the host), {:.3} s waiting for the writer to take a \
         batch ({:.3} s writing in all, beside the model's work), {:.3} s finishing; {} upload, {} \
         decoding threads",
        stats.images,
        stats.setup.as_secs_f64(),
        stats.first_wait.as_secs_f64(),
        stats.waited.as_secs_f64(),
        stats.computed.as_secs_f64(),
        stats.issued.as_secs_f64(),
        stats.handing.as_secs_f64(),
        stats.writing.as_secs_f64(),
        teardown.as_secs_f64(),
        if uploader_pinned {
            "pinned"
        } else {
            "pageable"
        },
        decode_threads
    );
    Ok(())
}

/// What each forward pass reads: every point's hidden state, and the language model's reads
/// (point index, hidden state, read) for the image and the text arm.
struct Reads<'a> {
    model: &'a VisionLanguageModel,
    points: &'a [FeaturePoint],
    layers: Vec<usize>,
    image: Vec<(usize, usize, LlmRead)>,
    text: Vec<(usize, usize, LlmRead)>,
    /// False when every point is a text point: no image is decoded.
    needs_pixels: bool,
}

impl<'a> Reads<'a> {
    fn plan(model: &'a VisionLanguageModel, points: &'a [FeaturePoint]) -> Result<Self> {
        let layers = points
            .iter()
            .map(|p| model.point_layer(p))
            .collect::<Result<_>>()?;
        let llm_reads = |input_is_text: bool| -> Result<Vec<(usize, usize, LlmRead)>> {
            points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_llm() && p.is_text() == input_is_text)
                .map(|(i, p)| model.llm_read(p).map(|(l, r)| (i, l, r)))
                .collect()
        };
        Ok(Reads {
            model,
            points,
            layers,
            image: llm_reads(false)?,
            text: llm_reads(true)?,
            needs_pixels: points.iter().any(|p| !p.is_text()),
        })
    }

    /// Queues one batch's work: `pixels` (8-bit planes, looked up in `levels`) through the
    /// model, `texts` (one per image) through the text arm; one tensor per point, on the device.
    fn queue(
        &self,
        pixels: &Tensor,
        levels: &Tensor,
        dtype: DType,
        texts: &[String],
    ) -> Result<Vec<Tensor>> {
        let model = self.model;
        let mut read: Vec<Option<Tensor>> = vec![None; self.points.len()];
        if self.needs_pixels {
            let pixels = planes::planes_to_input(pixels, levels, dtype)?;
            let states = model.vision.hidden_states(&pixels, &self.layers)?;
            FORWARD_PASSES.fetch_add(1, Ordering::Relaxed);
            for (i, (point, state)) in self.points.iter().zip(&states).enumerate() {
                if !point.is_llm() {
                    read[i] = Some(read_point(model, point, state)?);
                }
            }
            if let Some(&(i, _, _)) = self.image.first() {
                let tokens = read_point(
                    model,
                    &FeaturePoint::Projector {
                        pool: crate::featurepoint::Pool::None,
                    },
                    &states[i],
                )?;
                read_llm(model, &self.image, &mut read, |lm, r| {
                    lm.image_features(&tokens, r)
                })?;
            }
        }
        if !self.text.is_empty() {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            read_llm(model, &self.text, &mut read, |lm, r| {
                lm.text_features(&texts, r)
            })?;
        }
        Ok(read
            .into_iter()
            .map(|slot| slot.expect("every point is read"))
            .collect())
    }
}

/// Where an extraction's time went, for its closing log line.
#[derive(Default)]
struct Timings {
    images: usize,
    /// Staging buffer, decoding threads, level table: before the first image is decoded.
    setup: Duration,
    /// Waiting for the first batch (its decoding, with nothing yet for the device to do).
    first_wait: Duration,
    /// Waiting for later batches (decoding slower than the device).
    waited: Duration,
    computed: Duration,
    /// The part of `computed` the host spent queueing work (the rest is waiting for the device).
    issued: Duration,
    /// Waiting for the writer to take a computed batch (writing slower than the device).
    handing: Duration,
    /// The writer's time copying batches into arrays and in `on_batch`, beside the model's work.
    writing: Duration,
    loop_end: Option<Instant>,
}

/// Runs one arm of the language model (`run`, once for all its points) and puts each point's
/// feature in `read` at the point's index; `reads` are (point index, hidden state, read).
fn read_llm(
    model: &VisionLanguageModel,
    reads: &[(usize, usize, LlmRead)],
    read: &mut [Option<Tensor>],
    run: impl FnOnce(&LanguageModel, &[(usize, LlmRead)]) -> Result<Vec<Tensor>>,
) -> Result<()> {
    let lm = model
        .language
        .as_ref()
        .context("language model not loaded")?;
    let layers: Vec<(usize, LlmRead)> = reads.iter().map(|&(_, l, r)| (l, r)).collect();
    for (f, &(i, _, _)) in run(lm, &layers)?.into_iter().zip(reads) {
        read[i] = Some(f);
    }
    Ok(())
}

fn read_point(model: &VisionLanguageModel, point: &FeaturePoint, state: &Tensor) -> Result<Tensor> {
    model.read_point(point, state)
}

/// What LLaVA's language model is given for each image: `paths` decoded and preprocessed on
/// rayon's threads, through the vision tower to the projector, [B, N, D] on `device` (the
/// tokens that stand where the prompt's `<image>` is).
pub fn image_tokens(
    model: &VisionLanguageModel,
    pre: &PreprocessConfig,
    paths: &[PathBuf],
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    if model.projector.is_none() {
        bail!("this checkpoint has no projector: its language model cannot be shown an image");
    }
    let (h, w) = pre.output_size();
    let planes = decode_planes(paths, pre)?;
    let planes = Tensor::from_vec(planes, (paths.len(), 3, h as usize, w as usize), device)?;
    let levels = Tensor::from_vec(pre.level_table(), 3 * 256, device)?;
    let pixels = planes::planes_to_input(&planes, &levels, dtype)?;
    let states = model
        .vision
        .hidden_states(&pixels, &[model.projector_layer])?;
    FORWARD_PASSES.fetch_add(1, Ordering::Relaxed);
    let tokens = FeaturePoint::Projector {
        pool: crate::featurepoint::Pool::None,
    };
    read_point(model, &tokens, &states[0])
}

#[cfg(test)]
mod tests;
