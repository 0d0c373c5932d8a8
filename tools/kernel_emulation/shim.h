// Just enough of CUDA's built-ins for fused.cu's elementwise and LayerNorm kernels to compile
// as host C++ (run.sh): launch indices as thread-locals, the 16-bit types as bit patterns
// (bf16 rounded to nearest even, as __float2bfloat16_rn), and a warp shuffle for 32 threads.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstddef>
#include <barrier>
#define __device__
#define __global__
#define __forceinline__ inline
struct dim3_ { unsigned x = 0, y = 0, z = 0; };
extern thread_local dim3_ threadIdx, blockIdx;
extern dim3_ blockDim, gridDim;
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct __nv_bfloat16 { uint16_t v; };
struct __half { uint16_t v; };
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.v << 16; float f; memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return {(uint16_t)(u >> 16)}; }
// f16 only has to compile: the emulation runs bf16 and f32.
inline float __half2float(__half) { return 0; }
inline __half __float2half_rn(float) { return {0}; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
// One warp of 32 std::threads: a shuffle publishes, waits, reads the partner's value, waits.
extern std::barrier<> *warp_barrier;
extern float shfl_slots[32];
inline float __shfl_xor_sync(unsigned, float v, int off) {
  shfl_slots[threadIdx.x % 32] = v; warp_barrier->arrive_and_wait();
  float r = shfl_slots[(threadIdx.x % 32) ^ off]; warp_barrier->arrive_and_wait(); return r;
}
