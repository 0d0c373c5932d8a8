#!/usr/bin/env python3
"""What transformers' greedy `generate` answers with the tiny LLaVA of make_llm_fixtures.py.

Reference for gapprobe's KV-cached greedy decoding (features/src/models/generate.rs) and for the
`zero-shot` command. Reads features/tests/fixtures/llm/llava_tiny/ (its weights, tokenizer and
expected.safetensors: the pixels and input ids make_llm_fixtures.py recorded) and writes
features/tests/fixtures/llm/generation.json:
  max_new_tokens          the decoding budget of every case
  images[name]            {ids, text}: generate(input_ids, pixel_values, do_sample=False) on the image
                          prompt; ids are the new tokens without the end token, text their decode
                          with skip_special_tokens
  image_eos               {image, eos, ids}: the first image again with eos_token_id set to the 4th
                          token it generated, so the answer stops before it
  texts                   [{prompt, ids, text}]: the text prompts generated one by one
  text_batch              [ids]: the same three prompts in one left-padded batch (padding_side="left",
                          attention_mask), which must give the same ids
  logits/…                (in generation_logits.safetensors) the first step's logits of each image
                          and text prompt [V], float32
The model runs in float32 with eager attention. Run (after make_llm_fixtures.py):
  .tools/ref-venv/bin/python tools/make_generation_fixtures.py
"""
import importlib.metadata as md
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlavaForConditionalGeneration

ROOT = os.path.join(os.path.dirname(__file__), "..", "features", "tests", "fixtures", "llm")
MODEL_DIR = os.path.join(ROOT, "llava_tiny")
MAX_NEW = 12


def main():
    manifest = json.load(open(os.path.join(ROOT, "manifest.json")))
    expected = load_file(os.path.join(MODEL_DIR, "expected.safetensors"))
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = LlavaForConditionalGeneration.from_pretrained(MODEL_DIR, attn_implementation="eager").float().eval()
    eos, pad = manifest["eos_id"], manifest["pad_id"]
    greedy = dict(do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=eos, pad_token_id=pad,
                  num_beams=1, temperature=None, top_p=None, top_k=None)

    def new_ids(out, prompt_len, stop=eos):
        ids = out[prompt_len:].tolist()
        return ids[:ids.index(stop)] if stop in ids else ids

    logits = {}
    result = {"max_new_tokens": MAX_NEW, "eos_id": eos, "images": {}, "texts": [],
              "image_prompt": manifest["image_prompt"], "text_prompt": manifest["text_prompt"]}
    with torch.no_grad():
        for name in manifest["images"]:
            ids = expected[f"ids/image/{name}"][None].long()
            pixels = expected[f"pixels/{name}"][None]
            out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), **greedy)
            gen = new_ids(out[0], ids.shape[1])
            result["images"][name] = {"ids": gen, "text": tok.decode(gen, skip_special_tokens=True)}
            first = model(input_ids=ids, pixel_values=pixels).logits[0, -1]
            logits[f"logits/image/{name}"] = first.float().contiguous()
            assert int(first.argmax()) == (gen[0] if gen else eos)

        name = manifest["images"][0]
        gen = result["images"][name]["ids"]
        assert len(gen) >= 4, gen
        stop = gen[3]
        ids = expected[f"ids/image/{name}"][None].long()
        out = model.generate(input_ids=ids, pixel_values=expected[f"pixels/{name}"][None],
                             attention_mask=torch.ones_like(ids), **{**greedy, "eos_token_id": stop})
        result["image_eos"] = {"image": name, "eos": stop, "ids": new_ids(out[0], ids.shape[1], stop)}
        assert result["image_eos"]["ids"] == gen[:gen.index(stop)]

        prompts = [manifest["text_prompt"].format(text=t) for t in manifest["texts"]]
        for i, p in enumerate(prompts):
            ids = tok(p, return_tensors="pt")["input_ids"]
            assert ids[0].tolist() == expected[f"ids/text/{i}"].tolist()
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **greedy)
            gen = new_ids(out[0], ids.shape[1])
            result["texts"].append({"prompt": p, "ids": gen, "text": tok.decode(gen, skip_special_tokens=True)})
            logits[f"logits/text/{i}"] = model(input_ids=ids).logits[0, -1].float().contiguous()

        tok.padding_side = "left"
        enc = tok(prompts, padding=True, return_tensors="pt")
        out = model.generate(**enc, **greedy)
        width = enc["input_ids"].shape[1]
        result["text_batch"] = [new_ids(row, width) for row in out]
        assert result["text_batch"] == [t["ids"] for t in result["texts"]], result

    result["versions"] = {p: md.version(p) for p in ("torch", "transformers", "tokenizers")}
    with open(os.path.join(ROOT, "generation.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    save_file(logits, os.path.join(ROOT, "generation_logits.safetensors"))
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}, ensure_ascii=False)[:2000])


if __name__ == "__main__":
    main()
