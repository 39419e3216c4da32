// Planted bug: allocates 64 MiB after 64 MiB without end (a leak in a loop). Must hit the memory
// limit and fail with a message that says so.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  std::vector<std::unique_ptr<char[]>> hoard;
  for (;;) {
    hoard.emplace_back(new char[std::size_t{64} << 20]);
    hoard.back()[0] = 1;  // used, so the allocation is not optimized away
  }
}
