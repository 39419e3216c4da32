#include "eval/eval_config.h"

#include "common/config.h"

namespace kfleet::eval {
namespace {

void ReadTolerance(ConfigReader& reader, const std::string& dtype, Tolerance& tolerance) {
  tolerance.rtol = reader.Double("tolerance." + dtype + ".rtol", tolerance.rtol, 0.0, 1.0);
  tolerance.min_matched_ratio = reader.Double("tolerance." + dtype + ".min_matched_ratio",
                                              tolerance.min_matched_ratio, 0.5, 1.0);
}

}  // namespace

Result<EvalConfig> LoadEvalConfig(const std::filesystem::path& path) {
  EvalConfig config;
  if (path.empty()) return config;
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadFile(path));
  HarnessOptions& h = config.harness;
  ReadTolerance(reader, "f32", h.tolerances.f32);
  ReadTolerance(reader, "f16", h.tolerances.f16);
  ReadTolerance(reader, "bf16", h.tolerances.bf16);
  h.tolerances.stability_factor =
      reader.Double("tolerance.stability_factor", h.tolerances.stability_factor, 1.0, 1e6);
  h.smoke_trials = static_cast<int>(reader.Int("test.smoke_trials", h.smoke_trials, 1, 100));
  h.max_sweep_shapes =
      static_cast<int>(reader.Int("test.max_sweep_shapes", h.max_sweep_shapes, 0, 100));
  h.large_scale = reader.Double("test.large_scale", h.large_scale, 1.0, 1e30);
  h.small_scale = reader.Double("test.small_scale", h.small_scale, 1e-30, 1.0);
  h.profile_budget_s =
      static_cast<double>(reader.DurationMs(
          "profile.budget", static_cast<int64_t>(h.profile_budget_s * 1000), 10, 600'000)) /
      1000.0;
  h.suspicious_speedup =
      reader.Double("profile.suspicious_speedup", h.suspicious_speedup, 1.0, 1e6);
  LaunchOptions& l = config.launch;
  l.timeout_ms = reader.DurationMs("limits.timeout", l.timeout_ms, 1000, 86'400'000);
  l.call_timeout_ms = reader.DurationMs("limits.call_timeout", l.call_timeout_ms, 10, 3'600'000);
  l.memory_limit_bytes = static_cast<uint64_t>(
      reader.Bytes("limits.memory", static_cast<int64_t>(l.memory_limit_bytes), int64_t{1} << 28,
                   int64_t{1} << 50));
  KF_RETURN_IF_ERROR(reader.Finish());
  return config;
}

}  // namespace kfleet::eval
