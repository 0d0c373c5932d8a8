// gapprobe's fused CUDA kernels, compiled to PTX by features/build.rs (feature `cuda`) and loaded
// through candle's custom-kernel path (features/src/models/fused.rs).
//
//   bias_act_*   y = act(x + bias[col]) (+ residual): one pass over a GEMM's output instead of
//                candle's broadcast add (~9x the GEMM) and composite activations.
//   attention_*  softmax(Q K^T * scale) V for head dimension 64, reading Q, K and V straight out
//                of a packed [B, N, 3 * H * 64] projection and writing [B, N, H * 64]: no score
//                matrix in memory, no head transposes. Flash-attention style (online softmax over
//                key tiles). Two versions: `attention_mma_*` keeps scores, probabilities and the
//                output in registers (mma.sync m16n8k16, the PTX ISA's documented fragment
//                layouts, as FlashAttention-2 does); `attention_hd64_*` is the first, simpler one
//                (WMMA products, softmax through shared memory), kept as a cross-check;
//                `attention_fa_*` is `attention_mma_*` with cp.async double-buffered K/V tiles,
//                ldmatrix fragments and the q|k|v bias folded in (no bias pass before it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Activation codes; keep in step with `ActCode` in fused.rs.
#define ACT_NONE 0
#define ACT_QUICK_GELU 1
#define ACT_GELU_ERF 2
#define ACT_GELU_TANH 3
#define ACT_RELU 4
#define ACT_SILU 5

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

// ---------------------------------------------------------------------------------------------
// Attention, head dimension 64.
// Block: 4 warps, 64 queries (16 per warp) of one (batch, head); loops over key tiles of 32.
constexpr int HD = 64;          // head dimension
constexpr int WARPS = 4;
constexpr int BQ = 16 * WARPS;  // queries per block
constexpr int BK = 32;          // keys per tile
constexpr int LDT = HD + 8;     // smem pitch of K/V/Q tiles (elements; multiple of 8)
constexpr int LDS = BK + 4;     // pitch of scores (floats; multiple of 4)
constexpr int LDP = BK + 8;     // pitch of probabilities (elements; multiple of 8)
constexpr int LDO = HD + 4;     // pitch of the output accumulator (floats)

// Adds bias[0..8] to 8 packed 16-bit values in f32, rounding once (as bias_act does).
template <typename T>
__device__ __forceinline__ uint4 add_bias8(uint4 v, const T *bias) {
  T *e = reinterpret_cast<T *>(&v);
  uint4 bv = *reinterpret_cast<const uint4 *>(bias);
  const T *be = reinterpret_cast<const T *>(&bv);
#pragma unroll
  for (int k = 0; k < 8; ++k) e[k] = from_f<T>(to_f(e[k]) + to_f(be[k]));
  return v;
}

// Copies `rows` x 64 elements (16-byte vectors) from global rows `src + r * stride` into smem
// rows of pitch LDT, adding `bias` (64 values, may be null), zero-filling rows at or past
// `valid`. All `nthreads` threads take part.
template <typename T>
__device__ __forceinline__ void load_tile(T *dst, const T *src, long long stride, int rows,
                                          int valid, int tid, int nthreads, const T *bias) {
  constexpr int VEC = 8;  // 16 bytes of 16-bit elements
  for (int idx = tid; idx < rows * (HD / VEC); idx += nthreads) {
    int r = idx / (HD / VEC);
    int c = (idx % (HD / VEC)) * VEC;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < valid) {
      v = *reinterpret_cast<const uint4 *>(src + r * stride + c);
      if (bias) v = add_bias8<T>(v, bias + c);
    }
    *reinterpret_cast<uint4 *>(dst + r * LDT + c) = v;
  }
}

// qkv: [B, N, 3 * H * 64] (q, then k, then v, heads contiguous within each); out: [B, N, H * 64].
// scale_log2 = scale * log2(e): the softmax runs in base 2.
template <typename T>
__device__ void attention(const T *__restrict__ qkv, const T *__restrict__ qkv_bias,
                          T *__restrict__ out, int n, int heads, float scale_log2) {
  __shared__ __align__(128) T ks[BK * LDT];
  __shared__ __align__(128) T vs[BK * LDT];
  __shared__ __align__(128) float ss[WARPS][16 * LDS];
  __shared__ __align__(128) T ps[WARPS][16 * LDP];
  __shared__ __align__(128) float os[WARPS][16 * LDO];

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int bh = blockIdx.y;
  const int b = bh / heads;
  const int h = bh % heads;
  const long long row_stride = 3LL * heads * HD;
  const T *base = qkv + (long long)b * n * row_stride + h * HD;
  const T *qg = base;
  const T *kg = base + heads * HD;
  const T *vg = base + 2 * heads * HD;
  const int q0 = blockIdx.x * BQ + warp * 16;  // first query row of this warp

  // This warp's 16 query rows go through its output buffer (as T) into A fragments.
  T *qs = reinterpret_cast<T *>(os[warp]);
  // Per-head slices of the packed bias (q, k, v), or null.
  const T *qb = qkv_bias ? qkv_bias + h * HD : nullptr;
  const T *kb = qkv_bias ? qkv_bias + (heads + h) * HD : nullptr;
  const T *vb = qkv_bias ? qkv_bias + (2 * heads + h) * HD : nullptr;
  load_tile<T>(qs, qg + (long long)q0 * row_stride, row_stride, 16, n - q0, lane, 32, qb);
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[HD / 16];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) wmma::load_matrix_sync(qf[kk], qs + kk * 16, LDT);
  __syncwarp();
  for (int i = lane; i < 16 * LDO; i += 32) os[warp][i] = 0.0f;

  // Softmax bookkeeping: lane pair (2r, 2r+1) owns row r; each lane every other column of a tile.
  const int my_row = lane / 2;
  const int half = lane % 2;
  float row_max = -INFINITY;
  float row_sum = 0.0f;

  for (int k0 = 0; k0 < n; k0 += BK) {
    __syncthreads();  // the previous tile's K/V are no longer read
    load_tile<T>(ks, kg + (long long)k0 * row_stride, row_stride, BK, n - k0, tid, 32 * WARPS, kb);
    load_tile<T>(vs, vg + (long long)k0 * row_stride, row_stride, BK, n - k0, tid, 32 * WARPS, vb);
    __syncthreads();

    // S = Q K^T for this warp's 16 rows and the tile's BK keys.
#pragma unroll
    for (int j = 0; j < BK / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + j * 16 * LDT + kk * 16, LDT);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(ss[warp] + j * 16, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax: new running max, probabilities for this tile, rescale of the output rows.
    constexpr int COLS = BK / 2;
    float s[COLS];
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
      int col = 2 * c + half;  // interleaved: 2-way bank conflicts at most
      float v = ss[warp][my_row * LDS + col] * scale_log2;
      if (k0 + col >= n) v = -INFINITY;
      s[c] = v;
      tile_max = fmaxf(tile_max, v);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, 1));
    const float new_max = fmaxf(row_max, tile_max);
    const float alpha = exp2f(row_max - new_max);  // 0 on the first tile
    float tile_sum = 0.0f;
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
      float p = exp2f(s[c] - new_max);
      tile_sum += p;
      ps[warp][my_row * LDP + 2 * c + half] = from_f<T>(p);
    }
    tile_sum += __shfl_xor_sync(0xffffffff, tile_sum, 1);
    row_sum = row_sum * alpha + tile_sum;
    row_max = new_max;
    // Rescale the output rows by alpha, lane = column (conflict-free); row r's alpha is in lane 2r.
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      float a = __shfl_sync(0xffffffff, alpha, 2 * r);
      os[warp][r * LDO + lane] *= a;
      os[warp][r * LDO + lane + 32] *= a;
    }
    __syncwarp();

    // O += P V.
#pragma unroll
    for (int j = 0; j < HD / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, os[warp] + j * 16, LDO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps[warp] + kk * 16, LDP);
        wmma::load_matrix_sync(vf, vs + kk * 16 * LDT + j * 16, LDT);
        wmma::mma_sync(o, pf, vf, o);
      }
      wmma::store_matrix_sync(os[warp] + j * 16, o, LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out[q, h*64 + c] = O[q, c] / l[q]; row r's sum lives in lanes 2r and 2r+1.
  const long long out_stride = (long long)heads * HD;
  T *og = out + ((long long)b * n + q0) * out_stride + h * HD;
  for (int r = 0; r < 16; ++r) {
    float l = __shfl_sync(0xffffffff, row_sum, 2 * r);
    if (q0 + r >= n) continue;  // uniform across the warp
    float inv = 1.0f / l;
#pragma unroll
    for (int c = lane; c < HD; c += 32) og[r * out_stride + c] = from_f<T>(os[warp][r * LDO + c] * inv);
  }
}

#define ATTENTION(T, NAME)                                                                       \
  extern "C" __global__ void __launch_bounds__(32 * WARPS)                                        \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention<T>(qkv, bias, out, n, heads, scale_log2);                                          \
  }
ATTENTION(__half, attention_hd64_f16)
ATTENTION(__nv_bfloat16, attention_hd64_bf16)

// ---------------------------------------------------------------------------------------------
// Attention with register-resident scores and output (mma.sync.m16n8k16, f32 accumulation).
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4:
//   A (16x16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8, k x n):      b0 = (k = 2t..2t+1, n = g), b1 = (k = 2t+8..2t+9, n = g)
//   C (16x8, f32):        c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
// Two adjacent C blocks of probabilities are exactly the A fragment of the P V product.
// Warps per block (16 queries each) is a template parameter: 4 and 8 are both built. On an H200
// at batch 256, 4 warps measured 2.85 ms per layer and 8 warps 3.18 ms (different calls).
constexpr int MMA_BK = 64;              // keys per tile

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1, __nv_bfloat16) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
               "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1, __half) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
               "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded into one register of two 16-bit values (x in the low half).
__device__ __forceinline__ uint32_t pack2(float x, float y, __nv_bfloat16) {
  __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
  return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ uint32_t pack2(float x, float y, __half) {
  __half2 v = __floats2half2_rn(x, y);
  return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t ld32(const void *p) { return *reinterpret_cast<const uint32_t *>(p); }

// Adds bias[0], bias[1] to a packed pair in f32, rounding once.
template <typename T>
__device__ __forceinline__ uint32_t add_bias2(uint32_t v, const T *bias) {
  const T *e = reinterpret_cast<const T *>(&v);
  return pack2(to_f(e[0]) + to_f(bias[0]), to_f(e[1]) + to_f(bias[1]), e[0]);
}

// This warp's 16 query rows (r0 = its row g, and r0 + 8) of one head as mma A fragments, straight
// from global memory; rows at or past n are zero. `qb` (the head's 64 query-bias values, or
// null) is added in f32 and rounded once, as the bias pass would.
template <typename T>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qa)[HD / 16][4], const T *base,
                                                 long long row_stride, int r0, int n, int t,
                                                 const T *qb) {
  const bool v0 = r0 < n, v1 = r0 + 8 < n;
  const T *p0 = base + (long long)r0 * row_stride;
  const T *p1 = base + (long long)(r0 + 8) * row_stride;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    const int c = kk * 16 + 2 * t;
    qa[kk][0] = v0 ? ld32(p0 + c) : 0u;
    qa[kk][1] = v1 ? ld32(p1 + c) : 0u;
    qa[kk][2] = v0 ? ld32(p0 + c + 8) : 0u;
    qa[kk][3] = v1 ? ld32(p1 + c + 8) : 0u;
    if (qb) {
      if (v0) qa[kk][0] = add_bias2<T>(qa[kk][0], qb + c);
      if (v1) qa[kk][1] = add_bias2<T>(qa[kk][1], qb + c);
      if (v0) qa[kk][2] = add_bias2<T>(qa[kk][2], qb + c + 8);
      if (v1) qa[kk][3] = add_bias2<T>(qa[kk][3], qb + c + 8);
    }
  }
}

// The online softmax's bookkeeping once a tile's probabilities are computed against the new
// maxima n0, n1 (rows g and g+8), with this lane's partial row sums: the sums completed across
// the 4 lanes of a group, the running sums rescaled by a0, a1, the maxima moved on, and the
// output rescaled.
__device__ __forceinline__ void online_softmax_step(float sum0, float sum1, float n0, float n1,
                                                    float a0, float a1, float &m0, float &m1,
                                                    float &l0, float &l1, float (&o)[HD / 8][4]) {
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    sum0 += __shfl_xor_sync(0xffffffff, sum0, off);
    sum1 += __shfl_xor_sync(0xffffffff, sum1, off);
  }
  l0 = l0 * a0 + sum0;
  l1 = l1 * a1 + sum1;
  m0 = n0;
  m1 = n1;
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    o[j][0] *= a0;
    o[j][1] *= a0;
    o[j][2] *= a1;
    o[j][3] *= a1;
  }
}

// P's C blocks (2kk, 2kk+1) as the A fragment of keys 16kk..16kk+15 for the P V product.
template <int NB, typename T>
__device__ __forceinline__ void p_fragment(uint32_t (&pa)[4], const float (&s)[NB][4], int kk,
                                           T zero) {
  pa[0] = pack2(s[2 * kk][0], s[2 * kk][1], zero);
  pa[1] = pack2(s[2 * kk][2], s[2 * kk][3], zero);
  pa[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], zero);
  pa[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], zero);
}

template <typename T, int MMA_WARPS>
__device__ void attention_mma(const T *__restrict__ qkv, const T *__restrict__ qkv_bias,
                              T *__restrict__ out, int n, int heads, float scale_log2) {
  constexpr int MMA_BQ = 16 * MMA_WARPS;  // queries per block
  __shared__ __align__(128) T ks[MMA_BK * LDT];
  __shared__ __align__(128) T vs[MMA_BK * LDT];
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long row_stride = 3LL * heads * HD;
  const T *base = qkv + (long long)b * n * row_stride + h * HD;
  const T *kg = base + heads * HD;
  const T *vg = base + 2 * heads * HD;
  const int q0 = blockIdx.x * MMA_BQ + warp * 16;
  const T zero = from_f<T>(0.0f);

  // Q as A fragments, straight from global memory (rows past the end are zero), plus Q's bias.
  uint32_t qa[HD / 16][4];
  load_q_fragments<T>(qa, base, row_stride, q0 + g, n, t, qkv_bias ? qkv_bias + h * HD : nullptr);
  const T *kb = qkv_bias ? qkv_bias + (heads + h) * HD : nullptr;
  const T *vb = qkv_bias ? qkv_bias + (2 * heads + h) * HD : nullptr;

  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max of rows g and g+8
  float l0 = 0.0f, l1 = 0.0f;            // running sums

  const uint16_t *vs16 = reinterpret_cast<const uint16_t *>(vs);
  for (int k0 = 0; k0 < n; k0 += MMA_BK) {
    __syncthreads();
    load_tile<T>(ks, kg + (long long)k0 * row_stride, row_stride, MMA_BK, n - k0, tid, 32 * MMA_WARPS, kb);
    load_tile<T>(vs, vg + (long long)k0 * row_stride, row_stride, MMA_BK, n - k0, tid, 32 * MMA_WARPS, vb);
    __syncthreads();

    // S = Q K^T: 8 blocks of 8 keys.
    float s[MMA_BK / 8][4];
#pragma unroll
    for (int nb = 0; nb < MMA_BK / 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
      const T *krow = ks + (nb * 8 + g) * LDT + 2 * t;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
        mma16816(s[nb], qa[kk], ld32(krow + kk * 16), ld32(krow + kk * 16 + 8), zero);
    }

    // Online softmax in base 2; the 4 lanes of a group share rows g and g+8.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < MMA_BK / 8; ++nb) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = k0 + nb * 8 + 2 * t + (i & 1);
        float v = col < n ? s[nb][i] * scale_log2 : -INFINITY;
        s[nb][i] = v;
        if (i < 2) mx0 = fmaxf(mx0, v);
        else mx1 = fmaxf(mx1, v);
      }
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, off));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);  // finite: key k0 is valid
    const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1);  // 0 on the first tile
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < MMA_BK / 8; ++nb) {
      s[nb][0] = exp2f(s[nb][0] - n0);
      s[nb][1] = exp2f(s[nb][1] - n0);
      s[nb][2] = exp2f(s[nb][2] - n1);
      s[nb][3] = exp2f(s[nb][3] - n1);
      sum0 += s[nb][0] + s[nb][1];
      sum1 += s[nb][2] + s[nb][3];
    }
    online_softmax_step(sum0, sum1, n0, n1, a0, a1, m0, m1, l0, l1, o);

    // O += P V: P's C blocks (2kk, 2kk+1) form the A fragment of keys 16kk..16kk+15.
#pragma unroll
    for (int kk = 0; kk < MMA_BK / 16; ++kk) {
      uint32_t pa[4];
      p_fragment(pa, s, kk, zero);
      const int key = kk * 16 + 2 * t;
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) {
        const int col = j * 8 + g;
        const uint32_t b0 = vs16[key * LDT + col] | ((uint32_t)vs16[(key + 1) * LDT + col] << 16);
        const uint32_t b1 =
            vs16[(key + 8) * LDT + col] | ((uint32_t)vs16[(key + 9) * LDT + col] << 16);
        mma16816(o[j], pa, b0, b1, zero);
      }
    }
  }

  const long long out_stride = (long long)heads * HD;
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  T *o0 = out + ((long long)b * n + q0 + g) * out_stride + h * HD + 2 * t;
  T *o1 = o0 + 8 * out_stride;
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    if (q0 + g < n)
      *reinterpret_cast<uint32_t *>(o0 + j * 8) = pack2(o[j][0] * inv0, o[j][1] * inv0, zero);
    if (q0 + g + 8 < n)
      *reinterpret_cast<uint32_t *>(o1 + j * 8) = pack2(o[j][2] * inv1, o[j][3] * inv1, zero);
  }
}

#define ATTENTION_MMA(T, W, NAME)                                                                \
  extern "C" __global__ void __launch_bounds__(32 * W)                                            \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention_mma<T, W>(qkv, bias, out, n, heads, scale_log2);                                   \
  }
ATTENTION_MMA(__half, 4, attention_mma_f16)
ATTENTION_MMA(__nv_bfloat16, 4, attention_mma_bf16)
ATTENTION_MMA(__half, 8, attention_mma8_f16)
ATTENTION_MMA(__nv_bfloat16, 8, attention_mma8_bf16)

// ---------------------------------------------------------------------------------------------
// Attention "fa": the mma.sync kernel above with FlashAttention-2's memory habits.
//   - K/V tiles are double-buffered in shared memory by cp.async: the next tile streams in while
//     this one is multiplied (the kernel above stalls on every tile's global loads).
//   - B fragments come from ldmatrix (.trans for V): one instruction per four registers, where the
//     kernel above issues two 32-bit (K) or four 16-bit (V) shared loads per mma.
//   - The q|k|v bias needs no pass of its own and never touches the tiles: Q's is added in
//     registers; K's is dropped, since q·b_k is the same for every key of a query and softmax
//     cancels it; V's is added to the output, since each row of P sums to 1.
// W warps of 16 queries each (4: `attention_fa*`, 8: `attention_fa8_*`, which reads each K/V
// tile once for twice the queries); key tiles of 64; 36 KiB of static shared memory.
constexpr int FA_BK = 64;

__device__ __forceinline__ unsigned smem_u32(const void *p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, asynchronously; zero-fills instead of reading when !valid.
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i. Lane l receives
// (row l/4, cols 2(l%4), 2(l%4)+1) of each, or with .trans (rows 2(l%4), 2(l%4)+1; col l/4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// Starts copying FA_BK rows x 64 elements (rows at or past `valid` zero-filled) into `dst`.
template <typename T, int THREADS>
__device__ __forceinline__ void fa_load_tile(T *dst, const T *src, long long stride, int valid,
                                             int tid) {
#pragma unroll
  for (int i = 0; i < FA_BK * (HD / 8) / THREADS; ++i) {
    const int idx = tid + i * THREADS;
    const int r = idx / (HD / 8), c = (idx % (HD / 8)) * 8;
    const bool ok = r < valid;
    cp_async16(dst + r * LDT + c, src + (long long)(ok ? r : 0) * stride + c, ok);
  }
}

template <typename T, int W>
__device__ void attention_fa(const T *__restrict__ qkv, const T *__restrict__ qkv_bias,
                             T *__restrict__ out, int n, int heads, float scale_log2) {
  __shared__ __align__(128) T ks[2][FA_BK * LDT];
  __shared__ __align__(128) T vs[2][FA_BK * LDT];
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int lrow = lane % 8, lmat = lane / 8;  // ldmatrix: row within, and which, 8x8 matrix
  const int b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long row_stride = 3LL * heads * HD;
  const T *base = qkv + (long long)b * n * row_stride + h * HD;
  const T *kg = base + heads * HD;
  const T *vg = base + 2 * heads * HD;
  const int q0 = blockIdx.x * (16 * W) + warp * 16;
  const T zero = from_f<T>(0.0f);
  const int tiles = (n + FA_BK - 1) / FA_BK;

  // The first tile's copy starts before Q is read.
  fa_load_tile<T, 32 * W>(ks[0], kg, row_stride, n, tid);
  fa_load_tile<T, 32 * W>(vs[0], vg, row_stride, n, tid);
  cp_async_commit();

  // Q as A fragments, straight from global memory (rows past the end are zero), plus Q's bias.
  uint32_t qa[HD / 16][4];
  load_q_fragments<T>(qa, base, row_stride, q0 + g, n, t, qkv_bias ? qkv_bias + h * HD : nullptr);

  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max of rows g and g+8
  float l0 = 0.0f, l1 = 0.0f;            // running sums

  for (int it = 0; it < tiles; ++it) {
    const int cur = it & 1;
    const int k0 = it * FA_BK;
    if (it + 1 < tiles) {  // the next tile streams into the other buffer during this one's work
      const int k1 = k0 + FA_BK;
      fa_load_tile<T, 32 * W>(ks[cur ^ 1], kg + (long long)k1 * row_stride, row_stride, n - k1, tid);
      fa_load_tile<T, 32 * W>(vs[cur ^ 1], vg + (long long)k1 * row_stride, row_stride, n - k1, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T *kt = ks[cur];
    const T *vt = vs[cur];

    // S = Q K^T: 8 blocks of 8 keys; one ldmatrix.x4 gives the B fragments of two k-steps.
    float s[FA_BK / 8][4];
#pragma unroll
    for (int nb = 0; nb < FA_BK / 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
      for (int kp = 0; kp < HD / 32; ++kp) {
        uint32_t kf[4];
        ldmatrix_x4(kf, kt + (nb * 8 + lrow) * LDT + kp * 32 + lmat * 8);
        mma16816(s[nb], qa[2 * kp], kf[0], kf[1], zero);
        mma16816(s[nb], qa[2 * kp + 1], kf[2], kf[3], zero);
      }
    }

    // Online softmax in base 2 on the raw scores (the scale folded into the exponent, as
    // FlashAttention-2 does); keys past the end, only in the last tile, are masked out. The 4 lanes
    // of a group share rows g and g+8.
    if (k0 + FA_BK > n) {
#pragma unroll
      for (int nb = 0; nb < FA_BK / 8; ++nb) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (k0 + nb * 8 + 2 * t + (i & 1) >= n) s[nb][i] = -INFINITY;
      }
    }
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < FA_BK / 8; ++nb) {
      mx0 = fmaxf(mx0, fmaxf(s[nb][0], s[nb][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nb][2], s[nb][3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, off));
    }
    // Running maxima in scaled units; finite, since key k0 is valid (scale_log2 > 0).
    const float n0 = fmaxf(m0, mx0 * scale_log2), n1 = fmaxf(m1, mx1 * scale_log2);
    const float a0 = exp2f(m0 - n0), a1 = exp2f(m1 - n1);  // 0 on the first tile
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < FA_BK / 8; ++nb) {
      s[nb][0] = exp2f(fmaf(s[nb][0], scale_log2, -n0));
      s[nb][1] = exp2f(fmaf(s[nb][1], scale_log2, -n0));
      s[nb][2] = exp2f(fmaf(s[nb][2], scale_log2, -n1));
      s[nb][3] = exp2f(fmaf(s[nb][3], scale_log2, -n1));
      sum0 += s[nb][0] + s[nb][1];
      sum1 += s[nb][2] + s[nb][3];
    }
    online_softmax_step(sum0, sum1, n0, n1, a0, a1, m0, m1, l0, l1, o);

    // O += P V: P's C blocks (2kk, 2kk+1) form the A fragment of keys 16kk..16kk+15; one
    // ldmatrix.x4.trans gives the B fragments of two 8-wide output blocks.
#pragma unroll
    for (int kk = 0; kk < FA_BK / 16; ++kk) {
      uint32_t pa[4];
      p_fragment(pa, s, kk, zero);
#pragma unroll
      for (int jp = 0; jp < HD / 16; ++jp) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, vt + (kk * 16 + (lmat & 1) * 8 + lrow) * LDT + (2 * jp + (lmat >> 1)) * 8);
        mma16816(o[2 * jp], pa, vf[0], vf[1], zero);
        mma16816(o[2 * jp + 1], pa, vf[2], vf[3], zero);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's copy
  }

  const long long out_stride = (long long)heads * HD;
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  const T *vb = qkv_bias ? qkv_bias + (2 * heads + h) * HD : nullptr;
  T *o0 = out + ((long long)b * n + q0 + g) * out_stride + h * HD + 2 * t;
  T *o1 = o0 + 8 * out_stride;
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    const float c0 = vb ? to_f(vb[j * 8 + 2 * t]) : 0.0f;
    const float c1 = vb ? to_f(vb[j * 8 + 2 * t + 1]) : 0.0f;
    if (q0 + g < n)
      *reinterpret_cast<uint32_t *>(o0 + j * 8) =
          pack2(o[j][0] * inv0 + c0, o[j][1] * inv0 + c1, zero);
    if (q0 + g + 8 < n)
      *reinterpret_cast<uint32_t *>(o1 + j * 8) =
          pack2(o[j][2] * inv1 + c0, o[j][3] * inv1 + c1, zero);
  }
}

// MINB asks ptxas for MINB blocks per SM, so at most 65536 / (MINB * 32 * W) registers. ptxas
// for sm_90: fa (4 warps, 3 blocks) 165 registers, no spill; fa128 (4 warps, 4 blocks) 128 and
// 48 bytes of spill; fa8 (8 warps, 2 blocks) 128 and 48 bytes of spill; without a minimum, 187.
#define ATTENTION_FA(T, W, MINB, NAME)                                                           \
  extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                      \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention_fa<T, W>(qkv, bias, out, n, heads, scale_log2);                                    \
  }
ATTENTION_FA(__half, 4, 3, attention_fa_f16)
ATTENTION_FA(__nv_bfloat16, 4, 3, attention_fa_bf16)
ATTENTION_FA(__half, 4, 4, attention_fa128_f16)
ATTENTION_FA(__nv_bfloat16, 4, 4, attention_fa128_bf16)
ATTENTION_FA(__half, 8, 2, attention_fa8_f16)
ATTENTION_FA(__nv_bfloat16, 8, 2, attention_fa8_bf16)

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
