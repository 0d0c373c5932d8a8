//! Parity with transformers for LLaVA's language model on the tiny random-weight checkpoint made
//! by `tools/make_llm_fixtures.py` (LLaMA with grouped-query attention, a byte-fallback BPE
//! tokenizer): prompt token ids exactly, every hidden state within 1e-4 (f32, CPU), the image
//! arm (projector tokens spliced in for `<image>`), right-padded text batches, and `extract`.

use candle_core::{DType, Device, Tensor};
use gapprobe_features::extract::{extract, ExtractOptions};
use gapprobe_features::featurepoint::{parse_feature_point_list, LlmRead};
use gapprobe_features::models::{
    language_fingerprints, Checkpoint, LanguageModel, Prompt, VisionLanguageModel,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("manifest.json")).unwrap()).unwrap()
}

fn checkpoint() -> Checkpoint {
    Checkpoint::from_dir("llava_tiny", &root().join("llava_tiny")).unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join("llava_tiny/expected.safetensors"), &Device::Cpu)
        .unwrap()
}

/// The fixture's prompt in gapprobe's form: one template, `<image>` where the text goes.
fn prompt() -> String {
    manifest()["image_prompt"].as_str().unwrap().to_string()
}

fn texts() -> Vec<String> {
    manifest()["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn images() -> Vec<String> {
    manifest()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let max = |t: Tensor| {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max((a - b).unwrap()) / max(b.clone())
}

fn layers() -> usize {
    manifest()["num_hidden_layers"].as_u64().unwrap() as usize
}

fn language(top: usize) -> LanguageModel {
    LanguageModel::load(&checkpoint(), top, &prompt(), &Device::Cpu, DType::F32).unwrap()
}

#[test]
fn prompt_token_ids_match_transformers() {
    // The prompt and tokenizer alone (no weights are read for this).
    let (lm, exp) = (Prompt::load(&checkpoint(), &prompt()).unwrap(), expected());
    let n_image = manifest()["num_image_tokens"].as_u64().unwrap() as usize;
    let image_token = manifest()["image_token_id"].as_u64().unwrap() as u32;
    let (before, after) = lm.image_ids().unwrap();
    let mut spliced = before.clone();
    spliced.extend(std::iter::repeat_n(image_token, n_image));
    spliced.extend(&after);
    for image in images() {
        assert_eq!(spliced, ids(&exp[&format!("ids/image/{image}")]), "{image}");
    }
    for (i, text) in texts().iter().enumerate() {
        assert_eq!(
            lm.text_ids(text).unwrap(),
            ids(&exp[&format!("ids/text/{i}")]),
            "text {i}: {text:?}"
        );
    }
}

#[test]
fn every_hidden_state_matches_transformers() {
    let (lm, exp) = (language(layers()), expected());
    let all: Vec<usize> = (0..=layers()).collect();
    for (i, text) in texts().iter().enumerate() {
        let ids = lm.prompt().text_ids(text).unwrap();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let states = lm
            .llama
            .hidden_states(&lm.llama.embed(&ids).unwrap(), &all)
            .unwrap();
        for (k, s) in states.iter().enumerate() {
            let want = &exp[&format!("hidden/text/{i}/{k}")];
            let err = rel(&s.squeeze(0).unwrap(), want);
            assert!(err < TOL, "text {i} hidden_states[{k}]: {err}");
        }
    }
}

/// Reads (last token, mean over tokens) of transformers' [T, D] hidden state.
fn reads_of(want: &Tensor) -> [Tensor; 2] {
    let t = want.dim(0).unwrap();
    [want.get(t - 1).unwrap(), want.mean(0).unwrap()]
}

#[test]
fn text_batches_read_last_and_mean_of_each_text() {
    let (lm, exp) = (language(layers()), expected());
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for k in 0..=layers() {
        let reads = [(k, LlmRead::Last), (k, LlmRead::Mean)];
        let got = lm.text_features(&refs, &reads).unwrap();
        for i in 0..texts.len() {
            let want = reads_of(&exp[&format!("hidden/text/{i}/{k}")]);
            for (r, w) in got.iter().zip(&want) {
                let err = rel(&r.get(i).unwrap(), w);
                assert!(err < TOL, "text {i} layer {k}: {err}");
            }
        }
    }
}

#[test]
fn image_arm_splices_projector_tokens_like_transformers() {
    let ck = checkpoint();
    let exp = expected();
    let mut model = VisionLanguageModel::load(&ck, 0, &Device::Cpu, DType::F32).unwrap();
    model.language = Some(language(layers()));
    let lm = model.language.as_ref().unwrap();
    for image in images() {
        let tokens = exp[&format!("projector/{image}")].unsqueeze(0).unwrap();
        let reads: Vec<_> = (0..=layers())
            .flat_map(|k| [(k, LlmRead::Last), (k, LlmRead::Mean)])
            .collect();
        let got = lm.image_features(&tokens, &reads).unwrap();
        for k in 0..=layers() {
            let want = reads_of(&exp[&format!("hidden/image/{image}/{k}")]);
            for (j, w) in want.iter().enumerate() {
                let err = rel(&got[2 * k + j].squeeze(0).unwrap(), w);
                assert!(err < TOL, "{image} layer {k} read {j}: {err}");
            }
        }
    }
}

/// `extract` end to end from the image files: vision tower, projector, language model, and the
/// text arm from the texts, in one call.
#[test]
fn extract_reads_llm_points_from_images_and_texts() {
    let ck = checkpoint();
    let exp = expected();
    let mut model = VisionLanguageModel::load(&ck, 0, &Device::Cpu, DType::F32).unwrap();
    model.language = Some(language(layers()));
    let points = parse_feature_point_list(&[
        "llm.image.layer[-1].last",
        "llm.image.layer[1].mean",
        "llm.text.layer[2].last",
        "projector.mean",
    ])
    .unwrap();
    let dir = root().join(manifest()["images_dir"].as_str().unwrap());
    let paths: Vec<PathBuf> = images()
        .iter()
        .map(|i| dir.join(format!("{i}.png")))
        .collect();
    let texts: Vec<String> = texts()[..paths.len()].to_vec();
    let opts = ExtractOptions {
        prompt: prompt(),
        ..Default::default()
    };
    let feats = extract(
        &model,
        &ck.preprocess,
        &paths,
        &texts,
        &points,
        &opts,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let l = layers();
    for (row, image) in images().iter().enumerate() {
        let at = |f: usize| {
            let v: Vec<f32> = feats[f]
                .index_axis(ndarray::Axis(0), row)
                .iter()
                .copied()
                .collect();
            Tensor::from_vec(v, feats[f].shape()[1], &Device::Cpu).unwrap()
        };
        let checks = [
            (
                0,
                reads_of(&exp[&format!("hidden/image/{image}/{l}")])[0].clone(),
            ),
            (
                1,
                reads_of(&exp[&format!("hidden/image/{image}/1")])[1].clone(),
            ),
            (
                2,
                reads_of(&exp[&format!("hidden/text/{row}/2")])[0].clone(),
            ),
            (3, exp[&format!("projector/{image}")].mean(0).unwrap()),
        ];
        for (f, want) in checks {
            let err = rel(&at(f), &want);
            assert!(err < TOL, "{image}: {} {err}", points[f]);
        }
    }
    // Text points without a text per image are refused before any work.
    let e = extract(
        &model,
        &ck.preprocess,
        &paths,
        &[],
        &points[2..3],
        &opts,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("one text per image"), "{e:#}");
}

/// A sweep's fingerprints, computed together (each tensor hashed once), equal those computed
/// one depth at a time, and differ between depths.
#[test]
fn language_fingerprints_of_a_sweep_match_one_at_a_time() {
    let ck = checkpoint();
    let all = language_fingerprints(&ck, &[1, 3, 1]).unwrap();
    let one = |t| language_fingerprints(&ck, &[t]).unwrap().remove(0);
    assert_eq!(all, [one(1), one(3), one(1)]);
    assert_ne!(all[0], all[1]);
    assert_eq!(all[0].len(), 64);
}

#[test]
fn llm_points_without_a_language_model_or_out_of_range_are_clear_errors() {
    let ck = checkpoint();
    let model = VisionLanguageModel::load(&ck, 0, &Device::Cpu, DType::F32).unwrap();
    let p = "llm.text.layer[-1].last".parse().unwrap();
    let e = model.check_point(&p).unwrap_err();
    assert!(format!("{e:#}").contains("not loaded"), "{e:#}");
    let mut model = model;
    model.language = Some(language(1));
    let p = "llm.text.layer[9].last".parse().unwrap();
    let e = format!("{:#}", model.check_point(&p).unwrap_err());
    assert!(
        e.contains("out of range") && e.contains("llm.text.layer[9].last"),
        "{e}"
    );
    // A prompt without <image> is refused at load.
    let e = LanguageModel::load(&ck, 1, "USER: hi ASSISTANT:", &Device::Cpu, DType::F32)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(e.contains("exactly once"), "{e}");
}

#[test]
fn batch_planning_sizes_the_language_model_by_its_longest_sequence() {
    use gapprobe_features::batching::{bytes_per_image, Workload};
    let ck = checkpoint();
    let size = ck.preprocess.output_size();
    let mut model = VisionLanguageModel::load(&ck, 0, &Device::Cpu, DType::F32).unwrap();
    model.language = Some(language(layers()));
    let exp = expected();
    let points = |s: &str| parse_feature_point_list(&s.split(',').collect::<Vec<_>>()).unwrap();
    // Image arm: the prompt around the projector's tokens, as long as transformers' sequence.
    let image = Workload::of(&model, &points("llm.image.layer[-1].last"), &[], size).unwrap();
    let image_ids = ids(&exp[&format!("ids/image/{}", images()[0])]);
    assert_eq!(image.llm_tokens, image_ids.len());
    assert!(image.vision && image.llm_reads == 1);
    // Text arm: the longest text once tokenised in the prompt; no vision pass.
    let texts = texts();
    let text = Workload::of(
        &model,
        &points("llm.text.layer[1].mean,llm.text.layer[2].last"),
        &texts,
        size,
    )
    .unwrap();
    let longest = (0..texts.len())
        .map(|i| ids(&exp[&format!("ids/text/{i}")]).len())
        .max()
        .unwrap();
    assert_eq!(
        (text.llm_tokens, text.vision, text.llm_reads),
        (longest, false, 2)
    );
    // Without llm points only the vision part counts.
    let plain = Workload::of(&model, &points("projector.mean"), &texts, size).unwrap();
    assert_eq!(plain, Workload::images(size));

    let bytes = |w: &Workload| bytes_per_image(&model, w, &Device::Cpu, DType::BF16);
    assert!(
        bytes(&image) > bytes(&plain),
        "the decoder adds to an image's share"
    );
    // The attention scores grow with the square of the sequence.
    let llm_only = |t: usize| Workload {
        vision: false,
        llm_tokens: t,
        llm_reads: 1,
        ..Workload::images(size)
    };
    let (b0, b1, b2) = (
        bytes(&llm_only(0)),
        bytes(&llm_only(500)),
        bytes(&llm_only(1000)),
    );
    assert_eq!(b0, 0, "nothing runs");
    assert!(b2 > 2 * b1, "{b1} {b2}");
    // Without a loaded language model the llm tokens cannot be sized: vision only.
    model.language = None;
    let unloaded = Workload::of(&model, &points("llm.image.layer[-1].last"), &[], size).unwrap();
    assert_eq!(unloaded.llm_tokens, 0);
}
