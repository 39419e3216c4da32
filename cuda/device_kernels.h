// Device code behind cuda/device.cc (device_kernels.cu).
#pragma once

#include <cstdint>

namespace kfleet::cuda::detail {

// Launches one thread that writes `value` to *out; returns the launch's cudaError_t.
int LaunchEcho(int32_t* out, int32_t value);

}  // namespace kfleet::cuda::detail
