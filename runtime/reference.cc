// RunReference: checks the feeds, runs the nodes in graph order with the ops of
// reference_ops.h, checks every result against the graph's dtypes and shapes, and frees a value
// once its last consumer has run (a whole model's activations need not fit at once).
#include "runtime/reference.h"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <vector>

#include "runtime/reference_ops.h"

namespace kfleet::runtime {
namespace {

using reference_internal::HeldDType;

std::string DescribeValue(const planner::Value& v) {
  return fmt::format("'{}' ({}{})", v.name, planner::DTypeName(v.dtype),
                     planner::ShapeToString(v.shape));
}

// The values of a run by id, loaded or computed on first use.
class ValueTable {
 public:
  explicit ValueTable(const planner::Graph& graph) : graph_(graph), tensors_(graph.values.size()) {}

  Status Feed(int id, const Tensor& tensor) {
    if (id < 0 || static_cast<size_t>(id) >= tensors_.size()) {
      return InvalidArgument(
          fmt::format("a feed has value id {}, which the graph does not have", id));
    }
    const planner::Value& v = graph_.values[id];
    if (v.kind != planner::ValueKind::kInput && v.kind != planner::ValueKind::kWeight) {
      return InvalidArgument(fmt::format("feed for {}: it is a {} value, not an input or weight",
                                         DescribeValue(v), planner::ValueKindName(v.kind)));
    }
    if (tensor.shape() != v.shape || HeldDType(tensor.dtype()) != HeldDType(v.dtype)) {
      return InvalidArgument(
          fmt::format("feed for {} is {}", DescribeValue(v), DescribeTensor(tensor)));
    }
    tensors_[id] = ConvertTensor(tensor, HeldDType(v.dtype));
    return Status::Ok();
  }

  // The tensor of value `id`: fed, computed, or loaded now from the graph (constants, weights).
  Result<const Tensor*> Get(int id) {
    if (tensors_[id]) return &*tensors_[id];
    const planner::Value& v = graph_.values[id];
    switch (v.kind) {
      case planner::ValueKind::kInput:
        return InvalidArgument(fmt::format("input {} is not fed", DescribeValue(v)));
      case planner::ValueKind::kActivation:
        return Internal(fmt::format("value {} is read before it is computed", DescribeValue(v)));
      case planner::ValueKind::kWeight:
      case planner::ValueKind::kConstant:
        break;
    }
    Result<Tensor> loaded = LoadValueTensor(v);
    if (!loaded.ok()) {
      if (loaded.status().code() == ErrorCode::kNotFound) {
        return InvalidArgument(fmt::format(
            "weight {} is not fed and the graph carries no data for it", DescribeValue(v)));
      }
      return loaded.status();
    }
    tensors_[id] = ConvertTensor(*loaded, HeldDType(v.dtype));
    return &*tensors_[id];
  }

  void Set(int id, Tensor tensor) { tensors_[id] = std::move(tensor); }
  void Drop(int id) { tensors_[id].reset(); }
  Tensor Take(int id) { return std::move(*tensors_[id]); }

 private:
  const planner::Graph& graph_;
  std::vector<std::optional<Tensor>> tensors_;
};

// Runs one node on the table's values and stores its outputs.
Status RunNode(const planner::Graph& graph, const planner::Node& node, ValueTable& table) {
  if (!node.domain.empty() && node.domain != "ai.onnx") {
    return InvalidArgument(fmt::format("{}: domain '{}' is not supported by the reference",
                                       planner::DescribeNode(node), node.domain));
  }
  if (!node.supported) {
    return InvalidArgument(fmt::format("{}: not supported by the planner: {}",
                                       planner::DescribeNode(node), node.unsupported_reason));
  }
  reference_internal::OpFunction op = reference_internal::FindReferenceOp(node.op_type);
  if (op == nullptr) {
    return InvalidArgument(fmt::format("{}: the reference has no implementation of this op",
                                       planner::DescribeNode(node)));
  }
  // Every op reads its first output's value (dtype, shape); ONNX never omits it.
  if (node.outputs.empty() || node.outputs[0] < 0) {
    return InvalidArgument(fmt::format("{}: has no first output", planner::DescribeNode(node)));
  }
  std::vector<const Tensor*> inputs;
  for (int id : node.inputs) {
    if (id < 0) {
      inputs.push_back(nullptr);
      continue;
    }
    Result<const Tensor*> tensor = table.Get(id);
    if (!tensor.ok()) return tensor.status().WithContext(planner::DescribeNode(node));
    inputs.push_back(*tensor);
  }
  reference_internal::NodeRun run(graph, node, std::move(inputs));
  KF_RETURN_IF_ERROR(op(run));
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    const int id = node.outputs[i];
    if (id < 0) continue;
    Tensor& out = run.outputs()[i];
    const planner::Value& v = graph.values[id];
    if (out.dtype() != HeldDType(v.dtype) || out.shape() != v.shape) {
      return Internal(fmt::format("{}: output {} came out {}, expected it held as {}{}",
                                  planner::DescribeNode(node), DescribeValue(v),
                                  DescribeTensor(out), planner::DTypeName(HeldDType(v.dtype)),
                                  planner::ShapeToString(v.shape)));
    }
    table.Set(id, std::move(out));
  }
  return Status::Ok();
}

}  // namespace

Result<TensorMap> RunReference(const planner::Graph& graph, const TensorMap& feeds,
                               const ReferenceOptions& options) {
  ValueTable table(graph);
  for (const auto& [id, tensor] : feeds) KF_RETURN_IF_ERROR(table.Feed(id, tensor));
  // Every graph input must be fed before any node runs, unless it is a weight with its data in
  // the graph.
  for (int id : graph.inputs) {
    const planner::Value& v = graph.values[id];
    const bool has_data = v.kind == planner::ValueKind::kWeight && (v.raw_data || v.external);
    if (feeds.count(id) == 0 && !has_data) {
      return InvalidArgument(fmt::format("{} {} is not fed",
                                         v.kind == planner::ValueKind::kWeight ? "weight" : "input",
                                         DescribeValue(v)));
    }
  }
  // Remaining reads of each value; graph outputs (and intermediates, when asked) are kept.
  std::vector<int> reads(graph.values.size(), 0);
  std::vector<bool> keep(graph.values.size(), false);
  for (const planner::Node& node : graph.nodes) {
    for (int id : node.inputs) {
      if (id >= 0) ++reads[id];
    }
    for (int id : node.outputs) {
      if (id >= 0 && options.keep_intermediates) keep[id] = true;
    }
  }
  for (int id : graph.outputs) keep[id] = true;
  for (const planner::Node& node : graph.nodes) {
    KF_RETURN_IF_ERROR(RunNode(graph, node, table));
    for (int id : node.inputs) {
      if (id >= 0 && --reads[id] == 0 && !keep[id]) table.Drop(id);
    }
    for (int id : node.outputs) {
      if (id >= 0 && reads[id] == 0 && !keep[id]) table.Drop(id);
    }
  }
  TensorMap results;
  for (size_t id = 0; id < keep.size(); ++id) {
    if (!keep[id]) continue;
    const int value_id = static_cast<int>(id);
    // A graph output may be an input or constant that no node produced.
    KF_RETURN_IF_ERROR(table.Get(value_id).status());
    results.emplace(value_id, table.Take(value_id));
  }
  return results;
}

}  // namespace kfleet::runtime
