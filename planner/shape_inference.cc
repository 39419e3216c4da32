// Shape and dtype rules for the ONNX ops the planner understands, opsets 13 to 20. Where an input
// moved between attribute and input across opsets (Squeeze axes, Reduce* axes, Split sizes), the
// input wins when present and the attribute is read otherwise, so both forms import at any opset.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <unordered_map>
#include <utility>

#include "planner/import_internal.h"

namespace kfleet::planner::import_internal {
namespace {

// The inputs, outputs and attributes of one node during inference, with errors that name it.
class InferContext {
 public:
  InferContext(Graph& graph, const Node& node) : graph_(graph), node_(node) {}

  const Node& node() const { return node_; }

  bool HasInput(size_t i) const { return i < node_.inputs.size() && node_.inputs[i] >= 0; }
  const Value& Input(size_t i) const { return graph_.values[node_.inputs[i]]; }
  const Shape& InShape(size_t i) const { return Input(i).shape; }
  int64_t Rank(size_t i) const { return static_cast<int64_t>(InShape(i).size()); }
  DType InType(size_t i) const { return Input(i).dtype; }
  size_t NumOutputs() const { return node_.outputs.size(); }

  void SetOutput(size_t i, DType dtype, Shape shape) {
    if (i >= node_.outputs.size() || node_.outputs[i] < 0) return;
    Value& v = graph_.values[node_.outputs[i]];
    v.dtype = dtype;
    v.shape = std::move(shape);
    v.has_shape = true;
  }

  Status Error(std::string_view message) const {
    return InvalidArgument(fmt::format("{}: {}", DescribeNode(node_), message));
  }

  Status RequireInputs(size_t count) const {
    for (size_t i = 0; i < count; ++i) {
      if (!HasInput(i)) {
        return Error(fmt::format("needs {} inputs, input {} is missing", count, i));
      }
    }
    return Status::Ok();
  }

  // Values of a constant input the rule cannot do without (Reshape's shape, Slice's starts).
  Result<std::vector<int64_t>> ConstInts(size_t i, std::string_view role) const {
    KF_ASSIGN_OR_RETURN(const ConstantData* data, Constant(i, role));
    std::vector<int64_t> out(ConstantSize(*data));
    for (size_t k = 0; k < out.size(); ++k) out[k] = ConstantAsInt(*data, k);
    return out;
  }

  Result<std::vector<double>> ConstFloats(size_t i, std::string_view role) const {
    KF_ASSIGN_OR_RETURN(const ConstantData* data, Constant(i, role));
    std::vector<double> out(ConstantSize(*data));
    for (size_t k = 0; k < out.size(); ++k) out[k] = ConstantAsDouble(*data, k);
    return out;
  }

  // Ints from input `i` when present, else from attribute `attr` (the pre-opset-13/18 form).
  Result<std::optional<std::vector<int64_t>>> IntsFromInputOrAttr(size_t i, std::string_view attr,
                                                                  std::string_view role) const {
    if (HasInput(i)) {
      KF_ASSIGN_OR_RETURN(std::vector<int64_t> values, ConstInts(i, role));
      return std::optional<std::vector<int64_t>>(std::move(values));
    }
    if (node_.HasAttr(attr)) return std::optional<std::vector<int64_t>>(node_.IntsAttr(attr));
    return std::optional<std::vector<int64_t>>();
  }

  Result<int64_t> NormalizeAxis(int64_t axis, int64_t rank) const {
    if (axis < -rank || axis >= rank) {
      return Error(fmt::format("axis {} is out of range for rank {}", axis, rank));
    }
    return axis < 0 ? axis + rank : axis;
  }

  // Sorted, distinct, non-negative axes.
  Result<std::vector<int64_t>> NormalizeAxes(const std::vector<int64_t>& axes, int64_t rank) const {
    std::vector<int64_t> out;
    for (int64_t a : axes) {
      KF_ASSIGN_OR_RETURN(int64_t n, NormalizeAxis(a, rank));
      out.push_back(n);
    }
    std::sort(out.begin(), out.end());
    if (std::adjacent_find(out.begin(), out.end()) != out.end()) {
      return Error(fmt::format("axes [{}] repeat an axis", fmt::join(axes, ",")));
    }
    return out;
  }

 private:
  Result<const ConstantData*> Constant(size_t i, std::string_view role) const {
    if (!HasInput(i)) return Error(fmt::format("input {} ({}) is missing", i, role));
    const Value& v = Input(i);
    if (v.kind != ValueKind::kConstant || !v.constant.has_value()) {
      return Error(
          fmt::format("input '{}' ({}) is computed at run time; kfleet needs it known at plan time",
                      v.name, role));
    }
    return &*v.constant;
  }

  Graph& graph_;
  const Node& node_;
};

using Rule = Status (*)(InferContext&);

// Bound on geometry attributes and pads, so that arithmetic on them cannot overflow.
constexpr int64_t kMaxAttributeDim = int64_t{1} << 24;

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

Status SameAsInput(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  c.SetOutput(0, c.InType(0), c.InShape(0));
  return Status::Ok();
}

Status BoolLikeInput(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  c.SetOutput(0, DType::kBool, c.InShape(0));
  return Status::Ok();
}

Status Dropout(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  c.SetOutput(0, c.InType(0), c.InShape(0));
  c.SetOutput(1, DType::kBool, c.InShape(0));
  return Status::Ok();
}

Status AxisWithinRank(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_RETURN_IF_ERROR(c.NormalizeAxis(c.node().IntAttr("axis", -1), c.Rank(0)).status());
  c.SetOutput(0, c.InType(0), c.InShape(0));
  return Status::Ok();
}

Status Trilu(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (c.Rank(0) < 2) {
    return c.Error(fmt::format("needs rank >= 2, got shape {}", ShapeToString(c.InShape(0))));
  }
  c.SetOutput(0, c.InType(0), c.InShape(0));
  return Status::Ok();
}

// Broadcast of every present input; the output dtype is `dtype`, or input `dtype_from`'s.
Status BroadcastAll(InferContext& c, std::optional<DType> dtype, size_t dtype_from) {
  Shape out;
  bool first = true;
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    if (!c.HasInput(i)) continue;
    if (first) {
      out = c.InShape(i);
      first = false;
      continue;
    }
    std::optional<Shape> b = BroadcastShapes(out, c.InShape(i));
    if (!b) {
      return c.Error(fmt::format("shapes {} and {} do not broadcast", ShapeToString(out),
                                 ShapeToString(c.InShape(i))));
    }
    out = std::move(*b);
  }
  if (first) return c.Error("has no inputs");
  if (!dtype && !c.HasInput(dtype_from)) return c.Error("input 0 is missing");
  c.SetOutput(0, dtype ? *dtype : c.InType(dtype_from), std::move(out));
  return Status::Ok();
}

Status Arithmetic(InferContext& c) { return BroadcastAll(c, std::nullopt, 0); }
Status Comparison(InferContext& c) { return BroadcastAll(c, DType::kBool, 0); }

Status Where(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  return BroadcastAll(c, std::nullopt, 1);
}

Status Cast(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (!c.node().HasAttr("to")) return c.Error("has no 'to' attribute");
  Result<DType> to = DTypeFromOnnx(static_cast<int32_t>(c.node().IntAttr("to", 0)));
  if (!to.ok()) return c.Error(to.status().message());
  c.SetOutput(0, *to, c.InShape(0));
  return Status::Ok();
}

Status MatMul(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  Shape a = c.InShape(0);
  Shape b = c.InShape(1);
  if (a.empty() || b.empty()) {
    return c.Error(fmt::format("needs rank >= 1 inputs, got shapes {} and {}", ShapeToString(a),
                               ShapeToString(b)));
  }
  // Numpy matmul: a vector operand gains a unit dim that the output then drops.
  bool a_vector = a.size() == 1;
  bool b_vector = b.size() == 1;
  if (a_vector) a.insert(a.begin(), 1);
  if (b_vector) b.push_back(1);
  int64_t m = a[a.size() - 2];
  int64_t k = a.back();
  int64_t k2 = b[b.size() - 2];
  int64_t n = b.back();
  if (k != k2) {
    return c.Error(fmt::format("inner dimensions differ: {} x {}", ShapeToString(c.InShape(0)),
                               ShapeToString(c.InShape(1))));
  }
  std::optional<Shape> batch =
      BroadcastShapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!batch) {
    return c.Error(fmt::format("batch dimensions of {} and {} do not broadcast",
                               ShapeToString(c.InShape(0)), ShapeToString(c.InShape(1))));
  }
  Shape out = *batch;
  if (!a_vector) out.push_back(m);
  if (!b_vector) out.push_back(n);
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Gemm(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  for (size_t i = 0; i < 2; ++i) {
    if (c.Rank(i) != 2) {
      return c.Error(fmt::format("needs rank 2 inputs, got shape {}", ShapeToString(c.InShape(i))));
    }
  }
  const Shape& a = c.InShape(0);
  const Shape& b = c.InShape(1);
  bool trans_a = c.node().IntAttr("transA", 0) != 0;
  bool trans_b = c.node().IntAttr("transB", 0) != 0;
  int64_t m = trans_a ? a[1] : a[0];
  int64_t k = trans_a ? a[0] : a[1];
  int64_t k2 = trans_b ? b[1] : b[0];
  int64_t n = trans_b ? b[0] : b[1];
  if (k != k2) {
    return c.Error(fmt::format("inner dimensions differ: {} x {} (transA={}, transB={})",
                               ShapeToString(a), ShapeToString(b), trans_a ? 1 : 0,
                               trans_b ? 1 : 0));
  }
  Shape out = {m, n};
  if (c.HasInput(2)) {
    std::optional<Shape> bc = BroadcastShapes(c.InShape(2), out);
    if (!bc || *bc != out) {
      return c.Error(fmt::format("bias shape {} does not broadcast to {}",
                                 ShapeToString(c.InShape(2)), ShapeToString(out)));
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

// Kernel geometry shared by Conv, ConvTranspose and the pools, one entry per spatial dim.
struct Window {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // begins then ends
  std::string auto_pad;
};

Result<Window> ReadWindow(InferContext& c, size_t spatial, std::vector<int64_t> kernel) {
  Window w;
  const Node& node = c.node();
  w.kernel = std::move(kernel);
  w.strides = node.IntsAttr("strides");
  w.dilations = node.IntsAttr("dilations");
  w.pads = node.IntsAttr("pads");
  w.auto_pad = node.StringAttr("auto_pad", "NOTSET");
  if (w.strides.empty()) w.strides.assign(spatial, 1);
  if (w.dilations.empty()) w.dilations.assign(spatial, 1);
  if (w.pads.empty()) w.pads.assign(2 * spatial, 0);
  if (w.kernel.size() != spatial || w.strides.size() != spatial || w.dilations.size() != spatial ||
      w.pads.size() != 2 * spatial) {
    return c.Error(fmt::format(
        "kernel_shape [{}], strides [{}], dilations [{}] and pads [{}] do not match {} spatial "
        "dims",
        fmt::join(w.kernel, ","), fmt::join(w.strides, ","), fmt::join(w.dilations, ","),
        fmt::join(w.pads, ","), spatial));
  }
  for (size_t i = 0; i < spatial; ++i) {
    if (w.kernel[i] < 1 || w.strides[i] < 1 || w.dilations[i] < 1) {
      return c.Error("kernel_shape, strides and dilations must be positive");
    }
    if (w.kernel[i] > kMaxAttributeDim || w.strides[i] > kMaxAttributeDim ||
        w.dilations[i] > kMaxAttributeDim) {
      return c.Error("kernel_shape, strides or dilations are implausibly large");
    }
  }
  for (int64_t p : w.pads) {
    if (p < -kMaxAttributeDim || p > kMaxAttributeDim) return c.Error("pads are implausibly large");
  }
  if (w.auto_pad != "NOTSET" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER" &&
      w.auto_pad != "VALID") {
    return c.Error(fmt::format("unknown auto_pad '{}'", w.auto_pad));
  }
  return w;
}

// Output size of one spatial dim of a convolution or pool.
int64_t WindowOutput(const Window& w, size_t i, int64_t in, bool ceil_mode) {
  int64_t extent = (w.kernel[i] - 1) * w.dilations[i] + 1;
  int64_t stride = w.strides[i];
  if (w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER") return CeilDiv(in, stride);
  if (w.auto_pad == "VALID") return std::max<int64_t>(0, CeilDiv(in - extent + 1, stride));
  int64_t padded = in + w.pads[i] + w.pads[i + w.kernel.size()];
  if (!ceil_mode) return std::max<int64_t>(0, (padded - extent) / stride + 1);
  int64_t out = CeilDiv(padded - extent, stride) + 1;
  // The last window must start inside the input or the left padding (PyTorch and ONNX Runtime
  // agree on this); ceil mode may not add a window that sits entirely in the right padding.
  if ((out - 1) * stride >= in + w.pads[i]) --out;
  return std::max<int64_t>(0, out);
}

// Conv and ConvTranspose: input [N, C, spatial...] and a weight of the same rank.
Status CheckConvOperands(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& x = c.InShape(0);
  const Shape& w = c.InShape(1);
  if (x.size() < 3 || w.size() != x.size()) {
    return c.Error(
        fmt::format("needs input [N,C,spatial...] and weight of the same rank, got {} and {}",
                    ShapeToString(x), ShapeToString(w)));
  }
  return Status::Ok();
}

Status Conv(InferContext& c) {
  KF_RETURN_IF_ERROR(CheckConvOperands(c));
  const Shape& x = c.InShape(0);
  const Shape& w = c.InShape(1);
  int64_t group = c.node().IntAttr("group", 1);
  if (group < 1 || x[1] != w[1] * group || w[0] % group != 0) {
    return c.Error(fmt::format("input channels {} do not match weight {} with group {}", x[1],
                               ShapeToString(w), group));
  }
  size_t spatial = x.size() - 2;
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) kernel.assign(w.begin() + 2, w.end());
  KF_ASSIGN_OR_RETURN(Window win, ReadWindow(c, spatial, kernel));
  if (c.HasInput(2) && c.InShape(2) != Shape{w[0]}) {
    return c.Error(fmt::format("bias shape {} is not [{}]", ShapeToString(c.InShape(2)), w[0]));
  }
  Shape out = {x[0], w[0]};
  for (size_t i = 0; i < spatial; ++i) out.push_back(WindowOutput(win, i, x[i + 2], false));
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status ConvTranspose(InferContext& c) {
  KF_RETURN_IF_ERROR(CheckConvOperands(c));
  const Shape& x = c.InShape(0);
  const Shape& w = c.InShape(1);
  int64_t group = c.node().IntAttr("group", 1);
  if (group < 1 || x[1] != w[0]) {
    return c.Error(fmt::format("input channels {} do not match weight {}", x[1], ShapeToString(w)));
  }
  size_t spatial = x.size() - 2;
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) kernel.assign(w.begin() + 2, w.end());
  KF_ASSIGN_OR_RETURN(Window win, ReadWindow(c, spatial, kernel));
  std::vector<int64_t> output_padding = c.node().IntsAttr("output_padding");
  if (output_padding.empty()) output_padding.assign(spatial, 0);
  std::vector<int64_t> output_shape = c.node().IntsAttr("output_shape");
  if (output_padding.size() != spatial ||
      (!output_shape.empty() && output_shape.size() != spatial &&
       output_shape.size() != spatial + 2)) {
    return c.Error("output_padding or output_shape does not match the spatial dims");
  }
  for (int64_t p : output_padding) {
    if (p < 0 || p > kMaxAttributeDim) return c.Error("output_padding is out of range");
  }
  Shape out = {x[0], w[1] * group};
  for (size_t i = 0; i < spatial; ++i) {
    if (!output_shape.empty()) {
      out.push_back(output_shape[output_shape.size() - spatial + i]);
      continue;
    }
    int64_t extent = (win.kernel[i] - 1) * win.dilations[i] + 1;
    int64_t strided = 0;
    if (__builtin_mul_overflow(win.strides[i], x[i + 2], &strided)) {
      return c.Error("strides give too large an output");
    }
    int64_t full = strided - win.strides[i] + output_padding[i] + extent;
    if (win.auto_pad == "SAME_UPPER" || win.auto_pad == "SAME_LOWER") {
      out.push_back(strided);
    } else if (win.auto_pad == "VALID") {
      out.push_back(full);
    } else {
      out.push_back(full - win.pads[i] - win.pads[i + spatial]);
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Pool(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  if (x.size() < 3) {
    return c.Error(fmt::format("needs input [N,C,spatial...], got {}", ShapeToString(x)));
  }
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) return c.Error("has no kernel_shape");
  KF_ASSIGN_OR_RETURN(Window win, ReadWindow(c, x.size() - 2, kernel));
  bool ceil_mode = c.node().IntAttr("ceil_mode", 0) != 0;
  Shape out = {x[0], x[1]};
  for (size_t i = 0; i + 2 < x.size(); ++i) {
    out.push_back(WindowOutput(win, i, x[i + 2], ceil_mode));
  }
  c.SetOutput(0, c.InType(0), out);
  c.SetOutput(1, DType::kI64, out);  // MaxPool's Indices
  return Status::Ok();
}

Status GlobalPool(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  if (x.size() < 3) {
    return c.Error(fmt::format("needs input [N,C,spatial...], got {}", ShapeToString(x)));
  }
  Shape out(x.size(), 1);
  out[0] = x[0];
  out[1] = x[1];
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Reduce(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      c.IntsFromInputOrAttr(1, "axes", "axes"));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes = given.value_or(std::vector<int64_t>{});
  if (axes.empty()) {
    if (c.node().IntAttr("noop_with_empty_axes", 0) != 0) {
      c.SetOutput(0, c.InType(0), x);
      return Status::Ok();
    }
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  KF_ASSIGN_OR_RETURN(axes, c.NormalizeAxes(axes, c.Rank(0)));
  bool keepdims = c.node().IntAttr("keepdims", 1) != 0;
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    bool reduced = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i));
    if (!reduced) {
      out.push_back(x[i]);
    } else if (keepdims) {
      out.push_back(1);
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status LayerNormalization(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", -1), c.Rank(0)));
  Shape normalized(x.begin() + axis, x.end());
  for (size_t i = 1; i < 3; ++i) {
    if (!c.HasInput(i)) continue;
    std::optional<Shape> bc = BroadcastShapes(c.InShape(i), normalized);
    if (!bc || *bc != normalized) {
      return c.Error(fmt::format("scale/bias shape {} does not broadcast to the normalized dims {}",
                                 ShapeToString(c.InShape(i)), ShapeToString(normalized)));
    }
  }
  c.SetOutput(0, c.InType(0), x);
  Shape stats = x;
  std::fill(stats.begin() + axis, stats.end(), 1);
  Result<DType> stash = DTypeFromOnnx(static_cast<int32_t>(c.node().IntAttr("stash_type", 1)));
  DType stats_type = stash.ok() ? *stash : DType::kF32;
  c.SetOutput(1, stats_type, stats);
  c.SetOutput(2, stats_type, stats);
  return Status::Ok();
}

Status ChannelNormalization(InferContext& c, size_t inputs) {
  KF_RETURN_IF_ERROR(c.RequireInputs(inputs));
  const Shape& x = c.InShape(0);
  if (x.size() < 2) {
    return c.Error(fmt::format("needs input [N,C,...], got {}", ShapeToString(x)));
  }
  for (size_t i = 1; i < inputs; ++i) {
    if (c.InShape(i) != Shape{x[1]}) {
      return c.Error(fmt::format("input {} has shape {}, expected [{}]", i,
                                 ShapeToString(c.InShape(i)), x[1]));
    }
  }
  c.SetOutput(0, c.InType(0), x);
  // Training-mode BatchNormalization also returns the running mean and variance.
  c.SetOutput(1, c.InType(1), Shape{x[1]});
  c.SetOutput(2, c.InType(1), Shape{x[1]});
  return Status::Ok();
}

Status BatchNormalization(InferContext& c) { return ChannelNormalization(c, 5); }
Status InstanceNormalization(InferContext& c) { return ChannelNormalization(c, 3); }

Status Reshape(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> target, c.ConstInts(1, "shape"));
  const Shape& x = c.InShape(0);
  bool allowzero = c.node().IntAttr("allowzero", 0) != 0;
  Shape out;
  int infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t d = target[i];
    if (d == 0 && !allowzero) {
      if (i >= x.size()) {
        return c.Error(fmt::format("shape [{}] copies dim {} from input {}, which has no such dim",
                                   fmt::join(target, ","), i, ShapeToString(x)));
      }
      d = x[i];
    } else if (d == -1) {
      if (infer_at >= 0) {
        return c.Error(fmt::format("shape [{}] has more than one -1", fmt::join(target, ",")));
      }
      infer_at = static_cast<int>(i);
      out.push_back(-1);
      continue;
    } else if (d < 0) {
      return c.Error(fmt::format("shape [{}] has a negative dim", fmt::join(target, ",")));
    }
    if (__builtin_mul_overflow(known, d, &known) || known > kMaxElements) {
      return c.Error(fmt::format("shape [{}] has too many elements", fmt::join(target, ",")));
    }
    out.push_back(d);
  }
  int64_t total = NumElements(x);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0) {
      return c.Error(
          fmt::format("cannot reshape {} to [{}]", ShapeToString(x), fmt::join(target, ",")));
    }
    out[infer_at] = total / known;
  } else if (known != total) {
    return c.Error(fmt::format("cannot reshape {} ({} elements) to [{}]", ShapeToString(x), total,
                               fmt::join(target, ",")));
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Transpose(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> perm = c.node().IntsAttr("perm");
  if (perm.empty()) {
    perm.resize(x.size());
    std::iota(perm.rbegin(), perm.rend(), 0);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] != static_cast<int64_t>(i) || sorted.size() != x.size()) {
      return c.Error(fmt::format("perm [{}] is not a permutation of the dims of {}",
                                 fmt::join(perm, ","), ShapeToString(x)));
    }
  }
  Shape out;
  for (int64_t p : perm) out.push_back(x[p]);
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Squeeze(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      c.IntsFromInputOrAttr(1, "axes", "axes"));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes;
  if (given && !given->empty()) {
    KF_ASSIGN_OR_RETURN(axes, c.NormalizeAxes(*given, c.Rank(0)));
    for (int64_t a : axes) {
      if (x[a] != 1) {
        return c.Error(
            fmt::format("cannot squeeze dim {} of {}: it is not 1", a, ShapeToString(x)));
      }
    }
  } else {
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i] == 1) axes.push_back(static_cast<int64_t>(i));
    }
  }
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(i))) {
      out.push_back(x[i]);
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Unsqueeze(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      c.IntsFromInputOrAttr(1, "axes", "axes"));
  if (!given || given->empty()) return c.Error("has no axes");
  const Shape& x = c.InShape(0);
  int64_t rank = c.Rank(0) + static_cast<int64_t>(given->size());
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> axes, c.NormalizeAxes(*given, rank));
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) {
    if (std::binary_search(axes.begin(), axes.end(), i)) {
      out.push_back(1);
    } else {
      out.push_back(x[next++]);
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Flatten(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  int64_t axis = c.node().IntAttr("axis", 1);
  int64_t rank = c.Rank(0);
  if (axis < -rank || axis > rank) {
    return c.Error(fmt::format("axis {} is out of range for rank {}", axis, rank));
  }
  if (axis < 0) axis += rank;
  Shape outer(x.begin(), x.begin() + axis);
  Shape inner(x.begin() + axis, x.end());
  c.SetOutput(0, c.InType(0), Shape{NumElements(outer), NumElements(inner)});
  return Status::Ok();
}

Status Expand(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> target, c.ConstInts(1, "shape"));
  std::optional<Shape> out = BroadcastShapes(c.InShape(0), target);
  if (!out) {
    return c.Error(fmt::format("cannot expand {} to [{}]", ShapeToString(c.InShape(0)),
                               fmt::join(target, ",")));
  }
  c.SetOutput(0, c.InType(0), std::move(*out));
  return Status::Ok();
}

Status Concat(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (!c.node().HasAttr("axis")) return c.Error("has no 'axis' attribute");
  Shape out = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  for (size_t i = 1; i < c.node().inputs.size(); ++i) {
    if (!c.HasInput(i)) continue;
    const Shape& s = c.InShape(i);
    bool fits = s.size() == out.size();
    for (size_t d = 0; fits && d < s.size(); ++d) {
      fits = static_cast<int64_t>(d) == axis || s[d] == out[d];
    }
    if (!fits) {
      return c.Error(fmt::format("cannot concatenate {} and {} on axis {}",
                                 ShapeToString(c.InShape(0)), ShapeToString(s), axis));
    }
    out[axis] += s[axis];
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Split(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  int64_t dim = x[axis];
  // Sizes come from the split input (opset >= 13), the split attribute (older exports), or an
  // even split into num_outputs (opset >= 18) or into as many outputs as the node has.
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> sizes,
                      c.IntsFromInputOrAttr(1, "split", "split"));
  std::vector<int64_t> split = sizes.value_or(std::vector<int64_t>{});
  if (split.empty()) {
    int64_t parts = c.node().IntAttr("num_outputs", static_cast<int64_t>(c.NumOutputs()));
    if (parts < 1 || parts != static_cast<int64_t>(c.NumOutputs())) {
      return c.Error(
          fmt::format("num_outputs {} does not match its {} outputs", parts, c.NumOutputs()));
    }
    // Opset 18: a dim that does not divide evenly leaves the last part smaller.
    int64_t chunk = CeilDiv(dim, parts);
    for (int64_t i = 0; i < parts; ++i) {
      split.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
  }
  // Each size within [0, dim] first, so the sum cannot overflow.
  const bool in_range =
      std::all_of(split.begin(), split.end(), [&](int64_t s) { return s >= 0 && s <= dim; });
  const int64_t sum = in_range ? std::accumulate(split.begin(), split.end(), int64_t{0}) : -1;
  if (split.size() != c.NumOutputs() || sum != dim) {
    return c.Error(fmt::format("split [{}] does not cut dim {} ({}) of {} into {} outputs",
                               fmt::join(split, ","), axis, dim, ShapeToString(x), c.NumOutputs()));
  }
  for (size_t i = 0; i < split.size(); ++i) {
    Shape out = x;
    out[axis] = split[i];
    c.SetOutput(i, c.InType(0), std::move(out));
  }
  return Status::Ok();
}

Status Slice(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> starts, c.ConstInts(1, "starts"));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> ends, c.ConstInts(2, "ends"));
  std::vector<int64_t> axes;
  std::vector<int64_t> steps;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(axes, c.ConstInts(3, "axes"));
  }
  if (c.HasInput(4)) {
    KF_ASSIGN_OR_RETURN(steps, c.ConstInts(4, "steps"));
  }
  Result<std::vector<SliceAxis>> ranges =
      ResolveSlice(c.InShape(0), starts, ends, std::move(axes), std::move(steps));
  if (!ranges.ok()) return c.Error(ranges.status().message());
  Shape out;
  for (const SliceAxis& r : *ranges) out.push_back(r.count);
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Gather(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& data = c.InShape(0);
  if (data.empty()) return c.Error("needs data of rank >= 1, got a scalar");
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  if (IsFloat(c.InType(1)) || c.InType(1) == DType::kBool) {
    return c.Error(fmt::format("indices must be integers, got {}", DTypeName(c.InType(1))));
  }
  Shape out(data.begin(), data.begin() + axis);
  out.insert(out.end(), c.InShape(1).begin(), c.InShape(1).end());
  out.insert(out.end(), data.begin() + axis + 1, data.end());
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status GatherElements(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.Rank(0) != c.Rank(1) || c.Rank(0) == 0) {
    return c.Error(fmt::format("data {} and indices {} need the same rank >= 1",
                               ShapeToString(c.InShape(0)), ShapeToString(c.InShape(1))));
  }
  KF_RETURN_IF_ERROR(c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)).status());
  c.SetOutput(0, c.InType(0), c.InShape(1));
  return Status::Ok();
}

Status ShapeOp(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  int64_t rank = c.Rank(0);
  // Opset 15 start/end, clamped like Python slicing.
  int64_t start = c.node().IntAttr("start", 0);
  int64_t end = c.node().IntAttr("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  c.SetOutput(0, DType::kI64, Shape{std::max<int64_t>(0, end - start)});
  return Status::Ok();
}

Status ConstantOfShape(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> dims, c.ConstInts(0, "shape"));
  for (int64_t d : dims) {
    if (d < 0) return c.Error(fmt::format("shape [{}] has a negative dim", fmt::join(dims, ",")));
  }
  DType dtype = DType::kF32;
  if (c.node().HasAttr("value.elem_type")) {
    Result<DType> t = DTypeFromOnnx(static_cast<int32_t>(c.node().IntAttr("value.elem_type", 1)));
    if (!t.ok()) return c.Error(t.status().message());
    dtype = *t;
  }
  c.SetOutput(0, dtype, Shape(dims.begin(), dims.end()));
  return Status::Ok();
}

Status Range(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  KF_ASSIGN_OR_RETURN(std::vector<double> start, c.ConstFloats(0, "start"));
  KF_ASSIGN_OR_RETURN(std::vector<double> limit, c.ConstFloats(1, "limit"));
  KF_ASSIGN_OR_RETURN(std::vector<double> delta, c.ConstFloats(2, "delta"));
  if (start.size() != 1 || limit.size() != 1 || delta.size() != 1) {
    return c.Error("start, limit and delta must be scalars");
  }
  if (delta[0] == 0) return c.Error("delta is 0");
  double count = std::ceil((limit[0] - start[0]) / delta[0]);
  if (!std::isfinite(count) || count > static_cast<double>(int64_t{1} << 40)) {
    return c.Error("start, limit and delta give an unbounded range");
  }
  c.SetOutput(0, c.InType(0), Shape{std::max<int64_t>(0, static_cast<int64_t>(count))});
  return Status::Ok();
}

Status Tile(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, c.ConstInts(1, "repeats"));
  const Shape& x = c.InShape(0);
  if (repeats.size() != x.size()) {
    return c.Error(
        fmt::format("repeats [{}] do not match rank {}", fmt::join(repeats, ","), x.size()));
  }
  Shape out = x;
  for (size_t i = 0; i < x.size(); ++i) {
    if (repeats[i] < 0) return c.Error("repeats must not be negative");
    if (__builtin_mul_overflow(out[i], repeats[i], &out[i])) {
      return c.Error(fmt::format("repeats [{}] give too many elements", fmt::join(repeats, ",")));
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

Status Pad(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> pads, c.ConstInts(1, "pads"));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> given, c.ConstInts(3, "axes"));
    for (int64_t a : given) {
      KF_ASSIGN_OR_RETURN(int64_t n, c.NormalizeAxis(a, c.Rank(0)));
      axes.push_back(n);
    }
  } else {
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  if (pads.size() != 2 * axes.size()) {
    return c.Error(fmt::format("pads [{}] need 2 entries for each of {} axes", fmt::join(pads, ","),
                               axes.size()));
  }
  for (int64_t p : pads) {
    if (p < -kMaxAttributeDim || p > kMaxAttributeDim) return c.Error("pads are implausibly large");
  }
  Shape out = x;
  for (size_t i = 0; i < axes.size(); ++i) {
    out[axes[i]] += pads[i] + pads[i + axes.size()];
    if (out[axes[i]] < 0) {
      return c.Error(fmt::format("pads [{}] remove more than all of {}", fmt::join(pads, ","),
                                 ShapeToString(x)));
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

// A dim computed in floating point, range-checked before it becomes an integer.
Result<int64_t> ResizedDim(const InferContext& c, double dim) {
  if (!(dim >= 0 && dim <= static_cast<double>(kMaxElements))) {
    return c.Error("scales or sizes give an out-of-range output dim");
  }
  return static_cast<int64_t>(dim);
}

Status Resize(InferContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes = c.node().IntsAttr("axes");
  if (axes.empty()) {
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  } else {
    for (int64_t& a : axes) {
      KF_ASSIGN_OR_RETURN(a, c.NormalizeAxis(a, c.Rank(0)));
    }
  }
  // Exporters pass an empty tensor for whichever of scales / sizes is not used.
  std::vector<double> scales;
  std::vector<int64_t> sizes;
  if (c.HasInput(2)) {
    KF_ASSIGN_OR_RETURN(scales, c.ConstFloats(2, "scales"));
  }
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(sizes, c.ConstInts(3, "sizes"));
  }
  if (scales.empty() == sizes.empty()) {
    return c.Error("needs exactly one of scales and sizes");
  }
  Shape out = x;
  if (!scales.empty()) {
    if (scales.size() != axes.size()) {
      return c.Error(fmt::format("{} scales for {} axes", scales.size(), axes.size()));
    }
    for (size_t i = 0; i < axes.size(); ++i) {
      if (scales[i] <= 0) return c.Error("scales must be positive");
      KF_ASSIGN_OR_RETURN(out[axes[i]],
                          ResizedDim(c, std::floor(static_cast<double>(x[axes[i]]) * scales[i])));
    }
  } else {
    if (sizes.size() != axes.size()) {
      return c.Error(fmt::format("{} sizes for {} axes", sizes.size(), axes.size()));
    }
    std::string policy = c.node().StringAttr("keep_aspect_ratio_policy", "stretch");
    if (policy == "stretch") {
      for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = sizes[i];
    } else if (policy == "not_larger" || policy == "not_smaller") {
      // One scale for all axes, the smallest (or largest) that the requested sizes allow.
      double scale = policy == "not_larger" ? std::numeric_limits<double>::max() : 0.0;
      for (size_t i = 0; i < axes.size(); ++i) {
        if (x[axes[i]] == 0) return c.Error("cannot keep the aspect ratio of an empty dim");
        double s = static_cast<double>(sizes[i]) / static_cast<double>(x[axes[i]]);
        scale = policy == "not_larger" ? std::min(scale, s) : std::max(scale, s);
      }
      for (int64_t a : axes) {
        KF_ASSIGN_OR_RETURN(out[a],
                            ResizedDim(c, std::nearbyint(scale * static_cast<double>(x[a]))));
      }
    } else {
      return c.Error(fmt::format("unknown keep_aspect_ratio_policy '{}'", policy));
    }
  }
  c.SetOutput(0, c.InType(0), std::move(out));
  return Status::Ok();
}

const std::unordered_map<std::string_view, Rule>& Rules() {
  static const auto* rules = new std::unordered_map<std::string_view, Rule>{
      {"Add", Arithmetic},
      {"Sub", Arithmetic},
      {"Mul", Arithmetic},
      {"Div", Arithmetic},
      {"Pow", Arithmetic},
      {"Max", Arithmetic},
      {"Min", Arithmetic},
      {"Equal", Comparison},
      {"Less", Comparison},
      {"Greater", Comparison},
      {"LessOrEqual", Comparison},
      {"GreaterOrEqual", Comparison},
      {"And", Comparison},
      {"Or", Comparison},
      {"Where", Where},
      {"Sqrt", SameAsInput},
      {"Reciprocal", SameAsInput},
      {"Neg", SameAsInput},
      {"Exp", SameAsInput},
      {"Log", SameAsInput},
      {"Erf", SameAsInput},
      {"Tanh", SameAsInput},
      {"Sigmoid", SameAsInput},
      {"Relu", SameAsInput},
      {"LeakyRelu", SameAsInput},
      {"Clip", SameAsInput},
      {"Gelu", SameAsInput},
      {"HardSigmoid", SameAsInput},
      {"HardSwish", SameAsInput},
      {"Softplus", SameAsInput},
      {"Abs", SameAsInput},
      {"Cos", SameAsInput},
      {"Sin", SameAsInput},
      {"Identity", SameAsInput},
      {"Not", BoolLikeInput},
      {"IsNaN", BoolLikeInput},
      {"Dropout", Dropout},
      {"Softmax", AxisWithinRank},
      {"LogSoftmax", AxisWithinRank},
      {"Trilu", Trilu},
      {"Cast", Cast},
      {"MatMul", MatMul},
      {"Gemm", Gemm},
      {"Conv", Conv},
      {"ConvTranspose", ConvTranspose},
      {"MaxPool", Pool},
      {"AveragePool", Pool},
      {"GlobalAveragePool", GlobalPool},
      {"ReduceMean", Reduce},
      {"ReduceSum", Reduce},
      {"ReduceMax", Reduce},
      {"LayerNormalization", LayerNormalization},
      {"BatchNormalization", BatchNormalization},
      {"InstanceNormalization", InstanceNormalization},
      {"Reshape", Reshape},
      {"Transpose", Transpose},
      {"Squeeze", Squeeze},
      {"Unsqueeze", Unsqueeze},
      {"Flatten", Flatten},
      {"Expand", Expand},
      {"Concat", Concat},
      {"Split", Split},
      {"Slice", Slice},
      {"Gather", Gather},
      {"GatherElements", GatherElements},
      {"Shape", ShapeOp},
      {"ConstantOfShape", ConstantOfShape},
      {"Range", Range},
      {"Tile", Tile},
      {"Pad", Pad},
      {"Resize", Resize},
  };
  return *rules;
}

}  // namespace

bool HasShapeRule(std::string_view op_type) { return Rules().count(op_type) != 0; }

Status InferShapes(Graph& graph, const Node& node) {
  auto it = Rules().find(node.op_type);
  if (it == Rules().end()) {
    return InvalidArgument(fmt::format("{}: no shape rule for this op", DescribeNode(node)));
  }
  InferContext context(graph, node);
  KF_RETURN_IF_ERROR(it->second(context));
  for (int out : node.outputs) {
    if (out < 0) continue;
    const Value& v = graph.values[out];
    KF_RETURN_IF_ERROR(CheckShape(v.shape, fmt::format("{}: output '{}' {}", DescribeNode(node),
                                                       v.name, ShapeToString(v.shape))));
  }
  return Status::Ok();
}

Status CheckShape(const Shape& shape, std::string_view what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument(fmt::format("{} has a negative dim", what));
    if (d > 0 && n > kMaxElements / d) {
      return InvalidArgument(fmt::format("{} has too many elements", what));
    }
    n *= d;
  }
  return Status::Ok();
}

std::optional<Shape> BroadcastShapes(const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[out.size() - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

Result<std::vector<SliceAxis>> ResolveSlice(const Shape& shape, const std::vector<int64_t>& starts,
                                            const std::vector<int64_t>& ends,
                                            std::vector<int64_t> axes, std::vector<int64_t> steps) {
  const auto rank = static_cast<int64_t>(shape.size());
  if (axes.empty()) {
    axes.resize(starts.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return InvalidArgument(fmt::format(
        "starts [{}], ends [{}], axes [{}] and steps [{}] differ in length", fmt::join(starts, ","),
        fmt::join(ends, ","), fmt::join(axes, ","), fmt::join(steps, ",")));
  }
  std::vector<SliceAxis> out(shape.size());
  std::vector<bool> seen(shape.size(), false);
  for (size_t d = 0; d < shape.size(); ++d) out[d] = {0, 1, shape[d]};
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t axis = axes[i];
    if (axis < -rank || axis >= rank) {
      return InvalidArgument(fmt::format("axis {} is out of range for rank {}", axis, rank));
    }
    if (axis < 0) axis += rank;
    if (seen[axis]) return InvalidArgument(fmt::format("axis {} is sliced twice", axis));
    seen[axis] = true;
    int64_t step = steps[i];
    if (step == 0) return InvalidArgument("a step is 0");
    int64_t dim = shape[axis];
    if (dim == 0) {
      out[axis] = {0, step, 0};
      continue;
    }
    // Exporters write INT64_MAX / INT64_MIN for "to the end"; adding a dim to INT64_MIN cannot
    // overflow and the clamps below bring both into range.
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count = 0;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      count = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      // -INT64_MIN does not exist; any step at least as long as the dim takes one element.
      int64_t stride = std::min(-(step + 1), dim) + 1;
      count = start > end ? (start - end - 1) / stride + 1 : 0;
    }
    out[axis] = {start, step, count};
  }
  return out;
}

}  // namespace kfleet::planner::import_internal
