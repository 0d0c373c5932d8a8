// Included by attention_wg.cu (a PTX module of its own, compute_90a: wgmma exists only on sm_90a)
// after attention_mma.cuh and attention_fa.cuh, whose helpers it uses (load_q_fragments,
// p_fragment, fa_softmax, fa_store_tile, cp.async, exp2_ftz): the `attention_wg_*` kernels.
#pragma once

// ---------------------------------------------------------------------------------------------
// Attention "wg": the `fa_skip` kernel's arithmetic with Hopper's warpgroup products.
//   - A block is one warpgroup (4 warps, 64 queries of one head). S = Q K^T and O += P V are
//     each four wgmma.m64n64k16, with Q and P from registers and K and V read by the tensor cores
//     straight from shared memory: no ldmatrix, and 8 product instructions per warp and tile
//     where fa issues 64 mma.sync and 32 ldmatrix.
//   - Warp w of the warpgroup holds queries 16w..16w+15 in the mma.sync fragment layouts (PTX
//     ISA, "Register Fragments" of wgmma .m64nNk16: the A and D layouts per warp are those of
//     mma.m16n8k16, repeated along N), so the softmax, the Q loads, the P fragments and the
//     output are fa's own code (fa_softmax, load_q_fragments, p_fragment, fa_store_tile).
//     CUTLASS's register layouts for these operands (ALayout_64x16, CLayout_64xN in
//     cute/atom/mma_traits_sm90_gmma.hpp) say the same: warp w, lane (g, t) holds rows
//     16w + g and 16w + g + 8, columns 2t, 2t + 1 (+ 8 for A's second pair, + 8 nb for D's nb).
//   - K/V tiles of 64 keys, double-buffered by cp.async as in fa, in the wgmma's canonical
//     no-swizzle layouts (below); 32 KiB of static shared memory.
//   - The q|k|v bias as in fa: Q's added in registers, K's dropped, V's added to the output.
// Every warp takes part in every product (wgmma is warpgroup-wide), so unlike fa_skip no warp
// idles in the last query block; the last key tile's keys past the end are zero-filled and
// masked, as in fa.
constexpr int WG_BK = 64;            // keys per tile
constexpr int WG_TILE = WG_BK * HD;  // elements per K or V tile (no padding)

// Shared-memory layouts, element offsets; every 8x8 "core matrix" is 128 contiguous bytes (8 rows
// of 16 bytes). PTX ISA, "Shared Memory Matrix Layout", canonical layouts without swizzling,
// in elements with T = 8 per 16 bytes:
//   K-major  ((8,m),(T,2k)):((1T,SBO),(1,LBO))   (row mn, column k)
//   MN-major ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
// K, the B operand of S = Q K^T (N = key, K = head dim d), K-major:
//   (key / 8) * 512 + (d / 8) * 64 + (key % 8) * 8 + d % 8  ->  LBO 128 B (next 8 d), SBO 1024 B
// V, the B operand of O = P V (K = key, N = d), MN-major (imm-trans-b = 1):
//   (d / 8) * 512 + (key / 8) * 64 + (key % 8) * 8 + d % 8  ->  LBO 128 B (next 8 keys), SBO 1024 B
// A k-step of 16 starts 2 core matrices (256 bytes) further along K in both.
// CUTLASS's make_gmma_desc (cute/atom/mma_traits_sm90_gmma.hpp) reads the no-swizzle strides the
// same way: K-major, LBO between the core matrices along K and SBO between those along M/N;
// MN-major, SBO between the core matrices along M/N and LBO between those along K.
constexpr unsigned WG_LBO = 128, WG_SBO = 1024;
__device__ __forceinline__ int wg_k_offset(int key, int d) {
  return (key / 8) * 512 + (d / 8) * 64 + (key % 8) * 8 + d % 8;
}
__device__ __forceinline__ int wg_v_offset(int key, int d) {
  return (d / 8) * 512 + (key / 8) * 64 + (key % 8) * 8 + d % 8;
}

#ifndef GAPPROBE_HOST_EMULATION
// A shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"; CUTLASS's
// GmmaDescriptor has the same fields): start address in bits 0-13, LBO in 16-29, SBO in 32-45,
// all in units of 16 bytes; base offset (49-51) 0, layout type (62-63) 0 = no swizzle.
typedef uint64_t WgDesc;
__device__ __forceinline__ WgDesc wg_desc(const void *p, unsigned lbo, unsigned sbo) {
  return (uint64_t)((smem_u32(p) & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
         ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32);
}
// cp.async writes through the generic proxy, wgmma reads through the async proxy: each thread
// makes its landed copies visible to the latter before the barrier that hands them over.
__device__ __forceinline__ void wg_fence_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// d (64 x 64 f32; this thread's 32 values d[nb][i] in the mma C layout) = (ACC ? d : 0) + A B
// over K = 64: four wgmma.m64n64k16, A from registers (a[kk]: k-step kk's mma A fragment), B from
// shared memory (desc[kk]; TRANS_B: MN-major). Fenced, committed and waited for in one asm
// statement, so the compiler sees one instruction reading a and writing d and cannot move other
// accesses to them between the asynchronous products.
#define WG_D                                                                                     \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24," \
  "%25,%26,%27,%28,%29,%30,%31}"
#define WG_GEMM64(TY, TB, ACC)                                                                      \
  asm volatile("{\n.reg .pred p, q;\nsetp.ne.b32 p, %52, 0;\nsetp.ne.b32 q, %53, 0;\n"           \
               "wgmma.fence.sync.aligned;\n"                                                     \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " WG_D                  \
               ", {%32,%33,%34,%35}, %48, p, 1, 1, " TB ";\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " WG_D                  \
               ", {%36,%37,%38,%39}, %49, q, 1, 1, " TB ";\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " WG_D                  \
               ", {%40,%41,%42,%43}, %50, q, 1, 1, " TB ";\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " WG_D                  \
               ", {%44,%45,%46,%47}, %51, q, 1, 1, " TB ";\n"                                    \
               "wgmma.commit_group.sync.aligned;\n"                                              \
               "wgmma.wait_group.sync.aligned 0;\n}\n"                                           \
               : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]),      \
                 "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]),      \
                 "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]),      \
                 "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]),      \
                 "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]),      \
                 "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),      \
                 "+f"(d[7][2]), "+f"(d[7][3])                                                    \
               : "r"(a[0][0]), "r"(a[0][1]), "r"(a[0][2]), "r"(a[0][3]), "r"(a[1][0]),           \
                 "r"(a[1][1]), "r"(a[1][2]), "r"(a[1][3]), "r"(a[2][0]), "r"(a[2][1]),           \
                 "r"(a[2][2]), "r"(a[2][3]), "r"(a[3][0]), "r"(a[3][1]), "r"(a[3][2]),           \
                 "r"(a[3][3]), "l"(desc[0]), "l"(desc[1]), "l"(desc[2]), "l"(desc[3]),           \
                 "r"(ACC ? 1 : 0), "r"(1)                                                        \
               : "memory")
template <typename T, bool TRANS_B, bool ACC>
__device__ __forceinline__ void wg_gemm64(float (&d)[8][4], const uint32_t (&a)[4][4],
                                          const WgDesc (&desc)[4]);
#define WG_GEMM64_SPECIALISE(T, TY, TRANS_B, TB, ACC)                                            \
  template <>                                                                                    \
  __device__ __forceinline__ void wg_gemm64<T, TRANS_B, ACC>(                                    \
      float (&d)[8][4], const uint32_t (&a)[4][4], const WgDesc (&desc)[4]) {                    \
    WG_GEMM64(TY, TB, ACC);                                                                         \
  }
WG_GEMM64_SPECIALISE(__nv_bfloat16, "bf16", false, "0", false)
WG_GEMM64_SPECIALISE(__nv_bfloat16, "bf16", true, "1", true)
WG_GEMM64_SPECIALISE(__half, "f16", false, "0", false)
WG_GEMM64_SPECIALISE(__half, "f16", true, "1", true)
#endif

// Starts copying one tile of 64 keys (rows at or past `valid` zero-filled) of K and of V into the
// layouts above: 512 16-byte pieces each, 4 per thread. Eight consecutive lanes take one piece
// of eight consecutive keys, so a warp's shared-memory writes are 512 contiguous bytes (K) or
// four whole 128-byte core matrices (V), and its global reads 64 contiguous bytes per key.
template <typename T>
__device__ __forceinline__ void wg_load_tiles(T *kd, T *vd, const T *kg, const T *vg,
                                              long long stride, int valid, int tid) {
#pragma unroll
  for (int i = 0; i < WG_BK * (HD / 8) / 128; ++i) {
    const int idx = tid + i * 128;
    const int key = (idx / 64) * 8 + idx % 8, d = ((idx / 8) % 8) * 8;
    const bool ok = key < valid;
    const long long src = (long long)(ok ? key : 0) * stride + d;
    cp_async16(kd + wg_k_offset(key, d), kg + src, ok);
    cp_async16(vd + wg_v_offset(key, d), vg + src, ok);
  }
}

// This block's (batch b, head h) in the packed [B, N, 3 * H * 64] projection: its first query,
// key and value rows, all `row_stride` apart. (fa and mma spell the same out inline, which keeps
// their compiled code as measured.)
template <typename T> struct WgHead {
  int b, h;
  long long row_stride;
  const T *q, *k, *v;
  __device__ __forceinline__ WgHead(const T *qkv, int n, int heads)
      : b(blockIdx.y / heads), h(blockIdx.y % heads), row_stride(3LL * heads * HD),
        q(qkv + (long long)b * n * row_stride + h * HD), k(q + heads * HD), v(q + 2 * heads * HD) {}
};

template <typename T>
__device__ void attention_wg(const T *__restrict__ qkv, const T *__restrict__ qkv_bias,
                             T *__restrict__ out, int n, int heads, float scale_log2) {
  __shared__ __align__(128) T ks[2][WG_TILE];
  __shared__ __align__(128) T vs[2][WG_TILE];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const WgHead<T> head(qkv, n, heads);
  const int b = head.b, h = head.h;
  const long long row_stride = head.row_stride;
  const T *base = head.q, *kg = head.k, *vg = head.v;
  const int q0 = blockIdx.x * 64 + warp * 16;  // this warp's first query
  const T zero = from_f<T>(0.0f);
  const int tiles = (n + WG_BK - 1) / WG_BK;

  wg_load_tiles<T>(ks[0], vs[0], kg, vg, row_stride, n, tid);
  cp_async_commit();

  uint32_t qa[HD / 16][4];
  load_q_fragments<T>(qa, base, row_stride, q0 + g, n, t, qkv_bias ? qkv_bias + h * HD : nullptr);
  float o[1][HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[0][j][0] = o[0][j][1] = o[0][j][2] = o[0][j][3] = 0.0f;
  float m0[1] = {-INFINITY}, m1[1] = {-INFINITY}, l0[1] = {0.0f}, l1[1] = {0.0f};

  for (int it = 0; it < tiles; ++it) {
    const int cur = it & 1;
    const int k0 = it * WG_BK;
    if (it + 1 < tiles) {  // the next tile streams into the other buffer during this one's work
      const int k1 = k0 + WG_BK;
      wg_load_tiles<T>(ks[cur ^ 1], vs[cur ^ 1], kg + (long long)k1 * row_stride,
                       vg + (long long)k1 * row_stride, row_stride, n - k1, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    wg_fence_proxy();
    __syncthreads();
    WgDesc kdesc[4], vdesc[4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      kdesc[kk] = wg_desc(ks[cur] + kk * 128, WG_LBO, WG_SBO);
      vdesc[kk] = wg_desc(vs[cur] + kk * 128, WG_LBO, WG_SBO);
    }
    float s[1][WG_BK / 8][4];
    wg_gemm64<T, false, false>(s[0], qa, kdesc);
    fa_softmax<1, true>(s, o, m0, m1, l0, l1, k0, n, scale_log2, t);
    uint32_t pa[WG_BK / 16][4];
#pragma unroll
    for (int kk = 0; kk < WG_BK / 16; ++kk) p_fragment(pa[kk], s[0], kk, zero);
    wg_gemm64<T, true, true>(o[0], pa, vdesc);
    __syncthreads();  // this buffer is refilled by the next iteration's copy
  }

  const long long out_stride = (long long)heads * HD;
  const float inv0 = 1.0f / l0[0], inv1 = 1.0f / l1[0];
  fa_store_tile<T>(out + ((long long)b * n + q0 + g) * out_stride + h * HD + 2 * t, out_stride,
                   o[0], inv0, inv1, qkv_bias ? qkv_bias + (2 * heads + h) * HD : nullptr, q0 + g,
                   n, t);
}

// One warpgroup per block; ptxas for sm_90a: see attention_wg.cu.
#define ATTENTION_WG(T, NAME)                                                                    \
  extern "C" __global__ void __launch_bounds__(128, 3)                                           \
      NAME(const T *qkv, const T *bias, T *out, int n, int heads, float scale_log2) {            \
    attention_wg<T>(qkv, bias, out, n, heads, scale_log2);                                       \
  }
