// Just enough of CUDA's built-ins for fused.cu's elementwise and LayerNorm kernels to compile
// as host C++ (run.sh): launch indices as thread-locals, the 16-bit types as bit patterns
// (bf16 rounded to nearest even, as __float2bfloat16_rn), and warp shuffles; emulation.h runs
// the threads.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#define __device__
#define __global__
#define __forceinline__ inline
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct __nv_bfloat16 { uint16_t v; };
struct __half { uint16_t v; };
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.v << 16; float f; memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return {(uint16_t)(u >> 16)}; }
// IEEE half precision, rounded to nearest even as __float2half_rn (subnormals kept, overflow to
// infinity from 65520 on).
inline __half __float2half_rn(float f) {
  uint32_t x; memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return {(uint16_t)(sign | 0x7e00)};            // NaN
  if (ax >= 0x47800000) return {(uint16_t)(sign | 0x7c00)};           // >= 65536 (and inf)
  if (ax < 0x38800000) {                                              // below 2^-14: subnormal
    float a; memcpy(&a, &ax, 4);
    return {(uint16_t)(sign | (uint32_t)std::nearbyint(a * 16777216.0f))};
  }
  uint32_t h = (((ax >> 23) - 112) << 10) | ((ax & 0x7fffff) >> 13);
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h += 1;             // may carry into inf
  return {(uint16_t)(sign | h)};
}
inline float __half2float(__half h) {
  const uint32_t sign = (uint32_t)(h.v & 0x8000) << 16, e = (h.v >> 10) & 0x1f, m = h.v & 0x3ff;
  uint32_t u;
  if (e == 0) {
    float f = std::ldexp((float)m, -24); memcpy(&u, &f, 4); u |= sign;
  } else if (e == 31) {
    u = sign | 0x7f800000 | (m << 13);
  } else {
    u = sign | ((e + 112) << 23) | (m << 13);
  }
  float f; memcpy(&f, &u, 4); return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
// The threads of a block run as fibers on one host thread (emulation.h), switching only where
// they wait at a barrier, so a run is deterministic. Every thread's own state is its EmuLane.
struct EmuBarrier;
struct EmuLane {
  dim3_ idx;
  int warp_phase = 0;            // which of the warp's two slot sets its next exchange uses
  EmuBarrier *blocked = nullptr;  // the barrier it waits at, if any
  bool done = false;
};
// A barrier for `expected` threads; a thread that arrives early waits until the last one does.
struct EmuBarrier {
  unsigned expected = 0, arrived = 0;
  void arrive_and_wait();  // emulation.h
};
extern EmuLane *emu_current;  // the thread running now
#define threadIdx (emu_current->idx)
extern dim3_ blockIdx, blockDim, gridDim;
// A warp-wide operation (a shuffle here, the tensor-core and ldmatrix built-ins in shim_mma.h)
// publishes each lane's operands, waits at the warp's barrier, then reads the other lanes'. The
// slots alternate between two sets, so one barrier per operation is enough: a lane can only
// overwrite a set after the next operation's barrier, which every lane reaches only once it has
// read this one.
constexpr int MAX_WARPS = 8;
constexpr int SLOT_BYTES = 64;  // wgmma's A operand: 16 registers
extern EmuBarrier warp_barriers[MAX_WARPS], block_barrier;
extern unsigned char warp_slots[MAX_WARPS][2][32][SLOT_BYTES];
// The 32 lanes' operands of one warp-wide operation, once every lane has published its own.
template <typename P> struct WarpView {
  const unsigned char (*set)[SLOT_BYTES];
  P operator[](unsigned lane) const { P p; memcpy(&p, set[lane], sizeof(P)); return p; }
};
template <typename P> WarpView<P> warp_exchange(const P &mine) {
  static_assert(sizeof(P) <= SLOT_BYTES, "operands too large for a slot");
  const unsigned w = threadIdx.x / 32;
  auto &set = warp_slots[w][emu_current->warp_phase];
  emu_current->warp_phase ^= 1;
  memcpy(set[threadIdx.x % 32], &mine, sizeof(P));
  warp_barriers[w].arrive_and_wait();
  return {set};
}
inline void __syncthreads() { block_barrier.arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
  return warp_exchange(v)[(threadIdx.x % 32) ^ off];
}
