// Partition, in phases; each later phase only picks up what earlier ones left:
//   1. every node starts as its own group, classified by op (unsupported nodes stay opaque);
//   2. named patterns become one group each: attention, decomposed layernorm / rmsnorm, GELU
//      (erf and tanh forms) and SiLU subgraphs;
//   3. matmul-like anchors take their operand layouts (views, transposes) and walk their
//      single-consumer epilogue (views, bias, activations, residual add, cast, scale);
//   4. reductions and norms take their elementwise prologue and epilogue;
//   5. elementwise ops of the same output shape merge into maximal chains;
//   6. leftover views join their producer (when they are its only consumer) or their consumer;
//      what remains is a free "view" group.
// Every merge is refused when it would close a cycle in the group graph.
#include "planner/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <initializer_list>
#include <numbers>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kfleet::planner {
namespace {

enum class Role {
  kOpaque,
  kMatmul,  // MatMul / Gemm / Conv / ConvTranspose and what they absorbed
  kAttention,
  kNorm,  // a normalization: LayerNormalization op or a decomposed pattern
  kReduce,
  kSoftmax,
  kPool,
  kElementwise,
  kActivation,  // a recognized activation subgraph (GELU, SiLU) or the Gelu op
  kView,
  kOther,  // data movement and everything else: named after the op
};

bool IsOneOf(std::string_view op, std::initializer_list<std::string_view> ops) {
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

bool IsViewOp(std::string_view op) {
  return IsOneOf(op, {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"});
}

bool IsMatmulOp(std::string_view op) {
  return IsOneOf(op, {"MatMul", "Gemm", "Conv", "ConvTranspose"});
}

bool IsElementwiseOp(std::string_view op) {
  // Arithmetic, comparisons and logic, unary math, activations, per-element conversions.
  return IsOneOf(op, {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Sum", "Mean"}) ||
         IsOneOf(op, {"And", "Or", "Xor", "Not", "Equal", "Less", "Greater", "LessOrEqual",
                      "GreaterOrEqual", "Where"}) ||
         IsOneOf(op, {"Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Sin", "Cos", "Tan",
                      "Floor", "Ceil", "Round", "Sign", "Erf", "IsNaN", "IsInf"}) ||
         IsOneOf(op, {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
                      "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
                      "Clip"}) ||
         // Dropout is the identity at inference; BatchNormalization a per-channel affine.
         IsOneOf(op, {"Cast", "CastLike", "Dropout", "BatchNormalization"});
}

bool IsReduceOp(std::string_view op) {
  return IsOneOf(
      op, {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"});
}

bool IsPoolOp(std::string_view op) {
  return IsOneOf(op, {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                      "GlobalLpPool"});
}

// "LogSoftmax" -> "log_softmax", "GatherND" -> "gather_nd": family names are lower case.
std::string SnakeCase(std::string_view op) {
  std::string out;
  for (size_t i = 0; i < op.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(op[i]);
    if (std::isupper(c) && i > 0) {
      unsigned char prev = static_cast<unsigned char>(op[i - 1]);
      bool next_lower = i + 1 < op.size() && std::islower(static_cast<unsigned char>(op[i + 1]));
      if (std::islower(prev) || std::isdigit(prev) || (std::isupper(prev) && next_lower)) {
        out.push_back('_');
      }
    }
    out.push_back(static_cast<char>(std::tolower(c)));
  }
  return out;
}

std::string NormName(std::string_view op) {
  if (op == "LayerNormalization") return "layernorm";
  if (op == "RMSNormalization" || op == "SimplifiedLayerNormalization") return "rmsnorm";
  if (op == "InstanceNormalization") return "instancenorm";
  if (op == "GroupNormalization") return "groupnorm";
  if (op == "LpNormalization") return "lpnorm";
  return "";
}

bool Near(double value, double target, double relative = 1e-3) {
  return std::abs(value - target) <= relative * std::max(1.0, std::abs(target));
}

struct Group {
  std::vector<int> nodes;
  Role role = Role::kOther;
  std::string name;  // family for kMatmul (base), kNorm, kActivation, kSoftmax, kOther
  std::vector<std::string> epilogue;  // kMatmul: one tag per fused epilogue op, in order
  int anchor = -1;
  bool alive = true;
};

// A pattern found on single-node groups: its nodes and the one value it hands on.
struct Pattern {
  std::vector<int> nodes;
  int exit = -1;
};

class Partitioner {
 public:
  explicit Partitioner(const Graph& graph) : graph_(graph) {}

  Result<std::vector<FusionGroup>> Run() {
    graph_output_.assign(graph_.values.size(), false);
    for (int v : graph_.outputs) {
      if (v >= 0) graph_output_[v] = true;
    }
    Seed();
    MatchPatterns();
    GrowMatmulGroups();
    GrowReductionGroups();
    MergeElementwiseChains();
    AttachViews();
    std::vector<FusionGroup> result = Finish();
    KF_RETURN_IF_ERROR(CheckPartition(graph_, result).WithContext("partition"));
    return result;
  }

 private:
  // ---- graph queries ----

  const Node& N(int node) const { return graph_.nodes[node]; }
  const Value& V(int value) const { return graph_.values[value]; }
  int Producer(int value) const { return value >= 0 ? V(value).producer : -1; }
  bool IsOp(int node, std::string_view op) const { return node >= 0 && N(node).op_type == op; }
  bool IsParam(int value) const {
    return value >= 0 &&
           (V(value).kind == ValueKind::kWeight || V(value).kind == ValueKind::kConstant);
  }
  // A node's k-th input, -1 when it is omitted or absent.
  int In(int node, size_t k) const { return k < N(node).inputs.size() ? N(node).inputs[k] : -1; }
  int Out(int node) const { return N(node).outputs[0]; }

  std::vector<int> ConsumerNodes(int value) const {
    std::vector<int> out = V(value).consumers;
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  // The node that reads `value` when it is the value's only use; -1 otherwise.
  int OnlyConsumer(int value) const {
    if (value < 0 || graph_output_[value]) return -1;
    std::vector<int> consumers = ConsumerNodes(value);
    return consumers.size() == 1 ? consumers[0] : -1;
  }

  std::optional<double> ScalarConstant(int value) const {
    if (value < 0 || V(value).kind != ValueKind::kConstant || !V(value).constant) return {};
    if (NumElements(V(value).shape) != 1) return {};
    const ConstantData& data = *V(value).constant;
    if (!data.floats.empty()) return data.floats[0];
    if (!data.ints.empty()) return static_cast<double>(data.ints[0]);
    return {};
  }

  // A constant stored in bf16 keeps 8 significant bits (sqrt(2/pi) becomes 0.796875), so its
  // match is looser; f16 and wider keep the 1e-3 the patterns were written with.
  bool IsConstantNear(int value, double target) const {
    std::optional<double> c = ScalarConstant(value);
    const double relative = V(value).dtype == DType::kBF16 ? 4e-3 : 1e-3;
    return c && Near(*c, target, relative);
  }

  // For a two-input node reading `value`, the other input; -1 when the node does not read it.
  int OtherOperand(int node, int value) const {
    const Node& n = N(node);
    if (n.inputs.size() != 2) return -1;
    if (n.inputs[0] == value) return n.inputs[1];
    if (n.inputs[1] == value) return n.inputs[0];
    return -1;
  }

  // A binary op `op` of `value` and a scalar constant near `target`.
  bool IsBinaryWithConstant(int node, std::string_view op, int value, double target) const {
    return IsOp(node, op) && IsConstantNear(OtherOperand(node, value), target);
  }

  // ---- groups ----

  int G(int node) const { return group_of_[node]; }
  bool IsSingle(int group) const { return groups_[group].nodes.size() == 1; }
  bool InGroup(int node, int group) const { return group_of_[node] == group; }

  bool AllConsumersIn(int value, int group) const {
    if (graph_output_[value]) return false;
    for (int c : V(value).consumers) {
      if (!InGroup(c, group)) return false;
    }
    return true;
  }

  // Values the group reads from outside, constants excepted (they travel with the kernel), in
  // first use order.
  std::vector<int> Reads(int group) const {
    std::vector<int> nodes = groups_[group].nodes;
    std::sort(nodes.begin(), nodes.end());
    std::vector<int> out;
    for (int n : nodes) {
      for (int v : N(n).inputs) {
        if (v < 0) continue;
        if (Producer(v) >= 0 && InGroup(Producer(v), group)) continue;
        if (V(v).kind == ValueKind::kConstant) continue;
        if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
      }
    }
    return out;
  }

  // Values produced in the group and used outside it (or graph outputs), production order.
  std::vector<int> Writes(int group) const {
    std::vector<int> nodes = groups_[group].nodes;
    std::sort(nodes.begin(), nodes.end());
    std::vector<int> out;
    for (int n : nodes) {
      for (int v : N(n).outputs) {
        if (v < 0) continue;
        bool used_outside = graph_output_[v];
        for (int c : V(v).consumers) used_outside = used_outside || !InGroup(c, group);
        if (used_outside) out.push_back(v);
      }
    }
    return out;
  }

  // The single value a group hands on; -1 when it has none or several.
  int ExitValue(int group) const {
    std::vector<int> writes = Writes(group);
    return writes.size() == 1 ? writes[0] : -1;
  }

  // Groups that read a value `group` writes (successors) or write a value it reads.
  std::set<int> Neighbours(int group, bool successors) const {
    std::set<int> out;
    for (int n : groups_[group].nodes) {
      for (int v : successors ? N(n).outputs : N(n).inputs) {
        if (v < 0) continue;
        if (successors) {
          for (int c : V(v).consumers) out.insert(G(c));
        } else if (Producer(v) >= 0) {
          out.insert(G(Producer(v)));
        }
      }
    }
    out.erase(group);
    return out;
  }

  // Kahn's algorithm over the live groups; the order always exists because no merge closes a
  // cycle.
  void RecomputeRanks() {
    std::vector<int> pending(groups_.size(), 0);
    std::vector<std::set<int>> successors(groups_.size());
    std::vector<int> ready;
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (!groups_[g].alive) continue;
      successors[g] = Neighbours(static_cast<int>(g), true);
      for (int s : successors[g]) ++pending[s];
    }
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (groups_[g].alive && pending[g] == 0) ready.push_back(static_cast<int>(g));
    }
    int next = 0;
    while (!ready.empty()) {
      int g = ready.back();
      ready.pop_back();
      rank_[g] = next++;
      for (int s : successors[g]) {
        if (--pending[s] == 0) ready.push_back(s);
      }
    }
    ranks_valid_ = true;
  }

  // True when merging `members` would leave a path that goes out of the merged group and comes
  // back in: the merged group would then have to run both before and after another group.
  // Such a path only visits groups ranked between the members, so the search stops there.
  bool CreatesCycle(const std::vector<int>& members) {
    if (!ranks_valid_) RecomputeRanks();
    int last = 0;
    std::vector<char> member(groups_.size(), 0);
    for (int g : members) {
      member[g] = 1;
      last = std::max(last, rank_[g]);
    }
    std::vector<char> seen(groups_.size(), 0);
    std::vector<int> stack;
    for (int g : members) {
      for (int s : Neighbours(g, true)) {
        if (!member[s] && !seen[s] && rank_[s] < last) {
          seen[s] = 1;
          stack.push_back(s);
        }
      }
    }
    while (!stack.empty()) {
      int g = stack.back();
      stack.pop_back();
      for (int s : Neighbours(g, true)) {
        if (member[s]) return true;
        if (!seen[s] && rank_[s] < last) {
          seen[s] = 1;
          stack.push_back(s);
        }
      }
    }
    return false;
  }

  // Moves the nodes of `others` into `into` unless that closes a cycle; returns whether it did.
  bool Merge(int into, const std::vector<int>& others) {
    std::vector<int> members = {into};
    for (int g : others) {
      if (std::find(members.begin(), members.end(), g) == members.end()) members.push_back(g);
    }
    if (members.size() == 1) return true;
    if (!ranks_valid_) RecomputeRanks();
    // Most merges join a group to the only group it feeds, or to the only group that feeds it.
    // No cycle can pass through such a pair, and the merged group keeps a valid rank without a
    // search, which keeps partitioning linear on long chains.
    int merged_rank = -1;
    if (members.size() == 2) {
      int first = rank_[members[0]] < rank_[members[1]] ? members[0] : members[1];
      int second = first == members[0] ? members[1] : members[0];
      std::set<int> after_first = Neighbours(first, true);
      std::set<int> before_second = Neighbours(second, false);
      if (after_first.empty() || after_first == std::set<int>{second}) {
        merged_rank = rank_[second];
      } else if (before_second.empty() || before_second == std::set<int>{first}) {
        merged_rank = rank_[first];
      }
    }
    if (merged_rank < 0 && CreatesCycle(members)) return false;
    for (size_t i = 1; i < members.size(); ++i) {
      Group& from = groups_[members[i]];
      for (int n : from.nodes) {
        group_of_[n] = into;
        groups_[into].nodes.push_back(n);
      }
      from.nodes.clear();
      from.alive = false;
    }
    if (merged_rank >= 0) {
      rank_[into] = merged_rank;
    } else {
      ranks_valid_ = false;
    }
    return true;
  }

  // ---- phase 1: one group per node ----

  void Seed() {
    groups_.clear();
    group_of_.assign(graph_.nodes.size(), -1);
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      const Node& node = graph_.nodes[i];
      Group g;
      g.nodes = {static_cast<int>(i)};
      g.anchor = static_cast<int>(i);
      const std::string& op = node.op_type;
      if (!node.supported) {
        g.role = Role::kOpaque;
      } else if (IsMatmulOp(op)) {
        g.role = Role::kMatmul;
        g.name = op == "Conv" ? "conv" : op == "ConvTranspose" ? "conv_transpose" : "gemm";
        if (node.inputs.size() > 2 && node.inputs[2] >= 0) {
          // Gemm's C and Conv's B: a parameter is a bias, an activation a residual.
          g.epilogue.push_back(IsParam(node.inputs[2]) ? "bias" : "add");
        }
      } else if (op == "Gelu") {
        g.role = Role::kActivation;
        g.name = node.StringAttr("approximate", "none") == "tanh" ? "gelu_tanh" : "gelu_erf";
      } else if (IsViewOp(op)) {
        g.role = Role::kView;
      } else if (IsElementwiseOp(op)) {
        g.role = Role::kElementwise;
      } else if (!NormName(op).empty()) {
        g.role = Role::kNorm;
        g.name = NormName(op);
      } else if (IsReduceOp(op)) {
        g.role = Role::kReduce;
      } else if (op == "Softmax" || op == "LogSoftmax") {
        g.role = Role::kSoftmax;
        g.name = SnakeCase(op);
      } else if (IsPoolOp(op)) {
        g.role = Role::kPool;
      } else {
        g.role = Role::kOther;
        g.name = SnakeCase(op);
      }
      group_of_[i] = static_cast<int>(i);
      groups_.push_back(std::move(g));
    }
    // Nodes come in topological order, so their indices rank the single-node groups.
    rank_.resize(groups_.size());
    for (size_t i = 0; i < rank_.size(); ++i) rank_[i] = static_cast<int>(i);
    ranks_valid_ = true;
  }

  // ---- phase 2: named patterns ----

  // A node no pattern, anchor or opaque group has taken yet.
  bool Unclaimed(int node) const {
    return node >= 0 && IsSingle(G(node)) && groups_[G(node)].role != Role::kOpaque;
  }

  // Makes a pattern one group when its nodes are free, only its exit value leaves it, and
  // the merge closes no cycle.
  bool FormPattern(const Pattern& p, Role role, std::string name, int anchor) {
    std::set<int> members(p.nodes.begin(), p.nodes.end());
    if (members.size() != p.nodes.size()) return false;
    for (int n : members) {
      if (!Unclaimed(n)) return false;
      for (int v : N(n).outputs) {
        if (v < 0 || v == p.exit) continue;
        if (graph_output_[v]) return false;
        for (int c : V(v).consumers) {
          if (members.count(c) == 0) return false;
        }
      }
    }
    std::vector<int> others;
    for (int n : members) others.push_back(G(n));
    int into = G(anchor);
    if (!Merge(into, others)) return false;
    Group& g = groups_[into];
    g.role = role;
    g.name = std::move(name);
    g.epilogue.clear();
    g.anchor = anchor;
    return true;
  }

  void MatchPatterns() {
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      if (!Unclaimed(n) || !IsOp(n, "Softmax")) continue;
      std::optional<Pattern> p = MatchAttention(n);
      // The anchor is the first matmul (Q K^T), which the pattern lists first.
      if (p) FormPattern(*p, Role::kAttention, "attention", p->nodes.front());
    }
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      if (!Unclaimed(n) || !IsOp(n, "ReduceMean")) continue;
      if (std::optional<Pattern> p = MatchLayerNorm(n)) {
        FormPattern(*p, Role::kNorm, "layernorm", n);
      }
    }
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      if (!Unclaimed(n) || !IsOp(n, "ReduceMean")) continue;
      if (std::optional<Pattern> p = MatchRmsNorm(n)) FormPattern(*p, Role::kNorm, "rmsnorm", n);
    }
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      if (!Unclaimed(n)) continue;
      if (IsOp(n, "Erf")) {
        if (std::optional<Pattern> p = MatchGeluErf(n)) {
          FormPattern(*p, Role::kActivation, "gelu_erf", n);
        }
      } else if (IsOp(n, "Tanh")) {
        if (std::optional<Pattern> p = MatchGeluTanh(n)) {
          FormPattern(*p, Role::kActivation, "gelu_tanh", n);
        }
      } else if (IsOp(n, "Sigmoid")) {
        if (std::optional<Pattern> p = MatchSilu(n)) FormPattern(*p, Role::kActivation, "silu", n);
      }
    }
  }

  // Walks back from the softmax input through score ops (scale, mask) to the Q K^T matmul.
  // Appends the score ops to `path`; returns the matmul or -1.
  int TraceScores(int value, int reader, std::vector<int>& path, int depth) const {
    int p = Producer(value);
    if (p < 0 || depth > 6 || ConsumerNodes(value) != std::vector<int>{reader}) return -1;
    if (graph_output_[value] || !Unclaimed(p)) return -1;
    if (IsOp(p, "MatMul")) return p;
    if (!IsOneOf(N(p).op_type, {"Mul", "Div", "Add", "Sub", "Where"})) return -1;
    for (int in : N(p).inputs) {
      if (in < 0 || Producer(in) < 0) continue;
      int m = TraceScores(in, p, path, depth + 1);
      if (m >= 0) {
        path.push_back(p);
        return m;
      }
    }
    return -1;
  }

  // Q, K or V: folds the views, transposes and constant scalings that prepare the operand.
  void AbsorbOperand(int value, std::vector<int>& nodes) const {
    while (true) {
      int p = Producer(value);
      if (p < 0 || !Unclaimed(p) || graph_output_[value]) return;
      for (int c : V(value).consumers) {
        if (std::find(nodes.begin(), nodes.end(), c) == nodes.end()) return;
      }
      const Node& n = N(p);
      int next = -1;
      if (IsViewOp(n.op_type) || n.op_type == "Transpose") {
        next = In(p, 0);
      } else if (n.op_type == "Mul" || n.op_type == "Div") {
        if (ScalarConstant(In(p, 1))) next = In(p, 0);
        if (n.op_type == "Mul" && ScalarConstant(In(p, 0))) next = In(p, 1);
      }
      if (next < 0) return;
      nodes.push_back(p);
      value = next;
    }
  }

  // MatMul -> score ops -> Softmax -> (IsNaN / Where / Cast / Dropout) -> MatMul, with the
  // operand preparation, the Split that produces Q, K and V, and the output transpose / views.
  std::optional<Pattern> MatchAttention(int softmax) const {
    std::vector<int> scores;
    int qk = TraceScores(In(softmax, 0), softmax, scores, 0);
    if (qk < 0 || IsParam(In(qk, 0)) || IsParam(In(qk, 1))) return {};

    std::vector<int> post;
    int av = -1;
    std::vector<int> frontier = {Out(softmax)};
    while (!frontier.empty()) {
      int v = frontier.back();
      frontier.pop_back();
      if (graph_output_[v]) return {};
      for (int c : ConsumerNodes(v)) {
        if (std::find(post.begin(), post.end(), c) != post.end()) continue;
        if (IsOp(c, "MatMul") && In(c, 0) == v && (av < 0 || av == c)) {
          av = c;
        } else if (IsOneOf(N(c).op_type, {"IsNaN", "Where", "Cast", "Dropout"}) && Unclaimed(c) &&
                   post.size() < 4) {
          post.push_back(c);
          frontier.push_back(Out(c));
        } else {
          return {};
        }
      }
    }
    if (av < 0 || !Unclaimed(av) || IsParam(In(av, 1))) return {};

    Pattern p;
    p.nodes.push_back(qk);
    p.nodes.insert(p.nodes.end(), scores.begin(), scores.end());
    p.nodes.push_back(softmax);
    p.nodes.insert(p.nodes.end(), post.begin(), post.end());
    p.nodes.push_back(av);
    AbsorbOperand(In(qk, 0), p.nodes);
    AbsorbOperand(In(qk, 1), p.nodes);
    AbsorbOperand(In(av, 1), p.nodes);

    // The Split that produces Q, K and V belongs here when all its outputs stay inside.
    std::set<int> splits;
    for (int n : p.nodes) {
      for (int v : N(n).inputs) {
        if (IsOp(Producer(v), "Split")) splits.insert(Producer(v));
      }
    }
    for (int s : splits) {
      bool inside = Unclaimed(s);
      for (int v : N(s).outputs) {
        if (v < 0) continue;
        inside = inside && !graph_output_[v];
        for (int c : V(v).consumers) {
          inside = inside && std::find(p.nodes.begin(), p.nodes.end(), c) != p.nodes.end();
        }
      }
      if (inside) p.nodes.push_back(s);
    }

    p.exit = Out(av);
    while (true) {
      int c = OnlyConsumer(p.exit);
      if (c < 0 || !Unclaimed(c) || !(IsViewOp(N(c).op_type) || IsOp(c, "Transpose"))) break;
      p.nodes.push_back(c);
      p.exit = Out(c);
    }
    return p;
  }

  // The gamma / beta affine after a normalization, when present.
  void AbsorbAffine(Pattern& p) const {
    int mul = OnlyConsumer(p.exit);
    if (!IsOp(mul, "Mul") || !Unclaimed(mul) || !IsParam(OtherOperand(mul, p.exit))) return;
    p.nodes.push_back(mul);
    p.exit = Out(mul);
    int add = OnlyConsumer(p.exit);
    if (!IsOp(add, "Add") || !Unclaimed(add) || !IsParam(OtherOperand(add, p.exit))) return;
    p.nodes.push_back(add);
    p.exit = Out(add);
  }

  // x / sqrt(s) as Div(x, sqrt), Mul(x, Reciprocal(sqrt)) or Mul(x, Div(1, sqrt)), where
  // `sqrt_out` is the Sqrt's output. Appends the nodes and returns the value x / sqrt(s).
  int MatchScaleBySqrt(int sqrt_out, int x, std::vector<int>& nodes) const {
    int c = OnlyConsumer(sqrt_out);
    if (!Unclaimed(c)) return -1;
    if (IsOp(c, "Div") && In(c, 0) == x && In(c, 1) == sqrt_out) {
      nodes.push_back(c);
      return Out(c);
    }
    bool reciprocal = IsOp(c, "Reciprocal") ||
                      (IsOp(c, "Div") && In(c, 1) == sqrt_out && IsConstantNear(In(c, 0), 1.0));
    if (!reciprocal) return -1;
    int mul = OnlyConsumer(Out(c));
    if (!IsOp(mul, "Mul") || !Unclaimed(mul) || OtherOperand(mul, Out(c)) != x) return -1;
    nodes.push_back(c);
    nodes.push_back(mul);
    return Out(mul);
  }

  // The square of `x` feeding a ReduceMean: Pow(x, 2) or Mul(x, x).
  bool IsSquareOf(int node, int x) const {
    if (IsOp(node, "Pow")) return In(node, 0) == x && IsConstantNear(In(node, 1), 2);
    return IsOp(node, "Mul") && N(node).inputs.size() == 2 && In(node, 0) == x && In(node, 1) == x;
  }

  // ReduceMean -> Sub -> Pow/Mul -> ReduceMean -> Add(eps) -> Sqrt -> Div (or Reciprocal + Mul)
  // -> Mul(gamma) -> Add(beta).
  std::optional<Pattern> MatchLayerNorm(int mean_node) const {
    int x = In(mean_node, 0);
    int mean = Out(mean_node);
    int sub = OnlyConsumer(mean);
    if (!IsOp(sub, "Sub") || !Unclaimed(sub) || In(sub, 0) != x || In(sub, 1) != mean) {
      return {};
    }
    int d = Out(sub);
    std::vector<int> users = ConsumerNodes(d);
    if (graph_output_[d] || users.size() != 2) return {};
    int square = IsSquareOf(users[0], d) ? users[0] : IsSquareOf(users[1], d) ? users[1] : -1;
    if (!Unclaimed(square)) return {};
    int var_node = OnlyConsumer(Out(square));
    if (!IsOp(var_node, "ReduceMean") || !Unclaimed(var_node)) return {};
    int eps = OnlyConsumer(Out(var_node));
    if (!IsOp(eps, "Add") || !Unclaimed(eps) || !ScalarConstant(OtherOperand(eps, Out(var_node)))) {
      return {};
    }
    int sqrt = OnlyConsumer(Out(eps));
    if (!IsOp(sqrt, "Sqrt") || !Unclaimed(sqrt)) return {};
    Pattern p;
    p.nodes = {mean_node, sub, square, var_node, eps, sqrt};
    p.exit = MatchScaleBySqrt(Out(sqrt), d, p.nodes);
    if (p.exit < 0) return {};
    AbsorbAffine(p);
    return p;
  }

  // Pow/Mul(x, x) -> ReduceMean -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x) -> Mul(gamma).
  std::optional<Pattern> MatchRmsNorm(int mean_node) const {
    int square = Producer(In(mean_node, 0));
    if (!Unclaimed(square) || OnlyConsumer(Out(square)) != mean_node) return {};
    int x = In(square, 0);
    if (!IsSquareOf(square, x)) return {};
    int eps = OnlyConsumer(Out(mean_node));
    if (!IsOp(eps, "Add") || !Unclaimed(eps) ||
        !ScalarConstant(OtherOperand(eps, Out(mean_node)))) {
      return {};
    }
    int sqrt = OnlyConsumer(Out(eps));
    if (!IsOp(sqrt, "Sqrt") || !Unclaimed(sqrt)) return {};
    Pattern p;
    p.nodes = {square, mean_node, eps, sqrt};
    p.exit = MatchScaleBySqrt(Out(sqrt), x, p.nodes);
    if (p.exit < 0) return {};
    AbsorbAffine(p);
    return p;
  }

  // The shared end of both GELU forms, from a = 1 + erf(..) or 1 + tanh(..):
  // Mul(x, a) -> Mul(0.5), Mul(a, 0.5) -> Mul(x), or Mul(Mul(x, 0.5), a).
  bool MatchGeluTail(int a, int x, Pattern& p) const {
    int m1 = OnlyConsumer(a);
    if (!IsOp(m1, "Mul") || !Unclaimed(m1)) return false;
    int other = OtherOperand(m1, a);
    int m2 = OnlyConsumer(Out(m1));
    if (other == x) {
      if (!IsBinaryWithConstant(m2, "Mul", Out(m1), 0.5) || !Unclaimed(m2)) return false;
      p.nodes.insert(p.nodes.end(), {m1, m2});
      p.exit = Out(m2);
      return true;
    }
    if (IsConstantNear(other, 0.5)) {
      if (!IsOp(m2, "Mul") || !Unclaimed(m2) || OtherOperand(m2, Out(m1)) != x) return false;
      p.nodes.insert(p.nodes.end(), {m1, m2});
      p.exit = Out(m2);
      return true;
    }
    int half = Producer(other);
    if (IsBinaryWithConstant(half, "Mul", x, 0.5) && Unclaimed(half) && OnlyConsumer(other) == m1) {
      p.nodes.insert(p.nodes.end(), {half, m1});
      p.exit = Out(m1);
      return true;
    }
    return false;
  }

  // 0.5 x (1 + erf(x / sqrt(2))), with Div by sqrt(2) or Mul by 1/sqrt(2).
  std::optional<Pattern> MatchGeluErf(int erf) const {
    int scaled = In(erf, 0);
    int pre = Producer(scaled);
    if (!Unclaimed(pre) || OnlyConsumer(scaled) != erf) return {};
    int x = -1;
    if (IsOp(pre, "Div") && IsConstantNear(In(pre, 1), std::sqrt(2.0))) {
      x = In(pre, 0);
    } else if (IsOp(pre, "Mul")) {
      for (int in : N(pre).inputs) {
        if (IsConstantNear(OtherOperand(pre, in), std::sqrt(0.5))) x = in;
      }
    }
    if (x < 0) return {};
    int one = OnlyConsumer(Out(erf));
    if (!IsBinaryWithConstant(one, "Add", Out(erf), 1.0) || !Unclaimed(one)) return {};
    Pattern p;
    p.nodes = {pre, erf, one};
    if (!MatchGeluTail(Out(one), x, p)) return {};
    return p;
  }

  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  std::optional<Pattern> MatchGeluTanh(int tanh) const {
    const double kSqrt2OverPi = std::sqrt(2.0 / std::numbers::pi);
    int scaled = In(tanh, 0);
    int outer = Producer(scaled);
    if (!IsOp(outer, "Mul") || !Unclaimed(outer) || OnlyConsumer(scaled) != tanh) return {};
    int inner = -1;
    for (int in : N(outer).inputs) {
      if (IsConstantNear(OtherOperand(outer, in), kSqrt2OverPi)) inner = in;
    }
    int sum = Producer(inner);
    if (!IsOp(sum, "Add") || !Unclaimed(sum) || OnlyConsumer(inner) != outer) return {};
    for (int cubic_out : N(sum).inputs) {
      int x = OtherOperand(sum, cubic_out);
      int cubic = Producer(cubic_out);
      if (!IsOp(cubic, "Mul") || !Unclaimed(cubic) || OnlyConsumer(cubic_out) != sum) continue;
      for (int pow_out : N(cubic).inputs) {
        int pow = Producer(pow_out);
        if (!IsConstantNear(OtherOperand(cubic, pow_out), 0.044715) || !Unclaimed(pow)) continue;
        if (!IsOp(pow, "Pow") || In(pow, 0) != x || !IsConstantNear(In(pow, 1), 3) ||
            OnlyConsumer(pow_out) != cubic) {
          continue;
        }
        int one = OnlyConsumer(Out(tanh));
        if (!IsBinaryWithConstant(one, "Add", Out(tanh), 1.0) || !Unclaimed(one)) return {};
        Pattern p;
        p.nodes = {pow, cubic, sum, outer, tanh, one};
        if (!MatchGeluTail(Out(one), x, p)) return {};
        return p;
      }
    }
    return {};
  }

  // x * sigmoid(x).
  std::optional<Pattern> MatchSilu(int sigmoid) const {
    int x = In(sigmoid, 0);
    int mul = OnlyConsumer(Out(sigmoid));
    if (!IsOp(mul, "Mul") || !Unclaimed(mul) || OtherOperand(mul, Out(sigmoid)) != x) return {};
    Pattern p;
    p.nodes = {sigmoid, mul};
    p.exit = Out(mul);
    return p;
  }

  // ---- phase 3: matmul anchors ----

  // A bias broadcasts along the last axis ([N], [1,N]) or the channel axis of NCHW ([C,1,1]).
  bool IsBiasShape(int bias, int out) const {
    Shape b = V(bias).shape;
    const Shape& o = V(out).shape;
    while (!b.empty() && b.front() == 1 && b.size() > 1) b.erase(b.begin());
    if (b.size() == 1 && !o.empty() && b[0] == o.back()) return true;
    if (o.size() >= 3 && b.size() == o.size() - 1 && b[0] == o[1]) {
      return std::all_of(b.begin() + 1, b.end(), [](int64_t d) { return d == 1; });
    }
    return false;
  }

  // The epilogue tag of a single elementwise node applied to `cur`; nothing when the node is
  // not an epilogue (a comparison, a Where, a division of something by `cur`, ...).
  std::optional<std::string> EpilogueTag(int node, int cur) const {
    const Node& n = N(node);
    const std::string& op = n.op_type;
    if (IsOneOf(op, {"Add", "Sub", "Mul", "Div"})) {
      int other = OtherOperand(node, cur);
      if (other < 0) return {};
      if (op == "Div" && n.inputs[0] != cur) return {};
      if (IsParam(other)) {
        if (op == "Add") return IsBiasShape(other, cur) ? "bias" : "add";
        if (op == "Sub") return "sub";
        return "scale";
      }
      if (op == "Add") return "add";
      return SnakeCase(op);
    }
    // Unary ops: every input other than `cur` must be a parameter (Clip bounds, PRelu slope).
    if (n.inputs.empty() || n.inputs[0] != cur) return {};
    for (size_t i = 1; i < n.inputs.size(); ++i) {
      if (n.inputs[i] >= 0 && !IsParam(n.inputs[i])) return {};
    }
    if (IsOneOf(op,
                {"Where", "Pow", "Max", "Min", "Mod", "Sum", "Mean", "And", "Or", "Xor", "Not",
                 "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "IsNaN", "IsInf"})) {
      return {};
    }
    if (op == "Clip") {
      std::optional<double> lo = ScalarConstant(In(node, 1));
      std::optional<double> hi = ScalarConstant(In(node, 2));
      if (n.HasAttr("min")) lo = n.FloatAttr("min", 0);
      if (n.HasAttr("max")) hi = n.FloatAttr("max", 0);
      return lo && hi && *lo == 0 && *hi == 6 ? "relu6" : "clip";
    }
    if (op == "BatchNormalization") return "batchnorm";
    if (op == "CastLike") return "cast";
    return SnakeCase(op);
  }

  // Follows `cur` forward while its only reader is a view or an epilogue op of the same shape,
  // moving each into `group`; tags go to the group's epilogue when `record_tags`.
  void GrowEpilogue(int group, int cur, bool record_tags) {
    while (cur >= 0 && !graph_output_[cur]) {
      std::vector<int> readers = ConsumerNodes(cur);
      if (readers.empty()) return;
      int next = G(readers[0]);
      for (int r : readers) {
        if (G(r) != next) return;
      }
      if (next == group) return;
      const Group& c = groups_[next];
      if (c.role == Role::kView && IsSingle(next)) {
        int node = c.nodes[0];
        if (In(node, 0) != cur || !Merge(group, {next})) return;
        cur = Out(node);
        continue;
      }
      std::optional<std::string> tag;
      int exit = -1;
      if (c.role == Role::kActivation) {
        exit = ExitValue(next);
        if (Reads(next) == std::vector<int>{cur}) tag = c.name;
      } else if (c.role == Role::kElementwise && IsSingle(next)) {
        tag = EpilogueTag(c.nodes[0], cur);
        exit = Out(c.nodes[0]);
      }
      if (!tag || exit < 0 || V(exit).shape != V(cur).shape) return;
      if (!Merge(group, {next})) return;
      if (record_tags) groups_[group].epilogue.push_back(*tag);
      cur = exit;
    }
  }

  void GrowMatmulGroups() {
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      int g = G(n);
      if (groups_[g].role != Role::kMatmul || groups_[g].anchor != n) continue;
      // Operand layouts: a transpose or view whose only reader is this matmul.
      for (size_t k = 0; k < 2 && k < N(n).inputs.size(); ++k) {
        int value = N(n).inputs[k];
        while (true) {
          int p = Producer(value);
          if (p < 0 || !IsSingle(G(p)) || !AllConsumersIn(value, g)) break;
          Role role = groups_[G(p)].role;
          bool layout = role == Role::kView || (role == Role::kOther && IsOp(p, "Transpose"));
          if (!layout || !Merge(g, {G(p)})) break;
          value = In(p, 0);
        }
      }
      GrowEpilogue(g, Out(n), true);
    }
  }

  // ---- phase 4: reductions and norms ----

  // An elementwise group whose every output this group reads, and nothing else does.
  bool IsPrologueOf(int producer_group, int group) const {
    Role role = groups_[producer_group].role;
    if (role != Role::kElementwise && role != Role::kActivation) return false;
    if (!IsSingle(producer_group) && role == Role::kElementwise) return false;
    for (int v : Writes(producer_group)) {
      if (!AllConsumersIn(v, group)) return false;
    }
    return true;
  }

  void GrowReductionGroups() {
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      int g = G(n);
      Role role = groups_[g].role;
      if ((role != Role::kNorm && role != Role::kReduce) || groups_[g].anchor != n) continue;
      bool grew = true;
      while (grew) {
        grew = false;
        for (int v : Reads(g)) {
          int p = Producer(v);
          if (p >= 0 && IsPrologueOf(G(p), g) && Merge(g, {G(p)})) {
            grew = true;
            break;
          }
        }
      }
      GrowEpilogue(g, ExitValue(g), false);
    }
  }

  // ---- phase 5: elementwise chains ----

  bool IsChainable(int group) const {
    Role role = groups_[group].role;
    return role == Role::kElementwise || role == Role::kActivation;
  }

  // Elementwise groups only ever merge at equal output shape, so any node's output stands for
  // the whole chain.
  const Shape& ChainShape(int group) const { return V(Out(groups_[group].nodes[0])).shape; }

  void MergeElementwiseChains() {
    bool merged = true;
    while (merged) {
      merged = false;
      for (size_t i = 0; i < graph_.nodes.size(); ++i) {
        int g = G(static_cast<int>(i));
        if (!IsChainable(g)) continue;
        for (int v : N(static_cast<int>(i)).outputs) {
          if (v < 0) continue;
          for (int c : ConsumerNodes(v)) {
            int gc = G(c);
            if (gc == g || !IsChainable(gc) || ChainShape(gc) != ChainShape(g)) continue;
            if (Merge(g, {gc})) {
              groups_[g].role = Role::kElementwise;
              merged = true;
            }
          }
        }
      }
    }
  }

  // ---- phase 6: views ----

  void AttachViews() {
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      int n = static_cast<int>(i);
      int g = G(n);
      if (groups_[g].role != Role::kView || !IsSingle(g)) continue;
      int source = In(n, 0);
      int p = Producer(source);
      if (p < 0 || OnlyConsumer(source) != n || groups_[G(p)].role == Role::kOpaque) continue;
      Merge(G(p), {g});
    }
    for (size_t i = graph_.nodes.size(); i-- > 0;) {
      int g = G(static_cast<int>(i));
      if (groups_[g].role != Role::kView) continue;
      std::set<int> readers;
      for (int v : Writes(g)) {
        for (int c : V(v).consumers) {
          if (!InGroup(c, g)) readers.insert(G(c));
        }
      }
      if (readers.size() != 1) continue;
      int into = *readers.begin();
      if (groups_[into].role != Role::kOpaque) Merge(into, {g});
    }
  }

  // ---- result ----

  std::string Family(const Group& g) const {
    switch (g.role) {
      case Role::kOpaque:
        return "opaque";
      case Role::kMatmul: {
        std::string family = g.name;
        for (const std::string& tag : g.epilogue) family += "+" + tag;
        return family;
      }
      case Role::kAttention:
        return "attention";
      case Role::kReduce:
        return "reduce";
      case Role::kPool:
        return "pool";
      case Role::kElementwise:
        return "elementwise";
      case Role::kView:
        return "view";
      case Role::kNorm:
      case Role::kSoftmax:
      case Role::kActivation:
      case Role::kOther:
        return g.name;
    }
    return g.name;
  }

  std::vector<FusionGroup> Finish() const {
    std::vector<FusionGroup> out;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      const Group& g = groups_[gi];
      if (!g.alive) continue;
      FusionGroup f;
      f.nodes = g.nodes;
      std::sort(f.nodes.begin(), f.nodes.end());
      f.family = Family(g);
      f.inputs = Reads(static_cast<int>(gi));
      f.outputs = Writes(static_cast<int>(gi));
      // A chain is named by its first op that is not a view; the other roles keep the node they
      // grew from.
      f.anchor = g.anchor;
      if (g.role == Role::kView) f.anchor = f.nodes.front();
      if (g.role == Role::kElementwise) {
        auto op = std::find_if(f.nodes.begin(), f.nodes.end(),
                               [&](int n) { return !IsViewOp(N(n).op_type); });
        f.anchor = *op;
      }
      f.opaque = g.role == Role::kOpaque;
      f.free = g.role == Role::kView;
      out.push_back(std::move(f));
    }
    std::sort(out.begin(), out.end(), [](const FusionGroup& a, const FusionGroup& b) {
      return a.nodes.front() < b.nodes.front();
    });
    return out;
  }

  const Graph& graph_;
  std::vector<char> graph_output_;  // per value
  std::vector<Group> groups_;       // indexed by group id; merged-away groups are not alive
  std::vector<int> group_of_;       // per node: its group id
  std::vector<int> rank_;           // per group: its place in a topological order of the groups
  bool ranks_valid_ = false;        // false after a merge that rank_ does not account for
};

}  // namespace

Result<std::vector<FusionGroup>> PartitionGraph(const Graph& graph) {
  // The rules read a supported node's first output without further checks; a graph that lacks
  // it, or names values that do not exist, did not come from the importer.
  const int values = static_cast<int>(graph.values.size());
  for (const Node& node : graph.nodes) {
    bool ok = !node.supported || (!node.outputs.empty() && node.outputs[0] >= 0);
    for (int v : node.inputs) ok = ok && v < values;
    for (int v : node.outputs) ok = ok && v < values;
    if (!ok) {
      return InvalidArgument(
          fmt::format("partition: {} has no first output or names a value that does not exist",
                      DescribeNode(node)));
    }
  }
  return Partitioner(graph).Run();
}

Status CheckPartition(const Graph& graph, const std::vector<FusionGroup>& groups) {
  std::vector<int> group_of(graph.nodes.size(), -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<int>& nodes = groups[g].nodes;
    if (nodes.empty()) return Internal(fmt::format("group {} ({}) is empty", g, groups[g].family));
    for (size_t i = 0; i < nodes.size(); ++i) {
      int n = nodes[i];
      if (n < 0 || n >= static_cast<int>(graph.nodes.size())) {
        return Internal(fmt::format("group {} holds node {}, which does not exist", g, n));
      }
      if (i > 0 && nodes[i - 1] >= n) {
        return Internal(fmt::format("group {} ({}) lists its nodes out of topological order", g,
                                    groups[g].family));
      }
      if (group_of[n] >= 0) {
        return Internal(
            fmt::format("{} is in groups {} and {}", DescribeNode(graph.nodes[n]), group_of[n], g));
      }
      group_of[n] = static_cast<int>(g);
    }
  }
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    if (group_of[n] < 0) {
      return Internal(fmt::format("{} is in no group", DescribeNode(graph.nodes[n])));
    }
  }
  // Kahn's algorithm on the group graph: every group must become ready.
  std::vector<std::set<int>> successors(groups.size());
  std::vector<int> pending(groups.size(), 0);
  for (size_t n = 0; n < graph.nodes.size(); ++n) {
    for (int v : graph.nodes[n].outputs) {
      if (v < 0) continue;
      for (int c : graph.values[v].consumers) {
        int from = group_of[n];
        int to = group_of[c];
        if (from != to && successors[from].insert(to).second) ++pending[to];
      }
    }
  }
  std::vector<int> ready;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (pending[g] == 0) ready.push_back(static_cast<int>(g));
  }
  size_t done = 0;
  while (!ready.empty()) {
    int g = ready.back();
    ready.pop_back();
    ++done;
    for (int s : successors[g]) {
      if (--pending[s] == 0) ready.push_back(s);
    }
  }
  if (done != groups.size()) {
    for (size_t g = 0; g < groups.size(); ++g) {
      if (pending[g] > 0) {
        return Internal(fmt::format("the group graph has a cycle through group {} ({}) at {}", g,
                                    groups[g].family,
                                    DescribeNode(graph.nodes[groups[g].nodes.front()])));
      }
    }
  }
  return Status::Ok();
}

}  // namespace kfleet::planner
