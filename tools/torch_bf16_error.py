#!/usr/bin/env python3
"""PyTorch's own bf16 error at the paper's feature points: the yardstick for gapprobe's.

Builds the random-init CLIP ViT-L/14-336 + LLaVA-1.5 projector of ../shared/anchors/torch_baseline.py
once in float32, casts a copy to bfloat16 (eager, SDPA), runs both on the same pixels and prints
||bf16 - f32|| / ||f32|| for the layer -2 patch tokens and for the projector output -- the measure
`gapprobe bench` prints for its own bf16 path (issue 4 asks for <= 1e-2). TF32 is off for the
float32 reference.

Usage (GPU machine, repository root; tools/device_bench.sh runs it):
    python3 tools/torch_bf16_error.py [--anchor .device/torch_baseline.py] [--device cuda]
        [--batch 8] [--smoke]        # --smoke: the anchor's tiny model (a CPU check of this script)
        [--f32-residual]             # also: bf16 layers around a float32 residual stream

--f32-residual is the yardstick for gapprobe's `GAPPROBE_RESIDUAL=f32` variant: LayerNorms read the
float32 stream and hand bf16 to the layers, and each layer's output is added in float32.
"""
import argparse
import copy
import importlib.util


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor", default=".device/torch_baseline.py")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--f32-residual", action="store_true")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("torch_baseline", args.anchor)
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cfg, dims = (tb.SMOKE_CLIP, tb.SMOKE_PROJ) if args.smoke else (tb.CLIP_L336, tb.LLAVA_PROJ)
    model = tb.build_clip(cfg, args.device, torch.float32)
    proj = tb.build_projector(dims, args.device, torch.float32)
    model16 = copy.deepcopy(model).to(torch.bfloat16)
    proj16 = copy.deepcopy(proj).to(torch.bfloat16)
    size = cfg["image_size"]
    px = torch.randn(args.batch, 3, size, size, device=args.device)
    with torch.no_grad():
        feats, out = tb.llava_forward(model, proj, px)
        feats16, out16 = tb.llava_forward(model16, proj16, px.to(torch.bfloat16))

    def rel(a, ref):
        return ((a.float() - ref).norm() / ref.norm().clamp_min(1e-30)).item()

    if args.f32_residual:
        with torch.no_grad():
            feats32r, out32r = f32_residual_forward(model16, proj16, px, cfg["num_hidden_layers"] - 1)
        print(f"torch bf16 layers around an f32 residual stream vs f32: layer -2 patch tokens "
              f"{rel(feats32r, feats):.2e}, projector output {rel(out32r, out):.2e}", flush=True)
    print(f"torch eager bf16 vs f32 (batch {args.batch}, {'smoke' if args.smoke else 'CLIP-L/336 + LLaVA projector'}): "
          f"layer -2 patch tokens {rel(feats16, feats):.2e}, projector output {rel(out16, out):.2e}", flush=True)


def f32_residual_forward(model16, proj16, px, layers):
    """`layers` encoder layers of the bf16 model around a float32 residual stream; the patch tokens
    after the last and the projector on them (bf16)."""
    import torch
    import torch.nn.functional as F

    vm = getattr(model16, "vision_model", model16)

    def ln(x, norm):
        return F.layer_norm(x, x.shape[-1:], norm.weight.float(), norm.bias.float(), norm.eps)

    x = ln(vm.embeddings(px.to(torch.bfloat16)).float(), vm.pre_layrnorm)
    for layer in vm.encoder.layers[:layers]:
        a, _ = layer.self_attn(hidden_states=ln(x, layer.layer_norm1).to(torch.bfloat16), attention_mask=None)
        x = x + a.float()
        x = x + layer.mlp(ln(x, layer.layer_norm2).to(torch.bfloat16)).float()
    feats = x[:, 1:]
    return feats, proj16(feats.to(torch.bfloat16))


if __name__ == "__main__":
    main()
