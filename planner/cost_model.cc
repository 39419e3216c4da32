#include "planner/cost_model.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "common/config.h"

namespace kfleet::planner {

// Generated from configs/devices.yaml by cmake/EmbedText.cmake.
extern const char kBuiltinDevicesYaml[];

namespace {

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI64,
                                DType::kI32, DType::kI16, DType::kI8,   DType::kU8,  DType::kBool};

// Ids become dotted config keys and --target values, so they stay plain.
bool ValidDeviceId(const std::string& id) {
  if (id.empty()) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::string Join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (const std::string& part : parts) {
    if (!out.empty()) out += separator;
    out += part;
  }
  return out;
}

// The ids under `devices:`; ConfigReader reads the keys but cannot list a map's entries.
Result<std::vector<std::string>> DeviceIds(std::string_view yaml_text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(origin + ": not valid YAML: " + e.msg);
  }
  const YAML::Node devices = root.IsMap() ? root["devices"] : YAML::Node();
  if (!devices.IsDefined() || !devices.IsMap()) {
    return InvalidArgument(origin + ": expected a `devices:` mapping of device ids to devices");
  }
  std::vector<std::string> ids;
  for (const auto& entry : devices) {
    const std::string id = entry.first.Scalar();
    if (!ValidDeviceId(id)) {
      return InvalidArgument(origin + ": device id '" + id +
                             "' may use only lowercase letters, digits, '-' and '_'");
    }
    if (!entry.second.IsMap()) {
      return InvalidArgument(origin + ": devices." + id + ": expected a mapping of device keys");
    }
    ids.push_back(id);
  }
  return ids;
}

// Present with a value: `key:` with nothing after it counts as missing.
bool Present(ConfigReader& reader, const std::string& key) {
  return reader.Has(key) && !reader.String(key, "").empty();
}

// One device's keys; problems ConfigReader cannot see (missing required keys) go to `problems`.
DeviceModel ReadDevice(ConfigReader& reader, const std::string& id, const std::string& origin,
                       std::vector<std::string>& problems) {
  const std::string prefix = "devices." + id + ".";
  auto require = [&](const std::string& key) {
    if (Present(reader, prefix + key)) return true;
    problems.push_back(origin + ": " + prefix + key + ": required but missing");
    return false;
  };

  DeviceModel d;
  d.id = id;
  d.source = origin;
  d.name = reader.String(prefix + "name", id);
  if (require("backend")) d.backend = reader.Enum(prefix + "backend", "", {"cuda", "hip", "cpu"});
  require("matrix_tflops.f32");
  require("vector_tflops.f32");
  for (DType dtype : kAllDTypes) {
    const std::string name(DTypeName(dtype));
    // From 1 GFLOP/s to 1 EFLOP/s: anything outside is a unit mistake.
    for (auto [group, rates] : {std::pair{"matrix_tflops.", &d.matrix_flops_per_s},
                                std::pair{"vector_tflops.", &d.vector_flops_per_s}}) {
      const std::string key = prefix + group + name;
      if (Present(reader, key)) (*rates)[dtype] = reader.Double(key, 0, 1e-3, 1e6) * 1e12;
    }
  }
  if (require("memory_gb_per_s")) {
    d.memory_bytes_per_s = reader.Double(prefix + "memory_gb_per_s", 0, 0.1, 1e7) * 1e9;
  }
  d.l2_bytes = reader.Bytes(prefix + "l2_cache", 0, 0, int64_t{1} << 40);
  d.compute_units = reader.Int(prefix + "compute_units", 1, 1, 10'000'000);
  d.launch_overhead_s = reader.Double(prefix + "launch_overhead_us", 0, 0, 1e6) * 1e-6;
  d.baseline_matrix_efficiency =
      reader.Double(prefix + "baseline_matrix_efficiency", d.baseline_matrix_efficiency, 0.01, 1);
  d.baseline_memory_efficiency =
      reader.Double(prefix + "baseline_memory_efficiency", d.baseline_memory_efficiency, 0.01, 1);
  return d;
}

double RateOrF32(const std::map<DType, double>& rates, DType dtype) {
  auto it = rates.find(dtype);
  if (it == rates.end()) it = rates.find(DType::kF32);
  return it == rates.end() ? 0 : it->second;
}

// How an op is costed. Per-element FLOP counts are conventions, not exact instruction counts.
enum class OpKind {
  kFree,            // views and metadata: no kernel
  kElementwise,     // 1 FLOP per output element; transcendentals (Exp, Erf, Tanh...) count 1 too
  kVariadicMinMax,  // one comparison per extra input per output element
  kMovement,        // copies, gathers, casts: bytes only
  kFill,            // ConstantOfShape: writes only
  kRange,           // one multiply-add per output element
  kMatMul,
  kGemm,
  kConv,
  kConvTranspose,
  kPool,       // prod(kernel_shape) per output element
  kPerInput1,  // reductions and GlobalAveragePool: 1 per input element
  kSoftmax,    // max, subtract, exp, sum, divide: ~5 per element
  kLayerNorm,  // mean, variance, normalize, scale, shift: ~8 per element
  kNorm4,      // BatchNorm / InstanceNorm at inference: ~4 per element
  kUnknown,    // bytes of whatever has a shape, no FLOPs
};

OpKind KindOf(std::string_view op) {
  static const std::map<std::string_view, OpKind, std::less<>> kKinds = {
      {"Reshape", OpKind::kFree},
      {"Squeeze", OpKind::kFree},
      {"Unsqueeze", OpKind::kFree},
      {"Flatten", OpKind::kFree},
      {"Identity", OpKind::kFree},
      {"Dropout", OpKind::kFree},  // inference: the identity
      {"Shape", OpKind::kFree},
      {"Constant", OpKind::kFree},
      {"Add", OpKind::kElementwise},
      {"Sub", OpKind::kElementwise},
      {"Mul", OpKind::kElementwise},
      {"Div", OpKind::kElementwise},
      {"Pow", OpKind::kElementwise},
      {"Sqrt", OpKind::kElementwise},
      {"Reciprocal", OpKind::kElementwise},
      {"Neg", OpKind::kElementwise},
      {"Exp", OpKind::kElementwise},
      {"Log", OpKind::kElementwise},
      {"Erf", OpKind::kElementwise},
      {"Tanh", OpKind::kElementwise},
      {"Sigmoid", OpKind::kElementwise},
      {"Relu", OpKind::kElementwise},
      {"LeakyRelu", OpKind::kElementwise},
      {"Clip", OpKind::kElementwise},
      {"Gelu", OpKind::kElementwise},
      {"HardSigmoid", OpKind::kElementwise},
      {"HardSwish", OpKind::kElementwise},
      {"Softplus", OpKind::kElementwise},
      {"Equal", OpKind::kElementwise},
      {"Less", OpKind::kElementwise},
      {"Greater", OpKind::kElementwise},
      {"LessOrEqual", OpKind::kElementwise},
      {"GreaterOrEqual", OpKind::kElementwise},
      {"And", OpKind::kElementwise},
      {"Or", OpKind::kElementwise},
      {"Not", OpKind::kElementwise},
      {"IsNaN", OpKind::kElementwise},
      {"Abs", OpKind::kElementwise},
      {"Cos", OpKind::kElementwise},
      {"Sin", OpKind::kElementwise},
      {"Max", OpKind::kVariadicMinMax},
      {"Min", OpKind::kVariadicMinMax},
      {"Where", OpKind::kMovement},
      {"Cast", OpKind::kMovement},
      {"Transpose", OpKind::kMovement},
      {"Expand", OpKind::kMovement},
      {"Concat", OpKind::kMovement},
      {"Split", OpKind::kMovement},
      {"Slice", OpKind::kMovement},
      {"Gather", OpKind::kMovement},
      {"GatherElements", OpKind::kMovement},
      {"Tile", OpKind::kMovement},
      {"Pad", OpKind::kMovement},
      {"Resize", OpKind::kMovement},
      {"Trilu", OpKind::kMovement},
      {"ConstantOfShape", OpKind::kFill},
      {"Range", OpKind::kRange},
      {"MatMul", OpKind::kMatMul},
      {"Gemm", OpKind::kGemm},
      {"Conv", OpKind::kConv},
      {"ConvTranspose", OpKind::kConvTranspose},
      {"MaxPool", OpKind::kPool},
      {"AveragePool", OpKind::kPool},
      {"GlobalAveragePool", OpKind::kPerInput1},
      {"ReduceMean", OpKind::kPerInput1},
      {"ReduceSum", OpKind::kPerInput1},
      {"ReduceMax", OpKind::kPerInput1},
      {"Softmax", OpKind::kSoftmax},
      {"LogSoftmax", OpKind::kSoftmax},
      {"LayerNormalization", OpKind::kLayerNorm},
      {"BatchNormalization", OpKind::kNorm4},
      {"InstanceNormalization", OpKind::kNorm4},
  };
  auto it = kKinds.find(op);
  return it == kKinds.end() ? OpKind::kUnknown : it->second;
}

// The value at position `index` of `ids` when it exists and has a shape, else null.
const Value* Shaped(const Graph& graph, const std::vector<int>& ids, size_t index) {
  if (index >= ids.size() || ids[index] < 0) return nullptr;
  const Value& v = graph.values[ids[index]];
  return v.has_shape ? &v : nullptr;
}

bool HasInput(const Node& node, size_t index) {
  return index < node.inputs.size() && node.inputs[index] >= 0;
}

double Elements(const Value* v) { return v ? static_cast<double>(NumElements(v->shape)) : 0; }

// Bytes one kernel moves for `id`: constants are baked into the kernel, unknown shapes count 0.
double ValueBytes(const Graph& graph, int id) {
  if (id < 0) return 0;
  const Value& v = graph.values[id];
  if (v.kind == ValueKind::kConstant || !v.has_shape) return 0;
  return static_cast<double>(NumElements(v.shape)) * static_cast<double>(DTypeBytes(v.dtype));
}

// prod(shape[from:]).
double TailProduct(const Shape& shape, size_t from) {
  double p = 1;
  for (size_t i = from; i < shape.size(); ++i) p *= static_cast<double>(shape[i]);
  return p;
}

double NodeFlops(const Graph& graph, const Node& node, OpKind kind) {
  const Value* in0 = Shaped(graph, node.inputs, 0);
  const Value* out0 = Shaped(graph, node.outputs, 0);
  switch (kind) {
    case OpKind::kFree:
    case OpKind::kMovement:
    case OpKind::kFill:
    case OpKind::kUnknown:
      return 0;
    case OpKind::kElementwise:
    case OpKind::kRange:
      return Elements(out0);
    case OpKind::kVariadicMinMax: {
      const double comparisons = std::max<double>(1, static_cast<double>(node.inputs.size()) - 1);
      return comparisons * Elements(out0);
    }
    case OpKind::kMatMul:
      // Output elements already carry the broadcast batch dimensions; each is a K-long dot.
      if (!in0 || !out0 || in0->shape.empty()) return 0;
      return 2 * Elements(out0) * static_cast<double>(in0->shape.back());
    case OpKind::kGemm: {
      if (!in0 || !out0 || in0->shape.size() != 2) return 0;
      const double k =
          static_cast<double>(node.IntAttr("transA", 0) != 0 ? in0->shape[0] : in0->shape[1]);
      // alpha and beta scaling are left out: one multiply per element beside 2K.
      const double bias = HasInput(node, 2) ? Elements(out0) : 0;
      return 2 * Elements(out0) * k + bias;
    }
    case OpKind::kConv:
    case OpKind::kConvTranspose: {
      // Weights are [Cout, Cin/group, k...] for Conv and [Cin, Cout/group, k...] for
      // ConvTranspose: every output (Conv) or input (ConvTranspose) element meets
      // W[1] * prod(kernel) weights.
      const Value* w = Shaped(graph, node.inputs, 1);
      const Value* per = kind == OpKind::kConv ? out0 : in0;
      if (!w || !per || w->shape.size() < 2) return 0;
      const double bias = HasInput(node, 2) ? Elements(out0) : 0;
      return 2 * Elements(per) * TailProduct(w->shape, 1) + bias;
    }
    case OpKind::kPool: {
      double window = 1;
      for (int64_t k : node.IntsAttr("kernel_shape")) window *= static_cast<double>(k);
      return window * Elements(out0);
    }
    case OpKind::kPerInput1:
      return Elements(in0);
    case OpKind::kSoftmax:
      return 5 * Elements(in0);
    case OpKind::kLayerNorm:
      return 8 * Elements(in0);
    case OpKind::kNorm4:
      return 4 * Elements(in0);
  }
  return 0;
}

// The dtype whose peak applies: the first floating input's, else the first output's.
DType CostDType(const Graph& graph, const Node& node) {
  for (int v : node.inputs) {
    if (v >= 0 && IsFloat(graph.values[v].dtype)) return graph.values[v].dtype;
  }
  for (int v : node.outputs) {
    if (v >= 0) return graph.values[v].dtype;
  }
  return DType::kF32;
}

}  // namespace

double DeviceModel::MatrixFlopsPerS(DType dtype) const {
  return RateOrF32(matrix_flops_per_s, dtype);
}

double DeviceModel::VectorFlopsPerS(DType dtype) const {
  return RateOrF32(vector_flops_per_s, dtype);
}

Result<DeviceCatalog> DeviceCatalog::Parse(std::string_view yaml_text, std::string_view origin) {
  const std::string source(origin);
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadString(yaml_text, source));
  KF_ASSIGN_OR_RETURN(std::vector<std::string> ids, DeviceIds(yaml_text, source));
  DeviceCatalog catalog;
  std::vector<std::string> problems;
  for (const std::string& id : ids) catalog.Put(ReadDevice(reader, id, source, problems));
  const Status finished = reader.Finish();
  if (!finished.ok()) problems.push_back(finished.message());
  if (!problems.empty()) return InvalidArgument(Join(problems, "\n"));
  return catalog;
}

const DeviceCatalog& DeviceCatalog::Builtin() {
  static const DeviceCatalog catalog = [] {
    Result<DeviceCatalog> parsed = Parse(kBuiltinDevicesYaml, "built-in configs/devices.yaml");
    if (!parsed.ok()) {
      // The file is compiled in and covered by tests: reaching this is a build of broken source.
      std::fprintf(stderr, "kfleet: bug: %s\n", parsed.status().message().c_str());
      std::abort();
    }
    return std::move(parsed).value();
  }();
  return catalog;
}

Result<DeviceModel> DeviceCatalog::Find(std::string_view id) const {
  auto it = devices_.find(id);
  if (it != devices_.end()) return it->second;
  if (devices_.empty()) {
    return NotFound("unknown target '" + std::string(id) + "': the device catalog is empty");
  }
  return NotFound("unknown target '" + std::string(id) + "': known targets are " +
                  Join(Ids(), ", "));
}

std::vector<std::string> DeviceCatalog::Ids() const {
  std::vector<std::string> ids;
  for (const auto& [id, device] : devices_) ids.push_back(id);
  return ids;
}

void DeviceCatalog::Put(DeviceModel device) {
  std::string id = device.id;
  devices_.insert_or_assign(std::move(id), std::move(device));
}

namespace {

// Bytes a node reads from input slot `slot`: all of it, except a gather's table, of which only
// the rows (or elements) it picks are read: at most as many as it writes.
double InputBytesRead(const Graph& graph, const Node& node, size_t slot) {
  const int v = node.inputs[slot];
  const double full = ValueBytes(graph, v);
  if (slot == 0 && (node.op_type == "Gather" || node.op_type == "GatherElements") &&
      !node.outputs.empty() && node.outputs[0] >= 0) {
    return std::min(full, ValueBytes(graph, node.outputs[0]));
  }
  return full;
}

}  // namespace

OpCost NodeCost(const Graph& graph, int node_id) {
  const Node& node = graph.nodes[node_id];
  const OpKind kind = KindOf(node.op_type);
  OpCost cost;
  cost.dtype = CostDType(graph, node);
  if (kind == OpKind::kFree) {
    cost.free = true;
    return cost;
  }
  cost.matrix = kind == OpKind::kMatMul || kind == OpKind::kGemm || kind == OpKind::kConv ||
                kind == OpKind::kConvTranspose;
  cost.flops = NodeFlops(graph, node, kind);
  // Mul(x, x) reads x once.
  std::set<int> counted;
  for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
    const int v = node.inputs[slot];
    if (v >= 0 && counted.insert(v).second) cost.bytes += InputBytesRead(graph, node, slot);
  }
  for (int v : node.outputs) {
    if (v >= 0 && counted.insert(v).second) cost.bytes += ValueBytes(graph, v);
  }
  return cost;
}

OpCost GroupCost(const Graph& graph, const std::vector<int>& nodes) {
  const std::set<int> members(nodes.begin(), nodes.end());
  auto inside = [&](int node_id) { return members.count(node_id) > 0; };
  auto is_graph_output = [&](int v) {
    return std::find(graph.outputs.begin(), graph.outputs.end(), v) != graph.outputs.end();
  };

  OpCost total;
  total.free = true;
  bool have_dtype = false;
  std::set<int> counted;
  for (int n : nodes) {
    const OpCost c = NodeCost(graph, n);
    total.flops += c.flops;
    if (c.matrix && !total.matrix) {
      total.matrix = true;
      total.dtype = c.dtype;
      have_dtype = true;
    } else if (!c.free && !have_dtype) {
      total.dtype = c.dtype;
      have_dtype = true;
    }
    total.free = total.free && c.free;

    const Node& node = graph.nodes[n];
    for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
      const int v = node.inputs[slot];
      if (v < 0 || inside(graph.values[v].producer)) continue;
      if (counted.insert(v).second) total.bytes += InputBytesRead(graph, node, slot);
    }
    for (int v : node.outputs) {
      if (v < 0) continue;
      const std::vector<int>& consumers = graph.values[v].consumers;
      const bool leaves =
          is_graph_output(v) || std::any_of(consumers.begin(), consumers.end(),
                                            [&](int consumer) { return !inside(consumer); });
      if (leaves && counted.insert(v).second) total.bytes += ValueBytes(graph, v);
    }
  }
  if (!have_dtype && !nodes.empty()) total.dtype = NodeCost(graph, nodes.front()).dtype;
  // Views alone launch nothing, as in NodeCost.
  if (total.free) total.bytes = 0;
  return total;
}

double SpeedOfLightSeconds(const DeviceModel& device, const OpCost& cost) {
  const double flops_per_s =
      cost.matrix ? device.MatrixFlopsPerS(cost.dtype) : device.VectorFlopsPerS(cost.dtype);
  const double compute_s = cost.flops > 0 ? cost.flops / flops_per_s : 0;
  const double memory_s = cost.bytes > 0 ? cost.bytes / device.memory_bytes_per_s : 0;
  return std::max(compute_s, memory_s);
}

double BaselineSeconds(const DeviceModel& device, const Graph& graph,
                       const std::vector<int>& nodes) {
  double total_s = 0;
  for (int n : nodes) {
    const OpCost c = NodeCost(graph, n);
    if (c.free) continue;
    // Eager elementwise and reduction kernels are memory-bound designs: their ALU side reaches
    // about the same fraction of peak as their loads and stores, so both use the memory efficiency.
    const double flops_per_s =
        c.matrix ? device.MatrixFlopsPerS(c.dtype) * device.baseline_matrix_efficiency
                 : device.VectorFlopsPerS(c.dtype) * device.baseline_memory_efficiency;
    const double compute_s = c.flops > 0 ? c.flops / flops_per_s : 0;
    const double memory_s =
        c.bytes > 0 ? c.bytes / (device.memory_bytes_per_s * device.baseline_memory_efficiency) : 0;
    total_s += std::max(compute_s, memory_s) + device.launch_overhead_s;
  }
  return total_s;
}

}  // namespace kfleet::planner
