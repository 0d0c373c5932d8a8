//! Compiles `kernels/fused.cu` to PTX when the `cuda` feature is on (nvcc from $NVCC or PATH; the
//! target from $CUDA_COMPUTE_CAP, default 80, the first with bf16 tensor-core WMMA). The CPU
//! build needs no CUDA toolkit.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    // fused.cu includes the attention kernels' .cuh files: one PTX module.
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
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fused.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg("kernels/fused.cu")
        .status()
        .unwrap_or_else(|e| {
            panic!("could not run {nvcc} for the cuda feature ({e}); see docs/performance.md for the build recipe")
        });
    assert!(status.success(), "{nvcc} failed on kernels/fused.cu");
}
