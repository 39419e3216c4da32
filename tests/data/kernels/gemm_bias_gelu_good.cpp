// GEMM + bias + tanh GELU. Each OpenMP thread takes a block of output columns, multiplies it with
// a one-thread OpenBLAS sgemm and applies bias + GELU to the block while it is still in cache: one
// pass over the result instead of the nine an eager framework makes. GELU is written as
// h * sigmoid(2u) with a polynomial exp the compiler vectorizes (libm's tanhf does not).
// Inputs: x [..., K], w [K, N], b [N]; output [..., N].
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kfleet/kernel.h"

// e^x to about 2 ulp: x = n ln2 + r, e^r by a degree-6 polynomial, 2^n into the exponent bits.
static inline float FastExp(float x) {
  // Ternaries, not std::min / std::max, whose reference results defeat GCC's vectorizer.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Round to nearest by adding and removing 1.5 * 2^23 (std::floor stops GCC vectorizing).
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

// row[j] = gelu_tanh(row[j] + bias[j]) as h * sigmoid(2u). A function of its own: inside the
// parallel region GCC reloads the shared pointers and will not vectorize the loop.
static void BiasGelu(float* __restrict row, const float* __restrict bias, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    const float h = row[j] + bias[j];
    const float u = 0.7978845608f * (h + 0.044715f * h * h * h);
    row[j] = h / (1.0f + FastExp(-2.0f * u));
  }
}

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  if (n_in != 3 || n_out != 1 || in[0].ndim < 1 || in[1].ndim != 2 || in[2].ndim != 1) {
    return KF_ERR_INVALID_ARGUMENT;
  }
  for (int i = 0; i < 3; ++i) {
    if (in[i].dtype != KF_F32) return KF_ERR_INVALID_ARGUMENT;
  }
  const int64_t k = in[0].shape[in[0].ndim - 1];
  int64_t m = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) m *= in[0].shape[d];
  const int64_t n = in[1].shape[1];
  if (in[1].shape[0] != k || in[2].shape[0] != n) return KF_ERR_INVALID_ARGUMENT;
  const float* x = static_cast<const float*>(in[0].data);
  const float* w = static_cast<const float*>(in[1].data);
  const float* b = static_cast<const float*>(in[2].data);
  float* y = static_cast<float*>(out[0].data);

#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    // Column blocks of 16 floats, so each thread's stores stay on its own cache lines.
    const int64_t blocks = (n + 15) / 16;
    const int64_t first = blocks * t / threads * 16;
    const int64_t last = std::min(n, blocks * (t + 1) / threads * 16);
    if (first < last) {
      const int64_t cols = last - first;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                  static_cast<int>(cols), static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                  w + first, static_cast<int>(n), 0.0f, y + first, static_cast<int>(n));
      for (int64_t i = 0; i < m; ++i) BiasGelu(y + i * n + first, b + first, cols);
    }
  }
  return KF_OK;
}
