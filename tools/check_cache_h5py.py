#!/usr/bin/env python3
"""Interoperability check run by `make test`: a cache entry written by gapprobe must be readable
with plain h5py + numpy, with the documented layout, dtypes, labels and provenance attributes.

Runs a tiny demo with the binary in $GAPPROBE_BIN into a temporary folder, then reads every field
of every entry and compares the features bit for bit with what gapprobe reads
(`gapprobe cache info --json`: SHA-256 of each split's features as little-endian float32).
Also checks an f16-stored entry, a sharded + merged entry and entries compressed with
`gapprobe cache compress` (deflate, with and without shuffle) the same way.
"""
import hashlib
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
    "feature_point", "compute_dtype", "storage_dtype", "device", "gapprobe_version", "dataset",
    "manifest_hash",
]
OTHER_ATTRS = ["key", "provenance", "created", "complete", "dataset_spec", "format_version", "batch_size"]


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def gapprobe_info(binary, path):
    out = subprocess.run([binary, "cache", "info", "--json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def check_entry(binary, path, by_id, per_split, storage="f32"):
    """Reads every field of one entry with h5py and compares it with gapprobe's view."""
    info = gapprobe_info(binary, path)
    with h5py.File(path, "r") as f:
        attrs = {k: text(v) for k, v in f.attrs.items()}
        for k in PROVENANCE + OTHER_ATTRS:
            assert k in attrs, f"{path}: attribute {k} missing"
        assert int(attrs["complete"]) == 1
        assert "shard_index" not in attrs, f"{path}: a finished entry must not carry shard attributes"
        prov = json.loads(attrs["provenance"])
        # llm.* points also record their input (prompt, tokenizer, texts); other points do not.
        llm = attrs["feature_point"].startswith("llm.")
        want = PROVENANCE + (["llm_input"] if llm else [])
        assert set(prov) == set(want), sorted(prov)
        assert all(prov[k] == attrs[k] for k in want), "provenance JSON and attributes disagree"
        if llm:
            llm_input = json.loads(attrs["llm_input"])
            assert "<image>" in llm_input["prompt"] and len(llm_input["tokenizer"]) == 64, llm_input
            assert ("texts" in llm_input) == attrs["feature_point"].startswith("llm.text."), llm_input
        assert prov == info["provenance"] and attrs["key"] == info["key"]
        canonical = json.dumps(prov, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(canonical).hexdigest() == attrs["key"], "key is not the hash of the provenance"
        assert attrs["storage_dtype"] == storage
        levels = {lvl: [text(s) for s in f["classes"][lvl][()]] for lvl in f["classes"]}
        assert set(levels) == {"superordinate", "coarse", "fine"}, levels
        assert len(levels["fine"]) == 24 and len(levels["coarse"]) == 6
        for lvl, names in levels.items():
            assert names == info["classes"][lvl]
        assert set(f.keys()) == {"classes", "train", "test"}, list(f.keys())
        for split, per_class in per_split:
            g = f[split]
            assert set(g.keys()) == {"features", "ids", "paths", "labels", "rows_done"}, list(g.keys())
            x = g["features"][()]
            assert x.dtype == (np.float16 if storage == "f16" else np.float32), x.dtype
            assert x.ndim == 2 and x.shape[0] == 24 * per_class, x.shape
            assert np.isfinite(x).all()
            assert int(g["rows_done"][0]) == x.shape[0]
            x32 = x.astype("<f4")
            sha = hashlib.sha256(np.ascontiguousarray(x32).tobytes()).hexdigest()
            assert sha == info["splits"][split]["features_f32_sha256"], f"{path} {split}: features differ from gapprobe's"
            ids = [text(s) for s in g["ids"][()]]
            paths = [text(s) for s in g["paths"][()]]
            assert len(ids) == len(paths) == x.shape[0]
            for i, p in zip(ids, paths):
                assert by_id[i]["path"] == p, (i, p)
            for lvl, names in levels.items():
                y = g["labels"][lvl][()]
                assert y.dtype == np.int32 and y.shape == (x.shape[0],)
                for i, label in zip(ids, y):
                    assert names[label] == by_id[i][lvl], (path, i, lvl)
        print(f"ok  {path.name}  {prov['feature_point']}  {storage}  "
              f"train {f['train/features'].shape}  test {f['test/features'].shape}")
    return info


def main() -> int:
    binary = os.environ.get("GAPPROBE_BIN", "target/release/gapprobe")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        subprocess.run([binary, "-q", "demo", "--out", str(out), "--train-per-class", "4",
                        "--test-per-class", "2"], check=True)
        manifest = list(csv.DictReader(open(out / "data" / "manifest.csv")))
        by_id = {row["id"]: row for row in manifest}
        entries = sorted((out / "cache").rglob("*.h5"))
        # The demo's points: layer -2's mean patch token, CLS of layers 1-4, the projector, the
        # language model's last token with the image (llm.image) or its attribute text (llm.text).
        assert len(entries) == 8, entries
        per_split = (("train", 4), ("test", 2))
        for path in entries:
            check_entry(binary, path, by_id, per_split)
        n = len(entries)

        # f16 storage, and a 2-way sharded extraction merged back: same checks; the merged
        # entry must equal the single-machine one feature for feature.
        model, data = str(out / "model"), f"demo:{out / 'data'}"
        base = [binary, "-q", "extract", "--model", model, "--dataset", data, "--batch-size", "8",
                "-f", "projector.mean"]
        subprocess.run(base + ["--cache", str(Path(tmp) / "f16"), "--storage-dtype", "f16"], check=True)
        (f16,) = sorted((Path(tmp) / "f16").rglob("*.h5"))
        check_entry(binary, f16, by_id, per_split, storage="f16")
        single = Path(tmp) / "single"
        sharded = Path(tmp) / "sharded"
        subprocess.run(base + ["--cache", str(single)], check=True)
        for i in range(2):
            subprocess.run(base + ["--cache", str(sharded), "--shard", f"{i}/2"], check=True)
        shards = sorted(sharded.rglob("*.shard-*.h5"))
        assert len(shards) == 2, shards
        subprocess.run([binary, "cache", "merge", "--cache", str(sharded)] + [str(p) for p in shards],
                       check=True, stdout=subprocess.DEVNULL)
        (one,) = sorted(single.rglob("*.h5"))
        (merged,) = [p for p in sharded.rglob("*.h5") if ".shard-" not in p.name]
        a = check_entry(binary, one, by_id, per_split)
        b = check_entry(binary, merged, by_id, per_split)
        assert a["key"] == b["key"] and a["splits"] == b["splits"], "merged entry differs from single-machine entry"
        n += 3

        # `cache compress`: same key and features, deflate (+ shuffle) filters visible to h5py.
        for path, storage, args, want in ((one, "f32", ["--shuffle"], "deflate:4+shuffle"),
                                          (f16, "f16", ["--level", "9"], "deflate:9")):
            before = gapprobe_info(binary, path)
            size = path.stat().st_size
            subprocess.run([binary, "-q", "cache", "compress", str(path), "--cache", str(path.parents[2])]
                           + args, check=True, stdout=subprocess.DEVNULL)
            assert path.stat().st_size < size, (path, size, path.stat().st_size)
            after = check_entry(binary, path, by_id, per_split, storage=storage)
            assert after["key"] == before["key"] and after["splits"] == before["splits"], "compress changed the entry"
            assert after["compression"] == want, after["compression"]
            with h5py.File(path, "r") as f:
                assert text(f.attrs["compression"]) == want
                for split, _ in per_split:
                    ds = f[split]["features"]
                    assert ds.compression == "gzip" and ds.shuffle == ("shuffle" in want), (ds.compression, ds.shuffle)
            print(f"ok  {path.name}  compressed {want}: {size} -> {path.stat().st_size} bytes")
        n += 2
    print(f"h5py-check: {n} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
