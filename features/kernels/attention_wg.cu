// The Hopper attention kernel `attention_wg_*` (attention_wg.cuh), compiled by features/build.rs
// to a PTX module of its own for compute_90a: its wgmma instructions exist only there, and the
// kernels of fused.cu stay on their own target. Loaded only on a GPU of compute capability 9.0
// (H100, H200), by `GAPPROBE_ATTENTION=wg`.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;

#include "convert.cuh"
// The attention files' helpers and constants, without their kernels.
#define GAPPROBE_HELPERS_ONLY
#include "attention_wmma.cuh"
#include "attention_mma.cuh"
#include "attention_fa.cuh"
#include "attention_wg.cuh"

ATTENTION_WG(__half, attention_wg_f16)
ATTENTION_WG(__nv_bfloat16, attention_wg_bf16)
