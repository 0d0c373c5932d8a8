//! Time one logistic-regression fit on features written by `tools/probe_bench.py`.
//!
//! `bench_probe DIR [--solver candle|linfa] [--c 1.0] [--tol 1e-6] [--max-iter 1000] [--repeat 1]
//!  [--device auto|cpu] [--protocol]` (auto: CUDA when built with the `cuda` feature and a GPU is
//! present). `--protocol` times a whole `run_probe` (default C grid, refinement, refit) instead.
//! Each line carries the candle solver's time breakdown (`profile`: products with their
//! transfers, loss passes, preconditioner, rest).
//!
//! DIR holds `meta.json` (`n_train`, `n_test`, `d`, `n_classes`), `x_train.f32`, `y_train.u32`,
//! `x_test.f32`, `y_test.u32` (little-endian, row-major). Prints one JSON line per repeat and
//! writes the last fit's weights (`w.f32`, `d × K`) and intercepts (`b.f32`) to DIR.

use anyhow::{Context, Result};
use gapprobe_probes::{default_device, run_probe, LogisticRegression, ProbeConfig, Solver};
use ndarray::Array2;
use std::time::Instant;

fn read_f32(path: &std::path::Path) -> Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_u32(path: &std::path::Path) -> Result<Vec<u32>> {
    let b = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).context("usage: bench_probe DIR [options]")?);
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let solver: Solver = opt("--solver", "candle").parse()?;
    let c: f64 = opt("--c", "1.0").parse()?;
    let tol: f64 = opt("--tol", "1e-6").parse()?;
    let max_iter: usize = opt("--max-iter", "1000").parse()?;
    let repeat: usize = opt("--repeat", "1").parse()?;
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    let get = |k: &str| {
        meta[k]
            .as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("meta.json: {k}"))
    };
    let (n, nt, d, k) = (
        get("n_train")?,
        get("n_test")?,
        get("d")?,
        get("n_classes")?,
    );
    let x = Array2::from_shape_vec((n, d), read_f32(&dir.join("x_train.f32"))?)?;
    let y = read_u32(&dir.join("y_train.u32"))?;
    let xt = Array2::from_shape_vec((nt, d), read_f32(&dir.join("x_test.f32"))?)?;
    let yt = read_u32(&dir.join("y_test.u32"))?;
    let device = match opt("--device", "auto").as_str() {
        "cpu" => candle_core::Device::Cpu,
        _ => default_device(),
    };
    if args.iter().any(|a| a == "--protocol") {
        let cfg = ProbeConfig {
            tol,
            max_iter,
            solver,
            ..Default::default()
        };
        let t0 = Instant::now();
        let r = run_probe(x.view(), &y, xt.view(), &yt, k, &cfg)?;
        println!(
            "{}",
            serde_json::json!({
                "protocol": true, "solver": solver.to_string(), "device": format!("{device:?}"),
                "n_train": n, "d": d, "n_classes": k, "tol": tol, "total_s": t0.elapsed().as_secs_f64(),
                "fits": r.sweep.len() + 1, "chosen_c": r.chosen_c, "top1": r.top1, "top1_ci": r.top1_ci,
                "objective": r.objective, "threads": rayon::current_num_threads(),
            })
        );
        return Ok(());
    }
    let est = LogisticRegression {
        c,
        tol,
        max_iter,
        solver,
    };
    for rep in 0..repeat {
        gapprobe_probes::profile::take();
        let t0 = Instant::now();
        let m = est.fit_warm(&device, x.view(), &y, k, None)?;
        let fit_s = t0.elapsed().as_secs_f64();
        let times = gapprobe_probes::profile::take();
        let pred = m.predict(xt.view());
        let acc = pred.iter().zip(&yt).filter(|(p, t)| p == t).count() as f64 / nt as f64;
        println!(
            "{}",
            serde_json::json!({
                "solver": solver.to_string(), "device": format!("{device:?}"), "repeat": rep,
                "resident": gapprobe_probes::candle_solver::resident_default(&device),
                "n_train": n, "d": d, "n_classes": k, "c": c, "tol": tol,
                "fit_s": fit_s, "n_iter": m.n_iter, "n_eval": m.n_eval, "converged": m.converged(),
                "objective": m.objective(), "test_acc": acc,
                "threads": rayon::current_num_threads(),
                "profile": serde_json::json!({
                    "products_s": times.products_s, "n_products": times.n_products,
                    "loss_s": times.loss_s, "precondition_s": times.precondition_s,
                    "rest_s": times.rest_s(),
                }),
            })
        );
        if rep + 1 == repeat {
            let w: Vec<u8> = m.weights().iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join("w.f32"), w)?;
            let b: Vec<u8> = m.intercept().iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(dir.join("b.f32"), b)?;
        }
    }
    Ok(())
}
