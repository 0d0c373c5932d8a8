#!/usr/bin/env python3
"""A tiny LLaVA (CLIP tower + projector + LLaMA decoder), its tokenizer, and what transformers computes.

Reference for gapprobe's own LLaMA decoder and prompt handling. Writes features/tests/fixtures/llm/:
  llava_tiny/         LlavaForConditionalGeneration as save_pretrained writes it (config.json,
                      model.safetensors), the tokenizer (tokenizer.json, tokenizer_config.json, ...) and
                      preprocessor_config.json as make_model_fixtures.py writes it for llava_hf
                      (transformers 5 writes no special_tokens_map.json: bos/eos/unk/pad are in
                      tokenizer_config.json; weights are saved under the legacy names
                      language_model.model.*, language_model.lm_head.weight, vision_tower.*,
                      multi_modal_projector.*; rope_theta is text_config.rope_parameters.rope_theta)
  llava_tiny/expected.safetensors   (float32, ids int64; batch dims dropped)
      ids/image/<image>             input_ids of the image prompt after `<image>` is expanded [T]
      ids/text/<i>                  input_ids of the text prompt for text i [T]
      pixels/<image>                pixel_values from LlavaProcessor [C, H, W]
      projector/<image>             projector output that replaces the `<image>` tokens [T_img, D]
      hidden/image/<image>/<k>      language model hidden_states[k], k = 0..=num_hidden_layers [T, D]
      hidden/text/<i>/<k>           the same for text prompt i
      prenorm/image/<image>         last decoder layer's output before the final RMSNorm [T, D]
      prenorm/text/<i>
      ids/text_batch                the 3 text prompts right-padded with pad_id [3, T_max]
      mask/text_batch               their attention_mask (1 real, 0 pad) [3, T_max]
      hidden/text_batch/<k>         hidden_states[k] of that batched run [3, T_max, D]
  manifest.json       model folder, images, texts, prompt templates, token ids, sizes, versions, and
                      whether hidden_states[-1] is after the final norm

The tokenizer is LLaMA-like and built with the `tokenizers` library: normalizer Prepend("▁") +
Replace(" ", "▁"), no pre-tokenizer, BPE with byte_fallback (the 256 `<0xNN>` tokens at ids 3..258),
`<unk>`=0 `<s>`=1 `</s>`=2, special added token `<image>`, post-processor "<s> $A", LLaMA's decoder.
It is wrapped in PreTrainedTokenizerFast (not LlamaTokenizer: transformers 5 rebuilds that one with a
Metaspace pre-tokenizer instead of keeping tokenizer.json's pipeline). "é" is kept out of the training
corpus so text 1 exercises byte fallback; "\\n" is byte-fallback too, as in LLaMA.

Images are read from features/tests/fixtures/models/images/ (written by make_model_fixtures.py).

Run:  python -m venv .tools/ref-venv && .tools/ref-venv/bin/pip install -r tools/requirements-fixtures.txt
      .tools/ref-venv/bin/python tools/make_llm_fixtures.py
"""
import importlib.metadata as md
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import Split
from tokenizers.trainers import BpeTrainer
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import clip_pp, load_rgb, processor, randomise, write_json  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "features", "tests", "fixtures")
ROOT = os.path.join(FIXTURES, "llm")
IMAGES_DIR = os.path.join(FIXTURES, "models", "images")
MODEL = "llava_tiny"
IMAGES = ["wide", "tall"]
TEXTS = ["bill shape: dagger; wing color: blue, white", "crown color: café-au-lait", "size: small"]
IMAGE_PROMPT = "USER: <image>\nWhat is this? ASSISTANT:"
TEXT_PROMPT = "USER: {text}\nWhat is this? ASSISTANT:"
SEED = 11

CORPUS = [
    "USER: What is this? ASSISTANT: a bird",
    "USER: What is this?", "ASSISTANT: This is a small bird.",
    "bill shape: dagger; wing color: blue, white",
    "bill shape: cone; wing color: brown, black",
    "bill shape: hooked; wing color: grey, white",
    "bill shape: curved; wing color: red, black",
    "bill shape: all-purpose; wing color: yellow, olive",
    "crown color: blue", "crown color: black", "crown color: red", "crown color: brown",
    "crown color: buff; breast color: white", "breast pattern: solid", "breast pattern: striped",
    "size: small", "size: medium", "size: large", "size: very small",
    "tail shape: notched", "tail shape: rounded", "upper tail color: grey",
    "eye color: black", "leg color: orange", "belly color: white", "back color: olive",
    "shape: perching-like", "shape: duck-like", "primary color: blue",
]


def build_tokenizer():
    """Trains a small BPE on CORPUS and assembles a LLaMA-style tokenizer around it."""
    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok = Tokenizer(BPE(unk_token="<unk>"))
    trainer_tok.normalizer = norm
    # Words only while training (as sentencepiece does); no merge crosses a "▁", so the final
    # tokenizer (without a pre-tokenizer, like LLaMA's tokenizer.json) gives the same pieces.
    trainer_tok.pre_tokenizer = Split("▁", behavior="merged_with_next")
    trainer = BpeTrainer(vocab_size=110, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    trainer_tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    trained = trainer_tok.get_vocab()
    assert "é" not in trained
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(trained.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in json.loads(trainer_tok.to_str())["model"]["merges"]]

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = norm
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", padding_side="right", clean_up_tokenization_spaces=False,
                                   model_max_length=256)


def last_layer_hook(model):
    """Captures the last decoder layer's output (before the final RMSNorm)."""
    box = {}

    def hook(_m, _inp, out):
        box["out"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    model.model.language_model.layers[-1].register_forward_hook(hook)
    return box


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    d = os.path.join(ROOT, MODEL)
    os.makedirs(d)
    torch.manual_seed(SEED)

    tokenizer = build_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    pad_id = tokenizer.pad_token_id

    n_layers, hidden = 3, 32
    vcfg = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=2, image_size=28, patch_size=14, hidden_act="quick_gelu")
    tcfg = LlamaConfig(hidden_size=hidden, intermediate_size=48, num_hidden_layers=n_layers, num_attention_heads=4,
                       num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=256,
                       vocab_size=len(tokenizer), tie_word_embeddings=False, hidden_act="silu",
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=pad_id)
    n_img_tokens = (28 // 14) ** 2  # CLS dropped by the "default" strategy
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg.to_dict(), vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_token_index=image_id,
                      projector_hidden_act="gelu", image_seq_length=n_img_tokens, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(cfg).float()
    model.config._attn_implementation = "eager"
    model = randomise(model, SEED)
    assert model.config.image_token_id == image_id
    assert model.model.language_model.config._attn_implementation == "eager"

    pp = clip_pp(28, 28)
    pp["image_processor_type"] = "LlavaImageProcessor"
    pp["do_pad"] = True
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    write_json(os.path.join(d, "preprocessor_config.json"), pp)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))

    # The saved tokenizer.json must give the same ids on its own (the Rust side loads only it) and
    # through AutoTokenizer.
    raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    reloaded = AutoTokenizer.from_pretrained(d)

    # num_additional_image_tokens=1 (the CLS): LlavaProcessor counts (H/p)*(W/p) + this, less 1 for "default".
    proc = LlavaProcessor(image_processor=processor(pp), tokenizer=tokenizer, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)

    prenorm = last_layer_hook(model)
    tensors = {}
    tail_matches = []

    def record(prefix, out, ids):
        hs = out.hidden_states
        assert len(hs) == n_layers + 1, len(hs)
        for k, h in enumerate(hs):
            tensors[f"hidden/{prefix}/{k}"] = h[0]
        pre = prenorm["out"][0]
        tensors[f"prenorm/{prefix}"] = pre
        normed = model.model.language_model.norm(pre)
        tail_matches.append((torch.equal(normed, hs[-1][0]), torch.allclose(pre, hs[-1][0])))

    with torch.no_grad():
        for name in IMAGES:
            img = load_rgb(os.path.join(IMAGES_DIR, f"{name}.png"))
            enc = proc(images=img, text=IMAGE_PROMPT, return_tensors="pt")
            ids = enc["input_ids"]
            assert int((ids == image_id).sum()) == n_img_tokens, ids
            assert ids[0, 0].item() == tokenizer.bos_token_id
            out = model(input_ids=ids, pixel_values=enc["pixel_values"], attention_mask=enc["attention_mask"],
                        output_hidden_states=True)
            tensors[f"ids/image/{name}"] = ids[0]
            tensors[f"pixels/{name}"] = enc["pixel_values"][0]
            direct = processor(pp)(images=img, return_tensors="pt")["pixel_values"]
            assert torch.equal(direct, enc["pixel_values"])
            proj = out.image_outputs.pooler_output[0]  # a list, one [T_img, D] per image
            tower = model.model.vision_tower(pixel_values=enc["pixel_values"], output_hidden_states=True)
            manual = model.model.multi_modal_projector(tower.hidden_states[-2][0, 1:])
            assert torch.allclose(manual, proj, atol=1e-6)
            assert proj.shape == (n_img_tokens, hidden), proj.shape
            tensors[f"projector/{name}"] = proj
            # hidden_states[0] holds the projector output at the <image> positions
            assert torch.allclose(out.hidden_states[0][0][ids[0] == image_id], proj)
            record(f"image/{name}", out, ids)

        text_ids = []
        for i, text in enumerate(TEXTS):
            prompt = TEXT_PROMPT.format(text=text)
            ids = tokenizer(prompt, add_special_tokens=True, return_tensors="pt")["input_ids"]
            assert ids[0].tolist() == raw.encode(prompt, add_special_tokens=True).ids
            assert ids[0].tolist() == reloaded(prompt)["input_ids"]
            assert tokenizer.decode(ids[0], skip_special_tokens=True) == prompt
            text_ids.append(ids[0])
            out = model(input_ids=ids, output_hidden_states=True)
            tensors[f"ids/text/{i}"] = ids[0]
            record(f"text/{i}", out, ids)
        for name in IMAGES:
            assert tensors[f"ids/image/{name}"].tolist() == raw.encode(
                IMAGE_PROMPT.replace("<image>", "<image>" * n_img_tokens)).ids

        # Right-padded batch of the three texts.
        t_max = max(len(t) for t in text_ids)
        batch = torch.full((len(TEXTS), t_max), pad_id, dtype=torch.long)
        mask = torch.zeros((len(TEXTS), t_max), dtype=torch.long)
        for i, t in enumerate(text_ids):
            batch[i, :len(t)] = t
            mask[i, :len(t)] = 1
        enc = tokenizer([TEXT_PROMPT.format(text=t) for t in TEXTS], padding=True, return_tensors="pt")
        assert torch.equal(enc["input_ids"], batch) and torch.equal(enc["attention_mask"], mask)
        out = model(input_ids=batch, attention_mask=mask, output_hidden_states=True)
        tensors["ids/text_batch"] = batch
        tensors["mask/text_batch"] = mask
        max_diff = 0.0
        for k, h in enumerate(out.hidden_states):
            tensors[f"hidden/text_batch/{k}"] = h
            for i, t in enumerate(text_ids):
                max_diff = max(max_diff, (h[i, :len(t)] - tensors[f"hidden/text/{i}/{k}"]).abs().max().item())

    # The saved checkpoint reproduces the outputs.
    again = LlavaForConditionalGeneration.from_pretrained(d, attn_implementation="eager").eval()
    with torch.no_grad():
        hs = again(input_ids=text_ids[0][None], output_hidden_states=True).hidden_states
    assert all(torch.equal(h[0], tensors[f"hidden/text/0/{k}"]) for k, h in enumerate(hs))

    assert all(a for a, _ in tail_matches) and not any(b for _, b in tail_matches), tail_matches
    save_file({k: (v.clone().contiguous() if v.dtype == torch.long else v.float().clone().contiguous())
               for k, v in tensors.items()}, os.path.join(d, "expected.safetensors"))

    versions = {p: md.version(p) for p in ("torch", "transformers", "tokenizers", "safetensors", "pillow", "numpy")}
    write_json(os.path.join(ROOT, "manifest.json"), {
        "model": MODEL,
        "images": IMAGES,
        "images_dir": "../models/images",
        "texts": TEXTS,
        "image_prompt": IMAGE_PROMPT,
        "text_prompt": TEXT_PROMPT,
        "image_token": "<image>",
        "image_token_id": image_id,
        "num_image_tokens": n_img_tokens,
        "num_hidden_layers": n_layers,
        "hidden_size": hidden,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": pad_id,
        "padding_side": "right",
        "batch_vs_single_max_abs_diff": max_diff,
        "versions": versions,
        "hidden_states_note": (
            "hidden_states[0] is the input embeddings (projector output at the <image> positions); "
            "hidden_states[k] for 1 <= k < num_hidden_layers is decoder layer k-1's output; "
            "hidden_states[num_hidden_layers] (= hidden_states[-1]) is AFTER the final RMSNorm "
            "(model.norm applied to the last decoder layer's output, checked bit-exact); the pre-norm "
            "output of the last decoder layer is stored as prenorm/<arm>/<name>."),
        "hidden_states_last_is_post_norm": True,
    })
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"wrote {ROOT}: {total / 1e6:.3f} MB; batch vs single max abs diff {max_diff:.3g}")


if __name__ == "__main__":
    main()
