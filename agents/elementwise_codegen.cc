#include "agents/elementwise_codegen.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <utility>

#include "agents/kernel_math.h"

namespace kfleet::agents {
namespace {

using planner::DType;
using planner::Graph;
using planner::Node;
using planner::Shape;
using planner::Value;
using planner::ValueKind;

bool IsOneOf(std::string_view op, std::initializer_list<std::string_view> ops) {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

// Ops that only relabel the shape (or are the identity at inference): the element order is
// unchanged, so the chain reads their input where it would read their output.
bool IsViewOp(std::string_view op) {
  return IsOneOf(op, {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"});
}

bool IsFloatMathOp(std::string_view op) {
  return IsOneOf(op, {"Add",       "Sub",      "Mul",  "Div",        "Pow",  "Max",  "Min",
                      "Neg",       "Abs",      "Sqrt", "Reciprocal", "Exp",  "Log",  "Tanh",
                      "Erf",       "Sigmoid",  "Relu", "LeakyRelu",  "Clip", "Gelu", "HardSigmoid",
                      "HardSwish", "Softplus", "Cos",  "Sin"});
}

bool IsComparisonOp(std::string_view op) {
  return IsOneOf(op, {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"});
}

bool IsLogicOp(std::string_view op) { return IsOneOf(op, {"And", "Or", "Xor", "Not"}); }

bool IsTranscendentalOp(const Node& node) {
  return IsOneOf(node.op_type, {"Exp", "Tanh", "Erf", "Sigmoid", "Gelu", "Softplus"});
}

// The type the chain computes a value of `dtype` in: half types are computed in f32.
std::string_view CType(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return "bool";
    case DType::kI64:
      return "int64_t";
    default:
      return "float";
  }
}

// A float literal that parses back to the same float, with the special values spelled out.
std::string FloatLiteral(double value) {
  const auto f = static_cast<float>(value);
  if (std::isnan(f)) return "__builtin_nanf(\"\")";
  if (std::isinf(f)) return f > 0 ? "__builtin_inff()" : "(-__builtin_inff())";
  std::string text = fmt::format("{:.9g}", f);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  text += "f";
  return f < 0 ? "(" + text + ")" : text;
}

std::string Literal(DType dtype, const planner::ConstantData& data, size_t i) {
  switch (dtype) {
    case DType::kBool:
      return data.ints[i] != 0 ? "true" : "false";
    case DType::kI64:
      return fmt::format("INT64_C({})", data.ints[i]);
    default:
      return FloatLiteral(data.floats[i]);
  }
}

// The sizes of `shape` that are not 1, in order: views and the shape sweep keep them (sizes 1
// never change), so they relate a tensor's run-time shape to another's.
std::vector<int> NonUnitDims(const Shape& shape) {
  std::vector<int> dims;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] != 1) dims.push_back(static_cast<int>(d));
  }
  return dims;
}

// For each dim of `to`, the dim of `from` with the same run-time size (-1 for size 1), when both
// have the same sizes other than 1 in the same order.
std::optional<std::vector<int>> MapDims(const Shape& from, const Shape& to) {
  const std::vector<int> a = NonUnitDims(from);
  const std::vector<int> b = NonUnitDims(to);
  if (a.size() != b.size()) return std::nullopt;
  std::vector<int> map(to.size(), -1);
  for (size_t k = 0; k < a.size(); ++k) {
    if (from[a[k]] != to[b[k]]) return std::nullopt;
    map[b[k]] = a[k];
  }
  return map;
}

}  // namespace

Result<ElementwiseChain> ElementwiseChain::Analyze(const Graph& spec, ChainTarget target) {
  ElementwiseChain chain(spec, target);
  KF_RETURN_IF_ERROR(chain.Run());
  return chain;
}

const Node* ElementwiseChain::Producer(int id) const {
  const int p = V(id).producer;
  return p < 0 ? nullptr : &g_->nodes[static_cast<size_t>(p)];
}

// The value `id` is a view of: a spec input, a constant or a computed value.
int ElementwiseChain::Root(int id) const {
  for (const Node* p = Producer(id); p != nullptr && IsViewOp(p->op_type); p = Producer(id)) {
    id = p->inputs[0];
  }
  return id;
}

bool ElementwiseChain::IsScalarConstant(int id) const {
  const Value& v = V(Root(id));
  return v.kind == ValueKind::kConstant && planner::NumElements(V(id).shape) == 1;
}

double ElementwiseChain::ScalarConstant(int id) const {
  const Value& v = V(Root(id));
  return planner::IsFloat(v.dtype) ? v.constant->floats[0]
                                   : static_cast<double>(v.constant->ints[0]);
}

bool ElementwiseChain::IsFloatData(DType dtype) const {
  return dtype == DType::kF32 ||
         (target_ == ChainTarget::kCuda && (dtype == DType::kF16 || dtype == DType::kBF16));
}

bool ElementwiseChain::IsChainDType(DType dtype) const {
  return IsFloatData(dtype) || dtype == DType::kBool || dtype == DType::kI64;
}

std::string ElementwiseChain::FloatTypes() const {
  return target_ == ChainTarget::kCuda ? "f32, f16, bf16" : "f32";
}

Status ElementwiseChain::AddOperand(int id, const Node* reader) {
  if (Computed(id) || operand_of_.count(id) != 0) return Status::Ok();
  const int root = Root(id);
  const Value& r = V(root);
  const Value& v = V(id);
  const std::string who = reader != nullptr ? planner::DescribeNode(*reader) : "a spec output";
  ChainOperand op;
  op.root = root;
  op.dtype = r.dtype;
  op.shape = v.shape;
  const auto input = std::find(g_->inputs.begin(), g_->inputs.end(), root);
  if (input != g_->inputs.end()) {
    op.input = static_cast<int>(input - g_->inputs.begin());
  } else if (r.kind != ValueKind::kConstant || !r.constant) {
    return InvalidArgument(
        fmt::format("{} reads '{}', which is neither a spec input nor a constant", who, r.name));
  }
  if (v.shape.size() > iter_.size()) {
    return InvalidArgument(
        fmt::format("{} reads '{}' of shape {}, of higher rank than the output {}", who, v.name,
                    planner::ShapeToString(v.shape), planner::ShapeToString(iter_)));
  }
  const int64_t count = planner::NumElements(v.shape);
  if (op.input < 0) {
    const size_t held =
        planner::IsFloat(r.dtype) ? r.constant->floats.size() : r.constant->ints.size();
    if (held != static_cast<size_t>(count)) {
      return InvalidArgument(fmt::format("constant '{}' holds {} values for shape {}", r.name, held,
                                         planner::ShapeToString(r.shape)));
    }
    // Constants keep their shape at run time; larger ones become static arrays.
    constexpr int64_t kMaxConstantElements = 1 << 16;
    if (count > kMaxConstantElements) {
      return InvalidArgument(fmt::format("constant '{}' has {} elements, more than {} to embed",
                                         r.name, count, kMaxConstantElements));
    }
    op.access = count == 1 ? ChainAccess::kScalar : ChainAccess::kBroadcast;
  } else if (count == elements_) {
    op.access = ChainAccess::kFull;
  } else if (count == 1) {
    op.access = ChainAccess::kScalar;
  } else {
    op.access = ChainAccess::kBroadcast;
    std::optional<std::vector<int>> map = MapDims(r.shape, v.shape);
    if (!map) {
      return InvalidArgument(fmt::format(
          "{} reads spec input '{}' {} as {}: a view that regroups a broadcast operand's dims", who,
          r.name, planner::ShapeToString(r.shape), planner::ShapeToString(v.shape)));
    }
    op.root_dim = std::move(*map);
  }
  // Right-aligned: the operand's last dim is the output's innermost one.
  op.inner_moves = op.access == ChainAccess::kBroadcast && v.shape.back() != 1;
  if (op.access == ChainAccess::kBroadcast) traits_.strided = true;
  operand_of_[id] = static_cast<int>(operands_.size());
  operands_.push_back(std::move(op));
  return Status::Ok();
}

Status ElementwiseChain::CheckNode(const Node& node) {
  const std::string what = planner::DescribeNode(node);
  if (!node.domain.empty()) {
    return InvalidArgument(fmt::format("{} is from domain '{}'", what, node.domain));
  }
  auto dtype = [&](size_t i) { return V(node.inputs[i]).dtype; };
  std::vector<size_t> data;  // input slots read per element
  if (IsViewOp(node.op_type)) {
    if (node.op_type == "Dropout") {
      if (node.outputs.size() > 1 && node.outputs[1] >= 0) {
        return InvalidArgument(fmt::format("{}: its mask output is not supported", what));
      }
      if (node.inputs.size() > 2 && node.inputs[2] >= 0 &&
          (!IsScalarConstant(node.inputs[2]) || ScalarConstant(node.inputs[2]) != 0)) {
        return InvalidArgument(fmt::format("{}: training_mode must be a constant false", what));
      }
    }
    return Status::Ok();
  }
  if (node.outputs.empty() || node.outputs[0] < 0) {
    return InvalidArgument(fmt::format("{} has no output", what));
  }
  const Value& out = V(node.outputs[0]);
  if (out.shape != iter_) {
    return InvalidArgument(fmt::format("{} produces {} but the chain iterates over {}", what,
                                       planner::ShapeToString(out.shape),
                                       planner::ShapeToString(iter_)));
  }
  for (int in : node.inputs) {
    if (in >= 0 && !IsChainDType(V(in).dtype)) {
      return InvalidArgument(fmt::format("{} reads {} data; the chain computes {}, bool and i64",
                                         what, planner::DTypeName(V(in).dtype), FloatTypes()));
    }
  }
  const std::string& op = node.op_type;
  if (IsFloatMathOp(op)) {
    const size_t arity = IsOneOf(op, {"Add", "Sub", "Mul", "Div", "Pow"}) ? 2
                         : IsOneOf(op, {"Max", "Min", "Clip"})            ? node.inputs.size()
                                                                          : 1;
    if (node.inputs.size() < arity || arity == 0) {
      return InvalidArgument(fmt::format("{} has {} inputs", what, node.inputs.size()));
    }
    for (size_t i = 0; i < arity; ++i) {
      if (node.inputs[i] < 0) continue;
      if (!IsFloatData(dtype(i))) {
        return InvalidArgument(fmt::format("{} on {} is not supported ({} only)", what,
                                           planner::DTypeName(dtype(i)), FloatTypes()));
      }
      data.push_back(i);
    }
    if (op == "Clip") {
      data = {0};
      for (size_t i = 1; i < node.inputs.size(); ++i) {
        if (node.inputs[i] >= 0 && planner::NumElements(V(node.inputs[i]).shape) != 1) {
          return InvalidArgument(fmt::format("{}: min and max must be scalars", what));
        }
        if (node.inputs[i] >= 0) data.push_back(i);
      }
    }
    if (op == "Gelu") {
      const std::string approximate = node.StringAttr("approximate", "none");
      if (approximate != "none" && approximate != "tanh") {
        return InvalidArgument(fmt::format("{}: approximate '{}' is unknown", what, approximate));
      }
    }
    if (!IsFloatData(out.dtype)) {
      return InvalidArgument(fmt::format("{} produces {}", what, planner::DTypeName(out.dtype)));
    }
  } else if (IsComparisonOp(op)) {
    if (node.inputs.size() != 2 || dtype(0) != dtype(1) ||
        (dtype(0) == DType::kBool && op != "Equal")) {
      return InvalidArgument(fmt::format("{} compares mismatched or bool operands", what));
    }
    data = {0, 1};
  } else if (IsLogicOp(op)) {
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (dtype(i) != DType::kBool) return InvalidArgument(fmt::format("{} needs bool", what));
      data.push_back(i);
    }
  } else if (op == "Where") {
    if (node.inputs.size() != 3 || dtype(0) != DType::kBool || dtype(1) != dtype(2)) {
      return InvalidArgument(fmt::format("{} needs a bool condition and equal dtypes", what));
    }
    data = {0, 1, 2};
  } else if (op == "Cast") {
    if (!IsChainDType(out.dtype)) {
      return InvalidArgument(fmt::format("{} casts to {}; the chain computes {}, bool and i64",
                                         what, planner::DTypeName(out.dtype), FloatTypes()));
    }
    data = {0};
  } else if (op == "IsNaN") {
    if (!IsFloatData(dtype(0))) {
      return InvalidArgument(fmt::format("{} needs {}", what, FloatTypes()));
    }
    data = {0};
  } else {
    return InvalidArgument(fmt::format("{} is not an elementwise op the chain compiles", what));
  }
  for (size_t i : data) {
    if (node.inputs[i] < 0) return InvalidArgument(fmt::format("{} misses input {}", what, i));
    KF_RETURN_IF_ERROR(AddOperand(node.inputs[i], &node));
  }
  if (IsTranscendentalOp(node)) traits_.transcendental = true;
  ++traits_.ops;
  steps_.push_back(&node);
  return Status::Ok();
}

Status ElementwiseChain::FindShapeSource() {
  for (size_t k = 0; k < g_->outputs.size(); ++k) {
    if (std::optional<std::vector<int>> map = MapDims(V(g_->outputs[k]).shape, iter_)) {
      shape_from_output_ = true;
      shape_tensor_ = static_cast<int>(k);
      shape_dims_ = std::move(*map);
      return Status::Ok();
    }
  }
  for (size_t k = 0; k < g_->inputs.size(); ++k) {
    const Shape& shape = V(g_->inputs[k]).shape;
    if (planner::NumElements(shape) != elements_) continue;
    if (std::optional<std::vector<int>> map = MapDims(shape, iter_)) {
      shape_from_output_ = false;
      shape_tensor_ = static_cast<int>(k);
      shape_dims_ = std::move(*map);
      return Status::Ok();
    }
  }
  return InvalidArgument(fmt::format(
      "no spec input or output has the chain's shape {} up to size-1 dims, so the broadcast "
      "cannot be resolved at run time",
      planner::ShapeToString(iter_)));
}

Status ElementwiseChain::Run() {
  for (const std::vector<int>* list : {&g_->inputs, &g_->outputs}) {
    for (int id : *list) {
      const Value& v = V(id);
      if (!IsFloatData(v.dtype) && v.dtype != DType::kBool) {
        return InvalidArgument(
            fmt::format("spec tensor '{}' is {}; the elementwise template takes "
                        "{} and bool tensors",
                        v.name, planner::DTypeName(v.dtype), FloatTypes()));
      }
      if (!v.has_shape) {
        return InvalidArgument(fmt::format("spec tensor '{}' has no known shape", v.name));
      }
    }
  }
  const auto first = std::find_if(g_->nodes.begin(), g_->nodes.end(), [](const Node& n) {
    return !IsViewOp(n.op_type) && !n.outputs.empty() && n.outputs[0] >= 0;
  });
  if (first == g_->nodes.end()) return InvalidArgument("the chain computes nothing: views only");
  iter_ = V(first->outputs[0]).shape;
  elements_ = planner::NumElements(iter_);
  for (const Node& node : g_->nodes) KF_RETURN_IF_ERROR(CheckNode(node));
  for (int id : g_->outputs) {
    if (planner::NumElements(V(id).shape) != elements_) {
      return InvalidArgument(fmt::format("output '{}' {} is not the chain's size {}", V(id).name,
                                         planner::ShapeToString(V(id).shape),
                                         planner::ShapeToString(iter_)));
    }
    KF_RETURN_IF_ERROR(AddOperand(id, nullptr));
  }
  if (traits_.strided) KF_RETURN_IF_ERROR(FindShapeSource());
  return Status::Ok();
}

std::string ElementwiseChain::Expr(int id, const std::function<std::string(size_t)>& read) const {
  const int root = Root(id);
  if (Producer(root) != nullptr) return fmt::format("t{}", root);
  const auto k = static_cast<size_t>(operand_of_.at(id));
  const ChainOperand& op = operands_[k];
  if (op.input < 0 && op.access == ChainAccess::kScalar) {
    return Literal(op.dtype, *V(root).constant, 0);
  }
  return read(k);
}

std::string ElementwiseChain::NodeExpr(const Node& node,
                                       const std::function<std::string(size_t)>& read,
                                       std::set<std::string>& helpers) const {
  const std::string& op = node.op_type;
  auto in = [&](size_t i) { return Expr(node.inputs[i], read); };
  auto binary = [&](std::string_view sym) { return fmt::format("({} {} {})", in(0), sym, in(1)); };
  if (op == "Add") return binary("+");
  if (op == "Sub") return binary("-");
  if (op == "Mul") return binary("*");
  if (op == "Div") return binary("/");
  if (op == "Pow") {
    // Small integer exponents become multiplies, which vectorize (powf does not). x^0.5 stays
    // powf: sqrt(-inf) is NaN where pow(-inf, 0.5) is inf.
    if (IsScalarConstant(node.inputs[1])) {
      const double e = ScalarConstant(node.inputs[1]);
      const std::string x = in(0);
      if (e == 0) return "1.0f";
      if (e == 1) return x;
      if (e == 2) return fmt::format("({0} * {0})", x);
      if (e == 3) return fmt::format("({0} * {0} * {0})", x);
      if (e == -1) return fmt::format("(1.0f / {})", x);
    }
    return fmt::format("std::pow({}, {})", in(0), in(1));
  }
  if (op == "Max" || op == "Min") {
    helpers.insert(op == "Max" ? "max" : "min");
    std::string acc = in(0);
    for (size_t i = 1; i < node.inputs.size(); ++i) {
      acc = fmt::format("kf_{}({}, {})", op == "Max" ? "max" : "min", acc, in(i));
    }
    return acc;
  }
  if (op == "Neg") return fmt::format("(-{})", in(0));
  if (op == "Abs") return fmt::format("__builtin_fabsf({})", in(0));
  if (op == "Sqrt") return fmt::format("__builtin_sqrtf({})", in(0));
  if (op == "Reciprocal") return fmt::format("(1.0f / {})", in(0));
  if (op == "Log") return fmt::format("std::log({})", in(0));
  if (op == "Cos") return fmt::format("std::cos({})", in(0));
  if (op == "Sin") return fmt::format("std::sin({})", in(0));
  if (op == "Exp" || op == "Tanh" || op == "Erf" || op == "Sigmoid" || op == "Softplus") {
    std::string name = op;
    std::transform(name.begin(), name.end(), name.begin(),
                   [](char c) { return static_cast<char>(std::tolower(c)); });
    helpers.insert(name);
    return fmt::format("kf_{}({})", name, in(0));
  }
  if (op == "Relu") return fmt::format("({0} < 0.0f ? 0.0f : {0})", in(0));
  if (op == "LeakyRelu") {
    return fmt::format("({0} < 0.0f ? {1} * {0} : {0})", in(0),
                       FloatLiteral(node.FloatAttr("alpha", 0.01)));
  }
  if (op == "Clip") {
    // Opset 11 moved the bounds from attributes to optional inputs.
    std::string lo;
    std::string hi;
    if (node.inputs.size() > 1 && node.inputs[1] >= 0) lo = in(1);
    if (node.inputs.size() > 2 && node.inputs[2] >= 0) hi = in(2);
    if (node.inputs.size() == 1 && node.HasAttr("min")) lo = FloatLiteral(node.FloatAttr("min", 0));
    if (node.inputs.size() == 1 && node.HasAttr("max")) hi = FloatLiteral(node.FloatAttr("max", 0));
    std::string x = in(0);
    if (!lo.empty()) x = fmt::format("({0} < {1} ? {1} : {0})", x, lo);
    if (!hi.empty()) {
      helpers.insert("upper");
      x = fmt::format("kf_upper({}, {})", x, hi);
    }
    return x;
  }
  if (op == "Gelu") {
    const bool tanh = node.StringAttr("approximate", "none") == "tanh";
    helpers.insert(tanh ? "gelu_tanh" : "gelu_erf");
    return fmt::format("kf_{}({})", tanh ? "gelu_tanh" : "gelu_erf", in(0));
  }
  if (op == "HardSigmoid") {
    helpers.insert("clamp01");
    return fmt::format("kf_clamp01({} * {} + {})", FloatLiteral(node.FloatAttr("alpha", 0.2)),
                       in(0), FloatLiteral(node.FloatAttr("beta", 0.5)));
  }
  if (op == "HardSwish") {
    helpers.insert("clamp01");
    return fmt::format("({0} * kf_clamp01({0} * {1} + 0.5f))", in(0), FloatLiteral(1.0 / 6.0));
  }
  if (op == "Cast") {
    // Casts between float types are the identity: the chain computes them all in f32.
    const DType from = V(node.inputs[0]).dtype;
    const DType to = V(node.outputs[0]).dtype;
    if (from == to) return in(0);
    if (to == DType::kBool) {
      return fmt::format("({} != {})", in(0), IsFloatData(from) ? "0.0f" : "0");
    }
    return fmt::format("static_cast<{}>({})", CType(to), in(0));
  }
  if (op == "Equal") return binary("==");
  if (op == "Less") return binary("<");
  if (op == "Greater") return binary(">");
  if (op == "LessOrEqual") return binary("<=");
  if (op == "GreaterOrEqual") return binary(">=");
  if (op == "And") return binary("&&");
  if (op == "Or") return binary("||");
  if (op == "Xor") return binary("!=");
  if (op == "Not") return fmt::format("(!{})", in(0));
  if (op == "Where") return fmt::format("({} ? {} : {})", in(0), in(1), in(2));
  // IsNaN, the last op CheckNode lets through.
  return fmt::format("({0} != {0})", in(0));
}

ChainElementCode ElementwiseChain::Element(const std::function<std::string(size_t)>& read) const {
  ChainElementCode code;
  for (const Node* node : steps_) {
    const int out = node->outputs[0];
    code.statements.push_back(fmt::format("const {} t{} = {};", CType(V(out).dtype), out,
                                          NodeExpr(*node, read, code.helpers)));
  }
  for (int id : g_->outputs) code.outputs.push_back(Expr(id, read));
  return code;
}

std::vector<DType> ElementwiseChain::output_dtypes() const {
  std::vector<DType> dtypes;
  for (int id : g_->outputs) dtypes.push_back(V(id).dtype);
  return dtypes;
}

std::string ElementwiseChain::HostHelpers() const {
  std::string s =
      "static int64_t kf_elements(const kf_tensor& t) {\n"
      "  int64_t n = 1;\n  for (int32_t d = 0; d < t.ndim; ++d) n *= t.shape[d];\n  return n;\n"
      "}\n\n";
  // HostChecks counts the elements of broadcast inputs (constants hold what their shape says).
  const bool counts = std::any_of(operands_.begin(), operands_.end(), [](const ChainOperand& op) {
    return op.input >= 0 && op.access == ChainAccess::kBroadcast;
  });
  if (counts) {
    s += "static int64_t kf_count(const int64_t* shape, int rank) {\n"
         "  int64_t n = 1;\n  for (int d = 0; d < rank; ++d) n *= shape[d];\n  return n;\n"
         "}\n\n";
  }
  if (traits_.strided) {
    s += "// Element strides of a `vrank` operand broadcast (right-aligned) to `dims`: 0 along\n"
         "// broadcast dims. False when the shapes do not broadcast.\n"
         "static bool kf_broadcast_strides(const int64_t* vs, int vrank, const int64_t* dims,\n"
         "                                 int rank, int64_t* st) {\n"
         "  int64_t stride = 1;\n"
         "  for (int d = rank - 1; d >= 0; --d) {\n"
         "    const int j = d - (rank - vrank);\n"
         "    if (j < 0) {\n      st[d] = 0;\n      continue;\n    }\n"
         "    if (vs[j] == dims[d]) {\n      st[d] = dims[d] == 1 ? 0 : stride;\n"
         "    } else if (vs[j] == 1) {\n      st[d] = 0;\n"
         "    } else {\n      return false;\n    }\n"
         "    stride *= vs[j];\n"
         "  }\n"
         "  return true;\n"
         "}\n\n";
  }
  return s;
}

std::string ElementwiseChain::ConstantValues(size_t k) const {
  const ChainOperand& op = operands_[k];
  const planner::ConstantData& data = *V(op.root).constant;
  std::vector<std::string> values;
  const size_t count = planner::IsFloat(op.dtype) ? data.floats.size() : data.ints.size();
  for (size_t i = 0; i < count; ++i) {
    values.push_back(planner::IsFloat(op.dtype) ? FloatLiteral(data.floats[i])
                     : op.dtype == DType::kI64  ? Literal(op.dtype, data, i)
                                                : (data.ints[i] != 0 ? "1" : "0"));
  }
  return fmt::format("{{{}}}", fmt::join(values, ", "));
}

std::string ElementwiseChain::HostChecks(bool declare_constants) const {
  const size_t rank = iter_.size();
  std::string s;
  s += fmt::format(
      "  if (in == nullptr || out == nullptr || n_in != {} || n_out != {}) "
      "return KF_ERR_INVALID_ARGUMENT;\n",
      g_->inputs.size(), g_->outputs.size());
  for (size_t k = 0; k < g_->inputs.size(); ++k) {
    const Value& v = V(g_->inputs[k]);
    s += fmt::format(
        "  if (in[{0}].dtype != {1} || in[{0}].ndim != {2}) return "
        "KF_ERR_INVALID_ARGUMENT;\n",
        k, KernelAbiDType(v.dtype), v.shape.size());
  }
  for (size_t j = 0; j < g_->outputs.size(); ++j) {
    const Value& v = V(g_->outputs[j]);
    s += fmt::format(
        "  if (out[{0}].dtype != {1} || out[{0}].ndim != {2}) return "
        "KF_ERR_INVALID_ARGUMENT;\n",
        j, KernelAbiDType(v.dtype), v.shape.size());
  }
  if (traits_.strided) {
    std::vector<std::string> dims;
    for (size_t d = 0; d < rank; ++d) {
      const int src = shape_dims_[d];
      dims.push_back(src < 0 ? "1"
                             : fmt::format("{}[{}].shape[{}]", shape_from_output_ ? "out" : "in",
                                           shape_tensor_, src));
    }
    s += fmt::format("  const int64_t dims[{}] = {{{}}};\n", rank, fmt::join(dims, ", "));
    s += fmt::format("  int64_t n = 1;\n  for (int d = 0; d < {}; ++d) n *= dims[d];\n", rank);
  } else {
    s += "  const int64_t n = kf_elements(out[0]);\n";
  }
  // The contiguous path took n from out[0]; the strided one from dims.
  for (size_t j = traits_.strided ? 0 : 1; j < g_->outputs.size(); ++j) {
    s += fmt::format("  if (kf_elements(out[{}]) != n) return KF_ERR_INVALID_ARGUMENT;\n", j);
  }
  for (size_t k = 0; k < operands_.size(); ++k) {
    const ChainOperand& op = operands_[k];
    const std::string type(KernelStorageType(op.dtype));
    if (op.input < 0) {
      if (op.access == ChainAccess::kScalar) continue;
      if (declare_constants) {
        s += fmt::format("  static const {} a{}[] = {};\n", type, k, ConstantValues(k));
      }
    } else {
      s += fmt::format("  const {0}* a{1} = static_cast<const {0}*>(in[{2}].data);\n", type, k,
                       op.input);
      if (op.access == ChainAccess::kFull) {
        s += fmt::format("  if (kf_elements(in[{}]) != n) return KF_ERR_INVALID_ARGUMENT;\n",
                         op.input);
      } else if (op.access == ChainAccess::kScalar) {
        s += fmt::format("  if (kf_elements(in[{}]) != 1) return KF_ERR_INVALID_ARGUMENT;\n",
                         op.input);
      }
    }
    if (op.access != ChainAccess::kBroadcast) continue;
    std::vector<std::string> shape;
    for (size_t d = 0; d < op.shape.size(); ++d) {
      const bool fixed = op.input < 0 || op.root_dim[d] < 0;
      shape.push_back(fixed ? std::to_string(op.shape[d])
                            : fmt::format("in[{}].shape[{}]", op.input, op.root_dim[d]));
    }
    s += fmt::format("  const int64_t vs{}[{}] = {{{}}};\n", k, op.shape.size(),
                     fmt::join(shape, ", "));
    s += fmt::format("  int64_t st{}[{}];\n", k, rank);
    s += fmt::format("  if (!kf_broadcast_strides(vs{0}, {1}, dims, {2}, st{0})", k,
                     op.shape.size(), rank);
    if (op.input >= 0) {
      s += fmt::format(" ||\n      kf_count(vs{}, {}) != kf_elements(in[{}])", k, op.shape.size(),
                       op.input);
    }
    s += ") {\n    return KF_ERR_INVALID_ARGUMENT;\n  }\n";
    // Kernels read this operand per element along the innermost dim or once per row; the
    // run-time strides must agree.
    s +=
        fmt::format("  if (dims[{0}] != 1 && st{1}[{0}] != {2}) return KF_ERR_UNSUPPORTED_SHAPE;\n",
                    rank - 1, k, op.inner_moves ? 1 : 0);
  }
  for (size_t j = 0; j < g_->outputs.size(); ++j) {
    s += fmt::format("  {0}* q{1} = static_cast<{0}*>(out[{1}].data);\n",
                     KernelStorageType(V(g_->outputs[j]).dtype), j);
  }
  s += "  if (n == 0) return KF_OK;\n";
  return s;
}

std::string ChainHelperSource(const std::set<std::string>& used, const ChainMath& math) {
  auto needs = [&](std::initializer_list<std::string_view> names) {
    return std::any_of(names.begin(), names.end(),
                       [&](std::string_view n) { return used.count(std::string(n)) != 0; });
  };
  const std::string& q = math.qualifier;
  std::string out;
  if (needs({"exp", "sigmoid", "softplus"})) out += math.exp;
  if (needs({"tanh", "gelu_tanh"})) out += math.tanh;
  if (needs({"erf", "gelu_erf"})) out += math.erf;
  if (needs({"sigmoid"})) {
    out +=
        fmt::format("{} float kf_sigmoid(float x) {{ return 1.0f / (1.0f + kf_exp(-x)); }}\n", q);
  }
  if (needs({"softplus"})) {
    out += fmt::format(
        "// log(1 + e^x) as max(x, 0) + log1p(e^-|x|): e^x never overflows.\n"
        "{} float kf_softplus(float x) {{\n"
        "  const float ax = x < 0.0f ? -x : x;\n"
        "  return (x > 0.0f ? x : 0.0f) + std::log1p(kf_exp(-ax));\n"
        "}}\n",
        q);
  }
  if (needs({"gelu_erf"})) {
    out += fmt::format(
        "{} float kf_gelu_erf(float x) {{\n"
        "  return 0.5f * x * (1.0f + kf_erf(x * 0.707106781f));\n"
        "}}\n",
        q);
  }
  if (needs({"gelu_tanh"})) {
    out += fmt::format(
        "{} float kf_gelu_tanh(float x) {{\n"
        "  return 0.5f * x * (1.0f + kf_tanh(0.797884561f * (x + 0.044715f * x * x * x)));\n"
        "}}\n",
        q);
  }
  if (needs({"max", "min"})) {
    out += fmt::format(
        "// NaN wins, as in numpy: (a + b) is NaN when either is.\n"
        "{0} float kf_max(float a, float b) {{\n"
        "  return (a != a || b != b) ? a + b : (a > b ? a : b);\n"
        "}}\n"
        "{0} float kf_min(float a, float b) {{\n"
        "  return (a != a || b != b) ? a + b : (a < b ? a : b);\n"
        "}}\n",
        q);
  }
  if (needs({"clamp01"})) {
    out += fmt::format(
        "{} float kf_clamp01(float v) {{ return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }}\n", q);
  }
  if (needs({"upper"})) {
    out += fmt::format("{} float kf_upper(float v, float hi) {{ return v > hi ? hi : v; }}\n", q);
  }
  return out;
}

namespace {

// The C++ kernel: OpenMP tasks of contiguous runs of output elements (rows on the strided path),
// each run one vectorizable loop.
class CpuChainRenderer {
 public:
  CpuChainRenderer(const ElementwiseChain& chain, const ElementwiseOptions& options)
      : chain_(chain), options_(options), outputs_(chain.output_dtypes()) {}

  std::string Emit() const;

 private:
  std::string Body(std::set<std::string>& helpers) const;
  std::string BodyArgs(std::string_view full_offset, bool strided) const;
  std::string RowsFunction() const;
  std::string RunFunction() const;

  const ElementwiseChain& chain_;
  const ElementwiseOptions& options_;
  const std::vector<DType> outputs_;
};

std::string CpuChainRenderer::Body(std::set<std::string>& helpers) const {
  const std::vector<ChainOperand>& operands = chain_.operands();
  std::vector<std::string> params = {"int64_t n"};
  std::string hoisted;
  for (size_t k = 0; k < operands.size(); ++k) {
    const ChainOperand& op = operands[k];
    if (op.input < 0 && op.access == ChainAccess::kScalar) continue;
    params.push_back(fmt::format("const {}* __restrict a{}", KernelStorageType(op.dtype), k));
    if (op.access == ChainAccess::kScalar ||
        (op.access == ChainAccess::kBroadcast && !op.inner_moves)) {
      hoisted += fmt::format(
          "  const {} s{} = {};\n", CType(op.dtype), k,
          op.dtype == DType::kBool ? fmt::format("a{}[0] != 0", k) : fmt::format("a{}[0]", k));
    }
  }
  for (size_t j = 0; j < outputs_.size(); ++j) {
    params.push_back(fmt::format("{}* __restrict q{}", KernelStorageType(outputs_[j]), j));
  }
  // Scalars and operands constant along a row are hoisted; the rest are read at the run's i.
  const ChainElementCode code = chain_.Element([&](size_t k) {
    const ChainOperand& op = operands[k];
    if (op.access == ChainAccess::kScalar ||
        (op.access == ChainAccess::kBroadcast && !op.inner_moves)) {
      return fmt::format("s{}", k);
    }
    return op.dtype == DType::kBool ? fmt::format("(a{}[i] != 0)", k) : fmt::format("a{}[i]", k);
  });
  helpers.insert(code.helpers.begin(), code.helpers.end());
  std::string loop;
  for (const std::string& statement : code.statements) loop += "    " + statement + "\n";
  for (size_t j = 0; j < outputs_.size(); ++j) {
    const std::string& value = code.outputs[j];
    loop += fmt::format(
        "    q{}[i] = {};\n", j,
        outputs_[j] == DType::kBool ? fmt::format("static_cast<uint8_t>({})", value) : value);
  }
  return fmt::format(
      "// One contiguous run of output elements; __restrict and a loop of its own keep it\n"
      "// vectorizable when called from an OpenMP region.\n"
      "static __attribute__((noinline)) void kf_body({}) {{\n{}{}"
      "  for (int64_t i = 0; i < n; ++i) {{\n{}  }}\n}}\n",
      fmt::join(params, ", "), hoisted,
      options_.unroll > 1 ? fmt::format("#pragma GCC unroll {}\n", options_.unroll) : "", loop);
}

// Arguments of a kf_body call: full operands and outputs start at `full_offset`, broadcast
// operands at their row offset `o<k>` when `strided`.
std::string CpuChainRenderer::BodyArgs(std::string_view full_offset, bool strided) const {
  const std::vector<ChainOperand>& operands = chain_.operands();
  std::vector<std::string> args;
  for (size_t k = 0; k < operands.size(); ++k) {
    const ChainOperand& op = operands[k];
    if (op.input < 0 && op.access == ChainAccess::kScalar) continue;
    if (op.access == ChainAccess::kFull) {
      args.push_back(fmt::format("a{} + {}", k, full_offset));
    } else if (op.access == ChainAccess::kBroadcast && strided) {
      args.push_back(fmt::format("a{0} + o{0}", k));
    } else {
      args.push_back(fmt::format("a{}", k));
    }
  }
  for (size_t j = 0; j < outputs_.size(); ++j) {
    args.push_back(fmt::format("q{} + {}", j, full_offset));
  }
  return fmt::format("{}", fmt::join(args, ", "));
}

std::string CpuChainRenderer::RowsFunction() const {
  const std::vector<ChainOperand>& operands = chain_.operands();
  const size_t rank = chain_.rank();
  std::vector<std::string> params = {"int64_t r0", "int64_t r1", "int64_t inner",
                                     "const int64_t* dims"};
  std::string init;
  std::string step;
  std::string wrap;
  for (size_t k = 0; k < operands.size(); ++k) {
    const ChainOperand& op = operands[k];
    if (op.input < 0 && op.access == ChainAccess::kScalar) continue;
    params.push_back(fmt::format("const {}* __restrict a{}", KernelStorageType(op.dtype), k));
    if (op.access != ChainAccess::kBroadcast) continue;
    params.push_back(fmt::format("const int64_t* st{}", k));
    init += fmt::format("  int64_t o{} = 0;\n", k);
    init +=
        fmt::format("  for (int d = 0; d < {1}; ++d) o{0} += idx[d] * st{0}[d];\n", k, rank - 1);
    step += fmt::format(" o{0} += st{0}[d];", k);
    wrap += fmt::format(" o{0} -= st{0}[d] * dims[d];", k);
  }
  for (size_t j = 0; j < outputs_.size(); ++j) {
    params.push_back(fmt::format("{}* __restrict q{}", KernelStorageType(outputs_[j]), j));
  }
  return fmt::format(
      "// Rows [r0, r1) of the output's innermost dim; an odometer over the outer dims moves the\n"
      "// broadcast operands' offsets.\n"
      "static void kf_rows({0}) {{\n"
      "  int64_t idx[{1}];\n"
      "  int64_t rem = r0;\n"
      "  for (int d = {1} - 1; d >= 0; --d) {{\n"
      "    idx[d] = rem % dims[d];\n"
      "    rem /= dims[d];\n"
      "  }}\n"
      "{2}"
      "  for (int64_t r = r0; r < r1; ++r) {{\n"
      "    kf_body(inner, {3});\n"
      "    for (int d = {1} - 1; d >= 0; --d) {{\n"
      "      ++idx[d];{4}\n"
      "      if (idx[d] < dims[d]) break;\n"
      "      idx[d] = 0;{5}\n"
      "    }}\n"
      "  }}\n"
      "}}\n",
      fmt::join(params, ", "), rank - 1, init, BodyArgs("r * inner", true), step, wrap);
}

std::string CpuChainRenderer::RunFunction() const {
  const std::vector<ChainOperand>& operands = chain_.operands();
  std::string s;
  s += "extern \"C\" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, "
       "int32_t n_out, void* stream) {\n  (void)stream;\n";
  s += chain_.HostChecks(/*declare_constants=*/true);
  const std::string parallel =
      options_.multithreaded ? "#pragma omp parallel for schedule(static) if (tasks > 1)\n" : "";
  if (chain_.traits().strided) {
    std::vector<std::string> args = {"r0", "r1", "inner", "dims"};
    for (size_t k = 0; k < operands.size(); ++k) {
      const ChainOperand& op = operands[k];
      if (op.input < 0 && op.access == ChainAccess::kScalar) continue;
      args.push_back(fmt::format("a{}", k));
      if (op.access == ChainAccess::kBroadcast) args.push_back(fmt::format("st{}", k));
    }
    for (size_t j = 0; j < outputs_.size(); ++j) args.push_back(fmt::format("q{}", j));
    s += fmt::format(
        "  const int64_t inner = dims[{0}];\n"
        "  const int64_t rows = n / inner;\n"
        "  const int64_t rows_per_task = kChunk / inner > 0 ? kChunk / inner : 1;\n"
        "  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;\n"
        "{1}"
        "  for (int64_t t = 0; t < tasks; ++t) {{\n"
        "    const int64_t r0 = t * rows_per_task;\n"
        "    const int64_t r1 = rows - r0 < rows_per_task ? rows : r0 + rows_per_task;\n"
        "    kf_rows({2});\n"
        "  }}\n",
        chain_.rank() - 1, parallel, fmt::join(args, ", "));
  } else {
    s += fmt::format(
        "  const int64_t tasks = (n + kChunk - 1) / kChunk;\n"
        "{0}"
        "  for (int64_t t = 0; t < tasks; ++t) {{\n"
        "    const int64_t b = t * kChunk;\n"
        "    kf_body(n - b < kChunk ? n - b : kChunk, {1});\n"
        "  }}\n",
        parallel, BodyArgs("b", false));
  }
  s += "  return KF_OK;\n}\n";
  return s;
}

std::string CpuChainRenderer::Emit() const {
  std::set<std::string> helpers;
  const std::string body = Body(helpers);
  std::string s =
      "// Generated by kfleet's elementwise template: the whole chain per element, one pass.\n"
      "#include <cmath>\n#include <cstdint>\n\n#include \"kfleet/kernel.h\"\n\n";
  s += fmt::format("static const int64_t kChunk = {};  // output elements per task\n\n",
                   options_.chunk_elements);
  const bool poly = options_.poly_math;
  ChainMath math;
  math.qualifier = "static inline";
  math.exp = poly ? std::string(KernelExpSource())
                  : "static inline float kf_exp(float x) { return std::exp(x); }\n";
  math.tanh = poly ? std::string(KernelTanhSource())
                   : "static inline float kf_tanh(float x) { return std::tanh(x); }\n";
  math.erf = poly ? std::string(KernelErfSource())
                  : "static inline float kf_erf(float x) { return std::erf(x); }\n";
  s += ChainHelperSource(helpers, math);
  s += "\n" + chain_.HostHelpers();
  s += body + "\n";
  if (chain_.traits().strided) s += RowsFunction() + "\n";
  s += RunFunction();
  return s;
}

}  // namespace

bool IsChainFamily(std::string_view family) {
  return IsOneOf(family, {"elementwise", "gelu_erf", "gelu_tanh", "silu"});
}

Result<ElementwiseTraits> AnalyzeElementwiseChain(const Graph& spec) {
  KF_ASSIGN_OR_RETURN(ElementwiseChain chain, ElementwiseChain::Analyze(spec, ChainTarget::kCpu));
  return chain.traits();
}

Result<std::string> RenderElementwiseChain(const Graph& spec, const ElementwiseOptions& options) {
  KF_ASSIGN_OR_RETURN(ElementwiseChain chain, ElementwiseChain::Analyze(spec, ChainTarget::kCpu));
  return CpuChainRenderer(chain, options).Emit();
}

}  // namespace kfleet::agents
