#!/usr/bin/env python3
"""Ratio table: gapprobe bench vs the PyTorch anchor measured in the same device call.

Usage: ratio_table.py OUT_DIR   (reads OUT_DIR/*.json from torch_baseline.py and
OUT_DIR/gapprobe_bench*.txt from `gapprobe bench`: gapprobe_bench.txt is the default build's
run, gapprobe_bench_NAME.txt a variant, e.g. another attention kernel)."""
import glob
import json
import sys
from pathlib import Path


def read_bench(path: Path) -> dict:
    ours = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 6 and parts[0] in ("encoder", "e2e-jpeg"):
            ours[(parts[0], parts[1], parts[2])] = float(parts[4])
    return ours


def main(out: str) -> None:
    rows = []
    for path in glob.glob(str(Path(out) / "*.json")):
        try:
            rows += json.load(open(path)).get("summary_rows", [])
        except (OSError, ValueError):
            pass
    variants = {}
    for path in sorted(Path(out).glob("gapprobe_bench*.txt")):
        name = path.stem[len("gapprobe_bench"):].lstrip("_") or "default"
        variants[name] = read_bench(path)
    print("| what | dtype | batch | PyTorch img/s | gapprobe | gapprobe img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if not r.get("ips"):
            continue
        dtype = str(r.get("dtype", "")).replace("fp16", "f16")
        batch = str(r.get("batch", ""))
        section = r.get("section")
        kind = "e2e-jpeg" if section == "pipeline" else "encoder" if section in ("encoder", "compile") else None
        if kind is None:
            continue
        for name, ours in variants.items():
            mine = ours.get((kind, dtype, batch))
            if mine is None and name != "default":
                continue
            ratio = f"{mine / r['ips']:.2f}×" if mine else "-"
            print(f"| {section}: {r['what']} | {dtype} | {batch} | {r['ips']:.1f} | {name} | {mine or '-'} | {ratio} |")
    for name, ours in variants.items():
        for (kind, dtype, batch), ips in sorted(ours.items()):
            print(f"| gapprobe {kind} | {dtype} | {batch} | | {name} | {ips:.1f} | |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gapprobe-device")
