// Planted bug: tries to open a TCP connection (to leak data or fetch answers). Must be stopped by
// the sandbox.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd >= 0) close(fd);
  return KF_OK;
}
