// The planner end to end: import an ONNX model, partition it, rank the kernel jobs on a target.
// What `kfleet plan` prints and what kfleetd runs first for every submission.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/cost_model.h"
#include "planner/graph.h"
#include "planner/onnx_import.h"
#include "planner/partition.h"
#include "planner/rank.h"

namespace kfleet::planner {

struct PlannedModel {
  Graph graph;
  std::vector<FusionGroup> groups;
  ModelPlan plan;
};

Result<PlannedModel> PlanGraph(Graph graph, const DeviceModel& device, const PlanOptions& options);

Result<PlannedModel> PlanOnnxFile(const std::string& path, const ImportOptions& import,
                                  const DeviceModel& device, const PlanOptions& options);

// A baseline profile: measured seconds per node name of `graph`. The file is JSON, either
//   {"device": "h200", "node_us": {"node_Gemm_898": 41.2, ...}}
// or a torch.profiler chrome trace of the model the graph was exported from ({"traceEvents":
// [...]}, see torch_trace.h). Errors name the file and what is wrong.
Result<std::map<std::string, double>> LoadNodeProfile(const std::string& path, const Graph& graph);

}  // namespace kfleet::planner
