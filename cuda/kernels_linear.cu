#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>

#include "cuda/kernels_linear.h"

namespace kfleet::cuda::detail {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover the rest; this many blocks already fill any current GPU many times.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

unsigned Blocks(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

__device__ __forceinline__ int64_t FirstIndex() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float Load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void Store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

template <typename T>
__global__ void BroadcastRowsKernel(const T* in, int64_t row_stride, int64_t col_stride, T* out,
                                    int64_t rows, int64_t cols, float scale) {
  const int64_t n = rows * cols;
  for (int64_t i = FirstIndex(); i < n; i += GridStride()) {
    const int64_t r = i / cols;
    const int64_t c = i - r * cols;
    Store(out, i, scale * Load(in, r * row_stride + c * col_stride));
  }
}

template <typename T>
__global__ void ZeroPadKernel(const T* in, T* out, int64_t planes, PadGeometry g) {
  const int64_t out_plane = g.out[0] * g.out[1] * g.out[2];
  const int64_t in_plane = g.in[0] * g.in[1] * g.in[2];
  const int64_t n = planes * out_plane;
  for (int64_t i = FirstIndex(); i < n; i += GridStride()) {
    int64_t t = i;
    const int64_t w = t % g.out[2] - g.begin[2];
    t /= g.out[2];
    const int64_t h = t % g.out[1] - g.begin[1];
    t /= g.out[1];
    const int64_t d = t % g.out[0] - g.begin[0];
    const int64_t p = t / g.out[0];
    const bool inside = d >= 0 && d < g.in[0] && h >= 0 && h < g.in[1] && w >= 0 && w < g.in[2];
    Store(out, i, inside ? Load(in, p * in_plane + (d * g.in[1] + h) * g.in[2] + w) : 0.0f);
  }
}

template <typename T>
__global__ void PoolKernel(const T* in, T* out, int64_t planes, PoolGeometry g, bool is_max,
                           bool count_include_pad) {
  const int64_t out_plane = g.out[0] * g.out[1] * g.out[2];
  const int64_t in_plane = g.in[0] * g.in[1] * g.in[2];
  const int64_t n = planes * out_plane;
  for (int64_t i = FirstIndex(); i < n; i += GridStride()) {
    int64_t t = i;
    const int64_t ow = t % g.out[2];
    t /= g.out[2];
    const int64_t oh = t % g.out[1];
    t /= g.out[1];
    const int64_t od = t % g.out[0];
    const int64_t p = t / g.out[0];
    const T* x = in + p * in_plane;
    float acc = is_max ? -CUDART_INF_F : 0.0f;
    int64_t valid = 0;
    int64_t padded = 0;
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
      const int64_t id = od * g.stride[0] - g.pad_begin[0] + kd * g.dilation[0];
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
        const int64_t ih = oh * g.stride[1] - g.pad_begin[1] + kh * g.dilation[1];
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
          const int64_t iw = ow * g.stride[2] - g.pad_begin[2] + kw * g.dilation[2];
          if (id < g.in[0] + g.pad_end[0] && ih < g.in[1] + g.pad_end[1] &&
              iw < g.in[2] + g.pad_end[2]) {
            ++padded;
          }
          if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1] || iw < 0 || iw >= g.in[2]) {
            continue;
          }
          const float v = Load(x, (id * g.in[1] + ih) * g.in[2] + iw);
          ++valid;
          if (!is_max) {
            acc += v;
          } else if (v > acc || isnan(v)) {
            acc = v;
          }
        }
      }
    }
    if (!is_max) {
      const int64_t divisor = count_include_pad ? padded : valid;
      acc = divisor > 0 ? acc / static_cast<float>(divisor) : 0.0f;
    }
    Store(out, i, acc);
  }
}

__global__ void IntMatMulKernel(const int64_t* a, const int64_t* b, int64_t* c, int64_t m,
                                int64_t n, int64_t k) {
  const int64_t total = m * n;
  for (int64_t i = FirstIndex(); i < total; i += GridStride()) {
    const int64_t row = i / n;
    const int64_t col = i - row * n;
    // Unsigned so overflow wraps as the CPU baseline's does, without undefined behaviour.
    uint64_t acc = 0;
    for (int64_t p = 0; p < k; ++p) {
      acc += static_cast<uint64_t>(a[row * k + p]) * static_cast<uint64_t>(b[p * n + col]);
    }
    c[i] = static_cast<int64_t>(acc);
  }
}

int LastError() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int LaunchBroadcastRows(const void* in, int64_t row_stride, int64_t col_stride, void* out,
                        int64_t rows, int64_t cols, float scale, FloatType type) {
  const int64_t n = rows * cols;
  if (n == 0) return 0;
  switch (type) {
    case FloatType::kF32:
      BroadcastRowsKernel<<<Blocks(n), kThreads>>>(static_cast<const float*>(in), row_stride,
                                                   col_stride, static_cast<float*>(out), rows, cols,
                                                   scale);
      break;
    case FloatType::kF16:
      BroadcastRowsKernel<<<Blocks(n), kThreads>>>(static_cast<const __half*>(in), row_stride,
                                                   col_stride, static_cast<__half*>(out), rows,
                                                   cols, scale);
      break;
    case FloatType::kBF16:
      BroadcastRowsKernel<<<Blocks(n), kThreads>>>(
          static_cast<const __nv_bfloat16*>(in), row_stride, col_stride,
          static_cast<__nv_bfloat16*>(out), rows, cols, scale);
      break;
  }
  return LastError();
}

int LaunchZeroPad(const void* in, void* out, int64_t planes, const PadGeometry& g, FloatType type) {
  const int64_t n = planes * g.out[0] * g.out[1] * g.out[2];
  if (n == 0) return 0;
  switch (type) {
    case FloatType::kF32:
      ZeroPadKernel<<<Blocks(n), kThreads>>>(static_cast<const float*>(in),
                                             static_cast<float*>(out), planes, g);
      break;
    case FloatType::kF16:
      ZeroPadKernel<<<Blocks(n), kThreads>>>(static_cast<const __half*>(in),
                                             static_cast<__half*>(out), planes, g);
      break;
    case FloatType::kBF16:
      ZeroPadKernel<<<Blocks(n), kThreads>>>(static_cast<const __nv_bfloat16*>(in),
                                             static_cast<__nv_bfloat16*>(out), planes, g);
      break;
  }
  return LastError();
}

int LaunchPool(const void* in, void* out, int64_t planes, const PoolGeometry& g, bool is_max,
               bool count_include_pad, FloatType type) {
  const int64_t n = planes * g.out[0] * g.out[1] * g.out[2];
  if (n == 0) return 0;
  switch (type) {
    case FloatType::kF32:
      PoolKernel<<<Blocks(n), kThreads>>>(static_cast<const float*>(in), static_cast<float*>(out),
                                          planes, g, is_max, count_include_pad);
      break;
    case FloatType::kF16:
      PoolKernel<<<Blocks(n), kThreads>>>(static_cast<const __half*>(in), static_cast<__half*>(out),
                                          planes, g, is_max, count_include_pad);
      break;
    case FloatType::kBF16:
      PoolKernel<<<Blocks(n), kThreads>>>(static_cast<const __nv_bfloat16*>(in),
                                          static_cast<__nv_bfloat16*>(out), planes, g, is_max,
                                          count_include_pad);
      break;
  }
  return LastError();
}

int LaunchIntMatMul(const int64_t* a, const int64_t* b, int64_t* c, int64_t m, int64_t n,
                    int64_t k) {
  if (m * n == 0) return 0;
  IntMatMulKernel<<<Blocks(m * n), kThreads>>>(a, b, c, m, n, k);
  return LastError();
}

}  // namespace kfleet::cuda::detail
