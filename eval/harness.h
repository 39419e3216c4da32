// The test and profile stages of one evaluation, run in the calling process against a loaded
// candidate. kfleet-harness runs this inside the sandbox; nothing else should call it on an
// untrusted kernel.
#pragma once

#include <cstdint>
#include <string>

#include "eval/compare.h"
#include "eval/kernel_library.h"
#include "eval/report.h"
#include "planner/graph.h"

namespace kfleet::eval {

struct HarnessOptions {
  // Where the candidate runs: "cpu" (host memory, the CPU baseline) or "cuda" (device `device`'s
  // memory, the CUDA baseline, CUDA-event timing). See eval/device.h.
  std::string backend = "cpu";
  int device = 0;
  uint64_t seed = 1;
  int smoke_trials = 3;
  int max_sweep_shapes = 8;
  // false: smoke then profile only, for a candidate whose test task already ran the shape sweep,
  // stability and determinism stages; those stay not run, with a note, and do not fail it.
  bool tests = true;
  bool profile = true;
  // Candidate and baseline are timed in alternation, each call after a cache flush, until both
  // medians are stable, max_reps, or this much time per subject (flushes included).
  double profile_budget_s = 2.0;
  int min_reps = 10;
  int max_reps = 2000;
  int64_t flush_bytes = 0;  // 0: twice the last-level cache (the L2 on a GPU)
  double sol_us = 0;        // speed-of-light floor of the profiled shape; 0 when unknown
  double suspicious_speedup = 20.0;
  // Inputs are multiplied by these in the stability stage ("very large" / "very small").
  double large_scale = 1e3;
  double small_scale = 1e-3;
  ToleranceTable tolerances;
};

// Told before and after every call into the candidate: the harness binary runs a watchdog on it.
class CallObserver {
 public:
  virtual ~CallObserver() = default;
  virtual void BeginCall(Stage stage, const std::string& what) = 0;
  virtual void EndCall() = 0;
};

// Runs smoke -> shape sweep -> stability -> determinism -> profile on `kernel` for the spec
// (`spec_onnx` is its standalone ONNX model, `spec` the imported graph), leaving out the test or
// profile stages that `options` turns off. The report's compile and load stages are the caller's;
// they are marked passed here.
EvalReport EvaluateKernel(std::string_view spec_onnx, const planner::Graph& spec,
                          const KernelLibrary& kernel, const HarnessOptions& options,
                          CallObserver* observer = nullptr);

// With HarnessOptions::tests off: marks shape sweep, stability and determinism not run, with a
// note saying why (the launcher's report of a harness that died in the profile stage needs it too).
void MarkTestStagesSkipped(EvalReport& report);

// Twice the last-level cache of this CPU (sysfs), at least 32 MiB.
int64_t DefaultFlushBytes();

}  // namespace kfleet::eval
