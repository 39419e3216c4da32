// Planted bug: launches blocks of 4096 threads (more than any GPU allows) and returns KF_OK
// without checking the launch; the harness must notice the failed launch itself.
#include <cuda_runtime.h>

#include "kfleet/kernel.h"

namespace {

__device__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void LayerNormRows(const float* x, const float* gamma, const float* beta, float* y,
                              long long rows, int cols, float epsilon) {
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* in = x + row * cols;
  float sum = 0.f;
  for (int c = lane; c < cols; c += 32) sum += in[c];
  const float mean = WarpSum(sum) / cols;
  float sq = 0.f;
  for (int c = lane; c < cols; c += 32) {
    const float d = in[c] - mean;
    sq += d * d;
  }
  const float inv = rsqrtf(WarpSum(sq) / cols + epsilon);
  float* out = y + row * cols;
  for (int c = lane; c < cols; c += 32) out[c] = (in[c] - mean) * inv * gamma[c] + beta[c];
}

}  // namespace

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  if (n_in != 3 || n_out != 1 || in[0].dtype != KF_F32 || in[0].ndim < 1) {
    return KF_ERR_INVALID_ARGUMENT;
  }
  const int cols = static_cast<int>(in[0].shape[in[0].ndim - 1]);
  long long rows = 1;
  for (int d = 0; d + 1 < in[0].ndim; ++d) rows *= in[0].shape[d];
  if (rows == 0 || cols == 0) return KF_OK;
  const int rows_per_block = 128;
  const unsigned blocks = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
  LayerNormRows<<<blocks, rows_per_block * 32, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const float*>(in[0].data), static_cast<const float*>(in[1].data),
      static_cast<const float*>(in[2].data), static_cast<float*>(out[0].data), rows, cols, 1e-5f);
  return KF_OK;
}
