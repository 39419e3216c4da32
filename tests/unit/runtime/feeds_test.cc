#include "runtime/feeds.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "planner/onnx_import.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::runtime {
namespace {

using planner::Graph;
using planner::ImportOnnxText;
using planner::import_testing::TestModelPath;

Graph MustImportText(std::string_view text, const planner::ImportOptions& options = {}) {
  Result<Graph> graph = ImportOnnxText(text, options);
  EXPECT_TRUE(graph.ok()) << graph.status().ToString();
  return graph.ok() ? std::move(graph).value() : Graph{};
}

TensorMap MustFeed(const Graph& graph, const FeedOptions& options) {
  Result<TensorMap> feeds = MakeRandomFeeds(graph, options);
  EXPECT_TRUE(feeds.ok()) << feeds.status().ToString();
  return feeds.ok() ? std::move(feeds).value() : TensorMap{};
}

const Tensor& FeedNamed(const Graph& graph, const TensorMap& feeds, std::string_view name) {
  static const Tensor kMissing;
  int id = graph.FindValue(name);
  auto it = feeds.find(id);
  EXPECT_NE(it, feeds.end()) << "no feed for " << name;
  return it != feeds.end() ? it->second : kMissing;
}

constexpr std::string_view kTwoInputs = R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[4,8] x, float[4,8] y) => (float[4,8] z) { z = Add(x, y) })";

constexpr std::string_view kThreeInputs = R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[4,8] x, float[4,8] w, float[4,8] y) => (float[4,8] z) {
  t = Add(x, w)
  z = Add(t, y)
})";

TEST(FeedsTest, SameSeedGivesSameTensors) {
  Graph g = MustImportText(kTwoInputs);
  FeedOptions options;
  options.seed = 42;
  TensorMap a = MustFeed(g, options);
  TensorMap b = MustFeed(g, options);
  ASSERT_EQ(a.size(), 2u);
  for (const auto& [id, tensor] : a) {
    EXPECT_TRUE(BitwiseEqual(tensor, b.at(id))) << g.values[id].name;
    EXPECT_EQ(tensor.dtype(), DType::kF32);
    EXPECT_EQ(tensor.shape(), (planner::Shape{4, 8}));
  }
}

TEST(FeedsTest, DifferentSeedsAndDifferentValuesDiffer) {
  Graph g = MustImportText(kTwoInputs);
  FeedOptions options;
  options.seed = 1;
  TensorMap a = MustFeed(g, options);
  options.seed = 2;
  TensorMap b = MustFeed(g, options);
  EXPECT_FALSE(BitwiseEqual(FeedNamed(g, a, "x"), FeedNamed(g, b, "x")));
  EXPECT_FALSE(BitwiseEqual(FeedNamed(g, a, "x"), FeedNamed(g, a, "y")));
}

TEST(FeedsTest, AddingAnInputDoesNotShiftTheOthers) {
  Graph two = MustImportText(kTwoInputs);
  Graph three = MustImportText(kThreeInputs);
  FeedOptions options;
  options.seed = 7;
  TensorMap a = MustFeed(two, options);
  TensorMap b = MustFeed(three, options);
  EXPECT_TRUE(BitwiseEqual(FeedNamed(two, a, "x"), FeedNamed(three, b, "x")));
  EXPECT_TRUE(BitwiseEqual(FeedNamed(two, a, "y"), FeedNamed(three, b, "y")));
}

TEST(FeedsTest, DistributionsScaleAndOffset) {
  Graph g = MustImportText(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[64,64] x) => (float[64,64] y) { y = Relu(x) })");
  struct Case {
    Distribution distribution;
    double low, high;  // bounds of |x| before scale / offset
  };
  for (Case c :
       {Case{Distribution::kUniform, 0.0, 1.0}, Case{Distribution::kUniformPositive, 0.5, 1.5},
        Case{Distribution::kBimodal, 0.5, 1.5}}) {
    FeedOptions options;
    options.distribution = c.distribution;
    options.scale = 2.0;
    options.offset = 10.0;
    TensorMap feeds = MustFeed(g, options);
    const Tensor& x = FeedNamed(g, feeds, "x");
    bool negative = false;
    for (int64_t i = 0; i < x.elements(); ++i) {
      double unscaled = (x.GetDouble(i) - 10.0) / 2.0;
      EXPECT_GE(std::abs(unscaled), c.low - 1e-6) << DistributionName(c.distribution);
      EXPECT_LE(std::abs(unscaled), c.high + 1e-6) << DistributionName(c.distribution);
      negative = negative || unscaled < 0;
    }
    EXPECT_EQ(negative, c.distribution != Distribution::kUniformPositive)
        << DistributionName(c.distribution);
  }
  FeedOptions normal;
  TensorMap feeds = MustFeed(g, normal);
  const Tensor& x = FeedNamed(g, feeds, "x");
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < x.elements(); ++i) {
    sum += x.GetDouble(i);
    sum_sq += x.GetDouble(i) * x.GetDouble(i);
  }
  const auto n = static_cast<double>(x.elements());
  EXPECT_NEAR(sum / n, 0.0, 0.1);
  EXPECT_NEAR(sum_sq / n, 1.0, 0.1);
}

TEST(FeedsTest, HalfPrecisionDtypesAndNoZeros) {
  planner::ImportOptions f16;
  f16.compute_dtype = DType::kF16;
  planner::ImportOptions bf16;
  bf16.compute_dtype = DType::kBF16;
  constexpr std::string_view kText = R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[4096] x) => (float[4096] y) { y = Relu(x) })";
  for (const auto& [options, dtype] :
       {std::pair{f16, DType::kF16}, std::pair{bf16, DType::kBF16}}) {
    Graph g = MustImportText(kText, options);
    FeedOptions feed_options;
    // Most draws at this scale round to zero in f16; every stored element must still be nonzero.
    feed_options.scale = 1e-7;
    TensorMap feeds = MustFeed(g, feed_options);
    const Tensor& x = FeedNamed(g, feeds, "x");
    EXPECT_EQ(x.dtype(), dtype);
    EXPECT_EQ(x.bytes(), 4096u * 2);
    for (int64_t i = 0; i < x.elements(); ++i) ASSERT_NE(x.GetDouble(i), 0.0) << i;
  }
}

TEST(FeedsTest, AllZeroDrawsAreAnError) {
  Graph g = MustImportText(kTwoInputs);
  FeedOptions options;
  options.scale = 0;
  Result<TensorMap> feeds = MakeRandomFeeds(g, options);
  ASSERT_FALSE(feeds.ok());
  EXPECT_NE(feeds.status().message().find("zero"), std::string::npos) << feeds.status().ToString();
  options.scale = std::nan("");
  EXPECT_FALSE(MakeRandomFeeds(g, options).ok());
}

TEST(FeedsTest, IndicesStayWithinTheGatheredDimension) {
  Graph g = MustImportText(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[5,3] table, int64[64] ids, float[2,7] rows, int64[2,64] cols, int64[64] other,
   int32[16] narrow) => (float[8,8,3] a, float[2,64] b, int64[64] c, float[5,16] d) {
  shape = Constant<value = int64[2] {8, 8}>()
  square = Reshape(ids, shape)
  a = Gather(table, square)
  b = GatherElements<axis = -1>(rows, cols)
  c = Add(other, other)
  d = Gather<axis = 1>(table, narrow)
})");
  TensorMap feeds = MustFeed(g, FeedOptions{});
  struct Case {
    const char* name;
    int64_t limit;
  };
  for (Case c : {Case{"ids", 5}, Case{"cols", 7}, Case{"other", 4}, Case{"narrow", 3}}) {
    const Tensor& t = FeedNamed(g, feeds, c.name);
    std::set<int64_t> seen;
    for (int64_t i = 0; i < t.elements(); ++i) {
      ASSERT_GE(t.GetInt(i), 0) << c.name;
      ASSERT_LT(t.GetInt(i), c.limit) << c.name;
      seen.insert(t.GetInt(i));
    }
    EXPECT_GT(seen.size(), 1u) << c.name << ": indices should vary";
  }
  EXPECT_EQ(FeedNamed(g, feeds, "narrow").dtype(), DType::kI32);
}

TEST(FeedsTest, BoolValuesTakeBothValues) {
  Graph g = MustImportText(R"(<ir_version: 8, opset_import: ["" : 17]>
g (bool[256] c, float[256] x, float[256] y) => (float[256] z) { z = Where(c, x, y) })");
  TensorMap feeds = MustFeed(g, FeedOptions{});
  const Tensor& c = FeedNamed(g, feeds, "c");
  ASSERT_EQ(c.dtype(), DType::kBool);
  int64_t ones = 0;
  for (int64_t i = 0; i < c.elements(); ++i) {
    ASSERT_LE(c.as<uint8_t>()[i], 1);
    ones += c.as<uint8_t>()[i];
  }
  EXPECT_GT(ones, 64);
  EXPECT_LT(ones, 192);
}

TEST(FeedsTest, WeightsWithDataAreDrawnOnlyWhenAsked) {
  Graph g = MustImportText(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[2,16] x) => (float[2,16] y)
  <float[16] w = {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> {
  y = Add(x, w)
})");
  const int w = g.FindValue("w");
  ASSERT_GE(w, 0);
  ASSERT_EQ(g.values[w].kind, planner::ValueKind::kWeight);
  FeedOptions options;
  options.include_weights = false;
  TensorMap inputs_only = MustFeed(g, options);
  EXPECT_EQ(inputs_only.count(w), 0u);
  EXPECT_EQ(inputs_only.size(), 1u);
  options.include_weights = true;
  TensorMap with_weights = MustFeed(g, options);
  ASSERT_EQ(with_weights.count(w), 1u);
  EXPECT_EQ(with_weights.at(w).shape(), (planner::Shape{16}));
  EXPECT_NE(with_weights.at(w).GetDouble(0), 1.0);
}

TEST(FeedsTest, Gpt2TokenIdsIndexTheEmbedding) {
  Result<Graph> imported =
      planner::ImportOnnxFile(TestModelPath("gpt2-small_b1s128.onnx"), planner::ImportOptions{});
  ASSERT_TRUE(imported.ok()) << imported.status().ToString();
  const Graph& g = *imported;
  TensorMap feeds = MustFeed(g, FeedOptions{});
  // GPT-2's token ids go through a Reshape before the embedding Gather.
  int ids = -1;
  int64_t vocab = 0;
  for (const planner::Node& node : g.nodes) {
    if (node.op_type != "Gather") continue;
    const planner::Value& indices = g.values[node.inputs[1]];
    if (indices.producer < 0 || g.nodes[indices.producer].op_type != "Reshape") continue;
    const int source = g.nodes[indices.producer].inputs[0];
    if (g.values[source].kind != planner::ValueKind::kInput) continue;
    ids = source;
    vocab = g.values[node.inputs[0]].shape[0];
  }
  ASSERT_GE(ids, 0) << "no graph input feeds a Gather through a Reshape";
  EXPECT_GT(vocab, 50000);
  const Tensor& t = feeds.at(ids);
  int64_t max_id = 0;
  for (int64_t i = 0; i < t.elements(); ++i) {
    ASSERT_GE(t.GetInt(i), 0);
    ASSERT_LT(t.GetInt(i), vocab);
    max_id = std::max(max_id, t.GetInt(i));
  }
  // Drawn across the whole vocabulary, not just the small-integer range.
  EXPECT_GT(max_id, 1000);
  for (size_t id = 0; id < g.values.size(); ++id) {
    if (g.values[id].kind == planner::ValueKind::kWeight) {
      ASSERT_EQ(feeds.count(static_cast<int>(id)), 1u) << g.values[id].name;
      EXPECT_EQ(feeds.at(static_cast<int>(id)).shape(), g.values[id].shape);
    }
  }
}

}  // namespace
}  // namespace kfleet::runtime
