#!/usr/bin/env bash
# Runs CUDA kernels from features/kernels on the host, with no GPU (g++ with C++20, and python3):
#   * add_norm_emulation.cpp: add_norm.cuh's add_layer_norm_rows next to the two kernels it
#     replaces, bias_act_rows and layer_norm_rows from fused.cu; both outputs must be
#     bit-identical (widths 1000 to 2048, bf16 and f32 around an f32 stream and bf16 around an f16
#     stream, with and without a bias).
#   * attention_emulation.cpp: the mma.sync kernels of attention_mma.cuh (mma, mma8) and
#     attention_fa.cuh (fa, fa8, fa_skip, fa32), and attention_wg.cuh's wgmma kernel (wg)
#     against attention in double, bf16 and f16, with and without the q|k|v bias, 1 to 577 tokens;
#     fa_skip, fa32 and wg must give fa's bits, also where their exp2_ftz flushes probabilities below
#     2^-126 (scores spread about 150). Pass `quick` to leave out 577 tokens.
# The shim (shim.h, shim_mma.h) stands in for CUDA's built-ins and the PTX the kernels issue
# (mma.sync, ldmatrix, cp.async; shim_wgmma.h: wgmma from its fragment and shared-memory layouts); emulation.h runs a block's threads as fibers that meet at their
# warp's and block's barriers (a barrier some threads skip is reported as a deadlock). So the
# kernels' indexing, masking, reductions and barriers are checked here; `gapprobe bench --device
# cuda` checks the compiled kernels, and their speed, on a GPU. -fno-strict-aliasing: the kernels
# read a 16-byte vector as eight 16-bit values, which nvcc allows and g++ -O2 would otherwise not.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
KERNELS="$HERE/../../features/kernels"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The helpers and kernels the harnesses need, cut out of convert.cuh, fused.cu and attention_wmma.cuh (whose
# WMMA kernel needs nvcuda::wmma, which the shim has not).
python3 - "$KERNELS" "$WORK" <<'PY'
import sys
kernels, work = sys.argv[1], sys.argv[2]
src = open(kernels + "/fused.cu").read()
a = src.index("// Activation codes")
b = src.index("// Attention kernels")
c = src.index("template <typename X, typename T>\n__device__ void layer_norm_rows")
d = src.index("#define LAYER_NORM(")
convert = open(kernels + "/convert.cuh").read()
open(work + "/kernels_part.h", "w").write(convert + "\n" + src[a:b] + "\n" + src[c:d])
src = open(kernels + "/attention_wmma.cuh").read()
open(work + "/attention_part.h", "w").write(src[: src.index("// qkv: [B, N, 3 * H * 64]")])
PY
cp "$HERE"/*.h "$HERE"/*.cpp "$KERNELS/add_norm.cuh" "$KERNELS/attention_mma.cuh" "$KERNELS/attention_fa.cuh" "$KERNELS/attention_wg.cuh" "$WORK/"
FLAGS=(-std=c++20 -O2 -fno-strict-aliasing -ffp-contract=off)
g++ "${FLAGS[@]}" -o "$WORK/add_norm" "$WORK/add_norm_emulation.cpp"
g++ "${FLAGS[@]}" -o "$WORK/attention" "$WORK/attention_emulation.cpp"
"$WORK/add_norm"
"$WORK/attention" "$@"
