//! Parity with transformers on tiny random-weight checkpoints made by
//! `tools/make_model_fixtures.py`: preprocessed pixels within 1e-5 of the slow (PIL) image
//! processors, every feature point within 1e-4 (f32, CPU).

use candle_core::{DType, Device, Tensor};
use gapprobe_features::featurepoint::FeaturePoint;
use gapprobe_features::models::{
    add_norm, fused, gemm_epilogue, Checkpoint, Family, VisionLanguageModel,
};
use gapprobe_features::preprocess::load_rgb;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PIXEL_TOL: f32 = 1e-5;
const FEATURE_TOL: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("manifest.json")).unwrap()).unwrap()
}

fn checkpoint(name: &str, entry: &Value) -> Checkpoint {
    let ck = Checkpoint::from_dir(name, &root().join(name)).unwrap();
    match entry.get("tower").and_then(Value::as_str) {
        Some(t) => ck
            .with_tower(Checkpoint::from_dir(t, &root().join(t)).unwrap())
            .unwrap(),
        None => ck,
    }
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join(name).join("expected.safetensors"), &Device::Cpu)
        .unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// JPEG inputs, kept also as PIL's decoded RGB (`decoded/<image>.png`).
const JPEGS: [&str; 2] = ["cmyk", "exif"];

fn image_path(image: &str) -> PathBuf {
    root().join("images").join(if JPEGS.contains(&image) {
        format!("{image}.jpg")
    } else {
        format!("{image}.png")
    })
}

/// Preprocesses `image`; JPEGs from PIL's decoded pixels, so that this checks preprocessing
/// exactly (decoding is checked by `jpeg_decoding_and_orientation_match_pil`).
fn pixels(ck: &Checkpoint, image: &str) -> Tensor {
    let path = if JPEGS.contains(&image) {
        root().join("decoded").join(format!("{image}.png"))
    } else {
        image_path(image)
    };
    let img = load_rgb(&path).unwrap();
    let v = ck.preprocess.apply(&img).unwrap();
    let (h, w) = ck.preprocess.output_size();
    Tensor::from_vec(v, (1, 3, h as usize, w as usize), &Device::Cpu).unwrap()
}

fn images() -> Vec<String> {
    manifest()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn preprocessed_pixels_match_transformers_pil_processors() {
    let m = manifest();
    let mut report = Vec::new();
    for (name, entry) in m["models"].as_object().unwrap() {
        let ck = checkpoint(name, entry);
        let exp = expected(name);
        for image in images() {
            let got = pixels(&ck, &image).squeeze(0).unwrap();
            let err = max_abs(&got, &exp[&format!("pixels/{image}")]);
            report.push((format!("{name}/{image}"), err));
        }
    }
    let lines: Vec<String> = report
        .iter()
        .map(|(k, e)| format!("{k}: {e:.2e}"))
        .collect();
    eprintln!("pixel max abs errors:\n  {}", lines.join("\n  "));
    let bad: Vec<&String> = report
        .iter()
        .filter(|(_, e)| *e > PIXEL_TOL)
        .map(|(k, _)| k)
        .collect();
    assert!(bad.is_empty(), "pixel error above {PIXEL_TOL}: {bad:?}");
}

/// EXIF orientation and CMYK conversion must be right; the JPEG decoder (zune-jpeg) may differ from
/// PIL's libjpeg-turbo by a level or two per channel, so decoded pixels are held to ±3 levels
/// here (a wrong orientation or CMYK inversion would be off by ~100).
#[test]
fn jpeg_decoding_and_orientation_match_pil() {
    for image in JPEGS {
        let ours = load_rgb(&image_path(image)).unwrap();
        let pil = load_rgb(&root().join("decoded").join(format!("{image}.png"))).unwrap();
        assert_eq!(ours.dimensions(), pil.dimensions(), "{image}: orientation");
        let worst = ours
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        eprintln!("{image}: max decoded difference from PIL {worst} levels");
        assert!(
            worst <= 3,
            "{image}: decoded pixels differ from PIL by {worst} levels"
        );
    }
}

#[test]
fn every_feature_point_matches_transformers() {
    check_feature_points(false);
}

/// The same check with the fused ops (packed q|k|v + fused attention, bias+activation and
/// residual passes) that CUDA runs, here through their CPU reference: the model wiring of the
/// fused path is what transformers computes. This is the path without the defaults below: the
/// attention kernel that takes a biased q|k|v (`GAPPROBE_ATTENTION=mma`) and biases and residuals
/// in separate passes (`GAPPROBE_GEMM_EPILOGUE=0`).
#[test]
fn every_feature_point_matches_transformers_with_fused_ops() {
    fused::with_attention_kernel(fused::AttentionKernel::Mma, || {
        gemm_epilogue::with_epilogue(false, || check_feature_points(true))
    });
}

/// The same with the attention kernel that folds the q|k|v bias in (the default,
/// `GAPPROBE_ATTENTION=fa`): the projection skips its bias pass and hands the bias to the
/// attention op.
#[test]
fn every_feature_point_matches_transformers_with_bias_folding_attention() {
    fused::with_attention_kernel(fused::AttentionKernel::Flash, || {
        gemm_epilogue::with_epilogue(false, || check_feature_points(true))
    });
}

/// Biases and residual adds in the GEMMs' epilogue (the default; `GAPPROBE_GEMM_EPILOGUE=0`
/// turns it off): the op's CPU reference, wired into every family's Linear layers, against
/// transformers, with either attention kernel.
#[test]
fn every_feature_point_matches_transformers_with_gemm_epilogues() {
    for kernel in [fused::AttentionKernel::Mma, fused::AttentionKernel::Flash] {
        fused::with_attention_kernel(kernel, || {
            gemm_epilogue::with_epilogue(true, || check_feature_points(true))
        });
    }
}

/// Each residual add fused with the LayerNorm after it (`GAPPROBE_ADD_NORM=1`): the layers hand
/// their next LayerNorm's output over, in f32 against transformers, and around an f32 stream
/// (f16 layers, the path the CUDA kernel takes) with the same numbers as the separate passes.
#[test]
fn every_feature_point_matches_transformers_with_add_norm() {
    add_norm::with_add_norm(true, || check_feature_points(true));
    let on = fused::with_f32_residual(true, || {
        add_norm::with_add_norm(true, || feature_points_error(true, DType::F16))
    });
    let off = fused::with_f32_residual(true, || {
        add_norm::with_add_norm(false, || feature_points_error(true, DType::F16))
    });
    assert!(
        (on - off).abs() <= 1e-9 * off,
        "add+norm {on:.6e} vs separate passes {off:.6e}"
    );
}

fn check_feature_points(fused_ops: bool) {
    feature_points_error(fused_ops, DType::F32);
}

/// Runs every fixture model in `dtype` over every feature point and image against transformers'
/// f32 outputs; in f32 each must be within [`FEATURE_TOL`]. Returns the relative error
/// ‖got − want‖ / ‖want‖ over all of them.
fn feature_points_error(fused_ops: bool, dtype: DType) -> f64 {
    let m = manifest();
    let mut worst_overall = 0f32;
    let (mut diff2, mut ref2) = (0f64, 0f64);
    for (name, entry) in m["models"].as_object().unwrap() {
        let ck = checkpoint(name, entry);
        let model = fused::with_mode(fused_ops, || {
            VisionLanguageModel::load(&ck, usize::MAX, &Device::Cpu, dtype)
        })
        .unwrap();
        let prefix = model.vision.config().prefix_tokens;
        let exp = expected(name);
        let mut points: Vec<(FeaturePoint, String)> = Vec::new();
        for p in entry["points"].as_array().unwrap() {
            let s = p.as_str().unwrap();
            points.push((s.parse().unwrap(), s.to_string()));
            if let Some(base) = s.strip_suffix(".all.none") {
                let patch = format!("{base}.patch.none");
                points.push((patch.parse().unwrap(), s.to_string()));
            }
        }
        let layers: Vec<usize> = points
            .iter()
            .map(|(p, _)| model.point_layer(p).unwrap())
            .collect();
        let mut worst = 0f32;
        for image in images() {
            // The model input is transformers' own pixels, so this checks the forward pass alone.
            let pix = exp[&format!("pixels/{image}")]
                .unsqueeze(0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let states = model.vision.hidden_states(&pix, &layers).unwrap();
            for ((point, key), state) in points.iter().zip(&states) {
                let got = model.read_point(point, state).unwrap().squeeze(0).unwrap();
                let got = got.to_dtype(DType::F32).unwrap();
                let mut want = exp[&format!("{image}/{key}")].clone();
                if key != &point.to_string() {
                    let t = want.dim(0).unwrap();
                    want = want.narrow(0, prefix, t - prefix).unwrap();
                }
                let err = max_abs(&got, &want);
                let sq = |t: Tensor| {
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                diff2 += sq((&got - &want).unwrap()) as f64;
                ref2 += sq(want.clone()) as f64;
                if dtype == DType::F32 {
                    assert!(err <= FEATURE_TOL, "{name}/{image}/{point}: error {err}");
                }
                worst = worst.max(err);
            }
        }
        eprintln!(
            "{name}: {} feature points × {} images, max abs error {worst:.2e}",
            points.len(),
            images().len()
        );
        worst_overall = worst_overall.max(worst);
    }
    let rel = (diff2 / ref2).sqrt();
    eprintln!(
        "all models (fused ops: {fused_ops}, {dtype:?}): max abs error {worst_overall:.2e}, \
         relative error {rel:.2e}"
    );
    rel
}

/// The f32 residual stream (`GAPPROBE_RESIDUAL=f32`) around 16-bit layers, here f16 through the
/// fused ops' CPU references (the CPU has no bf16 matmul): the wiring runs end to end for every
/// family and lands closer to transformers' f32 features than the 16-bit stream.
#[test]
fn f32_residual_stream_reduces_half_precision_error() {
    let narrow = fused::with_f32_residual(false, || feature_points_error(true, DType::F16));
    let wide = fused::with_f32_residual(true, || feature_points_error(true, DType::F16));
    eprintln!("f16 stream: {narrow:.3e}, f32 stream: {wide:.3e}");
    assert!(
        wide < narrow,
        "f32 stream {wide:.3e} vs f16 stream {narrow:.3e}"
    );
    assert!(
        narrow < 1e-2,
        "f16 error {narrow:.3e}: the half-precision path is broken"
    );
}

/// bf16 layers around a float16 stream (`GAPPROBE_RESIDUAL=f16`): the bf16 stream's bytes with
/// three more mantissa bits, so its error is below the bf16 stream's and near the f32 stream's
/// (on the benchmark's CLIP-L/336 model: 8.07e-3, against 1.36e-2 and 7.91e-3, docs/performance.md).
#[test]
fn f16_stream_around_bf16_nears_the_f32_stream() {
    use fused::ResidualStream;
    let error = |s| fused::with_residual_stream(s, || feature_points_error(true, DType::BF16));
    let (narrow, half, wide) = (
        error(ResidualStream::Model),
        error(ResidualStream::F16),
        error(ResidualStream::F32),
    );
    eprintln!(
        "bf16 layers: bf16 stream {narrow:.3e}, f16 stream {half:.3e}, f32 stream {wide:.3e}"
    );
    assert!(
        half < narrow,
        "f16 stream {half:.3e} vs bf16 stream {narrow:.3e}"
    );
    assert!(
        half < 1.25 * wide,
        "f16 stream {half:.3e} vs f32 stream {wide:.3e}"
    );
    // The fused add+norm takes the f16 stream too, with the same numbers.
    let fused_half = add_norm::with_add_norm(true, || error(ResidualStream::F16));
    assert!(
        (fused_half - half).abs() <= 1e-9 * half,
        "add+norm {fused_half:.6e} vs separate passes {half:.6e}"
    );
}

#[test]
fn families_and_layouts_are_detected() {
    let m = manifest();
    for (name, entry) in m["models"].as_object().unwrap() {
        let ck = checkpoint(name, entry);
        let fam = match entry["family"].as_str().unwrap() {
            "clip" => Family::Clip,
            "siglip" => Family::Siglip,
            _ => Family::Dinov2,
        };
        assert_eq!(ck.family().unwrap(), fam, "{name}");
    }
    // The original LLaVA-1.5 config asks for pad-to-square and patch tokens of layer -2.
    let entry = &m["models"]["llava_orig"];
    let ck = checkpoint("llava_orig", entry);
    assert!(ck.preprocess.pad_to_square);
    let model = VisionLanguageModel::load(&ck, 0, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        (model.projector_layer, model.projector_drops_cls),
        (2, true)
    );
    let v1 = checkpoint("llava_v1", &m["models"]["llava_v1"]);
    let model = VisionLanguageModel::load(&v1, 0, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        (model.projector_layer, model.projector_drops_cls),
        (3, false)
    );
}

#[test]
fn cls_of_siglip_is_a_clear_error() {
    let ck = Checkpoint::from_dir("siglip_a", &root().join("siglip_a")).unwrap();
    let model = VisionLanguageModel::load(&ck, usize::MAX, &Device::Cpu, DType::F32).unwrap();
    let err = model
        .check_point(&"vision.layer[-1].cls".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("SigLIP has no CLS token"), "{err}");
    let err = model
        .check_point(&"projector.mean".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no projector"), "{err}");
    let err = model
        .check_point(&"vision.layer[-4].all.mean".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn only_needed_layers_are_read() {
    let ck = Checkpoint::from_dir("clip_a", &root().join("clip_a")).unwrap();
    let shallow = VisionLanguageModel::load(&ck, 1, &Device::Cpu, DType::F32).unwrap();
    let deep = VisionLanguageModel::load(&ck, 3, &Device::Cpu, DType::F32).unwrap();
    assert_ne!(shallow.weights_fingerprint, deep.weights_fingerprint);
    let pix = Tensor::zeros((1, 3, 35, 35), DType::F32, &Device::Cpu).unwrap();
    assert!(shallow.vision.hidden_states(&pix, &[1]).is_ok());
    assert!(shallow.vision.hidden_states(&pix, &[2]).is_err());
}

#[test]
fn projector_only_checkpoint_names_its_missing_tower() {
    // mm_vision_tower is a hub id: offline and not cached, the error says which file and where.
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let dir = root().join("llava_orig");
    let err = format!(
        "{:#}",
        Checkpoint::resolve(dir.to_str().unwrap()).unwrap_err()
    );
    assert!(err.contains("openai/clip-vit-large-patch14-336"), "{err}");
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
}

/// A PyTorch `.bin` checkpoint (tools/make_bin_fixture.py: clip_a's weights via `torch.save`)
/// loads to the same model as its safetensors twin: same outputs, same weight fingerprint (so
/// the same cache key), converted once into the gapprobe cache and reused after.
#[test]
fn pytorch_bin_checkpoint_loads_like_its_safetensors_twin() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("GAPPROBE_CACHE", cache.path());
    let st = Checkpoint::from_dir("clip_a", &root().join("clip_a")).unwrap();
    let bin = Checkpoint::from_dir("clip_a", &root().join("clip_a_bin")).unwrap();
    assert!(bin.weight_files[0].starts_with(cache.path().join("converted")));
    let a = VisionLanguageModel::load(&st, usize::MAX, &Device::Cpu, DType::F32).unwrap();
    let b = VisionLanguageModel::load(&bin, usize::MAX, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(a.weights_fingerprint, b.weights_fingerprint);
    let pix = expected("clip_a")["pixels/wide"].unsqueeze(0).unwrap();
    let sa = a.vision.hidden_states(&pix, &[2]).unwrap();
    let sb = b.vision.hidden_states(&pix, &[2]).unwrap();
    assert_eq!(max_abs(&sa[0], &sb[0]), 0.0);
    // A second resolve reuses the converted file.
    let converted = bin.weight_files[0].clone();
    let stamp = std::fs::metadata(&converted).unwrap().modified().unwrap();
    let again = Checkpoint::from_dir("clip_a", &root().join("clip_a_bin")).unwrap();
    assert_eq!(again.weight_files[0], converted);
    assert_eq!(
        std::fs::metadata(&converted).unwrap().modified().unwrap(),
        stamp
    );
}

/// A corrupt `.bin` names the file.
#[test]
fn corrupt_pytorch_bin_is_a_clear_error() {
    // Reading fails before anything is written, so no cache folder is needed (and setting
    // GAPPROBE_CACHE here would race with the test above).
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(root().join("clip_a").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not a pickle").unwrap();
    let err = format!(
        "{:#}",
        Checkpoint::from_dir("broken", dir.path()).unwrap_err()
    );
    assert!(err.contains("pytorch_model.bin"), "{err}");
    assert!(err.contains("not a readable PyTorch checkpoint"), "{err}");
}
