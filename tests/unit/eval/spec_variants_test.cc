#include "eval/spec_variants.h"

#include <gtest/gtest.h>

#include "planner/onnx_import.h"

namespace kfleet::eval {
namespace {

struct Spec {
  std::string bytes;
  planner::Graph graph;
};

Spec Load(const std::string& text) {
  Result<std::string> bytes = planner::OnnxTextToModelBytes(text);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  Result<planner::Graph> graph = planner::ImportOnnxBytes(*bytes, "spec", "", {});
  EXPECT_TRUE(graph.ok()) << graph.status().ToString();
  return {*bytes, std::move(*graph)};
}

std::vector<std::string> Labels(const std::vector<ShapeVariant>& variants) {
  std::vector<std::string> labels;
  for (const ShapeVariant& v : variants) labels.push_back(v.label);
  return labels;
}

TEST(SpecVariantsTest, LayerNormGetsOddHalfAndDoubleSizes) {
  Spec spec = Load(R"(<ir_version: 8, opset_import: ["" : 17]>
      ln (float[128,1024] in0, float[1024] in1, float[1024] in2) => (float[128,1024] out0) {
        out0 = LayerNormalization <axis = -1> (in0, in1, in2)
      })");
  Result<std::vector<ShapeVariant>> variants = MakeShapeVariants(spec.bytes, spec.graph, 16);
  ASSERT_TRUE(variants.ok()) << variants.status().ToString();
  EXPECT_EQ(Labels(*variants),
            (std::vector<std::string>{"all odd: 128->127 1024->1023", "128->127", "128->64",
                                      "128->256", "1024->1023", "1024->512", "1024->2048"}));
  const planner::Graph& odd = (*variants)[0].graph;
  EXPECT_EQ(odd.values[odd.inputs[0]].shape, (planner::Shape{127, 1023}));
  EXPECT_EQ(odd.values[odd.inputs[1]].shape, (planner::Shape{1023}));
  EXPECT_EQ(odd.values[odd.outputs[0]].shape, (planner::Shape{127, 1023}));
}

TEST(SpecVariantsTest, ReshapeConstantsFollowTheSize) {
  Spec spec = Load(R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[1,128,768] in0) => (float[128,768] out0) {
        s = Constant <value = int64[2] {128, 768}> ()
        r = Reshape (in0, s)
        out0 = Relu (r)
      })");
  Result<std::vector<ShapeVariant>> variants = MakeShapeVariants(spec.bytes, spec.graph, 16);
  ASSERT_TRUE(variants.ok());
  ASSERT_FALSE(variants->empty());
  const planner::Graph& odd = (*variants)[0].graph;
  EXPECT_EQ((*variants)[0].label, "all odd: 128->127 768->767");
  EXPECT_EQ(odd.values[odd.outputs[0]].shape, (planner::Shape{127, 767}));
}

TEST(SpecVariantsTest, AConvsKernelShapeFollowsItsWeight) {
  // Exported specs repeat the weight's 3x3 in kernel_shape; a variant with a 5x5 weight must not
  // contradict it.
  Spec spec = Load(R"(<ir_version: 8, opset_import: ["" : 17]>
      c (float[1,8,12,12] in0, float[16,8,3,3] in1) => (float[1,16,12,12] out0) {
        out0 = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (in0, in1)
      })");
  Result<std::vector<ShapeVariant>> variants = MakeShapeVariants(spec.bytes, spec.graph, 16);
  ASSERT_TRUE(variants.ok()) << variants.status().ToString();
  bool five = false;
  for (const ShapeVariant& v : *variants) {
    const planner::Shape& weight = v.graph.values[v.graph.inputs[1]].shape;
    if (weight[2] != 5) continue;
    five = true;
    const int64_t height = v.graph.values[v.graph.inputs[0]].shape[2];
    EXPECT_EQ(v.graph.values[v.graph.outputs[0]].shape[2], height + 2 - 5 + 1) << v.label;
  }
  EXPECT_TRUE(five) << "a variant grows the 3x3 window to 5x5";
}

TEST(SpecVariantsTest, BudgetAndLimitAreRespected) {
  Spec spec = Load(R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[64,64] in0) => (float[64,64] out0) { out0 = Relu (in0) })");
  // Doubling a square's side quadruples it: out with a budget of 2x the elements.
  Result<std::vector<ShapeVariant>> variants = MakeShapeVariants(spec.bytes, spec.graph, 16, 2.0);
  ASSERT_TRUE(variants.ok());
  EXPECT_EQ(Labels(*variants), (std::vector<std::string>{"64->63", "64->32"}));
  Result<std::vector<ShapeVariant>> one = MakeShapeVariants(spec.bytes, spec.graph, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
}

TEST(SpecVariantsTest, FixedShapesGiveNoVariants) {
  // A size that only works as 4 (Reshape to a literal 2x2) cannot change.
  Spec spec = Load(R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[1,4] in0) => (float[2,2] out0) {
        s = Constant <value = int64[2] {2, 2}> ()
        out0 = Reshape (in0, s)
      })");
  Result<std::vector<ShapeVariant>> variants = MakeShapeVariants(spec.bytes, spec.graph, 16);
  ASSERT_TRUE(variants.ok());
  for (const ShapeVariant& v : *variants) ADD_FAILURE() << "unexpected variant " << v.label;
}

TEST(SpecVariantsTest, NotOnnxIsAnError) {
  planner::Graph empty;
  EXPECT_FALSE(MakeShapeVariants("not a model", empty).ok());
}

}  // namespace
}  // namespace kfleet::eval
