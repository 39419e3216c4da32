// Planted bug: a fork bomb. Must be stopped by the sandbox at the first fork.
#include <unistd.h>

#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  for (;;) fork();
}
