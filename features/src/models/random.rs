//! Seeded random-weight checkpoints in the llava-hf layout (`config.json`,
//! `preprocessor_config.json`, `model.safetensors`, `tokenizer.json`), loaded back through the
//! same loaders as real checkpoints. The demo uses one; random weights demonstrate the pipeline,
//! not a model.

use super::prompt::{DEFAULT_PROMPT, IMAGE_PLACEHOLDER};
use super::ClipVisionConfig;
use crate::preprocess::PreprocessConfig;
use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// Shape of the random LLaVA-style model.
#[derive(Debug, Clone)]
pub struct RandomLlavaSpec {
    pub vision: ClipVisionConfig,
    /// The LLM embedding width the projector maps to (the language model's hidden size).
    pub llm_hidden: usize,
    /// The language model (a LLaMA decoder of width `llm_hidden`) and its tokenizer.
    pub llm: RandomLlmSpec,
    pub seed: u64,
}

/// Shape of the random LLaMA decoder and the words of its word-level tokenizer.
#[derive(Debug, Clone)]
pub struct RandomLlmSpec {
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    /// The tokenizer's words (after `<unk>`, `<s>`, `</s>`; `<image>` comes last); any other
    /// word becomes `<unk>`. Words are split as the `Whitespace` pre-tokenizer splits them
    /// (`\w+|[^\w\s]+`), so punctuation runs such as `:` are words too.
    pub words: Vec<String>,
}

impl Default for RandomLlmSpec {
    /// 2 layers, 4 heads over 2 KV heads (grouped-query attention, as the parity fixture),
    /// intermediate 512 (SwiGLU at 1 × the width: the demo runs on 2 CPU cores and the
    /// decoder's time is mostly its matmuls; 2 × the width made the demo 8 s slower); the words
    /// of [`DEFAULT_PROMPT`] and of the demo's attribute texts ([`crate::synth::attribute_texts`]).
    fn default() -> Self {
        let text = format!(
            "{}\n{}",
            DEFAULT_PROMPT.replace(IMAGE_PLACEHOLDER, " "),
            crate::synth::attribute_texts().join("\n")
        );
        let mut words: Vec<String> = Vec::new();
        for w in split_words(&text) {
            if !words.iter().any(|x| x == w) {
                words.push(w.to_string());
            }
        }
        RandomLlmSpec {
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 512,
            words,
        }
    }
}

/// Splits `text` as tokenizers' `Whitespace` pre-tokenizer does (`\w+|[^\w\s]+`, ASCII).
pub fn split_words(text: &str) -> Vec<&str> {
    // None: whitespace; Some(true): a word character; Some(false): anything else.
    let class = |c: char| (!c.is_whitespace()).then(|| c.is_alphanumeric() || c == '_');
    let mut out = Vec::new();
    let mut run: Option<(usize, bool)> = None;
    for (i, c) in text.char_indices() {
        let k = class(c);
        if let Some((s, rk)) = run {
            if k == Some(rk) {
                continue;
            }
            out.push(&text[s..i]);
        }
        run = k.map(|k| (i, k));
    }
    if let Some((s, _)) = run {
        out.push(&text[s..]);
    }
    out
}

impl Default for RandomLlavaSpec {
    fn default() -> Self {
        RandomLlavaSpec {
            vision: ClipVisionConfig {
                hidden_size: 256,
                intermediate_size: 1024,
                num_hidden_layers: 4,
                num_attention_heads: 8,
                num_channels: 3,
                image_size: 64,
                patch_size: 8,
                hidden_act: super::Act::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            llm_hidden: 512,
            llm: RandomLlmSpec::default(),
            seed: 0,
        }
    }
}

impl RandomLlavaSpec {
    /// The smallest useful model, for tests: a 2-layer tower of width 16 on 16-pixel images
    /// (4 patches of 8), a projector to 32, and the default language model and tokenizer.
    pub fn tiny() -> Self {
        RandomLlavaSpec {
            vision: ClipVisionConfig {
                hidden_size: 16,
                intermediate_size: 32,
                num_hidden_layers: 2,
                num_attention_heads: 2,
                image_size: 16,
                patch_size: 8,
                ..RandomLlavaSpec::default().vision
            },
            llm_hidden: 32,
            ..Default::default()
        }
    }
}

/// How one tensor of a random checkpoint is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    Ones,
    Zeros,
}

/// One tensor of a random checkpoint: name (relative to the tower or projector root), shape, fill.
pub type TensorSpec = (String, Vec<usize>, Fill);

fn linear_specs(out: &mut Vec<TensorSpec>, name: &str, din: usize, dout: usize) {
    out.push((
        format!("{name}.weight"),
        vec![dout, din],
        Fill::Normal((din as f32).powf(-0.5)),
    ));
    out.push((format!("{name}.bias"), vec![dout], Fill::Normal(0.02)));
}

fn layer_norm_specs(out: &mut Vec<TensorSpec>, name: &str, d: usize) {
    out.push((format!("{name}.weight"), vec![d], Fill::Ones));
    out.push((format!("{name}.bias"), vec![d], Fill::Zeros));
}

/// The tensors of a CLIP vision tower (names under `vision_model.`) with its first `layers`
/// encoder layers; `post_layernorm` only when every layer is present. Normal stds are fan-in
/// scaled so activations stay O(1) through random layers.
pub fn clip_tower_tensors(v: &ClipVisionConfig, layers: usize) -> Vec<TensorSpec> {
    let d = v.hidden_size;
    let fan_in = v.num_channels * v.patch_size * v.patch_size;
    let mut out = vec![
        (
            "embeddings.class_embedding".into(),
            vec![d],
            Fill::Normal((d as f32).powf(-0.5)),
        ),
        (
            "embeddings.patch_embedding.weight".into(),
            vec![d, v.num_channels, v.patch_size, v.patch_size],
            Fill::Normal((fan_in as f32).powf(-0.5)),
        ),
        (
            "embeddings.position_embedding.weight".into(),
            vec![v.num_patches() + 1, d],
            Fill::Normal(0.5),
        ),
    ];
    layer_norm_specs(&mut out, "pre_layrnorm", d);
    for i in 0..layers {
        let l = format!("encoder.layers.{i}");
        layer_norm_specs(&mut out, &format!("{l}.layer_norm1"), d);
        layer_norm_specs(&mut out, &format!("{l}.layer_norm2"), d);
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear_specs(&mut out, &format!("{l}.self_attn.{p}"), d, d);
        }
        linear_specs(&mut out, &format!("{l}.mlp.fc1"), d, v.intermediate_size);
        linear_specs(&mut out, &format!("{l}.mlp.fc2"), v.intermediate_size, d);
    }
    if layers == v.num_hidden_layers {
        layer_norm_specs(&mut out, "post_layernorm", d);
    }
    out
}

/// The tensors of a LLaVA-1.5 `mlp2x_gelu` projector (llava-hf names `linear_1`, `linear_2`):
/// `d_in → hidden → out`.
pub fn mlp2x_projector_tensors(d_in: usize, hidden: usize, out_dim: usize) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    linear_specs(&mut out, "linear_1", d_in, hidden);
    linear_specs(&mut out, "linear_2", hidden, out_dim);
    out
}

/// The tensors of a LLaMA decoder (names under the `model.` of a `LlamaForCausalLM`, plus its
/// `lm_head`), bias-free as LLaMA's: `hidden`-wide, `vocab` tokens. Embeddings have std 1 (so
/// words stand out against the projector's image tokens' scale), RMSNorm weights are ones.
pub fn llama_tensors(spec: &RandomLlmSpec, hidden: usize, vocab: usize) -> Vec<TensorSpec> {
    let head_dim = hidden / spec.num_attention_heads;
    let kv = spec.num_key_value_heads * head_dim;
    let inter = spec.intermediate_size;
    let w = |name: String, din: usize, dout: usize| {
        (
            format!("{name}.weight"),
            vec![dout, din],
            Fill::Normal((din as f32).powf(-0.5)),
        )
    };
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![vocab, hidden],
        Fill::Normal(1.0),
    )];
    for i in 0..spec.num_hidden_layers {
        let l = format!("model.layers.{i}");
        out.push((
            format!("{l}.input_layernorm.weight"),
            vec![hidden],
            Fill::Ones,
        ));
        out.push(w(format!("{l}.self_attn.q_proj"), hidden, hidden));
        out.push(w(format!("{l}.self_attn.k_proj"), hidden, kv));
        out.push(w(format!("{l}.self_attn.v_proj"), hidden, kv));
        out.push(w(format!("{l}.self_attn.o_proj"), hidden, hidden));
        out.push((
            format!("{l}.post_attention_layernorm.weight"),
            vec![hidden],
            Fill::Ones,
        ));
        out.push(w(format!("{l}.mlp.gate_proj"), hidden, inter));
        out.push(w(format!("{l}.mlp.up_proj"), hidden, inter));
        out.push(w(format!("{l}.mlp.down_proj"), inter, hidden));
    }
    out.push(("model.norm.weight".into(), vec![hidden], Fill::Ones));
    out.push(w("lm_head".into(), hidden, vocab));
    out
}

/// A word-level tokenizer over `words` in the layout of a LLaMA `tokenizer.json`: `<unk>` 0,
/// `<s>` 1, `</s>` 2, the words from 3, and `<image>` as an added special token with the last
/// id; `Whitespace` pre-tokenizer, `<s>` prepended by a `TemplateProcessing` post-processor.
/// Returns the tokenizer and `<image>`'s id (which is also the vocabulary size − 1).
pub fn word_tokenizer(words: &[String]) -> Result<(tokenizers::Tokenizer, u32)> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::AddedToken;
    let specials = ["<unk>", "<s>", "</s>"];
    let mut vocab: Vec<(String, u32)> = Vec::new();
    for w in specials
        .iter()
        .map(|s| s.to_string())
        .chain(words.iter().cloned())
    {
        if !vocab.iter().any(|(v, _)| *v == w) {
            let id = vocab.len() as u32;
            vocab.push((w, id));
        }
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| anyhow!("word-level tokenizer: {e}"))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let post = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(|e| anyhow!("{e}"))?
        .try_pair("<s> $A <s> $B")
        .map_err(|e| anyhow!("{e}"))?
        .special_tokens(vec![("<s>", 1)])
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tok.with_post_processor(Some(post));
    tok.add_special_tokens(
        specials
            .iter()
            .chain([&IMAGE_PLACEHOLDER])
            .map(|s| AddedToken::from(s.to_string(), true)),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let image = tok
        .token_to_id(IMAGE_PLACEHOLDER)
        .context("<image> was not added")?;
    Ok((tok, image))
}

/// Seeded Box-Muller normals: the same numbers on every machine for a given seed.
fn seeded_tensor(rng: &mut ChaCha8Rng, shape: &[usize], fill: Fill) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Ok(match fill {
        Fill::Ones => Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu)?,
        Fill::Zeros => Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu)?,
        Fill::Normal(std) => {
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.gen();
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                })
                .collect();
            Tensor::from_vec(data, shape, &Device::Cpu)?
        }
    })
}

/// Writes a random llava-hf checkpoint to `dir`.
pub fn write_random_llava(dir: &Path, spec: &RandomLlavaSpec) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let v = &spec.vision;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let tower = clip_tower_tensors(v, v.num_hidden_layers)
        .into_iter()
        .map(|(n, s, f)| (format!("vision_tower.vision_model.{n}"), s, f));
    let projector = mlp2x_projector_tensors(v.hidden_size, spec.llm_hidden, spec.llm_hidden)
        .into_iter()
        .map(|(n, s, f)| (format!("multi_modal_projector.{n}"), s, f));
    let (tokenizer, image_token) = word_tokenizer(&spec.llm.words)?;
    let vocab = image_token as usize + 1;
    // After the vision tower and projector, so adding the language model left their weights as
    // they were.
    let language = llama_tensors(&spec.llm, spec.llm_hidden, vocab)
        .into_iter()
        .map(|(n, s, f)| (format!("language_model.{n}"), s, f));
    let mut tensors = HashMap::new();
    // In order: the stream of normals decides the weights.
    for (name, shape, fill) in tower.chain(projector).chain(language) {
        tensors.insert(name, seeded_tensor(&mut rng, &shape, fill)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(|e| anyhow!("writing {}: {e}", dir.join("tokenizer.json").display()))?;

    let mut vision = serde_json::to_value(v)?;
    vision["model_type"] = "clip_vision_model".into();
    let config = serde_json::json!({
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "vision_config": vision,
        "text_config": {
            "model_type": "llama",
            "hidden_size": spec.llm_hidden,
            "intermediate_size": spec.llm.intermediate_size,
            "num_hidden_layers": spec.llm.num_hidden_layers,
            "num_attention_heads": spec.llm.num_attention_heads,
            "num_key_value_heads": spec.llm.num_key_value_heads,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "max_position_embeddings": 512,
            "vocab_size": vocab,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "tie_word_embeddings": false,
        },
        "image_token_index": image_token,
        "image_seq_length": v.num_patches(),
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "image_aspect_ratio": "pad",
        "gapprobe_note": format!("random weights (seed {}) written by gapprobe: they demonstrate the pipeline, not a model", spec.seed),
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let pp = PreprocessConfig::clip(v.image_size as u32).to_hf_json();
    std::fs::write(
        dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&pp)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Checkpoint, LanguageModel};
    use candle_core::DType;

    #[test]
    fn split_words_matches_the_whitespace_pre_tokenizer() {
        assert_eq!(
            split_words("USER: <image>\nWhat is it? ASSISTANT:"),
            [
                "USER",
                ":",
                "<",
                "image",
                ">",
                "What",
                "is",
                "it",
                "?",
                "ASSISTANT",
                ":"
            ]
        );
        assert_eq!(
            split_words(" shape: ring;  spot: left "),
            ["shape", ":", "ring", ";", "spot", ":", "left"]
        );
    }

    /// A small random checkpoint (the default language model and tokenizer) loads through the
    /// same loader as real ones; the demo's prompt and attribute texts tokenize without `<unk>`,
    /// distinct texts to distinct ids; the file is the same on every write.
    #[test]
    fn random_llava_language_model_loads_and_tokenizes_the_demo_texts() {
        let spec = RandomLlavaSpec::tiny();
        let dir = std::env::temp_dir().join(format!("gapprobe-random-llm-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        write_random_llava(&dir, &spec).unwrap();
        let tok_bytes = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let ck = Checkpoint::resolve(dir.to_str().unwrap()).unwrap();
        let lm = LanguageModel::load(&ck, 2, DEFAULT_PROMPT, &Device::Cpu, DType::F32).unwrap();
        let (before, after) = lm.prompt().image_ids().unwrap();
        assert_eq!(before[0], 1, "<s> first");
        assert!(before.len() > 2 && after.len() > 5, "{before:?} {after:?}");
        assert!(
            !before.iter().chain(&after).any(|&t| t == 0),
            "<unk> in the prompt"
        );
        let texts = crate::synth::attribute_texts();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_eq!(texts.len(), 24, "{texts:?}");
        let mut seen = std::collections::HashSet::new();
        for t in &texts {
            let ids = lm.prompt().text_ids(t).unwrap();
            assert!(!ids.contains(&0), "<unk> in {t:?}: {ids:?}");
            assert!(seen.insert(ids), "{t:?} tokenizes as another text");
        }
        let feats = lm
            .text_features(&texts[..3], &[(2, crate::featurepoint::LlmRead::Last)])
            .unwrap();
        assert_eq!(feats[0].dims(), [3, 32]);
        // Same spec, same bytes.
        let again = dir.join("again");
        write_random_llava(&again, &spec).unwrap();
        assert_eq!(
            std::fs::read(again.join("tokenizer.json")).unwrap(),
            tok_bytes
        );
        assert_eq!(
            std::fs::read(again.join("model.safetensors")).unwrap(),
            std::fs::read(dir.join("model.safetensors")).unwrap()
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
