// The rest of what attention_mma.cuh and attention_fa.cuh need on the host: static shared
// memory, packed 16-bit pairs, and the warp-wide PTX they issue through inline asm (which they
// leave out when GAPPROBE_HOST_EMULATION is defined):
//   - mma.sync.m16n8k16 (f32 accumulation), from the PTX ISA's fragment layouts;
//   - ldmatrix.x4 and its .trans form;
//   - cp.async with commit and wait groups. A copy lands when a wait_group lets it, not when it
//     is issued, so a read of shared memory before its wait (or before the barrier after it) sees
//     what was there before, as it could on the device.
// The products are exact (16-bit by 16-bit fits an f32) and are summed in double, then rounded
// once onto the accumulator: the device's order and rounding differ, so compare the emulated
// kernels with a reference to a tolerance, and with each other bit for bit only where they do the
// same arithmetic.
#pragma once
#include "shim.h"
#include <deque>
#include <vector>
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct __half2 { __half x, y; };
inline __nv_bfloat162 __floats2bfloat162_rn(float x, float y) {
  return {__float2bfloat16_rn(x), __float2bfloat16_rn(y)};
}
inline __half2 __floats2half2_rn(float x, float y) { return {__float2half_rn(x), __float2half_rn(y)}; }

inline float half_bits_to_f(uint16_t v, __nv_bfloat16) { return __bfloat162float({v}); }
inline float half_bits_to_f(uint16_t v, __half) { return __half2float({v}); }
// Element `half` (0: low 16 bits) of a packed register, as a float.
template <typename T> float unpack(uint32_t r, int half) {
  return half_bits_to_f(static_cast<uint16_t>(half ? r >> 16 : r & 0xffff), T{});
}

// d += A B for one warp: A 16x16 (row-major fragments a), B 16x8 (b0, b1), D 16x8 in f32.
// Lane l = 4g + t holds A's (g, 2t..2t+1) in a0, (g+8, ·) in a1, (g, 2t+8..) in a2, (g+8, 2t+8..)
// in a3; B's (k = 2t..2t+1, n = g) in b0 and (k = 2t+8.., n = g) in b1; D's (g, 2t..2t+1) in
// d0, d1 and (g+8, ·) in d2, d3.
struct MmaOperands { uint32_t a[4], b0, b1; };
template <typename T> void mma_emulated(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const auto lanes = warp_exchange(MmaOperands{{a[0], a[1], a[2], a[3]}, b0, b1});
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // This lane's two rows of A (g, g+8: lanes 4g..4g+3) and two columns of B (2t, 2t+1).
  float arow[2][16], bcol[2][16];
  for (int q = 0; q < 4; ++q) {
    const MmaOperands o = lanes[4 * g + q];
    for (int e = 0; e < 2; ++e) {
      arow[0][2 * q + e] = unpack<T>(o.a[0], e);
      arow[1][2 * q + e] = unpack<T>(o.a[1], e);
      arow[0][2 * q + 8 + e] = unpack<T>(o.a[2], e);
      arow[1][2 * q + 8 + e] = unpack<T>(o.a[3], e);
    }
    for (int c = 0; c < 2; ++c) {
      const MmaOperands p = lanes[4 * (2 * t + c) + q];
      for (int e = 0; e < 2; ++e) {
        bcol[c][2 * q + e] = unpack<T>(p.b0, e);
        bcol[c][2 * q + 8 + e] = unpack<T>(p.b1, e);
      }
    }
  }
  for (int i = 0; i < 4; ++i) {
    double acc = 0.0;
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(arow[i / 2][k]) * bcol[i % 2][k];
    d[i] = static_cast<float>(static_cast<double>(d[i]) + acc);
  }
}
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __nv_bfloat16) {
  mma_emulated<__nv_bfloat16>(d, a, b0, b1);
}
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __half) {
  mma_emulated<__half>(d, a, b0, b1);
}

// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; lane l receives, of each
// matrix, (row l/4, cols 2(l%4), 2(l%4)+1), or with .trans (rows 2(l%4), 2(l%4)+1; col l/4).
inline void ldmatrix_emulated(uint32_t (&r)[4], const void *p, bool trans) {
  const auto rows = warp_exchange(reinterpret_cast<const uint16_t *>(p));
  const int lane = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (trans) {
      lo = rows[8 * i + 2 * (lane % 4)][lane / 4];
      hi = rows[8 * i + 2 * (lane % 4) + 1][lane / 4];
    } else {
      lo = rows[8 * i + lane / 4][2 * (lane % 4)];
      hi = rows[8 * i + lane / 4][2 * (lane % 4) + 1];
    }
    r[i] = lo | (static_cast<uint32_t>(hi) << 16);
  }
}
// ex2.approx.ftz: results below 2^-126 flush to 0 (the SFU's approximation is not modelled);
// `ftz_flushed` counts them, so a harness can tell that it reached the flush.
inline long ftz_flushed = 0;
inline float exp2_ftz(float x) {
  const float y = std::exp2(x);
  if (y >= 1.17549435e-38f) return y;
  ftz_flushed += y > 0.0f;
  return 0.0f;
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void *p) { ldmatrix_emulated(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void *p) { ldmatrix_emulated(r, p, true); }

// cp.async: this thread's copies not yet committed, and its committed groups not yet landed.
struct PendingCopy { void *dst; unsigned char bytes[16]; };
extern std::vector<PendingCopy> copies_open[32 * MAX_WARPS];
extern std::deque<std::vector<PendingCopy>> copies_committed[32 * MAX_WARPS];
// Global memory is not written during a kernel here, so the source is read when the copy is issued.
inline void cp_async16(void *dst, const void *src, bool valid) {
  PendingCopy c{dst, {}};
  if (valid) memcpy(c.bytes, src, 16);
  copies_open[threadIdx.x].push_back(c);
}
inline void cp_async_commit() {
  copies_committed[threadIdx.x].push_back(std::move(copies_open[threadIdx.x]));
  copies_open[threadIdx.x].clear();
}
// Lands every committed group but the newest N.
template <int N> void cp_async_wait() {
  auto &groups = copies_committed[threadIdx.x];
  while (groups.size() > static_cast<size_t>(N)) {
    for (const PendingCopy &c : groups.front()) memcpy(c.dst, c.bytes, 16);
    groups.pop_front();
  }
}
