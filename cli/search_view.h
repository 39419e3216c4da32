// How a model job's search looks in the terminal: `kfleet show` on a model job and the live view
// of `kfleet run` share it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "messages/api.capnp.h"

namespace kfleet::cli {

// Summary lines (phase, device, baseline, projected and measured speedups, budget) and the ranked
// kernel table: family, count, share, baseline, best, speedup, % of speed-of-light, candidates,
// a bar of the budget spent, state and note.
std::string FormatModelJob(msg::ShowReply::Reader reply);
// The same as JSON (what `kfleet show --json` prints for a model job).
nlohmann::json ModelJobJson(msg::ShowReply::Reader reply);
// "10m", "90s", "1h30m", "45" (seconds) -> milliseconds; InvalidArgument otherwise.
bool ParseDurationMs(const std::string& text, int64_t* ms);

}  // namespace kfleet::cli
