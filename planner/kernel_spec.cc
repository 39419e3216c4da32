#include "planner/kernel_spec.h"

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "common/ids.h"

namespace kfleet::planner {
namespace {

// raw_data is little-endian by ONNX's definition; values are copied byte for byte.
static_assert(std::endian::native == std::endian::little);

template <typename T>
void AppendBytes(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// IEEE binary16, rounding to nearest even; out-of-range values become infinities.
uint16_t HalfBits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa != 0 ? 0x200u : 0));
  int e = static_cast<int>(exponent) - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  uint32_t kept;
  uint32_t rest;
  uint32_t half_way;
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    // A subnormal half: shift the mantissa, implicit bit included, down to 2^-24 units.
    uint32_t full = mantissa | 0x800000u;
    int shift = 14 - e;
    kept = full >> shift;
    rest = full & ((1u << shift) - 1);
    half_way = 1u << (shift - 1);
  } else {
    kept = (static_cast<uint32_t>(e) << 10) | (mantissa >> 13);
    rest = mantissa & 0x1fffu;
    half_way = 0x1000u;
  }
  // A carry out of the mantissa correctly moves to the next exponent (or to infinity).
  if (rest > half_way || (rest == half_way && (kept & 1u) != 0)) ++kept;
  return static_cast<uint16_t>(sign | kept);
}

// bfloat16 is the upper half of a float, rounded to nearest even.
uint16_t BFloat16Bits(float value) {
  uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

Result<std::string> ConstantBytes(const Value& value) {
  const ConstantData& data = *value.constant;
  int64_t count = NumElements(value.shape);
  bool floating = IsFloat(value.dtype);
  int64_t have = static_cast<int64_t>(floating ? data.floats.size() : data.ints.size());
  if (have != count) {
    return InvalidArgument(fmt::format("constant '{}' of shape {} holds {} values, expected {}",
                                       value.name, ShapeToString(value.shape), have, count));
  }
  std::string out;
  out.reserve(static_cast<size_t>(count * DTypeBytes(value.dtype)));
  for (int64_t i = 0; i < count; ++i) {
    double f = floating ? data.floats[i] : 0;
    int64_t n = floating ? 0 : data.ints[i];
    switch (value.dtype) {
      case DType::kF32:
        AppendBytes(out, static_cast<float>(f));
        break;
      case DType::kF64:
        AppendBytes(out, f);
        break;
      case DType::kF16:
        AppendBytes(out, HalfBits(static_cast<float>(f)));
        break;
      case DType::kBF16:
        AppendBytes(out, BFloat16Bits(static_cast<float>(f)));
        break;
      case DType::kI64:
        AppendBytes(out, n);
        break;
      case DType::kI32:
        AppendBytes(out, static_cast<int32_t>(n));
        break;
      case DType::kI16:
        AppendBytes(out, static_cast<int16_t>(n));
        break;
      case DType::kI8:
        AppendBytes(out, static_cast<int8_t>(n));
        break;
      case DType::kU8:
        AppendBytes(out, static_cast<uint8_t>(n));
        break;
      case DType::kBool:
        AppendBytes(out, static_cast<uint8_t>(n != 0 ? 1 : 0));
        break;
    }
  }
  return out;
}

// Values after an unsupported node may have no inferred shape; their type then says only the
// element type, as ONNX allows.
void SetType(const Value& value, onnx::TypeProto* type) {
  onnx::TypeProto_Tensor* tensor = type->mutable_tensor_type();
  tensor->set_elem_type(DTypeToOnnx(value.dtype));
  if (!value.has_shape) return;
  onnx::TensorShapeProto* shape = tensor->mutable_shape();
  for (int64_t d : value.shape) shape->add_dim()->set_dim_value(d);
}

void SetAttribute(const std::string& name, const AttributeValue& value,
                  onnx::AttributeProto* attr) {
  attr->set_name(name);
  std::visit(
      [attr](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          attr->set_type(onnx::AttributeProto::INT);
          attr->set_i(v);
        } else if constexpr (std::is_same_v<T, double>) {
          attr->set_type(onnx::AttributeProto::FLOAT);
          attr->set_f(static_cast<float>(v));
        } else if constexpr (std::is_same_v<T, std::string>) {
          attr->set_type(onnx::AttributeProto::STRING);
          attr->set_s(v);
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          attr->set_type(onnx::AttributeProto::INTS);
          for (int64_t i : v) attr->add_ints(i);
        } else {
          attr->set_type(onnx::AttributeProto::FLOATS);
          for (double f : v) attr->add_floats(static_cast<float>(f));
        }
      },
      value);
}

std::string Dims(const Value& value) {
  if (!value.has_shape) return "?";
  return value.shape.empty() ? "scalar" : fmt::format("{}", fmt::join(value.shape, "x"));
}

// "128x768x3072" for a matmul (batch dims of a weight matmul fold into M; a batched product of
// two activations keeps its batch in front), the input and weight shapes (and strides other
// than 1) for a convolution, the anchor's input shape for everything else (Q for attention).
std::string ShapeSummary(const Graph& graph, const FusionGroup& group) {
  const Node& anchor = graph.nodes[group.anchor];
  static const Value kAbsent;
  auto input = [&](size_t k) -> const Value& {
    if (k >= anchor.inputs.size() || anchor.inputs[k] < 0) return kAbsent;
    return graph.values[anchor.inputs[k]];
  };
  bool matmul = anchor.op_type == "MatMul" || anchor.op_type == "Gemm";
  if (matmul && group.family != "attention" && input(0).has_shape && input(1).has_shape &&
      input(0).shape.size() >= 2 && input(1).shape.size() >= 2) {
    const Shape& a = input(0).shape;
    const Shape& b = input(1).shape;
    bool trans_a = anchor.op_type == "Gemm" && anchor.IntAttr("transA", 0) != 0;
    bool trans_b = anchor.op_type == "Gemm" && anchor.IntAttr("transB", 0) != 0;
    int64_t m = a[a.size() - (trans_a ? 1 : 2)];
    int64_t k = a[a.size() - (trans_a ? 2 : 1)];
    int64_t n = b[b.size() - (trans_b ? 2 : 1)];
    Shape batch(a.begin(), a.end() - 2);
    if (b.size() == 2) return fmt::format("{}x{}x{}", NumElements(batch) * m, k, n);
    const Value& out = graph.values[anchor.outputs[0]];
    if (out.has_shape && out.shape.size() >= 2) {
      batch.assign(out.shape.begin(), out.shape.end() - 2);
    }
    return fmt::format("{}x{}x{}x{}", NumElements(batch), m, k, n);
  }
  if (anchor.op_type == "Conv" || anchor.op_type == "ConvTranspose") {
    std::vector<int64_t> strides = anchor.IntsAttr("strides");
    bool unit = std::all_of(strides.begin(), strides.end(), [](int64_t s) { return s == 1; });
    std::string summary = fmt::format("{} w{}", Dims(input(0)), Dims(input(1)));
    return unit ? summary : fmt::format("{} s{}", summary, fmt::join(strides, "x"));
  }
  if (group.family == "elementwise" || anchor.inputs.empty() || anchor.inputs[0] < 0) {
    return anchor.outputs.empty() || anchor.outputs[0] < 0 ? "?"
                                                           : Dims(graph.values[anchor.outputs[0]]);
  }
  return Dims(input(0));
}

DType SummaryDType(const Graph& graph, const FusionGroup& group) {
  const Node& anchor = graph.nodes[group.anchor];
  if (group.family == "elementwise" || anchor.inputs.empty() || anchor.inputs[0] < 0) {
    return anchor.outputs.empty() || anchor.outputs[0] < 0 ? DType::kF32
                                                           : graph.values[anchor.outputs[0]].dtype;
  }
  return graph.values[anchor.inputs[0]].dtype;
}

Result<std::string> SerializeDeterministic(const onnx::ModelProto& model) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    // Map fields and unknown fields in a fixed order, so equal specs give equal bytes.
    coded.SetSerializationDeterministic(true);
    if (!model.SerializeToCodedStream(&coded) || coded.HadError()) {
      return Internal("kernel spec: serializing the subgraph model failed");
    }
  }
  return bytes;
}

}  // namespace

Result<KernelSpec> BuildKernelSpec(const Graph& graph, const FusionGroup& group) {
  if (group.nodes.empty()) return InvalidArgument("kernel spec: the fusion group has no nodes");
  const int value_count = static_cast<int>(graph.values.size());
  for (int n : group.nodes) {
    if (n < 0 || n >= static_cast<int>(graph.nodes.size())) {
      return InvalidArgument(
          fmt::format("kernel spec: the group names node {}, which does not exist", n));
    }
    const Node& node = graph.nodes[n];
    for (const std::vector<int>* ids : {&node.inputs, &node.outputs}) {
      for (int v : *ids) {
        if (v >= value_count) {
          return InvalidArgument(fmt::format("kernel spec: {} names value {}, which does not exist",
                                             DescribeNode(node), v));
        }
      }
    }
  }
  if (group.anchor < 0 || group.anchor >= static_cast<int>(graph.nodes.size())) {
    return InvalidArgument(fmt::format("kernel spec: group '{}' has no anchor node", group.family));
  }

  // Canonical names: what identifies a spec is its structure, never the model's names.
  std::map<int, std::string> names;
  std::set<int> produced;
  for (int n : group.nodes) {
    for (int v : graph.nodes[n].outputs) {
      if (v >= 0) produced.insert(v);
    }
  }
  KernelSpec spec;
  onnx::ModelProto model;
  onnx::GraphProto* body = model.mutable_graph();
  for (size_t i = 0; i < group.inputs.size(); ++i) {
    int v = group.inputs[i];
    if (v < 0 || v >= value_count) {
      return InvalidArgument(fmt::format("kernel spec: group input {} does not exist", v));
    }
    names[v] = fmt::format("in{}", i);
    const Value& value = graph.values[v];
    onnx::ValueInfoProto* info = body->add_input();
    info->set_name(names[v]);
    SetType(value, info->mutable_type());
    spec.inputs.push_back({names[v], value.dtype, value.shape});
  }
  for (size_t i = 0; i < group.outputs.size(); ++i) {
    int v = group.outputs[i];
    if (produced.count(v) == 0) {
      return InvalidArgument(
          fmt::format("kernel spec: group output {} is not produced in the group", v));
    }
    names[v] = fmt::format("out{}", i);
    const Value& value = graph.values[v];
    onnx::ValueInfoProto* info = body->add_output();
    info->set_name(names[v]);
    SetType(value, info->mutable_type());
    spec.outputs.push_back({names[v], value.dtype, value.shape});
  }

  int constants = 0;
  int temporaries = 0;
  std::set<std::string> domains;
  for (size_t i = 0; i < group.nodes.size(); ++i) {
    const Node& node = graph.nodes[group.nodes[i]];
    onnx::NodeProto* out = body->add_node();
    out->set_name(fmt::format("n{}", i));
    out->set_op_type(node.op_type);
    if (!node.domain.empty() && node.domain != "ai.onnx") {
      out->set_domain(node.domain);
      domains.insert(node.domain);
    }
    for (int v : node.inputs) {
      if (v < 0) {
        out->add_input("");
        continue;
      }
      if (names.count(v) == 0) {
        const Value& value = graph.values[v];
        if (value.kind != ValueKind::kConstant || !value.constant) {
          return InvalidArgument(fmt::format(
              "kernel spec: {} reads '{}', which is neither produced in the group, nor one of its "
              "inputs, nor a constant",
              DescribeNode(node), value.name));
        }
        names[v] = fmt::format("c{}", constants++);
        onnx::TensorProto* tensor = body->add_initializer();
        tensor->set_name(names[v]);
        tensor->set_data_type(DTypeToOnnx(value.dtype));
        for (int64_t d : value.shape) tensor->add_dims(d);
        KF_ASSIGN_OR_RETURN(std::string raw, ConstantBytes(value));
        tensor->set_raw_data(std::move(raw));
      }
      out->add_input(names[v]);
    }
    for (int v : node.outputs) {
      if (v < 0) {
        out->add_output("");
        continue;
      }
      if (names.count(v) == 0) {
        names[v] = fmt::format("t{}", temporaries++);
        onnx::ValueInfoProto* info = body->add_value_info();
        info->set_name(names[v]);
        SetType(graph.values[v], info->mutable_type());
      }
      out->add_output(names[v]);
    }
    // Omitted trailing optionals are left out, as ONNX writes them.
    while (out->input_size() > 0 && out->input(out->input_size() - 1).empty()) {
      out->mutable_input()->RemoveLast();
    }
    while (out->output_size() > 0 && out->output(out->output_size() - 1).empty()) {
      out->mutable_output()->RemoveLast();
    }
    for (const auto& [key, value] : node.attributes) SetAttribute(key, value, out->add_attribute());
    spec.op_types.push_back(node.op_type);
  }

  model.set_ir_version(graph.ir_version);
  model.set_producer_name("kfleet");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(graph.opset);
  // The IR keeps no version for other domains; 1 is the version every custom domain starts at.
  for (const std::string& domain : domains) {
    onnx::OperatorSetIdProto* extra = model.add_opset_import();
    extra->set_domain(domain);
    extra->set_version(1);
  }
  body->set_name(group.family);

  spec.family = group.family;
  spec.name = fmt::format("{} {} {}", group.family, ShapeSummary(graph, group),
                          DTypeName(SummaryDType(graph, group)));
  KF_ASSIGN_OR_RETURN(spec.onnx_model, SerializeDeterministic(model));
  spec.hash = Sha256Hex(spec.onnx_model);
  return spec;
}

}  // namespace kfleet::planner
