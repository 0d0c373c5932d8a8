// Included by fused.cu after attention_mma.cuh, whose fragment helpers (mma16816, pack2,
// load_q_fragments, online_softmax_step, p_fragment) it uses: the `attention_fa*` kernels.
#pragma once

// ---------------------------------------------------------------------------------------------
// Attention "fa": the mma.sync kernel of attention_mma.cuh with FlashAttention-2's memory habits.
//   - K/V tiles are double-buffered in shared memory by cp.async: the next tile streams in while
//     this one is multiplied (attention_mma_* stalls on every tile's global loads).
//   - B fragments come from ldmatrix (.trans for V): one instruction per four registers, where
//     attention_mma_* issues two 32-bit (K) or four 16-bit (V) shared loads per mma.
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

// The online softmax of one key tile's raw scores s (R row tiles of 16 queries, the mma C
// layout: rows g and g+8 of each tile, 8 blocks of 8 keys) in base 2, the scale folded into the
// exponent as FlashAttention-2 does: keys past the end (only in the last tile, k0 + FA_BK > n)
// masked out, the running maxima and sums moved on, the output rescaled, s turned into
// probabilities. Shared by fa_tile and attention_wg.cuh.
template <int R, bool FTZ>
__device__ __forceinline__ void fa_softmax(float (&s)[R][FA_BK / 8][4], float (&o)[R][HD / 8][4],
                                           float (&m0)[R], float (&m1)[R], float (&l0)[R],
                                           float (&l1)[R], int k0, int n, float scale_log2,
                                           int t) {
  // The 4 lanes of a group share rows g and g+8.
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

  fa_softmax<R, FTZ>(s, o, m0, m1, l0, l1, k0, n, scale_log2, t);

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

// Writes one row tile's output: rows q (at o0, this lane's columns 2t, 2t+1 of each 8) and q + 8
// (o0 + 8 rows), each times the inverse of its row sum (inv0, inv1), plus V's bias (vb, or null);
// rows at or past n are left out. Shared by attention_fa and attention_wg.cuh.
template <typename T>
__device__ __forceinline__ void fa_store_tile(T *o0, long long out_stride, const float (&o)[HD / 8][4],
                                              float inv0, float inv1, const T *vb, int q, int n, int t) {
  const T zero = from_f<T>(0.0f);
  T *o1 = o0 + 8 * out_stride;
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    const float c0 = vb ? to_f(vb[j * 8 + 2 * t]) : 0.0f;
    const float c1 = vb ? to_f(vb[j * 8 + 2 * t + 1]) : 0.0f;
    if (q < n)
      *reinterpret_cast<uint32_t *>(o0 + j * 8) = pack2(o[j][0] * inv0 + c0, o[j][1] * inv0 + c1, zero);
    if (q + 8 < n)
      *reinterpret_cast<uint32_t *>(o1 + j * 8) = pack2(o[j][2] * inv1 + c0, o[j][3] * inv1 + c1, zero);
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
    const float inv0 = 1.0f / l0[r], inv1 = 1.0f / l1[r];
    fa_store_tile<T>(out + ((long long)b * n + q0 + 16 * r + g) * out_stride + h * HD + 2 * t,
                     out_stride, o[r], inv0, inv1, vb, q0 + 16 * r + g, n, t);
  }
}

// MINB asks ptxas for MINB blocks per SM, so at most 65536 / (MINB * 32 * W) registers. ptxas
// for sm_90: fa (4 warps, 3 blocks) 165 registers, no spill; fa128 (4 warps, 4 blocks) 128 and
// 48 bytes of spill; fa8 (8 warps, 2 blocks) 128 and 48 bytes of spill; without a minimum, 187.
// fa_skip 168, no spill; fa32 (4 warps of 32 queries, 2 blocks) 255 and 12 bytes of spill, stored
// before the key loop and loaded after it.
#ifndef GAPPROBE_HELPERS_ONLY  // attention_wg.cu takes the helpers above, not these kernels
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
#endif
