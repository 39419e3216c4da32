// `kfleet bench baseline SPEC...`: the baseline executor's time on kernel specs, measured the way
// the harness measures it (caches flushed before every call, CUDA events on a GPU, inputs rotated
// over three sets, median). This is the number every reported speedup divides; comparing it with
// an eager framework on the same shapes (bench/torch_baseline_ops.py) keeps those speedups honest.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "common/files.h"
#include "eval/device.h"
#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "runtime/feeds.h"

namespace kfleet::cli {
namespace {

struct BaselineBenchFlags {
  std::vector<std::string> specs;
  std::string backend = "cpu";
  int device = 0;
  double seconds = 1.0;
  int max_reps = 500;
  bool json = false;
};

struct Measured {
  std::string name;
  std::string ops;
  double median_us = 0;
  double min_us = 0;
  int reps = 0;
  double flops = 0;
  double bytes = 0;
};

Result<planner::Graph> LoadSpec(const std::string& path) {
  if (std::filesystem::path(path).extension() == ".onnxtxt") {
    KF_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    return planner::ImportOnnxText(text, {});
  }
  return planner::ImportOnnxFile(path, {});
}

Result<Measured> Measure(const std::string& path, eval::EvalDevice& device,
                         const BaselineBenchFlags& flags) {
  KF_ASSIGN_OR_RETURN(const planner::Graph spec, LoadSpec(path));
  Measured m;
  m.name = std::filesystem::path(path).stem().string();
  std::vector<std::string> ops;
  for (const planner::Node& node : spec.nodes) ops.push_back(node.op_type);
  m.ops = fmt::format("{}", fmt::join(ops, "+"));
  std::vector<int> nodes(spec.nodes.size());
  std::iota(nodes.begin(), nodes.end(), 0);
  const planner::OpCost cost = planner::GroupCost(spec, nodes);
  m.flops = cost.flops;
  m.bytes = cost.bytes;
  std::vector<runtime::TensorMap> feed_sets;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    runtime::FeedOptions feed;
    feed.seed = seed;
    KF_ASSIGN_OR_RETURN(runtime::TensorMap feeds, runtime::MakeRandomFeeds(spec, feed));
    feed_sets.push_back(std::move(feeds));
  }
  KF_ASSIGN_OR_RETURN(std::unique_ptr<eval::TimedSubject> baseline,
                      device.TimedBaseline(spec, feed_sets));
  std::vector<double> samples;
  const auto start = std::chrono::steady_clock::now();
  for (int rep = -3; rep < flags.max_reps; ++rep) {
    int status = 0;
    KF_ASSIGN_OR_RETURN(const double us, baseline->TimeOnce(&status));
    if (status != 0) return Internal("the baseline failed");
    if (rep >= 0) samples.push_back(us);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep >= 10 && elapsed > flags.seconds) break;
  }
  std::sort(samples.begin(), samples.end());
  m.reps = static_cast<int>(samples.size());
  m.median_us = samples[samples.size() / 2];
  m.min_us = samples.front();
  return m;
}

void RunBaselineBench(const BaselineBenchFlags& flags) {
  Result<std::unique_ptr<eval::EvalDevice>> device =
      eval::MakeEvalDevice(flags.backend, flags.device);
  ExitOnError(device.status().WithContext("--backend " + flags.backend));
  std::vector<Measured> results;
  for (const std::string& path : flags.specs) {
    if (!flags.json) std::cerr << "timing the " << flags.backend << " baseline on " << path << "\n";
    Result<Measured> m = Measure(path, **device, flags);
    ExitOnError(m.status().WithContext(path));
    results.push_back(std::move(*m));
  }
  if (flags.json) {
    nlohmann::json out = {{"device", (*device)->Describe()}, {"specs", nlohmann::json::array()}};
    for (const Measured& m : results) {
      out["specs"].push_back({{"name", m.name},
                              {"ops", m.ops},
                              {"median_us", m.median_us},
                              {"min_us", m.min_us},
                              {"reps", m.reps},
                              {"flops", m.flops},
                              {"bytes", m.bytes}});
    }
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::vector<std::vector<std::string>> rows = {
      {"spec", "ops", "median us", "min us", "reps", "GB/s", "TFLOP/s"}};
  for (const Measured& m : results) {
    rows.push_back({m.name, m.ops.size() > 40 ? m.ops.substr(0, 37) + "..." : m.ops,
                    fmt::format("{:.2f}", m.median_us), fmt::format("{:.2f}", m.min_us),
                    std::to_string(m.reps), fmt::format("{:.0f}", m.bytes / m.median_us / 1e3),
                    fmt::format("{:.1f}", m.flops / m.median_us / 1e6)});
  }
  std::cout << (*device)->Describe() << "\n" << FormatTable(rows);
}

}  // namespace

void RegisterBaselineBench(CLI::App& bench) {
  auto flags = std::make_shared<BaselineBenchFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "baseline",
      "Time the baseline executor on kernel specs as the harness does (cache flush, CUDA events "
      "on a GPU, median): the denominator of every speedup");
  cmd->add_option("specs", flags->specs, "kernel specs: standalone ONNX or ONNX text (.onnxtxt)")
      ->required();
  cmd->add_option("--backend", flags->backend, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--device", flags->device, "GPU index for --backend cuda");
  cmd->add_option("--seconds", flags->seconds, "time spent per spec")->capture_default_str();
  cmd->add_option("--max-reps", flags->max_reps, "most timed runs per spec")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  cmd->add_flag("--json", flags->json, "print JSON instead of a table");
  cmd->callback([flags] { RunBaselineBench(*flags); });
}

}  // namespace kfleet::cli
