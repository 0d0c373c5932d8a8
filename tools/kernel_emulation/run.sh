#!/usr/bin/env bash
# Runs features/kernels/add_norm.cuh's add_layer_norm_rows on the host (tools/kernel_emulation:
# a shim for the CUDA built-ins it uses, one warp as 32 threads whose shuffles meet at a barrier)
# next to the two kernels it replaces, bias_act_rows and layer_norm_rows from fused.cu, and
# checks that both outputs are bit-identical: widths 1000, 1024, 1152, 1536, 2048, bf16 and f32
# around an f32 stream and bf16 around an f16 stream, with and without a bias. The kernel's
# indexing and reductions are checked here, with no GPU; `gapprobe bench --device cuda` checks the
# compiled kernel on one. Needs g++ (C++20) and python3. -fno-strict-aliasing: the kernels read a
# 16-byte vector as eight 16-bit values, which nvcc allows and g++ -O2 would otherwise not.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
KERNELS="$HERE/../../features/kernels"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The helpers and the two replaced kernels, cut out of fused.cu (the attention kernels need the
# tensor-core built-ins the shim has not).
python3 - "$KERNELS/fused.cu" "$WORK/kernels_part.h" <<'PY'
import sys
src = open(sys.argv[1]).read()
a = src.index("__device__ __forceinline__ float to_f(float v)")
b = src.index("// Attention kernels")
c = src.index("template <typename X, typename T>\n__device__ void layer_norm_rows")
d = src.index("#define LAYER_NORM(")
open(sys.argv[2], "w").write(src[a:b] + "\n" + src[c:d])
PY
cp "$HERE/shim.h" "$HERE/add_norm_emulation.cpp" "$KERNELS/add_norm.cuh" "$WORK/"
g++ -std=c++20 -O2 -fno-strict-aliasing -pthread -ffp-contract=off -o "$WORK/emulate" "$WORK/add_norm_emulation.cpp"
"$WORK/emulate"
