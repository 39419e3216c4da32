// `kfleet plan MODEL`: import, partition and rank a model on a target, with no
// daemon running.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "common/files.h"
#include "planner/cost_model.h"
#include "planner/cpu_calibration.h"
#include "planner/plan.h"

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
};

Result<std::map<std::string, int64_t>> ParseDims(const std::vector<std::string> &dims) {
  std::map<std::string, int64_t> bound;
  for (const std::string &d : dims) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == d.size()) {
      return InvalidArgument(fmt::format("--dim '{}': expected NAME=VALUE, e.g. batch=8", d));
    }
    std::string name = d.substr(0, eq);
    std::string text = d.substr(eq + 1);
    char *end = nullptr;
    long long value = std::strtoll(text.c_str(), &end, 10);
    if (*end != '\0' || value <= 0) {
      return InvalidArgument(
          fmt::format("--dim {}: '{}' is not a positive whole number", name, text));
    }
    bound[name] = value;
  }
  return bound;
}

// The target device: the built-in catalog, overridden by --devices, and for
// "cpu" this machine's calibrated rates (measured once, then cached).
Result<planner::DeviceModel> ResolveTarget(const PlanFlags &flags) {
  planner::DeviceCatalog catalog = planner::DeviceCatalog::Builtin();
  if (!flags.devices.empty()) {
    KF_ASSIGN_OR_RETURN(std::string text, ReadFile(flags.devices));
    KF_ASSIGN_OR_RETURN(planner::DeviceCatalog extra,
                        planner::DeviceCatalog::Parse(text, flags.devices));
    for (const std::string &id : extra.Ids()) {
      KF_ASSIGN_OR_RETURN(planner::DeviceModel device, extra.Find(id));
      catalog.Put(std::move(device));
    }
  }
  KF_ASSIGN_OR_RETURN(planner::DeviceModel device, catalog.Find(flags.target));
  if (flags.target == "cpu" && flags.devices.empty()) {
    KF_ASSIGN_OR_RETURN(planner::CpuCalibration cal,
                        planner::LoadOrCalibrateCpu(planner::DefaultCalibrationCachePath(),
                                                    /*force=*/false));
    device = planner::CpuDeviceFromCalibration(device, cal);
  }
  return device;
}

// "812 ns", "41.2 us", "3.07 ms", "1.25 s".
std::string FormatSeconds(double s) {
  if (s < 1e-6) return fmt::format("{:.0f} ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.2f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

// "32.4 GFLOP", "1.2 TFLOP", "512 kFLOP".
std::string FormatFlops(double flops) {
  if (flops >= 1e12) return fmt::format("{:.2f} TFLOP", flops / 1e12);
  if (flops >= 1e9) return fmt::format("{:.2f} GFLOP", flops / 1e9);
  if (flops >= 1e6) return fmt::format("{:.1f} MFLOP", flops / 1e6);
  if (flops >= 1e3) return fmt::format("{:.1f} kFLOP", flops / 1e3);
  return fmt::format("{:.0f} FLOP", flops);
}

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
                        const planner::DeviceModel &device) {
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
               const planner::DeviceModel &device) {
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

// Writes each job's standalone ONNX subgraph as DIR/NN-<family>.onnx.
Status EmitSpecs(const std::string &dir, const planner::ModelPlan &plan) {
  KF_RETURN_IF_ERROR(MakeDirs(dir));
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    std::string family = plan.jobs[i].spec.family;
    std::replace(family.begin(), family.end(), '+', '_');
    KF_RETURN_IF_ERROR(WriteFileAtomic(fmt::format("{}/{:02}-{}.onnx", dir, i + 1, family),
                                       plan.jobs[i].spec.onnx_model));
  }
  return Status::Ok();
}

void RunPlan(const PlanFlags &flags) {
  planner::ImportOptions import;
  Result<std::map<std::string, int64_t>> dims = ParseDims(flags.dims);
  ExitOnError(dims.status());
  import.dims = *dims;
  if (!flags.dtype.empty()) {
    Result<planner::DType> dtype = planner::ParseDType(flags.dtype);
    ExitOnError(dtype.status().WithContext("--dtype"));
    if (!planner::IsFloat(*dtype)) {
      ExitOnError(InvalidArgument("--dtype must be a floating type: fp32, fp16 or bf16"));
    }
    import.compute_dtype = *dtype;
  }
  // A torch trace profile is matched against the graph's nodes, so the model is
  // imported first.
  Result<planner::Graph> graph = planner::ImportOnnxFile(flags.model, import);
  ExitOnError(graph.status());
  planner::PlanOptions options;
  if (!flags.profile.empty()) {
    Result<std::map<std::string, double>> profile = planner::LoadNodeProfile(flags.profile, *graph);
    ExitOnError(profile.status());
    options.measured_node_s = *profile;
  }
  Result<planner::DeviceModel> device = ResolveTarget(flags);
  ExitOnError(device.status().WithContext("--target"));
  Result<planner::PlannedModel> planned = planner::PlanGraph(std::move(*graph), *device, options);
  ExitOnError(planned.status().WithContext(flags.model));
  if (!flags.emit_specs.empty()) {
    ExitOnError(EmitSpecs(flags.emit_specs, planned->plan).WithContext("--emit-specs"));
  }
  if (flags.json) {
    std::cout << PlanJson(flags, *planned, *device).dump(2) << "\n";
  } else {
    PrintPlan(flags, *planned, *device);
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
                   "write each kernel job's standalone ONNX subgraph into this directory");
  plan->add_flag("--json", flags->json, "print the whole plan as JSON");
  plan->callback([flags] { RunPlan(*flags); });
}

}  // namespace kfleet::cli
