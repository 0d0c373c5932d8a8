// Host emulation of add_layer_norm_rows (add_norm.cuh) against bias_act_rows + layer_norm_rows
// (fused.cu), one warp as 32 threads: both outputs must be bit-identical, for bf16 and f32 layer
// outputs, rows of 1000 to 2048 (whole and partial last vectors per lane), with and without a
// bias. Built and run by run.sh, which cuts the fused.cu kernels out into kernels_part.h.
#include "shim.h"
#include <cstdio>
#include <random>
#include <thread>
#include <vector>
thread_local dim3_ threadIdx, blockIdx;
dim3_ blockDim, gridDim;
std::barrier<> *warp_barrier;
float shfl_slots[32];
#include "kernels_part.h"
#include "add_norm.cuh"

template <typename F> void run_warp(F f) {
  // One block of one warp: the kernels' grid-stride loops cover every row.
  blockDim.x = 32; gridDim.x = 1;
  std::barrier<> bar(32); warp_barrier = &bar;
  std::vector<std::thread> ts;
  for (unsigned l = 0; l < 32; ++l) ts.emplace_back([&, l] { threadIdx.x = l; blockIdx.x = 0; f(); });
  for (auto &t : ts) t.join();
}
template <typename T> T cvt(float v);
template <> float cvt<float>(float v) { return v; }
template <> __nv_bfloat16 cvt<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T, int VPL> int check(unsigned rows, unsigned cols, bool with_bias) {
  std::mt19937 g(cols * 7 + with_bias); std::normal_distribution<float> n(0, 1);
  auto vecT = [&](size_t k) { std::vector<T> v(k); for (auto &e : v) e = cvt<T>(n(g) * 3); return v; };
  std::vector<T> x = vecT(rows * cols), bias = vecT(cols), w = vecT(cols), b = vecT(cols);
  std::vector<float> s(rows * cols); for (auto &e : s) e = n(g) + 5;
  std::vector<float> s_old(rows * cols), s_new(rows * cols);
  std::vector<T> y_old(rows * cols), y_new(rows * cols);
  const T *bp = with_bias ? bias.data() : nullptr;
  // The two kernels the fused one replaces (bias_act_rows needs a bias: zeros stand in).
  std::vector<T> zeros(cols, cvt<T>(0));
  run_warp([&] { bias_act_rows<T, float>(x.data(), bp ? bp : zeros.data(), s.data(), s_old.data(), rows, cols, ACT_NONE); });
  run_warp([&] { layer_norm_rows<float, T>(s_old.data(), w.data(), b.data(), y_old.data(), rows, cols, 1e-5f); });
  run_warp([&] { add_layer_norm_rows<T, VPL>(x.data(), bp, s.data(), s_new.data(), w.data(), b.data(), y_new.data(), rows, cols, 1e-5f); });
  int bad = memcmp(s_old.data(), s_new.data(), s.size() * 4) != 0;
  bad += memcmp(y_old.data(), y_new.data(), y_old.size() * sizeof(T)) != 0;
  printf("%-5s VPL %d width %4u bias %d: stream %s, norm %s\n", sizeof(T) == 4 ? "f32" : "bf16", VPL, cols,
         with_bias, memcmp(s_old.data(), s_new.data(), s.size() * 4) ? "DIFFERS" : "identical",
         memcmp(y_old.data(), y_new.data(), y_old.size() * sizeof(T)) ? "DIFFERS" : "identical");
  return bad;
}
int main() {
  int bad = 0;
  for (bool wb : {true, false}) {
    bad += check<__nv_bfloat16, 4>(5, 1024, wb);
    bad += check<__nv_bfloat16, 4>(5, 1000, wb);
    bad += check<__nv_bfloat16, 8>(5, 1152, wb);
    bad += check<__nv_bfloat16, 8>(3, 2048, wb);
    bad += check<float, 4>(5, 1024, wb);
    bad += check<float, 8>(5, 1536, wb);
  }
  printf("%s\n", bad ? "MISMATCH" : "all identical");
  return bad != 0;
}
