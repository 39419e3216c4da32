// What onnx_import.cc, shape_inference.cc and constant_folding.cc share: per-node shape inference
// and plan-time evaluation on the IR. Not part of the planner's public surface.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::planner::import_internal {

// Far above any real tensor, low enough that element counts and byte sizes cannot overflow.
inline constexpr int64_t kMaxElements = int64_t{1} << 48;

// Dims are non-negative and their product stays within kMaxElements. `what` starts the message.
Status CheckShape(const Shape& shape, std::string_view what);

// True when shape_inference.cc has a rule for this default-domain op.
bool HasShapeRule(std::string_view op_type);

// Sets dtype, shape and has_shape of every present output of `node` from its inputs (which all
// have shapes), its attributes and, where the rule needs them, the values of constant inputs.
// Rules accept both the attribute and the input form of arguments that moved between opsets 13
// and 18, so they need no opset. Errors start with DescribeNode(node).
Status InferShapes(Graph& graph, const Node& node);

// Evaluates `node` at plan time when it can and the rule is cheap: every input is a constant
// (Shape only needs its input's shape) and no output has more than `max_fold_elements` elements.
// On success the outputs become kConstant and the caller removes the node. Shapes must already be
// inferred.
bool FoldConstant(Graph& graph, const Node& node, int64_t max_fold_elements);

// Numpy broadcasting of two shapes; nullopt when they do not broadcast.
std::optional<Shape> BroadcastShapes(const Shape& a, const Shape& b);

// One axis of a Slice after ONNX's clamping: elements start, start+step, ... (count of them).
struct SliceAxis {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};

// Slice's per-axis ranges over `shape` (one entry per dim; untouched dims take all elements).
// Errors are messages without the node prefix.
Result<std::vector<SliceAxis>> ResolveSlice(const Shape& shape, const std::vector<int64_t>& starts,
                                            const std::vector<int64_t>& ends,
                                            std::vector<int64_t> axes, std::vector<int64_t> steps);

// Value of element `i` of a constant, whichever of ints / floats holds it.
double ConstantAsDouble(const ConstantData& data, size_t i);
int64_t ConstantAsInt(const ConstantData& data, size_t i);
size_t ConstantSize(const ConstantData& data);

}  // namespace kfleet::planner::import_internal
