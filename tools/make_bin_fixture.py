#!/usr/bin/env python3
"""Writes features/tests/fixtures/models/clip_a_bin/: the clip_a fixture's weights saved as a
PyTorch pickle (`pytorch_model.bin`, what `torch.save(model.state_dict())` writes), with its
config and preprocessor config, so the tests can check that a .bin checkpoint loads to the same
model (same outputs, same weight fingerprint) as its safetensors twin.

Usage: .tools/ref-venv/bin/python tools/make_bin_fixture.py   (needs torch and safetensors)
"""
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent / "features/tests/fixtures/models"
src, dst = ROOT / "clip_a", ROOT / "clip_a_bin"
dst.mkdir(exist_ok=True)
state = load_file(str(src / "model.safetensors"))
torch.save(state, dst / "pytorch_model.bin")
for name in ("config.json", "preprocessor_config.json"):
    shutil.copy(src / name, dst / name)
print(f"wrote {dst} ({len(state)} tensors)")
