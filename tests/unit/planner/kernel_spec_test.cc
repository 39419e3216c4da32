#include "planner/kernel_spec.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "planner/onnx_import.h"
#include "tests/unit/planner/graph_builder.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::planner {
namespace {

using import_testing::MustImport;
using import_testing::TestModelPath;
using partition_testing::GraphBuilder;
using partition_testing::MustPartition;

KernelSpec MustBuild(const Graph& graph, const FusionGroup& group) {
  Result<KernelSpec> spec = BuildKernelSpec(graph, group);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? std::move(spec).value() : KernelSpec{};
}

onnx::ModelProto MustParse(const KernelSpec& spec) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(spec.onnx_model));
  return model;
}

// x -> [MatMul(W_i) -> Add(b_i) -> Relu] x layers, each layer a gemm+bias+relu group.
Graph Layers(int layers, int64_t tokens, int64_t width) {
  GraphBuilder b;
  int x = b.Input("x", {tokens, width});
  for (int i = 0; i < layers; ++i) {
    std::string id = std::to_string(i);
    int mm = b.Op("MatMul", {x, b.Weight("w" + id, {width, width})}, {tokens, width});
    int add = b.Op("Add", {mm, b.Weight("b" + id, {width})}, {tokens, width});
    x = b.Op("Relu", {add}, {tokens, width});
  }
  b.Output(x);
  return b.graph();
}

TEST(KernelSpecTest, IdenticalLayersShareAHash) {
  Graph g = Layers(3, 128, 768);
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 3u);
  KernelSpec first = MustBuild(g, groups[0]);
  EXPECT_EQ(first.name, "gemm+bias+relu 128x768x768 f32");
  EXPECT_EQ(first.family, "gemm+bias+relu");
  EXPECT_EQ(first.op_types, (std::vector<std::string>{"MatMul", "Add", "Relu"}));
  EXPECT_EQ(first.hash.size(), 64u);
  EXPECT_EQ(first.flops, 0);
  EXPECT_EQ(first.bytes, 0);
  for (size_t i = 1; i < groups.size(); ++i) {
    KernelSpec other = MustBuild(g, groups[i]);
    EXPECT_EQ(other.hash, first.hash);
    EXPECT_EQ(other.onnx_model, first.onnx_model);
    EXPECT_EQ(other.name, first.name);
  }
  // Building again gives the same bytes.
  EXPECT_EQ(MustBuild(g, groups[0]).onnx_model, first.onnx_model);
}

TEST(KernelSpecTest, DifferentShapesOrConstantsGiveDifferentHashes) {
  Graph a = Layers(1, 128, 768);
  Graph b = Layers(1, 64, 768);
  KernelSpec sa = MustBuild(a, MustPartition(a)[0]);
  KernelSpec sb = MustBuild(b, MustPartition(b)[0]);
  EXPECT_NE(sa.hash, sb.hash);
  EXPECT_EQ(sb.name, "gemm+bias+relu 64x768x768 f32");

  auto scaled = [](double factor) {
    GraphBuilder g;
    int x = g.Input("x", {4, 4});
    int y = g.Op("Mul", {x, g.Scalar(factor)}, {4, 4});
    g.Output(y);
    return g.graph();
  };
  Graph half = scaled(0.5);
  Graph third = scaled(1.0 / 3);
  EXPECT_NE(MustBuild(half, MustPartition(half)[0]).hash,
            MustBuild(third, MustPartition(third)[0]).hash);
}

TEST(KernelSpecTest, ModelParsesBackWithCanonicalNames) {
  GraphBuilder b;
  int x = b.Input("tokens", {1, 128, 768});
  int w = b.Weight("c_fc.weight", {768, 3072});
  int flat = b.Op("Reshape", {x, b.Ints({128, 768})}, {128, 768});
  int gemm = b.Op("Gemm", {flat, w}, {128, 3072}, {{"transB", int64_t{0}}, {"alpha", 1.0}});
  int up = b.Op("Reshape", {gemm, b.Ints({1, 128, 3072})}, {1, 128, 3072});
  int gelu = b.Op("Gelu", {up}, {1, 128, 3072}, {{"approximate", std::string("tanh")}});
  int t = b.Op("Transpose", {gelu}, {3072, 128, 1}, {{"perm", std::vector<int64_t>{2, 1, 0}}});
  b.Output(gelu);
  b.Output(t);
  const Graph& g = b.graph();
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 2u);
  KernelSpec spec = MustBuild(g, groups[0]);
  EXPECT_EQ(spec.name, "gemm+gelu_tanh 128x768x3072 f32");
  ASSERT_EQ(spec.inputs.size(), 2u);
  EXPECT_EQ(spec.inputs[0].name, "in0");
  EXPECT_EQ(spec.inputs[0].shape, (Shape{1, 128, 768}));
  EXPECT_EQ(spec.inputs[1].name, "in1");
  EXPECT_EQ(spec.inputs[1].shape, (Shape{768, 3072}));
  ASSERT_EQ(spec.outputs.size(), 1u);
  EXPECT_EQ(spec.outputs[0].name, "out0");
  EXPECT_EQ(spec.outputs[0].shape, (Shape{1, 128, 3072}));
  EXPECT_EQ(spec.outputs[0].dtype, DType::kF32);

  onnx::ModelProto model = MustParse(spec);
  EXPECT_EQ(model.ir_version(), 8);
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 17);
  const onnx::GraphProto& body = model.graph();
  ASSERT_EQ(body.input_size(), 2);
  EXPECT_EQ(body.input(0).name(), "in0");
  EXPECT_EQ(body.input(0).type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  ASSERT_EQ(body.input(0).type().tensor_type().shape().dim_size(), 3);
  EXPECT_EQ(body.input(0).type().tensor_type().shape().dim(2).dim_value(), 768);
  ASSERT_EQ(body.output_size(), 1);
  EXPECT_EQ(body.output(0).name(), "out0");
  ASSERT_EQ(body.node_size(), 4);
  EXPECT_EQ(body.node(0).name(), "n0");
  EXPECT_EQ(body.node(0).op_type(), "Reshape");
  EXPECT_EQ(body.node(0).input(0), "in0");
  EXPECT_EQ(body.node(0).input(1), "c0");
  EXPECT_EQ(body.node(0).output(0), "t0");
  EXPECT_EQ(body.node(1).input(0), "t0");
  EXPECT_EQ(body.node(1).input(1), "in1");
  EXPECT_EQ(body.node(3).op_type(), "Gelu");
  EXPECT_EQ(body.node(3).output(0), "out0");
  ASSERT_EQ(body.node(3).attribute_size(), 1);
  EXPECT_EQ(body.node(3).attribute(0).name(), "approximate");
  EXPECT_EQ(body.node(3).attribute(0).type(), onnx::AttributeProto::STRING);
  EXPECT_EQ(body.node(3).attribute(0).s(), "tanh");
  ASSERT_EQ(body.node(1).attribute_size(), 2);
  EXPECT_EQ(body.node(1).attribute(0).name(), "alpha");
  EXPECT_EQ(body.node(1).attribute(0).type(), onnx::AttributeProto::FLOAT);
  EXPECT_EQ(body.node(1).attribute(1).type(), onnx::AttributeProto::INT);

  ASSERT_EQ(body.initializer_size(), 2);
  EXPECT_EQ(body.initializer(0).name(), "c0");
  EXPECT_EQ(body.initializer(0).data_type(), onnx::TensorProto::INT64);
  ASSERT_EQ(body.initializer(0).dims_size(), 1);
  EXPECT_EQ(body.initializer(0).dims(0), 2);
  ASSERT_EQ(body.initializer(0).raw_data().size(), 16u);
  int64_t dims[2];
  std::memcpy(dims, body.initializer(0).raw_data().data(), sizeof(dims));
  EXPECT_EQ(dims[0], 128);
  EXPECT_EQ(dims[1], 768);
  EXPECT_EQ(body.initializer(1).name(), "c1");
  ASSERT_EQ(body.value_info_size(), 3);
  EXPECT_EQ(body.value_info(0).name(), "t0");
  EXPECT_EQ(body.value_info(2).name(), "t2");
  ASSERT_EQ(body.value_info(2).type().tensor_type().shape().dim_size(), 3);
  EXPECT_EQ(body.value_info(2).type().tensor_type().shape().dim(2).dim_value(), 3072);

  // The transpose group reads the gelu output as its input and writes its own output.
  KernelSpec transpose = MustBuild(g, groups[1]);
  EXPECT_EQ(transpose.name, "transpose 1x128x3072 f32");
  onnx::ModelProto tm = MustParse(transpose);
  ASSERT_EQ(tm.graph().node_size(), 1);
  EXPECT_EQ(tm.graph().node(0).attribute(0).type(), onnx::AttributeProto::INTS);
  EXPECT_EQ(tm.graph().node(0).attribute(0).ints_size(), 3);
}

TEST(KernelSpecTest, ConstantsKeepTheirDtypeInRawData) {
  GraphBuilder b;
  int x = b.Input("x", {4}, DType::kF16);
  int y = b.Op("Mul", {x, b.Scalar(1.0, DType::kF16)}, {4}, {}, DType::kF16);
  int z = b.Op("Add", {y, b.Scalar(-2.5, DType::kBF16)}, {4}, {}, DType::kF16);
  int flag = b.Op("Greater", {z, b.Scalar(0.0, DType::kF16)}, {4}, {}, DType::kBool);
  int picked = b.Op("Where", {flag, b.Scalar(65504.0, DType::kF16), b.Scalar(1e-7, DType::kF16)},
                    {4}, {}, DType::kF16);
  b.Output(picked);
  const Graph& g = b.graph();
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 1u);
  KernelSpec spec = MustBuild(g, groups[0]);
  EXPECT_EQ(spec.name, "elementwise 4 f16");
  onnx::ModelProto model = MustParse(spec);
  ASSERT_EQ(model.graph().initializer_size(), 5);
  auto bits = [&](int i) {
    const std::string& raw = model.graph().initializer(i).raw_data();
    EXPECT_EQ(raw.size(), 2u);
    uint16_t v = 0;
    std::memcpy(&v, raw.data(), 2);
    return v;
  };
  EXPECT_EQ(model.graph().initializer(0).data_type(), onnx::TensorProto::FLOAT16);
  EXPECT_EQ(bits(0), 0x3c00);  // 1.0
  EXPECT_EQ(model.graph().initializer(1).data_type(), onnx::TensorProto::BFLOAT16);
  EXPECT_EQ(bits(1), 0xc020);  // -2.5
  EXPECT_EQ(bits(2), 0x0000);  // 0.0
  EXPECT_EQ(bits(3), 0x7bff);  // 65504, the largest half
  EXPECT_EQ(bits(4), 0x0002);  // 1e-7 rounds to 2 x 2^-24
}

TEST(KernelSpecTest, OpaqueGroupsGetASpecToo) {
  GraphBuilder b;
  int x = b.Input("x", {8, 8});
  int odd = b.Op("FancyOp", {x}, {8, 8}, {{"mode", std::string("fast")}});
  b.MarkUnsupported(odd);
  b.mutable_graph().nodes[0].domain = "com.example";
  b.Output(odd);
  const Graph& g = b.graph();
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 1u);
  KernelSpec spec = MustBuild(g, groups[0]);
  EXPECT_EQ(spec.family, "opaque");
  EXPECT_EQ(spec.name, "opaque 8x8 f32");
  onnx::ModelProto model = MustParse(spec);
  ASSERT_EQ(model.opset_import_size(), 2);
  EXPECT_EQ(model.opset_import(1).domain(), "com.example");
  EXPECT_EQ(model.graph().node(0).domain(), "com.example");
}

TEST(KernelSpecTest, ValuesWithoutAShapeAfterAnUnknownOpStillGiveSpecs) {
  Graph g = MustImport(18, R"(
    g (float[4,8] x) => (float[4,8] y) {
      a = Relu(x)
      b = com.example.Mystery(a)
      y = Neg(b)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 3u);
  // `b` has no inferred shape, so Neg cannot be shaped either: both are opaque.
  KernelSpec mystery = MustBuild(g, groups[1]);
  EXPECT_EQ(mystery.name, "opaque 4x8 f32");
  EXPECT_TRUE(mystery.outputs[0].shape.empty());
  KernelSpec neg = MustBuild(g, groups[2]);
  EXPECT_EQ(neg.name, "opaque ? f32");
  onnx::ModelProto model = MustParse(neg);
  EXPECT_FALSE(model.graph().input(0).type().tensor_type().has_shape());
  EXPECT_EQ(model.graph().output(0).type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
}

TEST(KernelSpecTest, NamesConvolutionsAndBatchedMatmuls) {
  GraphBuilder b;
  int x = b.Input("x", {8, 64, 56, 56});
  int conv = b.Op("Conv", {x, b.Weight("w", {256, 64, 1, 1})}, {8, 256, 56, 56});
  int q = b.Input("q", {2, 12, 128, 64});
  int k = b.Input("k", {2, 12, 64, 128});
  int s = b.Op("MatMul", {q, k}, {2, 12, 128, 128});
  b.Output(conv);
  b.Output(s);
  const Graph& g = b.graph();
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(MustBuild(g, groups[0]).name, "conv 8x64x56x56 w256x64x1x1 f32");
  EXPECT_EQ(MustBuild(g, groups[1]).name, "gemm 24x128x64x128 f32");
}

TEST(KernelSpecTest, RejectsAGroupReadingAnUnlistedValue) {
  Graph g = Layers(1, 4, 4);
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 1u);
  FusionGroup broken = groups[0];
  broken.inputs.pop_back();
  Result<KernelSpec> spec = BuildKernelSpec(g, broken);
  EXPECT_EQ(spec.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("b0"), std::string::npos) << spec.status().message();
}

TEST(KernelSpecTest, SpecReimportsToTheSameShapes) {
  Graph g = MustImport(18, R"(
    g (float[1,16,32] x, float[32,64] w, float[64] b) => (float[1,16,64] y) {
      h = MatMul(x, w)
      hb = Add(h, b)
      y = Relu(hb)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 1u);
  KernelSpec spec = MustBuild(g, groups[0]);
  EXPECT_EQ(spec.name, "gemm+bias+relu 16x32x64 f32");
  Result<Graph> back = ImportOnnxBytes(spec.onnx_model, "spec.onnx", "", ImportOptions{});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->inputs.size(), 3u);
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const Value& v = back->values[back->inputs[i]];
    EXPECT_EQ(v.name, spec.inputs[i].name);
    EXPECT_EQ(v.shape, spec.inputs[i].shape);
    EXPECT_EQ(v.dtype, spec.inputs[i].dtype);
  }
  ASSERT_EQ(back->outputs.size(), 1u);
  EXPECT_EQ(back->values[back->outputs[0]].shape, (Shape{1, 16, 64}));
  ASSERT_EQ(back->nodes.size(), 3u);
  EXPECT_EQ(back->nodes[1].op_type, "Add");
}

struct ModelSpecs {
  std::vector<KernelSpec> specs;        // one per group that runs a kernel
  std::map<std::string, int> per_hash;  // occurrences of each distinct spec
};

ModelSpecs SpecsOf(const Graph& g, const std::vector<FusionGroup>& groups) {
  ModelSpecs out;
  for (const FusionGroup& group : groups) {
    if (group.free) continue;
    out.specs.push_back(MustBuild(g, group));
    ++out.per_hash[out.specs.back().hash];
  }
  return out;
}

std::multiset<int> Counts(const ModelSpecs& m) {
  std::multiset<int> counts;
  for (const auto& [hash, count] : m.per_hash) counts.insert(count);
  return counts;
}

Graph MustImportModel(const std::string& file) {
  Result<Graph> g = ImportOnnxFile(TestModelPath(file), ImportOptions{});
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? std::move(g).value() : Graph{};
}

// Every spec of the model re-imports, partitions back into one group of its family, and gives
// the same spec again: the emitted subgraph is self-contained and canonical.
void ExpectSpecsAreFixedPoints(const ModelSpecs& m) {
  for (const KernelSpec& spec : m.specs) {
    Result<Graph> back = ImportOnnxBytes(spec.onnx_model, spec.name, "", ImportOptions{});
    ASSERT_TRUE(back.ok()) << spec.name << ": " << back.status().ToString();
    ASSERT_EQ(back->inputs.size(), spec.inputs.size()) << spec.name;
    for (size_t i = 0; i < spec.inputs.size(); ++i) {
      EXPECT_EQ(back->values[back->inputs[i]].shape, spec.inputs[i].shape) << spec.name;
    }
    std::vector<FusionGroup> again = MustPartition(*back);
    ASSERT_EQ(again.size(), 1u) << spec.name;
    EXPECT_EQ(again[0].family, spec.family);
    EXPECT_EQ(MustBuild(*back, again[0]).hash, spec.hash) << spec.name;
  }
}

TEST(KernelSpecTest, Gpt2LayersCollapseToElevenSpecs) {
  Graph g = MustImportModel("gpt2-small_b1s128.onnx");
  std::vector<FusionGroup> groups = MustPartition(g);
  ModelSpecs m = SpecsOf(g, groups);
  ASSERT_EQ(m.specs.size(), 90u);
  // Per layer: qkv gemm, attention, attention projection + residual, MLP up + GELU, MLP down +
  // residual (12 each); layernorm (25, all [1,128,768]); then one each of the lm_head gemm,
  // the two embedding gathers, the embedding add and the mask computation.
  EXPECT_EQ(Counts(m), (std::multiset<int>{1, 1, 1, 1, 1, 12, 12, 12, 12, 12, 25}));
  std::set<std::string> names;
  for (const KernelSpec& spec : m.specs) names.insert(spec.name);
  EXPECT_TRUE(names.count("gemm+gelu_tanh 128x768x3072 f32"));
  EXPECT_TRUE(names.count("gemm+add 128x3072x768 f32"));
  EXPECT_TRUE(names.count("gemm 128x768x50257 f32"));
  EXPECT_TRUE(names.count("attention 1x12x128x64 f32"));
  EXPECT_TRUE(names.count("layernorm 1x128x768 f32"));
  ExpectSpecsAreFixedPoints(m);
}

TEST(KernelSpecTest, ResNet50AndMobileNetV2SpecsPerConvShape) {
  Graph resnet = MustImportModel("resnet50_b8.onnx");
  std::vector<FusionGroup> resnet_groups = MustPartition(resnet);
  ModelSpecs r = SpecsOf(resnet, resnet_groups);
  // 56 kernels, 27 distinct: repeated bottlenecks within a stage share their specs (the
  // 3x3 convs of stage 3 five times, ...), the first block of each stage differs in shape.
  EXPECT_EQ(r.specs.size(), 56u);
  EXPECT_EQ(r.per_hash.size(), 27u);
  ExpectSpecsAreFixedPoints(r);

  Graph mobilenet = MustImportModel("mobilenet_v2_b8.op17.onnx");
  std::vector<FusionGroup> mobilenet_groups = MustPartition(mobilenet);
  ModelSpecs mb = SpecsOf(mobilenet, mobilenet_groups);
  // Depthwise convs of the same shape with stride 1 and stride 2 are different specs.
  EXPECT_EQ(mb.specs.size(), 54u);
  EXPECT_EQ(mb.per_hash.size(), 32u);
  std::set<std::string> names;
  for (const KernelSpec& spec : mb.specs) names.insert(spec.name);
  EXPECT_TRUE(names.count("conv+relu6 8x144x56x56 w144x1x3x3 f32"));
  EXPECT_TRUE(names.count("conv+relu6 8x144x56x56 w144x1x3x3 s2x2 f32"));
  ExpectSpecsAreFixedPoints(mb);
}

TEST(KernelSpecTest, TinyGpt2SpecsWithExternalData) {
  Graph g = MustImportModel("tinygpt2_1.onnx");
  std::vector<FusionGroup> groups = MustPartition(g);
  ModelSpecs m = SpecsOf(g, groups);
  // One layer: the three layernorms are one spec, everything else occurs once.
  EXPECT_EQ(m.specs.size(), 11u);
  EXPECT_EQ(Counts(m), (std::multiset<int>{1, 1, 1, 1, 1, 1, 1, 1, 3}));
  ExpectSpecsAreFixedPoints(m);
}

}  // namespace
}  // namespace kfleet::planner
