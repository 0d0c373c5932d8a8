// Included by fused.cu after attention_wmma.cuh (whose HD and LDT it uses). The register-resident
// attention kernels: `attention_mma_*` (the default) and `attention_fa_*` (cp.async, ldmatrix,
// bias folded in).
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

// On the host (tools/kernel_emulation) shim_mma.h defines mma16816 and the cp.async and ldmatrix
// wrappers below instead: the emulation runs these kernels' own code around them.
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
// tile once for twice the queries), or of 32 (`attention_fa32_*`, R = 2 below); key tiles of 64;
// 36 KiB of static shared memory.
constexpr int FA_BK = 64;

#ifndef GAPPROBE_HOST_EMULATION
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
// 2^x from the special-function unit alone (ex2.approx.ftz): exp2f's handling of results below
// 2^-126 costs three more instructions per call (a compare and two multiplies), here 0 instead.
// A probability that small is 2^-126 of the row's largest, so the output moves by less than that;
// for every larger result the two give the same bits.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
#endif

template <bool FTZ> __device__ __forceinline__ float fa_exp2(float x) {
  return FTZ ? exp2_ftz(x) : exp2f(x);
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

// One key tile's work for one warp's R row tiles, from the tile in shared memory (kt, vt):
// S = Q K^T, the online softmax, O += P V. `valid` (warp-uniform) is the number of the tile's keys
// that exist when the products of the key blocks past them are to be skipped, else FA_BK; the
// kernel passes FA_BK as a constant for every full tile, so that copy has no branches.
template <typename T, int R, bool FTZ>
__device__ __forceinline__ void fa_tile(const T *kt, const T *vt, const uint32_t (&qa)[R][HD / 16][4],
                                        float (&o)[R][HD / 8][4], float (&m0)[R], float (&m1)[R],
                                        float (&l0)[R], float (&l1)[R], int k0, int n, int valid,
                                        float scale_log2, int lane) {
  const int t = lane % 4;
  const int lrow = lane % 8, lmat = lane / 8;  // ldmatrix: row within, and which, 8x8 matrix
  const T zero = from_f<T>(0.0f);

  // S = Q K^T: 8 blocks of 8 keys; one ldmatrix.x4 gives the B fragments of two k-steps, for
  // each row tile.
  float s[R][FA_BK / 8][4];
#pragma unroll
  for (int nb = 0; nb < FA_BK / 8; ++nb) {
#pragma unroll
    for (int r = 0; r < R; ++r) s[r][nb][0] = s[r][nb][1] = s[r][nb][2] = s[r][nb][3] = 0.0f;
    if (nb * 8 >= valid) continue;
#pragma unroll
    for (int kp = 0; kp < HD / 32; ++kp) {
      uint32_t kf[4];
      ldmatrix_x4(kf, kt + (nb * 8 + lrow) * LDT + kp * 32 + lmat * 8);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        mma16816(s[r][nb], qa[r][2 * kp], kf[0], kf[1], zero);
        mma16816(s[r][nb], qa[r][2 * kp + 1], kf[2], kf[3], zero);
      }
    }
  }

  // Online softmax in base 2 on the raw scores (the scale folded into the exponent, as
  // FlashAttention-2 does); keys past the end, only in the last tile, are masked out. The 4 lanes
  // of a group share rows g and g+8.
  if (k0 + FA_BK > n) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int nb = 0; nb < FA_BK / 8; ++nb) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (k0 + nb * 8 + 2 * t + (i & 1) >= n) s[r][nb][i] = -INFINITY;
      }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < FA_BK / 8; ++nb) {
      mx0 = fmaxf(mx0, fmaxf(s[r][nb][0], s[r][nb][1]));
      mx1 = fmaxf(mx1, fmaxf(s[r][nb][2], s[r][nb][3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, off));
    }
    // Running maxima in scaled units; finite, since key k0 is valid (scale_log2 > 0).
    const float n0 = fmaxf(m0[r], mx0 * scale_log2), n1 = fmaxf(m1[r], mx1 * scale_log2);
    const float a0 = fa_exp2<FTZ>(m0[r] - n0), a1 = fa_exp2<FTZ>(m1[r] - n1);  // 0 on the first tile
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int nb = 0; nb < FA_BK / 8; ++nb) {
      s[r][nb][0] = fa_exp2<FTZ>(fmaf(s[r][nb][0], scale_log2, -n0));
      s[r][nb][1] = fa_exp2<FTZ>(fmaf(s[r][nb][1], scale_log2, -n0));
      s[r][nb][2] = fa_exp2<FTZ>(fmaf(s[r][nb][2], scale_log2, -n1));
      s[r][nb][3] = fa_exp2<FTZ>(fmaf(s[r][nb][3], scale_log2, -n1));
      sum0 += s[r][nb][0] + s[r][nb][1];
      sum1 += s[r][nb][2] + s[r][nb][3];
    }
    online_softmax_step(sum0, sum1, n0, n1, a0, a1, m0[r], m1[r], l0[r], l1[r], o[r]);
  }

  // O += P V: P's C blocks (2kk, 2kk+1) form the A fragment of keys 16kk..16kk+15; one
  // ldmatrix.x4.trans gives the B fragments of two 8-wide output blocks.
#pragma unroll
  for (int kk = 0; kk < FA_BK / 16; ++kk) {
    if (kk * 16 >= valid) continue;  // P is 0 there (and V's rows zero-filled)
    uint32_t pa[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) p_fragment(pa[r], s[r], kk, zero);
#pragma unroll
    for (int jp = 0; jp < HD / 16; ++jp) {
      uint32_t vf[4];
      ldmatrix_x4_trans(vf, vt + (kk * 16 + (lmat & 1) * 8 + lrow) * LDT + (2 * jp + (lmat >> 1)) * 8);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        mma16816(o[r][2 * jp], pa[r], vf[0], vf[1], zero);
        mma16816(o[r][2 * jp + 1], pa[r], vf[2], vf[3], zero);
      }
    }
  }
}

// SKIP: in the last key tile (a copy of fa_tile of its own, so full tiles run without branches),
// the products of 8-key (Q K^T) and 16-key (P V) blocks that hold no valid key are skipped (their
// scores are masked to -inf and their probabilities are 0 anyway, so the results are the same
// bits): at CLIP-336's 577 tokens the tenth tile holds one key. Warps whose queries are all past
// the end skip their work too (3 of the 40 warps of a head at 577).
// R: 16-query row tiles per warp. With R = 2 (FlashAttention-2's layout for head dim 64) each
// K/V fragment loaded from shared memory feeds two products, halving the shared-memory reads per
// product, and each warp has two independent chains of products and exponentials to interleave;
// every row's arithmetic is the same as with R = 1, so the output is the same bits.
// FTZ: exponentials by exp2_ftz (the same bits unless a probability falls below 2^-126).
template <typename T, int W, bool SKIP = false, int R = 1, bool FTZ = false>
__device__ void attention_fa(const T *__restrict__ qkv, const T *__restrict__ qkv_bias,
                             T *__restrict__ out, int n, int heads, float scale_log2) {
  __shared__ __align__(128) T ks[2][FA_BK * LDT];
  __shared__ __align__(128) T vs[2][FA_BK * LDT];
  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int b = blockIdx.y / heads, h = blockIdx.y % heads;
  const long long row_stride = 3LL * heads * HD;
  const T *base = qkv + (long long)b * n * row_stride + h * HD;
  const T *kg = base + heads * HD;
  const T *vg = base + 2 * heads * HD;
  const int q0 = blockIdx.x * (16 * R * W) + warp * 16 * R;  // this warp's first query
  const T zero = from_f<T>(0.0f);
  const int tiles = (n + FA_BK - 1) / FA_BK;

  // The first tile's copy starts before Q is read.
  fa_load_tile<T, 32 * W>(ks[0], kg, row_stride, n, tid);
  fa_load_tile<T, 32 * W>(vs[0], vg, row_stride, n, tid);
  cp_async_commit();

  // Q as A fragments, straight from global memory (rows past the end are zero), plus Q's bias.
  // Row tile r holds queries q0 + 16r + g and q0 + 16r + g + 8.
  uint32_t qa[R][HD / 16][4];
  float o[R][HD / 8][4];
  float m0[R], m1[R];  // running max of rows g and g+8
  float l0[R], l1[R];  // running sums
#pragma unroll
  for (int r = 0; r < R; ++r) {
    load_q_fragments<T>(qa[r], base, row_stride, q0 + 16 * r + g, n, t,
                        qkv_bias ? qkv_bias + h * HD : nullptr);
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) o[r][j][0] = o[r][j][1] = o[r][j][2] = o[r][j][3] = 0.0f;
    m0[r] = m1[r] = -INFINITY;
    l0[r] = l1[r] = 0.0f;
  }

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
    // Warp-uniform, only when SKIP: a warp whose 16R queries are all past the end (the last query
    // block of a head, where 577 tokens leave one valid query of 64) still helps load the tiles
    // but computes nothing (and writes nothing); every warp meets the same barriers.
    if (!SKIP || q0 < n) {
      if (SKIP && k0 + FA_BK > n)  // only the last tile
        fa_tile<T, R, FTZ>(ks[cur], vs[cur], qa, o, m0, m1, l0, l1, k0, n, n - k0, scale_log2, lane);
      else
        fa_tile<T, R, FTZ>(ks[cur], vs[cur], qa, o, m0, m1, l0, l1, k0, n, FA_BK, scale_log2, lane);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's copy
  }

  const long long out_stride = (long long)heads * HD;
  const T *vb = qkv_bias ? qkv_bias + (2 * heads + h) * HD : nullptr;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int q = q0 + 16 * r + g;
    const float inv0 = 1.0f / l0[r], inv1 = 1.0f / l1[r];
    // Written out rather than from `q`: at R = 1 this keeps fa's compiled code as it was.
    T *o0 = out + ((long long)b * n + q0 + 16 * r + g) * out_stride + h * HD + 2 * t;
    T *o1 = o0 + 8 * out_stride;
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      const float c0 = vb ? to_f(vb[j * 8 + 2 * t]) : 0.0f;
      const float c1 = vb ? to_f(vb[j * 8 + 2 * t + 1]) : 0.0f;
      if (q < n)
        *reinterpret_cast<uint32_t *>(o0 + j * 8) =
            pack2(o[r][j][0] * inv0 + c0, o[r][j][1] * inv0 + c1, zero);
      if (q + 8 < n)
        *reinterpret_cast<uint32_t *>(o1 + j * 8) =
            pack2(o[r][j][2] * inv1 + c0, o[r][j][3] * inv1 + c1, zero);
    }
  }
}

// MINB asks ptxas for MINB blocks per SM, so at most 65536 / (MINB * 32 * W) registers. ptxas
// for sm_90: fa (4 warps, 3 blocks) 165 registers, no spill; fa128 (4 warps, 4 blocks) 128 and
// 48 bytes of spill; fa8 (8 warps, 2 blocks) 128 and 48 bytes of spill; without a minimum, 187.
// fa_skip 168, no spill; fa32 (4 warps of 32 queries, 2 blocks) 255 and 12 bytes of spill, stored
// before the key loop and loaded after it.
#define ATTENTION_FA(T, W, MINB, SKIP, R, FTZ, NAME)                                             \
  extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                      \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention_fa<T, W, SKIP, R, FTZ>(qkv, bias, out, n, heads, scale_log2);                      \
  }
ATTENTION_FA(__half, 4, 3, false, 1, false, attention_fa_f16)
ATTENTION_FA(__nv_bfloat16, 4, 3, false, 1, false, attention_fa_bf16)
ATTENTION_FA(__half, 4, 4, false, 1, false, attention_fa128_f16)
ATTENTION_FA(__nv_bfloat16, 4, 4, false, 1, false, attention_fa128_bf16)
ATTENTION_FA(__half, 8, 2, false, 1, false, attention_fa8_f16)
ATTENTION_FA(__nv_bfloat16, 8, 2, false, 1, false, attention_fa8_bf16)
// Not yet run on a GPU: fa with the skips and exp2_ftz, and that with 32 queries per warp (two
// row tiles), 128 per block.
ATTENTION_FA(__half, 4, 3, true, 1, true, attention_fa_skip_f16)
ATTENTION_FA(__nv_bfloat16, 4, 3, true, 1, true, attention_fa_skip_bf16)
ATTENTION_FA(__half, 4, 2, true, 2, true, attention_fa32_f16)
ATTENTION_FA(__nv_bfloat16, 4, 2, true, 2, true, attention_fa32_bf16)
