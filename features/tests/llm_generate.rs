//! Greedy answers against transformers' `generate(do_sample=False)` on the tiny LLaVA
//! (`tools/make_generation_fixtures.py`): the first step's logits within 1e-4, and the same
//! token ids and text for the image prompts (projector tokens spliced in), for text prompts one
//! by one and left-padded into one batch, and when a custom end token cuts an answer short.

use candle_core::{DType, Device, Tensor};
use gapprobe_features::models::{Checkpoint, Generator};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(name)).unwrap()).unwrap()
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join(name), &Device::Cpu).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn generator() -> Generator {
    let ck = Checkpoint::from_dir("llava_tiny", &root().join("llava_tiny")).unwrap();
    let chat = json("generation.json")["image_prompt"]
        .as_str()
        .unwrap()
        .to_string();
    Generator::load(&ck, &chat, &Device::Cpu, DType::F32).unwrap()
}

/// The next-token logits [vocab] after the token ids `ids`, run from scratch (no cache).
fn logits_after(g: &Generator, ids: &[u32]) -> Tensor {
    let ids_t = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let e = g.llama().embed(&ids_t).unwrap();
    g.next_token_logits(&e, &[ids.len()])
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

#[test]
fn image_answers_match_transformers_generate() {
    let g = generator();
    let fx = json("generation.json");
    let expected = tensors("llava_tiny/expected.safetensors");
    let logits = tensors("generation_logits.safetensors");
    let chat = fx["image_prompt"].as_str().unwrap();
    let max_new = fx["max_new_tokens"].as_u64().unwrap() as usize;
    assert_eq!(g.eos(), &[fx["eos_id"].as_u64().unwrap() as u32]);
    let names: Vec<&String> = fx["images"].as_object().unwrap().keys().collect();
    let tokens: Vec<Tensor> = names
        .iter()
        .map(|n| expected[&format!("projector/{n}")].clone())
        .collect();
    // Both images in one batch: the answers must not depend on the batch.
    let batch = Tensor::stack(&tokens, 0).unwrap();
    let chats = vec![chat.to_string(); names.len()];
    let answers = g.answer_images(&chats, &batch, max_new).unwrap();
    for (i, name) in names.iter().enumerate() {
        let want = &fx["images"][name.as_str()];
        assert_eq!(answers[i], ids(&want["ids"]), "image {name}");
        assert_eq!(
            g.decode(&answers[i]).unwrap(),
            want["text"].as_str().unwrap()
        );
        let alone = g
            .answer_images(&chats[i..=i], &tokens[i].unsqueeze(0).unwrap(), max_new)
            .unwrap();
        assert_eq!(alone[0], answers[i], "image {name} alone");
    }
    // The first step's logits, through the same splice.
    let (before, after) = g.tokenizer().image_ids_of(chat).unwrap();
    for (i, name) in names.iter().enumerate() {
        let embed = |v: &[u32]| {
            g.llama()
                .embed(&Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap())
                .unwrap()
        };
        let e = Tensor::cat(
            &[
                embed(&before),
                tokens[i].unsqueeze(0).unwrap(),
                embed(&after),
            ],
            1,
        )
        .unwrap();
        let got = g.next_token_logits(&e, &[e.dim(1).unwrap()]).unwrap();
        let d = max_abs_diff(
            &got.squeeze(0).unwrap(),
            &logits[&format!("logits/image/{name}")],
        );
        assert!(d < 1e-4, "image {name}: logits differ by {d}");
    }
}

/// Images asked different questions in one batch (left-padded to the longer prompt) get the
/// answers each gets alone.
#[test]
fn images_with_different_prompts_share_a_batch() {
    let mut g = generator();
    g.set_eos(vec![]);
    let expected = tensors("llava_tiny/expected.safetensors");
    let tokens = Tensor::stack(
        &[&expected["projector/wide"], &expected["projector/tall"]],
        0,
    )
    .unwrap();
    let chats = [
        "USER: <image>\nWhat is this? ASSISTANT:".to_string(),
        "USER: <image>\nbill shape: dagger; wing color: blue, white. crown color: blue. What is this? ASSISTANT:"
            .to_string(),
    ];
    let together = g.answer_images(&chats, &tokens, 8).unwrap();
    for i in 0..2 {
        let alone = g
            .answer_images(&chats[i..=i], &tokens.narrow(0, i, 1).unwrap(), 8)
            .unwrap();
        assert_eq!(together[i], alone[0], "chat {i}");
        assert_eq!(together[i].len(), 8);
    }
    let err = g.answer_images(&chats[..1], &tokens, 8).unwrap_err();
    assert!(err.to_string().contains("1 chats for 2 images"), "{err}");
}

#[test]
fn an_end_token_cuts_the_answer_before_it() {
    let mut g = generator();
    let fx = json("generation.json");
    let case = &fx["image_eos"];
    let name = case["image"].as_str().unwrap();
    let expected = tensors("llava_tiny/expected.safetensors");
    let tokens = expected[&format!("projector/{name}")].unsqueeze(0).unwrap();
    g.set_eos(vec![case["eos"].as_u64().unwrap() as u32]);
    let chat = fx["image_prompt"].as_str().unwrap();
    let got = g.answer_images(&[chat.to_string()], &tokens, 12).unwrap();
    assert_eq!(got[0], ids(&case["ids"]));
    assert!(got[0].len() < fx["images"][name]["ids"].as_array().unwrap().len());
}

#[test]
fn text_answers_match_alone_and_left_padded() {
    let g = generator();
    let fx = json("generation.json");
    let logits = tensors("generation_logits.safetensors");
    let max_new = fx["max_new_tokens"].as_u64().unwrap() as usize;
    let cases = fx["texts"].as_array().unwrap();
    let prompts: Vec<String> = cases
        .iter()
        .map(|c| c["prompt"].as_str().unwrap().to_string())
        .collect();
    for (i, c) in cases.iter().enumerate() {
        let alone = g.answer_texts(&prompts[i..=i], max_new).unwrap();
        assert_eq!(alone[0], ids(&c["ids"]), "text {i}");
        assert_eq!(g.decode(&alone[0]).unwrap(), c["text"].as_str().unwrap());
        let ids = g.tokenizer().encode(&prompts[i]).unwrap();
        let d = max_abs_diff(
            &logits_after(&g, &ids),
            &logits[&format!("logits/text/{i}")],
        );
        assert!(d < 1e-4, "text {i}: logits differ by {d}");
    }
    let batch = g.answer_texts(&prompts, max_new).unwrap();
    let want: Vec<Vec<u32>> = fx["text_batch"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    assert_eq!(batch, want);
    // Different lengths really were padded.
    let lens: Vec<usize> = prompts
        .iter()
        .map(|p| g.tokenizer().encode(p).unwrap().len())
        .collect();
    assert!(lens.iter().any(|&l| l != lens[0]), "{lens:?}");
}

#[test]
fn bad_prompt_lengths_are_refused() {
    let g = generator();
    let e = Tensor::zeros((2, 3, 32), DType::F32, &Device::Cpu).unwrap();
    let err = g.greedy(&e, &[3], 2).unwrap_err().to_string();
    assert!(err.contains("1 prompt lengths for 2 prompts"), "{err}");
    let err = g.greedy(&e, &[3, 4], 2).unwrap_err().to_string();
    assert!(err.contains("[3, 4]"), "{err}");
}

/// Decoding with the KV cache gives what recomputing the whole sequence at every step gives, on
/// a random decoder with one KV head per query head (LLaVA-1.5's layout: attention reads the
/// cache's views directly, where the grouped-query fixture copies them), for prompts of
/// different lengths in one left-padded batch.
#[test]
fn cached_decoding_equals_recomputing_every_step() {
    use gapprobe_features::models::{write_random_llava, RandomLlavaSpec, RandomLlmSpec};
    let mut spec = RandomLlavaSpec::default();
    spec.vision.hidden_size = 16;
    spec.vision.intermediate_size = 32;
    spec.vision.num_hidden_layers = 1;
    spec.vision.num_attention_heads = 2;
    spec.vision.image_size = 16;
    spec.llm_hidden = 64;
    spec.llm = RandomLlmSpec {
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        intermediate_size: 96,
        ..RandomLlmSpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    write_random_llava(dir.path(), &spec).unwrap();
    let ck = Checkpoint::from_dir("random", dir.path()).unwrap();
    let chat = gapprobe_features::models::DEFAULT_PROMPT;
    let mut g = Generator::load(&ck, chat, &Device::Cpu, DType::F32).unwrap();
    g.set_eos(vec![]); // random weights: run the whole budget
    let prompts: Vec<String> = [
        "shape : ring ; stripe color : blue",
        "spot : left",
        "shape : square",
    ]
    .iter()
    .map(|t| chat.replace("<image>", t))
    .collect();
    let steps = 6;
    let cached = g.answer_texts(&prompts, steps).unwrap();
    for (p, got) in prompts.iter().zip(&cached) {
        let mut ids = g.tokenizer().encode(p).unwrap();
        let mut want = Vec::new();
        for _ in 0..steps {
            let next = logits_after(&g, &ids)
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap();
            want.push(next);
            ids.push(next);
        }
        assert_eq!(got, &want, "{p}");
    }
}
