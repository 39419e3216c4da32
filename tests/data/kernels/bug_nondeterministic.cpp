// Planted bug: the row sums start at a different column on every call (as a reduction whose
// order depends on thread timing would), so results differ in the last bits from call to call.
// Correct within tolerance; must fail the determinism stage.
#include <cmath>
#include <cstdint>

#include "kfleet/kernel.h"

static int64_t calls = 0;

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t, kf_tensor* out, int32_t, void*) {
  const int64_t cols = in[0].shape[in[0].ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) rows *= in[0].shape[d];
  const int64_t start = (calls++ * 7919) % cols;
  const float* x = static_cast<const float*>(in[0].data);
  const float* g = static_cast<const float*>(in[1].data);
  const float* b = static_cast<const float*>(in[2].data);
  float* y = static_cast<float*>(out[0].data);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float sum = 0, sq = 0;
    for (int64_t i = 0; i < cols; ++i) sum += xr[(start + i) % cols];
    const float mean = sum / static_cast<float>(cols);
    for (int64_t i = 0; i < cols; ++i) {
      const float d = xr[(start + i) % cols] - mean;
      sq += d * d;
    }
    const float inv = 1.0f / std::sqrt(sq / static_cast<float>(cols) + 1e-5f);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = (xr[c] - mean) * inv * g[c] + b[c];
  }
  return KF_OK;
}
