//! `gapprobe bench --checks-only`: the fused kernels against their f32 references and nothing
//! else, restricted to the attention kernels `--attention-kernels` names. On the CPU the kernels
//! are the references themselves (GAPPROBE_KERNELS=on), so every check passes with error 0; what
//! this tests is the command: the choice of kernels, the exit status and the errors.

mod cache_support;
use cache_support::*;

fn bench(args: &[&str], kernels: &str) -> std::process::Output {
    bin()
        .env("GAPPROBE_KERNELS", kernels)
        .env_remove("GAPPROBE_ATTENTION")
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn checks_only_runs_the_named_attention_kernels() {
    let out = ok(
        bench(&["--checks-only", "--attention-kernels", "fa,wg"], "on"),
        "bench --checks-only",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "relative error of the attention+bias (Warpgroup) kernel vs its CPU reference: 0.00e0",
        "relative error of the attention (Flash) kernel vs its CPU reference: 0.00e0",
        "relative error of the layer norm kernel vs its CPU reference: 0.00e0",
        "Warpgroup against Flash with bias: 0 of",
        "every kernel check passed",
    ] {
        assert!(text.contains(line), "no '{line}' in:\n{text}");
    }
    // Neither the kernels left out nor the model's timings.
    for absent in [
        "(Mma)",
        "(Flash32)",
        "FlashSkip against",
        "encoder ",
        "FAILED",
    ] {
        assert!(!text.contains(absent), "'{absent}' in:\n{text}");
    }
}

#[test]
fn checks_only_refuses_unknown_kernels_and_kernels_off() {
    let out = bench(&["--checks-only", "--attention-kernels", "fa,flash"], "on");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no attention kernel is named 'flash'") && err.contains("known: mma, mma8"),
        "{err}"
    );
    let out = bench(&["--checks-only", "--skip-checks"], "on");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be used with"), "{err}");
    let out = bench(&["--checks-only"], "off");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GAPPROBE_KERNELS=off"), "{err}");
}

/// A misspelt `GAPPROBE_ATTENTION` would otherwise time the default kernel under another name.
#[test]
fn unknown_attention_kernel_is_warned_about() {
    let out = ok(
        bin()
            .env("GAPPROBE_KERNELS", "on")
            .env("GAPPROBE_ATTENTION", "flash")
            .args(["bench", "--preset", "smoke", "--batch-sizes", "1"])
            .args(["--iters", "1", "--warmup", "0"])
            .output()
            .unwrap(),
        "bench with GAPPROBE_ATTENTION=flash",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GAPPROBE_ATTENTION=flash names no attention kernel (mma, mma8, wmma, fa,")
            && err.contains("using fa"),
        "{err}"
    );
}
