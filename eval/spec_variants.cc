#include "eval/spec_variants.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "planner/onnx_import.h"

namespace kfleet::eval {
namespace {

using Substitution = std::map<int64_t, int64_t>;

int64_t Elements(const planner::Graph& graph) {
  int64_t total = 0;
  for (int v : graph.inputs) total += planner::NumElements(graph.values[v].shape);
  for (int v : graph.outputs) total += planner::NumElements(graph.values[v].shape);
  return total;
}

bool IsPowerOfTwo(int64_t d) { return d > 0 && (d & (d - 1)) == 0; }

// An odd size near d that is not a power of two: 128 -> 127, 768 -> 767, 3 -> 5.
int64_t OddNear(int64_t d) {
  int64_t odd = d % 2 == 0 ? d - 1 : d + 2;
  if (IsPowerOfTwo(odd) || odd <= 1) odd += 2;
  return odd;
}

void RewriteShapeConstant(onnx::TensorProto& tensor, const Substitution& sub) {
  if (tensor.data_type() != onnx::TensorProto::INT64) return;
  if (tensor.has_raw_data()) {
    std::string raw = tensor.raw_data();
    for (size_t off = 0; off + 8 <= raw.size(); off += 8) {
      int64_t v;
      std::memcpy(&v, raw.data() + off, 8);
      auto it = sub.find(v);
      if (it != sub.end()) std::memcpy(raw.data() + off, &it->second, 8);
    }
    tensor.set_raw_data(raw);
    return;
  }
  for (int i = 0; i < tensor.int64_data_size(); ++i) {
    auto it = sub.find(tensor.int64_data(i));
    if (it != sub.end()) tensor.set_int64_data(i, it->second);
  }
}

Result<planner::Graph> Apply(const onnx::ModelProto& original, const Substitution& sub) {
  onnx::ModelProto model = original;
  onnx::GraphProto* graph = model.mutable_graph();
  for (auto& input : *graph->mutable_input()) {
    auto* shape = input.mutable_type()->mutable_tensor_type()->mutable_shape();
    for (auto& dim : *shape->mutable_dim()) {
      auto it = sub.find(dim.dim_value());
      if (dim.has_dim_value() && it != sub.end()) dim.set_dim_value(it->second);
    }
  }
  // Declared shapes of intermediate values and outputs are the old ones: let inference decide.
  graph->clear_value_info();
  for (auto& output : *graph->mutable_output()) {
    output.mutable_type()->mutable_tensor_type()->clear_shape();
  }
  std::set<std::string> shape_inputs;
  for (const auto& node : graph->node()) {
    if ((node.op_type() == "Reshape" || node.op_type() == "Expand") && node.input_size() > 1) {
      shape_inputs.insert(node.input(1));
    }
  }
  for (auto& tensor : *graph->mutable_initializer()) {
    if (shape_inputs.count(tensor.name()) != 0) RewriteShapeConstant(tensor, sub);
  }
  // A Conv's kernel_shape only repeats its weight's spatial sizes, which may have changed: the
  // weight alone says it (exported specs carry the attribute, and 3 -> 5 would contradict it).
  for (auto& node : *graph->mutable_node()) {
    if (node.op_type() != "Conv" && node.op_type() != "ConvTranspose") continue;
    auto* attributes = node.mutable_attribute();
    for (int i = attributes->size() - 1; i >= 0; --i) {
      if (attributes->Get(i).name() == "kernel_shape") attributes->DeleteSubrange(i, 1);
    }
  }
  for (auto& node : *graph->mutable_node()) {
    if (node.op_type() != "Constant" || node.output_size() != 1 ||
        shape_inputs.count(node.output(0)) == 0) {
      continue;
    }
    for (auto& attribute : *node.mutable_attribute()) {
      if (attribute.name() == "value") RewriteShapeConstant(*attribute.mutable_t(), sub);
      if (attribute.name() == "value_ints") {
        for (int i = 0; i < attribute.ints_size(); ++i) {
          auto it = sub.find(attribute.ints(i));
          if (it != sub.end()) attribute.set_ints(i, it->second);
        }
      }
    }
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) return Internal("could not serialize a spec variant");
  return planner::ImportOnnxBytes(bytes, "spec variant", "", {});
}

bool SameOutputRanks(const planner::Graph& a, const planner::Graph& b) {
  if (a.outputs.size() != b.outputs.size()) return false;
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    const planner::Value& va = a.values[a.outputs[i]];
    const planner::Value& vb = b.values[b.outputs[i]];
    if (!vb.has_shape || va.shape.size() != vb.shape.size() || va.dtype != vb.dtype) return false;
  }
  for (const planner::Node& node : b.nodes) {
    if (!node.supported) return false;
  }
  return true;
}

std::string Label(const Substitution& sub) {
  std::vector<std::string> parts;
  for (const auto& [from, to] : sub) parts.push_back(fmt::format("{}->{}", from, to));
  return fmt::format("{}", fmt::join(parts, " "));
}

}  // namespace

Result<std::vector<ShapeVariant>> MakeShapeVariants(std::string_view spec_onnx,
                                                    const planner::Graph& spec, int max_variants,
                                                    double max_elements_factor) {
  onnx::ModelProto model;
  if (!model.ParseFromArray(spec_onnx.data(), static_cast<int>(spec_onnx.size()))) {
    return InvalidArgument("the spec is not a valid ONNX model");
  }
  std::set<int64_t> sizes;
  for (int v : spec.inputs) {
    for (int64_t d : spec.values[v].shape) {
      if (d > 1) sizes.insert(d);
    }
  }
  std::vector<Substitution> candidates;
  if (sizes.size() > 1) {
    Substitution all_odd;
    for (int64_t d : sizes) all_odd[d] = OddNear(d);
    candidates.push_back(all_odd);
  }
  for (int64_t d : sizes) {
    candidates.push_back({{d, OddNear(d)}});
    if (d % 2 == 0 && d / 2 > 1) candidates.push_back({{d, d / 2}});
    candidates.push_back({{d, 2 * d}});
  }
  const double budget = max_elements_factor * static_cast<double>(Elements(spec));
  std::vector<ShapeVariant> variants;
  std::set<std::vector<planner::Shape>> seen;
  for (const Substitution& sub : candidates) {
    if (static_cast<int>(variants.size()) >= max_variants) break;
    // Two sizes must not collapse into one (768->1536 while 1536 also exists) or the variant
    // would test a different graph than the label says.
    std::set<int64_t> targets;
    bool collides = false;
    for (const auto& [from, to] : sub) {
      collides |= !targets.insert(to).second || (sizes.count(to) != 0 && sub.count(to) == 0);
    }
    if (collides) continue;
    Result<planner::Graph> graph = Apply(model, sub);
    if (!graph.ok() || !SameOutputRanks(spec, *graph)) continue;
    if (static_cast<double>(Elements(*graph)) > budget) continue;
    std::vector<planner::Shape> shapes;
    for (int v : graph->inputs) shapes.push_back(graph->values[v].shape);
    if (!seen.insert(shapes).second) continue;
    variants.push_back({sub.size() > 1 ? "all odd: " + Label(sub) : Label(sub), std::move(*graph)});
  }
  return variants;
}

}  // namespace kfleet::eval
