// Planted bug: never returns. Must be stopped by the call timeout and fail the smoke stage.
#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  volatile uint64_t spins = 0;
  for (;;) spins = spins + 1;
}
