// Softmax, reductions and normalizations of the CUDA baseline against the float64 reference, at
// f32, f16 and bf16, over row lengths that take each kernel path: a group of 8 lanes per row
// (<= 8 loads), a warp per row (<= 1024 elements), a block per row, and rows split across blocks.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "cuda_testing.h"

namespace kfleet::cuda {
namespace {

constexpr std::array<std::string_view, 3> kFloatTypes = {"float", "float16", "bfloat16"};

// Row lengths: shorter than a warp, exactly one, GPT-2's hidden size, a tail that is not a
// multiple of 16 bytes at every dtype, just past the warp path, long rows, GPT-2's vocabulary.
constexpr std::array<int64_t, 9> kRowLengths = {1, 5, 32, 100, 768, 1000, 1025, 4096, 50257};

// Enough rows that the last block of the warp path is partial; fewer for the long ones.
int64_t RowsFor(int64_t n) { return n <= 1024 ? 37 : 3; }

// RunAndCompare scales errors by each output's rms, while a stored f16 / bf16 value is off by up
// to 2^-11 / 2^-8 of its own magnitude (f32 arithmetic adds a few ulp): outputs whose largest
// value is `peak` times their rms need `peak` times that. Softmax over long rows of N(0,1) inputs
// peaks near 40 rms; scale * normalized + bias near 10; means and sums near 4.
testing::Tolerance ForPeak(double peak) {
  testing::Tolerance t;
  t.f32 = std::max(t.f32, 4e-7 * peak);
  t.f16 = std::max(t.f16, 5e-4 * peak);
  t.bf16 = std::max(t.bf16, 4e-3 * peak);
  return t;
}
const testing::Tolerance kSoftmaxTolerance = ForPeak(50);
const testing::Tolerance kAffineTolerance = ForPeak(10);
const testing::Tolerance kMeanTolerance = ForPeak(5);

// Runs the ONNX-text graph `body` on the GPU and on the float64 reference; RunAndCompare adds a
// failure for every output too far from the reference.
void ExpectMatchesReference(const std::string& body, int opset,
                            const testing::Tolerance& tolerance) {
  SCOPED_TRACE(body);
  Result<testing::Checked> checked = testing::RunAndCompare(testing::Model(body, opset), tolerance);
  ASSERT_TRUE(checked.ok()) << checked.status().message();
}

TEST(CudaReduceTest, SoftmaxAndLogSoftmaxOverTheLastAxis) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    for (int64_t n : kRowLengths) {
      const std::string t = fmt::format("{}[{},{}]", type, RowsFor(n), n);
      ExpectMatchesReference(fmt::format("g ({0} x) => ({0} y) {{ y = Softmax<axis = -1>(x) }}", t),
                             17, kSoftmaxTolerance);
      // Log-probabilities are all of similar magnitude: default tolerances.
      ExpectMatchesReference(fmt::format("g ({0} x) => ({0} y) {{ y = LogSoftmax(x) }}", t), 17,
                             {});
    }
  }
}

TEST(CudaReduceTest, SoftmaxOverAnInnerAxis) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    ExpectMatchesReference(fmt::format(R"(g ({0}[2,5,3] x) => ({0}[2,5,3] y, {0}[2,5,3] l) {{
      y = Softmax<axis = 1>(x)
      l = LogSoftmax<axis = 1>(x)
    }})",
                                       type),
                           17, kSoftmaxTolerance);
    // inner 105: four column blocks, the last one partial; softmax over 40 rows of each column.
    ExpectMatchesReference(fmt::format(R"(g ({0}[40,3,35] x) => ({0}[40,3,35] y, {0}[40,3,35] l) {{
      y = Softmax<axis = 0>(x)
      l = LogSoftmax<axis = -3>(x)
    }})",
                                       type),
                           17, kSoftmaxTolerance);
  }
}

TEST(CudaReduceTest, LayerNormalizationWithBias) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    for (int64_t n : kRowLengths) {
      const std::string t = fmt::format("{}[{},{}]", type, RowsFor(n), n);
      ExpectMatchesReference(fmt::format(R"(g ({0} x, {1}[{2}] s, {1}[{2}] b) => ({0} y) {{
        y = LayerNormalization<axis = -1, epsilon = 0.00001>(x, s, b)
      }})",
                                         t, type, n),
                             17, kAffineTolerance);
    }
  }
}

TEST(CudaReduceTest, LayerNormalizationWithoutBiasReturnsMeanAndInvStdDev) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    for (int64_t n : {int64_t{5}, int64_t{32}, int64_t{768}, int64_t{1025}, int64_t{4096}}) {
      ExpectMatchesReference(
          fmt::format(
              R"(g ({0}[3,7,{1}] x, {0}[{1}] s) => ({0}[3,7,{1}] y, float[3,7,1] mean,
                                                  float[3,7,1] inv) {{
        y, mean, inv = LayerNormalization<axis = -1>(x, s)
      }})",
              type, n),
          17, kAffineTolerance);
    }
  }
}

TEST(CudaReduceTest, LayerNormalizationOverTwoAxesBroadcastsScale) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    // Rows of 6 * 8 = 48; the scale [8] is broadcast to [6,8] before the kernel runs.
    ExpectMatchesReference(fmt::format(R"(g ({0}[4,6,8] x, {0}[8] s, {0}[6,8] b) => ({0}[4,6,8] y,
                                                               float[4,1,1] mean) {{
      y, mean = LayerNormalization<axis = 1, epsilon = 0.001>(x, s, b)
    }})",
                                       type),
                           17, kAffineTolerance);
  }
}

TEST(CudaReduceTest, ReduceOverTheLastAxisWithAxesAsAttribute) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    for (int64_t n : kRowLengths) {
      const int64_t rows = RowsFor(n);
      // Opset 13: ReduceMean and ReduceMax take axes as an attribute, ReduceSum as an input.
      ExpectMatchesReference(fmt::format(R"(g ({0}[{1},{2}] x) => ({0}[{1},1] mean, {0}[{1}] mx,
                                                     {0}[{1},1] sum) {{
        axes = Constant<value = int64[1] {{-1}}>()
        mean = ReduceMean<axes = [-1]>(x)
        mx = ReduceMax<axes = [1], keepdims = 0>(x)
        sum = ReduceSum<keepdims = 1>(x, axes)
      }})",
                                         type, rows, n),
                             13, kMeanTolerance);
    }
  }
}

TEST(CudaReduceTest, ReduceWithAxesAsInputAtOpset18) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    ExpectMatchesReference(
        fmt::format(R"(g ({0}[2,3,4,5] x) => ({0}[2,1,4,5] middle, {0}[2,5] adjacent,
                                          {0}[3,5] apart, {0}[2,1,4,1] apart_kept,
                                          {0}[1,1,1,1] all, {0}[2,3,4,5] same) {{
      a1 = Constant<value = int64[1] {{1}}>()
      a12 = Constant<value = int64[2] {{1, 2}}>()
      a02 = Constant<value = int64[2] {{0, 2}}>()
      a13 = Constant<value = int64[2] {{-3, -1}}>()
      middle = ReduceMean(x, a1)
      adjacent = ReduceSum<keepdims = 0>(x, a12)
      apart = ReduceMax<keepdims = 0>(x, a02)
      apart_kept = ReduceSum(x, a13)
      all = ReduceMean(x)
      same = ReduceMax<noop_with_empty_axes = 1>(x)
    }})",
                    type),
        18, kMeanTolerance);
  }
}

TEST(CudaReduceTest, ReduceFewLongRowsSplitsThemAcrossBlocks) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    ExpectMatchesReference(fmt::format(R"(g ({0}[2,200003] x, {0}[300000] v)
        => ({0}[2] sum, {0}[2,1] mean, {0}[2] mx, {0}[1] total) {{
      last = Constant<value = int64[1] {{-1}}>()
      sum = ReduceSum<keepdims = 0>(x, last)
      mean = ReduceMean(x, last)
      mx = ReduceMax<keepdims = 0>(x, last)
      total = ReduceSum(v)
    }})",
                                       type),
                           18, kMeanTolerance);
  }
}

TEST(CudaReduceTest, ReduceIntegersExactly) {
  KF_REQUIRE_GPU();
  ExpectMatchesReference(R"(g (int64[3,1000] x, int64[5,7,40] z)
      => (int64[3] sum, int64[3,1] mean, int64[3] mx, int64[5,40] columns) {
    last = Constant<value = int64[1] {-1}>()
    middle = Constant<value = int64[1] {1}>()
    sum = ReduceSum<keepdims = 0>(x, last)
    mean = ReduceMean(x, last)
    mx = ReduceMax<keepdims = 0>(x, last)
    columns = ReduceSum<keepdims = 0>(z, middle)
  })",
                         18, {});
}

TEST(CudaReduceTest, BatchNormalizationOnNchw) {
  KF_REQUIRE_GPU();
  // Planes of 49 (vectors cross channels), 16 (they do not), 5 and 1 (rank 3 and 2). The
  // statistics are f32 constants, so f16 / bf16 graphs also mix parameter types.
  for (std::string_view type : kFloatTypes) {
    for (std::string_view shape : {"[2,8,7,7]", "[2,8,4,4]", "[3,8,5]", "[6,8]"}) {
      ExpectMatchesReference(fmt::format(R"(g ({0}{1} x, {0}[8] s, {0}[8] b) => ({0}{1} y) {{
        m = Constant<value = float[8] {{0.5, -1.0, 0.25, 2.0, -0.5, 0.0, 1.5, -2.0}}>()
        v = Constant<value = float[8] {{0.5, 1.0, 1.5, 2.0, 0.25, 0.75, 3.0, 1.25}}>()
        y = BatchNormalization<epsilon = 0.001>(x, s, b, m, v)
      }})",
                                         type, shape),
                             17, kAffineTolerance);
    }
  }
}

TEST(CudaReduceTest, BatchNormalizationWithManyChannels) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    // Random weights, with a variance that is not negative: the square of a random vector. The
    // large epsilon keeps 1 / sqrt(var + epsilon) below 1.5, so outputs peak as in the test above.
    ExpectMatchesReference(fmt::format(R"(g ({0}[4,64,14,14] x, {0}[64] s, {0}[64] b, float[64] m,
                                           float[64] r) => ({0}[4,64,14,14] y) {{
      v = Mul(r, r)
      y = BatchNormalization<epsilon = 0.5>(x, s, b, m, v)
    }})",
                                       type),
                           17, kAffineTolerance);
  }
}

TEST(CudaReduceTest, InstanceNormalization) {
  KF_REQUIRE_GPU();
  struct Case {
    std::string_view shape;
    int64_t channels;
  };
  // Planes of 25 (a warp each), 4096 (a block, aligned), 1089 (a block, rows not aligned), 10.
  constexpr std::array<Case, 4> kCases = {
      {{"[2,3,5,5]", 3}, {"[2,4,64,64]", 4}, {"[1,2,33,33]", 2}, {"[2,3,10]", 3}}};
  for (std::string_view type : kFloatTypes) {
    for (const Case& c : kCases) {
      ExpectMatchesReference(fmt::format(R"(g ({0}{1} x, {0}[{2}] s, {0}[{2}] b) => ({0}{1} y) {{
        y = InstanceNormalization<epsilon = 0.00001>(x, s, b)
      }})",
                                         type, c.shape, c.channels),
                             17, kAffineTolerance);
    }
  }
}

TEST(CudaReduceTest, GlobalAveragePool) {
  KF_REQUIRE_GPU();
  for (std::string_view type : kFloatTypes) {
    // ResNet-50's last feature map, planes longer than a warp path row, and rank 5.
    ExpectMatchesReference(fmt::format(R"(g ({0}[8,2048,7,7] x, {0}[2,3,40,40] w, {0}[2,5,3,3,3] z)
        => ({0}[8,2048,1,1] y, {0}[2,3,1,1] p, {0}[2,5,1,1,1] q) {{
      y = GlobalAveragePool(x)
      p = GlobalAveragePool(w)
      q = GlobalAveragePool(z)
    }})",
                                       type),
                           17, kMeanTolerance);
  }
}

}  // namespace
}  // namespace kfleet::cuda
