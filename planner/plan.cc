#include "planner/plan.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <utility>

#include "common/files.h"
#include "planner/torch_trace.h"

namespace kfleet::planner {

Result<PlannedModel> PlanGraph(Graph graph, const DeviceModel &device, const PlanOptions &options) {
  PlannedModel planned;
  planned.graph = std::move(graph);
  KF_ASSIGN_OR_RETURN(planned.groups, PartitionGraph(planned.graph));
  KF_ASSIGN_OR_RETURN(planned.plan, RankKernelJobs(planned.graph, planned.groups, device, options));
  return planned;
}

Result<PlannedModel> PlanOnnxFile(const std::string &path, const ImportOptions &import,
                                  const DeviceModel &device, const PlanOptions &options) {
  KF_ASSIGN_OR_RETURN(Graph graph, ImportOnnxFile(path, import));
  Result<PlannedModel> planned = PlanGraph(std::move(graph), device, options);
  if (!planned.ok()) return planned.status().WithContext(path);
  return planned;
}

Result<std::map<std::string, double>> LoadNodeProfile(const std::string &path, const Graph &graph) {
  KF_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument(path + ": not valid JSON");
  if (doc.is_object() && doc.contains("traceEvents")) {
    return MeasuredTimesFromParsedTorchTrace(doc, path, graph);
  }
  if (!doc.is_object() || !doc.contains("node_us") || !doc["node_us"].is_object()) {
    return InvalidArgument(path +
                           ": expected a torch profiler trace ({\"traceEvents\": [...]}) or an "
                           "object with \"node_us\": {node name: microseconds}");
  }
  std::map<std::string, double> seconds;
  for (const auto &[name, us] : doc["node_us"].items()) {
    if (!us.is_number() || us.get<double>() < 0) {
      return InvalidArgument(
          fmt::format("{}: node_us.{} must be a non-negative number of microseconds", path, name));
    }
    seconds[name] = us.get<double>() * 1e-6;
  }
  return seconds;
}

}  // namespace kfleet::planner
