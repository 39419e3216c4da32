// kfleet-harness: evaluates one compiled candidate against its spec inside the sandbox and
// prints the report as JSON. Started by the worker or `kfleet eval` through eval/launcher.h,
// which sets the limits, environment and working directory and explains a crash.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "common/files.h"
#include "eval/device.h"
#include "eval/harness.h"
#include "eval/harness_protocol.h"
#include "eval/kernel_library.h"
#include "eval/sandbox.h"
#include "planner/onnx_import.h"

namespace kfleet::eval {
namespace {

// write(2) only: usable from the new-handler and the watchdog while another thread is stuck.
void WriteLine(std::string_view line) {
  std::string text(line);
  text += '\n';
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Reports progress and kills the process when one kernel call runs past its limit: a hung kernel
// is named precisely instead of waiting for the launcher's wall-clock kill.
class Watchdog : public CallObserver {
 public:
  explicit Watchdog(int64_t timeout_ms) : timeout_ms_(timeout_ms) {
    if (timeout_ms_ > 0) thread_ = std::thread([this] { Watch(); });
  }
  ~Watchdog() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  void Enter(Stage stage) {
    if (stage == stage_) return;
    stage_ = stage;
    WriteLine(fmt::format("{}{}", kStageLine, StageName(stage)));
  }

  void BeginCall(Stage stage, const std::string& what) override {
    Enter(stage);
    if (what != last_what_) {
      last_what_ = what;
      WriteLine(fmt::format("{}{}", kTrialLine, what));
      std::lock_guard lock(mu_);
      what_ = what;
    }
    started_ns_ = Now();
  }
  void EndCall() override { started_ns_ = 0; }

 private:
  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void Watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const int64_t started = started_ns_;
      if (started == 0 || Now() - started < timeout_ms_ * 1'000'000) continue;
      std::string what;
      {
        std::lock_guard lock(mu_);
        what = what_;
      }
      WriteLine(
          fmt::format("{}one call to kf_kernel_run did not return within {} ms ({}): an "
                      "infinite loop or a deadlock?",
                      kHungLine, timeout_ms_, what));
      ::_exit(kHarnessHungExitCode);
    }
  }

  const int64_t timeout_ms_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> started_ns_{0};
  Stage stage_ = Stage::kCompile;  // only the evaluating thread touches it
  std::string last_what_;          // only the evaluating thread touches it
  std::mutex mu_;
  std::string what_;  // guarded by mu_
  std::thread thread_;
};

void OnAllocationFailure() {
  WriteLine(fmt::format("{}an allocation failed: the evaluation reached its memory limit",
                        kOutOfMemoryLine));
  ::_exit(kHarnessOutOfMemoryExitCode);
}

int Main(int argc, char** argv) {
  CLI::App app("kfleet-harness: test and time one compiled kernel against its spec (sandboxed)");
  std::string spec_path;
  std::string library_path;
  HarnessOptions options;
  int64_t call_timeout_ms = 10'000;
  bool no_profile = false;
  bool no_tests = false;
  app.add_option("--spec", spec_path, "kernel spec (standalone ONNX)");
  app.add_option("--library", library_path, "compiled candidate (.so)");
  app.add_option("--backend", options.backend, "where the kernel runs: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--device", options.device, "GPU index for --backend cuda");
  app.add_option("--flush-bytes", options.flush_bytes,
                 "bytes written to evict caches before each timed call (0: twice the LLC / L2)");
  bool check_device = false;
  app.add_flag("--check-device", check_device,
               "only check that the --backend device works (runs a probe kernel), exit 0 if so");
  app.add_option("--seed", options.seed, "seed of every random input");
  app.add_option("--sol-us", options.sol_us, "speed-of-light floor of the profiled shape");
  app.add_option("--profile-budget-s", options.profile_budget_s,
                 "time spent timing each of candidate and baseline");
  app.add_option("--call-timeout-ms", call_timeout_ms, "longest one kernel call may take");
  app.add_option("--smoke-trials", options.smoke_trials, "trials at the profiled shape");
  app.add_option("--max-sweep-shapes", options.max_sweep_shapes, "shapes in the shape sweep");
  app.add_option("--rtol-f32", options.tolerances.f32.rtol);
  app.add_option("--rtol-f16", options.tolerances.f16.rtol);
  app.add_option("--rtol-bf16", options.tolerances.bf16.rtol);
  app.add_option("--matched-ratio-f16", options.tolerances.f16.min_matched_ratio);
  app.add_option("--matched-ratio-bf16", options.tolerances.bf16.min_matched_ratio);
  app.add_option("--stability-factor", options.tolerances.stability_factor);
  app.add_option("--large-scale", options.large_scale, "stability stage: large inputs factor");
  app.add_option("--small-scale", options.small_scale, "stability stage: small inputs factor");
  app.add_option("--suspicious-speedup", options.suspicious_speedup,
                 "a speedup above this is rechecked before it counts");
  app.add_flag("--no-profile", no_profile, "run the test stages only");
  app.add_flag("--no-tests", no_tests,
               "skip shape sweep, stability and determinism (smoke and profile still run)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kHarnessUsageExitCode;
  }
  options.profile = !no_profile;
  options.tests = !no_tests;
  if (check_device) {
    const Status healthy = CheckDevice(options.backend, options.device);
    if (!healthy.ok()) std::cerr << "kfleet-harness: " << healthy.message() << "\n";
    return healthy.ok() ? 0 : kHarnessFailedExitCode;
  }
  if (spec_path.empty() || library_path.empty()) {
    std::cerr << "kfleet-harness: --spec and --library are required\n";
    return kHarnessUsageExitCode;
  }

  Result<std::string> spec_bytes = ReadFile(spec_path);
  if (!spec_bytes.ok()) {
    std::cerr << "kfleet-harness: " << spec_bytes.status().message() << "\n";
    return kHarnessUsageExitCode;
  }
  Result<planner::Graph> spec = planner::ImportOnnxBytes(*spec_bytes, spec_path, "", {});
  if (!spec.ok()) {
    std::cerr << "kfleet-harness: " << spec.status().message() << "\n";
    return kHarnessUsageExitCode;
  }
  std::set_new_handler(OnAllocationFailure);
  // The GPU runtime starts before the sandbox and the candidate's code.
  if (Status backend = InitializeBackend(options.backend, options.device); !backend.ok()) {
    std::cerr << "kfleet-harness: " << backend.message() << "\n";
    return kHarnessUsageExitCode;
  }
  Watchdog watchdog(call_timeout_ms);
  watchdog.Enter(Stage::kLoad);
  // From here on nothing may open a network socket, start a process or run a program: the
  // candidate's code (its constructors included) runs next.
  Status sandbox = EnterSandbox(STDERR_FILENO);
  if (!sandbox.ok()) {
    std::cerr << "kfleet-harness: cannot enter the sandbox: " << sandbox.message() << "\n";
    return kHarnessUsageExitCode;
  }
  EvalReport report;
  Result<std::unique_ptr<KernelLibrary>> kernel = KernelLibrary::Open(library_path);
  if (!kernel.ok()) {
    report = EmptyReport();
    report.StageFor(Stage::kCompile).ran = true;
    report.StageFor(Stage::kCompile).passed = true;
    report.Fail(Stage::kLoad, kernel.status().message());
  } else {
    report = EvaluateKernel(*spec_bytes, *spec, **kernel, options, &watchdog);
  }
  report.spec = spec_path;
  std::cout << ToJson(report).dump() << std::endl;
  return report.passed ? kHarnessPassedExitCode : kHarnessFailedExitCode;
}

}  // namespace
}  // namespace kfleet::eval

int main(int argc, char** argv) { return kfleet::eval::Main(argc, argv); }
