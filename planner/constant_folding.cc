// Plan-time evaluation of shape arithmetic (Shape -> Gather -> Concat -> Reshape and friends), so
// shape inference sees the values that exporters compute at run time. Only small tensors are
// evaluated; everything here runs on ConstantData (int64 for integer and bool dtypes, double for
// floating ones) in row-major order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "planner/import_internal.h"

namespace kfleet::planner::import_internal {
namespace {

// Values of one input, numbers read as double or int64 whatever the storage.
struct Operand {
  const Value* value;
  const ConstantData* data;
  bool is_float() const { return IsFloat(value->dtype); }
  double F(size_t i) const { return ConstantAsDouble(*data, i); }
  int64_t I(size_t i) const { return ConstantAsInt(*data, i); }
};

// A result being built in the storage that `dtype` asks for.
class Output {
 public:
  explicit Output(DType dtype) : float_(IsFloat(dtype)) {}
  void Push(double v) {
    if (float_) {
      data_.floats.push_back(v);
    } else {
      data_.ints.push_back(static_cast<int64_t>(v));
    }
  }
  void PushInt(int64_t v) {
    if (float_) {
      data_.floats.push_back(static_cast<double>(v));
    } else {
      data_.ints.push_back(v);
    }
  }
  // Copies element `i` of `in`, which has the same dtype.
  void Copy(const Operand& in, size_t i) {
    if (float_) {
      data_.floats.push_back(in.F(i));
    } else {
      data_.ints.push_back(in.I(i));
    }
  }
  ConstantData Take() && { return std::move(data_); }

 private:
  bool float_;
  ConstantData data_;
};

// What one fold rule sees: the node's operands and output shapes; nullopt from a rule means "leave
// it to run time" (an index out of range, a division by zero).
struct FoldContext {
  const Graph& graph;
  const Node& node;
  std::vector<std::optional<Operand>> inputs;  // nullopt for omitted optional inputs

  const Operand& In(size_t i) const { return *inputs[i]; }
  bool HasInput(size_t i) const { return i < inputs.size() && inputs[i].has_value(); }
  const Value& Out(size_t i) const { return graph.values[node.outputs[i]]; }
};

using FoldRule = std::optional<std::vector<ConstantData>> (*)(const FoldContext&);

std::optional<std::vector<ConstantData>> One(ConstantData data) {
  std::vector<ConstantData> out;
  out.push_back(std::move(data));
  return out;
}

// For each element of `out`, the row-major index of the element of `in` it reads under numpy
// broadcasting.
std::vector<size_t> BroadcastIndices(const Shape& in, const Shape& out) {
  const size_t rank = out.size();
  std::vector<int64_t> stride(rank, 0);
  int64_t s = 1;
  for (size_t i = 0; i < in.size(); ++i) {
    size_t d_in = in.size() - 1 - i;
    stride[rank - 1 - i] = in[d_in] == 1 ? 0 : s;
    s *= in[d_in];
  }
  std::vector<size_t> indices(static_cast<size_t>(NumElements(out)));
  std::vector<int64_t> counter(rank, 0);
  int64_t offset = 0;
  for (size_t& index : indices) {
    index = static_cast<size_t>(offset);
    for (size_t d = rank; d-- > 0;) {
      offset += stride[d];
      if (++counter[d] < out[d]) break;
      offset -= stride[d] * counter[d];
      counter[d] = 0;
    }
  }
  return indices;
}

std::optional<std::vector<ConstantData>> CopyInput(const FoldContext& c) {
  Output out(c.Out(0).dtype);
  for (size_t i = 0; i < ConstantSize(*c.In(0).data); ++i) out.Copy(c.In(0), i);
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Cast(const FoldContext& c) {
  const DType to = c.Out(0).dtype;
  const Operand& in = c.In(0);
  ConstantData out;
  for (size_t i = 0; i < ConstantSize(*in.data); ++i) {
    if (IsFloat(to)) {
      out.floats.push_back(in.F(i));
      continue;
    }
    int64_t v = 0;
    if (in.is_float()) {
      double f = in.F(i);
      if (to == DType::kBool) {
        v = f != 0 ? 1 : 0;
      } else if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) {
        return std::nullopt;  // undefined in ONNX; leave it to the runtime
      } else {
        v = static_cast<int64_t>(f);
      }
    } else {
      v = in.I(i);
    }
    // Narrowing integer casts wrap, as numpy and ONNX Runtime do.
    switch (to) {
      case DType::kBool:
        v = v != 0 ? 1 : 0;
        break;
      case DType::kI32:
        v = static_cast<int32_t>(v);
        break;
      case DType::kI16:
        v = static_cast<int16_t>(v);
        break;
      case DType::kI8:
        v = static_cast<int8_t>(v);
        break;
      case DType::kU8:
        v = static_cast<uint8_t>(v);
        break;
      default:
        break;
    }
    out.ints.push_back(v);
  }
  return One(std::move(out));
}

std::optional<std::vector<ConstantData>> ShapeOf(const FoldContext& c) {
  const Shape& shape = c.graph.values[c.node.inputs[0]].shape;
  const auto rank = static_cast<int64_t>(shape.size());
  int64_t start = c.node.IntAttr("start", 0);
  if (start < 0) start += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  ConstantData out;
  const int64_t count = c.Out(0).shape[0];
  out.ints.assign(shape.begin() + start, shape.begin() + start + count);
  return One(std::move(out));
}

std::optional<std::vector<ConstantData>> ConstantOfShape(const FoldContext& c) {
  Output out(c.Out(0).dtype);
  double fill = c.node.FloatAttr("value", 0.0);
  int64_t fill_int = c.node.IntAttr("value", 0);
  for (int64_t i = 0; i < NumElements(c.Out(0).shape); ++i) {
    if (IsFloat(c.Out(0).dtype)) {
      out.Push(fill);
    } else {
      out.PushInt(fill_int);
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Range(const FoldContext& c) {
  Output out(c.Out(0).dtype);
  const int64_t count = c.Out(0).shape[0];
  for (int64_t k = 0; k < count; ++k) {
    if (c.In(0).is_float()) {
      out.Push(c.In(0).F(0) + static_cast<double>(k) * c.In(2).F(0));
    } else {
      out.PushInt(c.In(0).I(0) + k * c.In(2).I(0));
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Concat(const FoldContext& c) {
  const Shape& shape = c.Out(0).shape;
  int64_t axis = c.node.IntAttr("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(shape.size());
  const Shape outer_dims(shape.begin(), shape.begin() + axis);
  const Shape inner_dims(shape.begin() + axis + 1, shape.end());
  const int64_t outer = NumElements(outer_dims);
  const int64_t inner = NumElements(inner_dims);
  Output out(c.Out(0).dtype);
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      if (!c.HasInput(i)) continue;
      const int64_t chunk = c.In(i).value->shape[axis] * inner;
      for (int64_t k = 0; k < chunk; ++k) out.Copy(c.In(i), static_cast<size_t>(o * chunk + k));
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Gather(const FoldContext& c) {
  const Shape& data = c.In(0).value->shape;
  int64_t axis = c.node.IntAttr("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(data.size());
  const int64_t outer = NumElements(Shape(data.begin(), data.begin() + axis));
  const int64_t inner = NumElements(Shape(data.begin() + axis + 1, data.end()));
  const int64_t dim = data[axis];
  const size_t num_indices = ConstantSize(*c.In(1).data);
  Output out(c.Out(0).dtype);
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t j = 0; j < num_indices; ++j) {
      int64_t index = c.In(1).I(j);
      if (index < 0) index += dim;
      if (index < 0 || index >= dim) return std::nullopt;
      for (int64_t k = 0; k < inner; ++k) {
        out.Copy(c.In(0), static_cast<size_t>((o * dim + index) * inner + k));
      }
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Slice(const FoldContext& c) {
  auto ints = [&](size_t i) {
    std::vector<int64_t> v;
    if (!c.HasInput(i)) return v;
    for (size_t k = 0; k < ConstantSize(*c.In(i).data); ++k) v.push_back(c.In(i).I(k));
    return v;
  };
  const Shape& shape = c.In(0).value->shape;
  Result<std::vector<SliceAxis>> ranges = ResolveSlice(shape, ints(1), ints(2), ints(3), ints(4));
  if (!ranges.ok()) return std::nullopt;
  const size_t rank = shape.size();
  std::vector<int64_t> strides(rank, 1);
  for (size_t d = rank; d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  Shape out_shape;
  for (const SliceAxis& r : *ranges) out_shape.push_back(r.count);
  Output out(c.Out(0).dtype);
  std::vector<int64_t> counter(rank, 0);
  for (int64_t n = 0; n < NumElements(out_shape); ++n) {
    int64_t offset = 0;
    for (size_t d = 0; d < rank; ++d) {
      offset += ((*ranges)[d].start + counter[d] * (*ranges)[d].step) * strides[d];
    }
    out.Copy(c.In(0), static_cast<size_t>(offset));
    for (size_t d = rank; d-- > 0;) {
      if (++counter[d] < out_shape[d]) break;
      counter[d] = 0;
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Expand(const FoldContext& c) {
  Output out(c.Out(0).dtype);
  for (size_t i : BroadcastIndices(c.In(0).value->shape, c.Out(0).shape)) out.Copy(c.In(0), i);
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Where(const FoldContext& c) {
  const Shape& shape = c.Out(0).shape;
  std::vector<size_t> cond = BroadcastIndices(c.In(0).value->shape, shape);
  std::vector<size_t> x = BroadcastIndices(c.In(1).value->shape, shape);
  std::vector<size_t> y = BroadcastIndices(c.In(2).value->shape, shape);
  Output out(c.Out(0).dtype);
  for (size_t n = 0; n < cond.size(); ++n) {
    if (c.In(0).I(cond[n]) != 0) {
      out.Copy(c.In(1), x[n]);
    } else {
      out.Copy(c.In(2), y[n]);
    }
  }
  return One(std::move(out).Take());
}

// Integer arithmetic wraps (through uint64) instead of overflowing; a division that C++ leaves
// undefined is not folded.
enum class BinaryOp { kAdd, kSub, kMul, kDiv, kMax, kMin, kEq, kLt, kGt, kLe, kGe, kAnd, kOr };

// The ops that mean the same for integers and floating values.
template <typename T>
T ApplyOrderOrLogic(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kMax:
      return std::max(a, b);
    case BinaryOp::kMin:
      return std::min(a, b);
    case BinaryOp::kEq:
      return a == b;
    case BinaryOp::kLt:
      return a < b;
    case BinaryOp::kGt:
      return a > b;
    case BinaryOp::kLe:
      return a <= b;
    case BinaryOp::kGe:
      return a >= b;
    case BinaryOp::kAnd:
      return a != 0 && b != 0;
    case BinaryOp::kOr:
      return a != 0 || b != 0;
    default:
      return 0;
  }
}

std::optional<int64_t> ApplyInt(BinaryOp op, int64_t a, int64_t b) {
  const auto ua = static_cast<uint64_t>(a);
  const auto ub = static_cast<uint64_t>(b);
  switch (op) {
    case BinaryOp::kAdd:
      return static_cast<int64_t>(ua + ub);
    case BinaryOp::kSub:
      return static_cast<int64_t>(ua - ub);
    case BinaryOp::kMul:
      return static_cast<int64_t>(ua * ub);
    case BinaryOp::kDiv:
      if (b == 0 || (a == std::numeric_limits<int64_t>::min() && b == -1)) return std::nullopt;
      return a / b;
    default:
      return ApplyOrderOrLogic(op, a, b);
  }
}

double ApplyFloat(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::kAdd:
      return a + b;
    case BinaryOp::kSub:
      return a - b;
    case BinaryOp::kMul:
      return a * b;
    case BinaryOp::kDiv:
      return a / b;
    default:
      return ApplyOrderOrLogic(op, a, b);
  }
}

template <BinaryOp kOp>
std::optional<std::vector<ConstantData>> Binary(const FoldContext& c) {
  // Max and Min take any number of inputs; only the common two-input form is folded.
  if (c.inputs.size() != 2 || !c.HasInput(0) || !c.HasInput(1)) return std::nullopt;
  const Shape& shape = c.Out(0).shape;
  std::vector<size_t> ia = BroadcastIndices(c.In(0).value->shape, shape);
  std::vector<size_t> ib = BroadcastIndices(c.In(1).value->shape, shape);
  Output out(c.Out(0).dtype);
  for (size_t n = 0; n < ia.size(); ++n) {
    if (c.In(0).is_float()) {
      out.Push(ApplyFloat(kOp, c.In(0).F(ia[n]), c.In(1).F(ib[n])));
    } else {
      std::optional<int64_t> v = ApplyInt(kOp, c.In(0).I(ia[n]), c.In(1).I(ib[n]));
      if (!v) return std::nullopt;
      out.PushInt(*v);
    }
  }
  return One(std::move(out).Take());
}

std::optional<std::vector<ConstantData>> Not(const FoldContext& c) {
  ConstantData out;
  for (size_t i = 0; i < ConstantSize(*c.In(0).data); ++i) out.ints.push_back(c.In(0).I(i) == 0);
  return One(std::move(out));
}

std::optional<std::vector<ConstantData>> Neg(const FoldContext& c) {
  Output out(c.Out(0).dtype);
  for (size_t i = 0; i < ConstantSize(*c.In(0).data); ++i) {
    if (c.In(0).is_float()) {
      out.Push(-c.In(0).F(i));
    } else {
      out.PushInt(static_cast<int64_t>(0 - static_cast<uint64_t>(c.In(0).I(i))));
    }
  }
  return One(std::move(out).Take());
}

// Exporters compute attention scales as Sqrt(Cast(Shape(x)[-1])).
std::optional<std::vector<ConstantData>> Sqrt(const FoldContext& c) {
  if (!c.In(0).is_float()) return std::nullopt;
  ConstantData out;
  for (size_t i = 0; i < ConstantSize(*c.In(0).data); ++i) {
    out.floats.push_back(std::sqrt(c.In(0).F(i)));
  }
  return One(std::move(out));
}

const std::unordered_map<std::string_view, FoldRule>& FoldRules() {
  static const auto* rules = new std::unordered_map<std::string_view, FoldRule>{
      {"Identity", CopyInput},
      {"Reshape", CopyInput},
      {"Squeeze", CopyInput},
      {"Unsqueeze", CopyInput},
      {"Flatten", CopyInput},
      {"Cast", Cast},
      {"Shape", ShapeOf},
      {"ConstantOfShape", ConstantOfShape},
      {"Range", Range},
      {"Concat", Concat},
      {"Gather", Gather},
      {"Slice", Slice},
      {"Expand", Expand},
      {"Where", Where},
      {"Add", Binary<BinaryOp::kAdd>},
      {"Sub", Binary<BinaryOp::kSub>},
      {"Mul", Binary<BinaryOp::kMul>},
      {"Div", Binary<BinaryOp::kDiv>},
      {"Max", Binary<BinaryOp::kMax>},
      {"Min", Binary<BinaryOp::kMin>},
      {"Equal", Binary<BinaryOp::kEq>},
      {"Less", Binary<BinaryOp::kLt>},
      {"Greater", Binary<BinaryOp::kGt>},
      {"LessOrEqual", Binary<BinaryOp::kLe>},
      {"GreaterOrEqual", Binary<BinaryOp::kGe>},
      {"And", Binary<BinaryOp::kAnd>},
      {"Or", Binary<BinaryOp::kOr>},
      {"Not", Not},
      {"Neg", Neg},
      {"Sqrt", Sqrt},
  };
  return *rules;
}

}  // namespace

double ConstantAsDouble(const ConstantData& data, size_t i) {
  return data.floats.empty() ? static_cast<double>(data.ints[i]) : data.floats[i];
}

int64_t ConstantAsInt(const ConstantData& data, size_t i) {
  if (data.floats.empty()) return data.ints[i];
  // Saturates: an integer read from a floating constant is only used for shape checks.
  double f = data.floats[i];
  if (std::isnan(f)) return 0;
  if (f >= 9.2e18) return std::numeric_limits<int64_t>::max();
  if (f <= -9.2e18) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(f);
}

size_t ConstantSize(const ConstantData& data) { return data.ints.size() + data.floats.size(); }

bool FoldConstant(Graph& graph, const Node& node, int64_t max_fold_elements) {
  auto rule = FoldRules().find(node.op_type);
  if (rule == FoldRules().end() || !node.domain.empty()) return false;
  FoldContext context{graph, node, {}};
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (node.inputs[i] < 0) {
      context.inputs.emplace_back(std::nullopt);
      continue;
    }
    const Value& v = graph.values[node.inputs[i]];
    if (node.op_type == "Shape") {
      if (!v.has_shape) return false;
      context.inputs.emplace_back(Operand{&v, nullptr});
      continue;
    }
    if (v.kind != ValueKind::kConstant || !v.constant.has_value()) return false;
    context.inputs.emplace_back(Operand{&v, &*v.constant});
  }
  if (context.inputs.empty() || !context.inputs[0].has_value()) return false;
  for (int out : node.outputs) {
    if (out < 0) continue;
    const Value& v = graph.values[out];
    if (!v.has_shape || NumElements(v.shape) > max_fold_elements) return false;
  }
  std::optional<std::vector<ConstantData>> results = rule->second(context);
  if (!results || results->size() != node.outputs.size()) return false;
  for (size_t i = 0; i < results->size(); ++i) {
    Value& v = graph.values[node.outputs[i]];
    if (ConstantSize((*results)[i]) != static_cast<size_t>(NumElements(v.shape))) return false;
  }
  for (size_t i = 0; i < results->size(); ++i) {
    Value& v = graph.values[node.outputs[i]];
    v.kind = ValueKind::kConstant;
    v.constant = std::move((*results)[i]);
  }
  return true;
}

}  // namespace kfleet::planner::import_internal
