// LayerNorm over the last axis, fused into one pass per row (two reductions in registers):
// y = (x - mean) / sqrt(var + 1e-5) * gamma + beta. Inputs: x [..., C], gamma [C], beta [C].
// Rows in parallel, columns vectorized; any row length works.
#include <cmath>
#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  if (n_in != 3 || n_out != 1 || in[0].ndim < 1) return KF_ERR_INVALID_ARGUMENT;
  for (int i = 0; i < 3; ++i) {
    if (in[i].dtype != KF_F32) return KF_ERR_INVALID_ARGUMENT;
  }
  const int64_t cols = in[0].shape[in[0].ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) rows *= in[0].shape[d];
  if (in[1].shape[in[1].ndim - 1] != cols || in[2].shape[in[2].ndim - 1] != cols) {
    return KF_ERR_INVALID_ARGUMENT;
  }
  const float* x = static_cast<const float*>(in[0].data);
  const float* gamma = static_cast<const float*>(in[1].data);
  const float* beta = static_cast<const float*>(in[2].data);
  float* y = static_cast<float*>(out[0].data);
  const float inv_cols = 1.0f / static_cast<float>(cols);

#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) sum += xr[c];
    const float mean = sum * inv_cols;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < cols; ++c) {
      const float d = xr[c] - mean;
      sq += d * d;
    }
    const float inv_std = 1.0f / std::sqrt(sq * inv_cols + 1e-5f);
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - mean) * inv_std * gamma[c] + beta[c];
  }
  return KF_OK;
}
