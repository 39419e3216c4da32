#include "planner/partition.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <string_view>
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

// The group holding the node that produces `value`.
const FusionGroup& GroupOf(const std::vector<FusionGroup>& groups, const GraphBuilder& b,
                           int value) {
  int node = b.NodeOf(value);
  for (const FusionGroup& g : groups) {
    for (int n : g.nodes) {
      if (n == node) return g;
    }
  }
  static const FusionGroup kNone;
  ADD_FAILURE() << "no group holds node " << node;
  return kNone;
}

std::map<std::string, int> Families(const std::vector<FusionGroup>& groups) {
  std::map<std::string, int> out;
  for (const FusionGroup& g : groups) ++out[g.family];
  return out;
}

TEST(PartitionTest, GemmTakesBiasAndActivationEpilogue) {
  GraphBuilder b;
  int x = b.Input("x", {128, 768});
  int w = b.Weight("w", {768, 3072});
  int bias = b.Weight("b", {3072});
  int mm = b.Op("MatMul", {x, w}, {128, 3072});
  int add = b.Op("Add", {mm, bias}, {128, 3072});
  int relu = b.Op("Relu", {add}, {128, 3072});
  b.Output(relu);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gemm+bias+relu");
  EXPECT_EQ(groups[0].nodes, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{x, w, bias}));
  EXPECT_EQ(groups[0].outputs, (std::vector<int>{relu}));
  EXPECT_EQ(groups[0].anchor, b.NodeOf(mm));
  EXPECT_FALSE(groups[0].opaque);
  EXPECT_FALSE(groups[0].free);
}

TEST(PartitionTest, GemmBiasInputAndTheActivationTags) {
  GraphBuilder b;
  int x = b.Input("x", {8, 64});
  int w = b.Weight("w", {64, 64});
  int c = b.Weight("c", {64});
  int gemm = b.Op("Gemm", {x, w, c}, {8, 64});
  int sig = b.Op("Sigmoid", {gemm}, {8, 64});
  int cast = b.Op("Cast", {sig}, {8, 64}, {{"to", int64_t{10}}}, DType::kF16);
  b.Output(cast);
  // A second matmul whose epilogue stops at a Where (not an epilogue op).
  int mm = b.Op("MatMul", {x, w}, {8, 64});
  int scaled = b.Op("Mul", {mm, b.Scalar(0.125)}, {8, 64});
  int cond = b.Input("cond", {8, 64}, DType::kBool);
  int where = b.Op("Where", {cond, scaled, x}, {8, 64});
  b.Output(where);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  EXPECT_EQ(GroupOf(groups, b, cast).family, "gemm+bias+sigmoid+cast");
  EXPECT_EQ(GroupOf(groups, b, scaled).family, "gemm+scale");
  EXPECT_EQ(GroupOf(groups, b, where).family, "elementwise");
}

TEST(PartitionTest, ResidualAddJoinsTheMatmulThatFinishesLast) {
  // The ResNet bottleneck end: conv3 and the downsample conv meet in Add -> Relu.
  GraphBuilder b;
  int x = b.Input("x", {8, 64, 56, 56});
  int w1 = b.Weight("w1", {256, 64, 1, 1});
  int w2 = b.Weight("w2", {256, 64, 1, 1});
  int conv3 = b.Op("Conv", {x, w1}, {8, 256, 56, 56});
  int down = b.Op("Conv", {x, w2}, {8, 256, 56, 56});
  int add = b.Op("Add", {conv3, down}, {8, 256, 56, 56});
  int relu = b.Op("Relu", {add}, {8, 256, 56, 56});
  b.Output(relu);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(GroupOf(groups, b, relu).family, "conv+add+relu");
  EXPECT_EQ(GroupOf(groups, b, relu).anchor, b.NodeOf(conv3));
  EXPECT_EQ(GroupOf(groups, b, down).family, "conv");
  EXPECT_EQ(GroupOf(groups, b, relu).inputs, (std::vector<int>{x, w1, down}));
}

TEST(PartitionTest, MergeThatWouldCloseACycleIsRefused) {
  // e = Exp(x) feeds a matmul whose softmax comes back into Add(e, s). Exp and Add have the
  // same shape, but one group holding both would run before and after the matmul.
  GraphBuilder b;
  int x = b.Input("x", {8, 64});
  int w = b.Weight("w", {64, 64});
  int e = b.Op("Exp", {x}, {8, 64});
  int mm = b.Op("MatMul", {e, w}, {8, 64});
  int s = b.Op("Softmax", {mm}, {8, 64}, {{"axis", int64_t{-1}}});
  int add = b.Op("Add", {e, s}, {8, 64});
  b.Output(add);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  EXPECT_NE(&GroupOf(groups, b, e), &GroupOf(groups, b, add));
  EXPECT_EQ(Families(groups),
            (std::map<std::string, int>{{"elementwise", 2}, {"gemm", 1}, {"softmax", 1}}));
}

TEST(PartitionTest, ResidualAddFromAnotherBranchIsFused) {
  // GPT-2's block: Gemm -> Reshape -> Add(residual) where the residual is the block input.
  GraphBuilder b;
  int x = b.Input("x", {1, 128, 768});
  int w = b.Weight("w", {768, 768});
  int flat = b.Op("Reshape", {x, b.Ints({128, 768})}, {128, 768});
  int gemm = b.Op("Gemm", {flat, w}, {128, 768});
  int back = b.Op("Reshape", {gemm, b.Ints({1, 128, 768})}, {1, 128, 768});
  int add = b.Op("Add", {back, x}, {1, 128, 768});
  b.Output(add);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gemm+add");
  EXPECT_EQ(groups[0].nodes.size(), 4u);
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{x, w}));
}

TEST(PartitionTest, ViewsJoinTheirProducerOrConsumer) {
  GraphBuilder b;
  int x = b.Input("x", {4, 8, 16});
  // A view read by two groups stays on its own as a free view group.
  int flat = b.Op("Reshape", {x, b.Ints({32, 16})}, {32, 16});
  int w = b.Weight("w", {16, 16});
  int mm = b.Op("MatMul", {flat, w}, {32, 16});
  int sm = b.Op("Softmax", {flat}, {32, 16}, {{"axis", int64_t{-1}}});
  // A view that is its producer's only reader joins the producer.
  int sm2 = b.Op("Softmax", {mm}, {32, 16}, {{"axis", int64_t{-1}}});
  int up = b.Op("Unsqueeze", {sm2, b.Ints({0})}, {1, 32, 16});
  b.Output(up);
  // A view of a graph input read by one group joins that group.
  int y = b.Input("y", {2, 3});
  int yv = b.Op("Flatten", {y}, {6}, {{"axis", int64_t{0}}});
  int top = b.Op("TopK", {yv, b.Ints({2})}, {2});
  b.Output(sm);
  b.Output(top);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  const FusionGroup& view = GroupOf(groups, b, flat);
  EXPECT_EQ(view.family, "view");
  EXPECT_TRUE(view.free);
  EXPECT_EQ(view.nodes.size(), 1u);
  EXPECT_EQ(GroupOf(groups, b, up).family, "softmax");
  EXPECT_EQ(&GroupOf(groups, b, up), &GroupOf(groups, b, sm2));
  EXPECT_EQ(&GroupOf(groups, b, yv), &GroupOf(groups, b, top));
  EXPECT_EQ(GroupOf(groups, b, top).family, "top_k");
}

TEST(PartitionTest, MatmulFoldsOperandLayouts) {
  // GPT-2's lm_head: MatMul(x, Transpose(W)).
  GraphBuilder b;
  int x = b.Input("x", {128, 768});
  int w = b.Weight("w", {50257, 768});
  int wt = b.Op("Transpose", {w}, {768, 50257}, {{"perm", std::vector<int64_t>{1, 0}}});
  int mm = b.Op("MatMul", {x, wt}, {128, 50257});
  b.Output(mm);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gemm");
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{w, x}));
}

// Split -> Reshape x3 -> Transpose x3 -> MatMul -> Mul -> Add(mask) -> Softmax -> MatMul ->
// Transpose -> Reshape, as GPT-2 exports it.
struct Gpt2Attention {
  GraphBuilder b;
  int qkv, mask, out, proj;
};

Gpt2Attention BuildGpt2Attention() {
  Gpt2Attention a;
  GraphBuilder& b = a.b;
  a.qkv = b.Input("qkv", {1, 128, 2304});
  a.mask = b.Input("mask", {1, 1, 128, 128});
  std::vector<int> parts =
      b.OpN("Split", {a.qkv, b.Ints({768, 768, 768})},
            {{1, 128, 768}, {1, 128, 768}, {1, 128, 768}}, {{"axis", int64_t{2}}});
  int heads = b.Ints({1, 128, 12, 64});
  int k4 = b.Op("Reshape", {parts[1], heads}, {1, 128, 12, 64});
  int v4 = b.Op("Reshape", {parts[2], heads}, {1, 128, 12, 64});
  int v = b.Op("Transpose", {v4}, {1, 12, 128, 64}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  int q4 = b.Op("Reshape", {parts[0], heads}, {1, 128, 12, 64});
  int q = b.Op("Transpose", {q4}, {1, 12, 128, 64}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  int kt = b.Op("Transpose", {k4}, {1, 12, 64, 128}, {{"perm", std::vector<int64_t>{0, 2, 3, 1}}});
  int scores = b.Op("MatMul", {q, kt}, {1, 12, 128, 128});
  int scaled = b.Op("Mul", {scores, b.Scalar(0.125)}, {1, 12, 128, 128});
  int masked = b.Op("Add", {scaled, a.mask}, {1, 12, 128, 128});
  int probs = b.Op("Softmax", {masked}, {1, 12, 128, 128}, {{"axis", int64_t{-1}}});
  int ctx = b.Op("MatMul", {probs, v}, {1, 12, 128, 64});
  int ctx_t =
      b.Op("Transpose", {ctx}, {1, 128, 12, 64}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  a.out = b.Op("Reshape", {ctx_t, b.Ints({128, 768})}, {128, 768});
  a.proj = b.Op("Gemm", {a.out, b.Weight("c_proj", {768, 768})}, {128, 768});
  b.Output(a.proj);
  return a;
}

TEST(PartitionTest, FindsGpt2Attention) {
  Gpt2Attention a = BuildGpt2Attention();
  std::vector<FusionGroup> groups = MustPartition(a.b.graph());
  ASSERT_EQ(groups.size(), 2u);
  const FusionGroup& attention = GroupOf(groups, a.b, a.out);
  EXPECT_EQ(attention.family, "attention");
  EXPECT_EQ(attention.nodes.size(), 14u);
  EXPECT_EQ(attention.inputs, (std::vector<int>{a.qkv, a.mask}));
  EXPECT_EQ(attention.outputs, (std::vector<int>{a.out}));
  EXPECT_EQ(a.b.graph().nodes[attention.anchor].op_type, "MatMul");
  EXPECT_EQ(GroupOf(groups, a.b, a.proj).family, "gemm");
}

TEST(PartitionTest, FindsAttentionWithScaledOperandsAndNanGuard) {
  // The dynamo SDPA decomposition: both operands scaled, softmax guarded by IsNaN / Where.
  GraphBuilder b;
  int q = b.Input("q", {1, 2, 16, 8});
  int k = b.Input("k", {1, 2, 16, 8});
  int v = b.Input("v", {1, 2, 16, 8});
  int mask = b.Constant({16, 16}, ConstantData{{}, std::vector<double>(256, 0.0)});
  int scale = b.Scalar(std::sqrt(1.0 / std::sqrt(8.0)));
  int kt = b.Op("Transpose", {k}, {1, 2, 8, 16}, {{"perm", std::vector<int64_t>{0, 1, 3, 2}}});
  int qs = b.Op("Mul", {q, scale}, {1, 2, 16, 8});
  int ks = b.Op("Mul", {kt, scale}, {1, 2, 8, 16});
  int scores = b.Op("MatMul", {qs, ks}, {1, 2, 16, 16});
  int masked = b.Op("Add", {scores, mask}, {1, 2, 16, 16});
  int probs = b.Op("Softmax", {masked}, {1, 2, 16, 16}, {{"axis", int64_t{-1}}});
  int nan = b.Op("IsNaN", {probs}, {1, 2, 16, 16}, {}, DType::kBool);
  int guarded = b.Op("Where", {nan, b.Scalar(0.0), probs}, {1, 2, 16, 16});
  int ctx = b.Op("MatMul", {guarded, v}, {1, 2, 16, 8});
  b.Output(ctx);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "attention");
  EXPECT_EQ(groups[0].nodes.size(), 9u);
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{k, q, v}));
}

TEST(PartitionTest, SoftmaxWithoutASecondMatmulIsNotAttention) {
  GraphBuilder b;
  int x = b.Input("x", {8, 64});
  int w = b.Weight("w", {64, 10});
  int logits = b.Op("MatMul", {x, w}, {8, 10});
  int probs = b.Op("LogSoftmax", {logits}, {8, 10}, {{"axis", int64_t{-1}}});
  b.Output(probs);
  std::vector<FusionGroup> groups = MustPartition(b.graph());
  EXPECT_EQ(Families(groups), (std::map<std::string, int>{{"gemm", 1}, {"log_softmax", 1}}));
}

// ReduceMean -> Sub -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul(gamma) -> Add(beta).
TEST(PartitionTest, FindsDecomposedLayerNorm) {
  GraphBuilder b;
  Shape s = {4, 16, 64};
  Shape r = {4, 16, 1};
  int x = b.Input("x", s);
  int gamma = b.Weight("gamma", {64});
  int beta = b.Weight("beta", {64});
  int axes = b.Ints({-1});
  int mean = b.Op("ReduceMean", {x, axes}, r);
  int d = b.Op("Sub", {x, mean}, s);
  int sq = b.Op("Pow", {d, b.Scalar(2)}, s);
  int var = b.Op("ReduceMean", {sq, axes}, r);
  int eps = b.Op("Add", {var, b.Scalar(1e-5)}, r);
  int root = b.Op("Sqrt", {eps}, r);
  int norm = b.Op("Div", {d, root}, s);
  int scaled = b.Op("Mul", {norm, gamma}, s);
  int shifted = b.Op("Add", {scaled, beta}, s);
  b.Output(shifted);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "layernorm");
  EXPECT_EQ(groups[0].nodes.size(), 9u);
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{x, gamma, beta}));
  EXPECT_EQ(groups[0].anchor, b.NodeOf(mean));
}

TEST(PartitionTest, LayerNormWithReciprocalAndTheLayerNormalizationOp) {
  GraphBuilder b;
  Shape s = {2, 32};
  Shape r = {2, 1};
  int x = b.Input("x", s);
  int mean = b.Op("ReduceMean", {x}, r, {{"axes", std::vector<int64_t>{-1}}});
  int d = b.Op("Sub", {x, mean}, s);
  int sq = b.Op("Mul", {d, d}, s);
  int var = b.Op("ReduceMean", {sq}, r, {{"axes", std::vector<int64_t>{-1}}});
  int eps = b.Op("Add", {b.Scalar(1e-6), var}, r);
  int root = b.Op("Sqrt", {eps}, r);
  int inv = b.Op("Reciprocal", {root}, r);
  int norm = b.Op("Mul", {d, inv}, s);
  int ln = b.Op("LayerNormalization", {norm, b.Weight("g", {32}), b.Weight("b", {32})}, s,
                {{"axis", int64_t{-1}}, {"epsilon", 1e-5}});
  b.Output(ln);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(GroupOf(groups, b, norm).family, "layernorm");
  EXPECT_EQ(GroupOf(groups, b, norm).nodes.size(), 8u);
  EXPECT_EQ(GroupOf(groups, b, ln).family, "layernorm");
}

// Pow -> ReduceMean -> Add -> Sqrt -> Reciprocal -> Mul(x) -> Mul(gamma).
TEST(PartitionTest, FindsDecomposedRmsNorm) {
  GraphBuilder b;
  Shape s = {1, 16, 128};
  Shape r = {1, 16, 1};
  int x = b.Input("x", s);
  int gamma = b.Weight("gamma", {128});
  int sq = b.Op("Pow", {x, b.Scalar(2)}, s);
  int ms = b.Op("ReduceMean", {sq, b.Ints({-1})}, r);
  int eps = b.Op("Add", {ms, b.Scalar(1e-6)}, r);
  int root = b.Op("Sqrt", {eps}, r);
  int inv = b.Op("Reciprocal", {root}, r);
  int norm = b.Op("Mul", {x, inv}, s);
  int out = b.Op("Mul", {gamma, norm}, s);
  b.Output(out);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "rmsnorm");
  EXPECT_EQ(groups[0].nodes.size(), 7u);
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{x, gamma}));
}

// 0.5 x (1 + erf(x / sqrt 2)) after a matmul: one "gelu_erf" epilogue tag.
TEST(PartitionTest, GeluErfIsAnEpilogue) {
  GraphBuilder b;
  int x = b.Input("x", {64, 256});
  int w = b.Weight("w", {256, 1024});
  int bias = b.Weight("bias", {1024});
  Shape s = {64, 1024};
  int mm = b.Op("MatMul", {x, w}, s);
  int h = b.Op("Add", {bias, mm}, s);
  int scaled = b.Op("Div", {h, b.Scalar(std::sqrt(2.0))}, s);
  int erf = b.Op("Erf", {scaled}, s);
  int one = b.Op("Add", {erf, b.Scalar(1)}, s);
  int prod = b.Op("Mul", {h, one}, s);
  int out = b.Op("Mul", {prod, b.Scalar(0.5)}, s);
  b.Output(out);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gemm+bias+gelu_erf");
  EXPECT_EQ(groups[0].outputs, (std::vector<int>{out}));
}

TEST(PartitionTest, StandaloneGeluErfWithMulByInverseSqrt2) {
  GraphBuilder b;
  Shape s = {8, 32};
  int x = b.Input("x", s);
  int half = b.Op("Mul", {x, b.Scalar(0.5)}, s);
  int scaled = b.Op("Mul", {b.Scalar(std::sqrt(0.5)), x}, s);
  int erf = b.Op("Erf", {scaled}, s);
  int one = b.Op("Add", {b.Scalar(1), erf}, s);
  int out = b.Op("Mul", {half, one}, s);
  b.Output(out);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gelu_erf");
  EXPECT_EQ(groups[0].anchor, b.NodeOf(erf));
}

// GPT-2's MLP: Gemm -> Reshape -> tanh-form GELU, with x read three times.
TEST(PartitionTest, GeluTanhIsAnEpilogueThroughAView) {
  GraphBuilder b;
  int x = b.Input("x", {128, 768});
  int w = b.Weight("w", {768, 3072});
  Shape s = {1, 128, 3072};
  int gemm = b.Op("Gemm", {x, w}, {128, 3072});
  int h = b.Op("Reshape", {gemm, b.Ints({1, 128, 3072})}, s);
  int half = b.Op("Mul", {h, b.Scalar(0.5)}, s);
  int cube = b.Op("Pow", {h, b.Scalar(3)}, s);
  int small = b.Op("Mul", {cube, b.Scalar(0.044715)}, s);
  int inner = b.Op("Add", {h, small}, s);
  int scaled = b.Op("Mul", {inner, b.Scalar(0.7978845608028654)}, s);
  int th = b.Op("Tanh", {scaled}, s);
  int one = b.Op("Add", {th, b.Scalar(1)}, s);
  int out = b.Op("Mul", {half, one}, s);
  b.Output(out);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "gemm+gelu_tanh");
  EXPECT_EQ(groups[0].nodes.size(), 10u);
}

TEST(PartitionTest, SiluAndGeluOpAreActivationTags) {
  GraphBuilder b;
  Shape s = {16, 64};
  int x = b.Input("x", s);
  int w = b.Weight("w", {64, 64});
  int mm = b.Op("MatMul", {x, w}, s);
  int sig = b.Op("Sigmoid", {mm}, s);
  int silu = b.Op("Mul", {sig, mm}, s);
  int mm2 = b.Op("MatMul", {silu, w}, s);
  int gelu = b.Op("Gelu", {mm2}, s, {{"approximate", std::string("tanh")}});
  b.Output(gelu);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  EXPECT_EQ(Families(groups),
            (std::map<std::string, int>{{"gemm+silu", 1}, {"gemm+gelu_tanh", 1}}));
}

TEST(PartitionTest, ConvWithRelu6AndBiasAddOnTheChannelAxis) {
  GraphBuilder b;
  Shape s = {8, 32, 112, 112};
  int x = b.Input("x", {8, 3, 224, 224});
  int conv =
      b.Op("Conv", {x, b.Weight("w", {32, 3, 3, 3})}, s, {{"strides", std::vector<int64_t>{2, 2}}});
  int biased = b.Op("Add", {conv, b.Weight("b", {32, 1, 1})}, s);
  int clip = b.Op("Clip", {biased, b.Scalar(0), b.Scalar(6)}, s);
  b.Output(clip);
  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "conv+bias+relu6");
}

TEST(PartitionTest, ElementwiseChainIsMaximalAtOneShape) {
  GraphBuilder b;
  Shape s = {32, 128};
  int x = b.Input("x", s);
  int y = b.Input("y", s);
  int col = b.Input("col", {32, 1});
  int a = b.Op("Mul", {x, b.Scalar(2)}, s);
  int c = b.Op("Add", {a, y}, s);
  int d = b.Op("Sigmoid", {c}, s);
  int e = b.Op("Sub", {d, col}, s);  // broadcasts `col` into the chain's shape
  int f = b.Op("Exp", {a}, s);       // a second reader of `a`, same shape
  int g = b.Op("Mul", {e, f}, s);
  // A different shape starts its own chain.
  int sum = b.Op("ReduceSum", {g, b.Ints({1})}, {32, 1});
  int h = b.Op("Neg", {col}, {32, 1});
  int i = b.Op("Add", {sum, h}, {32, 1});
  b.Output(g);  // read outside, so the chain is not the reduction's prologue
  b.Output(i);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  const FusionGroup& chain = GroupOf(groups, b, g);
  EXPECT_EQ(chain.family, "elementwise");
  EXPECT_EQ(chain.nodes.size(), 6u);
  EXPECT_EQ(&GroupOf(groups, b, c), &chain);
  // The reduction takes the Add as epilogue; the Neg it adds stays a chain of its own.
  const FusionGroup& reduce = GroupOf(groups, b, sum);
  EXPECT_EQ(reduce.family, "reduce");
  EXPECT_EQ(&GroupOf(groups, b, i), &reduce);
  EXPECT_EQ(groups.size(), 3u);
}

TEST(PartitionTest, ReductionTakesElementwisePrologueAndEpilogue) {
  GraphBuilder b;
  int x = b.Input("x", {8, 512});
  int e = b.Op("Exp", {x}, {8, 512});
  int s = b.Op("ReduceSum", {e, b.Ints({1})}, {8, 1}, {{"keepdims", int64_t{1}}});
  int l = b.Op("Log", {s}, {8, 1});
  b.Output(l);
  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].family, "reduce");
  EXPECT_EQ(groups[0].anchor, b.NodeOf(s));
}

TEST(PartitionTest, UnsupportedNodeIsOpaqueAndStopsFusion) {
  GraphBuilder b;
  Shape s = {8, 64};
  int x = b.Input("x", s);
  int mm = b.Op("MatMul", {x, b.Weight("w", {64, 64})}, s);
  int odd = b.Op("FancyOp", {mm}, s);
  b.MarkUnsupported(odd);
  int view = b.Op("Reshape", {odd, b.Ints({512})}, {512});
  int relu = b.Op("Relu", {view}, {512});
  b.Output(relu);

  std::vector<FusionGroup> groups = MustPartition(b.graph());
  const FusionGroup& opaque = GroupOf(groups, b, odd);
  EXPECT_EQ(opaque.family, "opaque");
  EXPECT_TRUE(opaque.opaque);
  EXPECT_EQ(opaque.nodes.size(), 1u);
  EXPECT_EQ(GroupOf(groups, b, mm).family, "gemm");
  EXPECT_EQ(&GroupOf(groups, b, view), &GroupOf(groups, b, relu));
}

TEST(PartitionTest, GroupOutputsAreValuesReadOutsideOrGraphOutputs) {
  GraphBuilder b;
  Shape s = {4, 4};
  int x = b.Input("x", s);
  int a = b.Op("Relu", {x}, s);
  int c = b.Op("Neg", {a}, s);
  b.Output(a);
  b.Output(c);
  std::vector<FusionGroup> groups = MustPartition(b.graph());
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].outputs, (std::vector<int>{a, c}));
  EXPECT_EQ(groups[0].inputs, (std::vector<int>{x}));
}

TEST(PartitionTest, CheckPartitionRejectsBrokenPartitions) {
  GraphBuilder b;
  Shape s = {4};
  int x = b.Input("x", s);
  int a1 = b.Op("Relu", {x}, s);     // node 0
  int b1 = b.Op("Neg", {a1}, s);     // node 1
  int b2 = b.Op("Exp", {x}, s);      // node 2
  int a2 = b.Op("Add", {b2, x}, s);  // node 3
  b.Output(b1);
  b.Output(a2);
  const Graph& g = b.graph();

  FusionGroup a;
  a.nodes = {0, 3};
  FusionGroup bb;
  bb.nodes = {1, 2};
  // Neither group has a path out and back by itself, yet a feeds b and b feeds a.
  EXPECT_EQ(CheckPartition(g, {a, bb}).code(), ErrorCode::kInternal);
  EXPECT_NE(CheckPartition(g, {a, bb}).message().find("cycle"), std::string::npos);

  FusionGroup all;
  all.nodes = {0, 1, 2, 3};
  EXPECT_TRUE(CheckPartition(g, {all}).ok());
  FusionGroup missing;
  missing.nodes = {0, 1, 2};
  EXPECT_NE(CheckPartition(g, {missing}).message().find("in no group"), std::string::npos);
  FusionGroup twice;
  twice.nodes = {3};
  EXPECT_NE(CheckPartition(g, {all, twice}).message().find("in groups"), std::string::npos);
  FusionGroup unordered;
  unordered.nodes = {1, 0, 2, 3};
  EXPECT_NE(CheckPartition(g, {unordered}).message().find("order"), std::string::npos);
}

TEST(PartitionTest, RejectsANodeWithoutOutputs) {
  GraphBuilder b;
  int x = b.Input("x", {4});
  b.Op("Relu", {x}, {4});
  b.mutable_graph().nodes[0].outputs.clear();
  EXPECT_EQ(PartitionGraph(b.graph()).status().code(), ErrorCode::kInvalidArgument);
}

// Random DAGs of matmuls, elementwise ops, views, softmaxes and unsupported ops: every node
// lands in exactly one group and the group graph stays acyclic (MustPartition checks both).
TEST(PartitionTest, RandomGraphsPartitionIntoAcyclicGroups) {
  std::mt19937 rng(1234);
  const char* kUnary[] = {"Relu", "Exp", "Tanh", "Sigmoid", "Reshape", "Softmax", "Transpose"};
  const char* kBinary[] = {"Add", "Mul", "MatMul", "Sub"};
  for (int trial = 0; trial < 200; ++trial) {
    GraphBuilder b;
    Shape s = {16, 16};
    std::vector<int> live = {b.Input("x", s), b.Input("y", s)};
    int w = b.Weight("w", s);
    int count = 5 + static_cast<int>(rng() % 40);
    for (int i = 0; i < count; ++i) {
      int lhs = live[rng() % live.size()];
      int out;
      if (rng() % 2 == 0) {
        out = b.Op(kUnary[rng() % 7], {lhs}, s);
      } else {
        int rhs = rng() % 4 == 0 ? w : live[rng() % live.size()];
        out = b.Op(kBinary[rng() % 4], {lhs, rhs}, s);
      }
      if (rng() % 10 == 0) b.MarkUnsupported(out);
      live.push_back(out);
    }
    b.Output(live.back());
    std::vector<FusionGroup> groups = MustPartition(b.graph());
    size_t nodes = 0;
    for (const FusionGroup& g : groups) nodes += g.nodes.size();
    ASSERT_EQ(nodes, b.graph().nodes.size()) << "trial " << trial;
  }
}

// The same rules on graphs in ONNX text form, through the importer.

const FusionGroup& GroupNamed(const Graph& g, const std::vector<FusionGroup>& groups,
                              std::string_view value) {
  int producer = g.values[g.FindValue(value)].producer;
  for (const FusionGroup& group : groups) {
    for (int n : group.nodes) {
      if (n == producer) return group;
    }
  }
  static const FusionGroup kNone;
  ADD_FAILURE() << "no group produces " << value;
  return kNone;
}

TEST(PartitionTextTest, TransformerBlock) {
  Graph g = MustImport(18, R"(
    block (float[1,16,32] x, float[1,1,16,16] mask, float[32] gamma, float[32] beta,
           float[32,96] w_qkv, float[32,32] w_o) => (float[1,16,32] y)
        <int64[2] flat = {16, 32}, int64[3] wide = {1, 16, 96}, int64[4] heads = {1, 16, 4, 8},
         int64[3] back = {1, 16, 32}, float scale = {0.35355339}> {
      ln = LayerNormalization<axis = -1>(x, gamma, beta)
      ln2 = Reshape(ln, flat)
      qkv2 = Gemm(ln2, w_qkv)
      qkv = Reshape(qkv2, wide)
      q0, k0, v0 = Split<axis = 2, num_outputs = 3>(qkv)
      q1 = Reshape(q0, heads)
      k1 = Reshape(k0, heads)
      v1 = Reshape(v0, heads)
      q = Transpose<perm = [0, 2, 1, 3]>(q1)
      kt = Transpose<perm = [0, 2, 3, 1]>(k1)
      v = Transpose<perm = [0, 2, 1, 3]>(v1)
      s = MatMul(q, kt)
      ss = Mul(s, scale)
      sm = Add(ss, mask)
      p = Softmax<axis = -1>(sm)
      c = MatMul(p, v)
      ct = Transpose<perm = [0, 2, 1, 3]>(c)
      c2 = Reshape(ct, flat)
      o = Gemm(c2, w_o)
      o3 = Reshape(o, back)
      y = Add(o3, x)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  EXPECT_EQ(Families(groups),
            (std::map<std::string, int>{
                {"attention", 1}, {"gemm", 1}, {"gemm+add", 1}, {"layernorm", 1}}));
  const FusionGroup& attention = GroupNamed(g, groups, "p");
  EXPECT_EQ(attention.family, "attention");
  EXPECT_EQ(attention.nodes.size(), 14u);
  EXPECT_EQ(&GroupNamed(g, groups, "qkv"), &GroupNamed(g, groups, "qkv2"));
  EXPECT_EQ(GroupNamed(g, groups, "ln2").family, "gemm");
}

TEST(PartitionTextTest, DecomposedLayerNormAndErfGeluMlp) {
  Graph g = MustImport(18, R"(
    mlp (float[2,8,16] x, float[16] gamma, float[16] beta, float[16,64] w1, float[64] b1,
         float[64,16] w2) => (float[2,8,16] y)
        <int64[1] axes = {-1}, float two = {2.0}, float eps = {1e-5}, float sqrt2 = {1.4142135},
         float one = {1.0}, float half = {0.5}> {
      mean = ReduceMean(x, axes)
      d = Sub(x, mean)
      sq = Pow(d, two)
      var = ReduceMean(sq, axes)
      ve = Add(var, eps)
      sd = Sqrt(ve)
      n = Div(d, sd)
      ng = Mul(n, gamma)
      ln = Add(ng, beta)
      h = MatMul(ln, w1)
      hb = Add(h, b1)
      e0 = Div(hb, sqrt2)
      e1 = Erf(e0)
      e2 = Add(e1, one)
      e3 = Mul(hb, e2)
      act = Mul(e3, half)
      o = MatMul(act, w2)
      y = Add(o, x)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  EXPECT_EQ(Families(groups), (std::map<std::string, int>{
                                  {"gemm+add", 1}, {"gemm+bias+gelu_erf", 1}, {"layernorm", 1}}));
  EXPECT_EQ(GroupNamed(g, groups, "ln").nodes.size(), 9u);
}

TEST(PartitionTextTest, RmsNormAndSwiGlu) {
  Graph g = MustImport(18, R"(
    llama (float[1,8,32] x, float[32] gamma, float[32,64] wg, float[32,64] wu, float[64,32] wd)
        => (float[1,8,32] y) <int64[1] axes = {-1}, float two = {2.0}, float eps = {1e-6}> {
      sq = Pow(x, two)
      ms = ReduceMean(sq, axes)
      me = Add(ms, eps)
      rt = Sqrt(me)
      inv = Reciprocal(rt)
      xn = Mul(x, inv)
      h = Mul(xn, gamma)
      gate = MatMul(h, wg)
      sg = Sigmoid(gate)
      silu = Mul(gate, sg)
      up = MatMul(h, wu)
      prod = Mul(silu, up)
      down = MatMul(prod, wd)
      y = Add(x, down)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  EXPECT_EQ(Families(groups),
            (std::map<std::string, int>{
                {"gemm", 1}, {"gemm+add", 1}, {"gemm+silu+mul", 1}, {"rmsnorm", 1}}));
  EXPECT_EQ(GroupNamed(g, groups, "h").nodes.size(), 7u);
}

TEST(PartitionTextTest, UnsupportedOpIsOpaque) {
  Graph g = MustImport(18, R"(
    g (float[4,8] x) => (float[4,8] y) {
      a = Relu(x)
      b = com.example.Mystery(a)
      y = Neg(b)
    })");
  std::vector<FusionGroup> groups = MustPartition(g);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_TRUE(groups[1].opaque);
  EXPECT_EQ(groups[1].family, "opaque");
}

// The real exports in tests/data/models.

std::vector<FusionGroup> PartitionModel(const std::string& file, Graph& graph) {
  Result<Graph> g = ImportOnnxFile(TestModelPath(file), ImportOptions{});
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  if (!g.ok()) return {};
  graph = std::move(g).value();
  return MustPartition(graph);
}

TEST(PartitionRealModelTest, Gpt2Small) {
  Graph g;
  std::vector<FusionGroup> groups = PartitionModel("gpt2-small_b1s128.onnx", g);
  // Per layer: qkv gemm, attention, c_proj + residual, MLP up + GELU, MLP down + residual and
  // two layernorms; then the final layernorm and the lm_head matmul (its weight transpose
  // folded in). The top: two embedding gathers (the token ids' Reshape joins the first), the
  // embedding add, and the mask (And, And, Where) as one chain.
  EXPECT_EQ(Families(groups), (std::map<std::string, int>{{"attention", 12},
                                                          {"elementwise", 2},
                                                          {"gather", 2},
                                                          {"gemm", 13},
                                                          {"gemm+add", 24},
                                                          {"gemm+gelu_tanh", 12},
                                                          {"layernorm", 25}}));
  for (const FusionGroup& group : groups) {
    EXPECT_FALSE(group.opaque);
    EXPECT_FALSE(group.free);
    // Split, 3 x (Reshape, Transpose), MatMul, Mul, Add, Softmax, MatMul, Transpose, Reshape.
    if (group.family == "attention") {
      EXPECT_EQ(group.nodes.size(), 14u);
    }
    // Reshape, Gemm, Reshape, the eight GELU ops, and the Reshape that feeds the next Gemm.
    if (group.family == "gemm+gelu_tanh") {
      EXPECT_EQ(group.nodes.size(), 12u);
    }
  }
  EXPECT_EQ(GroupNamed(g, groups, "where").family, "elementwise");
  EXPECT_EQ(GroupNamed(g, groups, "where").nodes.size(), 3u);
  EXPECT_EQ(GroupNamed(g, groups, "linear").inputs.size(), 2u);
}

TEST(PartitionRealModelTest, ResNet50) {
  Graph g;
  std::vector<FusionGroup> groups = PartitionModel("resnet50_b8.onnx", g);
  // 53 convs: the stem and two per bottleneck end in Relu (1 + 16 x 2 = 33); each of the 16
  // bottlenecks ends in conv3 + Add + Relu; the 4 downsample convs feed that Add and stay
  // plain. The classifier Gemm takes its bias and the pooled Reshape.
  EXPECT_EQ(Families(groups), (std::map<std::string, int>{{"conv", 4},
                                                          {"conv+add+relu", 16},
                                                          {"conv+relu", 33},
                                                          {"gemm+bias", 1},
                                                          {"pool", 1},
                                                          {"reduce", 1}}));
  EXPECT_EQ(GroupNamed(g, groups, "linear").nodes.size(), 2u);
}

TEST(PartitionRealModelTest, MobileNetV2) {
  Graph g;
  std::vector<FusionGroup> groups = PartitionModel("mobilenet_v2_b8.op17.onnx", g);
  // 35 Clip(0, 6) after convs; 17 projection convs, 10 of which end in the residual Add.
  EXPECT_EQ(Families(groups),
            (std::map<std::string, int>{
                {"conv", 7}, {"conv+add", 10}, {"conv+relu6", 35}, {"gemm", 1}, {"reduce", 1}}));
}

TEST(PartitionRealModelTest, TinyGpt2SdpaDecomposition) {
  Graph g;
  std::vector<FusionGroup> groups = PartitionModel("tinygpt2_1.onnx", g);
  EXPECT_EQ(Families(groups), (std::map<std::string, int>{{"attention", 1},
                                                          {"elementwise", 1},
                                                          {"gather", 1},
                                                          {"gemm", 2},
                                                          {"gemm+add", 2},
                                                          {"gemm+gelu_tanh", 1},
                                                          {"layernorm", 3}}));
  const FusionGroup& attention = GroupNamed(g, groups, "scaled_dot_product_attention");
  EXPECT_EQ(attention.family, "attention");
  // The Split, q / k / v views and transposes (k goes through two more), both scaling Muls,
  // MatMul, Add, Softmax, IsNaN, Where, MatMul, and the output Transpose and Reshape.
  EXPECT_EQ(attention.nodes.size(), 20u);
}

}  // namespace
}  // namespace kfleet::planner
