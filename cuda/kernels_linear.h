// Device code behind cuda/ops_linear.cc (kernels_linear.cu): the pieces of Gemm, Conv, pooling and
// integer MatMul that cuBLASLt and cuDNN do not cover. Every launcher queues its kernel on the
// default stream and returns the launch's cudaError_t (0 on success).
#pragma once

#include <cstdint>

namespace kfleet::cuda::detail {

// Storage types of the floating values these kernels read and write.
enum class FloatType : int32_t { kF32, kF16, kBF16 };

// out[r * cols + c] = scale * in[r * row_stride + c * col_stride] (Gemm's C broadcast to [M, N];
// a stride of 0 repeats the row or column). Arithmetic in f32, one rounding per element.
int LaunchBroadcastRows(const void* in, int64_t row_stride, int64_t col_stride, void* out,
                        int64_t rows, int64_t cols, float scale, FloatType type);

// Three spatial dims (depth, height, width); fewer are padded with unit dims in front.
struct PadGeometry {
  int64_t in[3];
  int64_t out[3];
  int64_t begin[3];  // out[i + begin] = in[i]; the rest of out is zero
};
// Copies `planes` planes of `in` into the middle of larger zero-filled planes of `out` (the
// asymmetric Conv padding cuDNN cannot express).
int LaunchZeroPad(const void* in, void* out, int64_t planes, const PadGeometry& g, FloatType type);

struct PoolGeometry {
  int64_t in[3];
  int64_t out[3];
  int64_t kernel[3];
  int64_t stride[3];
  int64_t dilation[3];
  int64_t pad_begin[3];
  int64_t pad_end[3];
};
// Max or average pooling over `planes` planes, with the ONNX semantics cuDNN lacks: dilations,
// asymmetric pads and ceil_mode windows. count_include_pad counts the taps inside the input or its
// explicit padding (never those ceil_mode pushed past it); max pooling propagates NaN.
int LaunchPool(const void* in, void* out, int64_t planes, const PoolGeometry& g, bool is_max,
               bool count_include_pad, FloatType type);

// c[m, n] = a[m, k] @ b[k, n], row-major int64 with wrapping arithmetic.
int LaunchIntMatMul(const int64_t* a, const int64_t* b, int64_t* c, int64_t m, int64_t n,
                    int64_t k);

}  // namespace kfleet::cuda::detail
