// Host emulation of add_layer_norm_rows (add_norm.cuh) against bias_act_rows + layer_norm_rows
// (fused.cu), one warp as 32 threads: both outputs must be bit-identical, for bf16 and f32 layer
// outputs around an f32 stream and bf16 outputs around an f16 stream, rows of 1000 to 2048 (whole
// and partial last vectors per lane), with and without a bias. Built and run by run.sh, which
// cuts the fused.cu kernels out into kernels_part.h.
#include "emulation.h"
#include <cstdio>
#include <random>
#include "kernels_part.h"
#include "add_norm.cuh"

// One block of one warp: the kernels' grid-stride loops cover every row.
template <typename F> void run_warp(F f) { launch({1, 1, 1}, 32, f); }
template <typename T> T cvt(float v);
template <> float cvt<float>(float v) { return v; }
template <> __nv_bfloat16 cvt<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __half cvt<__half>(float v) { return __float2half_rn(v); }
const char *name_of(float) { return "f32"; }
const char *name_of(__nv_bfloat16) { return "bf16"; }
const char *name_of(__half) { return "f16"; }

template <typename T, typename S, int VPL> int check(unsigned rows, unsigned cols, bool with_bias) {
  std::mt19937 g(cols * 7 + with_bias); std::normal_distribution<float> n(0, 1);
  auto vecT = [&](size_t k) { std::vector<T> v(k); for (auto &e : v) e = cvt<T>(n(g) * 3); return v; };
  std::vector<T> x = vecT(rows * cols), bias = vecT(cols), w = vecT(cols), b = vecT(cols);
  std::vector<S> s(rows * cols); for (auto &e : s) e = cvt<S>(n(g) + 5);
  std::vector<S> s_old(rows * cols), s_new(rows * cols);
  std::vector<T> y_old(rows * cols), y_new(rows * cols);
  const T *bp = with_bias ? bias.data() : nullptr;
  // The two kernels the fused one replaces (bias_act_rows needs a bias: zeros stand in).
  std::vector<T> zeros(cols, cvt<T>(0));
  run_warp([&] { bias_act_rows<T, S>(x.data(), bp ? bp : zeros.data(), s.data(), s_old.data(), rows, cols, ACT_NONE); });
  run_warp([&] { layer_norm_rows<S, T>(s_old.data(), w.data(), b.data(), y_old.data(), rows, cols, 1e-5f); });
  run_warp([&] { add_layer_norm_rows<T, S, VPL>(x.data(), bp, s.data(), s_new.data(), w.data(), b.data(), y_new.data(), rows, cols, 1e-5f); });
  const bool s_same = memcmp(s_old.data(), s_new.data(), s.size() * sizeof(S)) == 0;
  const bool y_same = memcmp(y_old.data(), y_new.data(), y_old.size() * sizeof(T)) == 0;
  printf("%-5s stream %-3s VPL %d width %4u bias %d: stream %s, norm %s\n", name_of(T{}), name_of(S{}), VPL,
         cols, with_bias, s_same ? "identical" : "DIFFERS", y_same ? "identical" : "DIFFERS");
  return !s_same + !y_same;
}
// The shim's half conversion at known values (the emulation's f16 stream rests on it).
int check_half() {
  const struct { float f; uint16_t h; } cases[] = {{1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff},
      {65519.0f, 0x7bff}, {65520.0f, 0x7c00}, {0.1f, 0x2e66}, {5.9604645e-8f, 0x0001}, {6.1035156e-5f, 0x0400},
      {1.0009766f, 0x3c01}, {1.00048828125f, 0x3c00}, {1.00146484375f, 0x3c02}};
  int bad = 0;
  for (auto c : cases) {
    const uint16_t got = __float2half_rn(c.f).v;
    if (got != c.h || (c.h != 0x7c00 && __half2float({c.h}) != __half2float(__float2half_rn(c.f)))) {
      printf("half of %g: 0x%04x, expected 0x%04x\n", c.f, got, c.h); ++bad;
    }
  }
  printf("half conversion: %s\n", bad ? "WRONG" : "as IEEE round-to-nearest-even");
  return bad;
}
int main() {
  int bad = check_half();
  for (bool wb : {true, false}) {
    bad += check<__nv_bfloat16, float, 4>(5, 1024, wb);
    bad += check<__nv_bfloat16, float, 4>(5, 1000, wb);
    bad += check<__nv_bfloat16, float, 8>(5, 1152, wb);
    bad += check<__nv_bfloat16, float, 8>(3, 2048, wb);
    bad += check<float, float, 4>(5, 1024, wb);
    bad += check<float, float, 8>(5, 1536, wb);
    bad += check<__nv_bfloat16, __half, 4>(5, 1024, wb);
    bad += check<__nv_bfloat16, __half, 4>(5, 1000, wb);
    bad += check<__nv_bfloat16, __half, 8>(3, 2048, wb);
  }
  printf("%s\n", bad ? "MISMATCH" : "all identical");
  return bad != 0;
}
