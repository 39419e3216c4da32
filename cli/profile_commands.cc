// `kfleet profile MODEL --target cpu`: runs the model on the CPU baseline executor with random
// inputs and weights, times every node, stores the per-node medians for `kfleet plan` and prints
// where the time goes next to the cost model's speed-of-light floor.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/model_flags.h"
#include "cli/output.h"
#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "runtime/baseline.h"
#include "runtime/feeds.h"
#include "runtime/profile_store.h"

namespace kfleet::cli {
namespace {

struct ProfileFlags {
  std::string model;
  std::string target = "cpu";
  std::string dtype;
  std::vector<std::string> dims;
  int reps = 5;
  int warmup = 1;
  int threads = 0;
  int64_t top = 15;
  bool json = false;
  bool no_store = false;
};

// Random weights around the scale of trained ones: activations stay in a normal range through
// dozens of layers (no overflow to Inf, no slow denormals), so the timings are representative.
constexpr double kFeedScale = 0.05;

// A run longer than this prints progress even when stderr is not a terminal.
constexpr double kProgressAfterS = 1.0;

// A failure after the flags parsed (the model, the run): one line, exit code 1.
void ExitOnFailure(const Status& status) {
  if (status.ok()) return;
  std::string message = status.message();
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::cerr << "kfleet: " << message << "\n";
  throw CLI::RuntimeError(1);
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

std::string IsoUtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

struct NodeRow {
  int index = 0;
  double median_s = 0;
  double floor_s = 0;
};

struct OpTypeRow {
  std::string op;
  int nodes = 0;
  double measured_s = 0;
  double floor_s = 0;
};

struct Profile {
  std::vector<NodeRow> nodes;       // graph order
  double model_s = 0;               // sum of node medians
  double end_to_end_s = 0;          // median wall time of a whole run
  std::vector<OpTypeRow> op_types;  // most measured time first
  std::optional<std::string> stored_path;
  std::string measured_at;
  int threads = 0;
};

// Runs warmup + reps times; prints "run 3/5" on stderr while it goes.
Result<Profile> Measure(const ProfileFlags& flags, const planner::Graph& graph,
                        const planner::DeviceModel& device) {
  runtime::FeedOptions feed_options;
  feed_options.scale = kFeedScale;
  feed_options.include_weights = true;
  KF_ASSIGN_OR_RETURN(runtime::TensorMap feeds, runtime::MakeRandomFeeds(graph, feed_options));
  runtime::BaselineOptions options;
  options.threads = flags.threads;
  KF_ASSIGN_OR_RETURN(auto executor, runtime::BaselineExecutor::Create(graph, options));

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  const int total = flags.warmup + flags.reps;
  std::vector<std::vector<double>> per_node(graph.nodes.size());
  std::vector<double> end_to_end;
  runtime::TensorMap outputs;
  std::vector<double> node_seconds;
  bool progress = tty;
  for (int run = 0; run < total; ++run) {
    const bool warmup = run < flags.warmup;
    const auto start = std::chrono::steady_clock::now();
    KF_RETURN_IF_ERROR(executor->RunTimed(feeds, &outputs, &node_seconds));
    const double wall_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress = progress || wall_s >= kProgressAfterS;
    if (progress) {
      const std::string line =
          warmup ? fmt::format("warmup {}/{} ({})", run + 1, flags.warmup, FormatSeconds(wall_s))
                 : fmt::format("run {}/{} ({})", run + 1 - flags.warmup, flags.reps,
                               FormatSeconds(wall_s));
      std::cerr << (tty ? "\r" + line + "   " : line + "\n") << std::flush;
    }
    if (warmup) continue;
    end_to_end.push_back(wall_s);
    for (size_t i = 0; i < node_seconds.size(); ++i) per_node[i].push_back(node_seconds[i]);
  }
  if (tty && progress) std::cerr << "\n";

  Profile profile;
  profile.threads = flags.threads > 0
                        ? flags.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  profile.end_to_end_s = Median(end_to_end);
  profile.measured_at = IsoUtcNow();
  std::map<std::string, OpTypeRow> by_op;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    NodeRow row;
    row.index = static_cast<int>(i);
    row.median_s = Median(per_node[i]);
    const planner::OpCost cost = planner::NodeCost(graph, static_cast<int>(i));
    row.floor_s = cost.free ? 0 : planner::SpeedOfLightSeconds(device, cost);
    profile.model_s += row.median_s;
    OpTypeRow& op = by_op[graph.nodes[i].op_type];
    op.op = graph.nodes[i].op_type;
    ++op.nodes;
    op.measured_s += row.median_s;
    op.floor_s += row.floor_s;
    profile.nodes.push_back(row);
  }
  for (auto& [name, row] : by_op) profile.op_types.push_back(row);
  std::sort(profile.op_types.begin(), profile.op_types.end(),
            [](const OpTypeRow& a, const OpTypeRow& b) { return a.measured_s > b.measured_s; });
  return profile;
}

Result<std::string> Store(const ProfileFlags& flags, const planner::ImportOptions& import,
                          const planner::Graph& graph, const planner::DeviceModel& device,
                          const Profile& profile) {
  runtime::StoredProfile stored;
  KF_ASSIGN_OR_RETURN(stored.key.model_sha256, runtime::ModelSha256(flags.model));
  stored.key.target = "cpu";
  stored.key.dtype =
      import.compute_dtype ? std::string(planner::DTypeName(*import.compute_dtype)) : "";
  stored.key.dims = import.dims;
  stored.model = flags.model;
  for (const NodeRow& row : profile.nodes) {
    stored.node_us[graph.nodes[row.index].name] = row.median_s * 1e6;
  }
  stored.end_to_end_us = profile.end_to_end_s * 1e6;
  stored.cpu_model = device.name;
  stored.threads = profile.threads;
  stored.reps = flags.reps;
  stored.measured_at = profile.measured_at;
  return runtime::SaveProfile(runtime::DefaultProfileDir(), stored);
}

std::string OutputShape(const planner::Graph& graph, const planner::Node& node) {
  for (int id : node.outputs) {
    if (id >= 0) return planner::ShapeToString(graph.values[id].shape);
  }
  return "";
}

double Percent(double part, double whole) { return whole > 0 ? 100 * part / whole : 0; }

nlohmann::json ProfileJson(const ProfileFlags& flags, const planner::ImportOptions& import,
                           const planner::Graph& graph, const planner::DeviceModel& device,
                           const Profile& profile) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const NodeRow& row : profile.nodes) {
    const planner::Node& node = graph.nodes[row.index];
    nodes.push_back({{"name", node.name},
                     {"op", node.op_type},
                     {"shape", OutputShape(graph, node)},
                     {"us", row.median_s * 1e6},
                     {"floor_us", row.floor_s * 1e6},
                     {"share", profile.model_s > 0 ? row.median_s / profile.model_s : 0.0}});
  }
  nlohmann::json op_types = nlohmann::json::array();
  for (const OpTypeRow& row : profile.op_types) {
    op_types.push_back(
        {{"op", row.op},
         {"nodes", row.nodes},
         {"measured_us", row.measured_s * 1e6},
         {"floor_us", row.floor_s * 1e6},
         {"floor_fraction", row.measured_s > 0 ? row.floor_s / row.measured_s : 0.0}});
  }
  nlohmann::json dims = nlohmann::json::object();
  for (const auto& [name, value] : import.dims) dims[name] = value;
  return {
      {"model", {{"path", flags.model}, {"graph", graph.name}, {"nodes", graph.nodes.size()}}},
      {"target",
       {{"id", device.id},
        {"name", device.name},
        {"backend", device.backend},
        {"source", device.source}}},
      {"dtype", flags.dtype.empty() ? "as exported" : flags.dtype},
      {"dims", dims},
      {"threads", profile.threads},
      {"warmup", flags.warmup},
      {"reps", flags.reps},
      {"measured_at", profile.measured_at},
      {"model_time_us", profile.model_s * 1e6},
      {"end_to_end_us", profile.end_to_end_s * 1e6},
      {"profile", profile.stored_path ? nlohmann::json(*profile.stored_path) : nlohmann::json()},
      {"nodes", nodes},
      {"op_types", op_types}};
}

void PrintProfile(const ProfileFlags& flags, const planner::Graph& graph,
                  const planner::DeviceModel& device, const Profile& profile) {
  std::cout << fmt::format("model    {} ({} nodes, dtype {})\n", flags.model, graph.nodes.size(),
                           flags.dtype.empty() ? "as exported" : flags.dtype);
  std::cout << fmt::format("machine  {}, {} threads; floors from the {}\n", device.name,
                           profile.threads, device.source);
  std::cout << fmt::format("runs     {} timed after {} warmup\n", flags.reps, flags.warmup);
  std::cout << fmt::format("time     {} (sum of node medians), {} end to end (median)\n",
                           FormatSeconds(profile.model_s), FormatSeconds(profile.end_to_end_s));
  if (profile.stored_path) {
    std::cout << fmt::format("stored   {} (kfleet plan --target cpu uses it)\n",
                             *profile.stored_path);
  }

  std::vector<NodeRow> ranked = profile.nodes;
  std::sort(ranked.begin(), ranked.end(),
            [](const NodeRow& a, const NodeRow& b) { return a.median_s > b.median_s; });
  const size_t shown =
      std::min(ranked.size(), static_cast<size_t>(std::max<int64_t>(flags.top, 0)));
  std::vector<std::vector<std::string>> rows = {{"#", "node", "op", "shape", "time", "% of model"}};
  for (size_t i = 0; i < shown; ++i) {
    const planner::Node& node = graph.nodes[ranked[i].index];
    rows.push_back({std::to_string(i + 1), node.name, node.op_type, OutputShape(graph, node),
                    FormatSeconds(ranked[i].median_s),
                    fmt::format("{:.1f}%", Percent(ranked[i].median_s, profile.model_s))});
  }
  std::cout << fmt::format("\ntop {} nodes\n", shown) << FormatTable(rows);

  std::vector<std::vector<std::string>> ops = {
      {"op type", "nodes", "measured ms", "floor ms", "floor/measured"}};
  for (const OpTypeRow& row : profile.op_types) {
    ops.push_back(
        {row.op, std::to_string(row.nodes), fmt::format("{:.3f}", row.measured_s * 1e3),
         fmt::format("{:.3f}", row.floor_s * 1e3),
         row.measured_s > 0 ? fmt::format("{:.0f}%", Percent(row.floor_s, row.measured_s)) : "-"});
  }
  std::cout << "\nby op type (floor: speed of light at the calibrated rates)\n" << FormatTable(ops);
}

void RunProfile(const ProfileFlags& flags) {
  if (flags.target != "cpu") {
    ExitOnError(InvalidArgument(fmt::format(
        "--target {}: only the CPU baseline exists so far; the CUDA baseline comes with the "
        "NVIDIA backend",
        flags.target)));
  }
  if (flags.reps < 1 || flags.warmup < 0 || flags.threads < 0) {
    ExitOnError(InvalidArgument("--reps must be at least 1, --warmup and --threads at least 0"));
  }
  planner::ImportOptions import;
  Result<std::map<std::string, int64_t>> dims = ParseDims(flags.dims);
  ExitOnError(dims.status());
  import.dims = *dims;
  Result<std::optional<planner::DType>> dtype = ParseComputeDtype(flags.dtype);
  ExitOnError(dtype.status());
  import.compute_dtype = *dtype;

  Result<planner::Graph> graph = planner::ImportOnnxFile(flags.model, import);
  ExitOnFailure(graph.status());
  Result<planner::DeviceModel> device = ResolveTarget(flags.target, "");
  ExitOnFailure(device.status().WithContext("--target"));
  Result<Profile> profile = Measure(flags, *graph, *device);
  ExitOnFailure(profile.status().WithContext(flags.model));
  if (!flags.no_store) {
    Result<std::string> path = Store(flags, import, *graph, *device, *profile);
    ExitOnFailure(path.status().WithContext("storing the profile"));
    profile->stored_path = *path;
  }
  if (flags.json) {
    std::cout << ProfileJson(flags, import, *graph, *device, *profile).dump(2) << "\n";
  } else {
    PrintProfile(flags, *graph, *device, *profile);
  }
}

}  // namespace

void RegisterProfileCommands(CLI::App& app) {
  auto flags = std::make_shared<ProfileFlags>();
  CLI::App* profile = app.add_subcommand(
      "profile",
      "Run a model on the CPU baseline with random inputs, time every node, and store the "
      "profile for `kfleet plan --target cpu`");
  profile->add_option("model", flags->model, "ONNX model file")->required();
  profile->add_option("--target", flags->target, "device to run on: cpu (this machine)")
      ->capture_default_str();
  profile->add_option("--dtype", flags->dtype,
                      "precision the model runs in: fp32, fp16 or bf16 (default: as exported)");
  profile->add_option("--dim", flags->dims, "bind a symbolic dimension, NAME=VALUE (repeatable)");
  profile->add_option("--reps", flags->reps, "timed runs; each node's time is their median")
      ->capture_default_str();
  profile->add_option("--warmup", flags->warmup, "untimed runs first")->capture_default_str();
  profile->add_option("--threads", flags->threads, "OpenMP and OpenBLAS threads (0: every core)")
      ->capture_default_str();
  profile->add_option("--top", flags->top, "slowest nodes to list")->capture_default_str();
  profile->add_flag("--json", flags->json, "print everything as JSON, every node included");
  profile->add_flag("--no-store", flags->no_store,
                    "do not store the profile for `kfleet plan --target cpu`");
  profile->callback([flags] { RunProfile(*flags); });
}

}  // namespace kfleet::cli
