#!/usr/bin/env python3
"""Generate reference values for gapprobe-probes' representation similarity (probes/src/representation.rs).

The references are computed the way the metrics' authors compute them, independently of
gapprobe's feature-space formulas:
- linear CKA and debiased linear CKA from centred n x n Gram matrices, following Kornblith et
  al.'s reference notebook (google-research representation_similarity: gram_linear,
  center_gram(unbiased=...), cka); the script also checks the feature-space form agrees;
- mutual k-NN as platonic-rep's metrics.py does it (Huh et al. 2024): rows L2-normalised, the
  similarity matrix with its diagonal pushed down, argsort, overlap of the top-k sets / k;
- the centroid modality gap as Liang et al. 2022 (Weixin-Liang/Modality-Gap) measure it: the
  norm of the difference of the two means of L2-normalised rows (cases of equal widths only).
All in float64 on features rounded to float16, so gapprobe reads exactly the same values.

Usage (from the repository root; needs only numpy):
    .tools/sk-venv/bin/python tools/representation_fixtures.py [--out probes/tests/fixtures/representation]

Files per case: <name>.json (shapes, k, reference values, the smallest gap between a row's k-th
and (k+1)-th similarity) and <name>.f16 (little-endian float16: x then y, row-major).
"""
import argparse
import json
import os

import numpy as np


def gram_linear(x):
    return x @ x.T


def center_gram(gram, unbiased=False):
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka(gram_x, gram_y, debiased=False):
    gx = center_gram(gram_x, unbiased=debiased)
    gy = center_gram(gram_y, unbiased=debiased)
    return float(gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def feature_space_cka(x, y, debiased=False):
    """Kornblith's feature-space form: a self-check of the Gram form above."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    xy = np.linalg.norm(x.T @ y) ** 2
    xx = np.linalg.norm(x.T @ x) ** 2
    yy = np.linalg.norm(y.T @ y) ** 2
    if debiased:
        n = x.shape[0]
        rx, ry = (x * x).sum(1), (y * y).sum(1)
        nx, ny = rx.sum(), ry.sum()

        def fix(dot, ra, rb, na, nb):
            return dot - n / (n - 2) * ra @ rb + na * nb / ((n - 1) * (n - 2))

        xy, xx, yy = fix(xy, rx, ry, nx, ny), fix(xx, rx, rx, nx, nx), fix(yy, ry, ry, ny, ny)
    return float(xy / np.sqrt(xx * yy))


def knn(feats, k):
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sims = feats @ feats.T
    np.fill_diagonal(sims, -1e8)
    order = np.argsort(-sims, axis=1, kind="stable")
    top = np.take_along_axis(sims, order, axis=1)
    gap = float(np.min(top[:, k - 1] - top[:, k]))
    return order[:, :k], gap


def mutual_knn(x, y, k):
    ka, gap_a = knn(x, k)
    kb, gap_b = knn(y, k)
    n = x.shape[0]
    ma = np.zeros((n, n))
    mb = np.zeros((n, n))
    rows = np.arange(n)[:, None]
    ma[rows, ka] = 1.0
    mb[rows, kb] = 1.0
    return float(((ma * mb).sum(1) / k).mean()), min(gap_a, gap_b)


def centroid_gap(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return float(np.linalg.norm(xn.mean(0) - yn.mean(0)))


def case(rng, name, n, dx, dy, k, relation):
    x = rng.standard_normal((n, dx)) * np.linspace(2.0, 0.2, dx)
    if relation == "projected":
        # An MLP-like map of x plus noise: the shape of a projector's output.
        w1 = rng.standard_normal((dx, dy)) / np.sqrt(dx)
        w2 = rng.standard_normal((dy, dy)) / np.sqrt(dy)
        h = x @ w1
        y = (h * 0.5 * (1 + np.tanh(0.79788456 * (h + 0.044715 * h**3)))) @ w2
        y += 0.3 * rng.standard_normal((n, dy))
    elif relation == "shifted":
        # Two "modalities" of one space: a rotation of x, moved off-centre, plus noise.
        q, _ = np.linalg.qr(rng.standard_normal((dx, dx)))
        y = x @ q + 2.5 * rng.standard_normal(dy) + 0.2 * rng.standard_normal((n, dy))
    elif relation == "subset":
        # The first half of x's columns, rescaled, plus offsets.
        y = 3.0 * x[:, : dy] + 5.0
    else:
        y = rng.standard_normal((n, dy))
    x = x.astype(np.float16).astype(np.float64)
    y = y.astype(np.float16).astype(np.float64)
    gx, gy = gram_linear(x), gram_linear(y)
    ref = {
        "linear_cka": cka(gx, gy),
        "debiased_cka": cka(gx, gy, debiased=True),
    }
    for key, debiased in (("linear_cka", False), ("debiased_cka", True)):
        fs = feature_space_cka(x, y, debiased)
        assert abs(fs - ref[key]) < 1e-10, (name, key, fs, ref[key])
    ref["mutual_knn"], gap = mutual_knn(x, y, k)
    ref["centroid_gap"] = centroid_gap(x, y) if dx == dy else None
    return x, y, {"name": name, "n": n, "dx": dx, "dy": dy, "k": k, "relation": relation,
                  "min_neighbour_gap": gap, **ref}


CASES = [
    ("projected_n120", 120, 24, 64, 10, "projected"),
    ("projected_wide_n40", 40, 96, 128, 5, "projected"),
    ("subset_n80", 80, 32, 16, 8, "subset"),
    ("unrelated_n150", 150, 20, 12, 10, "unrelated"),
    # Appended so that the cases above keep their random draws.
    ("shifted_n100", 100, 48, 48, 8, "shifted"),
    ("unrelated_same_width_n60", 60, 16, 16, 5, "unrelated"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="probes/tests/fixtures/representation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for spec in CASES:
        x, y, meta = case(rng, *spec)
        # f32 similarities must rank neighbours as float64 does: no near-ties at the k-th place.
        assert meta["min_neighbour_gap"] > 1e-5, meta
        meta["numpy"] = np.__version__
        with open(os.path.join(args.out, meta["name"] + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
        with open(os.path.join(args.out, meta["name"] + ".f16"), "wb") as f:
            f.write(np.concatenate([x.ravel(), y.ravel()]).astype("<f2").tobytes())
        print(meta["name"], {k: meta[k] for k in ("linear_cka", "debiased_cka", "mutual_knn", "centroid_gap")})


if __name__ == "__main__":
    main()
