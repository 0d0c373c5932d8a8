//! Attention over a packed q|k|v projection without a score matrix in memory, and the choice of
//! its CUDA kernel (`GAPPROBE_ATTENTION`, or [`with_attention_kernel`] for one thread). The f32
//! reference and the launchers are in `fused_ops.rs` and `fused_cuda.rs`, as for the other
//! fused ops; whether a model uses the fused ops at all is [`super::fused::enabled_for`].

use super::fused::{enabled_for, with_override};
use super::fused_ops::PackedAttention;
use candle_core::{DType, Device, Result, Tensor};
use std::cell::Cell;

/// Head dimension the fused attention kernel is written for (CLIP, DINOv2; SigLIP-so400m's 72
/// takes the composite path).
pub const ATTENTION_HEAD_DIM: usize = 64;

thread_local! {
    static KERNEL: Cell<Option<AttentionKernel>> = const { Cell::new(None) };
}

/// Runs `f` with models built on this thread using attention `kernel`, whatever
/// `GAPPROBE_ATTENTION` says (the CPU reference ignores the kernel, but not how the model feeds
/// it: the bias-folding kernels get the q|k|v bias handed over).
pub fn with_attention_kernel<R>(kernel: AttentionKernel, f: impl FnOnce() -> R) -> R {
    with_override(&KERNEL, kernel, f)
}

/// Whether the fused attention applies to this dtype and head dimension. The CUDA kernel needs
/// head dimension 64 and 16-bit inputs (tensor cores; f32 runs the composite path); the CPU
/// reference takes any.
pub fn attention_supported(device: &Device, dtype: DType, head_dim: usize) -> bool {
    enabled_for(device)
        && (!device.is_cuda()
            || (head_dim == ATTENTION_HEAD_DIM && matches!(dtype, DType::BF16 | DType::F16)))
}

/// Which CUDA attention kernel runs (the CPU reference ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Scores, probabilities and output in registers (mma.sync), 4 warps per block
    /// (`GAPPROBE_ATTENTION=mma`).
    Mma,
    /// The same with 8 warps (128 queries) per block (`GAPPROBE_ATTENTION=mma8`).
    Mma8,
    /// The first version: WMMA products, softmax through shared memory (`GAPPROBE_ATTENTION=wmma`).
    Wmma,
    /// [`AttentionKernel::Mma`] with cp.async double-buffered K/V tiles, ldmatrix fragments and the
    /// q|k|v bias folded in (Q's in registers, K's dropped, V's on the output), so the projection
    /// needs no bias pass (`GAPPROBE_ATTENTION=fa`); the default (1.10× the whole model's
    /// throughput of [`AttentionKernel::Mma`] on an H200, docs/performance.md).
    Flash,
    /// [`AttentionKernel::Flash`] held to 128 registers for 4 blocks per SM
    /// (`GAPPROBE_ATTENTION=fa128`).
    Flash128,
    /// [`AttentionKernel::Flash`] with 8 warps (128 queries) per block: each K/V tile read once
    /// for twice the queries (`GAPPROBE_ATTENTION=fa8`).
    Flash8,
    /// [`AttentionKernel::Flash`] skipping, in the last key tile, the products of key blocks past
    /// the end (577 tokens leave one key in the tenth tile), and the work of warps whose 16
    /// queries all lie past the end (3 of a head's 40 warps at 577 tokens), with its
    /// exponentials from the special-function unit alone (`ex2.approx.ftz`: 3 instructions fewer
    /// per probability; one below 2^-126 becomes 0, which a row sum of at least 1 does not
    /// see); full tiles run a copy of the tile code without the skip's branches. The same
    /// numbers (`GAPPROBE_ATTENTION=fa_skip`). Not yet run on a GPU.
    FlashSkip,
    /// [`AttentionKernel::FlashSkip`] with 32 queries per warp, 128 per block: two 16-row tiles
    /// share each K/V fragment read from shared memory (half the reads per product) and give each
    /// warp two independent chains to interleave, as FlashAttention-2 lays out head dim 64. Every
    /// row's arithmetic is unchanged, so the same numbers as [`AttentionKernel::FlashSkip`]
    /// (`GAPPROBE_ATTENTION=fa32`). Not yet run on a GPU.
    Flash32,
    /// [`AttentionKernel::FlashSkip`]'s arithmetic with Hopper's warpgroup products: one warpgroup
    /// of 64 queries per block, S = Q Kᵀ and O += P V as wgmma.m64n64k16 with K and V read by the
    /// tensor cores from shared memory (no ldmatrix; 8 product instructions per warp and key tile
    /// against 96). Its own PTX module for compute_90a, so only on compute capability 9.0 (H100,
    /// H200) (`GAPPROBE_ATTENTION=wg`). Not yet run on a GPU.
    Warpgroup,
}

/// Environment variable choosing the attention kernel: `fa` (default), `fa128`, `fa8`,
/// `fa_skip`, `fa32`, `wg` (compute capability 9.0 only), `mma`, `mma8` or `wmma`.
pub const ATTENTION_ENV: &str = "GAPPROBE_ATTENTION";

impl AttentionKernel {
    /// The kernel chosen by [`with_attention_kernel`], else by `GAPPROBE_ATTENTION`.
    pub fn from_env() -> Self {
        if let Some(k) = KERNEL.with(|k| k.get()) {
            return k;
        }
        let Ok(name) = std::env::var(ATTENTION_ENV) else {
            return AttentionKernel::Flash;
        };
        Self::from_name(&name).unwrap_or_else(|| {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "{ATTENTION_ENV}={name} names no attention kernel ({}): using fa",
                    Self::known_names()
                )
            });
            AttentionKernel::Flash
        })
    }

    /// The kernel `GAPPROBE_ATTENTION` names `name` (`fa`, `wg`, …), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Every kernel's name, comma-separated, for messages about a name that is none of them.
    pub fn known_names() -> String {
        Self::ALL.map(|k| k.name()).join(", ")
    }

    /// The kernel's name in `GAPPROBE_ATTENTION`.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::Mma => "mma",
            AttentionKernel::Mma8 => "mma8",
            AttentionKernel::Wmma => "wmma",
            AttentionKernel::Flash => "fa",
            AttentionKernel::Flash128 => "fa128",
            AttentionKernel::Flash8 => "fa8",
            AttentionKernel::FlashSkip => "fa_skip",
            AttentionKernel::Flash32 => "fa32",
            AttentionKernel::Warpgroup => "wg",
        }
    }

    /// Whether the kernel takes the q|k|v bias at no cost, so the projection should skip its
    /// own bias pass and hand the bias over.
    pub fn folds_bias(self) -> bool {
        matches!(
            self,
            AttentionKernel::Flash
                | AttentionKernel::Flash128
                | AttentionKernel::Flash8
                | AttentionKernel::FlashSkip
                | AttentionKernel::Flash32
                | AttentionKernel::Warpgroup
        )
    }

    /// Warps per block.
    pub fn warps(self) -> usize {
        match self {
            AttentionKernel::Mma8 | AttentionKernel::Flash8 => 8,
            _ => 4,
        }
    }

    /// Queries per warp: 16 (one row tile of the products), 32 for [`AttentionKernel::Flash32`].
    pub fn queries_per_warp(self) -> usize {
        match self {
            AttentionKernel::Flash32 => 32,
            _ => 16,
        }
    }

    /// Whether the kernel needs a GPU of compute capability 9.0 (its PTX is for compute_90a).
    pub fn needs_sm90(self) -> bool {
        self == AttentionKernel::Warpgroup
    }

    /// Whether the kernel can run on `device`: every kernel on the CPU (the reference ignores
    /// the choice) and on CUDA, except [`AttentionKernel::needs_sm90`] kernels off compute
    /// capability 9.0.
    pub fn runs_on(self, device: &Device) -> bool {
        if !self.needs_sm90() {
            return true;
        }
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(dev) => super::fused_cuda::compute_capability(dev) == Some((9, 0)),
            _ => !device.is_cuda(),
        }
    }

    /// Every kernel, for checks and A/B timings (filter with [`AttentionKernel::runs_on`]).
    pub const ALL: [AttentionKernel; 9] = [
        AttentionKernel::Mma,
        AttentionKernel::Mma8,
        AttentionKernel::Wmma,
        AttentionKernel::Flash,
        AttentionKernel::Flash128,
        AttentionKernel::Flash8,
        AttentionKernel::FlashSkip,
        AttentionKernel::Flash32,
        AttentionKernel::Warpgroup,
    ];
}

/// Multi-head attention `softmax(Q Kᵀ · scale) V` from a packed projection `qkv` [B, N, 3·H·hd]
/// (all query heads, then key heads, then value heads) plus its bias [3·H·hd] if any, added as
/// the values are read; returns [B, N, H·hd]. The CUDA kernel takes hd = 64.
pub fn attention_packed(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    attention_packed_with(qkv, bias, heads, scale, AttentionKernel::from_env())
}

/// [`attention_packed`] with a given CUDA kernel.
pub fn attention_packed_with(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    scale: f64,
    kernel: AttentionKernel,
) -> Result<Tensor> {
    let (_, _, w) = qkv.dims3()?;
    if heads == 0 || w % (3 * heads) != 0 {
        candle_core::bail!("packed attention expects [B, N, 3·{heads}·head_dim], got width {w}");
    }
    let op = PackedAttention {
        heads,
        head_dim: w / (3 * heads),
        scale,
        kernel,
    };
    let qkv = qkv.contiguous()?;
    match bias {
        Some(b) if b.dims() == [w] => qkv.apply_op2_no_bwd(&b.contiguous()?, &op),
        Some(b) => candle_core::bail!(
            "packed attention bias has shape {:?}, expected [{w}]",
            b.dims()
        ),
        None => qkv.apply_op1_no_bwd(&op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::fused::tests::max_abs_diff;

    /// The packed attention reference equals the composite multi-head attention (split heads,
    /// scores, softmax, weighted sum, merge heads).
    #[test]
    fn packed_attention_matches_composite() {
        let dev = Device::Cpu;
        let (b, n, h, hd) = (2, 7, 3, ATTENTION_HEAD_DIM);
        let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * h * hd), &dev).unwrap();
        let scale = (hd as f64).powf(-0.5);
        let split = |i: usize| {
            qkv.narrow(2, i * h * hd, h * hd)
                .unwrap()
                .reshape((b, n, h, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        let want = p
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, h * hd))
            .unwrap();
        let got = attention_packed(&qkv, None, h, scale).unwrap();
        assert_eq!(got.dims(), &[b, n, h * hd]);
        assert!(max_abs_diff(&got, &want) < 1e-5);
        // bf16 storage: one rounding of inputs and output.
        let got16 = attention_packed(&qkv.to_dtype(DType::BF16).unwrap(), None, h, scale).unwrap();
        assert_eq!(got16.dtype(), DType::BF16);
        assert!(max_abs_diff(&got16, &want) < 3e-2);
    }

    /// A bias handed to the attention is the same as adding it to the projection first.
    #[test]
    fn packed_attention_bias_equals_adding_it_first() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3 * 2 * 8), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 3 * 2 * 8, &dev).unwrap();
        let got = attention_packed(&qkv, Some(&bias), 2, 0.3).unwrap();
        let want = attention_packed(&qkv.broadcast_add(&bias).unwrap(), None, 2, 0.3).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-6);
    }

    /// The identity the fa kernels' bias folding rests on: the key bias changes no probability
    /// (softmax cancels `q·b_k`, the same for every key), and the value bias adds to the output
    /// unchanged (each row of probabilities sums to 1).
    #[test]
    fn key_bias_cancels_and_value_bias_passes_through() {
        let dev = Device::Cpu;
        let (h, hd) = (2, 8);
        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3 * h * hd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 3 * h * hd, &dev).unwrap();
        let want = attention_packed(&qkv, Some(&bias), h, 0.3).unwrap();
        let zeros = Tensor::zeros(h * hd, DType::F32, &dev).unwrap();
        let q_only =
            Tensor::cat(&[&bias.narrow(0, 0, h * hd).unwrap(), &zeros, &zeros], 0).unwrap();
        let v_bias = bias.narrow(0, 2 * h * hd, h * hd).unwrap();
        let got = attention_packed(&qkv, Some(&q_only), h, 0.3)
            .unwrap()
            .broadcast_add(&v_bias)
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    /// Only `wg` asks for compute capability 9.0, and only on CUDA: the CPU reference takes every
    /// kernel and gives the same numbers whichever is chosen.
    #[test]
    fn every_kernel_runs_on_the_cpu_reference() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (1, 9, 3 * 2 * ATTENTION_HEAD_DIM), &dev).unwrap();
        let want = attention_packed_with(&qkv, None, 2, 0.125, AttentionKernel::Flash).unwrap();
        for kernel in AttentionKernel::ALL {
            assert!(kernel.runs_on(&dev), "{kernel:?}");
            assert_eq!(kernel.needs_sm90(), kernel == AttentionKernel::Warpgroup);
            let got = attention_packed_with(&qkv, None, 2, 0.125, kernel).unwrap();
            assert_eq!(max_abs_diff(&got, &want), 0.0, "{kernel:?}");
        }
        for kernel in AttentionKernel::ALL {
            assert_eq!(AttentionKernel::from_name(kernel.name()), Some(kernel));
        }
        assert_eq!(AttentionKernel::from_name("flash"), None);
        assert!(AttentionKernel::Warpgroup.folds_bias());
        let chosen = with_attention_kernel(AttentionKernel::Warpgroup, AttentionKernel::from_env);
        assert_eq!(chosen, AttentionKernel::Warpgroup);
    }

    #[test]
    fn rejects_a_projection_of_the_wrong_width() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((1, 4, 100), DType::F32, &dev).unwrap();
        assert!(attention_packed(&qkv, None, 3, 0.125)
            .unwrap_err()
            .to_string()
            .contains("expects"));
    }
}
