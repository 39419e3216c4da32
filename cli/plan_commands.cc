// `kfleet plan MODEL`: import, partition and rank a model on a target, with no
// daemon running.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/model_flags.h"
#include "cli/output.h"
#include "common/files.h"
#include "planner/cost_model.h"
#include "planner/plan.h"
#include "runtime/profile_store.h"

namespace kfleet::cli {
namespace {

struct PlanFlags {
  std::string model;
  std::string target = "cpu";
  std::string dtype;
  std::vector<std::string> dims;
  std::string profile;
  std::string devices;
  std::string emit_specs;
  int64_t top = 20;
  bool json = false;
  bool roofline = false;
};

// Where the plan's measured times came from: --profile, or a profile `kfleet profile` stored.
struct ProfileUsed {
  std::string path;
  std::string measured_at;  // set for a stored profile
};

nlohmann::json TensorsJson(const std::vector<planner::TensorSpec> &tensors) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto &t : tensors) {
    out.push_back({{"name", t.name}, {"dtype", planner::DTypeName(t.dtype)}, {"shape", t.shape}});
  }
  return out;
}

nlohmann::json GraphValuesJson(const planner::Graph &graph, const std::vector<int> &ids) {
  nlohmann::json out = nlohmann::json::array();
  for (int id : ids) {
    const planner::Value &v = graph.values[id];
    out.push_back({{"name", v.name},
                   {"kind", planner::ValueKindName(v.kind)},
                   {"dtype", planner::DTypeName(v.dtype)},
                   {"shape", v.has_shape ? nlohmann::json(v.shape) : nlohmann::json()}});
  }
  return out;
}

nlohmann::json JobJson(const planner::KernelJobPlan &job, int rank) {
  nlohmann::json j = {{"name", job.spec.name},
                      {"family", job.spec.family},
                      {"hash", job.spec.hash},
                      {"count", job.count},
                      {"ops", job.spec.op_types},
                      {"inputs", TensorsJson(job.spec.inputs)},
                      {"outputs", TensorsJson(job.spec.outputs)},
                      {"flops", job.spec.flops},
                      {"bytes", job.spec.bytes},
                      {"baseline_us", job.baseline_s * 1e6},
                      {"floor_us", job.sol_s * 1e6},
                      {"share", job.share},
                      {"expected_speedup", job.expected_speedup},
                      {"expected_saving_us", job.expected_saving_s * 1e6},
                      {"time_source", planner::TimeSourceName(job.source)},
                      {"anchors", job.anchors}};
  if (rank > 0) j["rank"] = rank;
  return j;
}

std::string WhatIfLabel(const planner::WhatIf &w) {
  return w.top == 0 ? "all" : fmt::format("top {}", w.top);
}

nlohmann::json PlanJson(const PlanFlags &flags, const planner::PlannedModel &planned,
                        const planner::DeviceModel &device,
                        const std::optional<ProfileUsed> &profile) {
  const planner::Graph &g = planned.graph;
  const planner::ModelPlan &plan = planned.plan;
  nlohmann::json jobs = nlohmann::json::array();
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    jobs.push_back(JobJson(plan.jobs[i], static_cast<int>(i + 1)));
  }
  nlohmann::json opaque = nlohmann::json::array();
  for (const auto &job : plan.opaque_jobs) opaque.push_back(JobJson(job, 0));
  nlohmann::json what_if = nlohmann::json::array();
  for (const auto &w : plan.what_if) {
    what_if.push_back({{"jobs", WhatIfLabel(w)}, {"speedup", w.speedup}});
  }
  return {{"model",
           {{"path", flags.model},
            {"graph", g.name},
            {"producer", g.producer},
            {"opset", g.opset},
            {"ir_version", g.ir_version},
            {"nodes", g.nodes.size()},
            {"folded_nodes", g.folded_nodes},
            {"inputs", GraphValuesJson(g, g.inputs)},
            {"outputs", GraphValuesJson(g, g.outputs)},
            {"weight_elements", g.WeightElements()},
            {"weight_bytes", g.WeightBytes()}}},
          {"target",
           {{"id", device.id},
            {"name", device.name},
            {"backend", device.backend},
            {"source", device.source}}},
          {"dtype", flags.dtype.empty() ? "as exported" : flags.dtype},
          {"time_source", planner::TimeSourceName(plan.source)},
          {"profile", profile ? nlohmann::json(profile->path) : nlohmann::json()},
          {"profile_measured_at", profile && !profile->measured_at.empty()
                                      ? nlohmann::json(profile->measured_at)
                                      : nlohmann::json()},
          {"model_time_us", plan.model_s * 1e6},
          {"flops", plan.model_flops},
          {"unfused_bytes", plan.model_bytes},
          {"groups", planned.groups.size()},
          {"free_nodes", plan.free_nodes},
          {"jobs", jobs},
          {"opaque_jobs", opaque},
          {"what_if", what_if}};
}

void PrintPlan(const PlanFlags &flags, const planner::PlannedModel &planned,
               const planner::DeviceModel &device, const std::optional<ProfileUsed> &profile) {
  const planner::Graph &g = planned.graph;
  const planner::ModelPlan &plan = planned.plan;
  int64_t runtime_inputs = 0;
  for (int id : g.inputs) runtime_inputs += g.values[id].kind == planner::ValueKind::kInput;
  std::cout << fmt::format("model   {} ({}, opset {}, IR {})\n", flags.model,
                           g.producer.empty() ? "unknown producer" : g.producer, g.opset,
                           g.ir_version);
  std::cout << fmt::format(
      "graph   {} nodes ({} shape ops folded), {} "
      "input{}, {:.1f} M parameters ({})\n",
      g.nodes.size(), g.folded_nodes, runtime_inputs, runtime_inputs == 1 ? "" : "s",
      g.WeightElements() / 1e6, FormatBytes(static_cast<uint64_t>(g.WeightBytes())));
  std::cout << fmt::format("target  {} ({}; {}), dtype {}\n", device.id, device.name, device.source,
                           flags.dtype.empty() ? "as exported" : flags.dtype);
  std::cout << fmt::format("work    {}, {} unfused traffic\n", FormatFlops(plan.model_flops),
                           FormatBytes(static_cast<uint64_t>(plan.model_bytes)));
  std::cout << fmt::format(
      "time    {} per run, {}\n", FormatSeconds(plan.model_s),
      plan.source == planner::TimeSource::kMeasured
          ? "measured"
          : (plan.measured_nodes > 0 ? "partly measured, the rest roofline estimates"
                                     : "roofline estimate (no profile given)"));
  if (profile && !profile->measured_at.empty()) {
    std::cout << fmt::format(
        "times   measured by kfleet profile on {} ({}; --roofline ignores it)\n",
        profile->measured_at.substr(0, 10), profile->path);
  }
  std::cout << fmt::format(
      "jobs    {} kernel jobs from {} fusion groups ({} "
      "view node{} cost nothing), {} opaque\n\n",
      plan.jobs.size(), planned.groups.size(), plan.free_nodes, plan.free_nodes == 1 ? "" : "s",
      plan.opaque_jobs.size());

  std::vector<std::vector<std::string>> rows = {
      {"#", "kernel job", "count", "work", "baseline", "floor", "share", "speedup", "saving"}};
  size_t shown = std::min(plan.jobs.size(), static_cast<size_t>(std::max<int64_t>(flags.top, 0)));
  for (size_t i = 0; i < shown; ++i) {
    const auto &job = plan.jobs[i];
    rows.push_back({std::to_string(i + 1), job.spec.name, std::to_string(job.count),
                    FormatFlops(job.spec.flops), FormatSeconds(job.baseline_s),
                    FormatSeconds(job.sol_s), fmt::format("{:.1f}%", job.share * 100),
                    fmt::format("{:.2f}x", job.expected_speedup),
                    FormatSeconds(job.expected_saving_s)});
  }
  std::cout << FormatTable(rows);
  if (shown < plan.jobs.size()) {
    std::cout << fmt::format("... {} more jobs (--top N shows more, --json lists all)\n",
                             plan.jobs.size() - shown);
  }
  std::string what_if;
  for (const auto &w : plan.what_if) {
    what_if += fmt::format("{}{} {:.2f}x", what_if.empty() ? "" : ", ", WhatIfLabel(w), w.speedup);
  }
  std::cout << "\nwhat-if end-to-end speedup: " << what_if << "\n";
  for (const auto &job : plan.opaque_jobs) {
    std::cout << fmt::format("opaque (not optimized): {} x{} at {}, {} per run\n", job.spec.name,
                             job.count, job.anchors.front(), FormatSeconds(job.baseline_s));
  }
}

// Writes each job's standalone ONNX subgraph as DIR/NN-<family>.onnx and its metadata (the job
// as --json shows it, plus the target) as DIR/NN-<family>.json beside it.
Status EmitSpecs(const std::string &dir, const planner::ModelPlan &plan,
                 const planner::DeviceModel &device) {
  KF_RETURN_IF_ERROR(MakeDirs(dir));
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    std::string family = plan.jobs[i].spec.family;
    std::replace(family.begin(), family.end(), '+', '_');
    const std::string stem = fmt::format("{}/{:02}-{}", dir, i + 1, family);
    KF_RETURN_IF_ERROR(WriteFileAtomic(stem + ".onnx", plan.jobs[i].spec.onnx_model));
    nlohmann::json meta = JobJson(plan.jobs[i], static_cast<int>(i + 1));
    meta["target"] = device.id;
    meta["spec"] = std::filesystem::path(stem + ".onnx").filename().string();
    KF_RETURN_IF_ERROR(WriteFileAtomic(stem + ".json", meta.dump(2) + "\n"));
  }
  return Status::Ok();
}

// The profile `kfleet profile` stored for this model, dtype and dims on this CPU, if any. One it
// cannot read is reported and skipped: the roofline still gives a plan.
std::optional<ProfileUsed> FindStoredCpuProfile(const PlanFlags &flags,
                                                const planner::ImportOptions &import,
                                                const planner::DeviceModel &device,
                                                const planner::Graph &graph,
                                                planner::PlanOptions *options) {
  Result<std::string> sha = runtime::ModelSha256(flags.model);
  if (!sha.ok()) return std::nullopt;
  runtime::ProfileKey key;
  key.model_sha256 = *sha;
  key.target = "cpu";
  key.dtype = import.compute_dtype ? std::string(planner::DTypeName(*import.compute_dtype)) : "";
  key.dims = import.dims;
  Result<std::optional<runtime::StoredProfile>> stored =
      runtime::FindStoredProfile(runtime::DefaultProfileDir(), key);
  if (!stored.ok()) {
    std::cerr << "kfleet: ignoring the stored profile: " << stored.status().message() << "\n";
    return std::nullopt;
  }
  if (!stored->has_value()) return std::nullopt;
  const runtime::StoredProfile &profile = **stored;
  // Measured on another CPU (a shared home directory): its times do not describe this one.
  if (profile.cpu_model != device.name) return std::nullopt;
  Result<std::map<std::string, double>> seconds = planner::LoadNodeProfile(profile.path, graph);
  if (!seconds.ok()) {
    std::cerr << "kfleet: ignoring the stored profile: " << seconds.status().message() << "\n";
    return std::nullopt;
  }
  options->measured_node_s = *seconds;
  return ProfileUsed{profile.path, profile.measured_at};
}

void RunPlan(const PlanFlags &flags) {
  planner::ImportOptions import;
  Result<std::map<std::string, int64_t>> dims = ParseDims(flags.dims);
  ExitOnError(dims.status());
  import.dims = *dims;
  Result<std::optional<planner::DType>> dtype = ParseComputeDtype(flags.dtype);
  ExitOnError(dtype.status());
  import.compute_dtype = *dtype;
  if (flags.roofline && !flags.profile.empty()) {
    ExitOnError(InvalidArgument("--roofline and --profile contradict each other; give one"));
  }
  // A torch trace profile is matched against the graph's nodes, so the model is
  // imported first.
  Result<planner::Graph> graph = planner::ImportOnnxFile(flags.model, import);
  ExitOnError(graph.status());
  Result<planner::DeviceModel> device = ResolveTarget(flags.target, flags.devices);
  ExitOnError(device.status().WithContext("--target"));
  planner::PlanOptions options;
  std::optional<ProfileUsed> profile;
  if (!flags.profile.empty()) {
    Result<std::map<std::string, double>> measured =
        planner::LoadNodeProfile(flags.profile, *graph);
    ExitOnError(measured.status());
    options.measured_node_s = *measured;
    profile = ProfileUsed{flags.profile, ""};
  } else if (flags.target == "cpu" && flags.devices.empty() && !flags.roofline) {
    profile = FindStoredCpuProfile(flags, import, *device, *graph, &options);
  }
  Result<planner::PlannedModel> planned = planner::PlanGraph(std::move(*graph), *device, options);
  ExitOnError(planned.status().WithContext(flags.model));
  if (!flags.emit_specs.empty()) {
    ExitOnError(EmitSpecs(flags.emit_specs, planned->plan, *device).WithContext("--emit-specs"));
  }
  if (flags.json) {
    std::cout << PlanJson(flags, *planned, *device, profile).dump(2) << "\n";
  } else {
    PrintPlan(flags, *planned, *device, profile);
  }
}

}  // namespace

void RegisterPlanCommands(CLI::App &app) {
  auto flags = std::make_shared<PlanFlags>();
  CLI::App *plan = app.add_subcommand("plan",
                                      "Import a model, partition it into kernel "
                                      "jobs and rank them by expected saving");
  plan->add_option("model", flags->model, "ONNX model file")->required();
  plan->add_option("--target", flags->target,
                   "device to plan for: h100, h200, a100, l40s, mi300x, "
                   "mi250x, cpu (this "
                   "machine, calibrated once)")
      ->capture_default_str();
  plan->add_option("--dtype", flags->dtype,
                   "precision the model runs in: fp32, fp16 or bf16 (default: as exported)");
  plan->add_option("--dim", flags->dims, "bind a symbolic dimension, NAME=VALUE (repeatable)");
  plan->add_option("--profile", flags->profile,
                   "measured baseline per node: JSON {\"node_us\": {NODE: microseconds}}, "
                   "or a "
                   "torch.profiler chrome trace of the same model (record_shapes=True)");
  plan->add_option("--devices", flags->devices, "extra device catalog (YAML like devices.yaml)");
  plan->add_option("--top", flags->top, "rows in the table")->capture_default_str();
  plan->add_option("--emit-specs", flags->emit_specs,
                   "write each kernel job's standalone ONNX subgraph (NN-family.onnx) and its "
                   "metadata (NN-family.json) into this directory");
  plan->add_flag("--roofline", flags->roofline,
                 "with --target cpu: use roofline estimates even when `kfleet profile` stored "
                 "measured times for this model");
  plan->add_flag("--json", flags->json, "print the whole plan as JSON");
  plan->callback([flags] { RunPlan(*flags); });
}

}  // namespace kfleet::cli
