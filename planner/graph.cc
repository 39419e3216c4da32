#include "planner/graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <utility>

namespace kfleet::planner {

int64_t DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kF64:
      return 8;
    case DType::kI64:
      return 8;
    case DType::kI32:
      return 4;
    case DType::kI16:
      return 2;
    case DType::kI8:
      return 1;
    case DType::kU8:
      return 1;
    case DType::kBool:
      return 1;
  }
  return 4;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kF64:
      return "f64";
    case DType::kI64:
      return "i64";
    case DType::kI32:
      return "i32";
    case DType::kI16:
      return "i16";
    case DType::kI8:
      return "i8";
    case DType::kU8:
      return "u8";
    case DType::kBool:
      return "bool";
  }
  return "?";
}

bool IsFloat(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF64;
}

Result<DType> ParseDType(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::pair<std::string_view, DType> kNames[] = {
      {"f32", DType::kF32},       {"fp32", DType::kF32},   {"float32", DType::kF32},
      {"float", DType::kF32},     {"f16", DType::kF16},    {"fp16", DType::kF16},
      {"float16", DType::kF16},   {"half", DType::kF16},   {"bf16", DType::kBF16},
      {"bfloat16", DType::kBF16}, {"f64", DType::kF64},    {"fp64", DType::kF64},
      {"float64", DType::kF64},   {"double", DType::kF64}, {"i64", DType::kI64},
      {"int64", DType::kI64},     {"i32", DType::kI32},    {"int32", DType::kI32},
      {"i16", DType::kI16},       {"int16", DType::kI16},  {"i8", DType::kI8},
      {"int8", DType::kI8},       {"u8", DType::kU8},      {"uint8", DType::kU8},
      {"bool", DType::kBool},
  };
  for (const auto& [name, dtype] : kNames) {
    if (lower == name) return dtype;
  }
  return InvalidArgument(
      fmt::format("unknown dtype '{}': expected one of fp32, fp16, bf16, fp64, int64, int32, "
                  "int16, int8, uint8, bool",
                  text));
}

Result<DType> DTypeFromOnnx(int32_t onnx_elem_type) {
  // TensorProto.DataType numbering from onnx.proto.
  switch (onnx_elem_type) {
    case 1:
      return DType::kF32;
    case 2:
      return DType::kU8;
    case 3:
      return DType::kI8;
    case 5:
      return DType::kI16;
    case 6:
      return DType::kI32;
    case 7:
      return DType::kI64;
    case 9:
      return DType::kBool;
    case 10:
      return DType::kF16;
    case 11:
      return DType::kF64;
    case 16:
      return DType::kBF16;
    case 0:
      return InvalidArgument("tensor element type is UNDEFINED");
    case 4:
      return InvalidArgument("tensor element type UINT16 is not supported");
    case 8:
      return InvalidArgument("tensor element type STRING is not supported");
    case 12:
      return InvalidArgument("tensor element type UINT32 is not supported");
    case 13:
      return InvalidArgument("tensor element type UINT64 is not supported");
    case 14:
    case 15:
      return InvalidArgument("complex tensor element types are not supported");
    default:
      return InvalidArgument(
          fmt::format("tensor element type {} is not supported", onnx_elem_type));
  }
}

int32_t DTypeToOnnx(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 1;
    case DType::kU8:
      return 2;
    case DType::kI8:
      return 3;
    case DType::kI16:
      return 5;
    case DType::kI32:
      return 6;
    case DType::kI64:
      return 7;
    case DType::kBool:
      return 9;
    case DType::kF16:
      return 10;
    case DType::kF64:
      return 11;
    case DType::kBF16:
      return 16;
  }
  return 0;
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ",")); }

std::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kActivation:
      return "activation";
    case ValueKind::kInput:
      return "input";
    case ValueKind::kWeight:
      return "weight";
    case ValueKind::kConstant:
      return "constant";
  }
  return "?";
}

namespace {

template <typename T>
const T* FindAttr(const Node& node, std::string_view key) {
  auto it = node.attributes.find(std::string(key));
  if (it == node.attributes.end()) return nullptr;
  return std::get_if<T>(&it->second);
}

}  // namespace

bool Node::HasAttr(std::string_view key) const {
  return attributes.find(std::string(key)) != attributes.end();
}

int64_t Node::IntAttr(std::string_view key, int64_t fallback) const {
  const auto* v = FindAttr<int64_t>(*this, key);
  return v != nullptr ? *v : fallback;
}

double Node::FloatAttr(std::string_view key, double fallback) const {
  if (const auto* v = FindAttr<double>(*this, key)) return *v;
  if (const auto* i = FindAttr<int64_t>(*this, key)) return static_cast<double>(*i);
  return fallback;
}

std::string Node::StringAttr(std::string_view key, std::string_view fallback) const {
  const auto* v = FindAttr<std::string>(*this, key);
  return v != nullptr ? *v : std::string(fallback);
}

std::vector<int64_t> Node::IntsAttr(std::string_view key) const {
  const auto* v = FindAttr<std::vector<int64_t>>(*this, key);
  return v != nullptr ? *v : std::vector<int64_t>{};
}

std::vector<double> Node::FloatsAttr(std::string_view key) const {
  const auto* v = FindAttr<std::vector<double>>(*this, key);
  return v != nullptr ? *v : std::vector<double>{};
}

int Graph::FindValue(std::string_view value_name) const {
  auto it = index_.find(value_name);
  return it == index_.end() ? -1 : it->second;
}

int Graph::AddValue(Value value) {
  int id = static_cast<int>(values.size());
  index_.emplace(value.name, id);
  values.push_back(std::move(value));
  return id;
}

int Graph::AddNode(Node node) {
  int id = static_cast<int>(nodes.size());
  for (int v : node.inputs) {
    if (v >= 0) values[v].consumers.push_back(id);
  }
  for (int v : node.outputs) {
    if (v >= 0) values[v].producer = id;
  }
  nodes.push_back(std::move(node));
  return id;
}

void Graph::RebuildLinks() {
  index_.clear();
  for (size_t i = 0; i < values.size(); ++i) {
    values[i].producer = -1;
    values[i].consumers.clear();
    index_.emplace(values[i].name, static_cast<int>(i));
  }
  for (size_t n = 0; n < nodes.size(); ++n) {
    for (int v : nodes[n].inputs) {
      if (v >= 0) values[v].consumers.push_back(static_cast<int>(n));
    }
    for (int v : nodes[n].outputs) {
      if (v >= 0) values[v].producer = static_cast<int>(n);
    }
  }
}

int64_t Graph::WeightElements() const {
  int64_t total = 0;
  for (const Value& v : values) {
    if (v.kind == ValueKind::kWeight && v.has_shape) total += NumElements(v.shape);
  }
  return total;
}

int64_t Graph::WeightBytes() const {
  int64_t total = 0;
  for (const Value& v : values) {
    if (v.kind == ValueKind::kWeight && v.has_shape) {
      total += NumElements(v.shape) * DTypeBytes(v.dtype);
    }
  }
  return total;
}

std::string DescribeNode(const Node& node) {
  return fmt::format("node '{}' ({})", node.name, node.op_type);
}

}  // namespace kfleet::planner
