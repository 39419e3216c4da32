#include "eval/launcher.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "common/temp_dir.h"
#include "eval/harness_protocol.h"
#include "eval/sandbox.h"

namespace kfleet::eval {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool StartsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

Stage StageFromName(std::string_view name) {
  for (Stage stage : kAllStages) {
    if (StageName(stage) == name) return stage;
  }
  return Stage::kLoad;
}

std::string SignalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", signal);
}

// Lines of stderr that are not progress markers: what the kernel or the harness printed.
std::string OtherOutput(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& line : lines) {
    if (StartsWith(line, "@")) continue;
    if (!out.empty()) out += " | ";
    out += line;
    if (out.size() > 400) break;
  }
  return out;
}

std::vector<std::string> ChildEnvironment(const std::filesystem::path& home, int threads) {
  // An allow-list: the kernel sees nothing of the worker's environment (keys, tokens, proxies).
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + home.string(),
                                  "TMPDIR=" + home.string()};
  const int n = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  env.push_back(fmt::format("OMP_NUM_THREADS={}", std::max(n, 1)));
  // Kernels and the baseline split work over OpenMP threads and call OpenBLAS from them: a second
  // pool of OpenBLAS threads would only fight OpenMP's for the same cores.
  env.push_back("OPENBLAS_NUM_THREADS=1");
  // The operator's tuning of OpenBLAS and OpenMP (OPENBLAS_CORETYPE, OMP_WAIT_POLICY, ...) holds
  // here too, so the harness times kernels the way `kfleet profile` and the calibration ran.
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view var(*entry);
    // CUDA_VISIBLE_DEVICES too: the worker's device numbers must mean the same cards here.
    const bool tuning = StartsWith(var, "OPENBLAS_") || StartsWith(var, "OMP_") ||
                        StartsWith(var, "GOMP_") || StartsWith(var, "CUDA_VISIBLE_DEVICES=");
    if (tuning && !StartsWith(var, "OPENBLAS_NUM_THREADS=") &&
        !StartsWith(var, "OMP_NUM_THREADS=")) {
      env.emplace_back(var);
    }
  }
  return env;
}

}  // namespace

std::filesystem::path HarnessPath() {
  if (const char* env = std::getenv("KFLEET_HARNESS"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "kfleet-harness";
  const std::filesystem::path dir = self.parent_path();
  for (const std::filesystem::path& candidate :
       {dir / "kfleet-harness", dir / ".." / "eval" / "kfleet-harness"}) {
    if (std::filesystem::exists(candidate, ec)) return candidate.lexically_normal();
  }
  return dir / "kfleet-harness";
}

EvalReport ExplainAbnormalExit(const ProcessResult& result, const LaunchOptions& launch) {
  EvalReport report = EmptyReport();
  report.StageFor(Stage::kCompile).ran = true;
  report.StageFor(Stage::kCompile).passed = true;
  const std::vector<std::string> lines = Lines(result.stderr_bytes);
  Stage stage = Stage::kLoad;
  std::string trial;
  std::string marker;  // the line the harness or sandbox left about what went wrong
  for (const std::string& line : lines) {
    if (StartsWith(line, kStageLine)) {
      const Stage next = StageFromName(line.substr(kStageLine.size()));
      // Stages before the one that was running when it died have passed.
      for (Stage s : kAllStages) {
        if (s >= next) break;
        report.StageFor(s).ran = true;
        report.StageFor(s).passed = true;
      }
      stage = next;
      trial.clear();
    } else if (StartsWith(line, kTrialLine)) {
      trial = line.substr(kTrialLine.size());
    } else if (StartsWith(line, kHungLine)) {
      marker = line.substr(kHungLine.size());
    } else if (StartsWith(line, kOutOfMemoryLine)) {
      marker = fmt::format("{} ({} GiB of address space)", line.substr(kOutOfMemoryLine.size()),
                           launch.memory_limit_bytes >> 30);
    } else if (StartsWith(line, "sandbox: ")) {
      marker = line;
    }
  }
  std::string why;
  if (result.timed_out) {
    why = fmt::format("the evaluation ran past its {} s limit and was killed",
                      launch.timeout_ms / 1000);
  } else if (result.term_signal == SIGSYS) {
    // glibc's posix_spawn blocks every signal around its clone, so the kernel kills the process
    // without our handler: a forbidden call all the same.
    why =
        "the sandbox killed the process for a forbidden system call: kernels may not use the "
        "network, start processes or run programs";
  } else if (result.term_signal != 0) {
    why = fmt::format("the kernel crashed the harness: killed by {}{}",
                      SignalName(result.term_signal),
                      result.term_signal == SIGXCPU || result.term_signal == SIGKILL
                          ? " (CPU-time or memory limit?)"
                          : "");
  } else if (result.exit_code == kSandboxViolationExitCode) {
    why = marker.empty() ? "the sandbox stopped a forbidden system call" : marker;
    if (why.find("clone(") != std::string::npos) why += " (fork: a new process)";
    why += ": kernels may not use the network, start processes or run programs";
  } else if (result.exit_code == kHarnessHungExitCode ||
             result.exit_code == kHarnessOutOfMemoryExitCode) {
    why = marker;
  } else {
    why = fmt::format("the harness {} without a report", result.Describe());
  }
  const std::string other = OtherOutput(lines);
  if (!other.empty() && result.exit_code != kSandboxViolationExitCode) {
    why += fmt::format("; its output: {}", other);
  }
  if (!trial.empty()) why += fmt::format(" [trial: {}]", trial);
  report.Fail(stage, why);
  return report;
}

Result<EvalReport> EvaluateLibrary(const std::filesystem::path& spec_path,
                                   const std::filesystem::path& library, const CompileInfo& compile,
                                   const HarnessOptions& harness, const LaunchOptions& launch,
                                   ProcessRunner& runner) {
  const std::filesystem::path binary = launch.harness.empty() ? HarnessPath() : launch.harness;
  std::error_code ec;
  if (!std::filesystem::exists(binary, ec)) {
    return NotFound(fmt::format(
        "kfleet-harness not found at {} (install it beside kfleet or set KFLEET_HARNESS)",
        binary.string()));
  }
  KF_ASSIGN_OR_RETURN(TempDir work, TempDir::Create("kfleet-eval"));
  ProcessSpec spec;
  spec.argv = {std::filesystem::absolute(binary).string(),
               "--spec",
               std::filesystem::absolute(spec_path).string(),
               "--library",
               std::filesystem::absolute(library).string(),
               "--seed",
               std::to_string(harness.seed),
               "--sol-us",
               fmt::format("{}", harness.sol_us),
               "--profile-budget-s",
               fmt::format("{}", harness.profile_budget_s),
               "--call-timeout-ms",
               std::to_string(launch.call_timeout_ms),
               "--smoke-trials",
               std::to_string(harness.smoke_trials),
               "--max-sweep-shapes",
               std::to_string(harness.max_sweep_shapes),
               "--rtol-f32",
               fmt::format("{}", harness.tolerances.f32.rtol),
               "--rtol-f16",
               fmt::format("{}", harness.tolerances.f16.rtol),
               "--rtol-bf16",
               fmt::format("{}", harness.tolerances.bf16.rtol),
               "--matched-ratio-f16",
               fmt::format("{}", harness.tolerances.f16.min_matched_ratio),
               "--matched-ratio-bf16",
               fmt::format("{}", harness.tolerances.bf16.min_matched_ratio),
               "--stability-factor",
               fmt::format("{}", harness.tolerances.stability_factor),
               "--large-scale",
               fmt::format("{}", harness.large_scale),
               "--small-scale",
               fmt::format("{}", harness.small_scale),
               "--suspicious-speedup",
               fmt::format("{}", harness.suspicious_speedup)};
  spec.argv.insert(spec.argv.end(),
                   {"--backend", harness.backend, "--device", std::to_string(harness.device),
                    "--flush-bytes", std::to_string(harness.flush_bytes)});
  if (!harness.profile) spec.argv.push_back("--no-profile");
  if (!harness.tests) spec.argv.push_back("--no-tests");
  spec.cwd = work.path();
  spec.clear_env = true;
  spec.env = ChildEnvironment(work.path(), launch.threads);
  spec.timeout_ms = launch.timeout_ms;
  spec.max_output_bytes = size_t{16} << 20;
  // The CUDA driver reserves address space far beyond what it uses (unified addressing), so a
  // GPU evaluation is not limited there; its device memory is bounded by the card.
  spec.limits.address_space_bytes = harness.backend == "cpu" ? launch.memory_limit_bytes : 0;
  spec.limits.file_size_bytes = launch.file_size_limit_bytes;
  spec.limits.open_files = launch.open_files_limit;
  const int threads =
      launch.threads > 0 ? launch.threads : static_cast<int>(std::thread::hardware_concurrency());
  // CPU time across all threads, with room: the wall clock is the real limit.
  spec.limits.cpu_seconds =
      static_cast<uint64_t>(launch.timeout_ms / 1000 + 1) * static_cast<uint64_t>(threads + 1);
  spec.limits.core_dumps = false;
  // A backstop behind the sandbox's fork rule: RLIMIT_NPROC counts every thread of the user (root
  // is exempt), so it stays well above what a worker's own threads could reach.
  spec.limits.processes = 16384;
  KF_ASSIGN_OR_RETURN(ProcessResult result, runner.Run(spec));

  EvalReport report;
  Result<EvalReport> parsed = InvalidArgument("no report");
  if (!result.timed_out && result.term_signal == 0 &&
      (result.exit_code == kHarnessPassedExitCode || result.exit_code == kHarnessFailedExitCode)) {
    const std::vector<std::string> lines = Lines(result.stdout_bytes);
    if (!lines.empty()) {
      try {
        parsed = ReportFromJson(nlohmann::json::parse(lines.back()));
      } catch (const nlohmann::json::exception& e) {
        parsed = InvalidArgument(fmt::format("unreadable report: {}", e.what()));
      }
    }
  }
  if (result.exit_code == kHarnessUsageExitCode && result.term_signal == 0 && !result.timed_out) {
    return InvalidArgument(fmt::format("kfleet-harness: {}", result.stderr_bytes));
  }
  if (parsed.ok()) {
    report = std::move(*parsed);
  } else {
    report = ExplainAbnormalExit(result, launch);
    // ExplainAbnormalExit counts every stage before the one that died as passed.
    if (!harness.tests) MarkTestStagesSkipped(report);
  }
  report.spec = spec_path.string();
  if (!launch.device.empty() || report.device.empty()) report.device = launch.device;
  report.seed = harness.seed;
  report.compile = compile;
  return report;
}

Result<EvalReport> EvaluateSource(const std::filesystem::path& spec_path, std::string_view source,
                                  Toolchain& toolchain, const HarnessOptions& harness,
                                  const LaunchOptions& launch, ProcessRunner& runner) {
  KF_ASSIGN_OR_RETURN(CompiledKernel compiled, toolchain.Compile(source));
  CompileInfo info;
  info.ok = compiled.ok;
  info.cache_hit = compiled.cache_hit;
  info.timed_out = compiled.timed_out;
  info.seconds = compiled.seconds;
  info.toolchain = std::string(toolchain.name());
  info.command = compiled.command;
  info.key = compiled.key;
  info.library = compiled.library.string();
  info.log = compiled.log;
  if (!compiled.ok) {
    EvalReport report = EmptyReport();
    report.spec = spec_path.string();
    report.device = launch.device;
    report.seed = harness.seed;
    report.compile = info;
    report.Fail(Stage::kCompile, compiled.timed_out
                                     ? "the compiler did not finish in time"
                                     : "the source does not compile (compiler output below)");
    return report;
  }
  return EvaluateLibrary(spec_path, compiled.library, info, harness, launch, runner);
}

}  // namespace kfleet::eval
