#!/usr/bin/env python3
"""Tiny random-weight checkpoints and the outputs transformers computes from them.

Writes features/tests/fixtures/models/:
  images/*            inputs: non-square RGB, grayscale, RGBA, CMYK JPEG, EXIF-rotated JPEG, a tall
                      image for pad-to-square
  <model>/            a checkpoint as transformers saves it (config.json, model.safetensors,
                      preprocessor_config.json), or written by hand in the original LLaVA layout
  <model>/expected.safetensors
                      pixels/<image>            [C, H, W] from the slow (PIL) image processor
                      <image>/<feature point>   expected feature, e.g. wide/vision.layer[-2].patch.mean
                                                (`.patch.none` is stored only as `.all.none`)
  manifest.json       models, their tower (for projector-only checkpoints), images, feature points

Run:  python -m venv .tools/ref-venv && .tools/ref-venv/bin/pip install -r tools/requirements-fixtures.txt
      .tools/ref-venv/bin/python tools/make_model_fixtures.py
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ROOT = os.path.join(os.path.dirname(__file__), "..", "features", "tests", "fixtures", "models")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def randomise(model, seed):
    """Replaces every parameter with N(0, 0.15) noise (norm scales 1 + noise) so that errors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.15
            base = 1.0 if ("norm" in name and name.endswith("weight")) or "lambda1" in name else 0.0
            p.copy_(base + noise)
    return model.eval()


def smooth_image(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(4):
        fx, fy, ph = rng.uniform(0.05, 0.4, 3)
        v = 127 + 90 * np.sin(fx * x + ph * 6) * np.cos(fy * y) + rng.normal(0, 25, (h, w))
        chans.append(np.clip(v, 0, 255).astype(np.uint8))
    arr = np.stack(chans, -1)
    if mode == "L":
        return Image.fromarray(arr[..., 0], "L")
    if mode == "RGBA":
        return Image.fromarray(arr, "RGBA")
    if mode == "CMYK":
        return Image.fromarray(arr, "CMYK")
    return Image.fromarray(arr[..., :3], "RGB")


def make_images():
    d = os.path.join(ROOT, "images")
    os.makedirs(d, exist_ok=True)
    smooth_image(61, 43, 1).save(os.path.join(d, "wide.png"))
    smooth_image(40, 52, 2, "L").save(os.path.join(d, "gray.png"))
    smooth_image(50, 50, 3, "RGBA").save(os.path.join(d, "rgba.png"))
    smooth_image(30, 71, 4).save(os.path.join(d, "tall.png"))
    smooth_image(48, 36, 5, "CMYK").save(os.path.join(d, "cmyk.jpg"), quality=95, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    smooth_image(44, 30, 6).save(os.path.join(d, "exif.jpg"), quality=95, subsampling=0, exif=exif)
    images = {n.split(".")[0]: os.path.join(d, n) for n in sorted(os.listdir(d))}
    # JPEG decoders may differ by a level or two (libjpeg-turbo's IDCT vs others'): PIL's decoded,
    # orientation-applied RGB is kept so the tests can check preprocessing apart from decoding.
    dd = os.path.join(ROOT, "decoded")
    os.makedirs(dd, exist_ok=True)
    for name in ("cmyk", "exif"):
        load_rgb(images[name]).save(os.path.join(dd, f"{name}.png"))
    return images


def load_rgb(path):
    """What gapprobe's loader must reproduce: EXIF orientation applied, then PIL convert("RGB")."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def expand2square(img, mean):
    """LLaVA's expand2square with tuple(int(x*255) for x in image_mean)."""
    w, h = img.size
    bg = tuple(int(x * 255) for x in mean)
    if w == h:
        return img
    s = max(w, h)
    out = Image.new(img.mode, (s, s), bg)
    out.paste(img, (0, (s - h) // 2) if w > h else ((s - w) // 2, 0))
    return out


def processor(pp):
    kind = pp["image_processor_type"]
    args = {k: v for k, v in pp.items() if k != "image_processor_type"}
    cls = {
        "CLIPImageProcessor": CLIPImageProcessorPil,
        "SiglipImageProcessor": SiglipImageProcessorPil,
        "BitImageProcessor": BitImageProcessorPil,
        "LlavaImageProcessor": LlavaImageProcessorPil,
    }[kind]
    return cls(**args)


def clip_pp(size, crop, **kw):
    return dict(image_processor_type="CLIPImageProcessor", do_resize=True, size={"shortest_edge": size},
                resample=3, do_center_crop=True, crop_size={"height": crop, "width": crop}, do_rescale=True,
                rescale_factor=1 / 255, do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                do_convert_rgb=True, **kw)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def points_for(n_layers, has_cls, prefix, hidden_states, projector=None):
    """Every feature point of every hidden state (indices alternate positive / negative)."""
    out = {}
    for k in range(n_layers + 1):
        idx = k if k % 2 == 0 else k - n_layers - 1
        h = hidden_states[k][0]
        base = f"vision.layer[{idx}]"
        if has_cls:
            out[f"{base}.cls"] = h[0]
        out[f"{base}.patch.mean"] = h[prefix:].mean(0)
        # `{base}.patch.none` is `{base}.all.none` without the first `prefix` tokens: the tests
        # slice it from there (not stored twice, to keep the fixtures small).
        out[f"{base}.all.mean"] = h.mean(0)
        out[f"{base}.all.none"] = h
    if projector is not None:
        out["projector.none"] = projector[0]
        out["projector.mean"] = projector[0].mean(0)
    return out


def run_model(name, pp, images, pad, forward):
    """Preprocesses every image as transformers does and records the expected outputs."""
    proc = processor(pp)
    tensors = {}
    for img_name, path in images.items():
        img = load_rgb(path)
        if pad:
            img = expand2square(img, pp["image_mean"])
        pix = proc(images=img, return_tensors="pt")["pixel_values"]
        tensors[f"pixels/{img_name}"] = pix[0]
        with torch.no_grad():
            for point, t in forward(pix).items():
                tensors[f"{img_name}/{point}"] = t
    save_file({k: v.float().clone().contiguous() for k, v in tensors.items()},
              os.path.join(ROOT, name, "expected.safetensors"))
    return sorted({k.split("/", 1)[1] for k in tensors if not k.startswith("pixels/")})


def vision_forward(model, n_layers, has_cls, prefix, project=None):
    def f(pix):
        hs = model(pixel_values=pix, output_hidden_states=True).hidden_states
        assert len(hs) == n_layers + 1
        return points_for(n_layers, has_cls, prefix, hs, project(hs) if project else None)
    return f


def save_hf(model, name, pp):
    d = os.path.join(ROOT, name)
    model.save_pretrained(d, safe_serialization=True)
    write_json(os.path.join(d, "preprocessor_config.json"), pp)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    return d


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    images = make_images()
    manifest = {"models": {}, "images": sorted(images)}
    torch.manual_seed(0)

    # --- CLIP: a standalone vision tower with odd sizes (patch 7, image 35), quick_gelu.
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                           image_size=35, patch_size=7, hidden_act="quick_gelu", projection_dim=16)
    clip_a = randomise(CLIPVisionModel(cfg), 1)
    pp = clip_pp(37, 35)
    save_hf(clip_a, "clip_a", pp)
    pts = run_model("clip_a", pp, images, False, vision_forward(clip_a, 3, True, 1))
    manifest["models"]["clip_a"] = {"family": "clip", "points": pts}

    # --- CLIP: a full CLIPModel (text + vision, `vision_model.*` keys), gelu, patch 8, image 32.
    cfg = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=50, max_position_embeddings=16),
                     vision_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8, hidden_act="gelu"),
                     projection_dim=8)
    clip_b = randomise(CLIPModel(cfg), 2)
    pp = clip_pp(32, 32)
    save_hf(clip_b, "clip_b", pp)
    pts = run_model("clip_b", pp, images, False, vision_forward(clip_b.vision_model, 2, True, 1))
    manifest["models"]["clip_b"] = {"family": "clip", "points": pts}

    # --- llava-hf: LlavaForConditionalGeneration with a CLIP tower and a 1-layer Llama.
    vcfg = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                num_attention_heads=2, image_size=28, patch_size=7, hidden_act="quick_gelu")
    tcfg = LlamaConfig(hidden_size=40, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=80, max_position_embeddings=64)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg.to_dict(), vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_token_index=79,
                      projector_hidden_act="gelu", image_seq_length=16)
    llava = randomise(LlavaForConditionalGeneration(cfg), 3)
    pp = clip_pp(28, 28)
    pp["image_processor_type"] = "LlavaImageProcessor"
    pp["do_pad"] = True
    save_hf(llava, "llava_hf", pp)
    tower = llava.model.vision_tower
    proj = llava.model.multi_modal_projector
    pts = run_model("llava_hf", pp, images, False,
                    vision_forward(tower, 3, True, 1, lambda hs: proj(hs[-2][:, 1:])))
    manifest["models"]["llava_hf"] = {"family": "clip", "points": pts}

    # --- original LLaVA-1.5 layout: projector-only checkpoint (model.mm_projector.0/2) whose tower is
    # the CLIP named by mm_vision_tower (here clip_a), image_aspect_ratio: pad, select layer -2, patch.
    g = torch.Generator().manual_seed(4)
    w = lambda *s: torch.randn(*s, generator=g) * 0.15
    llm = 40
    tensors = {"model.mm_projector.0.weight": w(llm, 32), "model.mm_projector.0.bias": w(llm),
               "model.mm_projector.2.weight": w(llm, llm), "model.mm_projector.2.bias": w(llm),
               "model.embed_tokens.weight": w(80, llm), "model.layers.0.mlp.down_proj.weight": w(llm, 64)}
    d = os.path.join(ROOT, "llava_orig")
    os.makedirs(d)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    write_json(os.path.join(d, "config.json"), dict(
        architectures=["LlavaLlamaForCausalLM"], model_type="llava_llama", hidden_size=llm,
        mm_hidden_size=32, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", mm_vision_tower="openai/clip-vit-large-patch14-336",
        image_aspect_ratio="pad", mm_use_im_start_end=False))

    def orig_proj(hs):
        x = hs[-2][:, 1:]
        x = torch.nn.functional.linear(x, tensors["model.mm_projector.0.weight"], tensors["model.mm_projector.0.bias"])
        x = torch.nn.functional.gelu(x)
        return torch.nn.functional.linear(x, tensors["model.mm_projector.2.weight"], tensors["model.mm_projector.2.bias"])

    pp = clip_pp(37, 35)
    pts = run_model("llava_orig", pp, images, True, vision_forward(clip_a, 3, True, 1, orig_proj))
    manifest["models"]["llava_orig"] = {"family": "clip", "tower": "clip_a", "points": pts}

    # --- LLaVA-1.0: one Linear (model.mm_projector), last layer, CLS kept (cls_patch), no padding.
    tensors = {"model.mm_projector.weight": w(llm, 32), "model.mm_projector.bias": w(llm),
               "model.embed_tokens.weight": w(80, llm)}
    d = os.path.join(ROOT, "llava_v1")
    os.makedirs(d)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    write_json(os.path.join(d, "config.json"), dict(
        architectures=["LlavaLlamaForCausalLM"], model_type="llava", hidden_size=llm,
        mm_hidden_size=32, mm_vision_select_layer=-1, mm_vision_select_feature="cls_patch",
        mm_vision_tower="openai/clip-vit-large-patch14"))
    lin = lambda hs: torch.nn.functional.linear(hs[-1], tensors["model.mm_projector.weight"],
                                                tensors["model.mm_projector.bias"])
    pts = run_model("llava_v1", pp, images, False, vision_forward(clip_a, 3, True, 1, lin))
    manifest["models"]["llava_v1"] = {"family": "clip", "tower": "clip_a", "points": pts}

    # --- SigLIP: no CLS token, gelu_pytorch_tanh, resize to a fixed size without crop.
    for name, kw, ppkw, seed in [
        ("siglip_a", dict(hidden_size=32, intermediate_size=44, num_hidden_layers=2, num_attention_heads=4,
                          image_size=30, patch_size=6), dict(resample=3), 5),
        ("siglip_b", dict(hidden_size=24, intermediate_size=36, num_hidden_layers=3, num_attention_heads=3,
                          image_size=33, patch_size=11), dict(resample=2), 6),
    ]:
        cfg = SiglipVisionConfig(**kw)
        m = randomise(SiglipVisionModel(cfg), seed)
        s = kw["image_size"]
        pp = dict(image_processor_type="SiglipImageProcessor", do_resize=True, size={"height": s, "width": s},
                  do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3,
                  image_std=[0.5] * 3, **ppkw)
        save_hf(m, name, pp)
        pts = run_model(name, pp, images, False, vision_forward(m, kw["num_hidden_layers"], False, 0))
        manifest["models"][name] = {"family": "siglip", "points": pts}

    # --- DINOv2: ImageNet stats, shortest edge + crop; position embeddings interpolated when the crop
    # differs from image_size (dinov2_b), registers with antialiased interpolation (dinov2_reg).
    inet_mean, inet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for name, cls, kw, size, crop, seed in [
        ("dinov2_a", (Dinov2Config, Dinov2Model), dict(hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, image_size=28, patch_size=7), 32, 28, 7),
        ("dinov2_b", (Dinov2Config, Dinov2Model), dict(hidden_size=24, num_hidden_layers=3, mlp_ratio=2,
                                                       num_attention_heads=2, image_size=35, patch_size=7), 30, 28, 8),
        ("dinov2_reg", (Dinov2WithRegistersConfig, Dinov2WithRegistersModel),
         dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=21, patch_size=7,
              num_register_tokens=2), 31, 28, 9),
    ]:
        cfg = cls[0](**kw)
        m = randomise(cls[1](cfg), seed)
        pp = dict(image_processor_type="BitImageProcessor", do_resize=True, size={"shortest_edge": size},
                  resample=3, do_center_crop=True, crop_size={"height": crop, "width": crop}, do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, image_mean=inet_mean, image_std=inet_std,
                  do_convert_rgb=True)
        save_hf(m, name, pp)
        prefix = 1 + kw.get("num_register_tokens", 0)
        pts = run_model(name, pp, images, False, vision_forward(m, kw["num_hidden_layers"], True, prefix))
        manifest["models"][name] = {"family": "dinov2", "points": pts}

    write_json(os.path.join(ROOT, "manifest.json"), manifest)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"wrote {ROOT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
