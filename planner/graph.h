// The planner's graph IR: values (tensors) and nodes (ops) of one model, in topological order,
// with every shape concrete once import has run. Independent of ONNX's protobuf types so the
// cost model, partitioner and ranker never see them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace kfleet::planner {

// Same codes as the kernel ABI's kf_tensor.dtype and kernel.capnp's DType.
enum class DType : int32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kF64 = 3,
  kI64 = 4,
  kI32 = 5,
  kI16 = 6,
  kI8 = 7,
  kU8 = 8,
  kBool = 9,
};

int64_t DTypeBytes(DType dtype);
// "f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "bool".
std::string_view DTypeName(DType dtype);
bool IsFloat(DType dtype);
// Accepts our names and the common spellings: fp32/float32/float, fp16/half, bf16/bfloat16, ...
Result<DType> ParseDType(std::string_view text);
// ONNX TensorProto.DataType codes; types kfleet cannot run (string, complex, uint16/32/64) fail.
Result<DType> DTypeFromOnnx(int32_t onnx_elem_type);
int32_t DTypeToOnnx(DType dtype);

using Shape = std::vector<int64_t>;
int64_t NumElements(const Shape& shape);        // 1 for a scalar
std::string ShapeToString(const Shape& shape);  // "[1,128,768]", "[]" for a scalar

// Values known at plan time: small initializers, Constant nodes and folded shape arithmetic.
// Integer and boolean dtypes keep exact values in `ints`; floating dtypes in `floats`.
struct ConstantData {
  std::vector<int64_t> ints;
  std::vector<double> floats;
};

// An initializer whose bytes live in a file beside the model (ONNX external data).
struct ExternalData {
  std::string path;  // absolute or relative to the working directory, already resolved
  int64_t offset = 0;
  int64_t length = 0;
};

enum class ValueKind {
  kActivation,  // produced by a node
  kInput,       // a graph input that is not a weight (token ids, images)
  kWeight,      // an initializer too large to fold, or a graph input that stands for one
  kConstant,    // values known at plan time (see Value::constant)
};
std::string_view ValueKindName(ValueKind kind);

struct Value {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  bool has_shape = false;
  ValueKind kind = ValueKind::kActivation;
  std::optional<ConstantData> constant;         // set exactly when kind == kConstant
  std::shared_ptr<const std::string> raw_data;  // inline initializer bytes (little-endian), if any
  std::optional<ExternalData> external;         // external initializer bytes, if any
  // The dtype raw_data / external bytes are stored in; differs from `dtype` after
  // ImportOptions::compute_dtype converted the plan, and a loader must convert.
  DType data_dtype = DType::kF32;
  int producer = -1;           // node index; -1 for inputs, weights, constants
  std::vector<int> consumers;  // node indices, ascending, one entry per use
};

// ONNX attributes the planner keeps. A tensor attribute (Constant's `value`) is turned into a
// constant value at import, so it never reaches the IR.
using AttributeValue =
    std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

struct Node {
  std::string name;  // the model's node name, or "<op_type>_<index>" when the model has none
  std::string op_type;
  std::string domain;        // "" for the default ONNX domain
  std::vector<int> inputs;   // value ids; -1 marks an omitted optional input
  std::vector<int> outputs;  // value ids; -1 marks an omitted optional output
  std::map<std::string, AttributeValue> attributes;
  // False when the planner does not know the op (or could not infer its shapes): the node becomes
  // an opaque job that is reported, not optimized. `unsupported_reason` says why, for people.
  bool supported = true;
  std::string unsupported_reason;

  bool HasAttr(std::string_view key) const;
  int64_t IntAttr(std::string_view key, int64_t fallback) const;
  double FloatAttr(std::string_view key, double fallback) const;
  std::string StringAttr(std::string_view key, std::string_view fallback) const;
  // Empty when absent.
  std::vector<int64_t> IntsAttr(std::string_view key) const;
  std::vector<double> FloatsAttr(std::string_view key) const;
};

struct Graph {
  std::string name;      // graph name from the model
  std::string producer;  // "pytorch 2.11", from producer_name / producer_version
  int64_t ir_version = 0;
  int64_t opset = 0;  // opset of the default ("" / "ai.onnx") domain
  std::vector<Value> values;
  std::vector<Node> nodes;   // runtime nodes in topological order; folded nodes are gone
  std::vector<int> inputs;   // runtime graph inputs (kind kInput) and weight inputs, model order
  std::vector<int> outputs;  // graph outputs, model order
  int64_t folded_nodes = 0;  // nodes evaluated at plan time (shape arithmetic, Constant)

  // -1 when no value has that name.
  int FindValue(std::string_view value_name) const;
  // Appends a value; its name must be new. Returns its id.
  int AddValue(Value value);
  // Appends a node after every node already present and links producer / consumers.
  int AddNode(Node node);
  // Recomputes producer and consumers from nodes (after nodes were removed or reordered) and the
  // name index.
  void RebuildLinks();

  // Parameters (elements) and bytes of all weights; constants are not counted.
  int64_t WeightElements() const;
  int64_t WeightBytes() const;

 private:
  std::map<std::string, int, std::less<>> index_;
};

// Human-readable description of a node for error messages: "node 'attn/MatMul_3' (MatMul)".
std::string DescribeNode(const Node& node);

}  // namespace kfleet::planner
