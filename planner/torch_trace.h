// Measured baseline times from a PyTorch profiler trace (torch.profiler's export_chrome_trace):
// the GPU time of each top-level aten op, mapped onto the nodes of the ONNX export of the same
// model, so the ranker can start from what the framework really spends instead of the roofline.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::planner {

// Seconds of GPU time per node name of `graph`. An aten op's time is the sum of the GPU kernels,
// memsets and memcpys launched while it (or any op it called) ran. Ops are matched to nodes by
// type, in execution order against the graph's topological order; a batch_norm right after a
// convolution counts toward that Conv when the export folded BatchNorm away. A count or shape
// disagreement is an error that names it; nodes without a counterpart get no entry. Shapes are
// checked where the trace recorded them (record_shapes=True). Errors start with `display_name`.
Result<std::map<std::string, double>> MeasuredTimesFromTorchTrace(std::string_view json_text,
                                                                  std::string_view display_name,
                                                                  const Graph& graph);
// The same for a document already parsed.
Result<std::map<std::string, double>> MeasuredTimesFromParsedTorchTrace(
    const nlohmann::json& doc, std::string_view display_name, const Graph& graph);

}  // namespace kfleet::planner
