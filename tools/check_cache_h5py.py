#!/usr/bin/env python3
"""Interoperability check run by `make test`: a cache entry written by gapprobe must be readable
with plain h5py + numpy, with the documented layout, dtypes, labels and provenance attributes.

Runs a tiny demo with the binary in $GAPPROBE_BIN into a temporary folder, then reads every entry.
"""
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

PROVENANCE = [
    "model_id", "model_revision", "weights_fingerprint", "config_hash", "preprocess",
    "feature_point", "compute_dtype", "device", "gapprobe_version", "dataset", "manifest_hash",
]


def main() -> int:
    binary = os.environ.get("GAPPROBE_BIN", "target/release/gapprobe")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        subprocess.run([binary, "-q", "demo", "--out", str(out), "--train-per-class", "4",
                        "--test-per-class", "2"], check=True)
        manifest = list(csv.DictReader(open(out / "data" / "manifest.csv")))
        by_id = {row["id"]: row for row in manifest}
        entries = sorted((out / "cache").rglob("*.h5"))
        assert len(entries) == 3, entries
        for path in entries:
            with h5py.File(path, "r") as f:
                attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
                for k in PROVENANCE + ["key", "provenance", "created", "complete"]:
                    assert k in attrs, f"{path}: attribute {k} missing"
                assert int(attrs["complete"]) == 1
                prov = json.loads(attrs["provenance"])
                assert all(prov[k] == attrs[k] for k in PROVENANCE), "provenance JSON and attributes disagree"
                levels = {lvl: [s.decode() if isinstance(s, bytes) else s for s in f["classes"][lvl][()]]
                          for lvl in f["classes"]}
                assert set(levels) == {"superordinate", "coarse", "fine"}, levels
                assert len(levels["fine"]) == 24 and len(levels["coarse"]) == 6
                for split, per_class in (("train", 4), ("test", 2)):
                    g = f[split]
                    x = g["features"][()]
                    assert x.dtype == np.float32, x.dtype
                    assert x.ndim == 2 and x.shape[0] == 24 * per_class, x.shape
                    assert np.isfinite(x).all()
                    ids = [s.decode() if isinstance(s, bytes) else s for s in g["ids"][()]]
                    assert len(ids) == x.shape[0]
                    for lvl, names in levels.items():
                        y = g["labels"][lvl][()]
                        assert y.dtype == np.int32 and y.shape == (x.shape[0],)
                        for i, label in zip(ids, y):
                            assert names[label] == by_id[i][lvl], (path, i, lvl)
                print(f"ok  {path.relative_to(out)}  {prov['feature_point']}  "
                      f"train {f['train/features'].shape}  test {f['test/features'].shape}")
    print("h5py check: 3 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
