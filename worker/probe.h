// What a worker node has: CPU, NVIDIA / AMD GPUs and compilers. The worker reports this to the
// coordinator when it joins, and the scheduler matches task requirements against it.
//
// GPU stacks are loaded at run time (dlopen, command-line tools) so the worker builds and runs on
// machines without CUDA or ROCm; a missing stack is normal and explained in NodeProbe::notes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kfleet::worker {

struct CpuInfo {
  std::string model;                  // "AMD EPYC 9124 16-Core Processor", "ARM Neoverse-V2"
  uint32_t cores = 0;                 // physical cores
  uint32_t threads = 0;               // logical processors
  std::vector<std::string> features;  // the instruction-set extensions kernels care about
  uint64_t memory_bytes = 0;          // MemTotal
  std::string arch;                   // "x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "aarch64"
};

struct GpuInfo {
  std::string backend;  // "cuda" | "hip"
  uint32_t index = 0;   // the device ordinal the backend's runtime uses
  std::string name;     // "NVIDIA H200", "AMD Instinct MI300X"
  std::string arch;     // "sm_90", "gfx90a"
  uint64_t memory_bytes = 0;
  uint32_t compute_units = 0;     // SMs or CUs; 0 when the source does not say
  uint32_t clock_mhz = 0;         // peak core clock
  uint32_t memory_clock_mhz = 0;  // peak memory clock; 0 when the source does not say
  uint64_t l2_bytes = 0;          // L2 cache size; 0 when the source does not say (nvidia-smi)
  uint32_t memory_bus_bits = 0;   // global memory bus width; 0 when the source does not say
  std::string driver_version;     // "580.95.05" (NVIDIA), ROCk module version (AMD)
};

struct ToolchainInfo {
  std::string name;     // "g++", "c++", "clang++", "nvcc", "hipcc"
  std::string version;  // "12.2.0", "13.0.88"; empty when --version said none
  std::string path;     // where it was found
};

struct NodeProbe {
  std::string hostname;
  CpuInfo cpu;
  std::vector<GpuInfo> gpus;
  std::vector<ToolchainInfo> toolchains;
  std::vector<std::string> notes;  // why something is missing or was guessed, for a person
};

// Runs a program and returns its standard output. Tests replace it to play back recorded output.
class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Fails when the program cannot start, exits non-zero or is still running after `timeout_ms`.
  virtual Result<std::string> Run(const std::vector<std::string>& argv, int timeout_ms) = 0;
};

// Runs programs as child processes (common/subprocess.h); standard error is ignored.
class SystemCommandRunner final : public CommandRunner {
 public:
  Result<std::string> Run(const std::vector<std::string>& argv, int timeout_ms) override;
};

struct ProbeOptions {
  // Where cpuinfo and meminfo are read; tests point it at recorded files.
  std::filesystem::path proc_dir = "/proc";
  // Where compilers, nvidia-smi and rocminfo are looked for; empty: $PATH, then
  // /usr/local/cuda/bin and /opt/rocm/bin.
  std::vector<std::string> tool_dirs;
  // Libraries tried with dlopen; an empty name skips that source (tests use this to exercise
  // the command-line fallbacks).
  std::string cuda_driver_library = "libcuda.so.1";
  std::string nvml_library = "libnvidia-ml.so.1";
  std::vector<std::string> hip_runtime_libraries = {"libamdhip64.so", "libamdhip64.so.6",
                                                    "libamdhip64.so.5"};
  int command_timeout_ms = 10000;
  CommandRunner* runner = nullptr;  // null: a SystemCommandRunner
  bool probe_gpus = true;
  bool probe_toolchains = true;
};

// Never fails: whatever cannot be probed is left empty and explained in `notes`.
NodeProbe ProbeNode(const ProbeOptions& options);

// The steps ProbeNode takes, usable alone (re-probing compilers after an install, say).
CpuInfo ProbeCpu(const ProbeOptions& options, std::vector<std::string>& notes);
std::vector<GpuInfo> ProbeNvidiaGpus(const ProbeOptions& options, std::vector<std::string>& notes);
std::vector<GpuInfo> ProbeAmdGpus(const ProbeOptions& options, std::vector<std::string>& notes);
std::vector<ToolchainInfo> ProbeToolchains(const ProbeOptions& options,
                                           std::vector<std::string>& notes);

// Parsers take the text a file or program produced, so they are tested with recorded outputs.
// Malformed input gives empty fields or entries, never an error: the probe reports what it can.

// /proc/cpuinfo (x86 or aarch64) and /proc/meminfo.
CpuInfo ParseCpuInfo(std::string_view cpuinfo, std::string_view meminfo);
// The x86-64 psABI level the flags reach: "x86-64", "x86-64-v2", "x86-64-v3" or "x86-64-v4".
std::string X86PsabiLevel(const std::vector<std::string>& cpuinfo_flags);
// `nvidia-smi --query-gpu=index,name,memory.total,compute_cap,clocks.max.sm,clocks.max.mem,
// driver_version --format=csv,noheader,nounits`; fields nvidia-smi reports as "[N/A]" stay 0.
std::vector<GpuInfo> ParseNvidiaSmiCsv(std::string_view text);
// `rocminfo`: one entry per GPU agent, in agent order (the HIP device order).
std::vector<GpuInfo> ParseRocminfo(std::string_view text);
// `NAME --version` of g++, clang++, nvcc or hipcc: "12.2.0", "13.0.88"; empty when none is found.
std::string ParseToolchainVersion(std::string_view name, std::string_view text);

// The search directories `options` implies (see ProbeOptions::tool_dirs).
std::vector<std::string> ToolSearchDirs(const ProbeOptions& options);
// The first executable regular file `name` in `dirs`; empty when there is none.
std::string FindExecutable(std::string_view name, const std::vector<std::string>& dirs);

}  // namespace kfleet::worker
