// The float64 reference's elementwise ops, activations, Softmax, Cast, Trilu, reductions and
// normalizations, the helpers every op file shares, and the table of all ops. Semantics follow
// the ONNX operator docs for opsets 13 to 20, reading arguments the way shape_inference.cc does.
#include "runtime/reference_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <type_traits>
#include <unordered_map>

namespace kfleet::runtime::reference_internal {

DType HeldDType(DType dtype) {
  if (planner::IsFloat(dtype)) return DType::kF64;
  if (dtype == DType::kBool) return DType::kBool;
  return DType::kI64;
}

NodeRun::NodeRun(const planner::Graph& graph, const planner::Node& node,
                 std::vector<const Tensor*> inputs)
    : graph_(graph), node_(node), inputs_(std::move(inputs)), outputs_(node.outputs.size()) {}

const planner::Value& NodeRun::OutValue(size_t i) const { return graph_.values[node_.outputs[i]]; }

void NodeRun::SetOutput(size_t i, Tensor tensor) {
  if (Wants(i)) outputs_[i] = std::move(tensor);
}

Status NodeRun::Error(std::string_view message) const {
  return InvalidArgument(fmt::format("{}: {}", planner::DescribeNode(node_), message));
}

Status NodeRun::Require(size_t count) const {
  for (size_t i = 0; i < count; ++i) {
    if (!Has(i)) return Error(fmt::format("needs {} inputs, input {} is missing", count, i));
  }
  return Status::Ok();
}

Status NodeRun::RequireFloat(size_t i) const {
  if (In(i).dtype() == DType::kF64) return Status::Ok();
  return Error(fmt::format("input {} must be floating, got {}", i,
                           planner::DTypeName(graph_.values[node_.inputs[i]].dtype)));
}

Result<std::vector<int64_t>> NodeRun::Ints(size_t i, std::string_view role) const {
  if (!Has(i)) return Error(fmt::format("input {} ({}) is missing", i, role));
  const Tensor& t = In(i);
  if (t.dtype() != DType::kI64) {
    return Error(fmt::format("{} must be integers, got {}", role,
                             planner::DTypeName(graph_.values[node_.inputs[i]].dtype)));
  }
  return std::vector<int64_t>(t.as<int64_t>(), t.as<int64_t>() + t.elements());
}

Result<double> NodeRun::ScalarDouble(size_t i, std::string_view role) const {
  if (!Has(i)) return Error(fmt::format("input {} ({}) is missing", i, role));
  if (In(i).elements() != 1) {
    return Error(fmt::format("{} must hold one element, got {}", role, DescribeTensor(In(i))));
  }
  return In(i).GetDouble(0);
}

Result<int64_t> NodeRun::ScalarInt(size_t i, std::string_view role) const {
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> values, Ints(i, role));
  if (values.size() != 1) {
    return Error(fmt::format("{} must hold one element, got {}", role, DescribeTensor(In(i))));
  }
  return values[0];
}

Result<std::optional<std::vector<int64_t>>> NodeRun::IntsFromInputOrAttr(
    size_t i, std::string_view attr) const {
  if (Has(i)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> values, Ints(i, attr));
    return std::optional<std::vector<int64_t>>(std::move(values));
  }
  if (node_.HasAttr(attr)) return std::optional<std::vector<int64_t>>(node_.IntsAttr(attr));
  return std::optional<std::vector<int64_t>>();
}

Result<int64_t> NodeRun::NormalizeAxis(int64_t axis, int64_t rank) const {
  if (axis < -rank || axis >= rank) {
    return Error(fmt::format("axis {} is out of range for rank {}", axis, rank));
  }
  return axis < 0 ? axis + rank : axis;
}

std::optional<Shape> BroadcastShapes(const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) return std::nullopt;
    out[out.size() - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> BroadcastOffsets(const Shape& in, const Shape& out) {
  // in's stride along each dim of out; 0 where in is broadcast (size 1 or missing).
  std::vector<int64_t> stride(out.size(), 0);
  int64_t step = 1;
  for (size_t i = 0; i < in.size(); ++i) {
    const size_t d_in = in.size() - 1 - i;
    stride[out.size() - 1 - i] = in[d_in] == 1 ? 0 : step;
    step *= in[d_in];
  }
  std::vector<int64_t> offsets(static_cast<size_t>(planner::NumElements(out)));
  ForEachIndex(out, [&](int64_t n, const std::vector<int64_t>& index) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * stride[d];
    offsets[static_cast<size_t>(n)] = offset;
  });
  return offsets;
}

Tensor GatherByOffsets(const Tensor& in, const Shape& shape, const std::vector<int64_t>& offsets,
                       double fill) {
  Tensor out(in.dtype(), shape);
  const auto size = static_cast<size_t>(planner::DTypeBytes(in.dtype()));
  const auto* src = static_cast<const std::byte*>(in.data());
  auto* dst = static_cast<std::byte*>(out.data());
  for (int64_t n = 0; n < out.elements(); ++n) {
    const int64_t offset = offsets[static_cast<size_t>(n)];
    if (offset < 0) {
      out.SetDouble(n, fill);
    } else {
      std::memcpy(dst + static_cast<size_t>(n) * size, src + static_cast<size_t>(offset) * size,
                  size);
    }
  }
  return out;
}

Tensor Reshaped(const Tensor& in, const Shape& shape) {
  Tensor out(in.dtype(), shape);
  if (in.bytes() > 0) std::memcpy(out.data(), in.data(), in.bytes());
  return out;
}

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- Elementwise binary ops ----------------------------------------------------------------

enum class Arith { kAdd, kSub, kMul, kDiv, kPow, kMax, kMin };

double ApplyFloat(Arith op, double a, double b) {
  switch (op) {
    case Arith::kAdd:
      return a + b;
    case Arith::kSub:
      return a - b;
    case Arith::kMul:
      return a * b;
    case Arith::kDiv:
      return a / b;
    case Arith::kPow:
      return std::pow(a, b);
    case Arith::kMax:
      // NaN wins, as in numpy's maximum and PyTorch.
      return std::isnan(a) || std::isnan(b) ? kNaN : std::max(a, b);
    case Arith::kMin:
      return std::isnan(a) || std::isnan(b) ? kNaN : std::min(a, b);
  }
  return kNaN;
}

// Integer arithmetic wraps (through uint64, as the planner's constant folding does); a division
// by zero is an error. Pow goes through double and truncates, as ONNX Runtime does.
Result<int64_t> ApplyInt(const NodeRun& run, Arith op, int64_t a, int64_t b, double b_real) {
  const auto ua = static_cast<uint64_t>(a);
  const auto ub = static_cast<uint64_t>(b);
  switch (op) {
    case Arith::kAdd:
      return static_cast<int64_t>(ua + ub);
    case Arith::kSub:
      return static_cast<int64_t>(ua - ub);
    case Arith::kMul:
      return static_cast<int64_t>(ua * ub);
    case Arith::kDiv:
      if (b == 0) return run.Error(fmt::format("integer division {} / 0", a));
      if (b == -1) return static_cast<int64_t>(0 - ua);
      return a / b;
    case Arith::kPow: {
      const double p = std::pow(static_cast<double>(a), b_real);
      if (!std::isfinite(p) || std::fabs(p) >= 9.2e18) {
        return run.Error(fmt::format("integer Pow({}, {}) is out of the int64 range", a, b_real));
      }
      return static_cast<int64_t>(p);
    }
    case Arith::kMax:
      return std::max(a, b);
    case Arith::kMin:
      return std::min(a, b);
  }
  return a;
}

Status Arithmetic(NodeRun& run, Arith op) {
  std::vector<const Tensor*> operands;
  for (size_t i = 0; i < run.NumInputs(); ++i) {
    if (run.Has(i)) operands.push_back(&run.In(i));
  }
  // Max and Min take one or more inputs, the others exactly two.
  const bool variadic = op == Arith::kMax || op == Arith::kMin;
  if (operands.empty() || (!variadic && operands.size() != 2)) {
    return run.Error(
        fmt::format("needs {} inputs, got {}", variadic ? "1 or more" : "2", operands.size()));
  }
  const DType dtype = run.OutDType(0);
  if (dtype == DType::kBool) return run.Error("does not take bool inputs");
  Tensor acc = ConvertTensor(*operands[0], dtype);
  for (size_t k = 1; k < operands.size(); ++k) {
    const Tensor& b = *operands[k];
    std::optional<Shape> shape = BroadcastShapes(acc.shape(), b.shape());
    if (!shape) {
      return run.Error(fmt::format("shapes {} and {} do not broadcast",
                                   planner::ShapeToString(acc.shape()),
                                   planner::ShapeToString(b.shape())));
    }
    Tensor out(dtype, *shape);
    const std::vector<int64_t> ia = BroadcastOffsets(acc.shape(), *shape);
    const std::vector<int64_t> ib = BroadcastOffsets(b.shape(), *shape);
    for (int64_t n = 0; n < out.elements(); ++n) {
      const auto u = static_cast<size_t>(n);
      if (dtype == DType::kF64) {
        out.as<double>()[n] = ApplyFloat(op, acc.as<double>()[ia[u]], b.GetDouble(ib[u]));
      } else {
        KF_ASSIGN_OR_RETURN(out.as<int64_t>()[n], ApplyInt(run, op, acc.as<int64_t>()[ia[u]],
                                                           b.GetInt(ib[u]), b.GetDouble(ib[u])));
      }
    }
    acc = std::move(out);
  }
  run.SetOutput(0, std::move(acc));
  return Status::Ok();
}

enum class Compare { kEqual, kLess, kGreater, kLessOrEqual, kGreaterOrEqual, kAnd, kOr };

template <typename T>
bool ApplyCompare(Compare op, T a, T b) {
  switch (op) {
    case Compare::kEqual:
      return a == b;
    case Compare::kLess:
      return a < b;
    case Compare::kGreater:
      return a > b;
    case Compare::kLessOrEqual:
      return a <= b;
    case Compare::kGreaterOrEqual:
      return a >= b;
    case Compare::kAnd:
      return a != 0 && b != 0;
    case Compare::kOr:
      return a != 0 || b != 0;
  }
  return false;
}

Status Comparison(NodeRun& run, Compare op) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& a = run.In(0);
  const Tensor& b = run.In(1);
  const bool logic = op == Compare::kAnd || op == Compare::kOr;
  if (logic && (a.dtype() != DType::kBool || b.dtype() != DType::kBool)) {
    return run.Error("needs bool inputs");
  }
  std::optional<Shape> shape = BroadcastShapes(a.shape(), b.shape());
  if (!shape) {
    return run.Error(fmt::format("shapes {} and {} do not broadcast",
                                 planner::ShapeToString(a.shape()),
                                 planner::ShapeToString(b.shape())));
  }
  Tensor out(DType::kBool, *shape);
  const std::vector<int64_t> ia = BroadcastOffsets(a.shape(), *shape);
  const std::vector<int64_t> ib = BroadcastOffsets(b.shape(), *shape);
  // Integers compare exactly, not through double.
  const bool floats = a.dtype() == DType::kF64 || b.dtype() == DType::kF64;
  for (int64_t n = 0; n < out.elements(); ++n) {
    const auto u = static_cast<size_t>(n);
    const bool r = floats ? ApplyCompare(op, a.GetDouble(ia[u]), b.GetDouble(ib[u]))
                          : ApplyCompare(op, a.GetInt(ia[u]), b.GetInt(ib[u]));
    out.as<uint8_t>()[n] = r ? 1 : 0;
  }
  run.SetOutput(0, std::move(out));
  return Status::Ok();
}

Status Where(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(3));
  const Tensor& cond = run.In(0);
  const Tensor& x = run.In(1);
  const Tensor& y = run.In(2);
  if (cond.dtype() != DType::kBool) return run.Error("condition must be bool");
  if (x.dtype() != y.dtype()) return run.Error("X and Y differ in dtype");
  std::optional<Shape> shape = BroadcastShapes(cond.shape(), x.shape());
  if (shape) shape = BroadcastShapes(*shape, y.shape());
  if (!shape) {
    return run.Error(
        fmt::format("shapes {}, {} and {} do not broadcast", planner::ShapeToString(cond.shape()),
                    planner::ShapeToString(x.shape()), planner::ShapeToString(y.shape())));
  }
  const std::vector<int64_t> ic = BroadcastOffsets(cond.shape(), *shape);
  const std::vector<int64_t> ix = BroadcastOffsets(x.shape(), *shape);
  const std::vector<int64_t> iy = BroadcastOffsets(y.shape(), *shape);
  Tensor out(x.dtype(), *shape);
  const auto size = static_cast<size_t>(planner::DTypeBytes(x.dtype()));
  auto* dst = static_cast<std::byte*>(out.data());
  for (int64_t n = 0; n < out.elements(); ++n) {
    const auto u = static_cast<size_t>(n);
    const bool take_x = cond.as<uint8_t>()[ic[u]] != 0;
    const auto* src = static_cast<const std::byte*>(take_x ? x.data() : y.data());
    const int64_t offset = take_x ? ix[u] : iy[u];
    std::memcpy(dst + u * size, src + static_cast<size_t>(offset) * size, size);
  }
  run.SetOutput(0, std::move(out));
  return Status::Ok();
}

// ---- Unary ops -----------------------------------------------------------------------------

// y = f(x) for a floating input.
template <typename F>
Status MapFloat(NodeRun& run, F f) {
  KF_RETURN_IF_ERROR(run.Require(1));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Tensor& x = run.In(0);
  Tensor y(DType::kF64, x.shape());
  for (int64_t i = 0; i < x.elements(); ++i) y.as<double>()[i] = f(x.as<double>()[i]);
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// y = f(x) for an op that also takes integers: `f` is called with double or int64_t.
template <typename F>
Status MapNumber(NodeRun& run, F f) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  if (x.dtype() == DType::kF64) return MapFloat(run, f);
  if (x.dtype() != DType::kI64) return run.Error("does not take bool inputs");
  Tensor y(DType::kI64, x.shape());
  for (int64_t i = 0; i < x.elements(); ++i) y.as<int64_t>()[i] = f(x.as<int64_t>()[i]);
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// Negation through uint64 so that INT64_MIN wraps instead of overflowing.
int64_t WrappingNeg(int64_t v) { return static_cast<int64_t>(0 - static_cast<uint64_t>(v)); }

// max(0, min(1, v)) written so that NaN stays NaN.
double ClampUnit(double v) { return v < 0 ? 0 : (v > 1 ? 1 : v); }

Status Abs(NodeRun& run) {
  return MapNumber(run, [](auto v) -> decltype(v) {
    if constexpr (std::is_same_v<decltype(v), double>) {
      return std::fabs(v);
    } else {
      return v < 0 ? WrappingNeg(v) : v;
    }
  });
}

Status Neg(NodeRun& run) {
  return MapNumber(run, [](auto v) -> decltype(v) {
    if constexpr (std::is_same_v<decltype(v), double>) {
      return -v;
    } else {
      return WrappingNeg(v);
    }
  });
}

Status Relu(NodeRun& run) {
  return MapNumber(run, [](auto v) -> decltype(v) { return v < 0 ? 0 : v; });
}

Status LeakyRelu(NodeRun& run) {
  const double alpha = run.node().FloatAttr("alpha", 0.01);
  return MapFloat(run, [alpha](double v) { return v < 0 ? alpha * v : v; });
}

Status HardSigmoid(NodeRun& run) {
  const double alpha = run.node().FloatAttr("alpha", 0.2);
  const double beta = run.node().FloatAttr("beta", 0.5);
  return MapFloat(run, [alpha, beta](double v) { return ClampUnit(alpha * v + beta); });
}

Status HardSwish(NodeRun& run) {
  return MapFloat(run, [](double v) { return v * ClampUnit(v / 6 + 0.5); });
}

Status Softplus(NodeRun& run) {
  // log(1 + e^x) without overflowing e^x for large x.
  return MapFloat(
      run, [](double v) { return v > 0 ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v)); });
}

Status Gelu(NodeRun& run) {
  const std::string approximate = run.node().StringAttr("approximate", "none");
  if (approximate == "none") {
    return MapFloat(run,
                    [](double v) { return 0.5 * v * (1 + std::erf(v / std::numbers::sqrt2)); });
  }
  if (approximate == "tanh") {
    const double c = std::sqrt(2 / std::numbers::pi);
    return MapFloat(
        run, [c](double v) { return 0.5 * v * (1 + std::tanh(c * (v + 0.044715 * v * v * v))); });
  }
  return run.Error(fmt::format("unknown approximate '{}'", approximate));
}

Status Clip(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  if (x.dtype() == DType::kF64) {
    double lo = -kInf;
    double hi = kInf;
    if (run.Has(1)) {
      KF_ASSIGN_OR_RETURN(lo, run.ScalarDouble(1, "min"));
    }
    if (run.Has(2)) {
      KF_ASSIGN_OR_RETURN(hi, run.ScalarDouble(2, "max"));
    }
    // min(max(x, lo), hi), as ONNX Runtime computes it (hi wins when lo > hi); NaN stays NaN.
    return MapFloat(run, [lo, hi](double v) {
      const double raised = v < lo ? lo : v;
      return raised > hi ? hi : raised;
    });
  }
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();
  if (run.Has(1)) {
    KF_ASSIGN_OR_RETURN(lo, run.ScalarInt(1, "min"));
  }
  if (run.Has(2)) {
    KF_ASSIGN_OR_RETURN(hi, run.ScalarInt(2, "max"));
  }
  return MapNumber(run, [lo, hi](auto v) -> decltype(v) {
    return std::min<decltype(v)>(std::max<decltype(v)>(v, lo), hi);
  });
}

Status Identity(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  run.SetOutput(0, run.In(0));
  return Status::Ok();
}

// At inference: the data unchanged and the mask all true.
Status Dropout(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  if (run.Has(2)) {
    KF_ASSIGN_OR_RETURN(double training, run.ScalarDouble(2, "training_mode"));
    if (training != 0) {
      return run.Error("training_mode is true: dropout is random, the reference runs inference");
    }
  }
  run.SetOutput(0, run.In(0));
  if (run.Wants(1)) {
    Tensor mask(DType::kBool, run.In(0).shape());
    std::fill_n(mask.as<uint8_t>(), mask.elements(), uint8_t{1});
    run.SetOutput(1, std::move(mask));
  }
  return Status::Ok();
}

Status Not(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  if (x.dtype() != DType::kBool) return run.Error("needs a bool input");
  Tensor y(DType::kBool, x.shape());
  for (int64_t i = 0; i < x.elements(); ++i) y.as<uint8_t>()[i] = x.as<uint8_t>()[i] == 0 ? 1 : 0;
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status IsNaN(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Tensor& x = run.In(0);
  Tensor y(DType::kBool, x.shape());
  for (int64_t i = 0; i < x.elements(); ++i) {
    y.as<uint8_t>()[i] = std::isnan(x.as<double>()[i]) ? 1 : 0;
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// ---- Softmax, Cast, Trilu ------------------------------------------------------------------

// The dims of `shape` before `axis`, at it, and after it, as element counts.
struct AxisSplit {
  int64_t outer = 1;
  int64_t dim = 1;
  int64_t inner = 1;
};

AxisSplit SplitAt(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < axis) s.outer *= shape[d];
    if (d == axis) s.dim = shape[d];
    if (d > axis) s.inner *= shape[d];
  }
  return s;
}

Status Softmax(NodeRun& run, bool log) {
  KF_RETURN_IF_ERROR(run.Require(1));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Tensor& x = run.In(0);
  const auto rank = static_cast<int64_t>(x.shape().size());
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", -1), rank));
  const AxisSplit s = SplitAt(x.shape(), axis);
  const double* in = x.as<double>();
  Tensor y(DType::kF64, x.shape());
  double* out = y.as<double>();
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      const int64_t base = o * s.dim * s.inner + i;
      // Subtracting the max keeps exp() from overflowing on large logits.
      double max = -kInf;
      for (int64_t k = 0; k < s.dim; ++k) max = std::max(max, in[base + k * s.inner]);
      double sum = 0;
      for (int64_t k = 0; k < s.dim; ++k) sum += std::exp(in[base + k * s.inner] - max);
      for (int64_t k = 0; k < s.dim; ++k) {
        const double shifted = in[base + k * s.inner] - max;
        out[base + k * s.inner] = log ? shifted - std::log(sum) : std::exp(shifted) / sum;
      }
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// Narrowing integer casts wrap, as numpy, ONNX Runtime and the planner's constant folding do.
int64_t WrapTo(DType dtype, int64_t v) {
  switch (dtype) {
    case DType::kI32:
      return static_cast<int32_t>(v);
    case DType::kI16:
      return static_cast<int16_t>(v);
    case DType::kI8:
      return static_cast<int8_t>(v);
    case DType::kU8:
      return static_cast<uint8_t>(v);
    default:
      return v;
  }
}

// To a floating dtype the value stays a double (the harness rounds at the output dtype); to an
// integer dtype it truncates toward zero and wraps; to bool it is "nonzero".
Status Cast(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const DType to = run.OutValue(0).dtype;
  Tensor y(HeldDType(to), x.shape());
  for (int64_t i = 0; i < x.elements(); ++i) {
    if (y.dtype() == DType::kF64) {
      y.as<double>()[i] = x.GetDouble(i);
    } else if (y.dtype() == DType::kBool) {
      y.as<uint8_t>()[i] = (x.dtype() == DType::kF64 ? x.GetDouble(i) != 0 : x.GetInt(i) != 0);
    } else if (x.dtype() == DType::kF64) {
      const double f = x.as<double>()[i];
      if (!std::isfinite(f) || std::fabs(f) >= 9.2e18) {
        return run.Error(fmt::format("cannot cast {} to {}: ONNX leaves it undefined", f,
                                     planner::DTypeName(to)));
      }
      y.as<int64_t>()[i] = WrapTo(to, static_cast<int64_t>(f));
    } else {
      y.as<int64_t>()[i] = WrapTo(to, x.GetInt(i));
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Trilu(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  if (shape.size() < 2) {
    return run.Error(fmt::format("needs rank >= 2, got shape {}", planner::ShapeToString(shape)));
  }
  int64_t k = 0;
  if (run.Has(1)) {
    KF_ASSIGN_OR_RETURN(k, run.ScalarInt(1, "k"));
  }
  const bool upper = run.node().IntAttr("upper", 1) != 0;
  const int64_t rows = shape[shape.size() - 2];
  const int64_t cols = shape[shape.size() - 1];
  Tensor y = x;
  for (int64_t n = 0; n < y.elements(); ++n) {
    const int64_t i = (n / cols) % rows;
    const int64_t j = n % cols;
    const bool keep = upper ? j - i >= k : j - i <= k;
    if (!keep) y.SetDouble(n, 0);
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// ---- Reductions ----------------------------------------------------------------------------

enum class Reduction { kMean, kSum, kMax };

Status Reduce(NodeRun& run, Reduction kind) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  if (x.dtype() == DType::kBool) return run.Error("does not take bool inputs");
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      run.IntsFromInputOrAttr(1, "axes"));
  std::vector<int64_t> axes = given.value_or(std::vector<int64_t>{});
  if (axes.empty()) {
    if (run.node().IntAttr("noop_with_empty_axes", 0) != 0) {
      run.SetOutput(0, x);
      return Status::Ok();
    }
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  std::vector<bool> reduced(shape.size(), false);
  for (int64_t a : axes) {
    KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(a, rank));
    if (reduced[axis]) return run.Error(fmt::format("axis {} is repeated", a));
    reduced[axis] = true;
  }
  const bool keepdims = run.node().IntAttr("keepdims", 1) != 0;
  Shape kept;  // the input shape with reduced dims set to 1
  Shape out_shape;
  for (size_t d = 0; d < shape.size(); ++d) {
    kept.push_back(reduced[d] ? 1 : shape[d]);
    if (!reduced[d] || keepdims) out_shape.push_back(reduced[d] ? 1 : shape[d]);
  }
  // Element n of x accumulates into offsets[n] of the result, in row-major order.
  const std::vector<int64_t> offsets = BroadcastOffsets(kept, shape);
  const int64_t out_count = planner::NumElements(kept);
  const int64_t count = out_count == 0 ? 0 : x.elements() / out_count;
  Tensor y(x.dtype(), out_shape);
  if (x.dtype() == DType::kF64) {
    std::vector<double> acc(static_cast<size_t>(out_count), kind == Reduction::kMax ? -kInf : 0);
    for (int64_t n = 0; n < x.elements(); ++n) {
      double& a = acc[static_cast<size_t>(offsets[static_cast<size_t>(n)])];
      const double v = x.as<double>()[n];
      if (kind != Reduction::kMax) {
        a += v;
      } else if (std::isnan(v) || v > a) {
        a = std::isnan(a) ? a : v;
      }
    }
    for (int64_t n = 0; n < out_count; ++n) {
      const double a = acc[static_cast<size_t>(n)];
      y.as<double>()[n] = kind == Reduction::kMean ? a / static_cast<double>(count) : a;
    }
  } else {
    if (kind != Reduction::kSum && count == 0) {
      return run.Error("reduces over an empty dim of an integer tensor");
    }
    std::vector<uint64_t> acc(static_cast<size_t>(out_count), 0);
    if (kind == Reduction::kMax) {
      std::fill(acc.begin(), acc.end(), static_cast<uint64_t>(std::numeric_limits<int64_t>::min()));
    }
    for (int64_t n = 0; n < x.elements(); ++n) {
      uint64_t& a = acc[static_cast<size_t>(offsets[static_cast<size_t>(n)])];
      const int64_t v = x.as<int64_t>()[n];
      if (kind != Reduction::kMax) {
        a += static_cast<uint64_t>(v);
      } else if (v > static_cast<int64_t>(a)) {
        a = static_cast<uint64_t>(v);
      }
    }
    for (int64_t n = 0; n < out_count; ++n) {
      const auto a = static_cast<int64_t>(acc[static_cast<size_t>(n)]);
      y.as<int64_t>()[n] = kind == Reduction::kMean ? a / count : a;
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

// ---- Normalizations ------------------------------------------------------------------------

// Offsets of a scale or bias input broadcast to `target`; an error when it does not broadcast
// to exactly `target`.
Result<std::vector<int64_t>> ParamOffsets(const NodeRun& run, size_t i, const Shape& target) {
  const Shape& shape = run.In(i).shape();
  std::optional<Shape> b = BroadcastShapes(shape, target);
  if (!b || *b != target) {
    return run.Error(fmt::format("input {} has shape {}, which does not broadcast to {}", i,
                                 planner::ShapeToString(shape), planner::ShapeToString(target)));
  }
  return BroadcastOffsets(shape, target);
}

Status LayerNormalization(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", -1), rank));
  const double epsilon = run.node().FloatAttr("epsilon", 1e-5);
  const Shape normalized(shape.begin() + axis, shape.end());
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> scale_at, ParamOffsets(run, 1, normalized));
  std::vector<int64_t> bias_at;
  if (run.Has(2)) {
    KF_ASSIGN_OR_RETURN(bias_at, ParamOffsets(run, 2, normalized));
  }
  const int64_t inner = planner::NumElements(normalized);
  const int64_t outer = inner == 0 ? 0 : x.elements() / inner;
  Shape stats_shape = shape;
  std::fill(stats_shape.begin() + axis, stats_shape.end(), 1);
  Tensor y(DType::kF64, shape);
  Tensor mean_out(DType::kF64, stats_shape);
  Tensor inv_std_out(DType::kF64, stats_shape);
  for (int64_t o = 0; o < outer; ++o) {
    const double* in = x.as<double>() + o * inner;
    double* out = y.as<double>() + o * inner;
    double sum = 0;
    for (int64_t k = 0; k < inner; ++k) sum += in[k];
    const double mean = sum / static_cast<double>(inner);
    double squares = 0;
    for (int64_t k = 0; k < inner; ++k) squares += (in[k] - mean) * (in[k] - mean);
    const double inv_std = 1 / std::sqrt(squares / static_cast<double>(inner) + epsilon);
    for (int64_t k = 0; k < inner; ++k) {
      const auto u = static_cast<size_t>(k);
      const double bias = bias_at.empty() ? 0 : run.In(2).GetDouble(bias_at[u]);
      out[k] = (in[k] - mean) * inv_std * run.In(1).GetDouble(scale_at[u]) + bias;
    }
    mean_out.as<double>()[o] = mean;
    inv_std_out.as<double>()[o] = inv_std;
  }
  run.SetOutput(0, std::move(y));
  run.SetOutput(1, std::move(mean_out));
  run.SetOutput(2, std::move(inv_std_out));
  return Status::Ok();
}

// Checks X is [N, C, ...] and inputs 1 .. count-1 are [C]; returns N, C and the spatial size.
Result<AxisSplit> ChannelGeometry(const NodeRun& run, size_t count) {
  KF_RETURN_IF_ERROR(run.Require(count));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Shape& shape = run.In(0).shape();
  if (shape.size() < 2) {
    return run.Error(fmt::format("needs input [N,C,...], got {}", planner::ShapeToString(shape)));
  }
  for (size_t i = 1; i < count; ++i) {
    if (run.In(i).shape() != Shape{shape[1]}) {
      return run.Error(fmt::format("input {} has shape {}, expected [{}]", i,
                                   planner::ShapeToString(run.In(i).shape()), shape[1]));
    }
  }
  return SplitAt(shape, 1);
}

Status BatchNormalization(NodeRun& run) {
  // Training mode updates running statistics from the batch; exported inference graphs never
  // ask for it.
  if (run.node().IntAttr("training_mode", 0) != 0 || run.Wants(1) || run.Wants(2)) {
    return run.Error("training mode is not supported: the reference runs inference");
  }
  KF_ASSIGN_OR_RETURN(AxisSplit s, ChannelGeometry(run, 5));
  const double epsilon = run.node().FloatAttr("epsilon", 1e-5);
  const Tensor& x = run.In(0);
  Tensor y(DType::kF64, x.shape());
  for (int64_t n = 0; n < s.outer; ++n) {
    for (int64_t c = 0; c < s.dim; ++c) {
      const double scale = run.In(1).GetDouble(c);
      const double bias = run.In(2).GetDouble(c);
      const double mean = run.In(3).GetDouble(c);
      const double var = run.In(4).GetDouble(c);
      const int64_t base = (n * s.dim + c) * s.inner;
      for (int64_t i = 0; i < s.inner; ++i) {
        y.as<double>()[base + i] =
            (x.as<double>()[base + i] - mean) / std::sqrt(var + epsilon) * scale + bias;
      }
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status InstanceNormalization(NodeRun& run) {
  KF_ASSIGN_OR_RETURN(AxisSplit s, ChannelGeometry(run, 3));
  const double epsilon = run.node().FloatAttr("epsilon", 1e-5);
  const Tensor& x = run.In(0);
  Tensor y(DType::kF64, x.shape());
  for (int64_t n = 0; n < s.outer; ++n) {
    for (int64_t c = 0; c < s.dim; ++c) {
      const double* in = x.as<double>() + (n * s.dim + c) * s.inner;
      double* out = y.as<double>() + (n * s.dim + c) * s.inner;
      double sum = 0;
      for (int64_t i = 0; i < s.inner; ++i) sum += in[i];
      const double mean = sum / static_cast<double>(s.inner);
      double squares = 0;
      for (int64_t i = 0; i < s.inner; ++i) squares += (in[i] - mean) * (in[i] - mean);
      const double inv_std = 1 / std::sqrt(squares / static_cast<double>(s.inner) + epsilon);
      for (int64_t i = 0; i < s.inner; ++i) {
        out[i] = (in[i] - mean) * inv_std * run.In(1).GetDouble(c) + run.In(2).GetDouble(c);
      }
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

}  // namespace

OpFunction FindReferenceOp(std::string_view op_type) {
  using R = NodeRun&;
  static const auto* ops = new std::unordered_map<std::string_view, OpFunction>{
      {"Add", [](R r) { return Arithmetic(r, Arith::kAdd); }},
      {"Sub", [](R r) { return Arithmetic(r, Arith::kSub); }},
      {"Mul", [](R r) { return Arithmetic(r, Arith::kMul); }},
      {"Div", [](R r) { return Arithmetic(r, Arith::kDiv); }},
      {"Pow", [](R r) { return Arithmetic(r, Arith::kPow); }},
      {"Max", [](R r) { return Arithmetic(r, Arith::kMax); }},
      {"Min", [](R r) { return Arithmetic(r, Arith::kMin); }},
      {"Equal", [](R r) { return Comparison(r, Compare::kEqual); }},
      {"Less", [](R r) { return Comparison(r, Compare::kLess); }},
      {"Greater", [](R r) { return Comparison(r, Compare::kGreater); }},
      {"LessOrEqual", [](R r) { return Comparison(r, Compare::kLessOrEqual); }},
      {"GreaterOrEqual", [](R r) { return Comparison(r, Compare::kGreaterOrEqual); }},
      {"And", [](R r) { return Comparison(r, Compare::kAnd); }},
      {"Or", [](R r) { return Comparison(r, Compare::kOr); }},
      {"Where", Where},
      {"Sqrt", [](R r) { return MapFloat(r, [](double v) { return std::sqrt(v); }); }},
      {"Reciprocal", [](R r) { return MapFloat(r, [](double v) { return 1 / v; }); }},
      {"Neg", Neg},
      {"Exp", [](R r) { return MapFloat(r, [](double v) { return std::exp(v); }); }},
      {"Log", [](R r) { return MapFloat(r, [](double v) { return std::log(v); }); }},
      {"Erf", [](R r) { return MapFloat(r, [](double v) { return std::erf(v); }); }},
      {"Tanh", [](R r) { return MapFloat(r, [](double v) { return std::tanh(v); }); }},
      {"Sigmoid", [](R r) { return MapFloat(r, [](double v) { return 1 / (1 + std::exp(-v)); }); }},
      {"Relu", Relu},
      {"LeakyRelu", LeakyRelu},
      {"Clip", Clip},
      {"Gelu", Gelu},
      {"HardSigmoid", HardSigmoid},
      {"HardSwish", HardSwish},
      {"Softplus", Softplus},
      {"Abs", Abs},
      {"Cos", [](R r) { return MapFloat(r, [](double v) { return std::cos(v); }); }},
      {"Sin", [](R r) { return MapFloat(r, [](double v) { return std::sin(v); }); }},
      {"Identity", Identity},
      {"Not", Not},
      {"IsNaN", IsNaN},
      {"Dropout", Dropout},
      {"Softmax", [](R r) { return Softmax(r, false); }},
      {"LogSoftmax", [](R r) { return Softmax(r, true); }},
      {"Trilu", Trilu},
      {"Cast", Cast},
      {"MatMul", MatMul},
      {"Gemm", Gemm},
      {"Conv", Conv},
      {"ConvTranspose", ConvTranspose},
      {"MaxPool", MaxPool},
      {"AveragePool", AveragePool},
      {"GlobalAveragePool", GlobalAveragePool},
      {"ReduceMean", [](R r) { return Reduce(r, Reduction::kMean); }},
      {"ReduceSum", [](R r) { return Reduce(r, Reduction::kSum); }},
      {"ReduceMax", [](R r) { return Reduce(r, Reduction::kMax); }},
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
      {"Shape", ShapeOf},
      {"ConstantOfShape", ConstantOfShape},
      {"Range", Range},
      {"Tile", Tile},
      {"Pad", Pad},
      {"Resize", Resize},
  };
  auto it = ops->find(op_type);
  return it == ops->end() ? nullptr : it->second;
}

}  // namespace kfleet::runtime::reference_internal
