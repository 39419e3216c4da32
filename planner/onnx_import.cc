// ONNX protobuf -> Graph: values from initializers, graph inputs and node outputs; nodes in our own
// topological order; then shape inference and constant folding interleaved node by node (see
// shape_inference.cc and constant_folding.cc). onnx's checker and shape inference are not used:
// libonnx 1.12 stops at opset 17 and refuses IR version 10, which current PyTorch writes.
#include "planner/onnx_import.h"

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/defs/parser.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <queue>
#include <set>
#include <unordered_map>
#include <utility>

#include "common/files.h"
#include "planner/import_internal.h"

namespace kfleet::planner {
namespace {

namespace fs = std::filesystem;
using import_internal::CheckShape;
using import_internal::FoldConstant;
using import_internal::HasShapeRule;
using import_internal::InferShapes;

// Tensor bytes are little-endian in ONNX; they are read with memcpy.
static_assert(std::endian::native == std::endian::little, "kfleet assumes a little-endian host");

constexpr int64_t kMinOpset = 13;
constexpr int64_t kMaxOpset = 20;
// Floating initializers this small are scalars of the graph (epsilons, GELU's 0.5 and 0.044715)
// that fusion rules want to read; larger ones are parameters.
constexpr int64_t kMaxFloatConstantElements = 8;
Result<Shape> CheckedShape(const google::protobuf::RepeatedField<int64_t>& dims,
                           std::string_view what) {
  Shape shape(dims.begin(), dims.end());
  KF_RETURN_IF_ERROR(CheckShape(shape, what));
  return shape;
}

double HalfToDouble(uint16_t bits) {
  const int sign = (bits >> 15) != 0 ? -1 : 1;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 0x1f) {
    return mantissa == 0 ? sign * std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::quiet_NaN();
  }
  return sign * std::ldexp(mantissa + 1024, exponent - 25);
}

double BFloat16ToDouble(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float f = 0;
  std::memcpy(&f, &widened, sizeof f);
  return f;
}

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Little-endian tensor bytes -> ConstantData (ints for integer and bool dtypes, doubles else).
ConstantData DecodeRaw(std::string_view bytes, DType dtype) {
  ConstantData out;
  const size_t width = static_cast<size_t>(DTypeBytes(dtype));
  const size_t count = bytes.size() / width;
  for (size_t i = 0; i < count; ++i) {
    const char* p = bytes.data() + i * width;
    switch (dtype) {
      case DType::kF32:
        out.floats.push_back(Load<float>(p));
        break;
      case DType::kF64:
        out.floats.push_back(Load<double>(p));
        break;
      case DType::kF16:
        out.floats.push_back(HalfToDouble(Load<uint16_t>(p)));
        break;
      case DType::kBF16:
        out.floats.push_back(BFloat16ToDouble(Load<uint16_t>(p)));
        break;
      case DType::kI64:
        out.ints.push_back(Load<int64_t>(p));
        break;
      case DType::kI32:
        out.ints.push_back(Load<int32_t>(p));
        break;
      case DType::kI16:
        out.ints.push_back(Load<int16_t>(p));
        break;
      case DType::kI8:
        out.ints.push_back(Load<int8_t>(p));
        break;
      case DType::kU8:
        out.ints.push_back(Load<uint8_t>(p));
        break;
      case DType::kBool:
        out.ints.push_back(Load<uint8_t>(p) != 0 ? 1 : 0);
        break;
    }
  }
  return out;
}

template <typename T, typename Field>
void AppendAs(const Field& field, std::string& out) {
  for (auto v : field) {
    const T narrowed = static_cast<T>(v);
    out.append(reinterpret_cast<const char*>(&narrowed), sizeof narrowed);
  }
}

// The typed fields (float_data, int32_data, ...) as little-endian bytes. ONNX packs f16, bf16,
// bool and the small integer types into int32_data, one element per entry (f16 / bf16 as bits).
Result<std::string> EncodeTyped(const onnx::TensorProto& t, DType dtype, int64_t count,
                                std::string_view what) {
  std::string out;
  int size = 0;
  switch (dtype) {
    case DType::kF32:
      size = t.float_data_size();
      AppendAs<float>(t.float_data(), out);
      break;
    case DType::kF64:
      size = t.double_data_size();
      AppendAs<double>(t.double_data(), out);
      break;
    case DType::kI64:
      size = t.int64_data_size();
      AppendAs<int64_t>(t.int64_data(), out);
      break;
    case DType::kI32:
      size = t.int32_data_size();
      AppendAs<int32_t>(t.int32_data(), out);
      break;
    case DType::kI16:
      size = t.int32_data_size();
      AppendAs<int16_t>(t.int32_data(), out);
      break;
    case DType::kI8:
      size = t.int32_data_size();
      AppendAs<int8_t>(t.int32_data(), out);
      break;
    case DType::kU8:
    case DType::kBool:
      size = t.int32_data_size();
      AppendAs<uint8_t>(t.int32_data(), out);
      break;
    case DType::kF16:
    case DType::kBF16:
      size = t.int32_data_size();
      AppendAs<uint16_t>(t.int32_data(), out);
      break;
  }
  if (size != count) {
    return InvalidArgument(fmt::format("{} has {} values for {} elements", what, size, count));
  }
  return out;
}

// A location key must name a file inside the model's directory: model files come from other
// people, and "../../etc/x" or "/dev/zero" must not be read.
Result<ExternalData> ResolveExternal(const onnx::TensorProto& t, const std::string& dir,
                                     int64_t expected_bytes, std::string_view what) {
  std::string location;
  int64_t offset = 0;
  std::optional<int64_t> length;
  for (const auto& entry : t.external_data()) {
    if (entry.key() == "location") {
      location = entry.value();
      continue;
    }
    if (entry.key() != "offset" && entry.key() != "length") continue;
    int64_t number = 0;
    const std::string& text = entry.value();
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (ec != std::errc() || end != text.data() + text.size() || number < 0) {
      return InvalidArgument(
          fmt::format("{}: external data {} '{}' is not a byte count", what, entry.key(), text));
    }
    if (entry.key() == "offset") {
      offset = number;
    } else {
      length = number;
    }
  }
  if (location.empty())
    return InvalidArgument(fmt::format("{}: external data has no location", what));
  if (dir.empty()) {
    return InvalidArgument(fmt::format(
        "{}: weights are in external file '{}', but the model was not loaded from a file", what,
        location));
  }
  const fs::path relative(location);
  if (relative.is_absolute() ||
      std::any_of(relative.begin(), relative.end(), [](const fs::path& p) { return p == ".."; })) {
    return InvalidArgument(fmt::format(
        "{}: external data location '{}' leaves the model's directory", what, location));
  }
  const fs::path path = fs::path(dir) / relative;
  std::error_code ec;
  const auto file_size = fs::file_size(path, ec);
  if (ec) {
    return NotFound(fmt::format("{}: external data file '{}' cannot be read: {}", what,
                                path.string(), ec.message()));
  }
  if (length && *length != expected_bytes) {
    return InvalidArgument(
        fmt::format("{}: external data length {} does not match its shape ({} "
                    "bytes)",
                    what, *length, expected_bytes));
  }
  if (offset > static_cast<int64_t>(file_size) ||
      expected_bytes > static_cast<int64_t>(file_size) - offset) {
    return InvalidArgument(
        fmt::format("{}: external data bytes {}..{} are past the end of '{}' ({} bytes)", what,
                    offset, offset + expected_bytes, path.string(), file_size));
  }
  return ExternalData{path.string(), offset, expected_bytes};
}

Result<std::string> ReadExternal(const ExternalData& ext, std::string_view what) {
  std::ifstream in(ext.path, std::ios::binary);
  std::string bytes(static_cast<size_t>(ext.length), '\0');
  if (!in.seekg(ext.offset) || !in.read(bytes.data(), ext.length)) {
    return IoError(fmt::format("{}: reading {} bytes at {} of '{}' failed", what, ext.length,
                               ext.offset, ext.path));
  }
  return bytes;
}

// Fills dtype, shape and kind of an initializer (or a Constant node's tensor): small integer and
// tiny floating tensors become constants with decoded values, the rest weights whose bytes stay
// where they are (inline, moved out of the proto, or in the external file, not read).
Status MakeTensorValue(onnx::TensorProto& t, const std::string& dir, int64_t max_fold_elements,
                       std::string_view what, Value& v) {
  Result<DType> dtype = DTypeFromOnnx(t.data_type());
  if (!dtype.ok()) return dtype.status().WithContext(what);
  KF_ASSIGN_OR_RETURN(v.shape, CheckedShape(t.dims(), what));
  v.dtype = *dtype;
  v.data_dtype = *dtype;
  v.has_shape = true;
  const int64_t count = NumElements(v.shape);
  const int64_t bytes = count * DTypeBytes(v.dtype);
  const bool constant = count <= (IsFloat(v.dtype) ? kMaxFloatConstantElements : max_fold_elements);
  std::shared_ptr<const std::string> data;
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    KF_ASSIGN_OR_RETURN(ExternalData ext, ResolveExternal(t, dir, bytes, what));
    if (!constant) {
      v.kind = ValueKind::kWeight;
      v.external = std::move(ext);
      return Status::Ok();
    }
    KF_ASSIGN_OR_RETURN(std::string read, ReadExternal(ext, what));
    data = std::make_shared<const std::string>(std::move(read));
  } else if (t.has_raw_data()) {
    data.reset(t.release_raw_data());
  } else {
    KF_ASSIGN_OR_RETURN(std::string encoded, EncodeTyped(t, v.dtype, count, what));
    data = std::make_shared<const std::string>(std::move(encoded));
  }
  if (static_cast<int64_t>(data->size()) != bytes) {
    return InvalidArgument(fmt::format("{} has {} bytes of data; shape {} of {} needs {}", what,
                                       data->size(), ShapeToString(v.shape), DTypeName(v.dtype),
                                       bytes));
  }
  if (constant) {
    v.kind = ValueKind::kConstant;
    v.constant = DecodeRaw(*data, v.dtype);
  } else {
    v.kind = ValueKind::kWeight;
    v.raw_data = std::move(data);
  }
  return Status::Ok();
}

struct TensorType {
  DType dtype = DType::kF32;
  Shape shape;
};

// The dtype and shape a ValueInfoProto declares. Strict (graph inputs): anything not concrete is an
// error saying how to fix it. Lenient (value_info, outputs): nullopt, and inference decides.
Result<std::optional<TensorType>> DeclaredType(const onnx::ValueInfoProto& info,
                                               const ImportOptions& options, bool strict) {
  const std::string what = fmt::format("input '{}'", info.name());
  auto fail = [&](std::string message) -> Result<std::optional<TensorType>> {
    if (!strict) return std::optional<TensorType>();
    return InvalidArgument(std::move(message));
  };
  if (!info.type().has_tensor_type()) {
    return fail(
        fmt::format("{} is not a tensor; sequence, map and optional inputs are not "
                    "supported",
                    what));
  }
  const auto& tensor = info.type().tensor_type();
  Result<DType> dtype = DTypeFromOnnx(tensor.elem_type());
  if (!dtype.ok()) return fail(dtype.status().WithContext(what).message());
  if (!tensor.has_shape()) {
    return fail(fmt::format("{} has no shape: re-export the model with static input shapes", what));
  }
  TensorType out{*dtype, {}};
  for (int i = 0; i < tensor.shape().dim_size(); ++i) {
    const auto& dim = tensor.shape().dim(i);
    if (dim.has_dim_value() && dim.dim_value() >= 0) {
      out.shape.push_back(dim.dim_value());
      continue;
    }
    if (dim.has_dim_param() && !dim.dim_param().empty()) {
      auto bound = options.dims.find(dim.dim_param());
      if (bound != options.dims.end() && bound->second >= 0) {
        out.shape.push_back(bound->second);
        continue;
      }
      return fail(fmt::format("{} dimension '{}' is symbolic: pass --dim {}=N", what,
                              dim.dim_param(), dim.dim_param()));
    }
    return fail(fmt::format("{} dimension {} is unknown: re-export with static shapes", what, i));
  }
  return std::optional<TensorType>(std::move(out));
}

// Attributes the IR keeps. A one-element tensor attribute (ConstantOfShape's `value`) becomes its
// scalar plus "<name>.elem_type" (the ONNX element type); graphs and string lists are dropped.
void ConvertAttributes(const onnx::NodeProto& proto, Node& node) {
  for (const onnx::AttributeProto& a : proto.attribute()) {
    switch (a.type()) {
      case onnx::AttributeProto::FLOAT:
        node.attributes[a.name()] = static_cast<double>(a.f());
        break;
      case onnx::AttributeProto::INT:
        node.attributes[a.name()] = a.i();
        break;
      case onnx::AttributeProto::STRING:
        node.attributes[a.name()] = a.s();
        break;
      case onnx::AttributeProto::FLOATS:
        node.attributes[a.name()] = std::vector<double>(a.floats().begin(), a.floats().end());
        break;
      case onnx::AttributeProto::INTS:
        node.attributes[a.name()] = std::vector<int64_t>(a.ints().begin(), a.ints().end());
        break;
      case onnx::AttributeProto::TENSOR: {
        Result<DType> dtype = DTypeFromOnnx(a.t().data_type());
        if (!dtype.ok() || a.t().data_location() == onnx::TensorProto::EXTERNAL) break;
        Result<Shape> shape = CheckedShape(a.t().dims(), "tensor");
        if (!shape.ok() || NumElements(*shape) != 1) break;
        std::string bytes = a.t().raw_data();
        if (!a.t().has_raw_data()) {
          Result<std::string> encoded = EncodeTyped(a.t(), *dtype, 1, "tensor");
          if (!encoded.ok()) break;
          bytes = std::move(*encoded);
        }
        if (static_cast<int64_t>(bytes.size()) != DTypeBytes(*dtype)) break;
        ConstantData value = DecodeRaw(bytes, *dtype);
        if (IsFloat(*dtype)) {
          node.attributes[a.name()] = value.floats[0];
        } else {
          node.attributes[a.name()] = value.ints[0];
        }
        node.attributes[a.name() + ".elem_type"] = static_cast<int64_t>(a.t().data_type());
        break;
      }
      default:
        break;
    }
  }
}

bool IsDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

class Importer {
 public:
  Importer(onnx::ModelProto& model, const std::string& dir, const ImportOptions& options)
      : model_(model), graph_proto_(*model.mutable_graph()), dir_(dir), options_(options) {}

  Result<Graph> Run() {
    KF_RETURN_IF_ERROR(ReadHeader());
    KF_RETURN_IF_ERROR(AddInitializers());
    KF_RETURN_IF_ERROR(AddGraphInputs());
    KF_ASSIGN_OR_RETURN(std::vector<int> order, TopologicalOrder());
    KF_RETURN_IF_ERROR(AddNodes(order));
    KF_RETURN_IF_ERROR(AddGraphOutputs());
    KF_RETURN_IF_ERROR(InferAndFold());
    RemoveFoldedNodes();
    ClassifyGraphInputs();
    if (options_.compute_dtype) ApplyComputeDtype(*options_.compute_dtype);
    return std::move(graph_);
  }

 private:
  Status ReadHeader() {
    graph_.ir_version = model_.ir_version();
    graph_.name = graph_proto_.name();
    graph_.producer = model_.producer_name();
    if (!model_.producer_version().empty()) graph_.producer += " " + model_.producer_version();
    bool found = false;
    for (const auto& opset : model_.opset_import()) {
      if (IsDefaultDomain(opset.domain())) {
        graph_.opset = opset.version();
        found = true;
      }
    }
    if (!found) return InvalidArgument("model imports no opset of the default ONNX domain");
    if (graph_.opset < kMinOpset || graph_.opset > kMaxOpset) {
      return InvalidArgument(fmt::format(
          "opset {} is not supported: kfleet imports opsets {} to {}; re-export with an "
          "opset_version in that range",
          graph_.opset, kMinOpset, kMaxOpset));
    }
    if (graph_proto_.sparse_initializer_size() > 0) {
      return InvalidArgument("sparse initializers are not supported");
    }
    for (const auto& info : graph_proto_.value_info()) declared_.emplace(info.name(), &info);
    for (const auto& info : graph_proto_.output()) declared_.emplace(info.name(), &info);
    return Status::Ok();
  }

  Status AddInitializers() {
    for (onnx::TensorProto& t : *graph_proto_.mutable_initializer()) {
      if (graph_.FindValue(t.name()) >= 0) {
        return InvalidArgument(fmt::format("initializer '{}' is defined twice", t.name()));
      }
      Value v;
      v.name = t.name();
      KF_RETURN_IF_ERROR(MakeTensorValue(t, dir_, options_.max_fold_elements,
                                         fmt::format("initializer '{}'", t.name()), v));
      graph_.AddValue(std::move(v));
    }
    return Status::Ok();
  }

  Status AddGraphInputs() {
    std::set<std::string> seen;
    for (const onnx::ValueInfoProto& info : graph_proto_.input()) {
      if (!seen.insert(info.name()).second) {
        return InvalidArgument(fmt::format("graph input '{}' is listed twice", info.name()));
      }
      // Older exporters list every initializer as an input too; the initializer is the value.
      if (graph_.FindValue(info.name()) >= 0) continue;
      KF_ASSIGN_OR_RETURN(std::optional<TensorType> type, DeclaredType(info, options_, true));
      KF_RETURN_IF_ERROR(CheckShape(type->shape, fmt::format("input '{}'", info.name())));
      Value v;
      v.name = info.name();
      v.dtype = type->dtype;
      v.shape = std::move(type->shape);
      v.has_shape = true;
      v.kind = ValueKind::kInput;
      graph_inputs_.push_back(graph_.AddValue(std::move(v)));
    }
    return Status::Ok();
  }

  std::string ProtoNodeName(int index) const {
    const onnx::NodeProto& n = graph_proto_.node(index);
    return n.name().empty() ? fmt::format("{}_{}", n.op_type(), index) : n.name();
  }

  std::string DescribeProtoNode(int index) const {
    return fmt::format("node '{}' ({})", ProtoNodeName(index), graph_proto_.node(index).op_type());
  }

  // Kahn's algorithm, taking the lowest file index among ready nodes so a file already in order
  // keeps its order. Also where dangling and twice-produced names are caught.
  Result<std::vector<int>> TopologicalOrder() {
    const int count = graph_proto_.node_size();
    std::unordered_map<std::string_view, int> producer;
    for (int n = 0; n < count; ++n) {
      for (const std::string& out : graph_proto_.node(n).output()) {
        if (out.empty()) continue;
        if (graph_.FindValue(out) >= 0) {
          return InvalidArgument(
              fmt::format("value '{}' is produced twice: by {} and as a graph input or initializer",
                          out, DescribeProtoNode(n)));
        }
        auto [it, inserted] = producer.emplace(out, n);
        if (!inserted) {
          return InvalidArgument(fmt::format("value '{}' is produced twice: by {} and by {}", out,
                                             DescribeProtoNode(it->second), DescribeProtoNode(n)));
        }
      }
    }
    std::vector<std::vector<int>> users(count);
    std::vector<std::vector<int>> predecessors(count);
    std::vector<int> pending(count, 0);
    for (int n = 0; n < count; ++n) {
      for (const std::string& in : graph_proto_.node(n).input()) {
        if (in.empty()) continue;
        auto it = producer.find(in);
        if (it != producer.end()) {
          users[it->second].push_back(n);
          predecessors[n].push_back(it->second);
          ++pending[n];
        } else if (graph_.FindValue(in) < 0) {
          return InvalidArgument(
              fmt::format("{} reads '{}', which no node, graph input or initializer provides",
                          DescribeProtoNode(n), in));
        }
      }
    }
    std::priority_queue<int, std::vector<int>, std::greater<>> ready;
    for (int n = 0; n < count; ++n) {
      if (pending[n] == 0) ready.push(n);
    }
    std::vector<int> order;
    order.reserve(count);
    while (!ready.empty()) {
      int n = ready.top();
      ready.pop();
      order.push_back(n);
      for (int user : users[n]) {
        if (--pending[user] == 0) ready.push(user);
      }
    }
    if (static_cast<int>(order.size()) == count) return order;
    // Every node left waits on another node left, so walking back through waiting predecessors
    // must revisit a node, and that node lies on a cycle.
    int at =
        static_cast<int>(std::find_if(pending.begin(), pending.end(), [](int p) { return p > 0; }) -
                         pending.begin());
    std::vector<bool> visited(count, false);
    while (!visited[at]) {
      visited[at] = true;
      at = *std::find_if(predecessors[at].begin(), predecessors[at].end(),
                         [&](int p) { return pending[p] > 0; });
    }
    return InvalidArgument(fmt::format("graph has a cycle through {}", DescribeProtoNode(at)));
  }

  Status AddNodes(const std::vector<int>& order) {
    for (int index : order) {
      onnx::NodeProto& proto = *graph_proto_.mutable_node(index);
      Node node;
      node.name = ProtoNodeName(index);
      node.op_type = proto.op_type();
      node.domain = IsDefaultDomain(proto.domain()) ? "" : proto.domain();
      for (const std::string& in : proto.input()) {
        node.inputs.push_back(in.empty() ? -1 : graph_.FindValue(in));
      }
      for (const std::string& out : proto.output()) {
        if (out.empty()) {
          node.outputs.push_back(-1);
          continue;
        }
        Value v;
        v.name = out;
        node.outputs.push_back(graph_.AddValue(std::move(v)));
      }
      bool folded = false;
      if (node.domain.empty() && node.op_type == "Constant") {
        KF_RETURN_IF_ERROR(ImportConstantNode(proto, node));
        folded = true;
      } else {
        ConvertAttributes(proto, node);
      }
      graph_.AddNode(std::move(node));
      folded_.push_back(folded);
    }
    unknown_origin_.resize(graph_.values.size());
    return Status::Ok();
  }

  // A Constant node's output is a value known at import; its list forms are turned into a tensor
  // so the initializer rules (constant or weight) apply to them too.
  Status ImportConstantNode(onnx::NodeProto& proto, const Node& node) {
    if (node.outputs.size() != 1 || node.outputs[0] < 0) {
      return InvalidArgument(fmt::format("{}: needs exactly one output", DescribeNode(node)));
    }
    onnx::TensorProto tensor;
    bool found = false;
    for (onnx::AttributeProto& a : *proto.mutable_attribute()) {
      found = true;
      if (a.name() == "value") {
        tensor.Swap(a.mutable_t());
      } else if (a.name() == "value_float") {
        tensor.set_data_type(onnx::TensorProto::FLOAT);
        tensor.add_float_data(a.f());
      } else if (a.name() == "value_floats") {
        tensor.set_data_type(onnx::TensorProto::FLOAT);
        tensor.add_dims(a.floats_size());
        *tensor.mutable_float_data() = a.floats();
      } else if (a.name() == "value_int") {
        tensor.set_data_type(onnx::TensorProto::INT64);
        tensor.add_int64_data(a.i());
      } else if (a.name() == "value_ints") {
        tensor.set_data_type(onnx::TensorProto::INT64);
        tensor.add_dims(a.ints_size());
        *tensor.mutable_int64_data() = a.ints();
      } else {
        return InvalidArgument(fmt::format("{}: constant attribute '{}' is not supported",
                                           DescribeNode(node), a.name()));
      }
    }
    if (!found) return InvalidArgument(fmt::format("{}: has no value", DescribeNode(node)));
    ++graph_.folded_nodes;
    return MakeTensorValue(tensor, dir_, options_.max_fold_elements, DescribeNode(node),
                           graph_.values[node.outputs[0]]);
  }

  Status AddGraphOutputs() {
    for (const onnx::ValueInfoProto& info : graph_proto_.output()) {
      int id = graph_.FindValue(info.name());
      if (id < 0) {
        return InvalidArgument(
            fmt::format("graph output '{}' is not produced by any node, graph input or initializer",
                        info.name()));
      }
      graph_.outputs.push_back(id);
    }
    return Status::Ok();
  }

  std::optional<TensorType> Declared(int value) const {
    auto it = declared_.find(graph_.values[value].name);
    if (it == declared_.end()) return std::nullopt;
    Result<std::optional<TensorType>> type = DeclaredType(*it->second, options_, false);
    return type.ok() ? *type : std::nullopt;
  }

  // Outputs of a node whose shapes cannot be inferred: declared ones keep their declaration, the
  // others stay unknown and remember which unsupported node they come from.
  void TakeDeclaredOrUnknown(const Node& node, const std::string& origin) {
    for (int out : node.outputs) {
      if (out < 0) continue;
      Value& v = graph_.values[out];
      if (std::optional<TensorType> type = Declared(out)) {
        v.dtype = type->dtype;
        v.shape = std::move(type->shape);
        v.has_shape = true;
      } else {
        unknown_origin_[out] = origin;
      }
    }
  }

  Status InferAndFold() {
    for (size_t n = 0; n < graph_.nodes.size(); ++n) {
      if (folded_[n]) continue;
      Node& node = graph_.nodes[n];
      if (!node.domain.empty() || !HasShapeRule(node.op_type)) {
        node.supported = false;
        node.unsupported_reason = fmt::format(
            "unsupported op '{}{}'", node.domain.empty() ? "" : node.domain + ".", node.op_type);
        TakeDeclaredOrUnknown(node, node.name);
        continue;
      }
      auto unknown = std::find_if(node.inputs.begin(), node.inputs.end(),
                                  [&](int v) { return v >= 0 && !graph_.values[v].has_shape; });
      if (unknown != node.inputs.end()) {
        const std::string& origin = unknown_origin_[*unknown];
        node.supported = false;
        node.unsupported_reason =
            fmt::format("input '{}' has unknown shape (after unsupported node '{}')",
                        graph_.values[*unknown].name, origin);
        TakeDeclaredOrUnknown(node, origin);
        continue;
      }
      Status inferred = InferShapes(graph_, node);
      // The model's own declarations win; inference fills in what it leaves out.
      bool all_declared = true;
      bool agree = true;
      for (int out : node.outputs) {
        if (out < 0) continue;
        std::optional<TensorType> type = Declared(out);
        if (!type) {
          all_declared = false;
          continue;
        }
        Value& v = graph_.values[out];
        agree = agree && v.has_shape && v.shape == type->shape && v.dtype == type->dtype;
        v.dtype = type->dtype;
        v.shape = std::move(type->shape);
        v.has_shape = true;
      }
      if (!inferred.ok()) {
        if (!all_declared) return inferred;
        continue;
      }
      if (agree && FoldConstant(graph_, node, options_.max_fold_elements)) {
        folded_[n] = true;
        ++graph_.folded_nodes;
      }
    }
    return Status::Ok();
  }

  void RemoveFoldedNodes() {
    std::vector<Node> kept;
    kept.reserve(graph_.nodes.size());
    for (size_t n = 0; n < graph_.nodes.size(); ++n) {
      if (!folded_[n]) kept.push_back(std::move(graph_.nodes[n]));
    }
    graph_.nodes = std::move(kept);
    graph_.RebuildLinks();
  }

  // Graph-only exports (PyTorch with weights left out of the file) hand parameters in as graph
  // inputs. A floating or boolean graph input counts as a weight when every use of it, looking
  // through layout ops (Transpose, Cast, Reshape, Squeeze, Unsqueeze, Flatten, Identity), is a
  // parameter slot: MatMul's B, Gemm's B and C, Conv / ConvTranspose weight and bias, the scale and
  // bias of LayerNormalization / BatchNormalization / InstanceNormalization, Gather's table (an
  // embedding), or an elementwise operand shaped like a bias or a mask (see IsBiasLike). Integer
  // inputs (token ids, positions) are always inputs. This is a heuristic: with batch 1 a
  // [1,1,N] activation fed only to an Add would pass for a bias.
  static bool IsBiasLike(const Shape& shape) {
    if (shape.size() <= 1) return true;
    const size_t leading = shape.size() == 2 ? 1 : shape.size() - 2;
    return std::all_of(shape.begin(), shape.begin() + static_cast<std::ptrdiff_t>(leading),
                       [](int64_t d) { return d == 1; });
  }

  bool IsParameterUse(const Node& node, size_t slot, const Value& operand) const {
    static const std::set<std::string_view> kLayout = {"Transpose", "Cast",    "Reshape", "Squeeze",
                                                       "Unsqueeze", "Flatten", "Identity"};
    static const std::set<std::string_view> kElementwise = {
        "Add", "Sub",   "Mul",   "Div",  "Pow",     "Max",         "Min",           "And",
        "Or",  "Where", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"};
    const std::string_view op = node.op_type;
    if (!node.supported || node.outputs.empty()) return false;
    if (kLayout.count(op) != 0) {
      return slot == 0 && node.outputs[0] >= 0 && UsedOnlyAsParameter(node.outputs[0]);
    }
    if (op == "MatMul") return slot == 1;
    if (op == "Gemm" || op == "Conv" || op == "ConvTranspose") return slot == 1 || slot == 2;
    if (op == "LayerNormalization" || op == "BatchNormalization" || op == "InstanceNormalization") {
      return slot >= 1;
    }
    if (op == "Gather") return slot == 0;
    if (kElementwise.count(op) != 0) return operand.has_shape && IsBiasLike(operand.shape);
    return false;
  }

  bool UsedOnlyAsParameter(int value) const {
    const Value& v = graph_.values[value];
    if (v.consumers.empty()) return false;
    if (std::find(graph_.outputs.begin(), graph_.outputs.end(), value) != graph_.outputs.end()) {
      return false;
    }
    for (int user : v.consumers) {
      const Node& node = graph_.nodes[user];
      for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
        if (node.inputs[slot] == value && !IsParameterUse(node, slot, v)) return false;
      }
    }
    return true;
  }

  void ClassifyGraphInputs() {
    for (int id : graph_inputs_) {
      Value& v = graph_.values[id];
      if ((IsFloat(v.dtype) || v.dtype == DType::kBool) && UsedOnlyAsParameter(id)) {
        v.kind = ValueKind::kWeight;
      }
    }
    graph_.inputs = graph_inputs_;
  }

  // The stored bytes (raw_data, external) keep the file's dtype; only the planned dtype changes.
  void ApplyComputeDtype(DType dtype) {
    for (Value& v : graph_.values) {
      if (IsFloat(v.dtype)) v.dtype = dtype;
    }
    for (Node& node : graph_.nodes) {
      if (node.op_type != "Cast" || !node.domain.empty()) continue;
      Result<DType> to = DTypeFromOnnx(static_cast<int32_t>(node.IntAttr("to", 0)));
      if (to.ok() && IsFloat(*to)) node.attributes["to"] = static_cast<int64_t>(DTypeToOnnx(dtype));
    }
  }

  onnx::ModelProto& model_;
  onnx::GraphProto& graph_proto_;
  const std::string& dir_;
  const ImportOptions& options_;
  Graph graph_;
  // value_info and graph outputs by name: the model's own shape declarations.
  std::unordered_map<std::string, const onnx::ValueInfoProto*> declared_;
  std::vector<int> graph_inputs_;  // graph inputs that are not initializers, model order
  std::vector<bool> folded_;       // per node of graph_.nodes until RemoveFoldedNodes
  // Per value without a shape: the unsupported node it comes from, for people reading reasons.
  std::vector<std::string> unknown_origin_;
};

// Names in a damaged or hostile file may hold newlines or escape codes; errors stay one line.
Status OneLine(const Status& status) {
  std::string message;
  for (char ch : status.message()) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte == 0x7f) {
      message += fmt::format("\\x{:02x}", byte);
    } else {
      message += ch;
    }
  }
  return Status(status.code(), std::move(message));
}

Result<Graph> ImportModel(onnx::ModelProto& model, std::string_view display_name,
                          const std::string& external_data_dir, const ImportOptions& options) {
  if (!model.has_graph()) {
    return InvalidArgument(fmt::format("{}: not an ONNX model: it has no graph", display_name));
  }
  Importer importer(model, external_data_dir, options);
  Result<Graph> graph = importer.Run();
  if (!graph.ok()) return OneLine(graph.status().WithContext(display_name));
  return graph;
}

}  // namespace

Result<Graph> ImportOnnxBytes(std::string_view bytes, std::string_view display_name,
                              const std::string& external_data_dir, const ImportOptions& options) {
  if (bytes.empty()) return InvalidArgument(fmt::format("{}: file is empty", display_name));
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return InvalidArgument(fmt::format(
        "{}: {} bytes is over protobuf's 2 GiB limit; save the weights as external data",
        display_name, bytes.size()));
  }
  onnx::ModelProto model;
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  google::protobuf::io::CodedInputStream coded(&stream);
  coded.SetTotalBytesLimit(INT_MAX);
  bool parsed = false;
  try {
    parsed = model.ParseFromCodedStream(&coded) && coded.ConsumedEntireMessage();
  } catch (const std::exception& e) {
    return InvalidArgument(fmt::format("{}: not an ONNX model: {}", display_name, e.what()));
  }
  if (!parsed) {
    return InvalidArgument(
        fmt::format("{}: not an ONNX model: the protobuf does not parse (truncated or not ONNX)",
                    display_name));
  }
  return ImportModel(model, display_name, external_data_dir, options);
}

Result<Graph> ImportOnnxFile(const std::string& path, const ImportOptions& options) {
  const fs::path file(path);
  const std::string display_name = file.filename().string();
  Result<MappedFile> mapped = MappedFile::Open(file);
  if (!mapped.ok()) return mapped.status().WithContext(display_name);
  const std::string dir = file.has_parent_path() ? file.parent_path().string() : ".";
  return ImportOnnxBytes(mapped->data(), display_name, dir, options);
}

namespace {

constexpr std::string_view kTextDisplayName = "onnx text";

Result<onnx::ModelProto> ParseOnnxText(std::string_view text) {
  const std::string terminated(text);
  onnx::ModelProto model;
  try {
    onnx::Common::Status status = onnx::OnnxParser::Parse(model, terminated.c_str());
    if (!status.IsOK()) {
      return OneLine(InvalidArgument(
          fmt::format("{}: parse error: {}", kTextDisplayName, status.ErrorMessage())));
    }
  } catch (const std::exception& e) {
    return InvalidArgument(fmt::format("{}: parse error: {}", kTextDisplayName, e.what()));
  }
  return model;
}

}  // namespace

Result<std::optional<DType>> ParseComputeDtype(std::string_view text) {
  if (text.empty()) return std::optional<DType>();
  Result<DType> dtype = ParseDType(text);
  if (!dtype.ok()) return dtype.status().WithContext("--dtype");
  if (!IsFloat(*dtype))
    return InvalidArgument("--dtype must be a floating type: fp32, fp16 or bf16");
  return std::optional<DType>(*dtype);
}

Result<Graph> ImportOnnxText(std::string_view text, const ImportOptions& options) {
  KF_ASSIGN_OR_RETURN(onnx::ModelProto model, ParseOnnxText(text));
  return ImportModel(model, kTextDisplayName, "", options);
}

Result<std::string> OnnxTextToModelBytes(std::string_view text) {
  KF_ASSIGN_OR_RETURN(onnx::ModelProto model, ParseOnnxText(text));
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return Internal(fmt::format("{}: could not serialize the model", kTextDisplayName));
  }
  return bytes;
}

}  // namespace kfleet::planner
