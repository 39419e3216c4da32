// Helpers shared by the import, shape inference and constant folding tests.
#pragma once

#include <gtest/gtest.h>
#include <onnx/defs/parser.h>
#include <onnx/onnx_pb.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "planner/graph.h"
#include "planner/onnx_import.h"

namespace kfleet::planner::import_testing {

// A model in ONNX text form with the given default-domain opset around `graph`
// ("g (float[2] x) => (float[2] y) { y = Relu(x) }").
inline std::string OnnxText(int opset, std::string_view graph) {
  return "<ir_version: 8, opset_import: [\"\" : " + std::to_string(opset) + "]>\n" +
         std::string(graph);
}

// Imports `graph` with value_info and the output shapes removed, so every shape comes from
// kfleet's inference rather than from the model's declarations.
inline Result<Graph> ImportInferred(int opset, std::string_view graph,
                                    const ImportOptions& options = {}) {
  onnx::ModelProto model;
  std::string text = OnnxText(opset, graph);
  auto parsed = onnx::OnnxParser::Parse(model, text.c_str());
  if (!parsed.IsOK()) return InvalidArgument("test graph does not parse: " + parsed.ErrorMessage());
  model.mutable_graph()->clear_value_info();
  for (auto& output : *model.mutable_graph()->mutable_output()) {
    output.mutable_type()->mutable_tensor_type()->clear_shape();
  }
  return ImportOnnxBytes(model.SerializeAsString(), "onnx text", "", options);
}

inline Graph MustImport(int opset, std::string_view graph, const ImportOptions& options = {}) {
  Result<Graph> g = ImportInferred(opset, graph, options);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : Graph{};
}

// The error of an import that must fail ("" when it succeeded).
inline std::string ImportError(int opset, std::string_view graph,
                               const ImportOptions& options = {}) {
  Result<Graph> g = ImportInferred(opset, graph, options);
  return g.ok() ? std::string() : g.status().message();
}

inline const Value& ValueNamed(const Graph& g, std::string_view name) {
  static const Value kMissing;
  int id = g.FindValue(name);
  EXPECT_GE(id, 0) << "no value " << name;
  return id >= 0 ? g.values[id] : kMissing;
}

inline Shape ShapeOf(const Graph& g, std::string_view name) {
  const Value& v = ValueNamed(g, name);
  EXPECT_TRUE(v.has_shape) << name;
  return v.shape;
}

inline std::string TestModelPath(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

}  // namespace kfleet::planner::import_testing
