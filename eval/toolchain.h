// Compiles candidate kernels (one source file implementing include/kfleet/kernel.h) into shared
// libraries, with a content-addressed cache so a source is compiled once per flags and compiler:
// C++ with g++ for the CPU, CUDA with nvcc for NVIDIA GPUs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"

namespace kfleet::eval {

// -O3 -march=native -fopenmp -shared -fPIC -std=c++17, then OpenBLAS's include dirs, library dirs
// (also as rpath) and -lopenblas as this build found them: candidates may call cblas_sgemm and
// fuse an epilogue.
std::vector<std::string> DefaultCpuFlags();

// For `arch` as the probe reports it ("sm_90"): -O3 -std=c++17 -shared -Xcompiler -fPIC, machine
// code for the arch (its 'a' variant from Hopper on, sm_90 -> sm_90a, so candidates may use wgmma
// and TMA) plus PTX for the plain arch, -Xptxas -v (the resource report that
// CompiledKernel::resources reads), then the CUDA toolkit's include dir, cuBLASLt, cuBLAS and cuDNN from
// its library dir (also the rpath) and the shared CUDA runtime. The toolkit is $KFLEET_CUDA_HOME
// (include/, and lib64/ or lib/) when set, else the one this build found, else /usr/local/cuda.
// The PTX pass compiles for the plain arch, so code using 'a'-only instructions must sit under
// #if defined(__CUDA_ARCH_FEAT_SM90_ALL) (or the later arch's macro), as CUTLASS does.
std::vector<std::string> DefaultCudaFlags(std::string_view arch);

// $KFLEET_CACHE_DIR/kernels, else $XDG_CACHE_HOME/kfleet/kernels (when absolute), else
// $HOME/.cache/kfleet/kernels, else /tmp/kfleet-<uid>/kernels.
std::filesystem::path DefaultKernelCacheDir();

// The text of include/kfleet/kernel.h, compiled into the binary so a kernel compiles against the
// ABI this binary calls, wherever the binary runs.
std::string_view KernelAbiHeader();

struct CompileOptions {
  std::string compiler = "g++";  // a name searched in PATH, or a path
  std::vector<std::string> flags = DefaultCpuFlags();
  int64_t timeout_ms = 120000;
  std::filesystem::path cache_dir;  // empty: DefaultKernelCacheDir()
};

// nvcc with DefaultCudaFlags(arch); the rest as CompileOptions' defaults.
CompileOptions CudaCompileOptions(std::string_view arch);

struct CompiledKernel {
  bool ok = false;  // false: the compiler rejected the source or timed out; `log` says why
  bool timed_out = false;
  bool cache_hit = false;
  std::string key;                 // SHA-256 hex of source + flags + compiler identity + ABI header
  std::filesystem::path library;   // <cache>/<key>/kernel.so when ok
  std::filesystem::path log_path;  // <cache>/<key>/compile.log; empty if not cached (timeout, kill)
  std::string log;      // compiler output (stdout+stderr), then a "kfleet: " line on failure
  std::string command;  // the command line that ran, in <cache>/<key>/, for the report
  double seconds = 0;   // compile wall time; 0 on a cache hit
  // CUDA: ptxas' report, one entry per kernel and machine-code target, "; "-separated:
  // "Scale<256>: 40 registers, 0 spill bytes, 16384 smem bytes" (spill: stores + loads). Empty
  // for the CPU, and when the flags lack -Xptxas -v.
  std::string resources;
};

// Abstract because HIP (hipcc) follows; CPU and CUDA share one implementation.
class Toolchain {
 public:
  virtual ~Toolchain() = default;
  virtual std::string_view name() const = 0;  // "g++ 12.2.0"
  // An error Status only when compiling could not be attempted (compiler missing, cache dir not
  // writable, a damaged cache entry); a source that does not compile is ok=false with the log.
  // Thread-safe, and safe across processes sharing a cache dir: a cache entry appears whole.
  virtual Result<CompiledKernel> Compile(std::string_view source) = 0;
};

// Resolves the compiler's identity once (`<compiler> --version`, and with a "native" flag what it
// means on this machine, so a cache shared between different CPUs never mixes their libraries).
Result<std::unique_ptr<Toolchain>> MakeCpuToolchain(CompileOptions options,
                                                    ProcessRunner& runner = SystemProcessRunner());

// Compiles kernel.cu with nvcc (CudaCompileOptions). A compiler given by name is looked for in
// $KFLEET_CUDA_HOME/bin first, so an explicit CUDA choice wins, then in PATH, then in the bin dir
// of the toolkit this build found; NotFound when it is in none. Its identity is `nvcc --version`.
Result<std::unique_ptr<Toolchain>> MakeCudaToolchain(CompileOptions options,
                                                     ProcessRunner& runner = SystemProcessRunner());

// CompiledKernel::resources from a compile log holding `ptxas -v` output; empty without one.
std::string SummarizePtxasReport(std::string_view log);

}  // namespace kfleet::eval
