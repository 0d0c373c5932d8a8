// Residual add and LayerNorm in one pass over a residual stream wider than the layers: f32 around
// 16-bit layers, or f16 around bf16 layers (GAPPROBE_ADD_NORM=1; features/src/models/add_norm.rs
// launches it):
//
//   s' = S((x + bias) + s)     x: a Linear's output without its bias, s: the stream, in S
//   y  = LayerNorm(s')         of the stored (rounded) s', rounded once into T: the next input
//
// It replaces bias_act_rows (x + bias + residual into the stream) followed by layer_norm_rows
// (the stream into 16 bits), which read the stream twice and the row three times. One warp per
// row, the row held in registers: VPL 8-element vectors per lane, so rows of up to 256 * VPL
// elements (a multiple of 8). The adds and the sums run in the order of the two kernels it
// replaces, so both outputs are the same numbers. Included by fused.cu (load8/store8).
template <typename T, typename S, int VPL>
__device__ void add_layer_norm_rows(const T *__restrict__ x, const T *__restrict__ bias,
                                    const S *__restrict__ s, S *__restrict__ s_out,
                                    const T *__restrict__ w, const T *__restrict__ b,
                                    T *__restrict__ y, unsigned rows, unsigned cols, float eps) {
  const int lane = threadIdx.x % 32;
  const unsigned warps = blockDim.x / 32;
  const unsigned vcols = cols / 8;
  for (unsigned r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    const size_t base = (size_t)r * cols;
    float e[VPL][8];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < VPL; ++i) {
      const unsigned v = lane + 32u * i;
#pragma unroll
      for (int k = 0; k < 8; ++k) e[i][k] = 0.0f;
      if (v < vcols) {
        float d[8], c[8];
        load8(x + base + (size_t)v * 8, d);
        load8(s + base + (size_t)v * 8, e[i]);
        if (bias) {
          load8(bias + (size_t)v * 8, c);
#pragma unroll
          for (int k = 0; k < 8; ++k) d[k] += c[k];
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) e[i][k] = to_f(from_f<S>(d[k] + e[i][k]));
        store8(s_out + base + (size_t)v * 8, e[i]);
#pragma unroll
        for (int k = 0; k < 8; ++k) sum += e[i][k];
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);
    const float mean = sum / cols;
    float sq = 0.0f;
#pragma unroll
    for (int i = 0; i < VPL; ++i) {
      if (lane + 32u * i < vcols) {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          float dv = e[i][k] - mean;
          sq += dv * dv;
        }
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sq += __shfl_xor_sync(0xffffffff, sq, off);
    const float rstd = rsqrtf(sq / cols + eps);
#pragma unroll
    for (int i = 0; i < VPL; ++i) {
      const unsigned v = lane + 32u * i;
      if (v < vcols) {
        float we[8], be[8];
        load8(w + (size_t)v * 8, we);
        load8(b + (size_t)v * 8, be);
#pragma unroll
        for (int k = 0; k < 8; ++k) e[i][k] = (e[i][k] - mean) * rstd * we[k] + be[k];
        store8(y + base + (size_t)v * 8, e[i]);
      }
    }
  }
}

#define ADD_LAYER_NORM(T, S, VPL, NAME)                                                          \
  extern "C" __global__ void NAME(const T *x, const T *bias, const S *s, S *s_out, const T *w,  \
                                  const T *b, T *y, unsigned rows, unsigned cols, float eps) {  \
    add_layer_norm_rows<T, S, VPL>(x, bias, s, s_out, w, b, y, rows, cols, eps);                \
  }
ADD_LAYER_NORM(float, float, 4, add_layer_norm4_f32)
ADD_LAYER_NORM(__half, float, 4, add_layer_norm4_f16)
ADD_LAYER_NORM(__nv_bfloat16, float, 4, add_layer_norm4_bf16)
ADD_LAYER_NORM(float, float, 8, add_layer_norm8_f32)
ADD_LAYER_NORM(__half, float, 8, add_layer_norm8_f16)
ADD_LAYER_NORM(__nv_bfloat16, float, 8, add_layer_norm8_bf16)
// A float16 stream around bf16 layers (GAPPROBE_RESIDUAL=f16).
ADD_LAYER_NORM(__nv_bfloat16, __half, 4, add_layer_norm4_bf16_f16)
ADD_LAYER_NORM(__nv_bfloat16, __half, 8, add_layer_norm8_bf16_f16)
