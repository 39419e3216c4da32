// A compiled candidate loaded into this process: dlopen + the kf_kernel_run entry point.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "common/status.h"
#include "kfleet/kernel.h"
#include "runtime/tensor.h"

namespace kfleet::eval {

// One tensor as a kernel receives it: memory of the kernel's device (host or GPU), dense
// row-major.
struct KernelArg {
  void* data = nullptr;
  planner::DType dtype = planner::DType::kF32;
  const runtime::Shape* shape = nullptr;
};

class KernelLibrary {
 public:
  // Loads with RTLD_NOW | RTLD_LOCAL so a missing symbol fails here, and finds kf_kernel_run.
  static Result<std::unique_ptr<KernelLibrary>> Open(const std::filesystem::path& path);
  ~KernelLibrary();
  KernelLibrary(const KernelLibrary&) = delete;
  KernelLibrary& operator=(const KernelLibrary&) = delete;

  // Calls the kernel once on host tensors (dense, row-major). Returns its kf_status code.
  int Run(const std::vector<runtime::Tensor*>& inputs, const std::vector<runtime::Tensor*>& outputs,
          void* stream = nullptr) const;
  // The same on memory anywhere (device pointers on a GPU, with the backend's stream).
  int Run(const std::vector<KernelArg>& inputs, const std::vector<KernelArg>& outputs,
          void* stream) const;

 private:
  using EntryPoint = int (*)(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*);
  KernelLibrary(void* handle, EntryPoint entry) : handle_(handle), entry_(entry) {}
  void* handle_;
  EntryPoint entry_;
};

// "KF_ERR_UNSUPPORTED_SHAPE (1)", or "unknown status 42".
std::string KernelStatusName(int status);

}  // namespace kfleet::eval
