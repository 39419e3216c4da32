#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <utility>

#include "common/log.h"
#include "worker/probe.h"
#include "worker/probe_util.h"

namespace kfleet::worker {
namespace {

using probe_util::ForEachLine;
using probe_util::LeadingUint;
using probe_util::SplitKeyValue;
using probe_util::Trim;

// A dlopen handle. RTLD_NODELETE keeps the library mapped after dlclose: GPU runtimes start
// threads at initialization that would otherwise run code that is gone.
class SharedLibrary {
 public:
  static Result<SharedLibrary> Open(const std::string& name) {
    void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (handle == nullptr) return NotFound(DlError(name));
    return SharedLibrary(handle, name);
  }

  SharedLibrary(SharedLibrary&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), name_(std::move(other.name_)) {}
  SharedLibrary& operator=(SharedLibrary&&) = delete;
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  ~SharedLibrary() {
    if (handle_ != nullptr && ::dlclose(handle_) != 0) {
      log::Warn("probe.dlclose_failed").Kv("library", name_).Kv("error", DlError(name_));
    }
  }

  // Points `*function` at `symbol`; its type is the caller's promise of the symbol's signature.
  template <typename Fn>
  Status Symbol(const char* symbol, Fn** function) const {
    void* address = ::dlsym(handle_, symbol);
    if (address == nullptr) return NotFound(name_ + " has no " + symbol);
    *function = reinterpret_cast<Fn*>(address);
    return Status::Ok();
  }

 private:
  SharedLibrary(void* handle, std::string name) : handle_(handle), name_(std::move(name)) {}

  static std::string DlError(const std::string& name) {
    const char* error = ::dlerror();
    return error != nullptr ? std::string(error) : name + ": unknown dlopen error";
  }

  void* handle_;
  std::string name_;
};

// --- NVIDIA: CUDA driver API -------------------------------------------------------------------

// The few driver-API declarations the probe needs, with values from cuda.h (CUDA 13.0); NVIDIA
// keeps them stable across releases. cuda.h itself is not included so the worker builds anywhere.
using CuResult = int;
using CuDevice = int;
constexpr CuResult kCudaSuccess = 0;
constexpr CuResult kCudaErrorNoDevice = 100;
constexpr int kAttrClockRateKhz = 13;
constexpr int kAttrMultiprocessorCount = 16;
constexpr int kAttrMemoryClockRateKhz = 36;
constexpr int kAttrGlobalMemoryBusWidthBits = 37;
constexpr int kAttrL2CacheSizeBytes = 38;
constexpr int kAttrComputeCapabilityMajor = 75;
constexpr int kAttrComputeCapabilityMinor = 76;

struct CudaDriverApi {
  CuResult (*init)(unsigned int flags);
  CuResult (*driver_get_version)(int* version);
  CuResult (*device_get_count)(int* count);
  CuResult (*device_get)(CuDevice* device, int ordinal);
  CuResult (*device_get_name)(char* name, int length, CuDevice device);
  CuResult (*device_total_mem)(size_t* bytes, CuDevice device);
  CuResult (*device_get_attribute)(int* value, int attribute, CuDevice device);
  CuResult (*get_error_name)(CuResult error, const char** name);

  static Result<CudaDriverApi> Load(const SharedLibrary& library) {
    CudaDriverApi api{};
    KF_RETURN_IF_ERROR(library.Symbol("cuInit", &api.init));
    KF_RETURN_IF_ERROR(library.Symbol("cuDriverGetVersion", &api.driver_get_version));
    KF_RETURN_IF_ERROR(library.Symbol("cuDeviceGetCount", &api.device_get_count));
    KF_RETURN_IF_ERROR(library.Symbol("cuDeviceGet", &api.device_get));
    KF_RETURN_IF_ERROR(library.Symbol("cuDeviceGetName", &api.device_get_name));
    // cuda.h maps cuDeviceTotalMem to the _v2 entry point, the one with a size_t result.
    KF_RETURN_IF_ERROR(library.Symbol("cuDeviceTotalMem_v2", &api.device_total_mem));
    KF_RETURN_IF_ERROR(library.Symbol("cuDeviceGetAttribute", &api.device_get_attribute));
    KF_RETURN_IF_ERROR(library.Symbol("cuGetErrorName", &api.get_error_name));
    return api;
  }

  // "CUDA_ERROR_NO_DEVICE (100)".
  std::string ErrorName(CuResult error) const {
    const char* name = nullptr;
    std::string number = "(" + std::to_string(error) + ")";
    if (get_error_name(error, &name) != kCudaSuccess || name == nullptr) return "error " + number;
    return std::string(name) + " " + number;
  }
};

// NVML is the one place that knows the kernel driver's version ("580.95.05").
Result<std::string> NvmlDriverVersion(const std::string& library_name) {
  if (library_name.empty()) return FailedPrecondition("NVML is switched off");
  using NvmlReturn = int;  // nvmlReturn_t; NVML_SUCCESS is 0
  KF_ASSIGN_OR_RETURN(SharedLibrary library, SharedLibrary::Open(library_name));
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*get_version)(char* version, unsigned int length) = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  KF_RETURN_IF_ERROR(library.Symbol("nvmlInit_v2", &init));
  KF_RETURN_IF_ERROR(library.Symbol("nvmlSystemGetDriverVersion", &get_version));
  KF_RETURN_IF_ERROR(library.Symbol("nvmlShutdown", &shutdown));
  if (NvmlReturn rc = init(); rc != 0) {
    return Unavailable("nvmlInit_v2 returned " + std::to_string(rc));
  }
  std::array<char, 96> version{};  // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE is 80
  NvmlReturn rc = get_version(version.data(), static_cast<unsigned int>(version.size()));
  if (NvmlReturn shutdown_rc = shutdown(); shutdown_rc != 0) {
    log::Warn("probe.nvml_shutdown_failed").Kv("rc", shutdown_rc);
  }
  if (rc != 0) return Unavailable("nvmlSystemGetDriverVersion returned " + std::to_string(rc));
  version.back() = '\0';
  return std::string(version.data());
}

std::string NvidiaDriverVersion(const ProbeOptions& options, const CudaDriverApi& cuda,
                                std::vector<std::string>& notes) {
  Result<std::string> version = NvmlDriverVersion(options.nvml_library);
  if (version.ok()) return *version;
  std::string note = "cuda: NVIDIA driver version unknown (" + version.status().message() + ")";
  int cuda_version = 0;
  if (cuda.driver_get_version(&cuda_version) == kCudaSuccess) {
    note += "; the driver supports CUDA " + std::to_string(cuda_version / 1000) + "." +
            std::to_string(cuda_version % 1000 / 10);
  }
  notes.push_back(std::move(note));
  return "";
}

uint32_t CudaAttribute(const CudaDriverApi& api, CuDevice device, int attribute,
                       std::string_view what, uint32_t ordinal, std::vector<std::string>& notes) {
  int value = 0;
  if (CuResult rc = api.device_get_attribute(&value, attribute, device); rc != kCudaSuccess) {
    notes.push_back("cuda device " + std::to_string(ordinal) + ": " + std::string(what) +
                    " unknown (" + api.ErrorName(rc) + ")");
    return 0;
  }
  return value > 0 ? static_cast<uint32_t>(value) : 0;
}

Result<GpuInfo> DescribeCudaDevice(const CudaDriverApi& api, uint32_t ordinal,
                                   std::vector<std::string>& notes) {
  CuDevice device = 0;
  if (CuResult rc = api.device_get(&device, static_cast<int>(ordinal)); rc != kCudaSuccess) {
    return Unavailable("cuDeviceGet: " + api.ErrorName(rc));
  }
  std::array<char, 256> name{};
  if (CuResult rc = api.device_get_name(name.data(), static_cast<int>(name.size()), device);
      rc != kCudaSuccess) {
    return Unavailable("cuDeviceGetName: " + api.ErrorName(rc));
  }
  name.back() = '\0';
  size_t memory_bytes = 0;
  if (CuResult rc = api.device_total_mem(&memory_bytes, device); rc != kCudaSuccess) {
    return Unavailable("cuDeviceTotalMem: " + api.ErrorName(rc));
  }
  GpuInfo gpu;
  gpu.backend = "cuda";
  gpu.index = ordinal;
  gpu.name = name.data();
  gpu.memory_bytes = memory_bytes;
  uint32_t major =
      CudaAttribute(api, device, kAttrComputeCapabilityMajor, "compute capability", ordinal, notes);
  uint32_t minor =
      CudaAttribute(api, device, kAttrComputeCapabilityMinor, "compute capability", ordinal, notes);
  if (major > 0) gpu.arch = "sm_" + std::to_string(major) + std::to_string(minor);
  gpu.compute_units =
      CudaAttribute(api, device, kAttrMultiprocessorCount, "SM count", ordinal, notes);
  gpu.clock_mhz = CudaAttribute(api, device, kAttrClockRateKhz, "clock", ordinal, notes) / 1000;
  gpu.memory_clock_mhz =
      CudaAttribute(api, device, kAttrMemoryClockRateKhz, "memory clock", ordinal, notes) / 1000;
  gpu.l2_bytes = CudaAttribute(api, device, kAttrL2CacheSizeBytes, "L2 size", ordinal, notes);
  gpu.memory_bus_bits =
      CudaAttribute(api, device, kAttrGlobalMemoryBusWidthBits, "memory bus width", ordinal, notes);
  return gpu;
}

// Fails when the driver API is unusable, so the caller can try nvidia-smi; a driver that works
// but sees no GPU is an empty list.
Result<std::vector<GpuInfo>> ProbeCudaDriver(const ProbeOptions& options,
                                             std::vector<std::string>& notes) {
  if (options.cuda_driver_library.empty()) {
    return FailedPrecondition("the CUDA driver library is switched off");
  }
  Result<SharedLibrary> library = SharedLibrary::Open(options.cuda_driver_library);
  if (!library.ok()) {
    return library.status().WithContext("CUDA driver not loaded");
  }
  KF_ASSIGN_OR_RETURN(CudaDriverApi api, CudaDriverApi::Load(*library));
  // cuInit starts driver threads but creates no context, so forking afterwards stays safe
  // as long as the child execs before touching CUDA.
  if (CuResult rc = api.init(0); rc == kCudaErrorNoDevice) {
    notes.push_back("cuda: the CUDA driver sees no GPU (" + api.ErrorName(rc) + ")");
    return std::vector<GpuInfo>{};
  } else if (rc != kCudaSuccess) {
    return Unavailable("cuInit failed: " + api.ErrorName(rc));
  }
  int count = 0;
  if (CuResult rc = api.device_get_count(&count); rc != kCudaSuccess) {
    return Unavailable("cuDeviceGetCount failed: " + api.ErrorName(rc));
  }
  std::vector<GpuInfo> gpus;
  if (count <= 0) {
    notes.push_back("cuda: the CUDA driver sees no GPU");
    return gpus;
  }
  std::string driver_version = NvidiaDriverVersion(options, api, notes);
  for (uint32_t ordinal = 0; ordinal < static_cast<uint32_t>(count); ++ordinal) {
    Result<GpuInfo> gpu = DescribeCudaDevice(api, ordinal, notes);
    if (!gpu.ok()) {
      notes.push_back("cuda device " + std::to_string(ordinal) +
                      " left out: " + gpu.status().message());
      continue;
    }
    gpu->driver_version = driver_version;
    gpus.push_back(std::move(gpu).value());
  }
  return gpus;
}

// --- AMD: HIP runtime, only to count GPUs when rocminfo is missing -----------------------------

Result<int> HipDeviceCount(const ProbeOptions& options) {
  if (options.hip_runtime_libraries.empty()) return FailedPrecondition("HIP runtime switched off");
  std::string tried;
  for (const std::string& name : options.hip_runtime_libraries) {
    Result<SharedLibrary> library = SharedLibrary::Open(name);
    if (!library.ok()) {
      tried += (tried.empty() ? "" : ", ") + name;
      continue;
    }
    using HipError = int;  // hipError_t, values from hip_runtime_api.h
    constexpr HipError kHipSuccess = 0;
    constexpr HipError kHipErrorNoDevice = 100;
    HipError (*get_count)(int* count) = nullptr;
    KF_RETURN_IF_ERROR(library->Symbol("hipGetDeviceCount", &get_count));
    int count = 0;
    HipError rc = get_count(&count);
    if (rc == kHipErrorNoDevice) return 0;
    if (rc != kHipSuccess) return Unavailable("hipGetDeviceCount returned " + std::to_string(rc));
    return count;
  }
  return NotFound("HIP runtime not loaded (tried " + tried + ")");
}

std::string JoinFields(const std::vector<std::string_view>& fields, size_t begin, size_t end) {
  std::string joined;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) joined += ", ";
    joined += fields[i];
  }
  return joined;
}

uint32_t ToUint32(std::optional<uint64_t> value) {
  return value && *value <= UINT32_MAX ? static_cast<uint32_t>(*value) : 0;
}

}  // namespace

std::vector<GpuInfo> ParseNvidiaSmiCsv(std::string_view text) {
  std::vector<GpuInfo> gpus;
  ForEachLine(text, [&](std::string_view line) {
    std::vector<std::string_view> fields;
    for (size_t begin = 0;;) {
      size_t comma = line.find(',', begin);
      fields.push_back(
          Trim(line.substr(begin, comma == std::string_view::npos ? comma : comma - begin)));
      if (comma == std::string_view::npos) break;
      begin = comma + 1;
    }
    // index, name, memory.total, compute_cap, clocks.max.sm, clocks.max.mem, driver_version;
    // a name with a comma in it spans several fields, so the last five count from the end.
    constexpr size_t kFields = 7;
    if (fields.size() < kFields) return;
    std::optional<uint64_t> index = LeadingUint(fields[0]);
    if (!index || fields[0].find_first_not_of("0123456789") != std::string_view::npos) return;
    size_t tail = fields.size() - 5;
    GpuInfo gpu;
    gpu.backend = "cuda";
    gpu.index = ToUint32(index);
    gpu.name = JoinFields(fields, 1, tail);
    std::optional<uint64_t> memory_mib = LeadingUint(fields[tail]);
    gpu.memory_bytes = memory_mib ? *memory_mib << 20 : 0;
    std::string_view capability = fields[tail + 1];  // "9.0"
    size_t dot = capability.find('.');
    std::optional<uint64_t> major = LeadingUint(capability.substr(0, dot));
    std::optional<uint64_t> minor;
    if (dot != std::string_view::npos) minor = LeadingUint(capability.substr(dot + 1));
    if (major && minor) gpu.arch = "sm_" + std::to_string(*major) + std::to_string(*minor);
    gpu.clock_mhz = ToUint32(LeadingUint(fields[tail + 2]));
    gpu.memory_clock_mhz = ToUint32(LeadingUint(fields[tail + 3]));
    if (!fields[tail + 4].starts_with("[")) gpu.driver_version = fields[tail + 4];
    gpus.push_back(std::move(gpu));
  });
  return gpus;
}

std::vector<GpuInfo> ParseRocminfo(std::string_view text) {
  struct Agent {
    std::string name;            // "gfx90a" for GPUs
    std::string marketing_name;  // "AMD Instinct MI250X"
    std::string isa_arch;        // from the ISA name, for agents whose Name is not a gfx target
    bool gpu = false;
    uint32_t compute_units = 0;
    uint32_t clock_mhz = 0;
    uint64_t memory_bytes = 0;  // the largest GLOBAL pool
    bool in_global_pool = false;
  };
  std::vector<GpuInfo> gpus;
  std::string driver_version;
  std::optional<Agent> agent;
  auto finish_agent = [&] {
    if (!agent || !agent->gpu) return;
    GpuInfo gpu;
    gpu.backend = "hip";
    gpu.index = static_cast<uint32_t>(gpus.size());
    gpu.name = agent->marketing_name.empty() ? agent->name : agent->marketing_name;
    gpu.arch = agent->name.starts_with("gfx") ? agent->name.substr(0, agent->name.find(':'))
                                              : agent->isa_arch;
    gpu.memory_bytes = agent->memory_bytes;
    gpu.compute_units = agent->compute_units;
    gpu.clock_mhz = agent->clock_mhz;
    gpus.push_back(std::move(gpu));
  };
  ForEachLine(text, [&](std::string_view line) {
    std::string_view trimmed = Trim(line);
    // "ROCk module version 6.8.5 is loaded" (ROCm 6); older releases print no version.
    constexpr std::string_view kRock = "ROCk module version ";
    if (trimmed.starts_with(kRock)) {
      std::string_view rest = trimmed.substr(kRock.size());
      driver_version = rest.substr(0, rest.find(' '));
      return;
    }
    if (trimmed.starts_with("Agent ") && LeadingUint(trimmed.substr(6))) {
      finish_agent();
      agent.emplace();
      return;
    }
    std::optional<probe_util::KeyValue> field = SplitKeyValue(line);
    if (!agent || !field) return;
    const auto& [key, value] = *field;
    if (key == "Name" && agent->name.empty()) {
      agent->name = value;  // the agent's own name comes first; later ones are its ISAs'
    } else if (key == "Name" && agent->isa_arch.empty() && value.find("--gfx") != value.npos) {
      std::string_view isa = value.substr(value.find("--gfx") + 2);
      agent->isa_arch = isa.substr(0, isa.find(':'));
    } else if (key == "Marketing Name" && agent->marketing_name.empty()) {
      agent->marketing_name = value;
    } else if (key == "Device Type") {
      agent->gpu = value == "GPU";
    } else if (key == "Compute Unit") {
      agent->compute_units = ToUint32(LeadingUint(value));
    } else if (key == "Max Clock Freq. (MHz)") {
      agent->clock_mhz = ToUint32(LeadingUint(value));
    } else if (key == "Segment") {
      agent->in_global_pool = value.starts_with("GLOBAL");
    } else if (key == "Size" && agent->in_global_pool) {
      std::optional<uint64_t> kib = LeadingUint(value);  // rocminfo's "KB" are KiB
      if (kib) agent->memory_bytes = std::max(agent->memory_bytes, *kib * 1024);
      agent->in_global_pool = false;
    }
  });
  finish_agent();
  for (GpuInfo& gpu : gpus) gpu.driver_version = driver_version;
  return gpus;
}

std::vector<GpuInfo> ProbeNvidiaGpus(const ProbeOptions& options, std::vector<std::string>& notes) {
  Result<std::vector<GpuInfo>> from_driver = ProbeCudaDriver(options, notes);
  if (from_driver.ok()) return std::move(from_driver).value();
  std::string why = from_driver.status().message();
  std::string smi = FindExecutable("nvidia-smi", ToolSearchDirs(options));
  if (smi.empty()) {
    notes.push_back("cuda: no NVIDIA GPUs probed: " + why + ", and nvidia-smi was not found");
    return {};
  }
  SystemCommandRunner shell;
  Result<std::string> csv = probe_util::RunnerFor(options, shell)
                                .Run({smi,
                                      "--query-gpu=index,name,memory.total,compute_cap,"
                                      "clocks.max.sm,clocks.max.mem,driver_version",
                                      "--format=csv,noheader,nounits"},
                                     options.command_timeout_ms);
  if (!csv.ok()) {
    notes.push_back("cuda: no NVIDIA GPUs probed: " + why + ", and " + csv.status().message());
    return {};
  }
  std::vector<GpuInfo> gpus = ParseNvidiaSmiCsv(*csv);
  notes.push_back("cuda: " + std::to_string(gpus.size()) + " GPUs described by nvidia-smi, " +
                  "which does not report SM counts (" + why + ")");
  return gpus;
}

std::vector<GpuInfo> ProbeAmdGpus(const ProbeOptions& options, std::vector<std::string>& notes) {
  std::string rocminfo = FindExecutable("rocminfo", ToolSearchDirs(options));
  if (!rocminfo.empty()) {
    SystemCommandRunner shell;
    Result<std::string> text =
        probe_util::RunnerFor(options, shell).Run({rocminfo}, options.command_timeout_ms);
    if (!text.ok()) {
      notes.push_back("hip: no AMD GPUs probed: " + text.status().message());
      return {};
    }
    std::vector<GpuInfo> gpus = ParseRocminfo(*text);
    if (gpus.empty()) notes.push_back("hip: rocminfo lists no GPU agent");
    return gpus;
  }
  Result<int> count = HipDeviceCount(options);
  if (count.ok() && *count > 0) {
    notes.push_back("hip: the HIP runtime sees " + std::to_string(*count) +
                    " AMD GPUs, but rocminfo was not found to describe them: install rocminfo");
  } else if (count.ok()) {
    notes.push_back("hip: rocminfo not found and the HIP runtime sees no GPU");
  } else {
    notes.push_back("hip: no AMD GPUs probed: rocminfo not found and " + count.status().message());
  }
  return {};
}

}  // namespace kfleet::worker
