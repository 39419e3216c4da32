// Private to the float64 reference (reference.cc): one function per ONNX op and what they share.
// Every tensor here is held in f64 (floating values), i64 (integers) or bool, whatever the graph's
// dtype, so an op only ever sees those three.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/tensor.h"

namespace kfleet::runtime::reference_internal {

// f64 for floating dtypes, bool for bool, i64 for every integer dtype.
DType HeldDType(DType dtype);

// One node being run: its inputs in held dtypes, the outputs the op produces, and errors that name
// the node.
class NodeRun {
 public:
  NodeRun(const planner::Graph& graph, const planner::Node& node,
          std::vector<const Tensor*> inputs);

  const planner::Node& node() const { return node_; }

  // False for an omitted optional input (and past the end).
  bool Has(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  const Tensor& In(size_t i) const { return *inputs_[i]; }
  size_t NumInputs() const { return inputs_.size(); }

  size_t NumOutputs() const { return node_.outputs.size(); }
  // False for an omitted optional output.
  bool Wants(size_t i) const { return i < node_.outputs.size() && node_.outputs[i] >= 0; }
  // The graph's value for a wanted output: Cast, ConstantOfShape and the stats outputs produce its
  // dtype.
  const planner::Value& OutValue(size_t i) const;
  DType OutDType(size_t i) const { return HeldDType(OutValue(i).dtype); }
  // Ignored for an omitted output.
  void SetOutput(size_t i, Tensor tensor);
  std::vector<Tensor>& outputs() { return outputs_; }

  // InvalidArgument "node 'n3' (Softmax): <message>".
  Status Error(std::string_view message) const;
  // An error unless inputs 0 .. count-1 are all present.
  Status Require(size_t count) const;
  // An error unless input i is held as f64.
  Status RequireFloat(size_t i) const;
  // The elements of integer input i: shape arguments such as Reshape's shape or Slice's starts.
  Result<std::vector<int64_t>> Ints(size_t i, std::string_view role) const;
  // One element of input i, for scalar arguments (Clip's min, Trilu's k).
  Result<double> ScalarDouble(size_t i, std::string_view role) const;
  Result<int64_t> ScalarInt(size_t i, std::string_view role) const;
  // Ints from input i when present, else from attribute `attr` (the form before opset 13 / 18),
  // else nullopt: the shape rules read Squeeze, Reduce* and Split arguments the same way.
  Result<std::optional<std::vector<int64_t>>> IntsFromInputOrAttr(size_t i,
                                                                  std::string_view attr) const;
  // `axis` in [-rank, rank) made non-negative.
  Result<int64_t> NormalizeAxis(int64_t axis, int64_t rank) const;

 private:
  const planner::Graph& graph_;
  const planner::Node& node_;
  std::vector<const Tensor*> inputs_;
  std::vector<Tensor> outputs_;
};

// Calls f(n, index) for every element of `shape` in row-major order: n is the flat position and
// index the coordinates (an empty vector for a scalar).
template <typename F>
void ForEachIndex(const Shape& shape, F&& f) {
  const int64_t count = planner::NumElements(shape);
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t n = 0; n < count; ++n) {
    f(n, static_cast<const std::vector<int64_t>&>(index));
    for (size_t d = shape.size(); d-- > 0;) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
}

// Numpy broadcasting of two shapes; nullopt when they do not broadcast.
std::optional<Shape> BroadcastShapes(const Shape& a, const Shape& b);

// For each element of `out` (row-major), the offset of the element of `in` it reads when `in` is
// broadcast to `out`. `in` must broadcast to `out`.
std::vector<int64_t> BroadcastOffsets(const Shape& in, const Shape& out);

// A tensor of `in`'s dtype and `shape` whose element n is in[offsets[n]]; an offset of -1 gives
// `fill` instead (Pad's constant).
Tensor GatherByOffsets(const Tensor& in, const Shape& shape, const std::vector<int64_t>& offsets,
                       double fill = 0);

// `in`'s elements under another shape with the same element count.
Tensor Reshaped(const Tensor& in, const Shape& shape);

// ceil(a / b) for b > 0 and any sign of a.
int64_t CeilDiv(int64_t a, int64_t b);

using OpFunction = Status (*)(NodeRun&);

// The implementation of the default-domain op `op_type`; nullptr when the reference has none.
// Defined in reference_ops.cc with the elementwise ops, activations, Softmax, Cast, Trilu,
// reductions and normalizations, which nothing else calls.
OpFunction FindReferenceOp(std::string_view op_type);

// reference_ops_nn.cc: contractions, windows and resampling.
Status MatMul(NodeRun& run);
Status Gemm(NodeRun& run);
Status Conv(NodeRun& run);
Status ConvTranspose(NodeRun& run);
Status MaxPool(NodeRun& run);
Status AveragePool(NodeRun& run);
Status GlobalAveragePool(NodeRun& run);
Status Resize(NodeRun& run);

// reference_ops_layout.cc: data movement and shape ops.
Status Reshape(NodeRun& run);
Status Transpose(NodeRun& run);
Status Squeeze(NodeRun& run);
Status Unsqueeze(NodeRun& run);
Status Flatten(NodeRun& run);
Status Expand(NodeRun& run);
Status Concat(NodeRun& run);
Status Split(NodeRun& run);
Status Slice(NodeRun& run);
Status Gather(NodeRun& run);
Status GatherElements(NodeRun& run);
Status ShapeOf(NodeRun& run);
Status ConstantOfShape(NodeRun& run);
Status Range(NodeRun& run);
Status Tile(NodeRun& run);
Status Pad(NodeRun& run);

}  // namespace kfleet::runtime::reference_internal
