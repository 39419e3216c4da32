#include "eval/kernel_library.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstring>

namespace kfleet::eval {

Result<std::unique_ptr<KernelLibrary>> KernelLibrary::Open(const std::filesystem::path& path) {
  // RTLD_NODELETE: a kernel may bring in libgomp, and unloading it under OpenMP's idle threads
  // would crash the process.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) {
    const char* error = dlerror();
    return FailedPrecondition(
        fmt::format("cannot load {}: {}", path.string(), error != nullptr ? error : "dlopen"));
  }
  void* symbol = dlsym(handle, "kf_kernel_run");
  if (symbol == nullptr) {
    dlclose(handle);
    return FailedPrecondition(fmt::format(
        "{} does not export kf_kernel_run (declare it extern \"C\" as in kfleet/kernel.h)",
        path.string()));
  }
  // dlsym returns an object pointer; POSIX guarantees it converts to a function pointer.
  EntryPoint entry;
  static_assert(sizeof(entry) == sizeof(symbol));
  std::memcpy(&entry, &symbol, sizeof(entry));
  return std::unique_ptr<KernelLibrary>(new KernelLibrary(handle, entry));
}

KernelLibrary::~KernelLibrary() { dlclose(handle_); }

int KernelLibrary::Run(const std::vector<runtime::Tensor*>& inputs,
                       const std::vector<runtime::Tensor*>& outputs, void* stream) const {
  auto arg = [](runtime::Tensor* t) { return KernelArg{t->data(), t->dtype(), &t->shape()}; };
  std::vector<KernelArg> in;
  std::vector<KernelArg> out;
  for (runtime::Tensor* t : inputs) in.push_back(arg(t));
  for (runtime::Tensor* t : outputs) out.push_back(arg(t));
  return Run(in, out, stream);
}

int KernelLibrary::Run(const std::vector<KernelArg>& inputs, const std::vector<KernelArg>& outputs,
                       void* stream) const {
  std::vector<runtime::Shape> strides;
  strides.reserve(inputs.size() + outputs.size());
  auto view = [&](const KernelArg& a) {
    strides.push_back(runtime::ContiguousStrides(*a.shape));
    kf_tensor v;
    v.data = a.data;
    v.dtype = static_cast<int32_t>(a.dtype);
    v.ndim = static_cast<int32_t>(a.shape->size());
    v.shape = a.shape->data();
    v.strides = strides.back().data();
    return v;
  };
  std::vector<kf_tensor> in;
  std::vector<kf_tensor> out;
  for (const KernelArg& a : inputs) in.push_back(view(a));
  for (const KernelArg& a : outputs) out.push_back(view(a));
  return entry_(in.data(), static_cast<int32_t>(in.size()), out.data(),
                static_cast<int32_t>(out.size()), stream);
}

std::string KernelStatusName(int status) {
  switch (status) {
    case KF_OK:
      return "KF_OK (0)";
    case KF_ERR_UNSUPPORTED_SHAPE:
      return "KF_ERR_UNSUPPORTED_SHAPE (1)";
    case KF_ERR_INVALID_ARGUMENT:
      return "KF_ERR_INVALID_ARGUMENT (2)";
    case KF_ERR_OUT_OF_MEMORY:
      return "KF_ERR_OUT_OF_MEMORY (3)";
    case KF_ERR_DEVICE:
      return "KF_ERR_DEVICE (4)";
    case KF_ERR_INTERNAL:
      return "KF_ERR_INTERNAL (5)";
    default:
      return fmt::format("unknown status {}", status);
  }
}

}  // namespace kfleet::eval
