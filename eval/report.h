// What an evaluation found, stage by stage: the harness writes it as JSON, the worker and
// `kfleet eval` read it back and show it.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kfleet::eval {

// In the order they run; a failed stage stops the ones after it.
enum class Stage { kCompile, kLoad, kSmoke, kShapeSweep, kStability, kDeterminism, kProfile };
std::string_view StageName(Stage stage);  // "compile", ..., "shape_sweep", ..., "profile"
inline constexpr Stage kAllStages[] = {Stage::kCompile,    Stage::kLoad,      Stage::kSmoke,
                                       Stage::kShapeSweep, Stage::kStability, Stage::kDeterminism,
                                       Stage::kProfile};

// One run of the kernel against the reference.
struct TrialResult {
  std::string label;   // "seed 12, uniform", "768->767, seed 15, normal", "large (x1000)"
  std::string shapes;  // "in0 f32[1,127,767], in1 f32[767], in2 f32[767]"
  bool passed = false;
  std::string message;  // why it failed; empty when passed
  double max_abs_error = 0;
  double max_rel_error = 0;
  double matched_ratio = 1;
};

struct StageResult {
  Stage stage = Stage::kSmoke;
  bool ran = false;
  bool passed = false;
  std::string message;  // the failure, or a remark ("no other shape is valid for this spec")
  double seconds = 0;
  std::vector<TrialResult> trials;
};

struct TimingStats {
  double median_us = 0;
  double min_us = 0;
  double p90_us = 0;
  double max_us = 0;
  int reps = 0;
};

struct ProfileResult {
  TimingStats candidate;
  TimingStats baseline;  // the baseline executor on the same inputs, in the same process
  double speedup = 0;    // baseline median / candidate median
  double sol_us = 0;     // speed-of-light floor from the cost model; 0 when unknown
  double sol_fraction = 0;
  bool flagged = false;  // too good to be true: rechecked before it counts
  std::string note;      // why it was flagged and what the recheck found
  int64_t flush_bytes = 0;
  std::string baseline_check;  // the baseline against the reference: "ok" or what differed
};

struct CompileInfo {
  bool ok = false;
  bool cache_hit = false;
  bool timed_out = false;
  double seconds = 0;
  std::string toolchain;
  std::string command;
  std::string key;
  std::string library;
  std::string log;
};

struct ToleranceInfo {
  std::string dtype;
  double rtol = 0;
  double min_matched_ratio = 1;
  double stability_rtol = 0;
};

struct EvalReport {
  std::string spec;  // spec name or file
  std::string backend = "cpu";
  std::string device;
  uint64_t seed = 0;
  std::vector<ToleranceInfo> tolerances;  // one per output dtype
  CompileInfo compile;
  std::vector<StageResult> stages;  // every stage, including those that did not run
  std::optional<ProfileResult> profile;
  bool passed = false;
  std::string failed_stage;  // empty when passed
  std::string reason;        // the failure in one line

  StageResult& StageFor(Stage stage);
  // Marks `stage` failed with `message`, sets failed_stage / reason; later stages stay not run.
  void Fail(Stage stage, std::string message);
  // passed when every stage ran and passed.
  void Finish();
};

// A report with every stage listed and none run.
EvalReport EmptyReport();

nlohmann::json ToJson(const EvalReport& report);
Result<EvalReport> ReportFromJson(const nlohmann::json& json);

// The human-readable report `kfleet eval` prints.
std::string FormatReport(const EvalReport& report);

}  // namespace kfleet::eval
