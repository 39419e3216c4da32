// LayerNorm over the last axis for half-precision tensors: each row is widened to float, reduced
// in float (two passes) and the result rounded back to half. Inputs: x [..., C], gamma [C],
// beta [C], all f16.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kfleet/kernel.h"

static float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even; overflow to Inf, NaN stays NaN.
static uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {
    float magnitude;
    std::memcpy(&magnitude, &abs, sizeof(magnitude));
    return static_cast<uint16_t>(sign |
                                 static_cast<uint16_t>(std::nearbyint(magnitude * 16777216.0f)));
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  if (n_in != 3 || n_out != 1 || in[0].ndim < 1) return KF_ERR_INVALID_ARGUMENT;
  for (int i = 0; i < 3; ++i) {
    if (in[i].dtype != KF_F16) return KF_ERR_INVALID_ARGUMENT;
  }
  const int64_t cols = in[0].shape[in[0].ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) rows *= in[0].shape[d];
  const uint16_t* x = static_cast<const uint16_t*>(in[0].data);
  const uint16_t* gamma = static_cast<const uint16_t*>(in[1].data);
  const uint16_t* beta = static_cast<const uint16_t*>(in[2].data);
  uint16_t* y = static_cast<uint16_t*>(out[0].data);

#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* xr = x + r * cols;
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) sum += HalfToFloat(xr[c]);
    const float mean = sum / static_cast<float>(cols);
    float sq = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float d = HalfToFloat(xr[c]) - mean;
      sq += d * d;
    }
    const float inv_std = 1.0f / std::sqrt(sq / static_cast<float>(cols) + 1e-5f);
    for (int64_t c = 0; c < cols; ++c) {
      const float v =
          (HalfToFloat(xr[c]) - mean) * inv_std * HalfToFloat(gamma[c]) + HalfToFloat(beta[c]);
      y[r * cols + c] = FloatToHalf(v);
    }
  }
  return KF_OK;
}
