// Planted bug: writes to an address no mapping covers (the first page). Must crash only the
// harness process and fail the smoke stage with the signal.
#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  // Not a null pointer, which the compiler may assume is never written and drop the store.
  volatile float* nowhere = reinterpret_cast<volatile float*>(uintptr_t{64});
  *nowhere = 1.0f;
  return KF_OK;
}
