#include "eval/report.h"

#include <fmt/format.h>

namespace kfleet::eval {

NLOHMANN_JSON_SERIALIZE_ENUM(Stage, {{Stage::kCompile, "compile"},
                                     {Stage::kLoad, "load"},
                                     {Stage::kSmoke, "smoke"},
                                     {Stage::kShapeSweep, "shape_sweep"},
                                     {Stage::kStability, "stability"},
                                     {Stage::kDeterminism, "determinism"},
                                     {Stage::kProfile, "profile"}})

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TrialResult, label, shapes, passed, message,
                                                max_abs_error, max_rel_error, matched_ratio)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(StageResult, stage, ran, passed, message, seconds,
                                                trials)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TimingStats, median_us, min_us, p90_us, max_us,
                                                reps)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ProfileResult, candidate, baseline, speedup, sol_us,
                                                sol_fraction, flagged, note, flush_bytes,
                                                baseline_check)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CompileInfo, ok, cache_hit, timed_out, seconds,
                                                toolchain, command, key, library, log)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ToleranceInfo, dtype, rtol, min_matched_ratio,
                                                stability_rtol)

std::string_view StageName(Stage stage) {
  switch (stage) {
    case Stage::kCompile:
      return "compile";
    case Stage::kLoad:
      return "load";
    case Stage::kSmoke:
      return "smoke";
    case Stage::kShapeSweep:
      return "shape_sweep";
    case Stage::kStability:
      return "stability";
    case Stage::kDeterminism:
      return "determinism";
    case Stage::kProfile:
      return "profile";
  }
  return "unknown";
}

EvalReport EmptyReport() {
  EvalReport report;
  for (Stage stage : kAllStages) {
    StageResult s;
    s.stage = stage;
    report.stages.push_back(std::move(s));
  }
  return report;
}

StageResult& EvalReport::StageFor(Stage stage) {
  for (StageResult& s : stages) {
    if (s.stage == stage) return s;
  }
  StageResult added;
  added.stage = stage;
  stages.push_back(std::move(added));
  return stages.back();
}

void EvalReport::Fail(Stage stage, std::string message) {
  StageResult& s = StageFor(stage);
  s.ran = true;
  s.passed = false;
  s.message = message;
  passed = false;
  if (failed_stage.empty()) {
    failed_stage = std::string(StageName(stage));
    reason = std::move(message);
  }
}

void EvalReport::Finish() {
  passed = failed_stage.empty();
  for (const StageResult& s : stages) passed = passed && s.ran && s.passed;
  if (!passed && failed_stage.empty()) {
    for (const StageResult& s : stages) {
      if (!s.ran) {
        failed_stage = std::string(StageName(s.stage));
        reason = "the stage did not run";
        break;
      }
    }
  }
}

nlohmann::json ToJson(const EvalReport& r) {
  nlohmann::json j = {
      {"spec", r.spec},     {"backend", r.backend},       {"device", r.device},
      {"seed", r.seed},     {"tolerances", r.tolerances}, {"compile", r.compile},
      {"stages", r.stages}, {"passed", r.passed},         {"failed_stage", r.failed_stage},
      {"reason", r.reason}};
  j["profile"] = r.profile ? nlohmann::json(*r.profile) : nlohmann::json(nullptr);
  return j;
}

Result<EvalReport> ReportFromJson(const nlohmann::json& j) {
  try {
    EvalReport r;
    r.spec = j.value("spec", "");
    r.backend = j.value("backend", "cpu");
    r.device = j.value("device", "");
    r.seed = j.value("seed", uint64_t{0});
    r.tolerances = j.value("tolerances", std::vector<ToleranceInfo>{});
    r.compile = j.value("compile", CompileInfo{});
    r.stages = j.at("stages").get<std::vector<StageResult>>();
    if (j.contains("profile") && !j.at("profile").is_null()) {
      r.profile = j.at("profile").get<ProfileResult>();
    }
    r.passed = j.value("passed", false);
    r.failed_stage = j.value("failed_stage", "");
    r.reason = j.value("reason", "");
    return r;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(fmt::format("malformed evaluation report: {}", e.what()));
  }
}

std::string FormatReport(const EvalReport& r) {
  std::string out = fmt::format("spec: {}\nbackend: {}  device: {}  seed: {}\n", r.spec, r.backend,
                                r.device, r.seed);
  for (const ToleranceInfo& t : r.tolerances) {
    out += fmt::format(
        "tolerance {}: |got - ref| <= {:g} * (|ref| + rms(ref)) on >= {:g}% of elements; "
        "stability stage {:g}\n",
        t.dtype, t.rtol, 100 * t.min_matched_ratio, t.stability_rtol);
  }
  out += "\n";
  for (const StageResult& s : r.stages) {
    std::string status = !s.ran ? "not run" : s.passed ? "passed" : "FAILED";
    std::string detail;
    if (s.stage == Stage::kCompile && s.ran) {
      detail = r.compile.cache_hit ? "cached" : fmt::format("{:.2f} s", r.compile.seconds);
    } else if (!s.trials.empty()) {
      int passed = 0;
      for (const TrialResult& t : s.trials) passed += t.passed ? 1 : 0;
      detail = fmt::format("{}/{} trials, {:.2f} s", passed, s.trials.size(), s.seconds);
    } else if (s.ran) {
      detail = fmt::format("{:.2f} s", s.seconds);
    }
    out += fmt::format("  {:<12} {:<8} {}\n", StageName(s.stage), status, detail);
    if (s.ran && !s.passed && !s.message.empty()) out += fmt::format("      {}\n", s.message);
    if (s.ran && s.passed && !s.message.empty()) out += fmt::format("      note: {}\n", s.message);
    for (const TrialResult& t : s.trials) {
      // The stage's message already quotes the trial that failed it.
      if (!t.passed && s.message.find(t.message) == std::string::npos) {
        out += fmt::format("      trial {} ({}): {}\n", t.label, t.shapes, t.message);
      }
    }
  }
  if (r.profile) {
    const ProfileResult& p = *r.profile;
    out += fmt::format(
        "\nprofile: candidate median {:.2f} us (min {:.2f}, p90 {:.2f}, {} reps)\n"
        "         baseline  median {:.2f} us (min {:.2f}, p90 {:.2f}, {} reps)\n"
        "         speedup {:.2f}x",
        p.candidate.median_us, p.candidate.min_us, p.candidate.p90_us, p.candidate.reps,
        p.baseline.median_us, p.baseline.min_us, p.baseline.p90_us, p.baseline.reps, p.speedup);
    if (p.sol_us > 0) {
      out += fmt::format(", speed of light {:.2f} us ({:.0f}% of it reached)", p.sol_us,
                         100 * p.sol_fraction);
    }
    out += "\n";
    if (p.flagged) out += fmt::format("         flagged: {}\n", p.note);
    if (p.baseline_check != "ok" && !p.baseline_check.empty()) {
      out += fmt::format("         baseline check: {}\n", p.baseline_check);
    }
  }
  if (!r.passed && r.compile.ok == false && !r.compile.log.empty()) {
    out += fmt::format("\ncompiler output:\n{}\n", r.compile.log);
  }
  out += r.passed ? "\nresult: PASSED\n"
                  : fmt::format("\nresult: FAILED at {}: {}\n", r.failed_stage, r.reason);
  return out;
}

}  // namespace kfleet::eval
