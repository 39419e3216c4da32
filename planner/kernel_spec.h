// A fusion group as a kernel spec: a standalone ONNX model (valid on its own: inputs, outputs,
// shapes, dtypes, the constant initializers it needs) plus the metadata the search needs. Equal
// specs (same ops, attributes, shapes, dtypes, constants) have the same hash.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"
#include "planner/partition.h"

namespace kfleet::planner {

struct TensorSpec {
  std::string name;  // canonical: "in0", "in1", ..., "out0", ...
  DType dtype = DType::kF32;
  Shape shape;
};

struct KernelSpec {
  // Readable and stable: "gemm+gelu_tanh 128x768x3072 f32" (M x K x N, a batch in front when
  // both operands are activations), "conv+relu 8x64x56x56 w64x64x3x3 s2x2 f32" (input, weight,
  // strides when not 1), else the anchor's input shape ("attention 1x12x128x64 f32": Q).
  std::string name;
  std::string family;
  std::vector<std::string> op_types;  // the subgraph's ops in order
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::string onnx_model;  // serialized onnx::ModelProto of the standalone subgraph
  // Filled by the ranker from the target's cost model (see rank.h).
  double flops = 0;
  double bytes = 0;  // fused minimum
  std::string hash;  // SHA-256 hex of the canonical form (names and node names excluded)
};

Result<KernelSpec> BuildKernelSpec(const Graph& graph, const FusionGroup& group);

}  // namespace kfleet::planner
