// Included by fused.cu (compiled to PTX by features/build.rs). Attention, head dimension 64: the
// shared tile constants and loader, and the first (WMMA) kernel, kept as a cross-check.
#pragma once

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

#ifndef GAPPROBE_HELPERS_ONLY  // attention_wg.cu takes the helpers above, not these kernels
#define ATTENTION(T, NAME)                                                                       \
  extern "C" __global__ void __launch_bounds__(32 * WARPS)                                        \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention<T>(qkv, bias, out, n, heads, scale_log2);                                          \
  }
ATTENTION(__half, attention_hd64_f16)
ATTENTION(__nv_bfloat16, attention_hd64_bf16)
#endif
