// MatMul of two f32 matrices (out0 = in0 @ in1, [m,k] @ [k,n]): 16x16 output tiles, both
// operands staged through shared memory. A global kernel and a global host helper on purpose:
// the combined library of model verification must keep them private to this kernel.
#include <cuda_runtime.h>

#include "kfleet/kernel.h"

constexpr int kTile = 16;

__global__ void MatMulTiles(const float* a, const float* b, float* c, int m, int k, int n) {
  __shared__ float a_tile[kTile][kTile];
  __shared__ float b_tile[kTile][kTile];
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int col = blockIdx.x * kTile + threadIdx.x;
  float sum = 0.f;
  for (int p0 = 0; p0 < k; p0 += kTile) {
    const int ap = p0 + threadIdx.x;
    const int bp = p0 + threadIdx.y;
    a_tile[threadIdx.y][threadIdx.x] = row < m && ap < k ? a[row * k + ap] : 0.f;
    b_tile[threadIdx.y][threadIdx.x] = bp < k && col < n ? b[bp * n + col] : 0.f;
    __syncthreads();
    for (int p = 0; p < kTile; ++p) sum += a_tile[threadIdx.y][p] * b_tile[p][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) c[row * n + col] = sum;
}

int RowCount(const kf_tensor& t) { return static_cast<int>(t.shape[0]); }

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  if (n_in != 2 || n_out != 1 || in[0].ndim != 2 || in[1].ndim != 2 || in[0].dtype != KF_F32 ||
      in[1].dtype != KF_F32 || in[0].shape[1] != in[1].shape[0]) {
    return KF_ERR_INVALID_ARGUMENT;
  }
  const int m = RowCount(in[0]);
  const int k = static_cast<int>(in[0].shape[1]);
  const int n = static_cast<int>(in[1].shape[1]);
  if (m == 0 || n == 0) return KF_OK;
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  MatMulTiles<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const float*>(in[0].data), static_cast<const float*>(in[1].data),
      static_cast<float*>(out[0].data), m, k, n);
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}
