// The whole planner on the real PyTorch exports in tests/data/models: import,
// partition, rank.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"

namespace kfleet::planner {
namespace {

std::string ModelPath(const std::string &file) {
  const char *root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

PlannedModel Plan(const std::string &file, const ImportOptions &import = {}) {
  Result<DeviceModel> h200 = DeviceCatalog::Builtin().Find("h200");
  EXPECT_TRUE(h200.ok());
  Result<PlannedModel> planned = PlanOnnxFile(ModelPath(file), import, *h200, PlanOptions{});
  EXPECT_TRUE(planned.ok()) << planned.status().ToString();
  return std::move(planned).value();
}

std::map<std::string, int> GroupFamilies(const PlannedModel &p) {
  std::map<std::string, int> families;
  for (const FusionGroup &g : p.groups) ++families[g.family];
  return families;
}

// Every runtime node sits in exactly one group, every value a node touches has
// a shape, and the job counts add up to the non-free groups.
void ExpectWellFormed(const PlannedModel &p) {
  std::vector<int> seen(p.graph.nodes.size(), 0);
  for (const FusionGroup &g : p.groups) {
    for (int n : g.nodes) ++seen[n];
  }
  for (size_t n = 0; n < seen.size(); ++n) {
    EXPECT_EQ(seen[n], 1) << DescribeNode(p.graph.nodes[n]);
  }
  for (const Node &node : p.graph.nodes) {
    for (int v : node.inputs) {
      if (v >= 0) {
        EXPECT_TRUE(p.graph.values[v].has_shape) << p.graph.values[v].name;
      }
    }
    for (int v : node.outputs) {
      if (v >= 0) {
        EXPECT_TRUE(p.graph.values[v].has_shape) << p.graph.values[v].name;
      }
    }
  }
  int occurrences = 0;
  for (const auto &job : p.plan.jobs) occurrences += job.count;
  for (const auto &job : p.plan.opaque_jobs) occurrences += job.count;
  int kernel_groups = 0;
  for (const FusionGroup &g : p.groups) kernel_groups += g.free ? 0 : 1;
  EXPECT_EQ(occurrences, kernel_groups);
  double share = 0;
  for (const auto &job : p.plan.jobs) share += job.share;
  for (const auto &job : p.plan.opaque_jobs) share += job.share;
  EXPECT_NEAR(share, 1.0, 1e-9);
}

TEST(RealModelsTest, Gpt2SmallPlansWithTheTransformerFamilies) {
  PlannedModel p = Plan("gpt2-small_b1s128.onnx");
  ExpectWellFormed(p);
  std::map<std::string, int> families = GroupFamilies(p);
  EXPECT_EQ(families["attention"], 12);
  EXPECT_EQ(families["layernorm"], 25);
  EXPECT_EQ(families["gemm+gelu_tanh"], 12);
  // The export has no bias inputs (zero biases were dropped); the projections
  // end in the residual add instead.
  EXPECT_EQ(families["gemm+add"], 24);
  EXPECT_TRUE(p.plan.opaque_jobs.empty());

  // The 12 equal blocks collapse: each per-layer kernel is one job with
  // count 12.
  std::map<std::string, int> job_count;
  for (const auto &job : p.plan.jobs) job_count[job.spec.family] += job.count;
  for (const auto &job : p.plan.jobs) {
    if (job.spec.family == "attention" || job.spec.family == "gemm+gelu_tanh") {
      EXPECT_EQ(job.count, 12) << job.spec.name;
    }
  }
}

TEST(RealModelsTest, Gpt2SmallFlopsMatchTheAnalyticCount) {
  PlannedModel p = Plan("gpt2-small_b1s128.onnx");
  const double layers = 12, d = 768, tokens = 128, vocab = 50257;
  // Per layer: qkv (d x 3d), attention projection (d x d), MLP (d x 4d and 4d x
  // d); then the tied lm_head (d x vocab), which is a matmul in the forward
  // pass.
  const double matmul_params = layers * (d * 3 * d + d * d + 2 * d * 4 * d) + d * vocab;
  // QK^T and AV: 2 FLOPs per multiply-add, two products of tokens x tokens x d
  // per layer.
  const double attention = layers * 2 * 2 * tokens * tokens * d;
  const double analytic = 2 * matmul_params * tokens + attention;
  EXPECT_NEAR(p.plan.model_flops / analytic, 1.0, 0.02)
      << "planner " << p.plan.model_flops << " analytic " << analytic;
}

TEST(RealModelsTest, ResNet50PlansConvEpilogues) {
  PlannedModel p = Plan("resnet50_b8.onnx");
  ExpectWellFormed(p);
  std::map<std::string, int> families = GroupFamilies(p);
  EXPECT_EQ(families["conv+add+relu"], 16);
  EXPECT_EQ(families["conv+relu"], 33);
  EXPECT_EQ(families["gemm+bias"], 1);
  // 4.09 G multiply-adds per 224x224 image in the convolutions and the
  // classifier.
  EXPECT_NEAR(p.plan.model_flops / (2 * 4.09e9 * 8), 1.0, 0.02) << p.plan.model_flops;
}

TEST(RealModelsTest, MobileNetV2AtOpset17PlansRelu6Epilogues) {
  PlannedModel p = Plan("mobilenet_v2_b8.op17.onnx");
  ExpectWellFormed(p);
  std::map<std::string, int> families = GroupFamilies(p);
  EXPECT_EQ(families["conv+relu6"], 35);
  EXPECT_EQ(families["conv+add"], 10);
}

TEST(RealModelsTest, TinyGpt2WithExternalDataPlansAttention) {
  PlannedModel p = Plan("tinygpt2_1.onnx");
  ExpectWellFormed(p);
  std::map<std::string, int> families = GroupFamilies(p);
  EXPECT_EQ(families["attention"], 1);
  EXPECT_EQ(families["layernorm"], 3);
  EXPECT_EQ(families["gemm+gelu_tanh"], 1);
}

TEST(RealModelsTest, HalfPrecisionHalvesTheTrafficAndUsesTensorCoreRates) {
  ImportOptions fp16;
  fp16.compute_dtype = DType::kF16;
  PlannedModel full = Plan("resnet50_b8.onnx");
  PlannedModel half = Plan("resnet50_b8.onnx", fp16);
  EXPECT_NEAR(half.plan.model_bytes / full.plan.model_bytes, 0.5, 0.01);
  EXPECT_DOUBLE_EQ(half.plan.model_flops, full.plan.model_flops);
  EXPECT_LT(half.plan.model_s, full.plan.model_s);
}

// A kernel job's spec is planned again by every agent that reads it: it must form the same one
// group in every precision, although half types store the pattern constants rounded (bf16 keeps
// sqrt(2/pi) as 0.796875).
TEST(RealModelsTest, Gpt2SpecsReplanAsOneGroupInEveryPrecision) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    ImportOptions import;
    import.compute_dtype = dtype;
    PlannedModel p = Plan("gpt2-small_b1s128.onnx", import);
    for (const auto &job : p.plan.jobs) {
      Result<Graph> spec = ImportOnnxBytes(job.spec.onnx_model, job.spec.name, "", {});
      ASSERT_TRUE(spec.ok()) << spec.status().ToString();
      Result<DeviceModel> h200 = DeviceCatalog::Builtin().Find("h200");
      Result<PlannedModel> again = PlanGraph(std::move(*spec), *h200, PlanOptions{});
      ASSERT_TRUE(again.ok()) << again.status().ToString();
      int kernel_groups = 0;
      std::string family;
      for (const FusionGroup &g : again->groups) {
        if (g.free) continue;
        ++kernel_groups;
        family = g.family;
      }
      EXPECT_EQ(kernel_groups, 1) << DTypeName(dtype) << " " << job.spec.name;
      EXPECT_EQ(family, job.spec.family) << DTypeName(dtype) << " " << job.spec.name;
    }
  }
}

}  // namespace
}  // namespace kfleet::planner
