#!/usr/bin/env python3
"""Ratio table: gapprobe bench vs the PyTorch anchor measured in the same device call.

Usage: ratio_table.py OUT_DIR   (reads OUT_DIR/*.json from torch_baseline.py and
OUT_DIR/gapprobe_bench.txt from `gapprobe bench`)."""
import glob
import json
import sys
from pathlib import Path


def main(out: str) -> None:
    rows = []
    for path in glob.glob(str(Path(out) / "*.json")):
        try:
            rows += json.load(open(path)).get("summary_rows", [])
        except (OSError, ValueError):
            pass
    ours = {}
    for line in open(Path(out) / "gapprobe_bench.txt"):
        parts = line.split()
        if len(parts) == 6 and parts[0] in ("encoder", "e2e-jpeg"):
            ours[(parts[0], parts[1], parts[2])] = float(parts[4])
    print("| what | dtype | batch | PyTorch img/s | gapprobe img/s | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if not r.get("ips"):
            continue
        dtype = str(r.get("dtype", "")).replace("fp16", "f16")
        batch = str(r.get("batch", ""))
        kind = "e2e-jpeg" if r.get("section") == "pipeline" else "encoder" if r.get("section") in ("encoder", "compile") else None
        if kind is None:
            continue
        mine = ours.get((kind, dtype, batch))
        ratio = f"{mine / r['ips']:.2f}×" if mine else "-"
        print(f"| {r['section']}: {r['what']} | {dtype} | {batch} | {r['ips']:.1f} | {mine or '-'} | {ratio} |")
    for (kind, dtype, batch), ips in sorted(ours.items()):
        print(f"| gapprobe {kind} | {dtype} | {batch} | | {ips:.1f} | |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gapprobe-device")
