// `kfleet calibrate cpu`: measures this machine for the planner's "cpu" target, or shows the
// cached measurement.
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output.h"
#include "planner/cpu_calibration.h"

namespace kfleet::cli {
namespace {

struct CalibrateCpuFlags {
  bool force = false;
  std::string cache;
  bool json = false;
};

void RunCalibrateCpu(const CalibrateCpuFlags& flags) {
  const std::string cache =
      flags.cache.empty() ? planner::DefaultCalibrationCachePath() : flags.cache;
  Result<planner::CpuCalibration> cal = planner::LoadOrCalibrateCpu(cache, flags.force);
  if (!cal.ok()) {
    // One line on stderr and exit 1, whatever the error's kind: nothing here is a usage error.
    std::string message = cal.status().message();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << "kfleet: calibrate cpu: " << message << "\n";
    throw CLI::RuntimeError(1);
  }
  const double copy_gb_per_s = cal->copy_bytes_per_s / 1e9;
  const double matmul_gflops = cal->matmul_flops_per_s / 1e9;
  if (flags.json) {
    nlohmann::json out = {{"cpu_model", cal->cpu_model},
                          {"logical_cores", cal->logical_cores},
                          {"copy_gb_per_s", copy_gb_per_s},
                          {"matmul_gflops", matmul_gflops},
                          {"measured_at", cal->measured_at},
                          {"from_cache", cal->from_cache},
                          {"cache_path", cache}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << FormatTable({
      {"cpu", cal->cpu_model},
      {"logical cores", std::to_string(cal->logical_cores)},
      {"copy bandwidth", fmt::format("{:.1f} GB/s (read + write, all cores)", copy_gb_per_s)},
      {"float32 matmul", fmt::format("{:.1f} GFLOP/s (all cores)", matmul_gflops)},
      {"measured at", cal->measured_at},
      {"source", cal->from_cache ? "cache (--force measures again)" : "measured now"},
      {"cache", cache},
  });
}

}  // namespace

void RegisterCalibrateCommands(CLI::App& app) {
  CLI::App* calibrate =
      app.add_subcommand("calibrate", "Measure this machine for the planner's cost model");
  calibrate->require_subcommand(1);

  auto flags = std::make_shared<CalibrateCpuFlags>();
  CLI::App* cpu = calibrate->add_subcommand(
      "cpu",
      "Memory copy bandwidth and float32 matmul rate on every core, for `kfleet plan --target "
      "cpu`; cached per CPU model and core count");
  cpu->add_flag("--force", flags->force, "Measure again even when the cache matches this CPU");
  cpu->add_option("--cache", flags->cache,
                  "Cache file (default: $XDG_CACHE_HOME or ~/.cache, kfleet/cpu-calibration.yaml)");
  cpu->add_flag("--json", flags->json, "Print JSON instead of a table");
  cpu->callback([flags] { RunCalibrateCpu(*flags); });
}

}  // namespace kfleet::cli
