#include "planner/rank.h"

#include <algorithm>
#include <map>
#include <utility>

namespace kfleet::planner {

std::string_view TimeSourceName(TimeSource source) {
  return source == TimeSource::kMeasured ? "measured" : "roofline";
}

namespace {

struct GroupTime {
  double seconds = 0;
  bool all_measured = true;
  int64_t measured_nodes = 0;
};

// Baseline time of one group: measured per-node times where the profile has
// them, the roofline baseline estimate for the rest.
GroupTime BaselineOfGroup(const Graph &graph, const FusionGroup &group, const DeviceModel &device,
                          const PlanOptions &options) {
  GroupTime t;
  for (int n : group.nodes) {
    if (NodeCost(graph, n).free) continue;
    auto it = options.measured_node_s.find(graph.nodes[n].name);
    if (it != options.measured_node_s.end()) {
      t.seconds += it->second;
      ++t.measured_nodes;
    } else {
      t.seconds += BaselineSeconds(device, graph, {n});
      t.all_measured = false;
    }
  }
  return t;
}

// Where the Amdahl terms come from: s_i is what a kernel at
// `reachable_sol_fraction` of its speed-of-light time (plus one launch) would
// give, and never below 1 or above baseline / floor.
double ExpectedSpeedup(double baseline_s, double sol_s, const DeviceModel &device,
                       double reachable_sol_fraction) {
  if (baseline_s <= 0) return 1;
  double reachable_s = sol_s / reachable_sol_fraction + device.launch_overhead_s;
  if (reachable_s <= 0) return 1;
  double s = baseline_s / reachable_s;
  if (sol_s > 0) s = std::min(s, baseline_s / sol_s);
  return std::max(1.0, s);
}

double WhatIfSpeedup(const std::vector<KernelJobPlan> &jobs, size_t top) {
  double saved_fraction = 0;
  for (size_t i = 0; i < std::min(top, jobs.size()); ++i) {
    saved_fraction += jobs[i].share * (1 - 1 / jobs[i].expected_speedup);
  }
  return saved_fraction >= 1 ? 0 : 1 / (1 - saved_fraction);
}

}  // namespace

Result<ModelPlan> RankKernelJobs(const Graph &graph, const std::vector<FusionGroup> &groups,
                                 const DeviceModel &device, const PlanOptions &options) {
  if (options.reachable_sol_fraction <= 0 || options.reachable_sol_fraction > 1) {
    return InvalidArgument("reachable speed-of-light fraction must be in (0, 1]");
  }
  ModelPlan plan;
  plan.device_id = device.id;

  std::vector<KernelJobPlan> all;
  std::map<std::string, size_t> job_by_hash;
  // Summed over occurrences; divided by the count at the end.
  std::vector<double> baseline_sum;
  bool every_group_measured = true;

  for (const FusionGroup &group : groups) {
    for (int n : group.nodes) {
      OpCost c = NodeCost(graph, n);
      plan.model_flops += c.flops;
      plan.model_bytes += c.bytes;
      plan.free_nodes += c.free ? 1 : 0;
    }
    if (group.free) continue;
    GroupTime time = BaselineOfGroup(graph, group, device, options);
    plan.measured_nodes += time.measured_nodes;
    every_group_measured = every_group_measured && time.all_measured;
    plan.model_s += time.seconds;

    KF_ASSIGN_OR_RETURN(KernelSpec spec, BuildKernelSpec(graph, group));
    std::string anchor_name =
        group.anchor >= 0 ? graph.nodes[group.anchor].name : graph.nodes[group.nodes[0]].name;
    auto [it, inserted] = job_by_hash.emplace(spec.hash, all.size());
    if (inserted) {
      OpCost cost = GroupCost(graph, group.nodes);
      KernelJobPlan job;
      spec.flops = cost.flops;
      spec.bytes = cost.bytes;
      job.spec = std::move(spec);
      job.opaque = group.opaque;
      job.sol_s = SpeedOfLightSeconds(device, cost);
      job.source = time.all_measured ? TimeSource::kMeasured : TimeSource::kRoofline;
      all.push_back(std::move(job));
      baseline_sum.push_back(0);
    }
    KernelJobPlan &job = all[it->second];
    ++job.count;
    job.anchors.push_back(anchor_name);
    job.groups.push_back(group.nodes);
    if (!time.all_measured) job.source = TimeSource::kRoofline;
    baseline_sum[it->second] += time.seconds;
  }
  plan.source = every_group_measured && plan.measured_nodes > 0 ? TimeSource::kMeasured
                                                                : TimeSource::kRoofline;

  for (size_t i = 0; i < all.size(); ++i) {
    KernelJobPlan &job = all[i];
    job.baseline_s = baseline_sum[i] / job.count;
    job.share = plan.model_s > 0 ? job.count * job.baseline_s / plan.model_s : 0;
    job.expected_speedup = job.opaque ? 1
                                      : ExpectedSpeedup(job.baseline_s, job.sol_s, device,
                                                        options.reachable_sol_fraction);
    job.expected_saving_s = plan.model_s * job.share * (1 - 1 / job.expected_speedup);
    (job.opaque ? plan.opaque_jobs : plan.jobs).push_back(std::move(job));
  }
  auto by_saving = [](const KernelJobPlan &a, const KernelJobPlan &b) {
    if (a.expected_saving_s != b.expected_saving_s) {
      return a.expected_saving_s > b.expected_saving_s;
    }
    return a.spec.name < b.spec.name;
  };
  std::stable_sort(plan.jobs.begin(), plan.jobs.end(), by_saving);
  std::stable_sort(plan.opaque_jobs.begin(), plan.opaque_jobs.end(), by_saving);

  for (int top : {1, 3, 5, 10}) {
    if (static_cast<size_t>(top) >= plan.jobs.size()) break;
    plan.what_if.push_back({top, WhatIfSpeedup(plan.jobs, static_cast<size_t>(top))});
  }
  plan.what_if.push_back({0, WhatIfSpeedup(plan.jobs, plan.jobs.size())});
  return plan;
}

}  // namespace kfleet::planner
