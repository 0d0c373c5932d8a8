// gapprobe's fused CUDA kernels, compiled to PTX by features/build.rs (feature `cuda`) and loaded
// through candle's custom-kernel path (features/src/models/fused.rs).
//
//   bias_act_*   y = act(x + bias[col]) (+ residual): one pass over a GEMM's output instead of
//                candle's broadcast add (~9x the GEMM) and composite activations.
//   attention_*  softmax(Q K^T * scale) V for head dimension 64, reading Q, K and V straight out
//                of a packed [B, N, 3 * H * 64] projection and writing [B, N, H * 64]: no score
//                matrix in memory, no head transposes. Flash-attention style (online softmax over
//                key tiles). In attention_mma.cuh: `attention_mma_*` keeps scores,
//                probabilities and the output in registers (mma.sync m16n8k16, the PTX ISA's
//                documented fragment layouts, as FlashAttention-2 does); in attention_fa.cuh,
//                `attention_fa_*` adds
//                cp.async double-buffered K/V tiles, ldmatrix fragments and the q|k|v bias folded
//                in (no bias pass before it). In attention_wmma.cuh: `attention_hd64_*`, the
//                first, simpler one (WMMA products, softmax through shared memory), kept as a
//                cross-check.
//   layer_norm_* one warp per row; add_layer_norm* (add_norm.cuh) the residual add and the next
//                LayerNorm in one pass over an f32 stream; planes_input_* the model input from
//                8-bit planes;
//   token_mean_* the mean over the token axis in f32 (extraction's `.mean` pooling).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;

#include "convert.cuh"

// Activation codes; keep in step with `ActCode` in fused.rs.
#define ACT_NONE 0
#define ACT_QUICK_GELU 1
#define ACT_GELU_ERF 2
#define ACT_GELU_TANH 3
#define ACT_RELU 4
#define ACT_SILU 5
// quick_gelu through the fast intrinsics (__expf, __fdividef: about 2 ulp in f32, far below a
// 16-bit output's rounding) instead of expf and an IEEE division (GAPPROBE_FAST_ACT=1).
#define ACT_QUICK_GELU_FAST 6

__device__ __forceinline__ float activate(float v, int act) {
  switch (act) {
  case ACT_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
  case ACT_GELU_ERF: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
  case ACT_GELU_TANH: {
    float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    return 0.5f * v * (1.0f + tanhf(u));
  }
  case ACT_RELU: return v > 0.0f ? v : 0.0f;
  case ACT_SILU: return v / (1.0f + expf(-v));
  // v / inf is -0 here too: __fdividef multiplies by the reciprocal, which is 0.
  case ACT_QUICK_GELU_FAST: return __fdividef(v, 1.0f + __expf(-1.702f * v));
  default: return v;
  }
}

// y[i] = act(x[i] + bias[i % cols]) + residual[i]; bias and residual may be null. The residual
// and the output may be wider than x (R = float: a float32 residual stream around 16-bit layers).
template <typename T, typename R>
__device__ void bias_act(const T *__restrict__ x, const T *__restrict__ bias,
                         const R *__restrict__ residual, R *__restrict__ y, size_t numel,
                         unsigned cols, int act) {
  size_t stride = (size_t)blockDim.x * gridDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) {
    float v = to_f(x[i]);
    if (bias) v += to_f(bias[i % cols]);
    v = activate(v, act);
    if (residual) v += to_f(residual[i]);
    y[i] = from_f<R>(v);
  }
}

#define BIAS_ACT(T, R, NAME)                                                                     \
  extern "C" __global__ void NAME(const T *x, const T *bias, const R *residual, R *y,             \
                                  size_t numel, unsigned cols, int act) {                         \
    bias_act<T, R>(x, bias, residual, y, numel, cols, act);                                      \
  }
BIAS_ACT(float, float, bias_act_f32)
BIAS_ACT(__half, __half, bias_act_f16)
BIAS_ACT(__nv_bfloat16, __nv_bfloat16, bias_act_bf16)
BIAS_ACT(__half, float, bias_act_f16_f32)
BIAS_ACT(__nv_bfloat16, float, bias_act_bf16_f32)
BIAS_ACT(__nv_bfloat16, __half, bias_act_bf16_f16)

// Eight consecutive elements to/from f32 registers: one 16-byte access for 16-bit types, two for
// f32 (p on a 16-byte boundary).
template <typename T> __device__ __forceinline__ void load8(const T *p, float (&f)[8]) {
  const uint4 v = *reinterpret_cast<const uint4 *>(p);
  const T *e = reinterpret_cast<const T *>(&v);
#pragma unroll
  for (int k = 0; k < 8; ++k) f[k] = to_f(e[k]);
}
__device__ __forceinline__ void load8(const float *p, float (&f)[8]) {
  const float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
template <typename T> __device__ __forceinline__ void store8(T *p, const float (&f)[8]) {
  uint4 v;
  T *e = reinterpret_cast<T *>(&v);
#pragma unroll
  for (int k = 0; k < 8; ++k) e[k] = from_f<T>(f[k]);
  *reinterpret_cast<uint4 *>(p) = v;
}
__device__ __forceinline__ void store8(float *p, const float (&f)[8]) {
  reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
  reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// The same eight elements at a time, a block per row (grid-stride), no 64-bit division: for rows
// whose width is a multiple of 8 and buffers on 16-byte boundaries (the launcher checks).
template <typename T, typename R>
__device__ void bias_act_rows(const T *__restrict__ x, const T *__restrict__ bias,
                              const R *__restrict__ residual, R *__restrict__ y, unsigned rows,
                              unsigned cols, int act) {
  const unsigned vcols = cols / 8;
  for (unsigned r = blockIdx.x; r < rows; r += gridDim.x) {
    const size_t base = (size_t)r * cols;
    for (unsigned v = threadIdx.x; v < vcols; v += blockDim.x) {
      const size_t at = base + (size_t)v * 8;
      float xf[8], bf[8], rf[8];
      load8(x + at, xf);
      load8(bias + (size_t)v * 8, bf);
      if (residual) load8(residual + at, rf);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        xf[k] = activate(xf[k] + bf[k], act);
        if (residual) xf[k] += rf[k];
      }
      store8(y + at, xf);
    }
  }
}

#define BIAS_ACT_ROWS(T, R, NAME)                                                                \
  extern "C" __global__ void NAME(const T *x, const T *bias, const R *residual, R *y,             \
                                  unsigned rows, unsigned cols, int act) {                        \
    bias_act_rows<T, R>(x, bias, residual, y, rows, cols, act);                                  \
  }
BIAS_ACT_ROWS(float, float, bias_act_rows_f32)
BIAS_ACT_ROWS(__half, __half, bias_act_rows_f16)
BIAS_ACT_ROWS(__nv_bfloat16, __nv_bfloat16, bias_act_rows_bf16)
BIAS_ACT_ROWS(__half, float, bias_act_rows_f16_f32)
BIAS_ACT_ROWS(__nv_bfloat16, float, bias_act_rows_bf16_f32)
BIAS_ACT_ROWS(__nv_bfloat16, __half, bias_act_rows_bf16_f16)

// ---------------------------------------------------------------------------------------------
// Attention kernels, head dimension 64 (own files, same PTX module).
#include "attention_wmma.cuh"
#include "attention_mma.cuh"
#include "attention_fa.cuh"

// ---------------------------------------------------------------------------------------------
// LayerNorm over rows of `cols` (a multiple of 8), one warp per row: mean, then the centred
// variance, then the output, reading the row three times (the last two from cache).
// y = (x - mean) / sqrt(var + eps) * w + b, in f32, rounded once. The input may be wider than
// the output (X = float: a float32 residual stream feeding 16-bit layers).
template <typename X, typename T>
__device__ void layer_norm_rows(const X *__restrict__ x, const T *__restrict__ w,
                                const T *__restrict__ b, T *__restrict__ y, unsigned rows,
                                unsigned cols, float eps) {
  const int lane = threadIdx.x % 32;
  const unsigned warps = blockDim.x / 32;
  const unsigned vcols = cols / 8;
  for (unsigned r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const X *xr = x + (size_t)r * cols;
    float sum = 0.0f;
    for (unsigned v = lane; v < vcols; v += 32) {
      float e[8];
      load8(xr + v * 8, e);
#pragma unroll
      for (int k = 0; k < 8; ++k) sum += e[k];
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);
    const float mean = sum / cols;
    float sq = 0.0f;
    for (unsigned v = lane; v < vcols; v += 32) {
      float e[8];
      load8(xr + v * 8, e);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        float d = e[k] - mean;
        sq += d * d;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sq += __shfl_xor_sync(0xffffffff, sq, off);
    const float rstd = rsqrtf(sq / cols + eps);
    T *yr = y + (size_t)r * cols;
    for (unsigned v = lane; v < vcols; v += 32) {
      float e[8], we[8], be[8];
      load8(xr + v * 8, e);
      load8(w + v * 8, we);
      load8(b + v * 8, be);
#pragma unroll
      for (int k = 0; k < 8; ++k) e[k] = (e[k] - mean) * rstd * we[k] + be[k];
      store8(yr + v * 8, e);
    }
  }
}

#define LAYER_NORM(X, T, NAME)                                                                   \
  extern "C" __global__ void NAME(const X *x, const T *w, const T *b, T *y, unsigned rows,        \
                                  unsigned cols, float eps) {                                     \
    layer_norm_rows<X, T>(x, w, b, y, rows, cols, eps);                                          \
  }
LAYER_NORM(float, float, layer_norm_f32)
LAYER_NORM(__half, __half, layer_norm_f16)
LAYER_NORM(__nv_bfloat16, __nv_bfloat16, layer_norm_bf16)
LAYER_NORM(float, __half, layer_norm_f32_f16)
LAYER_NORM(float, __nv_bfloat16, layer_norm_f32_bf16)
LAYER_NORM(__half, __nv_bfloat16, layer_norm_f16_bf16)

// Residual add + LayerNorm in one pass (own file, same PTX module).
#include "add_norm.cuh"

// ---------------------------------------------------------------------------------------------
// Model input from 8-bit planes [B, 3, plane]: y[i] = levels[256 * channel(i) + x[i]], the
// preprocessing's exact level table (PreprocessConfig::level_table), in one pass: 4 elements per
// thread (plane a multiple of 4, so a quad never straddles two channels). Replaces widening to
// u32, a broadcast offset add, a gather and a narrowing pass.
template <typename T>
__device__ void planes_input(const uint8_t *__restrict__ x, const float *__restrict__ levels,
                             T *__restrict__ y, size_t quads, unsigned plane_quads) {
  __shared__ float lv[768];
  for (int i = threadIdx.x; i < 768; i += blockDim.x) lv[i] = levels[i];
  __syncthreads();
  const size_t stride = (size_t)blockDim.x * gridDim.x;
  for (size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x; q < quads; q += stride) {
    const float *l = lv + 256 * (unsigned)((q / plane_quads) % 3);
    const uchar4 v = reinterpret_cast<const uchar4 *>(x)[q];
    T *o = y + 4 * q;
    o[0] = from_f<T>(l[v.x]);
    o[1] = from_f<T>(l[v.y]);
    o[2] = from_f<T>(l[v.z]);
    o[3] = from_f<T>(l[v.w]);
  }
}

#define PLANES_INPUT(T, NAME)                                                                    \
  extern "C" __global__ void NAME(const uint8_t *x, const float *levels, T *y,                   \
                                  unsigned long long quads, unsigned plane_quads) {              \
    planes_input<T>(x, levels, y, quads, plane_quads);                                           \
  }
PLANES_INPUT(float, planes_input_f32)
PLANES_INPUT(__half, planes_input_f16)
PLANES_INPUT(__nv_bfloat16, planes_input_bf16)

// Mean over the token axis: x [B, T, D] (contiguous) → y [B, D] in f32. One thread per output
// column, consecutive threads on consecutive columns, so each of the T rows is read coalesced;
// the sum runs over t in order, in f32.
template <typename T>
__device__ void token_mean(const T *__restrict__ x, float *__restrict__ y, unsigned tokens,
                           unsigned dim, unsigned long long outputs) {
  unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
       i < outputs; i += stride) {
    unsigned long long b = i / dim, d = i % dim;
    const T *p = x + b * tokens * (unsigned long long)dim + d;
    float s = 0.0f;
    for (unsigned t = 0; t < tokens; ++t) s += to_f(p[(unsigned long long)t * dim]);
    y[i] = s / (float)tokens;
  }
}

#define TOKEN_MEAN(T, NAME)                                                                      \
  extern "C" __global__ void NAME(const T *x, float *y, unsigned tokens, unsigned dim,           \
                                  unsigned long long outputs) {                                  \
    token_mean<T>(x, y, tokens, dim, outputs);                                                   \
  }
TOKEN_MEAN(float, token_mean_f32)
TOKEN_MEAN(__half, token_mean_f16)
TOKEN_MEAN(__nv_bfloat16, token_mean_bf16)
