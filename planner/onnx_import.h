// ONNX model import: protobuf (or ONNX text form) -> Graph with every shape concrete, shape
// arithmetic folded to constants, and unknown ops marked unsupported instead of failing the model.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::planner {

struct ImportOptions {
  // Bindings for symbolic dimensions ("batch" -> 8), from `--dim NAME=VALUE`.
  std::map<std::string, int64_t> dims;
  // When set, every floating tensor (inputs, weights, activations, Cast targets) becomes this
  // dtype: the precision the model will run in on the target.
  std::optional<DType> compute_dtype;
  // Shape arithmetic whose result has more elements than this stays a runtime node.
  int64_t max_fold_elements = 1 << 16;
};

// A `--dtype` value: empty means as exported (nullopt); otherwise a floating dtype ("fp32",
// "fp16", "bf16", or another spelling ParseDType accepts).
Result<std::optional<DType>> ParseComputeDtype(std::string_view text);

// Reads MODEL.onnx; external data is resolved relative to the model's directory. Every error is
// one line that starts with the file name: "m.onnx: node 'x' (Reshape): ...".
Result<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options);

// The same from bytes already in memory. `display_name` prefixes errors; `external_data_dir` is
// where external-data locations are resolved (empty: they are an error).
Result<Graph> ImportOnnxBytes(std::string_view bytes, std::string_view display_name,
                              const std::string& external_data_dir, const ImportOptions& options);

// ONNX text form (onnx::OnnxParser syntax, "<ir_version: 8, opset_import: [\"\" : 17]> g (...)
// => (...) { ... }"), for tests and hand-written graphs.
Result<Graph> ImportOnnxText(std::string_view text, const ImportOptions& options);

// The same text form as a serialized ModelProto: hand-written specs and test models as files.
Result<std::string> OnnxTextToModelBytes(std::string_view text);

}  // namespace kfleet::planner
