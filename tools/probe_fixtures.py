#!/usr/bin/env python3
"""Generate scikit-learn parity fixtures for the gapprobe-probes crate.

For each case: synthetic features (stored as float16, so both sides fit on exactly the same
float32 values after widening), labels, and scikit-learn LogisticRegression(lbfgs, tol=1e-6)
results at several C: test accuracy, the unscaled objective sum(CE) + 0.5*||W||^2/C computed in
float64 at sklearn's solution, iterations and convergence.

Usage (from the repository root):
    python3 -m venv .tools/sk-venv && .tools/sk-venv/bin/pip install scikit-learn numpy
    .tools/sk-venv/bin/python tools/probe_fixtures.py [--out probes/tests/fixtures]

Files per case: <name>.json (metadata, labels, results) and <name>.f16 (little-endian float16,
train rows then test rows, row-major).
"""
import argparse
import json
import os
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

TOL = 1e-6


def make_data(rng, n_train, n_test, k, d, latent=16, sep=1.0, noise=1.0):
    z = rng.standard_normal((k, latent))
    a = rng.standard_normal((latent, d)) / np.sqrt(latent)

    def sample(n):
        y = rng.permutation(np.arange(n) % k)
        x = (sep * z[y] + rng.standard_normal((n, latent))) @ a + noise * rng.standard_normal((n, d))
        return x, y

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    mu, sd = xtr.mean(0), xtr.std(0)
    return (xtr - mu) / sd, ytr, (xte - mu) / sd, yte


def objective(coef, intercept, x, y, c):
    """Unscaled sklearn objective in float64. Binary sklearn uses one weight vector (binomial)."""
    x = x.astype(np.float64)
    if coef.shape[0] == 1:  # binomial: logits [0, z]
        zc = x @ coef[0].astype(np.float64) + float(intercept[0])
        zl = np.stack([np.zeros_like(zc), zc], 1)
    else:
        zl = x @ coef.T.astype(np.float64) + intercept.astype(np.float64)
    m = zl.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(zl - m).sum(1)))
    ce = float((lse - zl[np.arange(len(y)), y]).sum())
    return ce + 0.5 * float((coef.astype(np.float64) ** 2).sum()) / c


def case(out, name, xtr, ytr, xte, yte, k, cs, max_iter=1000, note=""):
    # Quantise to float16 and fit sklearn on the widened float32 values both sides will see.
    xtr16, xte16 = xtr.astype(np.float16), xte.astype(np.float16)
    assert np.isfinite(xtr16).all() and np.isfinite(xte16).all(), name
    xtr32, xte32 = xtr16.astype(np.float32), xte16.astype(np.float32)
    results = []
    for c in cs:
        clf = LogisticRegression(C=c, solver="lbfgs", tol=TOL, max_iter=max_iter)
        with warnings.catch_warnings(record=True) as wl:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(xtr32, ytr)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in wl)
        results.append(dict(
            c=c,
            test_acc=float(clf.score(xte32, yte)),
            train_acc=float(clf.score(xtr32, ytr)),
            objective=objective(clf.coef_, clf.intercept_, xtr32, ytr, c),
            n_iter=int(np.max(clf.n_iter_)),
            converged=converged,
        ))
        print(f"{name}: C={c:g} acc={results[-1]['test_acc']:.4f} obj={results[-1]['objective']:.6f} "
              f"iters={results[-1]['n_iter']} converged={converged}")
    meta = dict(
        name=name, note=note, n_train=int(len(ytr)), n_test=int(len(yte)), d=int(xtr.shape[1]),
        n_classes=int(k), tol=TOL, max_iter=max_iter, sklearn=sklearn.__version__, numpy=np.__version__,
        y_train=[int(v) for v in ytr], y_test=[int(v) for v in yte], results=results,
    )
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
    np.concatenate([xtr16, xte16]).astype("<f2").tofile(os.path.join(out, name + ".f16"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="probes/tests/fixtures")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(20240607)

    d = make_data(rng, 300, 200, 2, 16, sep=0.6)
    case(args.out, "k2_d16", *d, 2, [0.01, 1.0, 100.0], note="binary: sklearn fits a binomial model")
    d = make_data(rng, 600, 400, 10, 64, sep=0.5)
    case(args.out, "k10_d64", *d, 10, [0.001, 0.1, 10.0])
    d = make_data(rng, 1400, 600, 200, 64, latent=32, sep=1.2)
    case(args.out, "k200_d64", *d, 200, [0.1, 1.0])
    d = make_data(rng, 60, 40, 4, 4096, latent=8, sep=0.8, noise=2.0)
    case(args.out, "k4_d4096", *d, 4, [0.01, 1.0], note="d >> n")

    # Ill-conditioned: unstandardised columns with scales 10^-2..10^2 and near-duplicate columns.
    xtr, ytr, xte, yte = make_data(rng, 500, 1500, 5, 24, sep=0.8)
    scales = np.logspace(-2, 2, 24)
    xtr, xte = xtr * scales, xte * scales
    xtr = np.concatenate([xtr, xtr[:, :2] + 1e-3 * rng.standard_normal((500, 2))], 1)
    xte = np.concatenate([xte, xte[:, :2] + 1e-3 * rng.standard_normal((1500, 2))], 1)
    case(args.out, "ill_k5_d26", xtr, ytr, xte, yte, 5, [1.0], max_iter=20000,
         note="column scales 1e-2..1e2, two near-duplicate columns, not standardised")


if __name__ == "__main__":
    main()
