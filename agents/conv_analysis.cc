#include "agents/conv_analysis.h"

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
         op == "Identity" || op == "Dropout";
}

// A float literal that parses back to the same float: "0.5f", "3.0f", "(-1.0f)".
std::string FloatLiteral(double value) {
  std::string text = fmt::format("{:.9g}", static_cast<float>(value));
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  text += "f";
  return value < 0 ? "(" + text + ")" : text;
}

bool PerElement(ConvBroadcast broadcast) { return broadcast == ConvBroadcast::kFull; }

class ConvAnalyzer {
 public:
  ConvAnalyzer(const SpecView& spec, ConvAnalysisOptions options)
      : spec_(spec), g_(*spec.graph), options_(options) {}

  Result<ConvPlan> Run() {
    if (spec_.family.rfind("conv", 0) != 0 || spec_.family.rfind("conv_transpose", 0) == 0) {
      return InvalidArgument(fmt::format("family '{}' is not a Conv", spec_.family));
    }
    if (spec_.anchor < 0 || spec_.anchor >= static_cast<int>(g_.nodes.size())) {
      return InvalidArgument("the spec has no anchor node");
    }
    const Node& anchor = g_.nodes[spec_.anchor];
    if (anchor.op_type != "Conv") {
      return InvalidArgument(fmt::format("{} is not a Conv", planner::DescribeNode(anchor)));
    }
    if (!g_.outputs.empty()) plan_.dtype = g_.values[g_.outputs[0]].dtype;
    for (int v : g_.inputs) KF_RETURN_IF_ERROR(CheckType(v));
    for (int v : g_.outputs) KF_RETURN_IF_ERROR(CheckType(v));
    if (g_.outputs.size() != 1) {
      return InvalidArgument(
          fmt::format("the Conv templates write one output; the spec has {}", g_.outputs.size()));
    }
    for (int v : g_.inputs) {
      plan_.input_ranks.push_back(static_cast<int>(g_.values[v].shape.size()));
    }
    plan_.output_rank = static_cast<int>(g_.values[g_.outputs[0]].shape.size());
    used_.insert(spec_.anchor);
    KF_RETURN_IF_ERROR(AnalyzeAnchor(anchor));
    KF_RETURN_IF_ERROR(AnalyzeEpilogue(anchor));
    if (fusable_) plan_.fused = form_;
    for (size_t n = 0; n < g_.nodes.size(); ++n) {
      if (used_.count(static_cast<int>(n)) == 0) {
        return InvalidArgument(fmt::format("{} is not part of the Conv's epilogue",
                                           planner::DescribeNode(g_.nodes[n])));
      }
    }
    return plan_;
  }

 private:
  Status CheckType(int value) const {
    const planner::Value& v = g_.values[value];
    const bool half = v.dtype == planner::DType::kF16 || v.dtype == planner::DType::kBF16;
    if (v.dtype != planner::DType::kF32 && !(options_.half_types && half)) {
      return InvalidArgument(fmt::format("the Conv templates support {} only; {} is {}",
                                         options_.half_types ? "f32, f16 and bf16" : "f32", v.name,
                                         planner::DTypeName(v.dtype)));
    }
    if (v.dtype != plan_.dtype) {
      return InvalidArgument(
          fmt::format("{} is {} but the result is {}: the Conv templates take one "
                      "element type",
                      v.name, planner::DTypeName(v.dtype), planner::DTypeName(plan_.dtype)));
    }
    if (!v.has_shape) return InvalidArgument(fmt::format("{} has no known shape", v.name));
    return Status::Ok();
  }

  const Shape& ShapeOf(int value) const { return g_.values[value].shape; }

  // The spec input `value` is, through Identity nodes (any view when `views`), or -1. The views
  // count as used.
  int SpecInput(int value, bool views = false) {
    while (true) {
      auto it = std::find(g_.inputs.begin(), g_.inputs.end(), value);
      if (it != g_.inputs.end()) return static_cast<int>(it - g_.inputs.begin());
      const int p = g_.values[value].producer;
      if (p < 0) return -1;
      const std::string& op = g_.nodes[p].op_type;
      if (op != "Identity" && !(views && IsShapeView(op))) return -1;
      used_.insert(p);
      value = g_.nodes[p].inputs[0];
    }
  }

  Status AnalyzeAnchor(const Node& conv) {
    const std::string what = planner::DescribeNode(conv);
    if (conv.inputs.size() < 2) return InvalidArgument(what + " needs X and W");
    const Shape& x = ShapeOf(conv.inputs[0]);
    const Shape& w = ShapeOf(conv.inputs[1]);
    if (x.size() != 4 || w.size() != 4) {
      return InvalidArgument(fmt::format(
          "{}: the Conv templates handle 2-D convolutions over NCHW; X is {} and W is {}", what,
          planner::ShapeToString(x), planner::ShapeToString(w)));
    }
    plan_.x_input = SpecInput(conv.inputs[0]);
    plan_.w_input = SpecInput(conv.inputs[1]);
    if (plan_.x_input < 0 || plan_.w_input < 0) {
      return InvalidArgument(
          fmt::format("{}: X and W must be spec inputs (a weight folded into a constant is not "
                      "supported)",
                      what));
    }
    plan_.group = conv.IntAttr("group", 1);
    if (plan_.group < 1 || x[1] != w[1] * plan_.group || w[0] % plan_.group != 0) {
      return InvalidArgument(fmt::format("{}: input channels {} do not match W {} with group {}",
                                         what, x[1], planner::ShapeToString(w), plan_.group));
    }
    const std::vector<int64_t> kernel = conv.IntsAttr("kernel_shape");
    if (!kernel.empty() && kernel != std::vector<int64_t>{w[2], w[3]}) {
      return InvalidArgument(fmt::format("{}: kernel_shape [{}] does not match W {}", what,
                                         fmt::join(kernel, ","), planner::ShapeToString(w)));
    }
    const std::vector<int64_t> strides = conv.IntsAttr("strides");
    const std::vector<int64_t> dilations = conv.IntsAttr("dilations");
    const std::vector<int64_t> pads = conv.IntsAttr("pads");
    if ((!strides.empty() && strides.size() != 2) ||
        (!dilations.empty() && dilations.size() != 2) || (!pads.empty() && pads.size() != 4)) {
      return InvalidArgument(what + ": strides, dilations and pads do not have 2 spatial dims");
    }
    if (!strides.empty()) plan_.strides = {strides[0], strides[1]};
    if (!dilations.empty()) plan_.dilations = {dilations[0], dilations[1]};
    if (!pads.empty()) plan_.pads = {pads[0], pads[1], pads[2], pads[3]};
    for (int64_t v : {plan_.strides[0], plan_.strides[1], plan_.dilations[0], plan_.dilations[1]}) {
      if (v < 1) return InvalidArgument(what + ": strides and dilations must be positive");
    }
    for (int64_t p : plan_.pads) {
      if (p < 0) return InvalidArgument(what + ": negative pads are not supported");
    }
    plan_.auto_pad = conv.StringAttr("auto_pad", "NOTSET");
    if (plan_.auto_pad != "NOTSET" && plan_.auto_pad != "VALID" && plan_.auto_pad != "SAME_UPPER" &&
        plan_.auto_pad != "SAME_LOWER") {
      return InvalidArgument(fmt::format("{}: unknown auto_pad '{}'", what, plan_.auto_pad));
    }
    plan_.x_shape = x;
    plan_.w_shape = w;
    plan_.y_shape = ShapeOf(conv.outputs[0]);
    if (plan_.y_shape.size() != 4) {
      return InvalidArgument(
          fmt::format("{}: the result {} is not 4-D", what, planner::ShapeToString(plan_.y_shape)));
    }
    running_[conv.outputs[0]] = "acc";
    if (conv.inputs.size() > 2 && conv.inputs[2] >= 0) {
      const int bias = SpecInput(conv.inputs[2]);
      if (bias < 0 || ShapeOf(conv.inputs[2]) != Shape{w[0]}) {
        return InvalidArgument(
            fmt::format("{}: the bias B must be a spec input of shape [{}]", what, w[0]));
      }
      running_[conv.outputs[0]] = "conv_bias";
      Emit("conv_bias", fmt::format("acc + {}", AddOperand(bias, ConvBroadcast::kChannel)));
      form_.bias = static_cast<int>(plan_.operands.size()) - 1;
    }
    return Status::Ok();
  }

  Status AnalyzeEpilogue(const Node& anchor) {
    for (size_t i = static_cast<size_t>(spec_.anchor) + 1; i < g_.nodes.size(); ++i) {
      const Node& node = g_.nodes[i];
      const bool reads_running = std::any_of(node.inputs.begin(), node.inputs.end(),
                                             [&](int v) { return running_.count(v) > 0; });
      if (!reads_running) continue;
      used_.insert(static_cast<int>(i));
      const int outputs = static_cast<int>(
          std::count_if(node.outputs.begin(), node.outputs.end(), [](int v) { return v >= 0; }));
      if (outputs != 1 || node.outputs[0] < 0) {
        return InvalidArgument(
            fmt::format("{}: the epilogue needs one output per op", planner::DescribeNode(node)));
      }
      KF_RETURN_IF_ERROR(EmitOp(node));
    }
    auto it = running_.find(g_.outputs[0]);
    if (it == running_.end()) {
      return InvalidArgument(
          fmt::format("the spec's output is not computed from {}", planner::DescribeNode(anchor)));
    }
    plan_.result = it->second;
    return Status::Ok();
  }

  void Emit(const std::string& name, const std::string& expr) {
    plan_.statements.push_back(fmt::format("const float {} = {};", name, expr));
  }

  // The read of spec input `input` broadcast as `broadcast`: p<k>[j] or s<k>.
  std::string AddOperand(int input, ConvBroadcast broadcast) {
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
    return PerElement(broadcast) ? fmt::format("p{}[j]", index) : fmt::format("s{}", index);
  }

  // Broadcasting `shape` against the result [N, M, OH, OW] by ONNX's rules. Image-channel comes
  // before full: a [N, M, 1, 1] operand keeps its ones when the sweep grows OH and OW.
  Result<ConvBroadcast> Classify(const Shape& shape, const Node& node) const {
    const Shape& y = plan_.y_shape;
    Shape s = shape;
    while (s.size() > 4 && s.front() == 1) s.erase(s.begin());
    const auto reject = [&]() -> Status {
      return InvalidArgument(fmt::format(
          "{}: cannot broadcast an operand of shape {} over the Conv result {} (supported: "
          "scalar, [1,M,1,1], [N,M,1,1] and the full result)",
          planner::DescribeNode(node), planner::ShapeToString(shape), planner::ShapeToString(y)));
    };
    if (s.size() > 4) return reject();
    s.insert(s.begin(), 4 - s.size(), 1);
    if (s == Shape{1, 1, 1, 1}) return ConvBroadcast::kScalar;
    if (s == Shape{1, y[1], 1, 1}) return ConvBroadcast::kChannel;
    if (s == Shape{y[0], y[1], 1, 1}) return ConvBroadcast::kImageChannel;
    if (s == y) return ConvBroadcast::kFull;
    return reject();
  }

  // The C++ expression for a non-running input of `node`: a scalar constant literal or an
  // operand read broadcast against the result.
  Result<std::string> Operand(int value, const Node& node) {
    const planner::Value& v = g_.values[value];
    if (v.kind == planner::ValueKind::kConstant && v.constant.has_value()) {
      KF_ASSIGN_OR_RETURN(double x, ScalarConstant(value, node));
      return FloatLiteral(x);
    }
    const int input = SpecInput(value, /*views=*/true);
    if (input < 0) {
      return InvalidArgument(
          fmt::format("{}: {} is neither a spec input, a view of one, nor a scalar constant",
                      planner::DescribeNode(node), v.name));
    }
    KF_ASSIGN_OR_RETURN(ConvBroadcast broadcast, Classify(v.shape, node));
    return AddOperand(input, broadcast);
  }

  // A per-channel parameter of BatchNormalization: a spec input of shape [M].
  Result<std::string> ChannelOperand(const Node& node, size_t i) {
    const int value = node.inputs.size() > i ? node.inputs[i] : -1;
    const int input = value >= 0 ? SpecInput(value) : -1;
    if (input < 0 || ShapeOf(value) != Shape{plan_.y_shape[1]}) {
      return InvalidArgument(fmt::format("{}: input {} must be a spec input of shape [{}]",
                                         planner::DescribeNode(node), i, plan_.y_shape[1]));
    }
    return AddOperand(input, ConvBroadcast::kChannel);
  }

  Result<std::string> Input(const Node& node, size_t i) {
    auto it = running_.find(node.inputs[i]);
    if (it != running_.end()) return it->second;
    return Operand(node.inputs[i], node);
  }

  Result<double> ScalarConstant(int value, const Node& node) const {
    const planner::Value& v = g_.values[value];
    if (v.kind != planner::ValueKind::kConstant || !v.constant.has_value() ||
        v.constant->floats.size() + v.constant->ints.size() != 1) {
      return InvalidArgument(
          fmt::format("{}: {} must be a scalar constant (the epilogue embeds "
                      "scalar constants only)",
                      planner::DescribeNode(node), v.name));
    }
    const double x = v.constant->floats.empty() ? static_cast<double>(v.constant->ints[0])
                                                : v.constant->floats[0];
    if (!std::isfinite(static_cast<float>(x))) {
      return InvalidArgument(
          fmt::format("{}: constant {} is not a finite f32", planner::DescribeNode(node), v.name));
    }
    return x;
  }

  // Follows the epilogue against what cuDNN fuses: bias (the Conv's), one Add of a full-size
  // operand, one Relu, in that order, and views that keep the layout.
  void NoteFusable(const Node& node) {
    const std::string& op = node.op_type;
    if (IsShapeView(op)) return;
    if (op == "Relu" && !form_.relu) {
      form_.relu = true;
      return;
    }
    if (op == "Add" && node.inputs.size() == 2 && !form_.relu && form_.residual < 0) {
      const bool lhs = running_.count(node.inputs[0]) > 0;
      const bool rhs = running_.count(node.inputs[1]) > 0;
      if (lhs != rhs) {
        const int other = node.inputs[lhs ? 1 : 0];
        const int input = SpecInput(other, /*views=*/true);
        if (input >= 0 && ShapeOf(other) == plan_.y_shape) {
          for (size_t k = 0; k < plan_.operands.size(); ++k) {
            if (plan_.operands[k].input == input &&
                plan_.operands[k].broadcast == ConvBroadcast::kFull) {
              form_.residual = static_cast<int>(k);
              return;
            }
          }
        }
      }
    }
    fusable_ = false;
  }

  Status EmitOp(const Node& node) {
    KF_RETURN_IF_ERROR(EmitOpStatements(node));
    NoteFusable(node);
    return Status::Ok();
  }

  Status EmitOpStatements(const Node& node) {
    const std::string& op = node.op_type;
    const int out = node.outputs[0];
    const std::string name = fmt::format("v{}", out);
    auto first = running_.find(node.inputs[0]);
    if (IsShapeView(op)) {
      if (first == running_.end()) {
        return InvalidArgument(fmt::format("{}: only its data input may be the Conv result",
                                           planner::DescribeNode(node)));
      }
      // A view that changes the shape must be the last op: operands broadcast against
      // [N, M, OH, OW].
      if (ShapeOf(out) != plan_.y_shape) reshaped_ = true;
      running_[out] = first->second;
      return Status::Ok();
    }
    if (reshaped_) {
      return InvalidArgument(
          fmt::format("{}: ops after a view that reshapes the Conv result are "
                      "not supported",
                      planner::DescribeNode(node)));
    }
    if (ShapeOf(out) != plan_.y_shape) {
      return InvalidArgument(fmt::format(
          "{}: its result {} is not the Conv result's shape {}", planner::DescribeNode(node),
          planner::ShapeToString(ShapeOf(out)), planner::ShapeToString(plan_.y_shape)));
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      if (node.inputs.size() != 2) {
        return InvalidArgument(fmt::format("{} needs 2 inputs", planner::DescribeNode(node)));
      }
      KF_ASSIGN_OR_RETURN(std::string lhs, Input(node, 0));
      KF_ASSIGN_OR_RETURN(std::string rhs, Input(node, 1));
      const char* sym = op == "Add" ? "+" : op == "Sub" ? "-" : op == "Mul" ? "*" : "/";
      Emit(name, fmt::format("{} {} {}", lhs, sym, rhs));
      running_[out] = name;
      return Status::Ok();
    }
    if (first == running_.end()) {
      return InvalidArgument(
          fmt::format("{}: the Conv result must be its first input", planner::DescribeNode(node)));
    }
    const std::string& x = first->second;
    plan_.saturates = plan_.saturates || op == "Clip" || op == "Sigmoid" || op == "HardSigmoid" ||
                      op == "HardSwish" || op == "Tanh" || op == "Erf";
    if (op == "Relu") {
      Emit(name, fmt::format("{0} > 0.0f ? {0} : 0.0f", x));
    } else if (op == "LeakyRelu") {
      Emit(name, fmt::format("{0} >= 0.0f ? {0} : {0} * {1}", x,
                             FloatLiteral(node.FloatAttr("alpha", 0.01))));
    } else if (op == "Clip") {
      KF_RETURN_IF_ERROR(EmitClip(node, name, x));
    } else if (op == "Sigmoid") {
      plan_.uses_exp = true;
      Emit(name, fmt::format("1.0f / (1.0f + kf_exp(-{}))", x));
    } else if (op == "HardSigmoid" || op == "HardSwish") {
      const double alpha = op == "HardSwish" ? 1.0 / 6.0 : node.FloatAttr("alpha", 0.2);
      const double beta = op == "HardSwish" ? 0.5 : node.FloatAttr("beta", 0.5);
      Emit(name + "_t", fmt::format("{} * {} + {}", x, FloatLiteral(alpha), FloatLiteral(beta)));
      Emit(name + "_h", fmt::format("{0}_t < 0.0f ? 0.0f : ({0}_t > 1.0f ? 1.0f : {0}_t)", name));
      Emit(name, op == "HardSwish" ? fmt::format("{} * {}_h", x, name) : name + "_h");
    } else if (op == "Tanh") {
      plan_.uses_tanh = true;
      Emit(name, fmt::format("kf_tanh({})", x));
    } else if (op == "Erf") {
      plan_.uses_erf = true;
      Emit(name, fmt::format("kf_erf({})", x));
    } else if (op == "Exp") {
      plan_.uses_exp = true;
      Emit(name, fmt::format("kf_exp({})", x));
    } else if (op == "Neg") {
      Emit(name, fmt::format("-{}", x));
    } else if (op == "Gelu") {
      if (node.StringAttr("approximate", "none") == "tanh") {
        plan_.uses_tanh = true;
        Emit(name, fmt::format("0.5f * {0} * (1.0f + kf_tanh(0.797884561f * ({0} + 0.044715f * "
                               "{0} * {0} * {0})))",
                               x));
      } else {
        plan_.uses_erf = true;
        Emit(name, fmt::format("0.5f * {0} * (1.0f + kf_erf({0} * 0.707106781f))", x));
      }
    } else if (op == "Pow") {
      if (node.inputs.size() != 2) {
        return InvalidArgument(fmt::format("{} needs 2 inputs", planner::DescribeNode(node)));
      }
      KF_ASSIGN_OR_RETURN(double e, ScalarConstant(node.inputs[1], node));
      EmitPow(name, x, e);
    } else if (op == "BatchNormalization") {
      KF_ASSIGN_OR_RETURN(std::string scale, ChannelOperand(node, 1));
      KF_ASSIGN_OR_RETURN(std::string bias, ChannelOperand(node, 2));
      KF_ASSIGN_OR_RETURN(std::string mean, ChannelOperand(node, 3));
      KF_ASSIGN_OR_RETURN(std::string var, ChannelOperand(node, 4));
      // The per-row factor is loop-invariant: the compiler hoists the sqrt out of the row.
      Emit(name, fmt::format("({} - {}) * ({} / std::sqrt({} + {})) + {}", x, mean, scale, var,
                             FloatLiteral(node.FloatAttr("epsilon", 1e-5)), bias));
    } else {
      return InvalidArgument(
          fmt::format("{}: the Conv epilogue cannot express {}", planner::DescribeNode(node), op));
    }
    running_[out] = name;
    return Status::Ok();
  }

  void EmitPow(const std::string& name, const std::string& x, double e) {
    if (e == 0.5) {
      Emit(name, fmt::format("std::sqrt({})", x));
      return;
    }
    if (e == std::round(e) && std::fabs(e) <= 4) {
      std::string product = "1.0f";
      for (int i = 0; i < static_cast<int>(std::fabs(e)); ++i) {
        product = i == 0 ? x : product + " * " + x;
      }
      Emit(name, e < 0 ? fmt::format("1.0f / ({})", product) : product);
      return;
    }
    Emit(name, fmt::format("std::pow({}, {})", x, FloatLiteral(e)));
  }

  Status EmitClip(const Node& node, const std::string& name, const std::string& x) {
    const auto bound = [&](size_t i, std::string_view attr) -> Result<std::optional<double>> {
      if (node.inputs.size() > i && node.inputs[i] >= 0) {
        KF_ASSIGN_OR_RETURN(double b, ScalarConstant(node.inputs[i], node));
        return std::optional<double>(b);
      }
      if (node.HasAttr(attr)) return std::optional<double>(node.FloatAttr(attr, 0.0));
      return std::optional<double>();
    };
    KF_ASSIGN_OR_RETURN(std::optional<double> lo, bound(1, "min"));
    KF_ASSIGN_OR_RETURN(std::optional<double> hi, bound(2, "max"));
    std::string v = x;
    if (lo) {
      Emit(name + "_lo", fmt::format("{0} < {1} ? {1} : {0}", v, FloatLiteral(*lo)));
      v = name + "_lo";
    }
    Emit(name, hi ? fmt::format("{0} > {1} ? {1} : {0}", v, FloatLiteral(*hi)) : v);
    return Status::Ok();
  }

  const SpecView& spec_;
  const Graph& g_;
  const ConvAnalysisOptions options_;
  ConvPlan plan_;
  ConvFusedForm form_;                  // the fused form so far
  bool fusable_ = true;                 // the epilogue so far is of that form
  std::set<int> used_;                  // nodes the plan accounts for
  std::map<int, std::string> running_;  // value id -> C++ expression, for values of the result
  bool reshaped_ = false;               // a view changed the result's shape
};

std::string ExpectedCount(ConvBroadcast broadcast) {
  switch (broadcast) {
    case ConvBroadcast::kScalar:
      return "1";
    case ConvBroadcast::kChannel:
      return "g->m";
    case ConvBroadcast::kImageChannel:
      return "g->n * g->m";
    case ConvBroadcast::kFull:
      return "g->n * g->m * g->oh * g->ow";
  }
  return "0";
}

// The argument EpilogueRow gets for operand k on the plane of image b, channel m, from p0.
std::string RowArgument(ConvBroadcast broadcast, size_t k) {
  switch (broadcast) {
    case ConvBroadcast::kScalar:
      return fmt::format("g.op[{}][0]", k);
    case ConvBroadcast::kChannel:
      return fmt::format("g.op[{}][m]", k);
    case ConvBroadcast::kImageChannel:
      return fmt::format("g.op[{}][b * g.m + m]", k);
    case ConvBroadcast::kFull:
      return fmt::format("g.op[{}] + (b * g.m + m) * g.oh * g.ow + p0", k);
  }
  return "";
}

// Statements that set g->oh (or ow) and g->pad_h (or pad_w) for one spatial dim as the spec's
// padding rule says; sizes too small for one window give an empty output.
std::string RenderWindow(const ConvPlan& plan, int dim) {
  const char* in = dim == 0 ? "g->h" : "g->w";
  const char* k = dim == 0 ? "g->kh" : "g->kw";
  const char* out = dim == 0 ? "g->oh" : "g->ow";
  const char* pad = dim == 0 ? "g->pad_h" : "g->pad_w";
  const char* stride = dim == 0 ? "kStrideH" : "kStrideW";
  const char* dilation = dim == 0 ? "kDilationH" : "kDilationW";
  std::string s = "  {\n";
  s += fmt::format("    const int64_t extent = ({} - 1) * {} + 1;\n", k, dilation);
  if (plan.auto_pad == "SAME_UPPER" || plan.auto_pad == "SAME_LOWER") {
    s += fmt::format(
        "    {0} = ({1} + {2} - 1) / {2};\n"
        "    int64_t total = ({0} - 1) * {2} + extent - {1};\n"
        "    total = total < 0 ? 0 : total;\n"
        "    {3} = {4};\n",
        out, in, stride, pad, plan.auto_pad == "SAME_UPPER" ? "total / 2" : "total - total / 2");
  } else if (plan.auto_pad == "VALID") {
    s += fmt::format("    {0} = {1} < extent ? 0 : ({1} - extent) / {2} + 1;\n    {3} = 0;\n", out,
                     in, stride, pad);
  } else {
    const int64_t begin = plan.pads[dim];
    const int64_t end = plan.pads[dim + 2];
    s += fmt::format(
        "    const int64_t padded = {0} + {1};\n"
        "    {2} = padded < extent ? 0 : (padded - extent) / {3} + 1;\n"
        "    {4} = {5};\n",
        in, begin + end, out, stride, pad, begin);
  }
  s += "  }\n";
  return s;
}

}  // namespace

Result<ConvPlan> AnalyzeConv(const SpecView& spec, ConvAnalysisOptions options) {
  if (spec.graph == nullptr) return InvalidArgument("the spec view has no graph");
  return ConvAnalyzer(spec, options).Run();
}

std::string RenderConvArgs(const ConvPlan& plan, std::string_view element,
                           std::string_view kf_dtype) {
  const size_t ops = plan.operands.size();
  std::string s = fmt::format(
      R"(
// The window attributes the spec fixes; every size is read from the tensors.
constexpr int64_t kGroups = {};
constexpr int64_t kStrideH = {};
constexpr int64_t kStrideW = {};
constexpr int64_t kDilationH = {};
constexpr int64_t kDilationW = {};

// One convolution read from the runtime shapes: y = epilogue(conv(x, wt)), all NCHW.
struct ConvArgs {{
  int64_t n, c, h, w;    // input
  int64_t m, cg, mg;     // output channels, input and output channels per group
  int64_t kh, kw;        // kernel
  int64_t oh, ow;        // output
  int64_t pad_h, pad_w;  // padding before the first row and column
  const {}* x;
  const {}* wt;
  {}* y;
)",
      plan.group, plan.strides[0], plan.strides[1], plan.dilations[0], plan.dilations[1], element,
      element, element);
  if (ops > 0) s += fmt::format("  const {}* op[{}];  // epilogue operands\n", element, ops);
  s += R"(};

static int64_t Elements(const kf_tensor& t) {
  int64_t p = 1;
  for (int d = 0; d < t.ndim; ++d) p *= t.shape[d];
  return p;
}

static int ReadConvArgs(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                        ConvArgs* g) {
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
      plan.input_ranks.size(), plan.output_rank, kf_dtype);
  s += fmt::format(
      "  const kf_tensor& x = in[{}];\n"
      "  const kf_tensor& w = in[{}];\n"
      "  g->n = x.shape[0];\n  g->c = x.shape[1];\n  g->h = x.shape[2];\n  g->w = x.shape[3];\n"
      "  g->m = w.shape[0];\n  g->cg = w.shape[1];\n  g->kh = w.shape[2];\n  g->kw = w.shape[3];\n"
      "  if (g->c != g->cg * kGroups || g->m % kGroups != 0) return KF_ERR_INVALID_ARGUMENT;\n"
      "  if (g->cg < 1 || g->kh < 1 || g->kw < 1) return KF_ERR_UNSUPPORTED_SHAPE;\n"
      "  g->mg = g->m / kGroups;\n",
      plan.x_input, plan.w_input);
  s += RenderWindow(plan, 0);
  s += RenderWindow(plan, 1);
  s += "  if (Elements(out[0]) != g->n * g->m * g->oh * g->ow) return KF_ERR_INVALID_ARGUMENT;\n";
  for (size_t k = 0; k < ops; ++k) {
    const ConvOperand& op = plan.operands[k];
    s += fmt::format(
        "  if (Elements(in[{0}]) != {1}) return KF_ERR_INVALID_ARGUMENT;\n"
        "  g->op[{2}] = static_cast<const {3}*>(in[{0}].data);\n",
        op.input, ExpectedCount(op.broadcast), k, element);
  }
  s += fmt::format(
      "  g->x = static_cast<const {0}*>(x.data);\n"
      "  g->wt = static_cast<const {0}*>(w.data);\n"
      "  g->y = static_cast<{0}*>(out[0].data);\n"
      "  return KF_OK;\n}}\n",
      element);
  return s;
}

std::string RenderConvPrelude(const ConvPlan& plan) {
  std::string s = CpuKernelHead(plan.uses_exp, plan.uses_tanh, plan.uses_erf);
  s += RenderConvArgs(plan, "float", "KF_F32");
  const size_t ops = plan.operands.size();
  if (!plan.has_epilogue()) {
    s += "\nstatic inline void ApplyEpilogue(const ConvArgs&, int64_t, int64_t, int64_t, int64_t) "
         "{}\n";
    return s;
  }
  std::vector<std::string> params = {"float* __restrict y", "int64_t cols"};
  std::vector<std::string> args = {"g.y + (b * g.m + m) * g.oh * g.ow + p0", "p1 - p0"};
  for (size_t k = 0; k < ops; ++k) {
    const ConvBroadcast broadcast = plan.operands[k].broadcast;
    params.push_back(PerElement(broadcast) ? fmt::format("const float* __restrict p{}", k)
                                           : fmt::format("float s{}", k));
    args.push_back(RowArgument(broadcast, k));
  }
  s += fmt::format(
      "\n// The fused epilogue on one segment of an output plane, in place. A function of its own\n"
      "// with __restrict pointers: inside a parallel region GCC reloads shared pointers and "
      "would\n"
      "// not vectorize.\n"
      "static void EpilogueRow({}) {{\n"
      "  for (int64_t j = 0; j < cols; ++j) {{\n"
      "    const float acc = y[j];\n",
      fmt::join(params, ", "));
  for (const std::string& statement : plan.statements) s += "    " + statement + "\n";
  s += fmt::format("    y[j] = {};\n  }}\n}}\n", plan.result);
  s += fmt::format(
      "\n// Output positions [p0, p1) of image b, channel m, right after they were computed.\n"
      "static void ApplyEpilogue(const ConvArgs& g, int64_t b, int64_t m, int64_t p0, int64_t p1) "
      "{{\n"
      "  EpilogueRow({});\n}}\n",
      fmt::join(args, ", "));
  return s;
}

std::string DescribeConv(const ConvPlan& plan) {
  std::string s = fmt::format("{}x{} conv", plan.w_shape[2], plan.w_shape[3]);
  if (plan.strides[0] != 1 || plan.strides[1] != 1) {
    s += fmt::format(" s{}x{}", plan.strides[0], plan.strides[1]);
  }
  if (plan.dilations[0] != 1 || plan.dilations[1] != 1) {
    s += fmt::format(" d{}x{}", plan.dilations[0], plan.dilations[1]);
  }
  if (plan.depthwise()) {
    s += " depthwise";
  } else if (plan.group > 1) {
    s += fmt::format(" group {}", plan.group);
  }
  if (plan.has_epilogue()) s += fmt::format(" + a {}-op epilogue", plan.statements.size());
  if (!plan.operands.empty()) s += fmt::format(" over {} operand(s)", plan.operands.size());
  return s;
}

}  // namespace kfleet::agents
