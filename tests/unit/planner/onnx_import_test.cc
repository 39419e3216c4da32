// Import: value kinds, initializer encodings, external data, symbolic dims, compute dtype,
// unsupported ops, every bad-file error, and the four real PyTorch exports in tests/data/models.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/temp_dir.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::planner {
namespace {

namespace fs = std::filesystem;
using import_testing::ImportError;
using import_testing::MustImport;
using import_testing::ShapeOf;
using import_testing::TestModelPath;
using import_testing::ValueNamed;

std::string ReadModel(const std::string& file) {
  Result<std::string> bytes = ReadFile(TestModelPath(file));
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? *bytes : std::string();
}

Graph ImportModelFile(const std::string& file, const ImportOptions& options = {}) {
  Result<Graph> g = ImportOnnxFile(TestModelPath(file), options);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : Graph{};
}

// A model with one float input `x` [2] and the given initializers, each also a graph output.
onnx::ModelProto ModelWithInitializers(std::vector<onnx::TensorProto> initializers) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(18);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("g");
  for (onnx::TensorProto& t : initializers) {
    graph->add_output()->set_name(t.name());
    *graph->add_initializer() = std::move(t);
  }
  return model;
}

onnx::TensorProto Tensor(const std::string& name, int32_t data_type, std::vector<int64_t> dims) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(data_type);
  for (int64_t d : dims) t.add_dims(d);
  return t;
}

onnx::TensorProto ExternalTensor(const std::string& name, const std::string& location,
                                 int64_t offset, int64_t length, int64_t elements) {
  onnx::TensorProto t = Tensor(name, onnx::TensorProto::FLOAT, {elements});
  t.set_data_location(onnx::TensorProto::EXTERNAL);
  auto add = [&](const std::string& key, const std::string& value) {
    auto* entry = t.add_external_data();
    entry->set_key(key);
    entry->set_value(value);
  };
  add("location", location);
  add("offset", std::to_string(offset));
  add("length", std::to_string(length));
  return t;
}

Result<Graph> ImportProto(const onnx::ModelProto& model, const std::string& dir = "") {
  return ImportOnnxBytes(model.SerializeAsString(), "m.onnx", dir, ImportOptions{});
}

TEST(ImportTest, NodeNamesGraphInputsAndOutputs) {
  Graph g = MustImport(18, R"(
    g (float[2,3] x) => (float[2,3] y, float[2,3] r) {
      r = Relu(x)
      y = Sigmoid(r)
    })");
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[0].name, "Relu_0");
  EXPECT_EQ(g.nodes[1].name, "Sigmoid_1");
  EXPECT_EQ(g.opset, 18);
  EXPECT_EQ(g.ir_version, 8);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.values[g.inputs[0]].name, "x");
  EXPECT_EQ(g.values[g.inputs[0]].kind, ValueKind::kInput);
  ASSERT_EQ(g.outputs.size(), 2u);
  EXPECT_EQ(g.values[g.outputs[0]].name, "y");
  EXPECT_EQ(g.values[g.outputs[1]].name, "r");
}

TEST(ImportTest, NodesAreSortedTopologically) {
  Graph g = MustImport(18, R"(
    g (float[2] x) => (float[2] y) {
      y = Neg(b)
      b = Exp(a)
      a = Relu(x)
    })");
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(g.nodes[0].op_type, "Relu");
  EXPECT_EQ(g.nodes[1].op_type, "Exp");
  EXPECT_EQ(g.nodes[2].op_type, "Neg");
  EXPECT_EQ(g.nodes[2].name, "Neg_0");
  EXPECT_EQ(ValueNamed(g, "b").producer, 1);
  EXPECT_EQ(ValueNamed(g, "b").consumers, std::vector<int>({2}));
}

TEST(ImportTest, OpsetOutsideTheSupportedRangeIsRefused) {
  EXPECT_EQ(ImportError(12, "g (float[2] x) => (float[2] y) { y = Relu(x) }"),
            "onnx text: opset 12 is not supported: kfleet imports opsets 13 to 20; re-export "
            "with an opset_version in that range");
  EXPECT_NE(ImportError(21, "g (float[2] x) => (float[2] y) { y = Relu(x) }"), "");
  EXPECT_EQ(ImportError(20, "g (float[2] x) => (float[2] y) { y = Relu(x) }"), "");
}

TEST(ImportTest, SymbolicDimsMustBeBound) {
  const char* graph = R"(
    g (int64[batch, 16] input_ids) => (int64[batch, 16] y) { y = Identity(input_ids) })";
  EXPECT_EQ(ImportError(18, graph),
            "onnx text: input 'input_ids' dimension 'batch' is symbolic: pass --dim batch=N");
  ImportOptions options;
  options.dims["batch"] = 4;
  Graph g = MustImport(18, graph, options);
  EXPECT_EQ(ShapeOf(g, "input_ids"), Shape({4, 16}));
  EXPECT_EQ(ShapeOf(g, "y"), Shape({4, 16}));
}

TEST(ImportTest, SymbolicDimsInValueInfoAreBoundOrIgnored) {
  ImportOptions options;
  options.dims["n"] = 3;
  Result<Graph> g = ImportOnnxText(import_testing::OnnxText(18, R"(
    g (float[n, 4] x) => (float[n, 4] y) <float[unbound, 4] a> {
      a = Relu(x)
      y = Neg(a)
    })"),
                                   options);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(ShapeOf(*g, "a"), Shape({3, 4}));
  EXPECT_EQ(ShapeOf(*g, "y"), Shape({3, 4}));
}

TEST(ImportTest, ComputeDtypeAppliesToEveryFloatingValueAndCastTarget) {
  ImportOptions options;
  options.compute_dtype = DType::kF16;
  Graph g = MustImport(18, R"(
    g (float[2,3] x, int64[2] i) => (float[2,3] y) <float half = {0.5}> {
      c = Cast<to = 1>(i)
      ci = Cast<to = 7>(x)
      y = Add(x, half)
    })",
                       options);
  EXPECT_EQ(ValueNamed(g, "x").dtype, DType::kF16);
  EXPECT_EQ(ValueNamed(g, "y").dtype, DType::kF16);
  EXPECT_EQ(ValueNamed(g, "c").dtype, DType::kF16);
  EXPECT_EQ(ValueNamed(g, "ci").dtype, DType::kI64);
  EXPECT_EQ(ValueNamed(g, "i").dtype, DType::kI64);
  const Value& half = ValueNamed(g, "half");
  EXPECT_EQ(half.dtype, DType::kF16);
  EXPECT_EQ(half.constant->floats, std::vector<double>({0.5}));
  ASSERT_EQ(g.nodes[0].op_type, "Cast");
  EXPECT_EQ(g.nodes[0].IntAttr("to", 0), DTypeToOnnx(DType::kF16));
  EXPECT_EQ(g.nodes[1].IntAttr("to", 0), DTypeToOnnx(DType::kI64));
}

TEST(ImportTest, UnsupportedOpsAreMarkedAndTheRestImports) {
  const std::string signature = "g (float[2,3] x) => (float[2,3] y) ";
  const std::string body = R"({
      a = Relu(x)
      b = com.microsoft.FusedMatMul<alpha = 1.0>(a, a)
      c = Add(b, a)
      d = Relu(c)
      y = Sigmoid(a)
    })";
  Graph g = MustImport(18, signature + body);
  ASSERT_EQ(g.nodes.size(), 5u);
  EXPECT_TRUE(g.nodes[0].supported);
  EXPECT_FALSE(g.nodes[1].supported);
  EXPECT_EQ(g.nodes[1].domain, "com.microsoft");
  EXPECT_EQ(g.nodes[1].unsupported_reason, "unsupported op 'com.microsoft.FusedMatMul'");
  EXPECT_FALSE(ValueNamed(g, "b").has_shape);
  EXPECT_FALSE(g.nodes[2].supported);
  EXPECT_EQ(g.nodes[2].unsupported_reason,
            "input 'b' has unknown shape (after unsupported node 'FusedMatMul_1')");
  EXPECT_FALSE(g.nodes[3].supported);
  EXPECT_EQ(g.nodes[3].unsupported_reason,
            "input 'c' has unknown shape (after unsupported node 'FusedMatMul_1')");
  EXPECT_TRUE(g.nodes[4].supported);
  EXPECT_EQ(ShapeOf(g, "y"), Shape({2, 3}));

  // With the custom op's output declared, only the custom op itself is opaque.
  Result<Graph> declared =
      ImportOnnxText(import_testing::OnnxText(18, signature + "<float[2,3] b> " + body), {});
  ASSERT_TRUE(declared.ok()) << declared.status().ToString();
  EXPECT_FALSE(declared->nodes[1].supported);
  EXPECT_EQ(ShapeOf(*declared, "b"), Shape({2, 3}));
  EXPECT_TRUE(declared->nodes[2].supported);
  EXPECT_EQ(ShapeOf(*declared, "d"), Shape({2, 3}));

  // Unknown default-domain ops are handled the same way.
  Graph nonzero = MustImport(18, R"(
    g (float[2,3] x) => (float[2,3] y) { y = NonZero(x) })");
  EXPECT_EQ(nonzero.nodes[0].unsupported_reason, "unsupported op 'NonZero'");
}

TEST(ImportTest, WeightsGivenAsGraphInputsAreRecognized) {
  Graph g = MustImport(18, R"(
    g (float[1,4] x, float[8,4] w, float[8] b, float[8] gamma, float[8] beta, int64[1,4] ids,
       float[100,8] table, float[2,8] act, bool[1,1,4,4] mask)
      => (float[1,8] y, float[1,4,8] e, float[2,8] z, bool[1,1,4,4] m) {
      wt = Transpose(w)
      h = MatMul(x, wt)
      hb = Add(h, b)
      y = LayerNormalization(hb, gamma, beta)
      e = Gather(table, ids)
      z = Add(act, b)
      m = And(mask, mask)
    })");
  EXPECT_EQ(ValueNamed(g, "x").kind, ValueKind::kInput);
  EXPECT_EQ(ValueNamed(g, "w").kind, ValueKind::kWeight);
  EXPECT_EQ(ValueNamed(g, "b").kind, ValueKind::kWeight);
  EXPECT_EQ(ValueNamed(g, "gamma").kind, ValueKind::kWeight);
  EXPECT_EQ(ValueNamed(g, "beta").kind, ValueKind::kWeight);
  EXPECT_EQ(ValueNamed(g, "ids").kind, ValueKind::kInput);
  EXPECT_EQ(ValueNamed(g, "table").kind, ValueKind::kWeight);
  // [2,8] has a batch dim: an activation-like operand, not a bias.
  EXPECT_EQ(ValueNamed(g, "act").kind, ValueKind::kInput);
  EXPECT_EQ(ValueNamed(g, "mask").kind, ValueKind::kWeight);
  EXPECT_EQ(g.inputs.size(), 9u);
  EXPECT_EQ(g.WeightElements(), 32 + 8 + 8 + 8 + 800 + 16);
}

TEST(ImportTest, InitializersInEveryEncoding) {
  std::vector<onnx::TensorProto> tensors;
  onnx::TensorProto h = Tensor("h", onnx::TensorProto::FLOAT16, {2});
  h.add_int32_data(0x3C00);  // 1.0
  h.add_int32_data(0xC000);  // -2.0
  tensors.push_back(h);
  onnx::TensorProto bf = Tensor("bf", onnx::TensorProto::BFLOAT16, {1});
  bf.add_int32_data(0x3FC0);  // 1.5
  tensors.push_back(bf);
  onnx::TensorProto flags = Tensor("flags", onnx::TensorProto::BOOL, {3});
  for (int v : {1, 0, 1}) flags.add_int32_data(v);
  tensors.push_back(flags);
  onnx::TensorProto i8 = Tensor("i8", onnx::TensorProto::INT8, {2});
  for (int v : {-3, 7}) i8.add_int32_data(v);
  tensors.push_back(i8);
  onnx::TensorProto u8 = Tensor("u8", onnx::TensorProto::UINT8, {1});
  u8.add_int32_data(200);
  tensors.push_back(u8);
  onnx::TensorProto i16 = Tensor("i16", onnx::TensorProto::INT16, {1});
  i16.add_int32_data(-30000);
  tensors.push_back(i16);
  onnx::TensorProto i32 = Tensor("i32", onnx::TensorProto::INT32, {1});
  i32.add_int32_data(123456);
  tensors.push_back(i32);
  onnx::TensorProto d = Tensor("d", onnx::TensorProto::DOUBLE, {1});
  d.add_double_data(2.25);
  tensors.push_back(d);
  onnx::TensorProto raw = Tensor("raw", onnx::TensorProto::INT64, {2});
  const int64_t raw_values[2] = {5, -6};
  raw.set_raw_data(std::string(reinterpret_cast<const char*>(raw_values), sizeof raw_values));
  tensors.push_back(raw);
  onnx::TensorProto big = Tensor("big", onnx::TensorProto::FLOAT16, {3, 4});
  for (int k = 0; k < 12; ++k) big.add_int32_data(0x3C00);
  tensors.push_back(big);
  Result<Graph> g = ImportProto(ModelWithInitializers(std::move(tensors)));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(ValueNamed(*g, "h").constant->floats, std::vector<double>({1.0, -2.0}));
  EXPECT_EQ(ValueNamed(*g, "h").dtype, DType::kF16);
  EXPECT_EQ(ValueNamed(*g, "bf").constant->floats, std::vector<double>({1.5}));
  EXPECT_EQ(ValueNamed(*g, "flags").constant->ints, std::vector<int64_t>({1, 0, 1}));
  EXPECT_EQ(ValueNamed(*g, "i8").constant->ints, std::vector<int64_t>({-3, 7}));
  EXPECT_EQ(ValueNamed(*g, "u8").constant->ints, std::vector<int64_t>({200}));
  EXPECT_EQ(ValueNamed(*g, "i16").constant->ints, std::vector<int64_t>({-30000}));
  EXPECT_EQ(ValueNamed(*g, "i32").constant->ints, std::vector<int64_t>({123456}));
  EXPECT_EQ(ValueNamed(*g, "d").constant->floats, std::vector<double>({2.25}));
  EXPECT_EQ(ValueNamed(*g, "raw").constant->ints, std::vector<int64_t>({5, -6}));
  const Value& weight = ValueNamed(*g, "big");
  EXPECT_EQ(weight.kind, ValueKind::kWeight);
  ASSERT_NE(weight.raw_data, nullptr);
  EXPECT_EQ(weight.raw_data->size(), 24u);
  EXPECT_EQ(static_cast<unsigned char>((*weight.raw_data)[1]), 0x3C);
  EXPECT_TRUE(g->inputs.empty());
  EXPECT_EQ(g->WeightBytes(), 24);
}

TEST(ImportTest, InitializerWithTooLittleDataIsAnError) {
  onnx::TensorProto t = Tensor("w", onnx::TensorProto::FLOAT, {4});
  t.set_raw_data(std::string(12, '\0'));
  Result<Graph> g = ImportProto(ModelWithInitializers({t}));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().message(),
            "m.onnx: initializer 'w' has 12 bytes of data; shape [4] of f32 needs 16");
}

TEST(ImportTest, BadBytesGetOneLineErrors) {
  std::string gpt2 = ReadModel("gpt2-small_b1s128.onnx");
  Result<Graph> truncated =
      ImportOnnxBytes(std::string_view(gpt2).substr(0, gpt2.size() / 2), "gpt2.onnx", "", {});
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().message(),
            "gpt2.onnx: not an ONNX model: the protobuf does not parse (truncated or not ONNX)");

  std::mt19937 random(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(random());
  Result<Graph> garbage = ImportOnnxBytes(noise, "noise.onnx", "", {});
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().message().rfind("noise.onnx: not an ONNX model", 0), 0u)
      << garbage.status().message();

  Result<Graph> empty = ImportOnnxBytes("", "empty.onnx", "", {});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), "empty.onnx: file is empty");

  onnx::ModelProto no_graph;
  no_graph.set_ir_version(8);
  Result<Graph> graphless = ImportProto(no_graph);
  ASSERT_FALSE(graphless.ok());
  EXPECT_EQ(graphless.status().message(), "m.onnx: not an ONNX model: it has no graph");

  Result<Graph> text = ImportOnnxText("<ir_version: 8> g (float[2] x => (", {});
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message().find('\n'), std::string::npos);
}

// Damaged copies of a real model either import or fail with one line naming the file.
TEST(ImportTest, TruncatedAndCorruptedModelsNeverCrash) {
  const std::string model = ReadModel("tinygpt2_1.onnx");
  const std::string dir = fs::path(TestModelPath("tinygpt2_1.onnx")).parent_path().string();
  auto check = [&](std::string_view bytes) {
    Result<Graph> g = ImportOnnxBytes(bytes, "t.onnx", dir, ImportOptions{});
    if (g.ok()) return;
    EXPECT_EQ(g.status().message().rfind("t.onnx: ", 0), 0u) << g.status().message();
    EXPECT_EQ(g.status().message().find('\n'), std::string::npos) << g.status().message();
  };
  for (size_t cut = 1; cut < model.size(); cut += 37) check(std::string_view(model).substr(0, cut));
  std::mt19937 random(11);
  for (int round = 0; round < 300; ++round) {
    std::string damaged = model;
    for (int flips = 0; flips < 3; ++flips) {
      damaged[random() % damaged.size()] = static_cast<char>(random());
    }
    check(damaged);
  }
}

TEST(ImportTest, BrokenGraphStructureErrors) {
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y) {
      a = Add(x, b)
      b = Relu(a)
      y = Identity(a)
    })"),
            "onnx text: graph has a cycle through node 'Add_0' (Add)");
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y) { y = Add(x, foo) })"),
            "onnx text: node 'Add_0' (Add) reads 'foo', which no node, graph input or "
            "initializer provides");
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y, float[2] z) { y = Relu(x) })"),
            "onnx text: graph output 'z' is not produced by any node, graph input or initializer");
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y) {
      y = Relu(x)
      y = Neg(x)
    })"),
            "onnx text: value 'y' is produced twice: by node 'Relu_0' (Relu) and by node "
            "'Neg_1' (Neg)");
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y) {
      x = Relu(x)
      y = Neg(x)
    })"),
            "onnx text: value 'x' is produced twice: by node 'Relu_0' (Relu) and as a graph "
            "input or initializer");
  EXPECT_EQ(ImportError(18, R"(
    g (string[2] x) => (float[2] y) { y = Relu(x) })"),
            "onnx text: input 'x': tensor element type STRING is not supported");
}

class ImportExternalDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-import");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
    ASSERT_TRUE(WriteFileAtomic(dir_->path() / "w.bin", std::string(64, '\1')).ok());
  }

  Result<Graph> ImportWith(onnx::TensorProto tensor) {
    std::string path = (dir_->path() / "m.onnx").string();
    EXPECT_TRUE(
        WriteFileAtomic(path, ModelWithInitializers({std::move(tensor)}).SerializeAsString()).ok());
    return ImportOnnxFile(path, ImportOptions{});
  }

  std::string ErrorWith(onnx::TensorProto tensor) {
    Result<Graph> g = ImportWith(std::move(tensor));
    return g.ok() ? std::string() : g.status().message();
  }

  std::optional<TempDir> dir_;
};

TEST_F(ImportExternalDataTest, WeightsResolveWithoutBeingRead) {
  Result<Graph> g = ImportWith(ExternalTensor("w", "w.bin", 16, 48, 12));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  const Value& w = ValueNamed(*g, "w");
  EXPECT_EQ(w.kind, ValueKind::kWeight);
  ASSERT_TRUE(w.external.has_value());
  EXPECT_EQ(w.external->path, (dir_->path() / "w.bin").string());
  EXPECT_EQ(w.external->offset, 16);
  EXPECT_EQ(w.external->length, 48);
  EXPECT_EQ(w.raw_data, nullptr);
}

TEST_F(ImportExternalDataTest, SmallConstantsAreRead) {
  onnx::TensorProto t = ExternalTensor("c", "w.bin", 0, 8, 1);
  t.set_data_type(onnx::TensorProto::INT64);
  Result<Graph> g = ImportWith(t);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(ValueNamed(*g, "c").constant->ints, std::vector<int64_t>({0x0101010101010101}));
}

TEST_F(ImportExternalDataTest, BadReferencesAreErrors) {
  EXPECT_EQ(ErrorWith(ExternalTensor("w", "missing.bin", 0, 16, 4))
                .rfind("m.onnx: initializer 'w': external data file '" +
                           (dir_->path() / "missing.bin").string() + "' cannot be read",
                       0),
            0u);
  EXPECT_EQ(ErrorWith(ExternalTensor("w", "w.bin", 32, 48, 12)),
            "m.onnx: initializer 'w': external data bytes 32..80 are past the end of '" +
                (dir_->path() / "w.bin").string() + "' (64 bytes)");
  EXPECT_EQ(ErrorWith(ExternalTensor("w", "w.bin", 0, 20, 4)),
            "m.onnx: initializer 'w': external data length 20 does not match its shape (16 "
            "bytes)");
  EXPECT_EQ(ErrorWith(ExternalTensor("w", "../w.bin", 0, 16, 4)),
            "m.onnx: initializer 'w': external data location '../w.bin' leaves the model's "
            "directory");
  EXPECT_EQ(ErrorWith(ExternalTensor("w", "/etc/passwd", 0, 16, 4)),
            "m.onnx: initializer 'w': external data location '/etc/passwd' leaves the model's "
            "directory");
  Result<Graph> from_bytes =
      ImportProto(ModelWithInitializers({ExternalTensor("w", "w.bin", 0, 16, 4)}));
  ASSERT_FALSE(from_bytes.ok());
  EXPECT_EQ(from_bytes.status().message(),
            "m.onnx: initializer 'w': weights are in external file 'w.bin', but the model was "
            "not loaded from a file");
}

TEST_F(ImportExternalDataTest, RealModelWithoutItsDataFile) {
  fs::copy_file(TestModelPath("tinygpt2_1.onnx"), dir_->path() / "tinygpt2_1.onnx");
  Result<Graph> g = ImportOnnxFile((dir_->path() / "tinygpt2_1.onnx").string(), {});
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(g.status().message().rfind("tinygpt2_1.onnx: initializer '", 0), 0u)
      << g.status().message();
}

// Every node's values have shapes and every node is supported.
void ExpectFullyInferred(const Graph& g) {
  for (const Node& node : g.nodes) {
    EXPECT_TRUE(node.supported) << DescribeNode(node) << ": " << node.unsupported_reason;
    for (const std::vector<int>* ids : {&node.inputs, &node.outputs}) {
      for (int v : *ids) {
        if (v < 0) continue;
        EXPECT_TRUE(g.values[v].has_shape) << g.values[v].name;
      }
    }
  }
}

std::map<std::string, int> CountKinds(const Graph& g, const std::vector<int>& ids) {
  std::map<std::string, int> kinds;
  for (int id : ids) ++kinds[std::string(ValueKindName(g.values[id].kind))];
  return kinds;
}

TEST(ImportRealModelsTest, Gpt2SmallHasOneInputAndWeightsAsGraphInputs) {
  Graph g = ImportModelFile("gpt2-small_b1s128.onnx");
  ExpectFullyInferred(g);
  EXPECT_EQ(g.opset, 18);
  EXPECT_EQ(g.ir_version, 10);
  EXPECT_EQ(g.producer, "pytorch 2.11.0+cu130");
  // Shapes come from initializers; nothing is computed at run time, so nothing folds.
  EXPECT_EQ(g.nodes.size(), 455u);
  EXPECT_EQ(g.folded_nodes, 0);
  ASSERT_EQ(g.inputs.size(), 53u);
  std::vector<int> kinputs;
  for (int id : g.inputs) {
    if (g.values[id].kind == ValueKind::kInput) kinputs.push_back(id);
  }
  ASSERT_EQ(kinputs.size(), 1u);
  EXPECT_EQ(g.values[kinputs[0]].name, "x");
  EXPECT_EQ(g.values[kinputs[0]].dtype, DType::kI64);
  EXPECT_EQ(g.values[kinputs[0]].shape, Shape({1, 128}));
  EXPECT_EQ(CountKinds(g, g.inputs)["weight"], 52);
  // 124.4M parameters: GPT-2 small's 124M plus the two lifted [1,1,128,128] attention masks.
  EXPECT_EQ(g.WeightElements(), 124352768);
  ASSERT_EQ(g.outputs.size(), 1u);
  EXPECT_EQ(g.values[g.outputs[0]].shape, Shape({1, 128, 50257}));
}

TEST(ImportRealModelsTest, Resnet50) {
  Graph g = ImportModelFile("resnet50_b8.onnx");
  ExpectFullyInferred(g);
  EXPECT_EQ(g.nodes.size(), 122u);
  EXPECT_EQ(CountKinds(g, g.inputs), (std::map<std::string, int>{{"input", 1}, {"weight", 53}}));
  EXPECT_EQ(ShapeOf(g, "mean"), Shape({8, 2048, 1, 1}));
  EXPECT_EQ(g.values[g.outputs[0]].shape, Shape({8, 1000}));
  // ResNet-50's 25,557,032 parameters less the 53,120 of its batch norms, which the export
  // folded into the convolutions.
  EXPECT_EQ(g.WeightElements(), 25503912);
}

TEST(ImportRealModelsTest, MobilenetV2Opset17) {
  Graph g = ImportModelFile("mobilenet_v2_b8.op17.onnx");
  ExpectFullyInferred(g);
  EXPECT_EQ(g.opset, 17);
  EXPECT_EQ(g.nodes.size(), 100u);
  EXPECT_EQ(CountKinds(g, g.inputs), (std::map<std::string, int>{{"input", 1}, {"weight", 35}}));
  EXPECT_EQ(ValueNamed(g, "min_val_cast").kind, ValueKind::kConstant);
  EXPECT_EQ(g.values[g.outputs[0]].shape, Shape({8, 1000}));
}

TEST(ImportRealModelsTest, TinyGpt2ExternalWeightsResolve) {
  Graph g = ImportModelFile("tinygpt2_1.onnx");
  ExpectFullyInferred(g);
  EXPECT_EQ(g.opset, 20);
  EXPECT_EQ(g.nodes.size(), 50u);
  const Value& lm_head = ValueNamed(g, "lm_head.weight");
  EXPECT_EQ(lm_head.kind, ValueKind::kWeight);
  ASSERT_TRUE(lm_head.external.has_value());
  EXPECT_EQ(fs::path(lm_head.external->path).filename(), "tinygpt2_1.onnx.data");
  EXPECT_EQ(lm_head.external->offset, 208896);
  EXPECT_EQ(lm_head.external->length, 512 * 64 * 4);
  int external = 0;
  for (const Value& v : g.values) external += v.external.has_value() ? 1 : 0;
  EXPECT_EQ(external, 7);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.values[g.inputs[0]].name, "input_ids");
  EXPECT_EQ(g.values[g.outputs[0]].shape, Shape({1, 32, 512}));

  // Planned in fp16, the weights still say how their bytes are stored.
  ImportOptions half;
  half.compute_dtype = DType::kF16;
  Result<Graph> h = ImportOnnxFile(TestModelPath("tinygpt2_1.onnx"), half);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(ValueNamed(*h, "lm_head.weight").dtype, DType::kF16);
  EXPECT_EQ(ValueNamed(*h, "lm_head.weight").data_dtype, DType::kF32);
}

// The strongest check of inference: each real model imported with its value_info removed must
// give every value the shape and dtype the exporter declared.
TEST(ImportRealModelsTest, InferenceMatchesTheExportersValueInfo) {
  for (const char* file : {"gpt2-small_b1s128.onnx", "resnet50_b8.onnx",
                           "mobilenet_v2_b8.op17.onnx", "tinygpt2_1.onnx"}) {
    SCOPED_TRACE(file);
    Graph declared = ImportModelFile(file);
    onnx::ModelProto model;
    ASSERT_TRUE(model.ParseFromString(ReadModel(file)));
    ASSERT_GT(model.graph().value_info_size(), 0);
    model.mutable_graph()->clear_value_info();
    Result<Graph> inferred =
        ImportOnnxBytes(model.SerializeAsString(), file,
                        fs::path(TestModelPath(file)).parent_path().string(), ImportOptions{});
    ASSERT_TRUE(inferred.ok()) << inferred.status().ToString();
    ASSERT_EQ(inferred->values.size(), declared.values.size());
    ASSERT_EQ(inferred->nodes.size(), declared.nodes.size());
    for (const Value& v : declared.values) {
      const Value& w = ValueNamed(*inferred, v.name);
      EXPECT_EQ(w.has_shape, v.has_shape) << v.name;
      EXPECT_EQ(w.shape, v.shape) << v.name;
      EXPECT_EQ(w.dtype, v.dtype) << v.name;
      EXPECT_EQ(w.kind, v.kind) << v.name;
    }
  }
}

}  // namespace
}  // namespace kfleet::planner
