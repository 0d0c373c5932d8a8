#!/usr/bin/env python3
"""Benchmark gapprobe's probe solver against scikit-learn on the same data, in the same run.

CUB-shaped synthetic features (the generator of ../shared/anchors/torch_baseline.py: class means in a
64-d latent space, power-law correlated noise, standardised with train statistics): 5994 train /
5794 test, 200 classes, d = 1024 and 4096. For each d: gapprobe (examples/bench_probe, a separate
process) and sklearn LogisticRegression(lbfgs, C, tol) are timed on identical float32 arrays; both
objectives, sum(CE) + 0.5*||W||^2/C, are recomputed here in float64 from the returned parameters.

Usage (repository root; build the example first):
    cargo build --release -p gapprobe-probes --example bench_probe
    .tools/sk-venv/bin/python tools/probe_bench.py [--dims 1024,4096] [--tol 1e-6] [--C 1.0]
        [--solver candle] [--skip-sklearn] [--json out.json] [--n-train 5994 --n-test 5794 --classes 200]
        [--write-data DIR]     # only write the data to DIR/d1024, ... for `bench_probe DIR/d1024 ...`
        [--sklearn-cpus 0,1]   # pin only scikit-learn (affinity + BLAS/OpenMP pools) to these CPUs,
                               # e.g. on the GPU machine: the CUDA probe against sklearn on 2 cores
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


def make_probe_data(n_train, n_test, n_classes, dim, seed=0, latent=64, sep=0.5, rank=512, alpha=1.0, floor=0.05):
    """Copied from shared/anchors/torch_baseline.py (same seed, same arrays)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n_classes, latent)).astype(np.float32)
    A = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    r = min(rank, dim)
    s = np.arange(1, r + 1, dtype=np.float32) ** (-alpha / 2)
    s = s / np.sqrt((s ** 2).sum()) * np.sqrt(dim)
    Q = (rng.standard_normal((r, dim)) / np.sqrt(dim)).astype(np.float32)

    def sample(n):
        y = rng.permutation(np.arange(n) % n_classes)
        x = (sep * Z[y] + rng.standard_normal((n, latent), dtype=np.float32)) @ A
        x += (rng.standard_normal((n, r), dtype=np.float32) * s) @ Q
        x += floor * rng.standard_normal((n, dim), dtype=np.float32)
        return x, y.astype(np.int64)

    Xtr, ytr = sample(n_train)
    Xte, yte = sample(n_test)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    return ((Xtr - mu) / sd).astype(np.float32), ytr, ((Xte - mu) / sd).astype(np.float32), yte


def write_data(folder, Xtr, ytr, Xte, yte, n_classes):
    """The layout bench_probe reads: meta.json and little-endian row-major arrays."""
    json.dump(dict(n_train=len(ytr), n_test=len(yte), d=Xtr.shape[1], n_classes=n_classes),
              open(f"{folder}/meta.json", "w"))
    Xtr.astype("<f4").tofile(f"{folder}/x_train.f32")
    ytr.astype("<u4").tofile(f"{folder}/y_train.u32")
    Xte.astype("<f4").tofile(f"{folder}/x_test.f32")
    yte.astype("<u4").tofile(f"{folder}/y_test.u32")


def objective(W, b, X, y, C):
    """Unscaled sklearn objective in float64: sum(CE) + 0.5*||W||^2/C. W is K x d."""
    Z = X.astype(np.float64) @ W.astype(np.float64).T + b.astype(np.float64)
    m = Z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(Z - m).sum(1))
    return float((lse - Z[np.arange(len(y)), y]).sum()) + 0.5 * float((W.astype(np.float64) ** 2).sum()) / C


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", default="1024,4096")
    ap.add_argument("--n-train", type=int, default=5994)
    ap.add_argument("--n-test", type=int, default=5794)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--solver", default="candle")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--bin", default="target/release/examples/bench_probe")
    ap.add_argument("--device", default="auto", help="bench_probe --device (auto|cpu)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--sklearn-cpus", default=None, help="comma-separated CPU ids for the sklearn fit only")
    ap.add_argument("--write-data", default=None, metavar="DIR",
                    help="only write each d's data to DIR/d<d> (bench_probe's input) and exit")
    args = ap.parse_args()
    import sklearn
    from sklearn.linear_model import LogisticRegression
    try:
        from threadpoolctl import threadpool_info
        pools = [(p.get("internal_api"), p.get("num_threads")) for p in threadpool_info()]
    except Exception:
        pools = "n/a"
    print(f"sklearn {sklearn.__version__}, numpy {np.__version__}, cpus {os.cpu_count()}, BLAS/OpenMP pools {pools}")
    out = []
    for d in [int(v) for v in args.dims.split(",")]:
        Xtr, ytr, Xte, yte = make_probe_data(args.n_train, args.n_test, args.classes, d)
        row = dict(d=d, n_train=len(ytr), n_test=len(yte), classes=args.classes, C=args.C, tol=args.tol)
        if args.write_data:
            out_dir = os.path.join(args.write_data, f"d{d}")
            os.makedirs(out_dir, exist_ok=True)
            write_data(out_dir, Xtr, ytr, Xte, yte, args.classes)
            print(f"d={d}: data written to {out_dir} (for bench_probe DIR ...)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            write_data(tmp, Xtr, ytr, Xte, yte, args.classes)
            cmd = [args.bin, tmp, "--solver", args.solver, "--c", str(args.C), "--tol", str(args.tol),
                   "--max-iter", str(args.max_iter), "--repeat", str(args.repeat), "--device", args.device]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                sys.exit(f"bench_probe failed: {res.stderr}")
            runs = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
            W = np.fromfile(f"{tmp}/w.f32", dtype="<f4").reshape(d, args.classes).T
            b = np.fromfile(f"{tmp}/b.f32", dtype="<f4")
        g = dict(runs[-1])
        g["fit_s"] = min(r["fit_s"] for r in runs)
        g["process_wall_s"] = wall
        g["objective_f64"] = objective(W, b, Xtr, ytr, args.C)
        row["gapprobe"] = g
        state = {True: ", state on the device", False: ", state on the host"}.get(g.get("resident"), "")
        print(f"d={d}: gapprobe/{args.solver} on {g['device']}{state} (threads {g['threads']}) fit {g['fit_s']:.2f} s ({g['n_iter']} it, {g['n_eval']} evals, "
              f"converged={g['converged']}), objective {g['objective_f64']:.6f}, test acc {g['test_acc']*100:.2f}%",
              flush=True)
        best = min(runs, key=lambda r: r["fit_s"])
        if "profile" in best and best.get("resident"):
            p = best["profile"]
            print(f"d={d}: gapprobe time breakdown of the best fit (state on the device: the loss passes wait "
                  f"for the queued GPU work): loss passes {p['loss_s']:.2f} s, rest {p['rest_s']:.2f} s", flush=True)
        elif "profile" in best:
            p = best["profile"]
            print(f"d={d}: gapprobe time breakdown of the best fit: products {p['products_s']:.2f} s "
                  f"({p['n_products']} calls, transfers included), loss passes {p['loss_s']:.2f} s, "
                  f"preconditioner {p['precondition_s']:.2f} s, rest {p['rest_s']:.2f} s", flush=True)
        if not args.skip_sklearn:
            clf = LogisticRegression(C=args.C, solver="lbfgs", tol=args.tol, max_iter=args.max_iter)
            pinned = None
            if args.sklearn_cpus:
                from threadpoolctl import threadpool_limits
                cpus = [int(c) for c in args.sklearn_cpus.split(",")]
                saved = os.sched_getaffinity(0)
                os.sched_setaffinity(0, cpus)
                pinned = threadpool_limits(len(cpus))
            with warnings.catch_warnings(record=True) as wl:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                clf.fit(Xtr, ytr)
                fit_s = time.perf_counter() - t0
            if pinned is not None:
                pinned.restore_original_limits()
                os.sched_setaffinity(0, saved)
            s = dict(fit_s=fit_s, n_iter=int(np.max(clf.n_iter_)), test_acc=float(clf.score(Xte, yte)),
                     cpus=args.sklearn_cpus or f"all {os.cpu_count()}",
                     converged=not any("converge" in str(w.message).lower() for w in wl),
                     objective_f64=objective(clf.coef_, clf.intercept_, Xtr, ytr, args.C))
            row["sklearn"] = s
            row["speedup"] = s["fit_s"] / g["fit_s"]
            row["objective_rel_diff"] = (g["objective_f64"] - s["objective_f64"]) / s["objective_f64"]
            print(f"d={d}: sklearn (CPUs: {s['cpus']}) fit {s['fit_s']:.2f} s ({s['n_iter']} it, converged={s['converged']}), objective "
                  f"{s['objective_f64']:.6f}, test acc {s['test_acc']*100:.2f}%", flush=True)
            print(f"d={d}: speedup {row['speedup']:.1f}x; objective (gapprobe - sklearn)/sklearn = "
                  f"{row['objective_rel_diff']:+.2e}; acc diff {(g['test_acc'] - s['test_acc'])*100:+.2f} points", flush=True)
        out.append(row)
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
