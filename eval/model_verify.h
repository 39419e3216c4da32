// End-to-end verification: the whole model runs with the search's winning kernels swapped in for
// their fusion groups (a kernel replaces every occurrence of its spec), against the baseline
// executor on the same random inputs and weights. Outputs must match within tolerance; when they
// do not, each kernel is tried alone, the offenders are dropped and the check repeats. Both
// versions are then timed in alternation and the measured end-to-end speedup reported.
//
// The winners are compiled into one shared library (each source with kf_kernel_run renamed to
// its own symbol) plus a C header declaring them: what `kfleet export` hands the user. Kernels run
// in this process: the caller runs verification in a process of its own (a worker task).
//
// On "cuda" the kernels are CUDA sources (nvcc objects without -rdc, each with its own embedded
// fatbin), the baseline is the CUDA baseline on GPU `device`, the kernels get its device pointers
// and the default stream, and runs are timed with CUDA events around a launch of the whole model
// (no host copies).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"
#include "eval/toolchain.h"
#include "planner/graph.h"

namespace kfleet::eval {

struct SwapKernel {
  std::string spec_hash;  // planner::KernelSpec::hash of the groups it replaces
  std::string name;       // for messages ("layernorm 128x768 f32")
  std::string source;     // kernel ABI source
  std::string symbol;     // exported name in the combined library: a C identifier ("kf_k3_run")
};

struct VerifyOptions {
  uint64_t seed = 1;
  int reps = 5;     // timed runs of each version (after one warm-up), alternating
  int threads = 0;  // baseline OpenMP threads; 0 = every core
  // End to end, rounding differences add up over many layers: an output element passes when
  // |got - ref| <= rtol * (|ref| + rms(ref)). f32 outputs: rtol, every element. f16 / bf16
  // outputs: half_rtol, and half_matched_ratio of the elements (bf16 keeps 8 significant bits,
  // so one kernel rounding differently moves a 12-layer model's logits by a few percent; a
  // wrong kernel moves them by their whole magnitude).
  double rtol = 1e-3;
  double half_rtol = 5e-2;
  double half_matched_ratio = 0.999;
  double feed_scale = 0.05;        // random weights around the scale of trained ones
  std::filesystem::path work_dir;  // where the combined library is built; must exist
  // Compiler and flags for the combined library: g++ for "cpu", CudaCompileOptions(the device's
  // arch) for "cuda".
  CompileOptions compile;
  std::string backend = "cpu";  // "cpu" or "cuda"
  int device = 0;               // the GPU for "cuda"
};

struct KernelVerdict {
  std::string spec_hash;
  std::string name;
  std::string symbol;
  int occurrences = 0;  // fusion groups of the model it replaced
  bool kept = false;
  std::string reason;  // why it was dropped ("output mismatch: max rel err 0.3 at ...", "no
                       // fusion group of the model has this spec", "does not compile: ...")
};

struct ModelVerifyReport {
  bool outputs_match = false;  // with the kept kernels
  double max_error = 0;        // largest |got - ref| / (|ref| + rms(ref)) over outputs, kept set
  double baseline_ms = 0;      // median of reps
  double swapped_ms = 0;       // median of reps, kept kernels swapped in
  double speedup = 1;          // baseline_ms / swapped_ms
  int reps = 0;
  std::vector<KernelVerdict> kernels;  // in the order given
  std::filesystem::path library;       // <work_dir>/libkfleet_kernels.so; empty if none kept
  std::string header;                  // C declarations of the kept symbols
};

// An error Status only when verification could not be attempted (model has no baseline, compiler
// missing); a kernel that misbehaves is a verdict.
Result<ModelVerifyReport> VerifyModel(const planner::Graph& graph,
                                      const std::vector<SwapKernel>& kernels,
                                      const VerifyOptions& options);

std::string ToJson(const ModelVerifyReport& report);
Result<ModelVerifyReport> ModelVerifyReportFromJson(std::string_view json);

}  // namespace kfleet::eval
