#include "planner/cost_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace kfleet::planner {
namespace {

// --- Device catalog -------------------------------------------------------------------------

TEST(DeviceCatalogTest, BuiltinHasEveryDeviceWithPositiveNumbers) {
  const DeviceCatalog& catalog = DeviceCatalog::Builtin();
  EXPECT_EQ(catalog.Ids(),
            (std::vector<std::string>{"a100", "cpu", "h100", "h200", "l40s", "mi250x", "mi300x"}));
  for (const std::string& id : catalog.Ids()) {
    SCOPED_TRACE(id);
    Result<DeviceModel> d = catalog.Find(id);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(d->id, id);
    EXPECT_FALSE(d->name.empty());
    EXPECT_TRUE(d->backend == "cuda" || d->backend == "hip" || d->backend == "cpu");
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64}) {
      EXPECT_GT(d->MatrixFlopsPerS(dtype), 0);
      EXPECT_GT(d->VectorFlopsPerS(dtype), 0);
    }
    EXPECT_GT(d->memory_bytes_per_s, 0);
    EXPECT_GT(d->l2_bytes, 0);
    EXPECT_GT(d->compute_units, 0);
    EXPECT_GT(d->launch_overhead_s, 0);
    EXPECT_GT(d->baseline_matrix_efficiency, 0);
    EXPECT_LE(d->baseline_matrix_efficiency, 1);
    EXPECT_GT(d->baseline_memory_efficiency, 0);
    EXPECT_LE(d->baseline_memory_efficiency, 1);
    EXPECT_FALSE(d->source.empty());
  }
}

TEST(DeviceCatalogTest, BuiltinNumbersAreTheDatasheetsDenseRates) {
  Result<DeviceModel> h100 = DeviceCatalog::Builtin().Find("h100");
  ASSERT_TRUE(h100.ok());
  EXPECT_DOUBLE_EQ(h100->MatrixFlopsPerS(DType::kBF16), 989.4e12);
  EXPECT_DOUBLE_EQ(h100->MatrixFlopsPerS(DType::kF32), 67e12);  // plain FP32, not TF32
  EXPECT_DOUBLE_EQ(h100->memory_bytes_per_s, 3350e9);
  EXPECT_EQ(h100->l2_bytes, int64_t{50} << 20);
  EXPECT_EQ(h100->compute_units, 132);
  EXPECT_EQ(h100->backend, "cuda");

  Result<DeviceModel> h200 = DeviceCatalog::Builtin().Find("h200");
  ASSERT_TRUE(h200.ok());
  EXPECT_DOUBLE_EQ(h200->memory_bytes_per_s, 4800e9);
  EXPECT_DOUBLE_EQ(h200->MatrixFlopsPerS(DType::kF16), 989.4e12);

  Result<DeviceModel> mi300x = DeviceCatalog::Builtin().Find("mi300x");
  ASSERT_TRUE(mi300x.ok());
  EXPECT_EQ(mi300x->backend, "hip");
  EXPECT_DOUBLE_EQ(mi300x->MatrixFlopsPerS(DType::kBF16), 1307.4e12);
  EXPECT_EQ(mi300x->compute_units, 304);
}

TEST(DeviceCatalogTest, FindUnknownListsKnownIds) {
  Result<DeviceModel> d = DeviceCatalog::Builtin().Find("h300");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(d.status().message(),
            "unknown target 'h300': known targets are a100, cpu, h100, h200, l40s, mi250x, mi300x");
}

constexpr char kToyYaml[] = R"(
devices:
  toy:
    name: Toy accelerator
    backend: cuda
    matrix_tflops: {f32: 2, bf16: 8}
    vector_tflops: {f32: 1}
    memory_gb_per_s: 100
    l2_cache: 4MiB
    compute_units: 10
    launch_overhead_us: 3
    baseline_matrix_efficiency: 0.5
    baseline_memory_efficiency: 0.25
)";

TEST(DeviceCatalogTest, ParsesAUserFileWithUnits) {
  Result<DeviceCatalog> catalog = DeviceCatalog::Parse(kToyYaml, "toy.yaml");
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  Result<DeviceModel> toy = catalog->Find("toy");
  ASSERT_TRUE(toy.ok());
  EXPECT_EQ(toy->name, "Toy accelerator");
  EXPECT_DOUBLE_EQ(toy->MatrixFlopsPerS(DType::kF32), 2e12);
  EXPECT_DOUBLE_EQ(toy->MatrixFlopsPerS(DType::kBF16), 8e12);
  EXPECT_DOUBLE_EQ(toy->MatrixFlopsPerS(DType::kF16), 2e12);  // missing: f32's rate
  EXPECT_DOUBLE_EQ(toy->VectorFlopsPerS(DType::kF64), 1e12);
  EXPECT_DOUBLE_EQ(toy->memory_bytes_per_s, 100e9);
  EXPECT_EQ(toy->l2_bytes, 4 << 20);
  EXPECT_EQ(toy->compute_units, 10);
  EXPECT_DOUBLE_EQ(toy->launch_overhead_s, 3e-6);
  EXPECT_DOUBLE_EQ(toy->baseline_matrix_efficiency, 0.5);
  EXPECT_DOUBLE_EQ(toy->baseline_memory_efficiency, 0.25);
  EXPECT_EQ(toy->source, "toy.yaml");
}

TEST(DeviceCatalogTest, OptionalKeysHaveDefaults) {
  Result<DeviceCatalog> catalog = DeviceCatalog::Parse(R"(
devices:
  bare:
    backend: cpu
    matrix_tflops: {f32: 1}
    vector_tflops: {f32: 0.5}
    memory_gb_per_s: 20
)",
                                                       "bare.yaml");
  ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
  Result<DeviceModel> bare = catalog->Find("bare");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->name, "bare");
  EXPECT_EQ(bare->compute_units, 1);
  EXPECT_EQ(bare->launch_overhead_s, 0);
  EXPECT_DOUBLE_EQ(bare->baseline_matrix_efficiency, 0.6);
  EXPECT_DOUBLE_EQ(bare->baseline_memory_efficiency, 0.7);
}

TEST(DeviceCatalogTest, PutAddsAndReplaces) {
  DeviceCatalog catalog = DeviceCatalog::Builtin();
  Result<DeviceModel> toy = DeviceCatalog::Parse(kToyYaml, "toy.yaml")->Find("toy");
  ASSERT_TRUE(toy.ok());
  catalog.Put(*toy);
  EXPECT_TRUE(catalog.Find("toy").ok());
  DeviceModel faster = *toy;
  faster.memory_bytes_per_s = 1e12;
  catalog.Put(faster);
  EXPECT_DOUBLE_EQ(catalog.Find("toy")->memory_bytes_per_s, 1e12);
  EXPECT_EQ(catalog.Ids().size(), 8u);
}

// Parses `device_body` as the keys of device "toy" and returns the error message.
std::string ParseError(const std::string& device_body) {
  Result<DeviceCatalog> catalog =
      DeviceCatalog::Parse("devices:\n  toy:\n" + device_body, "my-devices.yaml");
  EXPECT_FALSE(catalog.ok());
  EXPECT_EQ(catalog.status().code(), ErrorCode::kInvalidArgument);
  return catalog.status().message();
}

constexpr char kGoodBody[] =
    "    backend: cpu\n"
    "    matrix_tflops: {f32: 1}\n"
    "    vector_tflops: {f32: 1}\n";

TEST(DeviceCatalogTest, UnknownKeyIsAnErrorNamingFileAndKey) {
  std::string message =
      ParseError(std::string(kGoodBody) + "    memory_gb_per_s: 10\n    colour: red\n");
  EXPECT_NE(message.find("my-devices.yaml"), std::string::npos) << message;
  EXPECT_NE(message.find("devices.toy.colour"), std::string::npos) << message;

  message = ParseError(std::string(kGoodBody) +
                       "    memory_gb_per_s: 10\n"
                       "    vector_tflops: {f32: 1, fp16: 2}\n");
  EXPECT_NE(message.find("devices.toy.vector_tflops.fp16"), std::string::npos) << message;
}

TEST(DeviceCatalogTest, NegativeOrNonNumericValueIsAnErrorNamingTheKey) {
  std::string message = ParseError(std::string(kGoodBody) + "    memory_gb_per_s: -5\n");
  EXPECT_NE(message.find("my-devices.yaml:"), std::string::npos) << message;
  EXPECT_NE(message.find("devices.toy.memory_gb_per_s"), std::string::npos) << message;
  EXPECT_NE(message.find("-5"), std::string::npos) << message;

  message = ParseError(std::string(kGoodBody) + "    memory_gb_per_s: fast\n");
  EXPECT_NE(message.find("devices.toy.memory_gb_per_s"), std::string::npos) << message;

  message = ParseError(
      "    backend: cpu\n    matrix_tflops: {f32: -1}\n    vector_tflops: {f32: 1}\n"
      "    memory_gb_per_s: 10\n");
  EXPECT_NE(message.find("devices.toy.matrix_tflops.f32"), std::string::npos) << message;

  message = ParseError(std::string(kGoodBody) +
                       "    memory_gb_per_s: 10\n    baseline_matrix_efficiency: 1.5\n");
  EXPECT_NE(message.find("devices.toy.baseline_matrix_efficiency"), std::string::npos) << message;
}

TEST(DeviceCatalogTest, MissingRequiredKeysAndBadBackendAreErrors) {
  std::string message = ParseError(kGoodBody);
  EXPECT_NE(message.find("my-devices.yaml: devices.toy.memory_gb_per_s: required"),
            std::string::npos)
      << message;

  message = ParseError("    backend: tpu\n    matrix_tflops: {f32: 1}\n    memory_gb_per_s: 1\n");
  EXPECT_NE(message.find("devices.toy.backend"), std::string::npos) << message;
  EXPECT_NE(message.find("devices.toy.vector_tflops.f32: required"), std::string::npos) << message;
}

TEST(DeviceCatalogTest, MalformedFilesAreErrors) {
  EXPECT_FALSE(DeviceCatalog::Parse("devices: [h100]\n", "x.yaml").ok());
  EXPECT_FALSE(DeviceCatalog::Parse("gpus: {}\n", "x.yaml").ok());
  EXPECT_FALSE(DeviceCatalog::Parse("devices: {\n", "x.yaml").ok());
  EXPECT_FALSE(DeviceCatalog::Parse("devices:\n  h100: 5\n", "x.yaml").ok());
  Result<DeviceCatalog> bad_id =
      DeviceCatalog::Parse(std::string("devices:\n  My.GPU:\n") + kGoodBody, "x.yaml");
  ASSERT_FALSE(bad_id.ok());
  EXPECT_NE(bad_id.status().message().find("My.GPU"), std::string::npos);
  EXPECT_TRUE(DeviceCatalog::Parse("devices: {}\n", "x.yaml").ok());
}

// --- Node costs -----------------------------------------------------------------------------

int Tensor(Graph& g, const std::string& name, Shape shape, ValueKind kind = ValueKind::kActivation,
           DType dtype = DType::kF32) {
  Value v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.has_shape = true;
  v.kind = kind;
  if (kind == ValueKind::kConstant) v.constant = ConstantData{};
  return g.AddValue(std::move(v));
}

int Unshaped(Graph& g, const std::string& name) {
  Value v;
  v.name = name;
  return g.AddValue(std::move(v));
}

int Op(Graph& g, const std::string& op, std::vector<int> in, std::vector<int> out,
       std::map<std::string, AttributeValue> attributes = {}) {
  Node n;
  n.name = op + "_" + std::to_string(g.nodes.size());
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attributes = std::move(attributes);
  return g.AddNode(std::move(n));
}

double F32Bytes(double elements) { return 4 * elements; }

TEST(CostModelTest, BatchedMatMul) {
  Graph g;
  int a = Tensor(g, "a", {2, 3, 64, 128}, ValueKind::kInput);
  int b = Tensor(g, "b", {128, 32}, ValueKind::kWeight);
  int y = Tensor(g, "y", {2, 3, 64, 32});
  OpCost c = NodeCost(g, Op(g, "MatMul", {a, b}, {y}));
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * 2 * 3 * 64 * 32 * 128);
  EXPECT_DOUBLE_EQ(c.bytes, F32Bytes(2 * 3 * 64 * 128 + 128 * 32 + 2 * 3 * 64 * 32));
  EXPECT_TRUE(c.matrix);
  EXPECT_FALSE(c.free);
  EXPECT_EQ(c.dtype, DType::kF32);
}

TEST(CostModelTest, MatMulBroadcastsBatchDimsOfBothSides) {
  Graph g;
  int a = Tensor(g, "a", {4, 1, 16, 8}, ValueKind::kInput, DType::kBF16);
  int b = Tensor(g, "b", {1, 5, 8, 2}, ValueKind::kInput, DType::kBF16);
  int y = Tensor(g, "y", {4, 5, 16, 2}, ValueKind::kActivation, DType::kBF16);
  OpCost c = NodeCost(g, Op(g, "MatMul", {a, b}, {y}));
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * (4 * 5) * 16 * 2 * 8);
  EXPECT_DOUBLE_EQ(c.bytes, 2.0 * (4 * 16 * 8 + 5 * 8 * 2 + 4 * 5 * 16 * 2));
  EXPECT_EQ(c.dtype, DType::kBF16);
}

TEST(CostModelTest, GemmWithAndWithoutC) {
  Graph g;
  int a = Tensor(g, "a", {16, 32}, ValueKind::kInput);
  int b = Tensor(g, "b", {8, 32}, ValueKind::kWeight);
  int y = Tensor(g, "y", {16, 8});
  OpCost no_c = NodeCost(g, Op(g, "Gemm", {a, b}, {y}, {{"transB", int64_t{1}}}));
  EXPECT_DOUBLE_EQ(no_c.flops, 2.0 * 16 * 8 * 32);
  EXPECT_TRUE(no_c.matrix);

  int at = Tensor(g, "at", {32, 16}, ValueKind::kInput);
  int bias = Tensor(g, "bias", {8}, ValueKind::kWeight);
  int y2 = Tensor(g, "y2", {16, 8});
  OpCost with_c = NodeCost(
      g, Op(g, "Gemm", {at, b, bias}, {y2},
            {{"transA", int64_t{1}}, {"transB", int64_t{1}}, {"alpha", 0.5}, {"beta", 2.0}}));
  EXPECT_DOUBLE_EQ(with_c.flops, 2.0 * 16 * 8 * 32 + 16 * 8);
  EXPECT_DOUBLE_EQ(with_c.bytes, F32Bytes(32 * 16 + 8 * 32 + 8 + 16 * 8));

  int y3 = Tensor(g, "y3", {16, 8});
  OpCost omitted_c = NodeCost(g, Op(g, "Gemm", {a, b, -1}, {y3}, {{"transB", int64_t{1}}}));
  EXPECT_DOUBLE_EQ(omitted_c.flops, 2.0 * 16 * 8 * 32);
}

TEST(CostModelTest, ConvWithGroupsStridesAndPadding) {
  Graph g;
  // 8 -> 16 channels in 2 groups, 3x3 kernel, stride 2, pad 1: 32x32 -> 16x16.
  int x = Tensor(g, "x", {1, 8, 32, 32}, ValueKind::kInput);
  int w = Tensor(g, "w", {16, 4, 3, 3}, ValueKind::kWeight);
  int b = Tensor(g, "b", {16}, ValueKind::kWeight);
  int y = Tensor(g, "y", {1, 16, 16, 16});
  std::map<std::string, AttributeValue> attrs = {{"group", int64_t{2}},
                                                 {"strides", std::vector<int64_t>{2, 2}},
                                                 {"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                                 {"kernel_shape", std::vector<int64_t>{3, 3}}};
  OpCost with_bias = NodeCost(g, Op(g, "Conv", {x, w, b}, {y}, attrs));
  const double macs = 1.0 * 16 * (16 * 16) * (8 / 2) * (3 * 3);
  EXPECT_DOUBLE_EQ(with_bias.flops, 2 * macs + 1 * 16 * 16 * 16);
  EXPECT_DOUBLE_EQ(with_bias.bytes, F32Bytes(8 * 32 * 32 + 16 * 4 * 9 + 16 + 16 * 16 * 16));
  EXPECT_TRUE(with_bias.matrix);

  int y2 = Tensor(g, "y2", {1, 16, 16, 16});
  OpCost no_bias = NodeCost(g, Op(g, "Conv", {x, w}, {y2}, attrs));
  EXPECT_DOUBLE_EQ(no_bias.flops, 2 * macs);
}

TEST(CostModelTest, ConvTransposeCountsPerInputElement) {
  Graph g;
  // 8 -> 4 channels in 2 groups, 3x3 kernel, stride 2: 4x4 -> 9x9.
  int x = Tensor(g, "x", {2, 8, 4, 4}, ValueKind::kInput);
  int w = Tensor(g, "w", {8, 2, 3, 3}, ValueKind::kWeight);
  int y = Tensor(g, "y", {2, 4, 9, 9});
  OpCost c = NodeCost(g, Op(g, "ConvTranspose", {x, w}, {y},
                            {{"group", int64_t{2}}, {"strides", std::vector<int64_t>{2, 2}}}));
  EXPECT_DOUBLE_EQ(c.flops, 2.0 * 2 * 8 * (4 * 4) * (4 / 2) * (3 * 3));
  EXPECT_TRUE(c.matrix);
}

TEST(CostModelTest, ElementwiseIsOneFlopPerOutputElement) {
  Graph g;
  int x = Tensor(g, "x", {4, 8}, ValueKind::kInput, DType::kF16);
  int b = Tensor(g, "b", {8}, ValueKind::kWeight, DType::kF16);
  int y = Tensor(g, "y", {4, 8}, ValueKind::kActivation, DType::kF16);
  OpCost add = NodeCost(g, Op(g, "Add", {x, b}, {y}));
  EXPECT_DOUBLE_EQ(add.flops, 32);
  EXPECT_DOUBLE_EQ(add.bytes, 2.0 * (32 + 8 + 32));
  EXPECT_FALSE(add.matrix);
  EXPECT_EQ(add.dtype, DType::kF16);

  int e = Tensor(g, "e", {4, 8}, ValueKind::kActivation, DType::kF16);
  EXPECT_DOUBLE_EQ(NodeCost(g, Op(g, "Erf", {y}, {e})).flops, 32);  // transcendental: 1

  int sq = Tensor(g, "sq", {4, 8}, ValueKind::kActivation, DType::kF16);
  OpCost square = NodeCost(g, Op(g, "Mul", {x, x}, {sq}));
  EXPECT_DOUBLE_EQ(square.bytes, 2.0 * (32 + 32));  // x is read once

  int m = Tensor(g, "m", {4, 8}, ValueKind::kActivation, DType::kF16);
  EXPECT_DOUBLE_EQ(NodeCost(g, Op(g, "Max", {x, y, e}, {m})).flops, 2 * 32);
}

TEST(CostModelTest, ConstantsAreNotCountedInBytes) {
  Graph g;
  int x = Tensor(g, "x", {1024}, ValueKind::kInput);
  int k = Tensor(g, "k", {1024}, ValueKind::kConstant);
  int y = Tensor(g, "y", {1024});
  OpCost c = NodeCost(g, Op(g, "Mul", {x, k}, {y}));
  EXPECT_DOUBLE_EQ(c.bytes, F32Bytes(1024 + 1024));
}

TEST(CostModelTest, NormalizationSoftmaxReductionAndPoolConventions) {
  Graph g;
  int x = Tensor(g, "x", {2, 16, 64}, ValueKind::kInput);
  int s = Tensor(g, "s", {2, 16, 64});
  OpCost softmax = NodeCost(g, Op(g, "Softmax", {x}, {s}, {{"axis", int64_t{-1}}}));
  EXPECT_DOUBLE_EQ(softmax.flops, 5.0 * 2 * 16 * 64);
  EXPECT_DOUBLE_EQ(softmax.bytes, F32Bytes(2 * 2 * 16 * 64));

  int gamma = Tensor(g, "gamma", {64}, ValueKind::kWeight);
  int beta = Tensor(g, "beta", {64}, ValueKind::kWeight);
  int ln = Tensor(g, "ln", {2, 16, 64});
  OpCost layer_norm = NodeCost(g, Op(g, "LayerNormalization", {x, gamma, beta}, {ln}));
  EXPECT_DOUBLE_EQ(layer_norm.flops, 8.0 * 2 * 16 * 64);
  EXPECT_DOUBLE_EQ(layer_norm.bytes, F32Bytes(2 * 2 * 16 * 64 + 2 * 64));
  EXPECT_FALSE(layer_norm.matrix);

  int r = Tensor(g, "r", {2, 16, 1});
  EXPECT_DOUBLE_EQ(NodeCost(g, Op(g, "ReduceMean", {x}, {r})).flops, 2.0 * 16 * 64);

  int img = Tensor(g, "img", {1, 3, 8, 8}, ValueKind::kInput);
  int pooled = Tensor(g, "pooled", {1, 3, 4, 4});
  OpCost pool = NodeCost(
      g, Op(g, "MaxPool", {img}, {pooled}, {{"kernel_shape", std::vector<int64_t>{3, 3}}}));
  EXPECT_DOUBLE_EQ(pool.flops, 9.0 * 3 * 4 * 4);
  int gap = Tensor(g, "gap", {1, 3, 1, 1});
  EXPECT_DOUBLE_EQ(NodeCost(g, Op(g, "GlobalAveragePool", {img}, {gap})).flops, 3.0 * 8 * 8);

  int scale = Tensor(g, "scale", {3}, ValueKind::kWeight);
  int bn = Tensor(g, "bn", {1, 3, 8, 8});
  EXPECT_DOUBLE_EQ(
      NodeCost(g, Op(g, "BatchNormalization", {img, scale, scale, scale, scale}, {bn})).flops,
      4.0 * 3 * 8 * 8);
}

TEST(CostModelTest, ViewsAndMetadataAreFree) {
  Graph g;
  int x = Tensor(g, "x", {4, 8}, ValueKind::kInput);
  int shape = Tensor(g, "shape", {2}, ValueKind::kConstant, DType::kI64);
  for (const char* op : {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"}) {
    SCOPED_TRACE(op);
    int y = Tensor(g, std::string("y_") + op, {32});
    OpCost c = NodeCost(g, Op(g, op, {x, shape}, {y}));
    EXPECT_TRUE(c.free);
    EXPECT_EQ(c.flops, 0);
    EXPECT_EQ(c.bytes, 0);
  }
  int dims = Tensor(g, "dims", {2}, ValueKind::kActivation, DType::kI64);
  EXPECT_TRUE(NodeCost(g, Op(g, "Shape", {x}, {dims})).free);
}

TEST(CostModelTest, DataMovementIsBytesOnly) {
  Graph g;
  int x = Tensor(g, "x", {4, 8}, ValueKind::kInput);
  int t = Tensor(g, "t", {8, 4});
  OpCost transpose = NodeCost(g, Op(g, "Transpose", {x}, {t}));
  EXPECT_EQ(transpose.flops, 0);
  EXPECT_DOUBLE_EQ(transpose.bytes, F32Bytes(64));
  EXPECT_FALSE(transpose.free);

  int ids = Tensor(g, "ids", {4}, ValueKind::kInput, DType::kI64);
  int table = Tensor(g, "table", {100, 8}, ValueKind::kWeight);
  int rows = Tensor(g, "rows", {4, 8});
  OpCost gather = NodeCost(g, Op(g, "Gather", {table, ids}, {rows}));
  EXPECT_EQ(gather.flops, 0);
  // Only the 4 picked rows of the table are read, not all 100.
  EXPECT_DOUBLE_EQ(gather.bytes, F32Bytes(32) + 8 * 4 + F32Bytes(32));

  // No floating input: the output's dtype picks the rate.
  int as_float = Tensor(g, "as_float", {4}, ValueKind::kActivation, DType::kF16);
  EXPECT_EQ(NodeCost(g, Op(g, "Cast", {ids}, {as_float})).dtype, DType::kF16);
}

TEST(CostModelTest, UnknownOpsAndUnshapedValues) {
  Graph g;
  int x = Tensor(g, "x", {16}, ValueKind::kInput);
  int mystery = Unshaped(g, "mystery");
  int y = Tensor(g, "y", {16});
  OpCost unknown = NodeCost(g, Op(g, "FancyCustomOp", {x, mystery}, {y}));
  EXPECT_EQ(unknown.flops, 0);
  EXPECT_DOUBLE_EQ(unknown.bytes, F32Bytes(32));
  EXPECT_FALSE(unknown.free);

  int z = Unshaped(g, "z");
  OpCost relu = NodeCost(g, Op(g, "Relu", {x}, {z}));
  EXPECT_EQ(relu.flops, 0);  // output shape unknown
  EXPECT_DOUBLE_EQ(relu.bytes, F32Bytes(16));
}

// --- Group costs ----------------------------------------------------------------------------

// x -> MatMul(w) -> y -> Relu -> r -> Add(bias) -> out (graph output); r also feeds a Tanh.
struct Chain {
  Graph g;
  int x, w, bias, k, y, r, out, t;
  int mm, relu, add, tanh;

  Chain() {
    x = Tensor(g, "x", {64, 256}, ValueKind::kInput);
    w = Tensor(g, "w", {256, 128}, ValueKind::kWeight);
    bias = Tensor(g, "bias", {128}, ValueKind::kWeight);
    k = Tensor(g, "k", {1}, ValueKind::kConstant);
    y = Tensor(g, "y", {64, 128});
    r = Tensor(g, "r", {64, 128});
    out = Tensor(g, "out", {64, 128});
    t = Tensor(g, "t", {64, 128});
    g.inputs = {x, w, bias};
    g.outputs = {out, t};
    mm = Op(g, "MatMul", {x, w}, {y});
    relu = Op(g, "Relu", {y}, {r});
    add = Op(g, "Add", {r, bias}, {out});
    tanh = Op(g, "Tanh", {r}, {t});
  }
};

TEST(CostModelTest, GroupCountsInternalValuesZeroTimes) {
  Chain c;
  OpCost group = GroupCost(c.g, {c.mm, c.relu, c.add, c.tanh});
  EXPECT_DOUBLE_EQ(group.flops, 2.0 * 64 * 128 * 256 + 3 * 64 * 128);
  // Reads x, w and bias; writes out and t; y and r never leave the kernel.
  EXPECT_DOUBLE_EQ(group.bytes, F32Bytes(64 * 256 + 256 * 128 + 128 + 2 * 64 * 128));
  EXPECT_TRUE(group.matrix);
  EXPECT_FALSE(group.free);
  EXPECT_EQ(group.dtype, DType::kF32);
}

TEST(CostModelTest, GroupCountsSharedValuesOnce) {
  Chain c;
  // r is used inside (Add) and outside (Tanh): written once. bias is read once.
  OpCost group = GroupCost(c.g, {c.relu, c.add});
  EXPECT_DOUBLE_EQ(group.flops, 2.0 * 64 * 128);
  EXPECT_DOUBLE_EQ(group.bytes, F32Bytes(64 * 128 + 128 + 64 * 128 + 64 * 128));
  EXPECT_FALSE(group.matrix);

  // x read by two members, the constant k by one: x once, k never.
  Graph g;
  int x = Tensor(g, "x", {100}, ValueKind::kInput, DType::kF16);
  int k = Tensor(g, "k", {100}, ValueKind::kConstant, DType::kF16);
  int a = Tensor(g, "a", {100}, ValueKind::kActivation, DType::kF16);
  int b = Tensor(g, "b", {100}, ValueKind::kActivation, DType::kF16);
  g.outputs = {b};
  int n1 = Op(g, "Mul", {x, k}, {a});
  int n2 = Op(g, "Add", {a, x}, {b});
  OpCost shared = GroupCost(g, {n1, n2});
  EXPECT_DOUBLE_EQ(shared.bytes, 2.0 * (100 + 100));
  EXPECT_EQ(shared.dtype, DType::kF16);
}

TEST(CostModelTest, GroupOfViewsIsFree) {
  Graph g;
  int x = Tensor(g, "x", {4, 8}, ValueKind::kInput);
  int y = Tensor(g, "y", {32});
  int z = Tensor(g, "z", {1, 32});
  g.outputs = {z};
  OpCost group = GroupCost(g, {Op(g, "Reshape", {x}, {y}), Op(g, "Unsqueeze", {y}, {z})});
  EXPECT_TRUE(group.free);
  EXPECT_EQ(group.bytes, 0);
  EXPECT_EQ(group.flops, 0);
}

// --- Speed of light and baseline ------------------------------------------------------------

DeviceModel ToyDevice() {
  DeviceModel d;
  d.id = "toy";
  d.backend = "cpu";
  d.matrix_flops_per_s[DType::kF32] = 1e12;
  d.vector_flops_per_s[DType::kF32] = 1e11;
  d.memory_bytes_per_s = 1e11;
  d.launch_overhead_s = 5e-6;
  d.baseline_matrix_efficiency = 0.5;
  d.baseline_memory_efficiency = 0.25;
  return d;
}

TEST(CostModelTest, SpeedOfLightIsTheSlowerOfComputeAndMemory) {
  const DeviceModel d = ToyDevice();
  OpCost compute_bound;
  compute_bound.flops = 1e10;
  compute_bound.bytes = 1e6;
  compute_bound.matrix = true;
  EXPECT_DOUBLE_EQ(SpeedOfLightSeconds(d, compute_bound), 1e10 / 1e12);
  compute_bound.matrix = false;  // vector ALUs are 10x slower here
  EXPECT_DOUBLE_EQ(SpeedOfLightSeconds(d, compute_bound), 1e10 / 1e11);

  OpCost memory_bound;
  memory_bound.flops = 1e6;
  memory_bound.bytes = 1e9;
  memory_bound.dtype = DType::kBF16;  // no bf16 entry: f32's rate
  EXPECT_DOUBLE_EQ(SpeedOfLightSeconds(d, memory_bound), 1e9 / 1e11);

  EXPECT_EQ(SpeedOfLightSeconds(d, OpCost{}), 0);
}

TEST(CostModelTest, BaselineAddsEfficienciesAndOneLaunchPerKernel) {
  Chain c;
  const DeviceModel d = ToyDevice();
  const double mm_flops = 2.0 * 64 * 128 * 256;
  const double mm_bytes = F32Bytes(64 * 256 + 256 * 128 + 64 * 128);
  const double mm_s = std::max(mm_flops / (1e12 * 0.5), mm_bytes / (1e11 * 0.25)) + 5e-6;
  EXPECT_DOUBLE_EQ(BaselineSeconds(d, c.g, {c.mm}), mm_s);

  const double relu_s =
      std::max(64.0 * 128 / (1e11 * 0.25), F32Bytes(2 * 64 * 128) / (1e11 * 0.25)) + 5e-6;
  EXPECT_DOUBLE_EQ(BaselineSeconds(d, c.g, {c.relu}), relu_s);
  EXPECT_DOUBLE_EQ(BaselineSeconds(d, c.g, {c.mm, c.relu}), mm_s + relu_s);

  // A free view adds neither time nor a launch.
  Graph g;
  int x = Tensor(g, "x", {64, 128}, ValueKind::kInput);
  int v = Tensor(g, "v", {8192});
  int out = Tensor(g, "out", {8192});
  int reshape = Op(g, "Reshape", {x}, {v});
  int relu = Op(g, "Relu", {v}, {out});
  EXPECT_DOUBLE_EQ(BaselineSeconds(d, g, {reshape, relu}), relu_s);
  EXPECT_EQ(BaselineSeconds(d, g, {reshape}), 0);
}

}  // namespace
}  // namespace kfleet::planner
