#include "agents/gemm_analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include "agents/kernel_math.h"

namespace kfleet::agents {
namespace {

using planner::Graph;
using planner::Node;
using planner::Shape;

bool IsShapeView(std::string_view op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
         op == "Identity";
}

int64_t Product(const Shape& shape, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t d = from; d < to; ++d) p *= shape[d];
  return p;
}

bool AllOnes(const Shape& shape, size_t from, size_t to) { return Product(shape, from, to) == 1; }

// A float literal that parses back to the same float: "0.5f", "3.0f", "(-1.0f)".
std::string FloatLiteral(double value) {
  std::string text = fmt::format("{:.9g}", static_cast<float>(value));
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  text += "f";
  return value < 0 ? "(" + text + ")" : text;
}

// The spec input a value is, walking back through the views before it; the views are appended
// to `views` from the anchor side. -1 when the value is not a view of a spec input.
int TraceToInput(const Graph& g, int value, bool allow_transpose, std::vector<int>& views) {
  while (true) {
    auto it = std::find(g.inputs.begin(), g.inputs.end(), value);
    if (it != g.inputs.end()) return static_cast<int>(it - g.inputs.begin());
    const int p = g.values[value].producer;
    if (p < 0) return -1;
    const Node& node = g.nodes[p];
    if (!IsShapeView(node.op_type) && !(allow_transpose && node.op_type == "Transpose")) return -1;
    views.push_back(p);
    value = node.inputs[0];
  }
}

// True when the Transpose swaps the last two dims and keeps the others.
bool SwapsLastTwo(const Graph& g, const Node& node) {
  const size_t rank = g.values[node.inputs[0]].shape.size();
  std::vector<int64_t> perm = node.IntsAttr("perm");
  if (perm.empty()) return rank == 2;
  if (perm.size() != rank || rank < 2) return false;
  for (size_t d = 0; d + 2 < rank; ++d) {
    if (perm[d] != static_cast<int64_t>(d)) return false;
  }
  return perm[rank - 2] == static_cast<int64_t>(rank - 1) &&
         perm[rank - 1] == static_cast<int64_t>(rank - 2);
}

class GemmAnalyzer {
 public:
  GemmAnalyzer(const SpecView& spec, const GemmAnalysisOptions& options)
      : spec_(spec), g_(*spec.graph), options_(options) {}

  Result<GemmPlan> Run() {
    if (spec_.family.rfind("gemm", 0) != 0) {
      return InvalidArgument(fmt::format("family '{}' is not a GEMM", spec_.family));
    }
    if (spec_.anchor < 0 || spec_.anchor >= static_cast<int>(g_.nodes.size())) {
      return InvalidArgument("the spec has no anchor node");
    }
    const Node& anchor = g_.nodes[spec_.anchor];
    if (anchor.op_type != "MatMul" && anchor.op_type != "Gemm") {
      return InvalidArgument(
          fmt::format("{} is not a MatMul or Gemm", planner::DescribeNode(anchor)));
    }
    for (int v : g_.inputs) KF_RETURN_IF_ERROR(CheckDType(v));
    for (int v : g_.outputs) KF_RETURN_IF_ERROR(CheckDType(v));
    if (g_.outputs.size() != 1) {
      return InvalidArgument(
          fmt::format("the GEMM templates write one output; the spec has {}", g_.outputs.size()));
    }
    for (int v : g_.inputs) {
      plan_.input_ranks.push_back(static_cast<int>(g_.values[v].shape.size()));
    }
    plan_.output_rank = static_cast<int>(g_.values[g_.outputs[0]].shape.size());
    used_.insert(spec_.anchor);
    KF_RETURN_IF_ERROR(AnalyzeOperands(anchor));
    KF_RETURN_IF_ERROR(AnalyzeEpilogue(anchor));
    for (size_t n = 0; n < g_.nodes.size(); ++n) {
      if (used_.count(static_cast<int>(n)) == 0) {
        return InvalidArgument(fmt::format("{} is neither an operand view nor part of the epilogue",
                                           planner::DescribeNode(g_.nodes[n])));
      }
    }
    plan_.blas_epilogue = RecognizeBlasEpilogue(anchor);
    return plan_;
  }

 private:
  // Every tensor has one element type: f32, or with options_.half_types also f16 or bf16.
  Status CheckDType(int value) {
    const planner::Value& v = g_.values[value];
    const planner::DType t = v.dtype;
    if (!options_.half_types && t != planner::DType::kF32) {
      return InvalidArgument(fmt::format("the GEMM templates support f32 only; {} is {}", v.name,
                                         planner::DTypeName(t)));
    }
    if (t != planner::DType::kF32 && t != planner::DType::kF16 && t != planner::DType::kBF16) {
      return InvalidArgument(fmt::format("the GEMM templates support f32, f16 and bf16; {} is {}",
                                         v.name, planner::DTypeName(t)));
    }
    if (first_typed_ < 0) {
      first_typed_ = value;
      plan_.dtype = t;
    } else if (t != plan_.dtype) {
      return InvalidArgument(fmt::format(
          "{} is {} but {} is {}; the GEMM templates need one type", v.name, planner::DTypeName(t),
          g_.values[first_typed_].name, planner::DTypeName(plan_.dtype)));
    }
    if (!v.has_shape) return InvalidArgument(fmt::format("{} has no known shape", v.name));
    return Status::Ok();
  }

  const Shape& ShapeOf(int value) const { return g_.values[value].shape; }

  Status AnalyzeOperands(const Node& anchor) {
    const bool gemm = anchor.op_type == "Gemm";
    const Shape& a_at = ShapeOf(anchor.inputs[0]);
    const Shape& b_at = ShapeOf(anchor.inputs[1]);
    const Shape& out = ShapeOf(anchor.outputs[0]);
    if (a_at.size() < 2 || b_at.size() < 2) {
      return InvalidArgument(
          fmt::format("{}: A {} and B {} must both have rank >= 2", planner::DescribeNode(anchor),
                      planner::ShapeToString(a_at), planner::ShapeToString(b_at)));
    }
    std::vector<int> a_views, b_views;
    const int a_input = TraceToInput(g_, anchor.inputs[0], true, a_views);
    const int b_input = TraceToInput(g_, anchor.inputs[1], true, b_views);
    if (a_input < 0 || b_input < 0) {
      return InvalidArgument(fmt::format(
          "{}: A and B must be spec inputs reached through views (Reshape, Flatten, Squeeze, "
          "Unsqueeze, Identity, Transpose)",
          planner::DescribeNode(anchor)));
    }
    used_.insert(a_views.begin(), a_views.end());
    used_.insert(b_views.begin(), b_views.end());
    const bool a_has_transpose = HasTranspose(a_views);
    plan_.batched =
        !gemm && ((b_at.size() >= 3 && !AllOnes(b_at, 0, b_at.size() - 2)) ||
                  (a_at.size() >= 3 && !AllOnes(a_at, 0, a_at.size() - 2) && a_has_transpose));
    const bool trans_a = gemm && anchor.IntAttr("transA", 0) != 0;
    const bool trans_b = gemm && anchor.IntAttr("transB", 0) != 0;
    if (plan_.batched) {
      KF_ASSIGN_OR_RETURN(plan_.a, BatchedOperand(a_input, a_views, "A"));
      KF_ASSIGN_OR_RETURN(plan_.b, BatchedOperand(b_input, b_views, "B"));
      const Shape batch(out.begin(), out.end() - 2);
      KF_RETURN_IF_ERROR(CheckBatchBroadcast(a_at, batch, "A"));
      KF_RETURN_IF_ERROR(CheckBatchBroadcast(b_at, batch, "B"));
    } else {
      KF_ASSIGN_OR_RETURN(plan_.a, FlatOperand(a_input, a_views, anchor.inputs[0], trans_a, "A"));
      KF_ASSIGN_OR_RETURN(plan_.b, FlatOperand(b_input, b_views, anchor.inputs[1], trans_b, "B"));
    }
    n_ = out.back();
    m_ = out[out.size() - 2];
    return Status::Ok();
  }

  bool HasTranspose(const std::vector<int>& views) const {
    return std::any_of(views.begin(), views.end(),
                       [&](int n) { return g_.nodes[n].op_type == "Transpose"; });
  }

  // Folds the operand's leading dims into rows: reshapes may only come before a transpose, and the
  // transposed tensor must be a matrix (leading dims all 1).
  Result<MatrixOperand> FlatOperand(int input, const std::vector<int>& views_from_anchor,
                                    int at_anchor, bool trans_attr, std::string_view what) const {
    int stored = at_anchor;  // the tensor whose row-major [outer, inner] view the input is
    bool transposed = trans_attr;
    for (int n : views_from_anchor) {
      const Node& node = g_.nodes[n];
      // Reshapes keep the row-major layout; only a transpose changes which dim is inner.
      if (node.op_type != "Transpose") continue;
      if (transposed != trans_attr || !SwapsLastTwo(g_, node)) {
        return InvalidArgument(fmt::format("{} of operand {} is not one matrix transpose",
                                           planner::DescribeNode(node), what));
      }
      const Shape& in = ShapeOf(node.inputs[0]);
      if (!AllOnes(in, 0, in.size() - 2)) {
        return InvalidArgument(fmt::format(
            "{} transposes a batch of matrices {} for operand {}; only batched MatMul allows it",
            planner::DescribeNode(node), planner::ShapeToString(in), what));
      }
      transposed = !transposed;
      stored = node.inputs[0];
    }
    // Reshapes between the transpose and the anchor would reinterpret the transposed matrix.
    if (transposed != trans_attr) {
      for (int n : views_from_anchor) {
        const std::string& op = g_.nodes[n].op_type;
        if (op == "Transpose") break;
        if (op != "Identity") {
          return InvalidArgument(fmt::format("operand {}: {} after a transpose is not supported",
                                             what, planner::DescribeNode(g_.nodes[n])));
        }
      }
    }
    const int64_t inner = ShapeOf(stored).back();
    const Shape& s = ShapeOf(g_.inputs[input]);
    MatrixOperand op;
    op.input = input;
    op.rank = static_cast<int>(s.size());
    op.transposed = transposed;
    op.split = -1;
    for (int split = op.rank; split >= 0; --split) {
      if (Product(s, split, s.size()) == inner) {
        op.split = split;
        break;
      }
    }
    if (op.split < 0) {
      return InvalidArgument(fmt::format("operand {}: no trailing dims of {} make its inner dim {}",
                                         what, planner::ShapeToString(s), inner));
    }
    return op;
  }

  Result<MatrixOperand> BatchedOperand(int input, const std::vector<int>& views,
                                       std::string_view what) const {
    MatrixOperand op;
    op.input = input;
    op.rank = static_cast<int>(ShapeOf(g_.inputs[input]).size());
    op.split = op.rank - 2;
    for (int n : views) {
      const Node& node = g_.nodes[n];
      if (node.op_type == "Identity") continue;
      if (node.op_type != "Transpose" || !SwapsLastTwo(g_, node)) {
        return InvalidArgument(
            fmt::format("batched MatMul: {} on operand {} is not a transpose of the last two dims",
                        planner::DescribeNode(node), what));
      }
      op.transposed = !op.transposed;
    }
    return op;
  }

  // An operand's batch dims either equal the result's or are all 1 (broadcast).
  Status CheckBatchBroadcast(const Shape& at, const Shape& batch, std::string_view what) const {
    if (AllOnes(at, 0, at.size() - 2)) return Status::Ok();
    Shape lead(at.begin(), at.end() - 2);
    while (!lead.empty() && lead.front() == 1) lead.erase(lead.begin());
    Shape full = batch;
    while (!full.empty() && full.front() == 1) full.erase(full.begin());
    if (lead != full) {
      return InvalidArgument(fmt::format(
          "batched MatMul: operand {}'s batch dims {} neither match the result's {} nor are all 1",
          what, planner::ShapeToString(lead), planner::ShapeToString(batch)));
    }
    return Status::Ok();
  }

  Status AnalyzeEpilogue(const Node& anchor) {
    std::string acc = "acc";
    if (anchor.op_type == "Gemm") {
      const double alpha = anchor.FloatAttr("alpha", 1.0);
      const double beta = anchor.FloatAttr("beta", 1.0);
      if (alpha != 1.0) {
        Emit("g_alpha", fmt::format("acc * {}", FloatLiteral(alpha)));
        acc = "g_alpha";
      }
      if (anchor.inputs.size() > 2 && anchor.inputs[2] >= 0 && beta != 0.0) {
        KF_ASSIGN_OR_RETURN(std::string c,
                            Operand(anchor.inputs[2], ShapeOf(anchor.outputs[0]), anchor));
        Emit("g_bias", beta == 1.0 ? fmt::format("{} + {}", acc, c)
                                   : fmt::format("{} + {} * {}", acc, FloatLiteral(beta), c));
        acc = "g_bias";
      }
    }
    running_[anchor.outputs[0]] = acc;
    const int64_t numel = planner::NumElements(ShapeOf(anchor.outputs[0]));
    for (size_t i = static_cast<size_t>(spec_.anchor) + 1; i < g_.nodes.size(); ++i) {
      const Node& node = g_.nodes[i];
      const bool reads_running = std::any_of(node.inputs.begin(), node.inputs.end(),
                                             [&](int v) { return running_.count(v) > 0; });
      if (!reads_running) continue;
      used_.insert(static_cast<int>(i));
      if (node.outputs.size() != 1 || node.outputs[0] < 0) {
        return InvalidArgument(
            fmt::format("{}: the epilogue needs one output per op", planner::DescribeNode(node)));
      }
      const int out = node.outputs[0];
      KF_RETURN_IF_ERROR(CheckDType(out));
      if (planner::NumElements(ShapeOf(out)) != numel) {
        return InvalidArgument(fmt::format("{} changes the element count of the GEMM result",
                                           planner::DescribeNode(node)));
      }
      KF_RETURN_IF_ERROR(EmitOp(node));
    }
    auto it = running_.find(g_.outputs[0]);
    if (it == running_.end()) {
      return InvalidArgument("the spec's output is not computed from the GEMM result");
    }
    plan_.result = it->second;
    return Status::Ok();
  }

  void Emit(const std::string& name, const std::string& expr) {
    plan_.statements.push_back(fmt::format("const float {} = {};", name, expr));
  }

  // The C++ expression for a non-running input of `node`: a scalar constant literal or an
  // operand read (p<i>[j] / s<i>) broadcast against the running value of shape `running`.
  Result<std::string> Operand(int value, const Shape& running, const Node& node) {
    const planner::Value& v = g_.values[value];
    if (v.kind == planner::ValueKind::kConstant && v.constant.has_value()) {
      const planner::ConstantData& c = *v.constant;
      const size_t count = c.floats.empty() ? c.ints.size() : c.floats.size();
      if (count != 1) {
        return InvalidArgument(fmt::format(
            "{}: constant {} has {} elements; the epilogue embeds scalar constants only",
            planner::DescribeNode(node), v.name, count));
      }
      const double x = c.floats.empty() ? static_cast<double>(c.ints[0]) : c.floats[0];
      if (!std::isfinite(static_cast<float>(x))) {
        return InvalidArgument(fmt::format("{}: constant {} is not a finite f32",
                                           planner::DescribeNode(node), v.name));
      }
      return FloatLiteral(x);
    }
    std::vector<int> views;
    const int input = TraceToInput(g_, value, false, views);
    if (input < 0) {
      return InvalidArgument(
          fmt::format("{}: {} is neither a spec input, a view of one, nor a scalar constant",
                      planner::DescribeNode(node), v.name));
    }
    used_.insert(views.begin(), views.end());
    KF_ASSIGN_OR_RETURN(OperandBroadcast broadcast, Classify(running, v.shape, node));
    int index = -1;
    for (size_t k = 0; k < plan_.operands.size(); ++k) {
      if (plan_.operands[k].input == input && plan_.operands[k].broadcast == broadcast) {
        index = static_cast<int>(k);
      }
    }
    if (index < 0) {
      index = static_cast<int>(plan_.operands.size());
      plan_.operands.push_back({input, broadcast});
    }
    // A value read with two broadcasts has no single operand.
    auto [known, inserted] = operand_of_.emplace(value, index);
    if (!inserted && known->second != index) known->second = -1;
    const bool per_element = broadcast == OperandBroadcast::kRow ||
                             broadcast == OperandBroadcast::kFull ||
                             broadcast == OperandBroadcast::kMatrix;
    return per_element ? fmt::format("p{}[j]", index) : fmt::format("s{}", index);
  }

  Result<OperandBroadcast> Classify(const Shape& running, const Shape& shape,
                                    const Node& node) const {
    const size_t r = running.size();
    Shape s = shape;
    while (s.size() > r && s.front() == 1) s.erase(s.begin());
    const auto reject = [&]() -> Status {
      return InvalidArgument(fmt::format(
          "{}: cannot broadcast an operand of shape {} over the GEMM result {} (supported: "
          "scalar, [N], [M,N], [M,1] and the full result)",
          planner::DescribeNode(node), planner::ShapeToString(shape),
          planner::ShapeToString(running)));
    };
    if (s.size() > r) return reject();
    s.insert(s.begin(), r - s.size(), 1);
    if (AllOnes(s, 0, r)) return OperandBroadcast::kScalar;
    // Everything but a scalar indexes by column, so the running value's last dim must be N.
    if (r == 0 || running.back() != n_) return reject();
    if (AllOnes(s, 0, r - 1) && s.back() == running.back()) return OperandBroadcast::kRow;
    if (s == running) return OperandBroadcast::kFull;
    if (r >= 2 && s.back() == 1 && std::equal(s.begin(), s.end() - 1, running.begin())) {
      return OperandBroadcast::kColumn;
    }
    if (plan_.batched && r >= 2 && AllOnes(s, 0, r - 2) && running[r - 2] == m_ && s[r - 2] == m_) {
      if (s.back() == n_) return OperandBroadcast::kMatrix;
      if (s.back() == 1) return OperandBroadcast::kColumnAll;
    }
    return reject();
  }

  // The expression of input `i` of `node`: a running value or an operand.
  Result<std::string> Input(const Node& node, size_t i, const Shape& running) {
    auto it = running_.find(node.inputs[i]);
    if (it != running_.end()) return it->second;
    return Operand(node.inputs[i], running, node);
  }

  // A scalar constant input of `node` (Pow's exponent, Clip's bounds).
  Result<double> ScalarConstant(const Node& node, size_t i) const {
    const planner::Value& v = g_.values[node.inputs[i]];
    if (v.kind != planner::ValueKind::kConstant || !v.constant.has_value() ||
        v.constant->floats.size() + v.constant->ints.size() != 1) {
      return InvalidArgument(
          fmt::format("{}: input {} must be a scalar constant", planner::DescribeNode(node), i));
    }
    return v.constant->floats.empty() ? static_cast<double>(v.constant->ints[0])
                                      : v.constant->floats[0];
  }

  Status EmitOp(const Node& node) {
    const std::string& op = node.op_type;
    const int out = node.outputs[0];
    const std::string name = fmt::format("v{}", out);
    auto first = running_.find(node.inputs[0]);
    if (IsShapeView(op)) {
      if (first == running_.end()) {
        return InvalidArgument(fmt::format("{}: only its data input may be the GEMM result",
                                           planner::DescribeNode(node)));
      }
      running_[out] = first->second;
      return Status::Ok();
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      if (node.inputs.size() != 2) {
        return InvalidArgument(fmt::format("{} needs 2 inputs", planner::DescribeNode(node)));
      }
      const int running_input = first != running_.end() ? node.inputs[0] : node.inputs[1];
      const Shape& running = ShapeOf(running_input);
      KF_ASSIGN_OR_RETURN(std::string lhs, Input(node, 0, running));
      KF_ASSIGN_OR_RETURN(std::string rhs, Input(node, 1, running));
      const char* sym = op == "Add" ? "+" : op == "Sub" ? "-" : op == "Mul" ? "*" : "/";
      Emit(name, fmt::format("{} {} {}", lhs, sym, rhs));
    } else if (first == running_.end()) {
      return InvalidArgument(
          fmt::format("{}: the GEMM result must be its first input", planner::DescribeNode(node)));
    } else if (op == "Pow") {
      KF_ASSIGN_OR_RETURN(double e, ScalarConstant(node, 1));
      KF_RETURN_IF_ERROR(EmitPow(name, first->second, e));
    } else if (op == "Relu") {
      Emit(name, fmt::format("{0} > 0.0f ? {0} : 0.0f", first->second));
    } else if (op == "Tanh") {
      plan_.uses_tanh = true;
      Emit(name, fmt::format("kf_tanh({})", first->second));
    } else if (op == "Erf") {
      plan_.uses_erf = true;
      Emit(name, fmt::format("kf_erf({})", first->second));
    } else if (op == "Sigmoid") {
      plan_.uses_exp = true;
      Emit(name, fmt::format("1.0f / (1.0f + kf_exp(-{}))", first->second));
    } else if (op == "Gelu") {
      const std::string& x = first->second;
      if (node.StringAttr("approximate", "none") == "tanh") {
        plan_.uses_tanh = true;
        Emit(name, fmt::format("0.5f * {0} * (1.0f + kf_tanh(0.797884561f * ({0} + 0.044715f * "
                               "{0} * {0} * {0})))",
                               x));
      } else {
        plan_.uses_erf = true;
        Emit(name, fmt::format("0.5f * {0} * (1.0f + kf_erf({0} * 0.707106781f))", x));
      }
    } else if (op == "Clip") {
      KF_RETURN_IF_ERROR(EmitClip(node, name, first->second));
    } else {
      return InvalidArgument(
          fmt::format("{}: the GEMM epilogue cannot express {}", planner::DescribeNode(node), op));
    }
    running_[out] = name;
    return Status::Ok();
  }

  Status EmitPow(const std::string& name, const std::string& x, double e) {
    if (e == 0.5) {
      Emit(name, fmt::format("std::sqrt({})", x));
      return Status::Ok();
    }
    if (e == std::round(e) && std::fabs(e) <= 4) {
      std::string product = "1.0f";
      for (int i = 0; i < static_cast<int>(std::fabs(e)); ++i) {
        product = i == 0 ? x : product + " * " + x;
      }
      Emit(name, e < 0 ? fmt::format("1.0f / ({})", product) : product);
      return Status::Ok();
    }
    Emit(name, fmt::format("std::pow({}, {})", x, FloatLiteral(e)));
    return Status::Ok();
  }

  Status EmitClip(const Node& node, const std::string& name, const std::string& x) {
    std::string v = x;
    const auto bound = [&](size_t i, std::string_view attr) -> Result<std::optional<double>> {
      if (node.inputs.size() > i && node.inputs[i] >= 0) {
        KF_ASSIGN_OR_RETURN(double b, ScalarConstant(node, i));
        return std::optional<double>(b);
      }
      if (node.HasAttr(attr)) return std::optional<double>(node.FloatAttr(attr, 0.0));
      return std::optional<double>();
    };
    KF_ASSIGN_OR_RETURN(std::optional<double> lo, bound(1, "min"));
    KF_ASSIGN_OR_RETURN(std::optional<double> hi, bound(2, "max"));
    if (lo) {
      Emit(name + "_lo", fmt::format("{0} < {1} ? {1} : {0}", v, FloatLiteral(*lo)));
      v = name + "_lo";
    }
    if (hi) {
      Emit(name, fmt::format("{0} > {1} ? {1} : {0}", v, FloatLiteral(*hi)));
    } else {
      Emit(name, v);
    }
    return Status::Ok();
  }

  // ---- BlasEpilogue recognition, on the analyzed graph ----

  // The epilogue as activation(alpha * acc + bias + residual), or nullopt.
  std::optional<BlasEpilogue> RecognizeBlasEpilogue(const Node& anchor) const {
    BlasEpilogue form;
    if (anchor.op_type == "Gemm") {
      form.alpha = anchor.FloatAttr("alpha", 1.0);
      const double beta = anchor.FloatAttr("beta", 1.0);
      if (anchor.inputs.size() > 2 && anchor.inputs[2] >= 0 && beta != 0.0) {
        if (beta != 1.0 || !AddTerm(anchor.inputs[2], form)) return std::nullopt;
      }
    }
    // The linear part: views of the running value and Adds of a bias or a residual to it.
    int x = anchor.outputs[0];
    size_t i = static_cast<size_t>(spec_.anchor) + 1;
    for (; i < g_.nodes.size(); ++i) {
      const Node& node = g_.nodes[i];
      const auto reads = [&](int v) {
        return std::count(node.inputs.begin(), node.inputs.end(), v);
      };
      if (std::none_of(node.inputs.begin(), node.inputs.end(),
                       [&](int v) { return running_.count(v) > 0; })) {
        continue;  // a view of an operand
      }
      if (reads(x) == 0) return std::nullopt;  // an earlier value of the result is read again
      if (IsShapeView(node.op_type)) {
        x = node.outputs[0];
        continue;
      }
      if (node.op_type != "Add" || node.inputs.size() != 2 || reads(x) != 1) break;
      const int term = node.inputs[0] == x ? node.inputs[1] : node.inputs[0];
      if (running_.count(term) > 0 || !AddTerm(term, form)) break;
      x = node.outputs[0];
    }
    if (i == g_.nodes.size()) return x == g_.outputs[0] ? std::optional(form) : std::nullopt;
    // The rest must be one function of x alone; it is an activation when it agrees with one on
    // points across the range (far out too, so that Clip(x, 0, 6) is not taken for a Relu), as
    // closely as the element type can tell: f16 / bf16 specs carry their constants rounded.
    const double tolerance = plan_.dtype == planner::DType::kBF16  ? 8e-3
                             : plan_.dtype == planner::DType::kF16 ? 1e-3
                                                                   : 1e-5;
    bool relu = true;
    bool gelu = true;
    for (double s : {-30.0, -6.0, -3.0, -1.5, -1.0, -0.5, -0.125, -1e-3, 0.0, 1e-3, 0.125, 0.5, 1.0,
                     1.5, 3.0, 6.0, 30.0, 1e4, 1e30}) {
      const std::optional<double> y = EvaluateFrom(i, x, s);
      if (!y) return std::nullopt;
      const auto near = [&](double want) {
        return std::fabs(*y - want) <= tolerance * (std::fabs(want) + 1.0);
      };
      relu = relu && near(s > 0 ? s : 0.0);
      gelu = gelu &&
             near(0.5 * s * (1.0 + std::tanh(0.7978845608028654 * (s + 0.044715 * s * s * s))));
    }
    if (!relu && !gelu) return std::nullopt;
    form.activation = relu ? GemmActivation::kRelu : GemmActivation::kGeluTanh;
    return form;
  }

  // Takes operand `value` as the form's bias ([N]) or residual (the full result) if that slot is
  // free.
  bool AddTerm(int value, BlasEpilogue& form) const {
    auto it = operand_of_.find(value);
    if (it == operand_of_.end() || it->second < 0) return false;  // a constant, or ambiguous
    const OperandBroadcast broadcast = plan_.operands[it->second].broadcast;
    if (broadcast == OperandBroadcast::kRow && form.bias < 0) {
      form.bias = it->second;
      return true;
    }
    if (broadcast == OperandBroadcast::kFull && form.residual < 0) {
      form.residual = it->second;
      return true;
    }
    return false;
  }

  std::optional<double> ConstantScalar(int value) const {
    const planner::Value& v = g_.values[value];
    if (v.kind != planner::ValueKind::kConstant || !v.constant.has_value()) return std::nullopt;
    const planner::ConstantData& c = *v.constant;
    if (c.floats.size() + c.ints.size() != 1) return std::nullopt;
    return c.floats.empty() ? static_cast<double>(c.ints[0]) : c.floats[0];
  }

  // The spec's output in double when the value `x` (read by node `first`) is `value`, or nullopt
  // when the nodes from `first` read anything but x, values computed from it and scalar constants.
  std::optional<double> EvaluateFrom(size_t first, int x, double value) const {
    std::map<int, double> known = {{x, value}};
    for (size_t i = first; i < g_.nodes.size(); ++i) {
      const Node& node = g_.nodes[i];
      if (std::none_of(node.inputs.begin(), node.inputs.end(),
                       [&](int v) { return running_.count(v) > 0; })) {
        continue;
      }
      std::vector<std::optional<double>> args;
      // A view's other inputs (Reshape's shape) are not values of the result.
      const size_t reads = IsShapeView(node.op_type) ? 1 : node.inputs.size();
      for (size_t k = 0; k < reads; ++k) {
        const int v = node.inputs[k];
        if (v < 0) {
          args.emplace_back();  // an optional input left out
          continue;
        }
        auto it = known.find(v);
        const std::optional<double> arg = it != known.end() ? it->second : ConstantScalar(v);
        if (!arg) return std::nullopt;
        args.push_back(arg);
      }
      const std::optional<double> y = Apply(node, args);
      if (!y) return std::nullopt;
      known[node.outputs[0]] = *y;
    }
    auto it = known.find(g_.outputs[0]);
    return it != known.end() ? std::optional(it->second) : std::nullopt;
  }

  // One epilogue op in double (the ops EmitOp accepts).
  static std::optional<double> Apply(const Node& node,
                                     const std::vector<std::optional<double>>& args) {
    const std::string& op = node.op_type;
    if (args.empty() || !args[0]) return std::nullopt;
    const double a = *args[0];
    if (IsShapeView(op)) return a;
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow") {
      if (args.size() != 2 || !args[1]) return std::nullopt;
      const double b = *args[1];
      return op == "Add"   ? a + b
             : op == "Sub" ? a - b
             : op == "Mul" ? a * b
             : op == "Div" ? a / b
                           : std::pow(a, b);
    }
    if (op == "Relu") return a > 0 ? a : 0.0;
    if (op == "Tanh") return std::tanh(a);
    if (op == "Erf") return std::erf(a);
    if (op == "Sigmoid") return 1.0 / (1.0 + std::exp(-a));
    if (op == "Gelu") {
      if (node.StringAttr("approximate", "none") == "tanh") {
        return 0.5 * a * (1.0 + std::tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)));
      }
      return 0.5 * a * (1.0 + std::erf(a * 0.7071067811865476));
    }
    if (op == "Clip") {
      double y = a;
      const auto bound = [&](size_t i, std::string_view attr) -> std::optional<double> {
        if (args.size() > i && args[i]) return args[i];
        if (node.HasAttr(attr)) return node.FloatAttr(attr, 0.0);
        return std::nullopt;
      };
      if (const std::optional<double> lo = bound(1, "min"); lo && y < *lo) y = *lo;
      if (const std::optional<double> hi = bound(2, "max"); hi && y > *hi) y = *hi;
      return y;
    }
    return std::nullopt;
  }

  const SpecView& spec_;
  const Graph& g_;
  const GemmAnalysisOptions options_;
  GemmPlan plan_;
  int first_typed_ = -1;                // the value whose dtype is plan_.dtype
  std::map<int, int> operand_of_;       // value id -> its index in plan_.operands (-1: ambiguous)
  std::set<int> used_;                  // nodes the plan accounts for
  std::map<int, std::string> running_;  // value id -> C++ expression, for values of the result
  int64_t m_ = 0;
  int64_t n_ = 0;
};

std::string ExpectedCount(OperandBroadcast broadcast) {
  switch (broadcast) {
    case OperandBroadcast::kScalar:
      return "1";
    case OperandBroadcast::kRow:
      return "g->n";
    case OperandBroadcast::kFull:
      return "g->batch * g->m * g->n";
    case OperandBroadcast::kMatrix:
      return "g->m * g->n";
    case OperandBroadcast::kColumn:
      return "g->batch * g->m";
    case OperandBroadcast::kColumnAll:
      return "g->m";
  }
  return "0";
}

// The argument EpilogueRow gets for operand k on row i of batch b, columns from j0.
std::string RowArgument(OperandBroadcast broadcast, size_t k) {
  switch (broadcast) {
    case OperandBroadcast::kScalar:
      return fmt::format("g.op[{}][0]", k);
    case OperandBroadcast::kRow:
      return fmt::format("g.op[{}] + j0", k);
    case OperandBroadcast::kFull:
      return fmt::format("g.op[{}] + (b * g.m + i) * g.n + j0", k);
    case OperandBroadcast::kMatrix:
      return fmt::format("g.op[{}] + i * g.n + j0", k);
    case OperandBroadcast::kColumn:
      return fmt::format("g.op[{}][b * g.m + i]", k);
    case OperandBroadcast::kColumnAll:
      return fmt::format("g.op[{}][i]", k);
  }
  return "";
}

bool PerElement(OperandBroadcast broadcast) {
  return broadcast == OperandBroadcast::kRow || broadcast == OperandBroadcast::kFull ||
         broadcast == OperandBroadcast::kMatrix;
}

// Statements that set g->m, g->k (from A) and g->n plus the local k_b (from B).
std::string RenderShapes(const GemmPlan& plan) {
  std::string s;
  const MatrixOperand& a = plan.a;
  const MatrixOperand& b = plan.b;
  if (plan.batched) {
    s += fmt::format("  const int64_t a_batch = DimProduct(in[{0}], 0, {1});\n", a.input, a.split);
    s += fmt::format("  const int64_t b_batch = DimProduct(in[{0}], 0, {1});\n", b.input, b.split);
    s +=
        fmt::format("  g->m = in[{0}].shape[{1}];\n  g->k = in[{0}].shape[{2}];\n", a.input,
                    a.transposed ? a.rank - 1 : a.rank - 2, a.transposed ? a.rank - 2 : a.rank - 1);
    s += fmt::format("  g->n = in[{0}].shape[{1}];\n  const int64_t k_b = in[{0}].shape[{2}];\n",
                     b.input, b.transposed ? b.rank - 2 : b.rank - 1,
                     b.transposed ? b.rank - 1 : b.rank - 2);
    s += "  g->batch = a_batch > b_batch ? a_batch : b_batch;\n";
    s += "  if ((a_batch != g->batch && a_batch != 1) || (b_batch != g->batch && b_batch != 1)) {\n"
         "    return KF_ERR_INVALID_ARGUMENT;\n  }\n";
    s += "  g->a_stride = a_batch == 1 ? 0 : g->m * g->k;\n";
    s += "  g->b_stride = b_batch == 1 ? 0 : g->k * g->n;\n";
  } else {
    const std::string a_outer = fmt::format("DimProduct(in[{}], 0, {})", a.input, a.split);
    const std::string a_inner = fmt::format("DimProduct(in[{}], {}, {})", a.input, a.split, a.rank);
    const std::string b_outer = fmt::format("DimProduct(in[{}], 0, {})", b.input, b.split);
    const std::string b_inner = fmt::format("DimProduct(in[{}], {}, {})", b.input, b.split, b.rank);
    s += fmt::format("  g->m = {};\n  g->k = {};\n", a.transposed ? a_inner : a_outer,
                     a.transposed ? a_outer : a_inner);
    s += fmt::format("  g->n = {};\n  const int64_t k_b = {};\n", b.transposed ? b_outer : b_inner,
                     b.transposed ? b_inner : b_outer);
    s += "  g->batch = 1;\n  g->a_stride = 0;\n  g->b_stride = 0;\n";
  }
  s += "  if (k_b != g->k) return KF_ERR_INVALID_ARGUMENT;\n";
  s += fmt::format("  g->lda = {};\n  g->ldb = {};\n", a.transposed ? "g->m" : "g->k",
                   b.transposed ? "g->k" : "g->n");
  return s;
}

}  // namespace

Result<GemmPlan> AnalyzeGemm(const SpecView& spec, const GemmAnalysisOptions& options) {
  if (spec.graph == nullptr) return InvalidArgument("the spec view has no graph");
  return GemmAnalyzer(spec, options).Run();
}

std::string RenderGemmArgs(const GemmPlan& plan, std::string_view element,
                           std::string_view dtype_code) {
  const size_t ops = plan.operands.size();
  std::string s = fmt::format(R"(
// One GEMM problem read from the runtime shapes: C[b] (m x n) = epilogue(A[b] (m x k) * B[b]).
struct GemmArgs {{
  int64_t batch, m, n, k;
  int64_t lda, ldb;              // leading dims of A and B as stored
  int64_t a_stride, b_stride;    // elements between batches, 0 when broadcast over them
  const {0}* a;
  const {0}* b;
  {0}* c;
)",
                              element);
  if (ops > 0) s += fmt::format("  const {}* op[{}];        // epilogue operands\n", element, ops);
  s += R"(};

static int64_t DimProduct(const kf_tensor& t, int from, int to) {
  int64_t p = 1;
  for (int d = from; d < to; ++d) p *= t.shape[d];
  return p;
}

static int ReadGemmArgs(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                        GemmArgs* g) {
)";
  s += fmt::format("  static const int32_t kRanks[{}] = {{{}}};\n", plan.input_ranks.size(),
                   fmt::join(plan.input_ranks, ", "));
  s += fmt::format("  if (n_in != {} || n_out != 1) return KF_ERR_INVALID_ARGUMENT;\n",
                   plan.input_ranks.size());
  s += fmt::format(
      "  for (int i = 0; i < {0}; ++i) {{\n"
      "    if (in[i].dtype != {2} || in[i].ndim != kRanks[i]) return KF_ERR_INVALID_ARGUMENT;\n"
      "  }}\n"
      "  if (out[0].dtype != {2} || out[0].ndim != {1}) return KF_ERR_INVALID_ARGUMENT;\n",
      plan.input_ranks.size(), plan.output_rank, dtype_code);
  s += RenderShapes(plan);
  s += fmt::format(
      "  if (DimProduct(out[0], 0, {}) != g->batch * g->m * g->n) return "
      "KF_ERR_INVALID_ARGUMENT;\n",
      plan.output_rank);
  for (size_t k = 0; k < ops; ++k) {
    const EpilogueOperand& op = plan.operands[k];
    s += fmt::format(
        "  if (DimProduct(in[{0}], 0, {1}) != {2}) return KF_ERR_INVALID_ARGUMENT;\n"
        "  g->op[{3}] = static_cast<const {4}*>(in[{0}].data);\n",
        op.input, plan.input_ranks[op.input], ExpectedCount(op.broadcast), k, element);
  }
  s += fmt::format(
      "  g->a = static_cast<const {2}*>(in[{0}].data);\n"
      "  g->b = static_cast<const {2}*>(in[{1}].data);\n"
      "  g->c = static_cast<{2}*>(out[0].data);\n"
      "  return KF_OK;\n}}\n",
      plan.a.input, plan.b.input, element);
  return s;
}

std::string RenderGemmPrelude(const GemmPlan& plan) {
  std::string s = CpuKernelHead(plan.uses_exp, plan.uses_tanh, plan.uses_erf);
  s += RenderGemmArgs(plan, "float", "KF_F32");
  if (plan.statements.empty() && plan.result == "acc") return s;
  const size_t ops = plan.operands.size();

  std::vector<std::string> params = {"float* __restrict y", "int64_t cols"};
  std::vector<std::string> args = {"g.c + (b * g.m + i) * g.n + j0", "j1 - j0"};
  for (size_t k = 0; k < ops; ++k) {
    const OperandBroadcast broadcast = plan.operands[k].broadcast;
    params.push_back(PerElement(broadcast) ? fmt::format("const float* __restrict p{}", k)
                                           : fmt::format("float s{}", k));
    args.push_back(RowArgument(broadcast, k));
  }
  s += fmt::format(
      "\n// The fused epilogue on one row segment, in place. A function of its own with "
      "__restrict\n"
      "// pointers: inside a parallel region GCC reloads shared pointers and would not vectorize.\n"
      "static void EpilogueRow({}) {{\n"
      "  for (int64_t j = 0; j < cols; ++j) {{\n"
      "    const float acc = y[j];\n",
      fmt::join(params, ", "));
  for (const std::string& statement : plan.statements) s += "    " + statement + "\n";
  s += fmt::format("    y[j] = {};\n  }}\n}}\n", plan.result);
  s += fmt::format(
      "\n// Rows [i0, i1) x columns [j0, j1) of batch b, right after they were computed.\n"
      "static void ApplyEpilogue(const GemmArgs& g, int64_t b, int64_t i0, int64_t i1, int64_t "
      "j0,\n"
      "                          int64_t j1) {{\n"
      "  for (int64_t i = i0; i < i1; ++i) EpilogueRow({});\n}}\n",
      fmt::join(args, ", "));
  return s;
}

std::string DescribeGemm(const GemmPlan& plan) {
  const bool epilogue = !(plan.statements.empty() && plan.result == "acc");
  return fmt::format(
      "{}{} x {}{}{}", plan.batched ? "batched " : "", plan.a.transposed ? "A^T" : "A",
      plan.b.transposed ? "B^T" : "B",
      epilogue ? fmt::format(" + a {}-op epilogue", plan.statements.size()) : "",
      plan.operands.empty() ? "" : fmt::format(" over {} operand(s)", plan.operands.size()));
}

}  // namespace kfleet::agents
