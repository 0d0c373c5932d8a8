//! The probe solver's two f32 products at CUB's shape (5994 × 1025 times 1025 × 200, and the
//! transposed one), timed with candle on the CPU: what bounds the CPU probe's speed.
//!
//! `cargo run --release -p gapprobe-probes --example gemm_bench` (NumPy's OpenBLAS on the same
//! shapes: see docs/performance.md).

use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let (n, d, k) = (5994usize, 1025usize, 200usize);
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (n, d), &dev)?;
    let xt = x.t()?.contiguous()?;
    let m = Tensor::randn(0f32, 1.0, (d, k), &dev)?;
    let r = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
    for (name, a, b) in [("X·M", &x, &m), ("Xᵀ·R", &xt, &r)] {
        a.matmul(b)?;
        let t = Instant::now();
        for _ in 0..10 {
            a.matmul(b)?;
        }
        let s = t.elapsed().as_secs_f64() / 10.0;
        let gflops = 2.0 * (n * d * k) as f64 / s / 1e9;
        println!("{name}: {:.1} ms, {gflops:.0} GFLOP/s", s * 1e3);
    }
    Ok(())
}
