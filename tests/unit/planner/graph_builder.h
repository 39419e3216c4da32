// Hand-built graphs for the partition and kernel spec tests: values with concrete shapes and
// nodes appended in topological order, the way the importer leaves a model.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "planner/graph.h"
#include "planner/partition.h"

namespace kfleet::planner::partition_testing {

class GraphBuilder {
 public:
  GraphBuilder() {
    graph_.name = "test";
    graph_.ir_version = 8;
    graph_.opset = 17;
  }

  int Input(const std::string& name, Shape shape, DType dtype = DType::kF32) {
    int v = AddValue(name, std::move(shape), dtype, ValueKind::kInput);
    graph_.inputs.push_back(v);
    return v;
  }

  int Weight(const std::string& name, Shape shape, DType dtype = DType::kF32) {
    int v = AddValue(name, std::move(shape), dtype, ValueKind::kWeight);
    graph_.inputs.push_back(v);
    return v;
  }

  int Scalar(double value, DType dtype = DType::kF32) {
    ConstantData data;
    if (IsFloat(dtype)) {
      data.floats = {value};
    } else {
      data.ints = {static_cast<int64_t>(value)};
    }
    return Constant({}, std::move(data), dtype);
  }

  int Ints(std::vector<int64_t> ints) {
    Shape shape = {static_cast<int64_t>(ints.size())};
    ConstantData data;
    data.ints = std::move(ints);
    return Constant(std::move(shape), std::move(data), DType::kI64);
  }

  int Constant(Shape shape, ConstantData data, DType dtype = DType::kF32) {
    int v = AddValue("const" + std::to_string(constants_++), std::move(shape), dtype,
                     ValueKind::kConstant);
    graph_.values[v].constant = std::move(data);
    return v;
  }

  // Appends `op` reading `inputs`; returns its one output, of `shape`.
  int Op(const std::string& op, std::vector<int> inputs, Shape shape,
         std::map<std::string, AttributeValue> attributes = {}, DType dtype = DType::kF32) {
    return OpN(op, std::move(inputs), {std::move(shape)}, std::move(attributes), dtype)[0];
  }

  std::vector<int> OpN(const std::string& op, std::vector<int> inputs, std::vector<Shape> shapes,
                       std::map<std::string, AttributeValue> attributes = {},
                       DType dtype = DType::kF32) {
    Node node;
    node.name = op + "_" + std::to_string(graph_.nodes.size());
    node.op_type = op;
    node.inputs = std::move(inputs);
    node.attributes = std::move(attributes);
    std::vector<int> outputs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      outputs.push_back(AddValue(node.name + "_out" + std::to_string(i), std::move(shapes[i]),
                                 dtype, ValueKind::kActivation));
    }
    node.outputs = outputs;
    graph_.AddNode(std::move(node));
    return outputs;
  }

  void MarkUnsupported(int value) {
    Node& node = graph_.nodes[graph_.values[value].producer];
    node.supported = false;
    node.unsupported_reason = "test: unknown op";
  }

  void Output(int value) { graph_.outputs.push_back(value); }

  int NodeOf(int value) const { return graph_.values[value].producer; }
  const Graph& graph() const { return graph_; }
  Graph& mutable_graph() { return graph_; }

 private:
  int AddValue(const std::string& name, Shape shape, DType dtype, ValueKind kind) {
    Value v;
    v.name = name;
    v.shape = std::move(shape);
    v.has_shape = true;
    v.dtype = dtype;
    v.kind = kind;
    return graph_.AddValue(std::move(v));
  }

  Graph graph_;
  int constants_ = 0;
};

// Partitions and checks the result; a failure is reported and yields no groups.
inline std::vector<FusionGroup> MustPartition(const Graph& graph) {
  Result<std::vector<FusionGroup>> groups = PartitionGraph(graph);
  EXPECT_TRUE(groups.ok()) << groups.status().ToString();
  if (!groups.ok()) return {};
  Status check = CheckPartition(graph, *groups);
  EXPECT_TRUE(check.ok()) << check.ToString();
  return std::move(groups).value();
}

}  // namespace kfleet::planner::partition_testing
