// Included by fused.cu after attention_wmma.cuh (whose HD and LDT it uses). The register-resident
// attention kernel `attention_mma_*` and the fragment helpers it shares with attention_fa.cuh's
// `attention_fa_*` (cp.async, ldmatrix, bias folded in; the default).
#pragma once

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

// On the host (tools/kernel_emulation) shim_mma.h defines mma16816 below, and attention_fa.cuh's
// cp.async, ldmatrix and exp2_ftz wrappers, instead: the emulation runs the kernels' own code
// around them.
#ifndef GAPPROBE_HOST_EMULATION
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
#endif

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

#ifndef GAPPROBE_HELPERS_ONLY  // attention_wg.cu takes the helpers above, not these kernels
#define ATTENTION_MMA(T, W, NAME)                                                                \
  extern "C" __global__ void __launch_bounds__(32 * W)                                            \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention_mma<T, W>(qkv, bias, out, n, heads, scale_log2);                                   \
  }
ATTENTION_MMA(__half, 4, attention_mma_f16)
ATTENTION_MMA(__nv_bfloat16, 4, attention_mma_bf16)
ATTENTION_MMA(__half, 8, attention_mma8_f16)
ATTENTION_MMA(__nv_bfloat16, 8, attention_mma8_bf16)
#endif
