// Rank: identical kernel specs become one kernel job with a count; each job's share of model time,
// expected speedup (bounded by its speed-of-light floor) and expected saving, per DESIGN.md's
// Amdahl ranking; what-if end-to-end speedups for the top jobs.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "planner/cost_model.h"
#include "planner/graph.h"
#include "planner/kernel_spec.h"
#include "planner/partition.h"

namespace kfleet::planner {

enum class TimeSource { kRoofline, kMeasured };
std::string_view TimeSourceName(TimeSource source);

struct KernelJobPlan {
  KernelSpec spec;
  int count = 0;                         // occurrences in the model
  std::vector<std::string> anchors;      // anchor node name of each occurrence
  std::vector<std::vector<int>> groups;  // node indices of each occurrence
  bool opaque = false;                   // reported, not optimized
  double baseline_s = 0;                 // one occurrence, as the baseline runs it
  double sol_s = 0;                      // one occurrence, speed-of-light floor on the target
  double share = 0;                      // p_i = count * baseline_s / model_s
  double expected_speedup = 1;           // s_i, at most baseline_s / sol_s
  double expected_saving_s = 0;          // model_s * p_i * (1 - 1/s_i)
  TimeSource source = TimeSource::kRoofline;
};

struct WhatIf {
  int top = 0;         // the best `top` jobs optimized (0 means all)
  double speedup = 1;  // 1 / (1 - sum p_i (1 - 1/s_i))
};

struct PlanOptions {
  // Measured baseline seconds per node name (from a profile); nodes without one use the roofline.
  std::map<std::string, double> measured_node_s;
  // The share of speed-of-light a good generated kernel reaches; s_i = baseline / (sol / this).
  double reachable_sol_fraction = 0.8;
};

struct ModelPlan {
  std::string device_id;
  DType dtype = DType::kF32;
  double model_s = 0;  // T: sum of all baseline times
  double model_flops = 0;
  double model_bytes = 0;                     // unfused traffic
  TimeSource source = TimeSource::kRoofline;  // kMeasured only when every timed node was measured
  int64_t measured_nodes = 0;
  int64_t free_nodes = 0;           // views and metadata ops: no kernel, no time
  std::vector<KernelJobPlan> jobs;  // optimizable jobs, best expected saving first
  std::vector<KernelJobPlan> opaque_jobs;
  std::vector<WhatIf> what_if;  // top 1, 3, 5, 10 and all
};

Result<ModelPlan> RankKernelJobs(const Graph& graph, const std::vector<FusionGroup>& groups,
                                 const DeviceModel& device, const PlanOptions& options);

}  // namespace kfleet::planner
