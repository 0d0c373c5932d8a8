//! Compiles the CUDA kernels to PTX when the `cuda` feature is on (nvcc from $NVCC or PATH):
//! `kernels/fused.cu` for $CUDA_COMPUTE_CAP (default 80, the first with bf16 tensor-core WMMA), and
//! `kernels/attention_wg.cu` for compute_90a, whose wgmma instructions only Hopper has (loaded
//! only on such a GPU). The CPU build needs no CUDA toolkit.
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Each .cu includes the kernels' .cuh files: one PTX module each.
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap: u32 = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(80)
        .max(80);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    ptx(
        &nvcc,
        "kernels/fused.cu",
        &format!("compute_{cap}"),
        &out.join("fused.ptx"),
    );
    ptx(
        &nvcc,
        "kernels/attention_wg.cu",
        "compute_90a",
        &out.join("attention_wg.ptx"),
    );
}

fn ptx(nvcc: &str, source: &str, arch: &str, out: &Path) {
    let status = Command::new(nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| {
            panic!("could not run {nvcc} for the cuda feature ({e}); see docs/performance.md for the build recipe")
        });
    assert!(status.success(), "{nvcc} failed on {source}");
}
