// What attention_wg.cuh needs on the host besides shim_mma.h: its warpgroup products, from the
// PTX ISA's wgmma .m64nNk16 fragment layouts and its canonical shared-memory layouts without
// swizzling (the kernel leaves its own versions out when GAPPROBE_HOST_EMULATION is defined).
//   - The descriptor holds the start pointer, LBO and SBO as the kernel gives them. B's
//     element (mn, k) is read where the ISA's layout puts it, so a tile stored in another layout,
//     or a descriptor started at the wrong k-step, gives wrong products here.
//   - A (registers) of warp w's rows 16w..16w+15 comes from the lanes of warp w, as on the
//     device, so the exchange is warp-wide.
//   - The four products are computed when wg_gemm64 is called: the kernel issues, commits and
//     waits for them in one statement.
// As in mma_emulated, each k-step's 16 products are summed in double and added to the f32
// accumulator once; on the device the order inside a product differs, so compare to a tolerance.
#pragma once
#include "shim_mma.h"

struct WgDesc { const unsigned char *p; unsigned lbo, sbo; };
inline WgDesc wg_desc(const void *p, unsigned lbo, unsigned sbo) {
  return {static_cast<const unsigned char *>(p), lbo, sbo};
}
inline void wg_fence_proxy() {}

// Byte offset of element (mn, k) in a canonical layout without swizzling (in 16-byte units
// T = 8 elements): K-major ((8,m),(T,2k)):((1T,SBO),(1,LBO)), MN-major ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)).
inline size_t wg_byte(int mn, int k, bool mn_major, unsigned lbo, unsigned sbo) {
  return mn_major ? (mn % 8) * 2 + (mn / 8) * sbo + (k % 8) * 16 + (k / 8) * lbo
                  : (mn % 8) * 16 + (mn / 8) * sbo + (k % 8) * 2 + (k / 8) * lbo;
}

struct WgFragments { uint32_t a[4][4]; };
template <typename T, bool TRANS_B, bool ACC>
void wg_gemm64(float (&d)[8][4], const uint32_t (&a)[4][4], const WgDesc (&desc)[4]) {
  WgFragments mine;
  memcpy(mine.a, a, sizeof mine.a);
  const auto lanes = warp_exchange(mine);
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (int kk = 0; kk < 4; ++kk) {
    // This thread's rows g and g+8 of A's k-step kk (lanes 4g..4g+3 hold them, as for mma).
    float arow[2][16];
    for (int q = 0; q < 4; ++q) {
      const WgFragments o = lanes[4 * g + q];
      for (int e = 0; e < 2; ++e) {
        arow[0][2 * q + e] = unpack<T>(o.a[kk][0], e);
        arow[1][2 * q + e] = unpack<T>(o.a[kk][1], e);
        arow[0][2 * q + 8 + e] = unpack<T>(o.a[kk][2], e);
        arow[1][2 * q + 8 + e] = unpack<T>(o.a[kk][3], e);
      }
    }
    for (int nb = 0; nb < 8; ++nb)
      for (int i = 0; i < 4; ++i) {
        const int col = nb * 8 + 2 * t + (i & 1);
        double acc = 0.0;
        for (int k = 0; k < 16; ++k) {
          uint16_t bits;
          memcpy(&bits, desc[kk].p + wg_byte(col, k, TRANS_B, desc[kk].lbo, desc[kk].sbo), 2);
          acc += static_cast<double>(arow[i / 2][k]) * half_bits_to_f(bits, T{});
        }
        d[nb][i] = (kk == 0 && !ACC) ? static_cast<float>(acc)
                                     : static_cast<float>(static_cast<double>(d[nb][i]) + acc);
      }
  }
}
