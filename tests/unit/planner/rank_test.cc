#include "planner/rank.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace kfleet::planner {
namespace {

int Tensor(Graph &g, const std::string &name, Shape shape, ValueKind kind) {
  Value v;
  v.name = name;
  v.shape = std::move(shape);
  v.has_shape = true;
  v.kind = kind;
  return g.AddValue(std::move(v));
}

int Op(Graph &g, const std::string &name, const std::string &op, std::vector<int> in,
       std::vector<int> out) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return g.AddNode(std::move(n));
}

DeviceModel ToyDevice() {
  DeviceModel d;
  d.id = "toy";
  d.name = "toy device";
  d.backend = "cpu";
  d.matrix_flops_per_s[DType::kF32] = 1e12;
  d.vector_flops_per_s[DType::kF32] = 1e11;
  d.memory_bytes_per_s = 1e11;
  d.launch_overhead_s = 5e-6;
  d.baseline_matrix_efficiency = 0.5;
  d.baseline_memory_efficiency = 0.5;
  return d;
}

// x -> MatMul(W) -> Relu -> Add(b) -> Relu -> Add(b) -> out: one matmul and two
// identical two-op elementwise chains, grouped by hand so the test pins ranking
// alone.
struct Fixture {
  Graph g;
  std::vector<FusionGroup> groups;

  Fixture() {
    int x = Tensor(g, "x", {64, 256}, ValueKind::kInput);
    int w = Tensor(g, "w", {256, 256}, ValueKind::kWeight);
    int b = Tensor(g, "b", {256}, ValueKind::kWeight);
    int y = Tensor(g, "y", {64, 256}, ValueKind::kActivation);
    int r1 = Tensor(g, "r1", {64, 256}, ValueKind::kActivation);
    int a1 = Tensor(g, "a1", {64, 256}, ValueKind::kActivation);
    int r2 = Tensor(g, "r2", {64, 256}, ValueKind::kActivation);
    int a2 = Tensor(g, "a2", {64, 256}, ValueKind::kActivation);
    g.outputs = {a2};
    g.inputs = {x, w, b};
    int mm = Op(g, "mm", "MatMul", {x, w}, {y});
    int relu1 = Op(g, "relu1", "Relu", {y}, {r1});
    int add1 = Op(g, "add1", "Add", {r1, b}, {a1});
    int relu2 = Op(g, "relu2", "Relu", {a1}, {r2});
    int add2 = Op(g, "add2", "Add", {r2, b}, {a2});
    groups.push_back(Group({mm}, "gemm", {x, w}, {y}, mm));
    groups.push_back(Group({relu1, add1}, "elementwise", {y, b}, {a1}, relu1));
    groups.push_back(Group({relu2, add2}, "elementwise", {a1, b}, {a2}, relu2));
  }

  static FusionGroup Group(std::vector<int> nodes, std::string family, std::vector<int> in,
                           std::vector<int> out, int anchor) {
    FusionGroup grp;
    grp.nodes = std::move(nodes);
    grp.family = std::move(family);
    grp.inputs = std::move(in);
    grp.outputs = std::move(out);
    grp.anchor = anchor;
    return grp;
  }
};

TEST(RankTest, IdenticalGroupsBecomeOneJobWithACount) {
  Fixture f;
  Result<ModelPlan> plan = RankKernelJobs(f.g, f.groups, ToyDevice(), PlanOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->jobs.size(), 2u);
  int counts = 0;
  for (const auto &job : plan->jobs) counts += job.count;
  EXPECT_EQ(counts, 3);
  for (const auto &job : plan->jobs) {
    if (job.spec.family == "elementwise") {
      EXPECT_EQ(job.count, 2);
      EXPECT_EQ(job.anchors, (std::vector<std::string>{"relu1", "relu2"}));
    }
  }
}

TEST(RankTest, AmdahlTermsAreConsistent) {
  Fixture f;
  DeviceModel device = ToyDevice();
  Result<ModelPlan> plan = RankKernelJobs(f.g, f.groups, device, PlanOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, TimeSource::kRoofline);
  double share_sum = 0;
  double saved_fraction = 0;
  for (size_t i = 0; i < plan->jobs.size(); ++i) {
    const KernelJobPlan &job = plan->jobs[i];
    share_sum += job.share;
    saved_fraction += job.share * (1 - 1 / job.expected_speedup);
    EXPECT_GT(job.sol_s, 0);
    EXPECT_GT(job.baseline_s, job.sol_s);
    EXPECT_GE(job.expected_speedup, 1.0);
    EXPECT_LE(job.expected_speedup, job.baseline_s / job.sol_s + 1e-12);
    EXPECT_NEAR(job.share, job.count * job.baseline_s / plan->model_s, 1e-12);
    EXPECT_NEAR(job.expected_saving_s, plan->model_s * job.share * (1 - 1 / job.expected_speedup),
                1e-15);
    EXPECT_GT(job.spec.flops, 0);
    EXPECT_GT(job.spec.bytes, 0);
    if (i > 0) {
      EXPECT_GE(plan->jobs[i - 1].expected_saving_s, job.expected_saving_s);
    }
  }
  EXPECT_NEAR(share_sum, 1.0, 1e-12);
  ASSERT_FALSE(plan->what_if.empty());
  EXPECT_EQ(plan->what_if.back().top, 0);
  EXPECT_NEAR(plan->what_if.back().speedup, 1 / (1 - saved_fraction), 1e-9);
  EXPECT_EQ(plan->what_if.front().top, 1);
  EXPECT_LE(plan->what_if.front().speedup, plan->what_if.back().speedup);
}

TEST(RankTest, MeasuredTimesReplaceTheRooflineAndSaySo) {
  Fixture f;
  PlanOptions options;
  for (const Node &n : f.g.nodes) options.measured_node_s[n.name] = 10e-6;
  options.measured_node_s["mm"] = 100e-6;
  Result<ModelPlan> plan = RankKernelJobs(f.g, f.groups, ToyDevice(), options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, TimeSource::kMeasured);
  EXPECT_EQ(plan->measured_nodes, 5);
  EXPECT_NEAR(plan->model_s, 140e-6, 1e-12);
  for (const auto &job : plan->jobs) {
    EXPECT_EQ(job.source, TimeSource::kMeasured);
    if (job.spec.family == "gemm") {
      EXPECT_NEAR(job.baseline_s, 100e-6, 1e-12);
    }
    if (job.spec.family == "elementwise") {
      EXPECT_NEAR(job.baseline_s, 20e-6, 1e-12);
    }
  }
}

TEST(RankTest, PartlyMeasuredPlanIsNotCalledMeasured) {
  Fixture f;
  PlanOptions options;
  options.measured_node_s["mm"] = 100e-6;
  Result<ModelPlan> plan = RankKernelJobs(f.g, f.groups, ToyDevice(), options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, TimeSource::kRoofline);
  EXPECT_EQ(plan->measured_nodes, 1);
}

TEST(RankTest, OpaqueGroupsCountInModelTimeButAreNotOptimized) {
  Fixture f;
  f.groups[0].opaque = true;
  f.groups[0].family = "opaque";
  Result<ModelPlan> plan = RankKernelJobs(f.g, f.groups, ToyDevice(), PlanOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->opaque_jobs.size(), 1u);
  EXPECT_EQ(plan->opaque_jobs[0].expected_speedup, 1.0);
  EXPECT_EQ(plan->opaque_jobs[0].expected_saving_s, 0.0);
  EXPECT_GT(plan->opaque_jobs[0].share, 0.0);
  ASSERT_EQ(plan->jobs.size(), 1u);
  EXPECT_EQ(plan->jobs[0].count, 2);
}

TEST(RankTest, RejectsAnImpossibleReachableFraction) {
  Fixture f;
  PlanOptions options;
  options.reachable_sol_fraction = 1.5;
  EXPECT_EQ(RankKernelJobs(f.g, f.groups, ToyDevice(), options).status().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::planner
