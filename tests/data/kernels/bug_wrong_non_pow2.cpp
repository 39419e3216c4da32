// Planted bug: the mean is taken over the largest power of two that fits in the row, so rows of
// 1024 are right and rows of 1023 are wrong. Must fail the shape sweep.
#include <cmath>
#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t, kf_tensor* out, int32_t, void*) {
  const int64_t cols = in[0].shape[in[0].ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) rows *= in[0].shape[d];
  int64_t pow2 = 1;
  while (pow2 * 2 <= cols) pow2 *= 2;
  const float* x = static_cast<const float*>(in[0].data);
  const float* g = static_cast<const float*>(in[1].data);
  const float* b = static_cast<const float*>(in[2].data);
  float* y = static_cast<float*>(out[0].data);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float sum = 0;
    for (int64_t c = 0; c < pow2; ++c) sum += xr[c];
    const float mean = sum / static_cast<float>(pow2);
    float sq = 0;
    for (int64_t c = 0; c < cols; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
    const float inv = 1.0f / std::sqrt(sq / static_cast<float>(cols) + 1e-5f);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = (xr[c] - mean) * inv * g[c] + b[c];
  }
  return KF_OK;
}
