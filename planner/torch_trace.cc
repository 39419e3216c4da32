#include "planner/torch_trace.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

namespace kfleet::planner {
namespace {

using Json = nlohmann::json;

// The ONNX op types each aten op becomes in an export. The '/'-separated set is the op's class
// (and its name in messages): the trace's ops of one class are matched in order to the graph's
// nodes whose op type is in the set. Ops not listed have no ONNX counterpart we rely on.
struct AtenToOnnx {
  std::string_view aten;  // without "aten::"
  std::string_view onnx;
};

constexpr AtenToOnnx kAtenToOnnx[] = {
    {"conv1d", "Conv"},
    {"conv2d", "Conv"},
    {"conv3d", "Conv"},
    {"convolution", "Conv"},
    {"_convolution", "Conv"},
    {"conv_transpose1d", "ConvTranspose"},
    {"conv_transpose2d", "ConvTranspose"},
    {"batch_norm", "BatchNormalization"},
    {"layer_norm", "LayerNormalization"},
    {"relu", "Relu"},
    {"relu_", "Relu"},
    {"hardtanh", "Clip"},  // nn.ReLU6
    {"hardtanh_", "Clip"},
    {"sigmoid", "Sigmoid"},
    {"tanh", "Tanh"},
    {"gelu", "Gelu"},
    {"add", "Add"},
    {"add_", "Add"},
    {"sub", "Sub"},
    {"mul", "Mul"},
    {"mul_", "Mul"},
    {"div", "Div"},
    {"softmax", "Softmax"},
    {"_softmax", "Softmax"},
    {"max_pool2d", "MaxPool"},
    {"avg_pool2d", "AveragePool"},
    {"adaptive_avg_pool2d", "ReduceMean/GlobalAveragePool"},
    {"mean", "ReduceMean/GlobalAveragePool"},
    {"flatten", "Reshape/Flatten"},
    {"view", "Reshape/Flatten"},
    {"reshape", "Reshape/Flatten"},
    {"linear", "Gemm/MatMul"},
    {"addmm", "Gemm/MatMul"},
    {"matmul", "Gemm/MatMul"},
    {"mm", "Gemm/MatMul"},
    {"bmm", "Gemm/MatMul"},
    {"cat", "Concat"},
    {"embedding", "Gather"},
};

constexpr std::string_view kConvClass = "Conv";
constexpr std::string_view kBatchNormClass = "BatchNormalization";

std::optional<std::string_view> ClassOf(std::string_view aten_name) {
  constexpr std::string_view kPrefix = "aten::";
  if (!aten_name.starts_with(kPrefix)) return std::nullopt;
  aten_name.remove_prefix(kPrefix.size());
  for (const AtenToOnnx& row : kAtenToOnnx) {
    if (row.aten == aten_name) return row.onnx;
  }
  return std::nullopt;
}

bool ClassHasOpType(std::string_view op_class, std::string_view op_type) {
  while (!op_class.empty()) {
    size_t slash = op_class.find('/');
    if (op_class.substr(0, slash) == op_type) return true;
    if (slash == std::string_view::npos) break;
    op_class.remove_prefix(slash + 1);
  }
  return false;
}

struct AtenOp {
  std::string thread;  // "pid/tid"
  double start_us = 0;
  double end_us = 0;
  std::string name;                  // "aten::conv2d"
  std::optional<Shape> first_input;  // from "Input Dims", when recorded and a plain tensor
  double gpu_us = 0;                 // GPU work launched inside it, children included
};

struct Launch {
  std::string thread;
  double start_us = 0;
};

struct GpuActivity {
  int64_t correlation = 0;
  double dur_us = 0;
};

struct Window {
  std::string name;
  double start_us = 0;
  double end_us = 0;
};

struct ParsedTrace {
  std::vector<AtenOp> top_ops;  // aten ops not nested in another aten op, by start time
  std::vector<Window> steps;    // ProfilerStep#N windows, by start time
};

std::string_view StringField(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

std::optional<double> NumberField(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::optional<int64_t> CorrelationOf(const Json& event) {
  auto args = event.find("args");
  if (args == event.end() || !args->is_object()) return std::nullopt;
  auto it = args->find("correlation");
  if (it == args->end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

std::string ThreadOf(const Json& event) {
  auto pid = event.find("pid");
  auto tid = event.find("tid");
  return (pid == event.end() ? "" : pid->dump()) + "/" + (tid == event.end() ? "" : tid->dump());
}

// Empty for scalars, lists of tensors and traces recorded without record_shapes.
std::optional<Shape> FirstInputDims(const Json& event) {
  auto args = event.find("args");
  if (args == event.end() || !args->is_object()) return std::nullopt;
  auto dims = args->find("Input Dims");
  if (dims == args->end() || !dims->is_array() || dims->empty()) return std::nullopt;
  const Json& first = (*dims)[0];
  if (!first.is_array() || first.empty()) return std::nullopt;
  Shape shape;
  for (const Json& d : first) {
    if (!d.is_number_integer()) return std::nullopt;
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// Keeps the aten ops that no other aten op on the same thread encloses. Wrappers that are not
// aten ops (ProfilerStep#N, record_function labels) are transparent, so their ops stay top-level.
std::vector<AtenOp> TopLevel(std::vector<AtenOp> ops) {
  // By thread, then start; an op that starts with its child sorts first because it ends later.
  std::sort(ops.begin(), ops.end(), [](const AtenOp& a, const AtenOp& b) {
    return std::tie(a.thread, a.start_us, b.end_us) < std::tie(b.thread, b.start_us, a.end_us);
  });
  std::vector<AtenOp> top;
  for (AtenOp& op : ops) {
    bool nested = !top.empty() && top.back().thread == op.thread && op.start_us < top.back().end_us;
    if (!nested) top.push_back(std::move(op));
  }
  return top;
}

// A GPU activity belongs to the top-level op during which the CPU launched it: CUPTI gives the
// activity and its runtime or driver launch call the same correlation id, and the launch call
// runs on the op's thread, on the op's clock. Kernel timestamps cannot be nested under ops (the
// GPU runs them later), and a kernel's "External id" names the innermost op (cudnn_convolution,
// not conv2d), so it would need this nesting step as well. `top_ops` is sorted by thread, start.
void AttributeGpuTime(std::vector<AtenOp>& top_ops, const std::map<int64_t, Launch>& launches,
                      const std::vector<GpuActivity>& activities) {
  for (const GpuActivity& activity : activities) {
    auto launch = launches.find(activity.correlation);
    if (launch == launches.end()) continue;
    const Launch& l = launch->second;
    auto after = std::upper_bound(
        top_ops.begin(), top_ops.end(), std::tie(l.thread, l.start_us),
        [](const auto& key, const AtenOp& op) { return key < std::tie(op.thread, op.start_us); });
    if (after == top_ops.begin()) continue;
    AtenOp& op = *std::prev(after);
    if (op.thread == l.thread && l.start_us <= op.end_us) op.gpu_us += activity.dur_us;
  }
}

Result<ParsedTrace> ParseTrace(const Json& events) {
  std::vector<AtenOp> ops;
  std::vector<Window> steps;
  std::map<int64_t, Launch> launches;
  std::vector<GpuActivity> activities;
  for (size_t i = 0; i < events.size(); ++i) {
    const Json& e = events[i];
    if (!e.is_object() || StringField(e, "ph") != "X") continue;
    std::string_view cat = StringField(e, "cat");
    std::string_view name = StringField(e, "name");
    bool is_op = cat == "cpu_op" && name.starts_with("aten::");
    bool is_step =
        (cat == "cpu_op" || cat == "user_annotation") && name.starts_with("ProfilerStep#");
    bool is_launch = cat == "cuda_runtime" || cat == "cuda_driver";
    bool is_gpu = cat == "kernel" || cat == "gpu_memset" || cat == "gpu_memcpy";
    if (!is_op && !is_step && !is_launch && !is_gpu) continue;
    std::optional<double> ts = NumberField(e, "ts");
    std::optional<double> dur = NumberField(e, "dur");
    if (!ts || !dur) {
      return InvalidArgument(
          fmt::format("traceEvents[{}] ({} '{}') has no numeric ts and dur", i, cat, name));
    }
    if (is_op) {
      ops.push_back({ThreadOf(e), *ts, *ts + *dur, std::string(name), FirstInputDims(e), 0});
      continue;
    }
    if (is_step) {
      steps.push_back({std::string(name), *ts, *ts + *dur});
      continue;
    }
    std::optional<int64_t> correlation = CorrelationOf(e);
    if (!correlation) continue;
    if (is_launch) {
      launches[*correlation] = {ThreadOf(e), *ts};
    } else {
      activities.push_back({*correlation, *dur});
    }
  }
  ParsedTrace trace;
  trace.top_ops = TopLevel(std::move(ops));
  AttributeGpuTime(trace.top_ops, launches, activities);
  std::stable_sort(trace.top_ops.begin(), trace.top_ops.end(),
                   [](const AtenOp& a, const AtenOp& b) { return a.start_us < b.start_us; });
  std::sort(steps.begin(), steps.end(),
            [](const Window& a, const Window& b) { return a.start_us < b.start_us; });
  trace.steps = std::move(steps);
  return trace;
}

// One trace op as matched: its time may include a folded batch_norm's.
struct MatchedOp {
  const AtenOp* op = nullptr;
  int ordinal = 0;  // 1 for the first op of that aten name, for messages
  double gpu_us = 0;
};

std::string OpLabel(const MatchedOp& m) { return fmt::format("{} #{}", m.op->name, m.ordinal); }

// "53 aten::conv2d" or "1 aten::linear + 2 aten::matmul".
std::string CountByName(const std::vector<MatchedOp>& ops) {
  std::vector<std::pair<std::string_view, int>> counts;
  for (const MatchedOp& m : ops) {
    auto it = std::find_if(counts.begin(), counts.end(),
                           [&](const auto& c) { return c.first == m.op->name; });
    if (it == counts.end()) {
      counts.emplace_back(m.op->name, 1);
    } else {
      ++it->second;
    }
  }
  std::string out;
  for (const auto& [name, count] : counts) {
    out += fmt::format("{}{} {}", out.empty() ? "" : " + ", count, name);
  }
  return out;
}

// The op's first tensor must be one of the node's inputs, so ops of one class cannot drift
// against the nodes unnoticed (ResNet's stages differ in channels and spatial size).
Status CheckShapes(const Graph& graph, const MatchedOp& m, const Node& node) {
  if (!m.op->first_input) return Status::Ok();
  std::vector<std::string> node_shapes;
  for (int v : node.inputs) {
    if (v < 0) continue;
    const Value& value = graph.values[v];
    if (!value.has_shape || value.shape == *m.op->first_input) return Status::Ok();
    node_shapes.push_back(ShapeToString(value.shape));
  }
  if (node_shapes.empty()) return Status::Ok();
  return InvalidArgument(fmt::format("{} has input {}, but {} has inputs {}", OpLabel(m),
                                     ShapeToString(*m.op->first_input), DescribeNode(node),
                                     fmt::join(node_shapes, ", ")));
}

// Matches one iteration's top-level ops (in start order) to the graph's nodes.
Result<std::map<std::string, double>> MatchToGraph(const std::vector<const AtenOp*>& ops,
                                                   const Graph& graph) {
  bool graph_has_batch_norm =
      std::any_of(graph.nodes.begin(), graph.nodes.end(),
                  [](const Node& n) { return n.op_type == kBatchNormClass; });
  std::map<std::string_view, std::vector<MatchedOp>> by_class;
  std::map<std::string_view, int> seen;  // ops so far per aten name
  const AtenOp* previous = nullptr;
  for (const AtenOp* op : ops) {
    MatchedOp m{op, ++seen[op->name], op->gpu_us};
    std::optional<std::string_view> op_class = ClassOf(op->name);
    if (op_class == kBatchNormClass && !graph_has_batch_norm) {
      // The export folded BatchNorm into the convolution before it, so its time is that Conv's.
      if (previous == nullptr || ClassOf(previous->name) != kConvClass) {
        return InvalidArgument(fmt::format(
            "{} follows {}, not a convolution, and the model has no BatchNormalization node",
            OpLabel(m), previous == nullptr ? "nothing" : previous->name));
      }
      by_class[kConvClass].back().gpu_us += op->gpu_us;
    } else if (op_class) {
      by_class[*op_class].push_back(m);
    }
    previous = op;
  }

  std::map<std::string, double> seconds;
  for (const auto& [op_class, matched] : by_class) {
    std::vector<const Node*> nodes;
    for (const Node& n : graph.nodes) {
      if (ClassHasOpType(op_class, n.op_type)) nodes.push_back(&n);
    }
    if (nodes.size() != matched.size()) {
      // Ops that launched no GPU work carry no time to misassign (exports often drop such views).
      bool any_gpu_time = std::any_of(matched.begin(), matched.end(),
                                      [](const MatchedOp& m) { return m.gpu_us > 0; });
      if (!any_gpu_time) continue;
      return InvalidArgument(fmt::format("torch trace has {}, the model {} {} nodes",
                                         CountByName(matched), nodes.size(), op_class));
    }
    for (size_t i = 0; i < nodes.size(); ++i) {
      KF_RETURN_IF_ERROR(CheckShapes(graph, matched[i], *nodes[i]));
      seconds[nodes[i]->name] = matched[i].gpu_us * 1e-6;
    }
  }
  if (seconds.empty()) {
    return InvalidArgument("no aten op of the trace matched a node of the model");
  }
  return seconds;
}

}  // namespace

Result<std::map<std::string, double>> MeasuredTimesFromTorchTrace(std::string_view json_text,
                                                                  std::string_view display_name,
                                                                  const Graph& graph) {
  Json doc = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument(fmt::format("{}: not valid JSON", display_name));
  return MeasuredTimesFromParsedTorchTrace(doc, display_name, graph);
}

Result<std::map<std::string, double>> MeasuredTimesFromParsedTorchTrace(
    const nlohmann::json& doc, std::string_view display_name, const Graph& graph) {
  auto events = doc.is_object() ? doc.find("traceEvents") : doc.end();
  if (events == doc.end() || !events->is_array()) {
    return InvalidArgument(fmt::format(
        "{}: not a torch profiler trace: expected an object with a \"traceEvents\" array",
        display_name));
  }
  Result<ParsedTrace> trace = ParseTrace(*events);
  if (!trace.ok()) return trace.status().WithContext(display_name);
  if (trace->top_ops.empty()) {
    return InvalidArgument(fmt::format(
        "{}: the trace holds no aten ops (cpu_op events); profile the model's forward pass with "
        "torch.profiler",
        display_name));
  }

  if (trace->steps.empty()) {
    std::vector<const AtenOp*> all;
    for (const AtenOp& op : trace->top_ops) all.push_back(&op);
    Result<std::map<std::string, double>> seconds = MatchToGraph(all, graph);
    if (!seconds.ok()) return seconds.status().WithContext(display_name);
    return seconds;
  }
  // With prof.step() markers one step is used, so node times add up to one real forward pass: the
  // last of the steps that match the model and time the most nodes. Later steps are warm (cuDNN
  // algorithm search and allocator growth happened before); the final step is often cut short
  // when profiling stops, and then times fewer nodes or fails to match.
  std::optional<std::map<std::string, double>> best;
  Status last_step_error;
  for (auto step = trace->steps.rbegin(); step != trace->steps.rend(); ++step) {
    std::vector<const AtenOp*> in_step;
    for (const AtenOp& op : trace->top_ops) {
      if (op.start_us >= step->start_us && op.start_us < step->end_us) in_step.push_back(&op);
    }
    if (in_step.empty()) continue;
    Result<std::map<std::string, double>> seconds = MatchToGraph(in_step, graph);
    if (!seconds.ok()) {
      if (last_step_error.ok()) last_step_error = seconds.status().WithContext(step->name);
    } else if (!best || seconds->size() > best->size()) {
      best = std::move(seconds).value();
    }
  }
  if (best) return *std::move(best);
  if (last_step_error.ok()) {
    return InvalidArgument(
        fmt::format("{}: no ProfilerStep of the trace holds an aten op", display_name));
  }
  return last_step_error.WithContext(display_name);
}

}  // namespace kfleet::planner
