#include "agents/attention_analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

namespace kfleet::agents {
namespace {

using planner::DType;
using planner::Graph;
using planner::Node;
using planner::Shape;
using planner::Value;
using planner::ValueKind;

// Roles of the [batch, heads, seq, head_dim] view, in that order.
constexpr int kB = 0, kH = 1, kS = 2, kD = 3;
using Index4 = std::array<int64_t, 4>;

// A float literal the generated source can use as is: "2.0f", "(-0.5f)", "(-INFINITY)".
std::string FloatLiteral(double value) {
  if (std::isnan(value)) return "NAN";
  if (std::isinf(value)) return value > 0 ? "INFINITY" : "(-INFINITY)";
  std::string text = fmt::format("{:.9g}", static_cast<float>(value));
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  text += "f";
  return value < 0 ? "(" + text + ")" : text;
}

bool IsKernelFloat(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

int64_t Flatten(const std::vector<int64_t>& index, const Shape& shape) {
  int64_t flat = 0;
  for (size_t a = 0; a < shape.size(); ++a) flat = flat * shape[a] + index[a];
  return flat;
}

std::vector<int64_t> Unflatten(int64_t flat, const Shape& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t a = shape.size(); a-- > 0;) {
    index[a] = flat % shape[a];
    flat /= shape[a];
  }
  return index;
}

std::vector<int64_t> DenseStrides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t a = shape.size(); a-- > 1;) strides[a - 1] = strides[a] * shape[a];
  return strides;
}

bool IsReshapeLike(std::string_view op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
         op == "Identity" || op == "Cast";
}

// One node of a view chain, with the value it reads and the one it produces on the chain.
struct ViewStep {
  int node = -1;
  int in = -1;
  int out = -1;
  std::vector<int64_t> slice_start;  // Split / Slice: where the output starts, per axis
};

// An index map of the operand that a strided view of its input reproduces exactly.
struct Affine {
  int64_t offset = 0;
  Index4 stride = {0, 0, 0, 0};
};

class AttentionAnalyzer {
 public:
  explicit AttentionAnalyzer(const SpecView& spec) : spec_(spec), g_(*spec.graph) {
    for (size_t k = 0; k < g_.inputs.size(); ++k) input_of_[g_.inputs[k]] = static_cast<int>(k);
  }

  Result<AttentionPlan> Run() {
    if (spec_.family != "attention") {
      return InvalidArgument(fmt::format("family '{}' is not attention", spec_.family));
    }
    if (spec_.anchor < 0 || spec_.anchor >= static_cast<int>(g_.nodes.size()) ||
        N(spec_.anchor).op_type != "MatMul") {
      return InvalidArgument("the spec's anchor is not the Q K^T MatMul");
    }
    if (g_.outputs.size() != 1) {
      return InvalidArgument(
          fmt::format("attention writes one output; the spec has {}", g_.outputs.size()));
    }
    std::vector<int> tensors = g_.inputs;
    tensors.push_back(g_.outputs[0]);
    for (int value : tensors) {
      if (!V(value).has_shape || planner::NumElements(V(value).shape) == 0) {
        return InvalidArgument(fmt::format("{} has no known, non-empty shape", V(value).name));
      }
    }
    const int qk = spec_.anchor;
    visited_.insert(qk);
    KF_ASSIGN_OR_RETURN(const int softmax, ScoreChain(qk));
    KF_ASSIGN_OR_RETURN(const int av, AfterSoftmax(softmax));
    KF_RETURN_IF_ERROR(Sizes(qk, av));
    KF_ASSIGN_OR_RETURN(plan_.q, HeadView(In(qk, 0), false, "Q"));
    KF_ASSIGN_OR_RETURN(plan_.k, HeadView(In(qk, 1), true, "K"));
    KF_ASSIGN_OR_RETURN(plan_.v, HeadView(In(av, 1), false, "V"));
    KF_RETURN_IF_ERROR(OutputLayout(av));
    for (size_t n = 0; n < g_.nodes.size(); ++n) {
      if (visited_.count(static_cast<int>(n)) == 0) {
        return InvalidArgument(fmt::format("{} is not part of the attention pattern",
                                           planner::DescribeNode(g_.nodes[n])));
      }
    }
    KF_RETURN_IF_ERROR(Types());
    plan_.head_dim_fixed = true;
    for (const HeadOperand* op : {&plan_.q, &plan_.k, &plan_.v}) {
      plan_.head_dim_fixed = plan_.head_dim_fixed && op->packed && op->fixed_head_dim > 0;
    }
    plan_.score_steps.insert(plan_.score_steps.begin(), pre_steps_.begin(), pre_steps_.end());
    Describe();
    return plan_;
  }

 private:
  const Node& N(int node) const { return g_.nodes[node]; }
  const Value& V(int value) const { return g_.values[value]; }
  int In(int node, size_t k) const { return k < N(node).inputs.size() ? N(node).inputs[k] : -1; }
  int Out(int node) const { return N(node).outputs[0]; }
  bool IsOp(int node, std::string_view op) const { return node >= 0 && N(node).op_type == op; }

  Status Fail(int node, std::string_view why) const {
    return InvalidArgument(fmt::format("{}: {}", planner::DescribeNode(N(node)), why));
  }

  std::set<int> Readers(int value) const {
    return std::set<int>(V(value).consumers.begin(), V(value).consumers.end());
  }

  // The single node reading `value`, which must not be the spec output.
  Result<int> OnlyReader(int value) const {
    const std::set<int> readers = Readers(value);
    if (value == g_.outputs[0] || readers.size() != 1) {
      return InvalidArgument(
          fmt::format("{} must feed exactly one node inside the pattern", V(value).name));
    }
    return *readers.begin();
  }

  std::optional<double> ScalarConstant(int value) const {
    if (value < 0 || V(value).kind != ValueKind::kConstant || !V(value).constant) return {};
    if (planner::NumElements(V(value).shape) != 1) return {};
    const planner::ConstantData& data = *V(value).constant;
    if (!data.floats.empty()) return data.floats[0];
    if (!data.ints.empty()) return static_cast<double>(data.ints[0]);
    return {};
  }

  bool CastsBetweenFloats(int node) const {
    return IsKernelFloat(V(In(node, 0)).dtype) && IsKernelFloat(V(Out(node)).dtype);
  }

  // ---- between the MatMuls ----

  // A value a score op reads besides the scores: a scalar literal or a broadcast spec input.
  Result<std::string> ScoreTerm(int node, int value, bool as_bool) {
    if (std::optional<double> c = ScalarConstant(value)) {
      if (as_bool) return std::string(*c != 0 ? "true" : "false");
      return FloatLiteral(*c);
    }
    auto it = input_of_.find(value);
    if (it == input_of_.end()) {
      return Fail(node,
                  "reads a computed value or a constant tensor; the kernel reads scalar constants "
                  "and spec inputs");
    }
    const Value& v = V(value);
    if (as_bool != (v.dtype == DType::kBool) || (!as_bool && !IsKernelFloat(v.dtype))) {
      return Fail(node, fmt::format("operand {} is {}; a condition must be bool, a score operand "
                                    "f32, f16 or bf16",
                                    v.name, planner::DTypeName(v.dtype)));
    }
    const Shape& scores = V(Out(spec_.anchor)).shape;
    if (v.shape.size() > scores.size()) {
      return Fail(node,
                  fmt::format("operand {} {} has a higher rank than the scores {}", v.name,
                              planner::ShapeToString(v.shape), planner::ShapeToString(scores)));
    }
    for (size_t a = 0; a < v.shape.size(); ++a) {
      const int64_t d = v.shape[v.shape.size() - 1 - a];
      if (d != 1 && d != scores[scores.size() - 1 - a]) {
        return Fail(node,
                    fmt::format("operand {} {} does not broadcast to the scores {}", v.name,
                                planner::ShapeToString(v.shape), planner::ShapeToString(scores)));
      }
    }
    size_t i = 0;
    while (i < plan_.operands.size() && plan_.operands[i].input != it->second) ++i;
    if (i == plan_.operands.size()) {
      plan_.operands.push_back({it->second, v.dtype, static_cast<int>(v.shape.size())});
    }
    return fmt::format("{}{}", as_bool ? "c" : "x", i);
  }

  // From the Q K^T MatMul through the score ops to the Softmax, which it returns.
  Result<int> ScoreChain(int qk) {
    int cur = Out(qk);
    while (true) {
      KF_ASSIGN_OR_RETURN(const int n, OnlyReader(cur));
      visited_.insert(n);
      const std::string& op = N(n).op_type;
      if (op == "Softmax") {
        const int rank = static_cast<int>(V(cur).shape.size());
        int64_t axis = N(n).IntAttr("axis", g_.opset >= 13 ? -1 : 1);
        if (axis < 0) axis += rank;
        if (axis != rank - 1) return Fail(n, "the kernel runs softmax over the last axis only");
        return n;
      }
      if (op == "Identity" || (op == "Cast" && CastsBetweenFloats(n))) {
        ops_.push_back(op);
      } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
        if (N(n).inputs.size() != 2 || In(n, 0) == In(n, 1)) {
          return Fail(n, "expected the scores and one other operand");
        }
        const bool first = In(n, 0) == cur;
        KF_ASSIGN_OR_RETURN(std::string term, ScoreTerm(n, first ? In(n, 1) : In(n, 0), false));
        const char* sign = op == "Add" ? "+" : op == "Sub" ? "-" : op == "Mul" ? "*" : "/";
        plan_.score_steps.push_back(first ? fmt::format("s = s {} {};", sign, term)
                                          : fmt::format("s = {} {} s;", term, sign));
        ops_.push_back(op);
      } else if (op == "Where") {
        if (In(n, 0) == cur || (In(n, 1) == cur) == (In(n, 2) == cur)) {
          return Fail(n,
                      "expected Where(condition, scores, fill) or Where(condition, fill, "
                      "scores)");
        }
        KF_ASSIGN_OR_RETURN(std::string cond, ScoreTerm(n, In(n, 0), true));
        const bool scores_if_true = In(n, 1) == cur;
        KF_ASSIGN_OR_RETURN(std::string fill,
                            ScoreTerm(n, scores_if_true ? In(n, 2) : In(n, 1), false));
        plan_.score_steps.push_back(scores_if_true ? fmt::format("s = {} ? s : {};", cond, fill)
                                                   : fmt::format("s = {} ? {} : s;", cond, fill));
        ops_.push_back(op);
      } else {
        return Fail(n, "is not a score op the kernel knows (Mul, Div, Add, Sub, Where, Cast)");
      }
      cur = Out(n);
    }
  }

  // From the Softmax to the P V MatMul, which it returns; Cast, Dropout (inference) and the
  // Where(IsNaN(P), 0, P) that zeroes fully masked rows may sit between them.
  Result<int> AfterSoftmax(int softmax) {
    int cur = Out(softmax);
    while (true) {
      const std::set<int> readers = Readers(cur);
      if (cur == g_.outputs[0]) return InvalidArgument("the spec writes the softmax itself");
      if (readers.size() == 2) {
        int isnan = -1, where = -1;
        for (int r : readers) (IsOp(r, "IsNaN") ? isnan : where) = r;
        const bool matched = isnan >= 0 && IsOp(where, "Where") && In(where, 0) == Out(isnan) &&
                             In(where, 2) == cur && Readers(Out(isnan)).size() == 1 &&
                             Out(isnan) != g_.outputs[0];
        std::optional<double> fill = matched ? ScalarConstant(In(where, 1)) : std::nullopt;
        if (!fill || *fill != 0) {
          return InvalidArgument(fmt::format(
              "the softmax output {} is read twice; only Where(IsNaN(P), 0, P) is known",
              V(cur).name));
        }
        visited_.insert({isnan, where});
        plan_.zero_masked_rows = true;
        cur = Out(where);
        continue;
      }
      KF_ASSIGN_OR_RETURN(const int n, OnlyReader(cur));
      visited_.insert(n);
      if (IsOp(n, "MatMul") && In(n, 0) == cur) return n;
      if (IsOp(n, "Identity") || (IsOp(n, "Cast") && CastsBetweenFloats(n))) {
        cur = Out(n);
        continue;
      }
      if (IsOp(n, "Dropout")) {
        const int mask = N(n).outputs.size() > 1 ? N(n).outputs[1] : -1;
        const std::optional<double> training = ScalarConstant(In(n, 2));
        if ((mask >= 0 && !V(mask).consumers.empty()) || (In(n, 2) >= 0 && training != 0.0)) {
          return Fail(n, "only an inference Dropout (an identity) is supported");
        }
        cur = Out(n);
        continue;
      }
      return Fail(n, "is neither the P V MatMul nor an op the kernel skips (Cast, Dropout)");
    }
  }

  Status Sizes(int qk, int av) {
    const Shape& q = V(In(qk, 0)).shape;
    const Shape& kt = V(In(qk, 1)).shape;
    const Shape& v = V(In(av, 1)).shape;
    if (q.size() != 4 || kt.size() != 4 || v.size() != 4) {
      return Fail(qk, fmt::format("Q {}, K^T {} and V {} must be [batch, heads, seq, head_dim] "
                                  "(rank 4)",
                                  planner::ShapeToString(q), planner::ShapeToString(kt),
                                  planner::ShapeToString(v)));
    }
    if (q[0] != kt[0] || q[1] != kt[1] || q[0] != v[0] || q[1] != v[1] || kt[3] != v[2] ||
        q[3] != kt[2] || v[3] != q[3]) {
      return Fail(qk, fmt::format("Q {}, K^T {} and V {} do not form one attention (no "
                                  "broadcast of batch or heads)",
                                  planner::ShapeToString(q), planner::ShapeToString(kt),
                                  planner::ShapeToString(v)));
    }
    plan_.batch = q[0];
    plan_.heads = q[1];
    plan_.seq_q = q[2];
    plan_.seq_kv = kt[3];
    plan_.head_dim = q[3];
    return Status::Ok();
  }

  // ---- Q, K, V ----

  std::vector<int64_t> Perm(int node, size_t rank) const {
    std::vector<int64_t> perm = N(node).IntsAttr("perm");
    if (perm.empty()) {
      for (size_t a = rank; a-- > 0;) perm.push_back(static_cast<int64_t>(a));
    }
    return perm;
  }

  // Where a Split or Slice output starts in its input, per axis.
  Result<std::vector<int64_t>> SliceStart(int node, int out) const {
    const Shape& in = V(In(node, 0)).shape;
    std::vector<int64_t> start(in.size(), 0);
    const int rank = static_cast<int>(in.size());
    if (IsOp(node, "Split")) {
      int64_t axis = N(node).IntAttr("axis", 0);
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank) return Fail(node, "axis out of range");
      for (int o : N(node).outputs) {
        if (o == out) break;
        if (o >= 0) start[axis] += V(o).shape[axis];
      }
      return start;
    }
    auto ints = [&](size_t k) -> std::optional<std::vector<int64_t>> {
      const int value = In(node, k);
      if (value < 0) return std::vector<int64_t>{};
      if (V(value).kind != ValueKind::kConstant || !V(value).constant) return std::nullopt;
      return V(value).constant->ints;
    };
    const auto starts = ints(1), axes = ints(3), steps = ints(4);
    if (!starts || !axes || !steps || N(node).inputs.size() < 3) {
      return Fail(node, "starts, axes and steps must be constants");
    }
    for (size_t i = 0; i < starts->size(); ++i) {
      int64_t axis = axes->empty() ? static_cast<int64_t>(i) : (*axes)[i];
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank) return Fail(node, "axis out of range");
      if (!steps->empty() && (*steps)[i] != 1) return Fail(node, "only steps of 1 are views");
      int64_t s = (*starts)[i];
      if (s < 0) s += in[axis];
      start[axis] = std::clamp<int64_t>(s, 0, in[axis]);
    }
    return start;
  }

  // Walks back from a MatMul operand to the spec input it views; scalar scalings on the way
  // become score steps (Q, K) or the output scale (V).
  Result<std::pair<int, std::vector<ViewStep>>> Trace(int value, bool is_v, std::string_view what) {
    std::vector<ViewStep> steps;
    while (true) {
      auto it = input_of_.find(value);
      if (it != input_of_.end()) return std::make_pair(it->second, std::move(steps));
      const int p = V(value).producer;
      if (p < 0) {
        return InvalidArgument(
            fmt::format("{} ({}) is a constant; the kernel reads Q, K and V from spec inputs", what,
                        V(value).name));
      }
      visited_.insert(p);
      const std::string& op = N(p).op_type;
      ViewStep step{p, In(p, 0), value, {}};
      if (op == "Transpose" || (IsReshapeLike(op) && op != "Cast") ||
          (op == "Cast" && CastsBetweenFloats(p))) {
        steps.push_back(step);
      } else if (op == "Split" || op == "Slice") {
        KF_ASSIGN_OR_RETURN(step.slice_start, SliceStart(p, value));
        steps.push_back(step);
      } else if ((op == "Mul" || op == "Div") && N(p).inputs.size() == 2) {
        std::optional<double> c = ScalarConstant(In(p, 1));
        int next = In(p, 0);
        if (!c && op == "Mul") {
          c = ScalarConstant(In(p, 0));
          next = In(p, 1);
        }
        if (!c) return Fail(p, fmt::format("scales {} by something other than a scalar", what));
        const std::string sign = op == "Mul" ? "*" : "/";
        if (is_v) {
          plan_.out_scale = op == "Mul" ? plan_.out_scale * *c : plan_.out_scale / *c;
        } else {
          pre_steps_.push_back(fmt::format("s = s {} {};", sign, FloatLiteral(*c)));
        }
        pre_ops_.push_back(fmt::format("{} on {}", op, what));
        value = next;
        continue;
      } else {
        return Fail(p, fmt::format("is not a view the kernel can follow to {}'s input", what));
      }
      value = step.in;
    }
  }

  // `index` of a chain's last value mapped back to the flat offset in the chain's input.
  int64_t OffsetInInput(const std::vector<ViewStep>& steps, int input_value, Index4 index4) const {
    std::vector<int64_t> index(index4.begin(), index4.end());
    for (const ViewStep& step : steps) {
      const std::string& op = N(step.node).op_type;
      if (op == "Transpose") {
        const std::vector<int64_t> perm = Perm(step.node, index.size());
        std::vector<int64_t> in(index.size());
        for (size_t a = 0; a < index.size(); ++a) in[perm[a]] = index[a];
        index = std::move(in);
      } else if (op == "Split" || op == "Slice") {
        for (size_t a = 0; a < index.size(); ++a) index[a] += step.slice_start[a];
      } else {
        index = Unflatten(Flatten(index, V(step.out).shape), V(step.in).shape);
      }
    }
    return Flatten(index, V(input_value).shape);
  }

  // The strides that reproduce `offset_of` over the sizes, checked on the corners, the middle
  // and pseudo-random points of every axis.
  static std::optional<Affine> AffineOf(const std::function<int64_t(Index4)>& offset_of,
                                        const Index4& sizes) {
    Affine a;
    a.offset = offset_of({0, 0, 0, 0});
    for (int r = 0; r < 4; ++r) {
      Index4 unit = {0, 0, 0, 0};
      unit[r] = 1;
      if (sizes[r] > 1) a.stride[r] = offset_of(unit) - a.offset;
    }
    auto matches = [&](const Index4& i) {
      int64_t expect = a.offset;
      for (int r = 0; r < 4; ++r) expect += i[r] * a.stride[r];
      return offset_of(i) == expect;
    };
    std::array<std::vector<int64_t>, 4> picks;
    for (int r = 0; r < 4; ++r) picks[r] = {0, sizes[r] / 2, sizes[r] - 1};
    for (int64_t b : picks[0]) {
      for (int64_t h : picks[1]) {
        for (int64_t s : picks[2]) {
          for (int64_t d : picks[3]) {
            if (!matches({b, h, s, d})) return std::nullopt;
          }
        }
      }
    }
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int k = 0; k < 512; ++k) {
      Index4 i;
      for (int r = 0; r < 4; ++r) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        i[r] = static_cast<int64_t>((state >> 33) % static_cast<uint64_t>(sizes[r]));
      }
      if (!matches(i)) return std::nullopt;
    }
    return a;
  }

  // The head split of a packed operand: the first Reshape from the input that ends in
  // [heads, head_dim], and which of the two its constant fixes (-1 marks the derived one).
  void HeadSplit(const std::vector<ViewStep>& steps, HeadOperand& op) const {
    op.fixed_heads = plan_.heads;
    op.fixed_head_dim = plan_.head_dim;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      if (!IsOp(it->node, "Reshape")) continue;
      const Shape& out = V(it->out).shape;
      const int shape_value = In(it->node, 1);
      if (out.size() < 2 || out[out.size() - 2] != plan_.heads || out.back() != plan_.head_dim ||
          shape_value < 0 || !V(shape_value).constant ||
          V(shape_value).constant->ints.size() != out.size()) {
        return;
      }
      const std::vector<int64_t>& c = V(shape_value).constant->ints;
      const int64_t heads = c[c.size() - 2], dim = c.back();
      if (heads == -1 && dim > 0) op.fixed_heads = 0;
      if (dim == -1 && heads > 0) op.fixed_head_dim = 0;
      return;
    }
  }

  Result<HeadOperand> HeadView(int value, bool transposed, std::string_view what) {
    KF_ASSIGN_OR_RETURN(auto traced, Trace(value, what == "V", what));
    const auto& [input, steps] = traced;
    const int input_value = g_.inputs[input];
    const Shape& shape = V(input_value).shape;
    const Index4 sizes = {plan_.batch, plan_.heads, what == "Q" ? plan_.seq_q : plan_.seq_kv,
                          plan_.head_dim};
    const std::optional<Affine> a = AffineOf(
        [&](Index4 i) {
          if (transposed) std::swap(i[kS], i[kD]);
          return OffsetInInput(steps, input_value, i);
        },
        sizes);
    const Status not_strided = InvalidArgument(
        fmt::format("{}'s views of {} {} are not one strided [batch, heads, seq, head_dim] view",
                    what, V(input_value).name, planner::ShapeToString(shape)));
    if (!a) return not_strided;
    auto stride_is = [&](int role, int64_t stride) {
      return sizes[role] == 1 || a->stride[role] == stride;
    };
    HeadOperand op;
    op.input = input;
    op.rank = static_cast<int>(shape.size());
    if (shape.size() == 4 && a->offset == 0) {
      const std::vector<int64_t> dense = DenseStrides(shape);
      std::array<int, 4> axis = {0, 1, 2, 3};
      do {
        bool ok = true;
        for (int role = 0; role < 4; ++role) {
          ok = ok && shape[axis[role]] == sizes[role] && stride_is(role, dense[axis[role]]);
        }
        if (ok) {
          op.axis = axis;
          return op;
        }
      } while (std::next_permutation(axis.begin(), axis.end()));
      return not_strided;
    }
    if (shape.size() != 2 && shape.size() != 3) return not_strided;
    const int64_t width = shape.back();
    const int64_t hidden = plan_.heads * plan_.head_dim;
    const int seq_axis = static_cast<int>(shape.size()) - 2;
    const bool packed = shape[seq_axis] == sizes[kS] &&
                        (shape.size() == 3 ? shape[0] == sizes[kB] : sizes[kB] == 1) &&
                        width % hidden == 0 && a->offset % hidden == 0 && stride_is(kD, 1) &&
                        stride_is(kH, plan_.head_dim) && stride_is(kS, width) &&
                        stride_is(kB, sizes[kS] * width);
    if (!packed) return not_strided;
    op.packed = true;
    op.part = static_cast<int>(a->offset / hidden);
    op.parts = static_cast<int>(width / hidden);
    op.axis[kB] = shape.size() == 3 ? 0 : -1;
    op.axis[kS] = seq_axis;
    HeadSplit(steps, op);
    return op;
  }

  // ---- the output ----

  Status OutputLayout(int av) {
    std::vector<ViewStep> steps;
    int cur = Out(av);
    while (cur != g_.outputs[0]) {
      KF_ASSIGN_OR_RETURN(const int n, OnlyReader(cur));
      visited_.insert(n);
      const std::string& op = N(n).op_type;
      if (!(op == "Transpose" || (IsReshapeLike(op) && op != "Cast") ||
            (op == "Cast" && CastsBetweenFloats(n)))) {
        return Fail(n, "is not a view of the attention result the kernel can write");
      }
      steps.push_back({n, cur, Out(n), {}});
      cur = Out(n);
    }
    const Shape& out = V(cur).shape;
    const int64_t b = plan_.batch, h = plan_.heads, s = plan_.seq_q, d = plan_.head_dim;
    const std::optional<Affine> a = AffineOf(
        [&](Index4 i) {
          std::vector<int64_t> index(i.begin(), i.end());
          for (const ViewStep& step : steps) {
            if (IsOp(step.node, "Transpose")) {
              const std::vector<int64_t> perm = Perm(step.node, index.size());
              std::vector<int64_t> next(index.size());
              for (size_t k = 0; k < index.size(); ++k) next[k] = index[perm[k]];
              index = std::move(next);
            } else {
              index = Unflatten(Flatten(index, V(step.in).shape), V(step.out).shape);
            }
          }
          return Flatten(index, out);
        },
        {b, h, s, d});
    auto is = [&](const Index4& stride) {
      if (!a || a->offset != 0) return false;
      const Index4 sizes = {b, h, s, d};
      for (int r = 0; r < 4; ++r) {
        if (sizes[r] > 1 && a->stride[r] != stride[r]) return false;
      }
      return true;
    };
    if (is({s * h * d, d, h * d, 1})) {
      plan_.out_heads_major = false;
    } else if (is({h * s * d, s * d, d, 1})) {
      plan_.out_heads_major = true;
    } else {
      return InvalidArgument(fmt::format(
          "the output {} {} is neither [batch, seq, heads * head_dim] nor [batch, heads, seq, "
          "head_dim] in memory",
          V(cur).name, planner::ShapeToString(out)));
    }
    plan_.output_rank = static_cast<int>(out.size());
    return Status::Ok();
  }

  Status Types() {
    const DType q = V(g_.inputs[plan_.q.input]).dtype;
    for (const HeadOperand* op : {&plan_.k, &plan_.v}) {
      if (V(g_.inputs[op->input]).dtype != q) {
        return InvalidArgument("Q, K and V must have one dtype");
      }
    }
    if (!IsKernelFloat(q)) {
      return InvalidArgument(fmt::format("Q, K and V are {}; the kernel reads f32, f16 or bf16",
                                         planner::DTypeName(q)));
    }
    const DType out = V(g_.outputs[0]).dtype;
    if (!IsKernelFloat(out)) {
      return InvalidArgument(fmt::format("the output is {}; the kernel writes f32, f16 or bf16",
                                         planner::DTypeName(out)));
    }
    plan_.dtype = q;
    plan_.out_dtype = out;
    for (size_t k = 0; k < g_.inputs.size(); ++k) {
      const int i = static_cast<int>(k);
      const bool used = plan_.q.input == i || plan_.k.input == i || plan_.v.input == i ||
                        std::any_of(plan_.operands.begin(), plan_.operands.end(),
                                    [&](const ScoreOperand& o) { return o.input == i; });
      if (!used) {
        return InvalidArgument(fmt::format("spec input {} is not read", V(g_.inputs[k]).name));
      }
      plan_.input_ranks.push_back(static_cast<int>(V(g_.inputs[k]).shape.size()));
      plan_.input_dtypes.push_back(V(g_.inputs[k]).dtype);
    }
    if (plan_.head_dim > 256) {
      return InvalidArgument(fmt::format("head dim {} is over the kernel's 256", plan_.head_dim));
    }
    return Status::Ok();
  }

  void Describe() {
    std::string layout;
    if (plan_.q.packed && plan_.q.input == plan_.k.input && plan_.q.input == plan_.v.input) {
      layout = "fused QKV";
    } else {
      layout = fmt::format("Q, K, V {} {}", plan_.q.packed ? "packed" : "head-split",
                           plan_.q.input == plan_.k.input ? "(shared input)" : "inputs");
    }
    std::vector<std::string> ops = pre_ops_;
    ops.insert(ops.end(), ops_.begin(), ops_.end());
    plan_.description = fmt::format(
        "attention {}x{}x{}x{} (kv {}) {}, {}, score ops [{}]{}", plan_.batch, plan_.heads,
        plan_.seq_q, plan_.head_dim, plan_.seq_kv, planner::DTypeName(plan_.dtype), layout,
        fmt::join(ops, ", "), plan_.zero_masked_rows ? ", fully masked rows give 0" : "");
  }

  const SpecView& spec_;
  const Graph& g_;
  std::map<int, int> input_of_;         // value id -> spec input position
  std::set<int> visited_;               // nodes accounted for
  std::vector<std::string> pre_steps_;  // scalings of Q and K, applied to the scores first
  std::vector<std::string> ops_;        // the score ops, for the description
  std::vector<std::string> pre_ops_;    // the scalings of Q, K and V, for the description
  AttentionPlan plan_;
};

}  // namespace

Result<AttentionPlan> AnalyzeAttention(const SpecView& spec) {
  if (spec.graph == nullptr) return InvalidArgument("the spec has no graph");
  return AttentionAnalyzer(spec).Run();
}

}  // namespace kfleet::agents
