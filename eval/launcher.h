// One evaluation as the worker and `kfleet eval` run it: compile the candidate (cached), then
// run kfleet-harness on it in a child process with its own process group, rlimits, an empty
// working directory, an environment allow-list, the seccomp sandbox and a wall-clock kill. A
// kernel that crashes, hangs, forks or allocates without end takes only that child down; the
// report says which stage it was in and why.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/status.h"
#include "common/subprocess.h"
#include "eval/harness.h"
#include "eval/report.h"
#include "eval/toolchain.h"

namespace kfleet::eval {

struct LaunchOptions {
  std::filesystem::path harness;  // kfleet-harness; empty: HarnessPath()
  int64_t timeout_ms = 600'000;   // the whole evaluation
  int64_t call_timeout_ms = 10'000;
  uint64_t memory_limit_bytes = uint64_t{16} << 30;  // address space of the harness process
  uint64_t file_size_limit_bytes = uint64_t{64} << 20;
  uint64_t open_files_limit = 256;
  int threads = 0;     // OMP_NUM_THREADS / OPENBLAS_NUM_THREADS for the child; 0 = all cores
  std::string device;  // what the report calls the device ("cpu: AMD EPYC 7B13, 2 cores")
};

// $KFLEET_HARNESS, else kfleet-harness beside the running executable, else beside it in
// ../eval/ (a build tree).
std::filesystem::path HarnessPath();

// Compiles `source` with `toolchain` and evaluates it on the spec at `spec_path`. An error Status
// only when the evaluation could not be attempted (spec unreadable, harness missing); a kernel
// that fails in any way is a report with passed = false.
Result<EvalReport> EvaluateSource(const std::filesystem::path& spec_path, std::string_view source,
                                  Toolchain& toolchain, const HarnessOptions& harness,
                                  const LaunchOptions& launch,
                                  ProcessRunner& runner = SystemProcessRunner());

// Runs kfleet-harness on an already compiled library. `compile` goes into the report as is.
Result<EvalReport> EvaluateLibrary(const std::filesystem::path& spec_path,
                                   const std::filesystem::path& library, const CompileInfo& compile,
                                   const HarnessOptions& harness, const LaunchOptions& launch,
                                   ProcessRunner& runner = SystemProcessRunner());

// The report for a harness that did not finish: the stage it was in (from its progress lines)
// fails with what ended it. Exposed for tests.
EvalReport ExplainAbnormalExit(const ProcessResult& result, const LaunchOptions& launch);

}  // namespace kfleet::eval
