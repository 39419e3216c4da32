#include "agents/rownorm_analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>

namespace kfleet::agents {
namespace {

using planner::Graph;
using planner::Node;
using planner::Shape;
using planner::Value;
using planner::ValueKind;

// A float literal the generated source can use as is: "2.0f", "(-0.5f)", "1e-05f".
std::string FloatLiteral(double value) {
  if (std::isnan(value)) return "NAN";
  if (std::isinf(value)) return value > 0 ? "INFINITY" : "(-INFINITY)";
  std::string text = fmt::format("{:.9g}", static_cast<float>(value));
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  text += "f";
  return value < 0 ? "(" + text + ")" : text;
}

Shape StripLeadingOnes(const Shape& shape) {
  size_t i = 0;
  while (i + 1 < shape.size() && shape[i] == 1) ++i;
  return Shape(shape.begin() + static_cast<std::ptrdiff_t>(i), shape.end());
}

class RowAnalyzer {
 public:
  RowAnalyzer(const Graph& graph, RowDTypes dtypes) : g_(graph), dtypes_(dtypes) {
    for (size_t k = 0; k < g_.inputs.size(); ++k) input_of_[g_.inputs[k]] = static_cast<int>(k);
    plan_.inputs.resize(g_.inputs.size());
    classified_.assign(g_.inputs.size(), false);
  }

  Result<RowPlan> Run(const SpecView& spec) {
    if (g_.outputs.size() != 1) {
      return InvalidArgument(
          fmt::format("rownorm writes one output; the spec has {}", g_.outputs.size()));
    }
    if (spec.anchor < 0 || spec.anchor >= static_cast<int>(g_.nodes.size())) {
      return InvalidArgument("the spec has no anchor node");
    }
    KF_RETURN_IF_ERROR(MatchCore(spec.family, spec.anchor));
    for (int v : g_.inputs) KF_RETURN_IF_ERROR(CheckDType(v));
    KF_RETURN_IF_ERROR(CheckDType(g_.outputs[0]));
    const Shape& x_shape = V(x_).shape;
    const size_t row_axes = x_shape.size() - static_cast<size_t>(plan_.reduced_axes);
    for (size_t d = 0; d < x_shape.size(); ++d) (d < row_axes ? rows_ : cols_) *= x_shape[d];
    KF_ASSIGN_OR_RETURN(plan_.x_expr, Prologue(x_));
    KF_RETURN_IF_ERROR(Epilogue());
    for (size_t n = 0; n < g_.nodes.size(); ++n) {
      if (!visited_.count(static_cast<int>(n))) {
        return InvalidArgument(fmt::format("{} is not part of a {} row pattern rownorm knows",
                                           planner::DescribeNode(g_.nodes[n]), spec.family));
      }
    }
    for (size_t k = 0; k < g_.inputs.size(); ++k) {
      if (!classified_[k]) {
        return InvalidArgument(fmt::format("spec input {} is not read", V(g_.inputs[k]).name));
      }
      plan_.input_ranks.push_back(static_cast<int>(V(g_.inputs[k]).shape.size()));
    }
    if (plan_.shape_input < 0) {
      return InvalidArgument(fmt::format("no spec input has the normalized shape {}",
                                         planner::ShapeToString(x_shape)));
    }
    plan_.output_rank = static_cast<int>(V(g_.outputs[0]).shape.size());
    return plan_;
  }

 private:
  const Node& N(int node) const { return g_.nodes[node]; }
  const Value& V(int value) const { return g_.values[value]; }
  int In(int node, size_t k) const { return k < N(node).inputs.size() ? N(node).inputs[k] : -1; }
  int Out(int node) const { return N(node).outputs[0]; }
  int Producer(int value) const { return value >= 0 ? V(value).producer : -1; }
  bool IsOp(int node, std::string_view op) const { return node >= 0 && N(node).op_type == op; }
  bool IsGraphOutput(int value) const { return value == g_.outputs[0]; }

  // The node that reads `value` when it is its only reader and the value is not the output.
  int OnlyConsumer(int value) const {
    if (value < 0 || IsGraphOutput(value)) return -1;
    std::set<int> readers(V(value).consumers.begin(), V(value).consumers.end());
    return readers.size() == 1 ? *readers.begin() : -1;
  }

  std::optional<double> ScalarConstant(int value) const {
    if (value < 0 || V(value).kind != ValueKind::kConstant || !V(value).constant) return {};
    if (planner::NumElements(V(value).shape) != 1) return {};
    const planner::ConstantData& data = *V(value).constant;
    if (!data.floats.empty()) return data.floats[0];
    if (!data.ints.empty()) return static_cast<double>(data.ints[0]);
    return {};
  }

  bool IsConstantNear(int value, double target) const {
    std::optional<double> c = ScalarConstant(value);
    return c && std::abs(*c - target) <= 1e-6 * std::max(1.0, std::abs(target));
  }

  bool IsRowDType(planner::DType dtype) const {
    return dtype == planner::DType::kF32 ||
           (dtypes_ == RowDTypes::kF32AndHalf &&
            (dtype == planner::DType::kF16 || dtype == planner::DType::kBF16));
  }

  // A cast to a float type the kernel computes in f32 anyway (ONNX codes: 1 f32, 10 f16, 16 bf16).
  bool IsFloatCast(int node) const {
    const int64_t to = N(node).IntAttr("to", 0);
    return to == 1 || (dtypes_ == RowDTypes::kF32AndHalf && (to == 10 || to == 16));
  }

  Status CheckDType(int value) const {
    if (!IsRowDType(V(value).dtype)) {
      return InvalidArgument(fmt::format("rownorm supports {} only; {} is {}",
                                         dtypes_ == RowDTypes::kF32 ? "f32" : "f32, f16 and bf16",
                                         V(value).name, planner::DTypeName(V(value).dtype)));
    }
    return Status::Ok();
  }

  Status Fail(int node, std::string_view why) const {
    return InvalidArgument(fmt::format("{}: {}", planner::DescribeNode(N(node)), why));
  }

  // ---- the core ----

  // Sets the trailing-axes count from a reduction's axes (attribute before opset 18, input
  // after) and checks keepdims.
  Status ReduceAxes(int node, bool need_keepdims) {
    const int rank = static_cast<int>(V(In(node, 0)).shape.size());
    std::vector<int64_t> axes;
    if (In(node, 1) >= 0) {
      const Value& a = V(In(node, 1));
      if (a.kind != ValueKind::kConstant || !a.constant) {
        return Fail(node, "the axes input must be a constant");
      }
      axes = a.constant->ints;
    } else {
      axes = N(node).IntsAttr("axes");
    }
    if (axes.empty()) {
      if (N(node).IntAttr("noop_with_empty_axes", 0) != 0) {
        return Fail(node, "a reduction over no axes is a copy, not a row reduction");
      }
      for (int d = 0; d < rank; ++d) axes.push_back(d);
    }
    for (int64_t& a : axes) {
      if (a < -rank || a >= rank) return Fail(node, fmt::format("axis {} is out of range", a));
      if (a < 0) a += rank;
    }
    std::sort(axes.begin(), axes.end());
    axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
    const int k = static_cast<int>(axes.size());
    for (int i = 0; i < k; ++i) {
      if (axes[i] != rank - k + i) {
        return Fail(node,
                    "rownorm reduces trailing contiguous axes only (rows of a row-major "
                    "tensor)");
      }
    }
    if (need_keepdims && N(node).IntAttr("keepdims", 1) == 0) {
      return Fail(node, "a norm's reductions must keep their dims");
    }
    if (plan_.reduced_axes != 0 && plan_.reduced_axes != k) {
      return Fail(node, "the pattern's reductions disagree on their axes");
    }
    plan_.reduced_axes = k;
    return Status::Ok();
  }

  // Axis attribute of LayerNormalization / Softmax: every axis from it to the last.
  Status TrailingFromAxis(int node, int64_t fallback) {
    const int rank = static_cast<int>(V(In(node, 0)).shape.size());
    int64_t axis = N(node).IntAttr("axis", fallback);
    if (axis < -rank || axis >= rank)
      return Fail(node, fmt::format("axis {} is out of range", axis));
    if (axis < 0) axis += rank;
    plan_.reduced_axes = rank - static_cast<int>(axis);
    return Status::Ok();
  }

  void Take(std::initializer_list<int> nodes) {
    for (int n : nodes) visited_.insert(n);
  }

  // x / sqrt(s) as Div(x, sqrt), Mul(x, Reciprocal(sqrt)) or Mul(x, Div(1, sqrt)); returns the
  // quotient's value or -1.
  int MatchScaleBySqrt(int sqrt_out, int x) {
    int c = OnlyConsumer(sqrt_out);
    if (IsOp(c, "Div") && In(c, 0) == x && In(c, 1) == sqrt_out) {
      Take({c});
      return Out(c);
    }
    bool reciprocal = IsOp(c, "Reciprocal") ||
                      (IsOp(c, "Div") && In(c, 1) == sqrt_out && IsConstantNear(In(c, 0), 1));
    if (!reciprocal) return -1;
    int mul = OnlyConsumer(Out(c));
    if (!IsOp(mul, "Mul") || N(mul).inputs.size() != 2) return -1;
    if (!((In(mul, 0) == x && In(mul, 1) == Out(c)) || (In(mul, 1) == x && In(mul, 0) == Out(c)))) {
      return -1;
    }
    Take({c, mul});
    return Out(mul);
  }

  bool IsSquareOf(int node, int x) const {
    if (IsOp(node, "Pow")) return In(node, 0) == x && IsConstantNear(In(node, 1), 2);
    return IsOp(node, "Mul") && N(node).inputs.size() == 2 && In(node, 0) == x && In(node, 1) == x;
  }

  // ReduceMean(var) -> Add(eps) -> Sqrt, from the variance (or mean square) reduction.
  Result<int> MatchEpsSqrt(int var_node) {
    int eps = OnlyConsumer(Out(var_node));
    if (!IsOp(eps, "Add")) return Fail(var_node, "expected Add(epsilon) after the mean square");
    int other = In(eps, 0) == Out(var_node) ? In(eps, 1) : In(eps, 0);
    std::optional<double> e = ScalarConstant(other);
    if (!e) return Fail(eps, "epsilon must be a scalar constant");
    plan_.epsilon = *e;
    int sqrt = OnlyConsumer(Out(eps));
    if (!IsOp(sqrt, "Sqrt")) return Fail(eps, "expected Sqrt after the epsilon");
    Take({eps, sqrt});
    return Out(sqrt);
  }

  Status MatchDecomposedLayerNorm(int mean_node) {
    x_ = In(mean_node, 0);
    KF_RETURN_IF_ERROR(ReduceAxes(mean_node, true));
    int sub = OnlyConsumer(Out(mean_node));
    if (!IsOp(sub, "Sub") || In(sub, 0) != x_ || In(sub, 1) != Out(mean_node)) {
      return Fail(mean_node, "expected Sub(x, mean) after the mean");
    }
    int d = Out(sub);
    std::set<int> users(V(d).consumers.begin(), V(d).consumers.end());
    int square = -1;
    for (int u : users) {
      if (IsSquareOf(u, d)) square = u;
    }
    if (square < 0 || users.size() != 2 || IsGraphOutput(d)) {
      return Fail(sub, "expected x - mean to be squared and scaled, nothing else");
    }
    int var_node = OnlyConsumer(Out(square));
    if (!IsOp(var_node, "ReduceMean")) return Fail(square, "expected ReduceMean of the square");
    KF_RETURN_IF_ERROR(ReduceAxes(var_node, true));
    Take({mean_node, sub, square, var_node});
    KF_ASSIGN_OR_RETURN(int sqrt_out, MatchEpsSqrt(var_node));
    core_out_ = MatchScaleBySqrt(sqrt_out, d);
    if (core_out_ < 0) return Fail(Producer(sqrt_out), "expected (x - mean) / sqrt(var + eps)");
    plan_.kind = RowKind::kLayerNorm;
    plan_.description = fmt::format("LayerNorm (decomposed, eps {:.6g})", plan_.epsilon);
    return Status::Ok();
  }

  Status MatchDecomposedRmsNorm(int mean_node) {
    int square = Producer(In(mean_node, 0));
    if (square < 0 || OnlyConsumer(Out(square)) != mean_node ||
        !IsSquareOf(square, In(square, 0))) {
      return Fail(mean_node, "expected the mean of x * x");
    }
    x_ = In(square, 0);
    KF_RETURN_IF_ERROR(ReduceAxes(mean_node, true));
    Take({square, mean_node});
    KF_ASSIGN_OR_RETURN(int sqrt_out, MatchEpsSqrt(mean_node));
    core_out_ = MatchScaleBySqrt(sqrt_out, x_);
    if (core_out_ < 0) return Fail(Producer(sqrt_out), "expected x / sqrt(mean(x^2) + eps)");
    plan_.kind = RowKind::kRmsNorm;
    plan_.description = fmt::format("RMSNorm (decomposed, eps {:.6g})", plan_.epsilon);
    return Status::Ok();
  }

  Status MatchLayerNormOp(int node) {
    for (size_t k = 1; k < N(node).outputs.size(); ++k) {
      int v = N(node).outputs[k];
      if (v >= 0 && (IsGraphOutput(v) || !V(v).consumers.empty())) {
        return Fail(node, "its Mean / InvStdDev outputs are used; rownorm writes Y only");
      }
    }
    x_ = In(node, 0);
    KF_RETURN_IF_ERROR(TrailingFromAxis(node, -1));
    plan_.epsilon = N(node).FloatAttr("epsilon", 1e-5);
    plan_.kind = RowKind::kLayerNorm;
    plan_.description = fmt::format("LayerNormalization (eps {:.6g})", plan_.epsilon);
    Take({node});
    core_out_ = Out(node);
    affine_scale_ = In(node, 1);
    affine_bias_ = In(node, 2);
    return Status::Ok();
  }

  Status MatchCore(const std::string& family, int anchor) {
    const std::string& op = N(anchor).op_type;
    if (family == "layernorm") {
      if (op == "LayerNormalization") return MatchLayerNormOp(anchor);
      if (op == "ReduceMean") return MatchDecomposedLayerNorm(anchor);
    } else if (family == "rmsnorm") {
      if (op == "ReduceMean") return MatchDecomposedRmsNorm(anchor);
      return Fail(anchor, "rownorm implements RMSNorm in its decomposed form only");
    } else if (family == "softmax" || family == "log_softmax") {
      if (op == "Softmax" || op == "LogSoftmax") {
        x_ = In(anchor, 0);
        KF_RETURN_IF_ERROR(TrailingFromAxis(anchor, -1));
        if (plan_.reduced_axes != 1) return Fail(anchor, "rownorm runs softmax over the last axis");
        plan_.kind = op == "Softmax" ? RowKind::kSoftmax : RowKind::kLogSoftmax;
        plan_.description = op;
        Take({anchor});
        core_out_ = Out(anchor);
        return Status::Ok();
      }
    } else if (family == "reduce") {
      static const std::map<std::string, RowKind, std::less<>> kReductions = {
          {"ReduceSum", RowKind::kReduceSum},
          {"ReduceMean", RowKind::kReduceMean},
          {"ReduceMax", RowKind::kReduceMax},
          {"ReduceMin", RowKind::kReduceMin}};
      auto it = kReductions.find(op);
      if (it == kReductions.end()) return Fail(anchor, "rownorm reduces with Sum, Mean, Max, Min");
      x_ = In(anchor, 0);
      KF_RETURN_IF_ERROR(ReduceAxes(anchor, false));
      plan_.kind = it->second;
      plan_.description = op;
      Take({anchor});
      core_out_ = Out(anchor);
      return Status::Ok();
    }
    return InvalidArgument(fmt::format("rownorm does not implement family '{}' (anchor {})", family,
                                       planner::DescribeNode(N(anchor))));
  }

  // ---- operands and elementwise ops ----

  // Sets how spec input k is indexed; one spec input read two ways is refused.
  Status Classify(int k, OperandIndex index) {
    if (classified_[k] && plan_.inputs[k] != index) {
      return InvalidArgument(
          fmt::format("spec input {} is read with two different broadcasts", V(g_.inputs[k]).name));
    }
    classified_[k] = true;
    plan_.inputs[k] = index;
    return Status::Ok();
  }

  // The expression of a spec input or constant broadcast to `space` (an op's output shape):
  // rows x cols elements, or one element per row when `per_row_space` (after a reduction).
  Result<std::string> Leaf(int value, const Shape& space, bool per_row_space) {
    if (std::optional<double> c = ScalarConstant(value)) return FloatLiteral(*c);
    auto it = input_of_.find(value);
    if (it == input_of_.end()) {
      return InvalidArgument(fmt::format(
          "operand {} is a constant tensor; rownorm embeds scalar constants only", V(value).name));
    }
    const int k = it->second;
    const Shape& shape = V(value).shape;
    const std::string scalar = fmt::format("s{}", k);
    if (planner::NumElements(shape) == 1) {
      KF_RETURN_IF_ERROR(Classify(k, OperandIndex::kScalar));
      return scalar;
    }
    if (per_row_space) {
      if (StripLeadingOnes(shape) == StripLeadingOnes(space)) {
        KF_RETURN_IF_ERROR(Classify(k, OperandIndex::kRow));
        return scalar;
      }
    } else if (shape == space && planner::NumElements(space) == rows_ * cols_) {
      KF_RETURN_IF_ERROR(Classify(k, OperandIndex::kElement));
      if (shape == V(x_).shape && plan_.shape_input < 0) plan_.shape_input = k;
      return fmt::format("e{}[c]", k);
    } else if (shape.size() <= space.size()) {
      // Right-align the operand to the space, then find where a row starts in the space.
      Shape aligned(space.size() - shape.size(), 1);
      aligned.insert(aligned.end(), shape.begin(), shape.end());
      int64_t suffix = 1;
      for (size_t j = space.size() + 1; j-- > 0;) {
        if (j < space.size()) suffix *= space[j];
        if (suffix != cols_) continue;
        bool column = true;
        bool row = true;
        for (size_t i = 0; i < space.size(); ++i) {
          column = column && aligned[i] == (i < j ? 1 : space[i]);
          row = row && aligned[i] == (i < j ? space[i] : 1);
        }
        if (column) {
          KF_RETURN_IF_ERROR(Classify(k, OperandIndex::kColumn));
          return fmt::format("in{}[c]", k);
        }
        if (row) {
          KF_RETURN_IF_ERROR(Classify(k, OperandIndex::kRow));
          return scalar;
        }
      }
    }
    return InvalidArgument(fmt::format(
        "operand {} of shape {} broadcasts against {} in a way rownorm does not index (scalar, "
        "per row, per column or whole)",
        V(value).name, planner::ShapeToString(shape), planner::ShapeToString(space)));
  }

  // The C expression of an elementwise node whose inputs are `args`.
  Result<std::string> ElementwiseOp(int node, const std::vector<std::string>& args) const {
    const std::string& op = N(node).op_type;
    const size_t n = args.size();
    if (n == 2) {
      if (op == "Add") return fmt::format("({} + {})", args[0], args[1]);
      if (op == "Sub") return fmt::format("({} - {})", args[0], args[1]);
      if (op == "Mul") return fmt::format("({} * {})", args[0], args[1]);
      if (op == "Div") return fmt::format("({} / {})", args[0], args[1]);
      if (op == "Max") return fmt::format("({0} > {1} ? {0} : {1})", args[0], args[1]);
      if (op == "Min") return fmt::format("({0} < {1} ? {0} : {1})", args[0], args[1]);
      if (op == "Pow") {
        if (IsConstantNear(In(node, 1), 1)) return args[0];
        if (IsConstantNear(In(node, 1), 2)) return fmt::format("({0} * {0})", args[0]);
        if (IsConstantNear(In(node, 1), 0.5)) return fmt::format("std::sqrt({})", args[0]);
        return Fail(node, "rownorm fuses Pow with exponent 1, 2 or 0.5 only");
      }
    }
    if (n == 1) {
      if (op == "Neg") return fmt::format("(-{})", args[0]);
      if (op == "Abs") return fmt::format("std::fabs({})", args[0]);
      if (op == "Sqrt") return fmt::format("std::sqrt({})", args[0]);
      if (op == "Reciprocal") return fmt::format("(1.0f / {})", args[0]);
      if (op == "Relu") return fmt::format("({0} < 0.0f ? 0.0f : {0})", args[0]);
      if (op == "Identity") return args[0];
      if (op == "Cast" && IsFloatCast(node)) return args[0];
    }
    if (op == "Dropout" && (In(node, 2) < 0 || IsConstantNear(In(node, 2), 0))) return args[0];
    return Fail(node, "rownorm does not fuse this elementwise op");
  }

  // The row element of `value` (x or a prologue value) as an expression of column c.
  Result<std::string> Prologue(int value) {
    int p = Producer(value);
    if (p < 0) return Leaf(value, V(x_).shape, false);
    if (visited_.count(p) && !prologue_.count(p)) {
      return Fail(p, "the prologue reads a value of the row pattern");
    }
    if (V(value).shape != V(x_).shape) {
      return Fail(p, fmt::format("the prologue value has shape {}, not the row shape {}",
                                 planner::ShapeToString(V(value).shape),
                                 planner::ShapeToString(V(x_).shape)));
    }
    std::vector<std::string> args;
    for (int in : N(p).inputs) {
      if (in < 0) continue;
      KF_ASSIGN_OR_RETURN(std::string arg, Prologue(in));
      args.push_back(std::move(arg));
    }
    if (IsOp(p, "Dropout")) args.resize(1);
    if (prologue_.insert(p).second) prologue_ops_.push_back(N(p).op_type);
    visited_.insert(p);
    return ElementwiseOp(p, args);
  }

  static bool IsViewOp(std::string_view op) {
    return op == "Reshape" || op == "Squeeze" || op == "Unsqueeze" || op == "Flatten";
  }

  // Follows the core's result to the spec output; every step reads the chain value and spec
  // inputs or scalar constants.
  Status Epilogue() {
    const bool per_row = WritesOnePerRow(plan_.kind);
    std::string expr = "v";
    // LayerNormalization's scale and bias broadcast against Y like an epilogue Mul and Add.
    if (affine_scale_ >= 0) {
      KF_ASSIGN_OR_RETURN(std::string scale, Leaf(affine_scale_, V(x_).shape, false));
      expr = fmt::format("({} * {})", expr, scale);
    }
    if (affine_bias_ >= 0) {
      KF_ASSIGN_OR_RETURN(std::string bias, Leaf(affine_bias_, V(x_).shape, false));
      expr = fmt::format("({} + {})", expr, bias);
    }
    std::vector<std::string> ops;
    int cur = core_out_;
    while (!IsGraphOutput(cur)) {
      std::set<int> readers(V(cur).consumers.begin(), V(cur).consumers.end());
      if (readers.size() != 1) {
        return InvalidArgument(fmt::format("the row result {} has {} readers; rownorm needs one",
                                           V(cur).name, readers.size()));
      }
      const int node = *readers.begin();
      if (IsViewOp(N(node).op_type)) {
        if (In(node, 0) != cur) return Fail(node, "the view does not read the row result");
        visited_.insert(node);
        cur = Out(node);
        continue;
      }
      std::vector<std::string> args;
      for (int in : N(node).inputs) {
        if (in < 0) continue;
        if (in == cur) {
          args.push_back(expr);
          continue;
        }
        if (Producer(in) >= 0) return Fail(node, "the epilogue reads a value computed in the spec");
        KF_ASSIGN_OR_RETURN(std::string leaf, Leaf(in, V(Out(node)).shape, per_row));
        args.push_back(std::move(leaf));
      }
      if (IsOp(node, "Dropout")) args.resize(1);
      if (planner::NumElements(V(Out(node)).shape) != planner::NumElements(V(cur).shape)) {
        return Fail(node, "the epilogue changes the number of elements");
      }
      KF_ASSIGN_OR_RETURN(expr, ElementwiseOp(node, args));
      ops.push_back(N(node).op_type);
      visited_.insert(node);
      cur = Out(node);
    }
    plan_.epilogue_expr = expr;
    if (!prologue_ops_.empty()) {
      plan_.description =
          fmt::format("{} after {}", plan_.description, fmt::join(prologue_ops_, ", "));
    }
    if (!ops.empty()) plan_.description += fmt::format(" then {}", fmt::join(ops, ", "));
    return Status::Ok();
  }

  const Graph& g_;
  const RowDTypes dtypes_;
  std::map<int, int> input_of_;  // value id -> spec input index
  RowPlan plan_;
  std::vector<bool> classified_;  // per spec input: plan_.inputs[k] is set
  std::set<int> visited_;         // nodes accounted for
  std::set<int> prologue_;        // nodes the row element expression computes
  std::vector<std::string> prologue_ops_;
  int x_ = -1;             // the value the core normalizes / reduces
  int core_out_ = -1;      // the value the core produces
  int affine_scale_ = -1;  // LayerNormalization's Scale input, -1 for the other cores
  int affine_bias_ = -1;   // LayerNormalization's B input, -1 when absent
  int64_t rows_ = 1;
  int64_t cols_ = 1;
};

}  // namespace

bool WritesOnePerRow(RowKind kind) {
  return kind == RowKind::kReduceSum || kind == RowKind::kReduceMean ||
         kind == RowKind::kReduceMax || kind == RowKind::kReduceMin;
}

Result<RowPlan> AnalyzeRowSpec(const SpecView& spec, RowDTypes dtypes) {
  if (spec.graph == nullptr) return InvalidArgument("the spec has no graph");
  return RowAnalyzer(*spec.graph, dtypes).Run(spec);
}

}  // namespace kfleet::agents
