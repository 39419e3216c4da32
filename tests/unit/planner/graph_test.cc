// The graph IR's helpers: dtypes, shapes, attributes and the value / node links.
#include "planner/graph.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kfleet::planner {
namespace {

TEST(GraphTest, DTypeSizesNamesAndOnnxCodesRoundTrip) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    Result<DType> from_onnx = DTypeFromOnnx(DTypeToOnnx(d));
    ASSERT_TRUE(from_onnx.ok()) << DTypeName(d);
    EXPECT_EQ(*from_onnx, d);
    Result<DType> parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << DTypeName(d);
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(DTypeBytes(DType::kBF16), 2);
  EXPECT_EQ(DTypeBytes(DType::kI64), 8);
  EXPECT_EQ(DTypeBytes(DType::kBool), 1);
  EXPECT_TRUE(IsFloat(DType::kBF16));
  EXPECT_FALSE(IsFloat(DType::kI32));
  EXPECT_FALSE(IsFloat(DType::kBool));
}

TEST(GraphTest, ParseDTypeAcceptsCommonSpellings) {
  EXPECT_EQ(*ParseDType("FP16"), DType::kF16);
  EXPECT_EQ(*ParseDType("half"), DType::kF16);
  EXPECT_EQ(*ParseDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("float"), DType::kF32);
  EXPECT_EQ(*ParseDType("double"), DType::kF64);
  Result<DType> bad = ParseDType("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown dtype 'fp8'"), std::string::npos);
}

TEST(GraphTest, UnsupportedOnnxTypesAreErrors) {
  EXPECT_EQ(DTypeFromOnnx(8).status().message(), "tensor element type STRING is not supported");
  EXPECT_EQ(DTypeFromOnnx(0).status().message(), "tensor element type is UNDEFINED");
  EXPECT_FALSE(DTypeFromOnnx(4).ok());   // uint16
  EXPECT_FALSE(DTypeFromOnnx(14).ok());  // complex64
  EXPECT_FALSE(DTypeFromOnnx(99).ok());
}

TEST(GraphTest, ShapeHelpers) {
  EXPECT_EQ(NumElements({}), 1);
  EXPECT_EQ(NumElements({2, 3, 4}), 24);
  EXPECT_EQ(NumElements({5, 0}), 0);
  EXPECT_EQ(ShapeToString({1, 128, 768}), "[1,128,768]");
  EXPECT_EQ(ShapeToString({}), "[]");
  EXPECT_EQ(ValueKindName(ValueKind::kWeight), "weight");
  EXPECT_EQ(ValueKindName(ValueKind::kConstant), "constant");
}

TEST(GraphTest, AttributeAccessorsFallBackWhenAbsentOrOfAnotherType) {
  Node node;
  node.name = "attn/MatMul_3";
  node.op_type = "MatMul";
  node.attributes["axis"] = int64_t{2};
  node.attributes["alpha"] = 0.5;
  node.attributes["mode"] = std::string("linear");
  node.attributes["perm"] = std::vector<int64_t>{0, 2, 1};
  node.attributes["scales"] = std::vector<double>{1.0, 2.0};
  EXPECT_TRUE(node.HasAttr("axis"));
  EXPECT_FALSE(node.HasAttr("beta"));
  EXPECT_EQ(node.IntAttr("axis", 0), 2);
  EXPECT_EQ(node.IntAttr("alpha", 7), 7);
  EXPECT_EQ(node.FloatAttr("alpha", 0), 0.5);
  EXPECT_EQ(node.FloatAttr("axis", 0), 2.0);  // an int reads as a float
  EXPECT_EQ(node.StringAttr("mode", "nearest"), "linear");
  EXPECT_EQ(node.StringAttr("missing", "nearest"), "nearest");
  EXPECT_EQ(node.IntsAttr("perm"), std::vector<int64_t>({0, 2, 1}));
  EXPECT_TRUE(node.IntsAttr("scales").empty());
  EXPECT_EQ(node.FloatsAttr("scales"), std::vector<double>({1.0, 2.0}));
  EXPECT_EQ(DescribeNode(node), "node 'attn/MatMul_3' (MatMul)");
}

Value MakeValue(const std::string& name, ValueKind kind, Shape shape, DType dtype = DType::kF32) {
  Value v;
  v.name = name;
  v.kind = kind;
  v.shape = std::move(shape);
  v.has_shape = true;
  v.dtype = dtype;
  return v;
}

TEST(GraphTest, AddNodeLinksAndRebuildLinksAfterRemoval) {
  Graph g;
  int x = g.AddValue(MakeValue("x", ValueKind::kInput, {2, 4}));
  int w = g.AddValue(MakeValue("w", ValueKind::kWeight, {4, 8}, DType::kF16));
  int h = g.AddValue(MakeValue("h", ValueKind::kActivation, {2, 8}));
  int y = g.AddValue(MakeValue("y", ValueKind::kActivation, {2, 8}));
  EXPECT_EQ(g.FindValue("w"), w);
  EXPECT_EQ(g.FindValue("nope"), -1);
  Node matmul;
  matmul.op_type = "MatMul";
  matmul.inputs = {x, w};
  matmul.outputs = {h};
  Node relu;
  relu.op_type = "Relu";
  relu.inputs = {h, -1};
  relu.outputs = {y};
  EXPECT_EQ(g.AddNode(matmul), 0);
  EXPECT_EQ(g.AddNode(relu), 1);
  EXPECT_EQ(g.values[h].producer, 0);
  EXPECT_EQ(g.values[h].consumers, std::vector<int>({1}));
  EXPECT_EQ(g.values[x].consumers, std::vector<int>({0}));

  g.nodes.erase(g.nodes.begin());
  g.RebuildLinks();
  EXPECT_EQ(g.values[h].producer, -1);
  EXPECT_EQ(g.values[h].consumers, std::vector<int>({0}));
  EXPECT_TRUE(g.values[x].consumers.empty());
  EXPECT_EQ(g.values[y].producer, 0);
  EXPECT_EQ(g.FindValue("y"), y);

  EXPECT_EQ(g.WeightElements(), 32);
  EXPECT_EQ(g.WeightBytes(), 64);
}

}  // namespace
}  // namespace kfleet::planner
