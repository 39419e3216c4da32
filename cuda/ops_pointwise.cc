// Preparation of the elementwise ops (kernels in kernels_pointwise.cu): the CPU baseline's
// semantics (runtime/baseline_ops.cc), operands broadcast through collapsed dims computed here.
#include <fmt/format.h>

#include <array>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/kernels_pointwise.h"
#include "cuda/ops.h"

namespace kfleet::cuda::ops {
namespace {

namespace pw = pointwise;

pw::Elem ElemOf(DType graph_dtype) {
  switch (StorageDtype(graph_dtype)) {
    case DType::kF16:
      return pw::Elem::kF16;
    case DType::kBF16:
      return pw::Elem::kBF16;
    case DType::kI64:
      return pw::Elem::kI64;
    case DType::kBool:
      return pw::Elem::kBool;
    default:
      return pw::Elem::kF32;
  }
}

bool IsFloatElem(pw::Elem e) {
  return e == pw::Elem::kF32 || e == pw::Elem::kF16 || e == pw::Elem::kBF16;
}

int ElemBytes(pw::Elem e) {
  switch (e) {
    case pw::Elem::kF32:
      return 4;
    case pw::Elem::kF16:
    case pw::Elem::kBF16:
      return 2;
    case pw::Elem::kI64:
      return 8;
    case pw::Elem::kBool:
      return 1;
  }
  return 1;
}

std::string_view DTypeOf(const NodeContext& c, size_t input) {
  return planner::DTypeName(c.Input(input).dtype);
}

Status Launched(int rc, std::string_view op) {
  return CudaStatus(rc, fmt::format("launching the {} kernel", op));
}

// `ins` broadcast to `out`, dims merged wherever every operand walks them as one.
template <size_t N>
Result<pw::ElementIndex> BroadcastIndex(const Shape& out, const std::array<Shape, N>& ins) {
  const auto plan = runtime::baseline::BroadcastPlan<N>::Make(out, ins);
  if (plan.dims.size() > static_cast<size_t>(pw::kMaxRank)) {
    return InvalidArgument(
        fmt::format("broadcasting to {} keeps {} dims after merging; the CUDA "
                    "kernels take at most {}",
                    planner::ShapeToString(out), plan.dims.size(), pw::kMaxRank));
  }
  pw::ElementIndex index;
  index.rank = static_cast<int>(plan.dims.size());
  bool dense = index.rank == 1;
  for (size_t d = 0; d < plan.dims.size(); ++d) {
    index.dims[d] = plan.dims[d];
    for (size_t k = 0; k < N; ++k) index.strides[k][d] = plan.strides[k][d];
  }
  // Dense operands of the output's shape merge into one dim of stride 1.
  for (size_t k = 0; k < N && dense; ++k) dense = index.strides[k][0] == 1;
  index.dense = dense || plan.elements <= 1;
  return index;
}

// ---- Unary ----

PreparedOp UnaryOp(const NodeContext& c, pw::UnaryOp op, pw::UnaryParams params = {}) {
  const pw::Elem in = ElemOf(c.Input(0).dtype);
  const pw::Elem out = ElemOf(c.Output(0).dtype);
  Kernel run = [op, in, out, params, name = c.node().op_type](const OpArgs& a) {
    return Launched(pw::LaunchUnary(op, in, out, a.inputs[0]->data, a.outputs[0]->data,
                                    a.outputs[0]->elements, params),
                    name);
  };
  return PreparedOp{std::move(run), 0, false};
}

// Clip's bounds are inputs since opset 11 (possibly computed at run time), attributes before.
Result<PreparedOp> ClipOp(const NodeContext& c) {
  const pw::Elem type = ElemOf(c.Input(0).dtype);
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.HasInput(i)) continue;
    if (ElemOf(c.Input(i).dtype) != type) {
      return InvalidArgument(fmt::format("bound '{}' is {}, the input {}", c.Input(i).name,
                                         DTypeOf(c, i), DTypeOf(c, 0)));
    }
    if (planner::NumElements(c.InShape(i)) != 1) {
      return InvalidArgument(fmt::format("bound '{}' must hold one element, got shape {}",
                                         c.Input(i).name, planner::ShapeToString(c.InShape(i))));
    }
  }
  pw::ClipDefaults defaults;
  if (c.node().HasAttr("min")) {
    defaults.lo = c.node().FloatAttr("min", 0);
    defaults.has_lo = true;
  }
  if (c.node().HasAttr("max")) {
    defaults.hi = c.node().FloatAttr("max", 0);
    defaults.has_hi = true;
  }
  const bool has_min = c.HasInput(1);
  const bool has_max = c.HasInput(2);
  Kernel run = [=](const OpArgs& a) {
    return Launched(pw::LaunchClip(type, a.inputs[0]->data, has_min ? a.inputs[1]->data : nullptr,
                                   has_max ? a.inputs[2]->data : nullptr, defaults,
                                   a.outputs[0]->data, a.outputs[0]->elements),
                    "Clip");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareUnary(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (planner::NumElements(c.InShape(0)) != planner::NumElements(c.OutShape(0))) {
    return InvalidArgument(fmt::format("input {} and output {} differ in size",
                                       planner::ShapeToString(c.InShape(0)),
                                       planner::ShapeToString(c.OutShape(0))));
  }
  const std::string& op = c.node().op_type;
  const pw::Elem in = ElemOf(c.Input(0).dtype);
  if (op == "Not") {
    if (in != pw::Elem::kBool) return InvalidArgument("Not needs a bool input");
    return UnaryOp(c, pw::UnaryOp::kNot);
  }
  if (op == "IsNaN") {
    if (!IsFloatElem(in)) return InvalidArgument("IsNaN needs a floating input");
    return UnaryOp(c, pw::UnaryOp::kIsNaN);
  }
  if (in == pw::Elem::kI64) {
    if (op == "Neg") return UnaryOp(c, pw::UnaryOp::kNeg);
    if (op == "Abs") return UnaryOp(c, pw::UnaryOp::kAbs);
    if (op == "Relu") return UnaryOp(c, pw::UnaryOp::kRelu);
    if (op == "Clip") return ClipOp(c);
  }
  if (!IsFloatElem(in)) {
    return InvalidArgument(fmt::format("{} of {} is not supported", op, DTypeOf(c, 0)));
  }
  static const std::map<std::string_view, pw::UnaryOp> kFloatOps = {
      {"Sqrt", pw::UnaryOp::kSqrt},         {"Reciprocal", pw::UnaryOp::kReciprocal},
      {"Neg", pw::UnaryOp::kNeg},           {"Abs", pw::UnaryOp::kAbs},
      {"Relu", pw::UnaryOp::kRelu},         {"Exp", pw::UnaryOp::kExp},
      {"Log", pw::UnaryOp::kLog},           {"Erf", pw::UnaryOp::kErf},
      {"Tanh", pw::UnaryOp::kTanh},         {"Cos", pw::UnaryOp::kCos},
      {"Sin", pw::UnaryOp::kSin},           {"Sigmoid", pw::UnaryOp::kSigmoid},
      {"Softplus", pw::UnaryOp::kSoftplus}, {"HardSwish", pw::UnaryOp::kHardSwish},
  };
  if (const auto it = kFloatOps.find(op); it != kFloatOps.end()) return UnaryOp(c, it->second);
  if (op == "LeakyRelu") {
    pw::UnaryParams params;
    params.alpha = static_cast<float>(c.node().FloatAttr("alpha", 0.01));
    return UnaryOp(c, pw::UnaryOp::kLeakyRelu, params);
  }
  if (op == "HardSigmoid") {
    pw::UnaryParams params;
    params.alpha = static_cast<float>(c.node().FloatAttr("alpha", 0.2));
    params.beta = static_cast<float>(c.node().FloatAttr("beta", 0.5));
    return UnaryOp(c, pw::UnaryOp::kHardSigmoid, params);
  }
  if (op == "Gelu") {
    const std::string approximate = c.node().StringAttr("approximate", "none");
    if (approximate == "tanh") return UnaryOp(c, pw::UnaryOp::kGeluTanh);
    if (approximate != "none") {
      return InvalidArgument(fmt::format("unknown approximate '{}'", approximate));
    }
    return UnaryOp(c, pw::UnaryOp::kGelu);
  }
  if (op == "Clip") return ClipOp(c);
  return InvalidArgument(fmt::format("no CUDA baseline kernel for {}", op));
}

// ---- Binary and variadic ----

Result<PreparedOp> BinaryOp(const NodeContext& c, pw::BinaryOp op) {
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index,
                      BroadcastIndex<2>(c.OutShape(0), {c.InShape(0), c.InShape(1)}));
  const pw::Elem a = ElemOf(c.Input(0).dtype);
  const pw::Elem b = ElemOf(c.Input(1).dtype);
  const pw::Elem out = ElemOf(c.Output(0).dtype);
  Kernel run = [op, a, b, out, index, name = c.node().op_type](const OpArgs& args) {
    return Launched(pw::LaunchBinary(op, a, b, out, args.inputs[0]->data, args.inputs[1]->data,
                                     args.outputs[0]->data, index),
                    name);
  };
  return PreparedOp{std::move(run), 0, false};
}

// Max and Min take any number of inputs: the first is broadcast into the output, which then
// absorbs the others one at a time (in place: each element is read and written by one thread).
Result<PreparedOp> VariadicOp(const NodeContext& c, pw::BinaryOp op) {
  const pw::Elem type = ElemOf(c.Output(0).dtype);
  std::vector<std::pair<size_t, pw::ElementIndex>> steps;
  size_t first = c.node().inputs.size();
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    if (!c.HasInput(i)) continue;
    if (ElemOf(c.Input(i).dtype) != type) {
      return InvalidArgument(fmt::format("inputs are {} and {}", DTypeOf(c, i),
                                         planner::DTypeName(c.Output(0).dtype)));
    }
    if (first == c.node().inputs.size()) {
      first = i;
      continue;
    }
    KF_ASSIGN_OR_RETURN(pw::ElementIndex index,
                        BroadcastIndex<2>(c.OutShape(0), {c.OutShape(0), c.InShape(i)}));
    steps.emplace_back(i, index);
  }
  if (first == c.node().inputs.size()) return InvalidArgument("has no inputs");
  KF_ASSIGN_OR_RETURN(pw::ElementIndex spread,
                      BroadcastIndex<1>(c.OutShape(0), {c.InShape(first)}));
  Kernel run = [=, name = c.node().op_type](const OpArgs& a) {
    void* out = a.outputs[0]->data;
    KF_RETURN_IF_ERROR(Launched(pw::LaunchCopy(ElemBytes(type), a.inputs[first]->data, out, spread),
                                "broadcast copy"));
    for (const auto& [input, index] : steps) {
      KF_RETURN_IF_ERROR(Launched(
          pw::LaunchBinary(op, type, type, type, out, a.inputs[input]->data, out, index), name));
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// The exponent when Pow's second input is a plan-time scalar.
std::optional<double> ScalarExponent(const NodeContext& c) {
  if (!c.IsConstant(1) || planner::NumElements(c.InShape(1)) != 1) return std::nullopt;
  Result<std::vector<double>> value = c.ConstFloats(1, "exponent");
  if (!value.ok()) return std::nullopt;
  return (*value)[0];
}

Result<PreparedOp> PreparePow(const NodeContext& c) {
  const pw::Elem base = ElemOf(c.Input(0).dtype);
  const pw::Elem exponent = ElemOf(c.Input(1).dtype);
  if (IsFloatElem(base)) {
    // Squares and square roots from exporters' decompositions (variance, GELU) skip powf.
    std::optional<double> e = ScalarExponent(c);
    if (e && c.OutShape(0) == c.InShape(0)) {
      if (*e == 1.0) return UnaryOp(c, pw::UnaryOp::kIdentity);
      if (*e == 2.0) return UnaryOp(c, pw::UnaryOp::kSquare);
      if (*e == 3.0) return UnaryOp(c, pw::UnaryOp::kCube);
      if (*e == 0.5) return UnaryOp(c, pw::UnaryOp::kSqrt);
    }
  }
  if ((IsFloatElem(base) || base == pw::Elem::kI64) &&
      (IsFloatElem(exponent) || exponent == pw::Elem::kI64)) {
    return BinaryOp(c, pw::BinaryOp::kPow);
  }
  return InvalidArgument(
      fmt::format("Pow of {} by {} is not supported", DTypeOf(c, 0), DTypeOf(c, 1)));
}

Result<PreparedOp> PrepareArithmetic(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "Pow") {
    KF_RETURN_IF_ERROR(c.RequireInputs(2));
    return PreparePow(c);
  }
  if (!c.HasInput(0)) return InvalidArgument("input 0 is missing");
  const pw::Elem type = ElemOf(c.Input(0).dtype);
  if (type == pw::Elem::kBool)
    return InvalidArgument(fmt::format("{} of bool is not supported", op));
  if (op == "Max" || op == "Min") {
    const pw::BinaryOp binary = op == "Max" ? pw::BinaryOp::kMax : pw::BinaryOp::kMin;
    size_t present = 0;
    for (size_t i = 0; i < c.node().inputs.size(); ++i) present += c.HasInput(i) ? 1 : 0;
    if (present == 2 && c.HasInput(0) && c.HasInput(1) && ElemOf(c.Input(1).dtype) == type) {
      return BinaryOp(c, binary);
    }
    return VariadicOp(c, binary);
  }
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (ElemOf(c.Input(1).dtype) != type) {
    return InvalidArgument(fmt::format("inputs are {} and {}", DTypeOf(c, 0), DTypeOf(c, 1)));
  }
  if (op == "Add") return BinaryOp(c, pw::BinaryOp::kAdd);
  if (op == "Sub") return BinaryOp(c, pw::BinaryOp::kSub);
  if (op == "Mul") return BinaryOp(c, pw::BinaryOp::kMul);
  if (op == "Div") return BinaryOp(c, pw::BinaryOp::kDiv);
  return InvalidArgument(fmt::format("no CUDA baseline kernel for {}", op));
}

Result<PreparedOp> PrepareComparison(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const pw::Elem type = ElemOf(c.Input(0).dtype);
  if (ElemOf(c.Input(1).dtype) != type) {
    return InvalidArgument(fmt::format("inputs are {} and {}", DTypeOf(c, 0), DTypeOf(c, 1)));
  }
  const std::string& op = c.node().op_type;
  if (op == "And" || op == "Or") {
    if (type != pw::Elem::kBool) return InvalidArgument(op + " needs bool inputs");
    return BinaryOp(c, op == "And" ? pw::BinaryOp::kAnd : pw::BinaryOp::kOr);
  }
  if (op == "Equal") return BinaryOp(c, pw::BinaryOp::kEqual);
  if (op == "Less") return BinaryOp(c, pw::BinaryOp::kLess);
  if (op == "Greater") return BinaryOp(c, pw::BinaryOp::kGreater);
  if (op == "LessOrEqual") return BinaryOp(c, pw::BinaryOp::kLessOrEqual);
  if (op == "GreaterOrEqual") return BinaryOp(c, pw::BinaryOp::kGreaterOrEqual);
  return InvalidArgument(fmt::format("{} of {} is not supported", op, DTypeOf(c, 0)));
}

Result<PreparedOp> PrepareWhere(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  if (ElemOf(c.Input(0).dtype) != pw::Elem::kBool) {
    return InvalidArgument("the condition must be bool");
  }
  const pw::Elem type = ElemOf(c.Input(1).dtype);
  if (ElemOf(c.Input(2).dtype) != type) return InvalidArgument("x and y differ in dtype");
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index,
                      BroadcastIndex<3>(c.OutShape(0), {c.InShape(0), c.InShape(1), c.InShape(2)}));
  const int bytes = ElemBytes(type);
  Kernel run = [bytes, index](const OpArgs& a) {
    return Launched(pw::LaunchWhere(bytes, a.inputs[0]->data, a.inputs[1]->data, a.inputs[2]->data,
                                    a.outputs[0]->data, index),
                    "Where");
  };
  return PreparedOp{std::move(run), 0, false};
}

// An integer of `dtype` held in i64 wraps to the dtype's width, as a C cast does.
pw::IntWrap WrapOf(DType dtype) {
  switch (dtype) {
    case DType::kI32:
      return pw::IntWrap::kI32;
    case DType::kI16:
      return pw::IntWrap::kI16;
    case DType::kI8:
      return pw::IntWrap::kI8;
    case DType::kU8:
      return pw::IntWrap::kU8;
    default:
      return pw::IntWrap::kNone;
  }
}

Result<PreparedOp> PrepareCast(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const pw::Elem from = ElemOf(c.Input(0).dtype);
  const pw::Elem to = ElemOf(c.Output(0).dtype);
  const pw::IntWrap wrap = WrapOf(c.Output(0).dtype);
  Kernel run = [from, to, wrap](const OpArgs& a) {
    return Launched(pw::LaunchCast(from, to, wrap, a.inputs[0]->data, a.outputs[0]->data,
                                   a.outputs[0]->elements),
                    "Cast");
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

bool IsPointwiseOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {
      "Add",       "Sub",   "Mul",   "Div",         "Pow",         "Max",
      "Min",       "Equal", "Less",  "Greater",     "LessOrEqual", "GreaterOrEqual",
      "And",       "Or",    "Where", "Sqrt",        "Reciprocal",  "Neg",
      "Exp",       "Log",   "Erf",   "Tanh",        "Sigmoid",     "Relu",
      "LeakyRelu", "Clip",  "Gelu",  "HardSigmoid", "HardSwish",   "Softplus",
      "Abs",       "Cos",   "Sin",   "Not",         "IsNaN",       "Cast"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PreparePointwiseOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (!IsPointwiseOp(op)) {
    return InvalidArgument(fmt::format("no CUDA baseline kernel for {}", op));
  }
  if (c.node().outputs.empty() || !c.HasOutput(0)) return InvalidArgument("has no output");
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow" || op == "Max" ||
      op == "Min") {
    return PrepareArithmetic(c);
  }
  if (op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
      op == "GreaterOrEqual" || op == "And" || op == "Or") {
    return PrepareComparison(c);
  }
  if (op == "Where") return PrepareWhere(c);
  if (op == "Cast") return PrepareCast(c);
  return PrepareUnary(c);
}

}  // namespace kfleet::cuda::ops
