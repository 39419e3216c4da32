// configs/eval.yaml: tolerances, stage sizes and limits of an evaluation.
#pragma once

#include <filesystem>

#include "common/status.h"
#include "eval/harness.h"
#include "eval/launcher.h"

namespace kfleet::eval {

struct EvalConfig {
  HarnessOptions harness;
  LaunchOptions launch;
};

// Defaults for every key missing; an empty path gives all defaults. Unknown keys are errors.
Result<EvalConfig> LoadEvalConfig(const std::filesystem::path& path);

}  // namespace kfleet::eval
