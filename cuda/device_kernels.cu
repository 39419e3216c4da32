#include <cuda_runtime.h>

#include "cuda/device_kernels.h"

namespace kfleet::cuda::detail {
namespace {

__global__ void Echo(int32_t* out, int32_t value) { *out = value; }

}  // namespace

int LaunchEcho(int32_t* out, int32_t value) {
  Echo<<<1, 1>>>(out, value);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace kfleet::cuda::detail
