// The float64 reference interpreter: every op on small graphs with hand-computed results, the
// errors people see, and every kernel spec of GPT-2 small run end to end.
#include "runtime/reference.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"
#include "tests/unit/planner/graph_builder.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::runtime {
namespace {

using planner::Graph;
using planner::import_testing::MustImport;
using planner::partition_testing::GraphBuilder;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor Make(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(dtype, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.elements()), values.size());
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.elements(); ++i) {
    t.SetDouble(static_cast<int64_t>(i), values[i]);
  }
  return t;
}

Tensor F32(Shape shape, const std::vector<double>& values) {
  return Make(DType::kF32, std::move(shape), values);
}
Tensor I64(Shape shape, const std::vector<double>& values) {
  return Make(DType::kI64, std::move(shape), values);
}
Tensor Bool(Shape shape, const std::vector<double>& values) {
  return Make(DType::kBool, std::move(shape), values);
}

using Named = std::map<std::string, Tensor>;

// Runs `graph` on feeds given by value name; results by value name.
Result<Named> RunGraph(const Graph& graph, const Named& feeds,
                       const ReferenceOptions& options = {}) {
  TensorMap by_id;
  for (const auto& [name, tensor] : feeds) {
    const int id = graph.FindValue(name);
    if (id < 0) return NotFound("test feeds unknown value " + name);
    by_id.emplace(id, tensor);
  }
  KF_ASSIGN_OR_RETURN(TensorMap out, RunReference(graph, by_id, options));
  Named named;
  for (auto& [id, tensor] : out) named.emplace(graph.values[id].name, std::move(tensor));
  return named;
}

// Imports `body` at `opset` with every shape inferred by kfleet and runs it; a failure is
// reported and yields no outputs.
Named RunText(int opset, std::string_view body, const Named& feeds) {
  Graph graph = MustImport(opset, body);
  Result<Named> out = RunGraph(graph, feeds);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? std::move(out).value() : Named{};
}

// The error of a run that must fail ("" when it succeeded).
std::string RunError(const Graph& graph, const Named& feeds) {
  Result<Named> out = RunGraph(graph, feeds);
  return out.ok() ? std::string() : out.status().message();
}

void ExpectTensor(const Named& outputs, const std::string& name, DType dtype, const Shape& shape,
                  const std::vector<double>& expected) {
  auto it = outputs.find(name);
  ASSERT_NE(it, outputs.end()) << "no output " << name;
  const Tensor& t = it->second;
  EXPECT_EQ(t.dtype(), dtype) << name;
  EXPECT_EQ(t.shape(), shape) << name;
  ASSERT_EQ(static_cast<size_t>(t.elements()), expected.size()) << name;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double got = t.GetDouble(static_cast<int64_t>(i));
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(got)) << name << "[" << i << "] = " << got;
    } else {
      EXPECT_NEAR(got, expected[i], 1e-12 * std::max(1.0, std::fabs(expected[i])))
          << name << "[" << i << "]";
    }
  }
}

void ExpectF64(const Named& outputs, const std::string& name, const Shape& shape,
               const std::vector<double>& expected) {
  ExpectTensor(outputs, name, DType::kF64, shape, expected);
}

// ---- Elementwise ---------------------------------------------------------------------------

TEST(ReferenceTest, AddBroadcastsAndReturnsFloat64) {
  Named out = RunText(17, "g (float[2,3] x, float[3] y) => (float[2,3] z) { z = Add(x, y) }",
                      {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}, {"y", F32({3}, {10, 20, 30})}});
  ExpectF64(out, "z", {2, 3}, {11, 22, 33, 14, 25, 36});
}

TEST(ReferenceTest, SubMulDivPow) {
  Named out = RunText(17, R"(
    g (float[2,2] x, float[1,2] y) => (float[2,2] s, float[2,2] m, float[2,2] d, float[2,2] p) {
      s = Sub(x, y)
      m = Mul(x, y)
      d = Div(x, y)
      p = Pow(x, y)
    })",
                      {{"x", F32({2, 2}, {1, 2, 3, 4})}, {"y", F32({1, 2}, {2, 0.5})}});
  ExpectF64(out, "s", {2, 2}, {-1, 1.5, 1, 3.5});
  ExpectF64(out, "m", {2, 2}, {2, 1, 6, 2});
  ExpectF64(out, "d", {2, 2}, {0.5, 4, 1.5, 8});
  ExpectF64(out, "p", {2, 2}, {1, 1.4142135623730951, 9, 2});
}

TEST(ReferenceTest, MaxAndMinTakeManyInputs) {
  Named out =
      RunText(17, R"(
    g (float[3] a, float[1] b, float[3] c) => (float[3] hi, float[3] lo) {
      hi = Max(a, b, c)
      lo = Min(a, b, c)
    })",
              {{"a", F32({3}, {1, 5, 3})}, {"b", F32({1}, {2})}, {"c", F32({3}, {0, 6, 1})}});
  ExpectF64(out, "hi", {3}, {2, 6, 3});
  ExpectF64(out, "lo", {3}, {0, 2, 1});
}

TEST(ReferenceTest, IntegerArithmeticIsExactAndTruncates) {
  Named out = RunText(17, R"(
    g (int64[2] a, int64[2] b) => (int64[2] q, int64[2] s) {
      q = Div(a, b)
      s = Add(a, b)
    })",
                      {{"a", I64({2}, {7, -7})}, {"b", I64({2}, {2, 2})}});
  ExpectTensor(out, "q", DType::kI64, {2}, {3, -3});
  ExpectTensor(out, "s", DType::kI64, {2}, {9, -5});

  Graph g = MustImport(17, "g (int64[2] a, int64[2] b) => (int64[2] q) { q = Div(a, b) }");
  const std::string error = RunError(g, {{"a", I64({2}, {1, 2})}, {"b", I64({2}, {1, 0})}});
  EXPECT_NE(error.find(planner::DescribeNode(g.nodes[0])), std::string::npos) << error;
  EXPECT_NE(error.find("division"), std::string::npos) << error;
}

TEST(ReferenceTest, ComparisonsProduceBool) {
  Named out = RunText(17, R"(
    g (float[3] x, float[3] y) => (bool[3] eq, bool[3] lt, bool[3] gt, bool[3] le, bool[3] ge) {
      eq = Equal(x, y)
      lt = Less(x, y)
      gt = Greater(x, y)
      le = LessOrEqual(x, y)
      ge = GreaterOrEqual(x, y)
    })",
                      {{"x", F32({3}, {1, 2, 3})}, {"y", F32({3}, {2, 2, 2})}});
  ExpectTensor(out, "eq", DType::kBool, {3}, {0, 1, 0});
  ExpectTensor(out, "lt", DType::kBool, {3}, {1, 0, 0});
  ExpectTensor(out, "gt", DType::kBool, {3}, {0, 0, 1});
  ExpectTensor(out, "le", DType::kBool, {3}, {1, 1, 0});
  ExpectTensor(out, "ge", DType::kBool, {3}, {0, 1, 1});
}

TEST(ReferenceTest, LogicAndWhere) {
  Named out = RunText(17, R"(
    g (bool[4] a, bool[4] b, bool[2,1] c, float[2,2] x, float[1] y)
        => (bool[4] both, bool[4] either, bool[4] not_a, float[2,2] w) {
      both = And(a, b)
      either = Or(a, b)
      not_a = Not(a)
      w = Where(c, x, y)
    })",
                      {{"a", Bool({4}, {1, 1, 0, 0})},
                       {"b", Bool({4}, {1, 0, 1, 0})},
                       {"c", Bool({2, 1}, {1, 0})},
                       {"x", F32({2, 2}, {1, 2, 3, 4})},
                       {"y", F32({1}, {9})}});
  ExpectTensor(out, "both", DType::kBool, {4}, {1, 0, 0, 0});
  ExpectTensor(out, "either", DType::kBool, {4}, {1, 1, 1, 0});
  ExpectTensor(out, "not_a", DType::kBool, {4}, {0, 0, 1, 1});
  ExpectF64(out, "w", {2, 2}, {1, 2, 9, 9});
}

TEST(ReferenceTest, UnaryMath) {
  Named out =
      RunText(17, R"(
    g (float[3] x, float[2] u, float[3] r) => (float[3] sq, float[3] rec, float[3] neg,
        float[2] ex, float[2] lg, float[2] er, float[2] th, float[2] sg, float[2] co,
        float[2] si, float[3] ab) {
      sq = Sqrt(x)
      rec = Reciprocal(r)
      neg = Neg(x)
      ex = Exp(u)
      lg = Log(u)
      er = Erf(u)
      th = Tanh(u)
      sg = Sigmoid(u)
      co = Cos(u)
      si = Sin(u)
      ab = Abs(r)
    })",
              {{"x", F32({3}, {0, 1, 4})}, {"u", F32({2}, {1, 2})}, {"r", F32({3}, {-1, 2, 4})}});
  ExpectF64(out, "sq", {3}, {0, 1, 2});
  ExpectF64(out, "rec", {3}, {-1, 0.5, 0.25});
  ExpectF64(out, "neg", {3}, {0, -1, -4});
  ExpectF64(out, "ex", {2}, {2.718281828459045, 7.38905609893065});
  ExpectF64(out, "lg", {2}, {0, 0.6931471805599453});
  ExpectF64(out, "er", {2}, {0.8427007929497149, 0.9953222650189527});
  ExpectF64(out, "th", {2}, {0.7615941559557649, 0.9640275800758169});
  ExpectF64(out, "sg", {2}, {0.7310585786300049, 0.8807970779778823});
  ExpectF64(out, "co", {2}, {0.5403023058681398, -0.4161468365471424});
  ExpectF64(out, "si", {2}, {0.8414709848078965, 0.9092974268256817});
  ExpectF64(out, "ab", {3}, {1, 2, 4});
}

TEST(ReferenceTest, Activations) {
  Named out = RunText(
      20, R"(
    g (float[3] x, float[4] h, float[3] s) => (float[3] relu, float[3] leaky, float[3] gelu,
        float[3] gelu_tanh, float[4] hsig, float[4] hswish, float[3] softplus) {
      relu = Relu(x)
      leaky = LeakyRelu<alpha = 0.25>(x)
      gelu = Gelu(x)
      gelu_tanh = Gelu<approximate = "tanh">(x)
      hsig = HardSigmoid(h)
      hswish = HardSwish(h)
      softplus = Softplus(s)
    })",
      {{"x", F32({3}, {-1, 0, 1})}, {"h", F32({4}, {-4, 0, 1, 4})}, {"s", F32({3}, {0, 1, 100})}});
  ExpectF64(out, "relu", {3}, {0, 0, 1});
  ExpectF64(out, "leaky", {3}, {-0.25, 0, 1});
  ExpectF64(out, "gelu", {3}, {-0.15865525393145707, 0, 0.8413447460685429});
  ExpectF64(out, "gelu_tanh", {3}, {-0.15880800939172324, 0, 0.8411919906082768});
  // HardSigmoid: max(0, min(1, 0.2x + 0.5)); HardSwish: x * max(0, min(1, x/6 + 0.5)).
  ExpectF64(out, "hsig", {4}, {0, 0.5, 0.7, 1});
  ExpectF64(out, "hswish", {4}, {0, 0, 2.0 / 3.0, 4});
  // Softplus(100) would overflow as log(1 + e^100) computed naively.
  ExpectF64(out, "softplus", {3}, {0.6931471805599453, 1.3132616875182228, 100});
}

TEST(ReferenceTest, ClipWithOptionalBounds) {
  Named out = RunText(17, R"(
    g (float[3] x, float lo, float hi) => (float[3] both, float[3] upper) {
      both = Clip(x, lo, hi)
      upper = Clip(x, , hi)
    })",
                      {{"x", F32({3}, {-2, 0.5, 3})}, {"lo", F32({}, {0})}, {"hi", F32({}, {1})}});
  ExpectF64(out, "both", {3}, {0, 0.5, 1});
  ExpectF64(out, "upper", {3}, {-2, 0.5, 1});
}

TEST(ReferenceTest, IdentityIsNaNAndDropout) {
  Named out = RunText(17, R"(
    g (int64[2] i, float[2] x) => (int64[2] same, bool[2] nan, float[2] kept, bool[2] mask) {
      same = Identity(i)
      nan = IsNaN(x)
      kept, mask = Dropout(x)
    })",
                      {{"i", I64({2}, {5, -6})}, {"x", F32({2}, {1, kNaN})}});
  ExpectTensor(out, "same", DType::kI64, {2}, {5, -6});
  ExpectTensor(out, "nan", DType::kBool, {2}, {0, 1});
  ExpectF64(out, "kept", {2}, {1, kNaN});
  ExpectTensor(out, "mask", DType::kBool, {2}, {1, 1});
}

// ---- Softmax, Cast, Trilu ------------------------------------------------------------------

TEST(ReferenceTest, SoftmaxSubtractsTheMaxAndTakesAnAxis) {
  Named out =
      RunText(13, R"(
    g (float[2,3] x, float[2,2] y) => (float[2,3] last, float[2,2] first, float[2,3] logs) {
      last = Softmax(x)
      first = Softmax<axis = 0>(y)
      logs = LogSoftmax<axis = -1>(x)
    })",
              {{"x", F32({2, 3}, {1, 2, 3, 1000, 1000, 1000})}, {"y", F32({2, 2}, {1, 0, 3, 0})}});
  ExpectF64(
      out, "last", {2, 3},
      {0.09003057317038046, 0.24472847105479764, 0.6652409557748218, 1.0 / 3, 1.0 / 3, 1.0 / 3});
  // Column 0: e / (e + e^3) = 1 / (1 + e^2).
  ExpectF64(out, "first", {2, 2}, {0.11920292202211757, 0.5, 0.8807970779778823, 0.5});
  const double log_sum = 0.4076059644443804;  // log(1 + e^-1 + e^-2)
  const double log3 = 1.0986122886681098;
  ExpectF64(out, "logs", {2, 3}, {-2 - log_sum, -1 - log_sum, -log_sum, -log3, -log3, -log3});
}

TEST(ReferenceTest, CastTruncatesToIntegersAndKeepsDoubles) {
  Named out = RunText(17, R"(
    g (float[3] x, int64[2] i) => (int64[3] to_int, bool[3] to_bool, uint8[2] to_u8,
        float16[3] to_half, float[2] to_float) {
      to_int = Cast<to = 7>(x)
      to_bool = Cast<to = 9>(x)
      to_u8 = Cast<to = 2>(i)
      to_half = Cast<to = 10>(x)
      to_float = Cast<to = 1>(i)
    })",
                      {{"x", F32({3}, {1.75, -1.75, 0})}, {"i", I64({2}, {300, 3})}});
  ExpectTensor(out, "to_int", DType::kI64, {3}, {1, -1, 0});
  ExpectTensor(out, "to_bool", DType::kBool, {3}, {1, 1, 0});
  ExpectTensor(out, "to_u8", DType::kI64, {2}, {44, 3});  // 300 wraps to 300 - 256
  ExpectF64(out, "to_half", {3}, {1.75, -1.75, 0});
  ExpectF64(out, "to_float", {2}, {300, 3});
}

TEST(ReferenceTest, CastOfAFloatThatFitsNoIntegerIsAnError) {
  Graph g = MustImport(17, "g (float[1] x) => (int64[1] y) { y = Cast<to = 7>(x) }");
  const std::string error = RunError(g, {{"x", F32({1}, {kNaN})}});
  EXPECT_NE(error.find(planner::DescribeNode(g.nodes[0])), std::string::npos) << error;
}

TEST(ReferenceTest, TriluKeepsADiagonalBand) {
  Named out = RunText(17, R"(
    g (float[3,3] x, int64 k) => (float[3,3] up, float[3,3] low, float[3,3] above) {
      up = Trilu(x)
      low = Trilu<upper = 0>(x)
      above = Trilu(x, k)
    })",
                      {{"x", F32({3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9})}, {"k", I64({}, {1})}});
  ExpectF64(out, "up", {3, 3}, {1, 2, 3, 0, 5, 6, 0, 0, 9});
  ExpectF64(out, "low", {3, 3}, {1, 0, 0, 4, 5, 0, 7, 8, 9});
  ExpectF64(out, "above", {3, 3}, {0, 2, 3, 0, 0, 6, 0, 0, 0});
}

// ---- MatMul, Gemm ---------------------------------------------------------------------------

TEST(ReferenceTest, MatMulWithVectorOperands) {
  Named out = RunText(17, R"(
    g (float[2,3] a, float[3,2] b, float[3] v) => (float[2,2] ab, float[2] vb, float[2] av) {
      ab = MatMul(a, b)
      vb = MatMul(v, b)
      av = MatMul(a, v)
    })",
                      {{"a", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                       {"b", F32({3, 2}, {7, 8, 9, 10, 11, 12})},
                       {"v", F32({3}, {1, 1, 1})}});
  ExpectF64(out, "ab", {2, 2}, {58, 64, 139, 154});
  ExpectF64(out, "vb", {2}, {27, 30});
  ExpectF64(out, "av", {2}, {6, 15});
}

TEST(ReferenceTest, BatchedMatMulBroadcastsBatchDims) {
  // a holds I and 2I; b holds three 2x2 matrices: the products are b and 2b for each.
  Named out =
      RunText(17, "g (float[2,1,2,2] a, float[3,2,2] b) => (float[2,3,2,2] c) { c = MatMul(a, b) }",
              {{"a", F32({2, 1, 2, 2}, {1, 0, 0, 1, 2, 0, 0, 2})},
               {"b", F32({3, 2, 2}, {1, 2, 3, 4, 0, 1, 1, 0, 1, 1, 1, 1})}});
  ExpectF64(out, "c", {2, 3, 2, 2},
            {1, 2, 3, 4, 0, 1, 1, 0, 1, 1, 1, 1, 2, 4, 6, 8, 0, 2, 2, 0, 2, 2, 2, 2});
}

TEST(ReferenceTest, IntegerMatMul) {
  Named out = RunText(17, "g (int64[1,2] a, int64[2,1] b) => (int64[1,1] c) { c = MatMul(a, b) }",
                      {{"a", I64({1, 2}, {2, 3})}, {"b", I64({2, 1}, {4, 5})}});
  ExpectTensor(out, "c", DType::kI64, {1, 1}, {23});
}

TEST(ReferenceTest, GemmTransposesScalesAndBroadcastsC) {
  Named out = RunText(17, R"(
    g (float[2,3] a, float[2,3] b, float[2] c, float[3,2] at, float[3,2] b2)
        => (float[2,2] y, float[2,2] z) {
      y = Gemm<transB = 1, alpha = 2.0, beta = 0.5>(a, b, c)
      z = Gemm<transA = 1>(at, b2)
    })",
                      {{"a", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                       {"b", F32({2, 3}, {1, 0, 1, 0, 1, 0})},
                       {"c", F32({2}, {100, 200})},
                       {"at", F32({3, 2}, {1, 4, 2, 5, 3, 6})},
                       {"b2", F32({3, 2}, {7, 8, 9, 10, 11, 12})}});
  // a b^T = [[4, 2], [10, 5]]; 2 a b^T + 0.5 c.
  ExpectF64(out, "y", {2, 2}, {58, 104, 70, 110});
  ExpectF64(out, "z", {2, 2}, {58, 64, 139, 154});
}

TEST(ReferenceTest, LargeMatMulIsExactAndDeterministic) {
  constexpr int64_t kM = 128;
  constexpr int64_t kK = 768;
  constexpr int64_t kN = 3072;
  Graph g = MustImport(
      17, "g (float[128,768] a, float[768,3072] b) => (float[128,3072] c) { c = MatMul(a, b) }");
  // Small integers over 8: exact in f32, and every partial sum is exact in double.
  std::vector<double> a(kM * kK);
  std::vector<double> b(kK * kN);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = static_cast<double>(static_cast<int64_t>(i * 7 % 13) - 6) / 8;
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = static_cast<double>(static_cast<int64_t>(i * 5 % 11) - 5) / 8;
  const Named feeds = {{"a", F32({kM, kK}, a)}, {"b", F32({kK, kN}, b)}};
  const auto start = std::chrono::steady_clock::now();
  Result<Named> first = RunGraph(g, feeds);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  RecordProperty("matmul_128x768x3072_s", std::to_string(seconds));
  std::printf("reference MatMul 128x768x3072: %.3f s\n", seconds);
  const Tensor& c = first->at("c");
  for (int64_t i : {int64_t{0}, int64_t{77}, kM - 1}) {
    for (int64_t j : {int64_t{0}, int64_t{1000}, kN - 1}) {
      double expected = 0;
      for (int64_t k = 0; k < kK; ++k) expected += a[i * kK + k] * b[k * kN + j];
      EXPECT_EQ(c.as<double>()[i * kN + j], expected) << i << "," << j;
    }
  }
  Result<Named> second = RunGraph(g, feeds);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(BitwiseEqual(c, second->at("c")));
}

// ---- Conv, ConvTranspose, pools -------------------------------------------------------------

TEST(ReferenceTest, GroupedStridedPaddedConvWithBias) {
  // Depthwise: channel 0 (1..9) with a diagonal 2x2 kernel, channel 1 (ones) with a ones kernel
  // that counts the in-bounds taps of each window.
  Named out =
      RunText(17, R"(
    g (float[1,2,3,3] x, float[2,1,2,2] w, float[2] b) => (float[1,2,2,2] y) {
      y = Conv<group = 2, strides = [2, 2], pads = [1, 1, 1, 1]>(x, w, b)
    })",
              {{"x", F32({1, 2, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1})},
               {"w", F32({2, 1, 2, 2}, {1, 0, 0, 1, 1, 1, 1, 1})},
               {"b", F32({2}, {10, 20})}});
  ExpectF64(out, "y", {1, 2, 2, 2}, {11, 13, 17, 24, 21, 22, 22, 24});
}

TEST(ReferenceTest, DilatedConvWithSameUpperAndA1dConv) {
  Named out =
      RunText(17, R"(
    g (float[1,1,4,4] x, float[1,1,2,2] w, float[1,1,5] s, float[1,1,3] k)
        => (float[1,1,4,4] y, float[1,1,3] z) {
      y = Conv<dilations = [2, 2], auto_pad = "SAME_UPPER">(x, w)
      z = Conv(s, k)
    })",
              {{"x", F32({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})},
               {"w", F32({1, 1, 2, 2}, {1, 1, 1, 1})},
               {"s", F32({1, 1, 5}, {1, 2, 4, 8, 16})},
               {"k", F32({1, 1, 3}, {1, 0, -1})}});
  // Extent 3, one pad on each side: output (i, j) sums x at rows {i-1, i+1} x cols {j-1, j+1}.
  ExpectF64(out, "y", {1, 1, 4, 4}, {6, 12, 14, 7, 12, 24, 28, 14, 20, 40, 44, 22, 10, 20, 22, 11});
  ExpectF64(out, "z", {1, 1, 3}, {-3, -6, -12});
}

TEST(ReferenceTest, Conv3d) {
  Named out = RunText(17, R"(
    g (float[1,1,2,2,2] x, float[1,1,2,2,2] w) => (float[1,1,1,1,1] y) { y = Conv(x, w) })",
                      {{"x", F32({1, 1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8})},
                       {"w", F32({1, 1, 2, 2, 2}, {1, 1, 1, 1, 1, 1, 1, 1})}});
  ExpectF64(out, "y", {1, 1, 1, 1, 1}, {36});
}

TEST(ReferenceTest, ConvTransposeWithStridesAndPads) {
  // The ONNX operator docs' example "convtranspose_pads".
  Named out = RunText(17, R"(
    g (float[1,1,3,3] x, float[1,2,3,3] w) => (float[1,2,7,3] y) {
      y = ConvTranspose<strides = [3, 2], pads = [1, 2, 1, 2]>(x, w)
    })",
                      {{"x", F32({1, 1, 3, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8})},
                       {"w", F32({1, 2, 3, 3}, std::vector<double>(18, 1.0))}});
  const std::vector<double> plane = {1, 1, 3, 1, 1,  3, 7,  4,  9, 7, 4,
                                     9, 7, 4, 9, 13, 7, 15, 13, 7, 15};
  std::vector<double> both = plane;
  both.insert(both.end(), plane.begin(), plane.end());
  ExpectF64(out, "y", {1, 2, 7, 3}, both);
}

TEST(ReferenceTest, GroupedConvTransposeWithOutputPaddingAndBias) {
  Named out = RunText(17, R"(
    g (float[1,2,2] x, float[2,1,2] w, float[2] b) => (float[1,2,5] y) {
      y = ConvTranspose<group = 2, strides = [2], output_padding = [1]>(x, w, b)
    })",
                      {{"x", F32({1, 2, 2}, {1, 2, 3, 4})},
                       {"w", F32({2, 1, 2}, {1, 1, 1, -1})},
                       {"b", F32({2}, {0.5, -0.5})}});
  // out[2i + k] += x[i] w[k]; the output padding position gets only the bias.
  ExpectF64(out, "y", {1, 2, 5}, {1.5, 1.5, 2.5, 2.5, 0.5, 2.5, -3.5, 3.5, -4.5, -0.5});
}

TEST(ReferenceTest, MaxPoolWithPaddingAndIndices) {
  Named out = RunText(17, R"(
    g (float[1,1,3,3] x, float[1,1,1,5] r) => (float[1,1,4,4] y, int64[1,1,4,4] at,
        float[1,1,1,3] ceil, float[1,1,1,2] floor, float[1,1,1,3] dilated) {
      y, at = MaxPool<kernel_shape = [2, 2], pads = [1, 1, 1, 1]>(x)
      ceil = MaxPool<kernel_shape = [1, 2], strides = [1, 2], ceil_mode = 1>(r)
      floor = MaxPool<kernel_shape = [1, 2], strides = [1, 2]>(r)
      dilated = MaxPool<kernel_shape = [1, 2], dilations = [1, 2]>(r)
    })",
                      {{"x", F32({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9})},
                       {"r", F32({1, 1, 1, 5}, {1, 5, 2, 4, 3})}});
  const std::vector<double> y = {1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 7, 8, 9, 9};
  ExpectF64(out, "y", {1, 1, 4, 4}, y);
  std::vector<double> at;
  for (double v : y) at.push_back(v - 1);  // x holds its flat index + 1
  ExpectTensor(out, "at", DType::kI64, {1, 1, 4, 4}, at);
  ExpectF64(out, "ceil", {1, 1, 1, 3}, {5, 4, 3});
  ExpectF64(out, "floor", {1, 1, 1, 2}, {5, 4});
  // Windows {0, 2}, {1, 3}, {2, 4}.
  ExpectF64(out, "dilated", {1, 1, 1, 3}, {2, 5, 3});
}

TEST(ReferenceTest, AveragePoolCountsPaddingOnlyWhenAsked) {
  Named out = RunText(17, R"(
    g (float[1,1,3,3] x) => (float[1,1,2,2] valid, float[1,1,2,2] padded) {
      valid = AveragePool<kernel_shape = [2, 2], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
      padded = AveragePool<kernel_shape = [2, 2], strides = [2, 2], pads = [1, 1, 1, 1],
                           count_include_pad = 1>(x)
    })",
                      {{"x", F32({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9})}});
  ExpectF64(out, "valid", {1, 1, 2, 2}, {1, 2.5, 5.5, 7});
  ExpectF64(out, "padded", {1, 1, 2, 2}, {0.25, 1.25, 2.75, 7});
}

TEST(ReferenceTest, GlobalAveragePool) {
  Named out = RunText(17, "g (float[1,2,2,2] x) => (float[1,2,1,1] y) { y = GlobalAveragePool(x) }",
                      {{"x", F32({1, 2, 2, 2}, {1, 2, 3, 4, 0, 0, 0, 8})}});
  ExpectF64(out, "y", {1, 2, 1, 1}, {2.5, 2});
}

// ---- Reductions and normalizations ----------------------------------------------------------

TEST(ReferenceTest, ReduceMeanAxesMovedFromAttributeToInputAtOpset18) {
  const Named feeds = {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}};
  Named v17 = RunText(17, R"(
    g (float[2,3] x) => (float[2,1] y) { y = ReduceMean<axes = [1]>(x) })",
                      feeds);
  ExpectF64(v17, "y", {2, 1}, {2, 5});
  Named v18 = RunText(18, R"(
    g (float[2,3] x) => (float[2] y, float[2,3] same) <int64[1] axes = {-1}> {
      y = ReduceMean<keepdims = 0>(x, axes)
      same = ReduceMean<noop_with_empty_axes = 1>(x)
    })",
                      feeds);
  ExpectF64(v18, "y", {2}, {2, 5});
  ExpectF64(v18, "same", {2, 3}, {1, 2, 3, 4, 5, 6});
}

TEST(ReferenceTest, ReduceSumAndReduceMax) {
  Named out = RunText(13, R"(
    g (float[2,3] x, int64[2,2] i) => (float[3] sum, float[1,1] max, int64[2] isum)
        <int64[1] rows = {0}, int64[1] cols = {1}> {
      sum = ReduceSum<keepdims = 0>(x, rows)
      max = ReduceMax(x)
      isum = ReduceSum<keepdims = 0>(i, cols)
    })",
                      {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}, {"i", I64({2, 2}, {1, 2, 30, 40})}});
  ExpectF64(out, "sum", {3}, {5, 7, 9});
  ExpectF64(out, "max", {1, 1}, {6});
  ExpectTensor(out, "isum", DType::kI64, {2}, {3, 70});
}

TEST(ReferenceTest, LayerNormalizationWithStatsOutputs) {
  Named out = RunText(17, R"(
    g (float[2,4] x, float[4] scale, float[4] bias) => (float[2,4] y, float[2,1] mean,
        float[2,1] inv_std) {
      y, mean, inv_std = LayerNormalization<epsilon = 0.25>(x, scale, bias)
    })",
                      {{"x", F32({2, 4}, {1, 2, 3, 4, 2, 2, 2, 2})},
                       {"scale", F32({4}, {1, 1, 2, 2})},
                       {"bias", F32({4}, {0, 1, 0, 1})}});
  // Row 0: mean 2.5, variance 1.25, 1 / sqrt(1.25 + 0.25); row 1: variance 0, 1 / sqrt(0.25).
  const double r = 0.8164965809277261;
  ExpectF64(out, "y", {2, 4}, {-1.5 * r, 1 - 0.5 * r, 2 * 0.5 * r, 1 + 2 * 1.5 * r, 0, 1, 0, 1});
  ExpectF64(out, "mean", {2, 1}, {2.5, 2});
  ExpectF64(out, "inv_std", {2, 1}, {r, 2});
}

TEST(ReferenceTest, LayerNormalizationOverSeveralAxesWithABroadcastScale) {
  Named out = RunText(17, R"(
    g (float[1,2,2] x, float[2] scale) => (float[1,2,2] y, float[1,1,1] mean) {
      y, mean = LayerNormalization<axis = 1, epsilon = 4.0>(x, scale)
    })",
                      {{"x", F32({1, 2, 2}, {1, 3, 5, 7})}, {"scale", F32({2}, {1, 2})}});
  // Mean 4, variance 5, 1 / sqrt(5 + 4) = 1/3; the scale repeats along the normalized rows.
  ExpectF64(out, "y", {1, 2, 2}, {-1, -2.0 / 3, 1.0 / 3, 2});
  ExpectF64(out, "mean", {1, 1, 1}, {4});
}

TEST(ReferenceTest, BatchAndInstanceNormalization) {
  Named out = RunText(17, R"(
    g (float[1,2,1,2] x, float[2] scale, float[2] bias, float[2] mean, float[2] var,
       float[1,2,2] s) => (float[1,2,1,2] bn, float[1,2,2] inorm) {
      bn = BatchNormalization<epsilon = 0.0>(x, scale, bias, mean, var)
      inorm = InstanceNormalization<epsilon = 1.0>(s, scale, bias)
    })",
                      {{"x", F32({1, 2, 1, 2}, {1, 3, 0, 4})},
                       {"scale", F32({2}, {2, 1})},
                       {"bias", F32({2}, {0, 1})},
                       {"mean", F32({2}, {1, 2})},
                       {"var", F32({2}, {4, 0.25})},
                       {"s", F32({1, 2, 2}, {1, 3, 5, 5})}});
  // Channel 0: (x - 1) / 2 * 2; channel 1: (x - 2) / 0.5 + 1.
  ExpectF64(out, "bn", {1, 2, 1, 2}, {0, 2, -3, 5});
  // Channel 0: mean 2, variance 1, 1 / sqrt(2), times 2; channel 1 is constant: the bias.
  ExpectF64(out, "inorm", {1, 2, 2}, {-1.4142135623730951, 1.4142135623730951, 1, 1});
}

// ---- Data movement ---------------------------------------------------------------------------

TEST(ReferenceTest, ReshapeTransposeSqueezeUnsqueezeFlatten) {
  std::vector<double> iota(24);
  for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<double>(i);
  Named out = RunText(13, R"(
    g (float[2,3,4] x, float[2,3] m, float[1,2,3] t, float[1,3,1] s, float[3] u)
        => (float[2,12] r, float[3,2] mt, float[3,1,2] tt, float[1,3] sq, float[1,3,1] un,
            float[6,4] fl) <int64[2] shape = {0, -1}, int64[1] last = {-1}, int64[2] ends = {0, -1}> {
      r = Reshape(x, shape)
      mt = Transpose<perm = [1, 0]>(m)
      tt = Transpose<perm = [2, 0, 1]>(t)
      sq = Squeeze(s, last)
      un = Unsqueeze(u, ends)
      fl = Flatten<axis = 2>(x)
    })",
                      {{"x", F32({2, 3, 4}, iota)},
                       {"m", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                       {"t", F32({1, 2, 3}, {0, 1, 2, 3, 4, 5})},
                       {"s", F32({1, 3, 1}, {7, 8, 9})},
                       {"u", F32({3}, {7, 8, 9})}});
  ExpectF64(out, "r", {2, 12}, iota);
  ExpectF64(out, "mt", {3, 2}, {1, 4, 2, 5, 3, 6});
  ExpectF64(out, "tt", {3, 1, 2}, {0, 3, 1, 4, 2, 5});
  ExpectF64(out, "sq", {1, 3}, {7, 8, 9});
  ExpectF64(out, "un", {1, 3, 1}, {7, 8, 9});
  ExpectF64(out, "fl", {6, 4}, iota);
}

TEST(ReferenceTest, ExpandConcatTile) {
  Named out = RunText(17, R"(
    g (float[3,1] x, float[2,1] a, float[2,2] b, float[1,2] t)
        => (float[2,3,2] e, float[2,3] c, float[2,4] tl)
        <int64[3] shape = {2, 1, 2}, int64[2] reps = {2, 2}> {
      e = Expand(x, shape)
      c = Concat<axis = -1>(a, b)
      tl = Tile(t, reps)
    })",
                      {{"x", F32({3, 1}, {1, 2, 3})},
                       {"a", F32({2, 1}, {1, 2})},
                       {"b", F32({2, 2}, {3, 4, 5, 6})},
                       {"t", F32({1, 2}, {1, 2})}});
  ExpectF64(out, "e", {2, 3, 2}, {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
  ExpectF64(out, "c", {2, 3}, {1, 3, 4, 2, 5, 6});
  ExpectF64(out, "tl", {2, 4}, {1, 2, 1, 2, 1, 2, 1, 2});
}

TEST(ReferenceTest, SplitBySizesAndByNumOutputs) {
  const Named feeds = {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}};
  Named sized = RunText(13, R"(
    g (float[2,3] x) => (float[2,1] p, float[2,2] q) <int64[2] sizes = {1, 2}> {
      p, q = Split<axis = 1>(x, sizes)
    })",
                        feeds);
  ExpectF64(sized, "p", {2, 1}, {1, 4});
  ExpectF64(sized, "q", {2, 2}, {2, 3, 5, 6});
  // Opset 18: three columns in two parts leave the last part smaller.
  Named even = RunText(18, R"(
    g (float[2,3] x) => (float[2,2] p, float[2,1] q) { p, q = Split<axis = 1, num_outputs = 2>(x) })",
                       feeds);
  ExpectF64(even, "p", {2, 2}, {1, 2, 4, 5});
  ExpectF64(even, "q", {2, 1}, {3, 6});
}

TEST(ReferenceTest, SliceWithNegativeStepsAndClampedEnds) {
  std::vector<double> iota(12);
  for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<double>(i);
  Named out = RunText(13, R"(
    g (float[3,4] x) => (float[2,4] back, float[3,2] tail)
        <int64[2] starts = {0, 3}, int64[2] ends = {9223372036854775807, -5}, int64[2] axes = {0, 1},
         int64[2] steps = {2, -1}, int64[1] s2 = {-2}, int64[1] e2 = {100}, int64[1] a2 = {1}> {
      back = Slice(x, starts, ends, axes, steps)
      tail = Slice(x, s2, e2, a2)
    })",
                      {{"x", F32({3, 4}, iota)}});
  ExpectF64(out, "back", {2, 4}, {3, 2, 1, 0, 11, 10, 9, 8});
  ExpectF64(out, "tail", {3, 2}, {2, 3, 6, 7, 10, 11});
}

TEST(ReferenceTest, GatherWithNegativeIndices) {
  Named out = RunText(17, R"(
    g (float[3,2] data, int64[2] rows, int64[1,1] col) => (float[2,2] picked, float[3,1,1] column) {
      picked = Gather(data, rows)
      column = Gather<axis = 1>(data, col)
    })",
                      {{"data", F32({3, 2}, {1, 2, 3, 4, 5, 6})},
                       {"rows", I64({2}, {-1, 0})},
                       {"col", I64({1, 1}, {1})}});
  ExpectF64(out, "picked", {2, 2}, {5, 6, 1, 2});
  ExpectF64(out, "column", {3, 1, 1}, {2, 4, 6});
}

TEST(ReferenceTest, GatherIndexOutOfRangeIsAnErrorNamingTheNode) {
  Graph g = MustImport(
      17, "g (float[3,2] data, int64[1] rows) => (float[1,2] y) { y = Gather(data, rows) }");
  const std::string error =
      RunError(g, {{"data", F32({3, 2}, {1, 2, 3, 4, 5, 6})}, {"rows", I64({1}, {3})}});
  EXPECT_NE(error.find(planner::DescribeNode(g.nodes[0])), std::string::npos) << error;
  EXPECT_NE(error.find("index 3 is out of range"), std::string::npos) << error;
}

TEST(ReferenceTest, GatherElements) {
  Named out = RunText(17, R"(
    g (float[2,2] data, int64[2,2] at) => (float[2,2] y) { y = GatherElements<axis = 1>(data, at) })",
                      {{"data", F32({2, 2}, {1, 2, 3, 4})}, {"at", I64({2, 2}, {0, -2, -1, 0})}});
  ExpectF64(out, "y", {2, 2}, {1, 1, 4, 3});
}

TEST(ReferenceTest, PadModes) {
  const Named feeds = {{"x", F32({1, 3}, {1, 2, 3})}, {"v", F32({}, {9})}};
  Named out = RunText(19, R"(
    g (float[1,3] x, float v) => (float[1,6] constant, float[1,6] reflect, float[1,6] edge,
        float[1,6] wrap, float[1,2] crop) <int64[4] pads = {0, 2, 0, 1}, int64[4] cut = {0, -1, 0, 0}> {
      constant = Pad(x, pads, v)
      reflect = Pad<mode = "reflect">(x, pads)
      edge = Pad<mode = "edge">(x, pads)
      wrap = Pad<mode = "wrap">(x, pads)
      crop = Pad(x, cut)
    })",
                      feeds);
  ExpectF64(out, "constant", {1, 6}, {9, 9, 1, 2, 3, 9});
  ExpectF64(out, "reflect", {1, 6}, {3, 2, 1, 2, 3, 2});
  ExpectF64(out, "edge", {1, 6}, {1, 1, 1, 2, 3, 3});
  ExpectF64(out, "wrap", {1, 6}, {2, 3, 1, 2, 3, 1});
  ExpectF64(out, "crop", {1, 2}, {2, 3});
}

TEST(ReferenceTest, ResizeNearestLinearAndCubic) {
  Named out = RunText(19, R"(
    g (float[1,1,2,2] x, float[1,1,1,2] r, float[1,1,1,4] c)
        => (float[1,1,4,4] near, float[1,1,1,4] lin, float[1,1,1,3] corners, float[1,1,1,8] cubic)
        <float[4] twice = {1.0, 1.0, 2.0, 2.0}, int64[4] four = {1, 1, 1, 4},
         int64[4] three = {1, 1, 1, 3}, float[4] wide = {1.0, 1.0, 1.0, 2.0}> {
      near = Resize<mode = "nearest">(x, , twice)
      lin = Resize<mode = "linear">(r, , , four)
      corners = Resize<mode = "linear", coordinate_transformation_mode = "align_corners">(r, , , three)
      cubic = Resize<mode = "cubic", coordinate_transformation_mode = "asymmetric">(c, , wide)
    })",
                      {{"x", F32({1, 1, 2, 2}, {1, 2, 3, 4})},
                       {"r", F32({1, 1, 1, 2}, {0, 4})},
                       {"c", F32({1, 1, 1, 4}, {0, 1, 2, 3})}});
  // half_pixel at scale 2: outputs 0..3 read input coordinates -0.25, 0.25, 0.75, 1.25.
  ExpectF64(out, "near", {1, 1, 4, 4}, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  ExpectF64(out, "lin", {1, 1, 1, 4}, {0, 1, 3, 4});
  ExpectF64(out, "corners", {1, 1, 1, 3}, {0, 2, 4});
  // Cubic with A = -0.75 at ratio 0.5 weighs taps by (-3/32, 19/32, 19/32, -3/32); taps past the
  // edges read the edge element.
  ExpectF64(out, "cubic", {1, 1, 1, 8}, {0, 0.40625, 1, 1.5, 2, 2.59375, 3, 3.09375});
}

// ---- Ops the importer folds, run on hand-built graphs ----------------------------------------

TEST(ReferenceTest, ShapeConstantOfShapeAndRange) {
  GraphBuilder b;
  const int x = b.Input("x", {2, 3, 4});
  const int shape = b.Op("Shape", {x}, {2}, {{"start", int64_t{1}}}, DType::kI64);
  const int filled = b.Op("ConstantOfShape", {b.Ints({2, 2})}, {2, 2}, {{"value", 1.5}});
  const int sevens = b.Op("ConstantOfShape", {b.Ints({3})}, {3},
                          {{"value", int64_t{7}}, {"value.elem_type", int64_t{7}}}, DType::kI64);
  const int ints =
      b.Op("Range", {b.Scalar(1, DType::kI64), b.Scalar(7, DType::kI64), b.Scalar(2, DType::kI64)},
           {3}, {}, DType::kI64);
  const int floats =
      b.Op("Range", {b.Scalar(0), b.Scalar(1), b.Scalar(0.25)}, {4}, {}, DType::kF32);
  for (int v : {shape, filled, sevens, ints, floats}) b.Output(v);
  const Graph& g = b.graph();
  Result<TensorMap> out = RunReference(g, {{x, F32({2, 3, 4}, std::vector<double>(24, 0))}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  Named named;
  for (auto& [id, t] : *out) named.emplace(g.values[id].name, std::move(t));
  ExpectTensor(named, g.values[shape].name, DType::kI64, {2}, {3, 4});
  ExpectF64(named, g.values[filled].name, {2, 2}, {1.5, 1.5, 1.5, 1.5});
  ExpectTensor(named, g.values[sevens].name, DType::kI64, {3}, {7, 7, 7});
  ExpectTensor(named, g.values[ints].name, DType::kI64, {3}, {1, 3, 5});
  ExpectF64(named, g.values[floats].name, {4}, {0, 0.25, 0.5, 0.75});
}

// ---- The run itself --------------------------------------------------------------------------

TEST(ReferenceTest, WeightsLoadFromTheGraphUnlessFed) {
  // Nine floats are too many to fold: w is a weight with its bytes in the graph.
  const std::string body = R"(
    g (float[1,3] x) => (float[1,3] y) <float[3,3] w = {1, 0, 0, 0, 2, 0, 0, 0, 3}> {
      y = MatMul(x, w)
    })";
  Graph g = MustImport(17, body);
  ASSERT_EQ(g.values[g.FindValue("w")].kind, planner::ValueKind::kWeight);
  Result<Named> loaded = RunGraph(g, {{"x", F32({1, 3}, {1, 1, 1})}});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectF64(*loaded, "y", {1, 3}, {1, 2, 3});
  Result<Named> fed =
      RunGraph(g, {{"x", F32({1, 3}, {1, 1, 1})}, {"w", F32({3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1})}});
  ASSERT_TRUE(fed.ok()) << fed.status().ToString();
  ExpectF64(*fed, "y", {1, 3}, {3, 3, 3});
}

TEST(ReferenceTest, HalfPrecisionFeedsAreWidened) {
  Named out = RunText(
      17, "g (float16[2] x, float16[2] y) => (float16[2] z) { z = Mul(x, y) }",
      {{"x", Make(DType::kF16, {2}, {1.5, 3})}, {"y", Make(DType::kF16, {2}, {0.5, 1024})}});
  ExpectF64(out, "z", {2}, {0.75, 3072});
}

TEST(ReferenceTest, KeepsIntermediatesWhenAsked) {
  Graph g = MustImport(17, R"(
    g (float[2] x) => (float[2] z) {
      y = Relu(x)
      z = Neg(y)
    })");
  const Named feeds = {{"x", F32({2}, {-1, 2})}};
  Result<Named> plain = RunGraph(g, feeds);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->count("y"), 0u);
  Result<Named> all = RunGraph(g, feeds, ReferenceOptions{.keep_intermediates = true});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ExpectF64(*all, "y", {2}, {0, 2});
  ExpectF64(*all, "z", {2}, {0, -2});
}

TEST(ReferenceTest, FeedErrorsAreClear) {
  Graph g = MustImport(17, "g (float[2,3] x, float[3] y) => (float[2,3] z) { z = Add(x, y) }");
  const std::string missing = RunError(g, {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  EXPECT_NE(missing.find("'y' (f32[3]) is not fed"), std::string::npos) << missing;
  const std::string wrong_shape =
      RunError(g, {{"x", F32({3, 2}, {1, 2, 3, 4, 5, 6})}, {"y", F32({3}, {1, 2, 3})}});
  EXPECT_NE(wrong_shape.find("feed for 'x' (f32[2,3]) is f32[3,2]"), std::string::npos)
      << wrong_shape;
  const std::string wrong_kind =
      RunError(g, {{"x", I64({2, 3}, {1, 2, 3, 4, 5, 6})}, {"y", F32({3}, {1, 2, 3})}});
  EXPECT_NE(wrong_kind.find("feed for 'x' (f32[2,3]) is i64[2,3]"), std::string::npos)
      << wrong_kind;
}

TEST(ReferenceTest, UnsupportedNodeIsAnError) {
  GraphBuilder b;
  const int x = b.Input("x", {2});
  const int y = b.Op("NonZero", {x}, {2});
  b.MarkUnsupported(y);
  b.Output(y);
  const Graph& g = b.graph();
  Result<TensorMap> out = RunReference(g, {{x, F32({2}, {1, 0})}});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("node 'NonZero_0' (NonZero)"), std::string::npos)
      << out.status().message();
}

TEST(ReferenceTest, ComputedShapeThatDisagreesWithTheGraphIsInternal) {
  GraphBuilder b;
  const int x = b.Input("x", {2, 3});
  const int y = b.Op("Transpose", {x}, {2, 3});  // a transpose of [2,3] is [3,2]
  b.Output(y);
  Result<TensorMap> out = RunReference(b.graph(), {{x, F32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), ErrorCode::kInternal);
  EXPECT_NE(out.status().message().find("node 'Transpose_0' (Transpose)"), std::string::npos)
      << out.status().message();
}

// ---- GPT-2 small, every kernel spec ----------------------------------------------------------

// Normal values for floating inputs, [0, 100) for integer ones: valid token ids and indices.
Tensor RandomFeed(const planner::Value& v, std::mt19937& rng) {
  Tensor t(v.dtype, v.shape);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_int_distribution<int64_t> small(0, 99);
  for (int64_t i = 0; i < t.elements(); ++i) {
    if (planner::IsFloat(v.dtype)) {
      t.SetDouble(i, normal(rng));
    } else if (v.dtype == DType::kBool) {
      t.SetDouble(i, static_cast<double>(small(rng) % 2));
    } else {
      t.SetDouble(i, static_cast<double>(small(rng)));
    }
  }
  return t;
}

TEST(ReferenceTest, EveryGpt2KernelSpecRuns) {
  Result<planner::DeviceModel> h200 = planner::DeviceCatalog::Builtin().Find("h200");
  ASSERT_TRUE(h200.ok()) << h200.status().ToString();
  Result<planner::PlannedModel> planned = planner::PlanOnnxFile(
      planner::import_testing::TestModelPath("gpt2-small_b1s128.onnx"), {}, *h200, {});
  ASSERT_TRUE(planned.ok()) << planned.status().ToString();
  std::mt19937 rng(1234);
  int ran = 0;
  for (const planner::KernelJobPlan& job : planned->plan.jobs) {
    const planner::KernelSpec& spec = job.spec;
    SCOPED_TRACE(spec.name);
    Result<Graph> g = planner::ImportOnnxBytes(spec.onnx_model, spec.name, "", {});
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    TensorMap feeds;
    for (int id : g->inputs) feeds.emplace(id, RandomFeed(g->values[id], rng));
    Result<TensorMap> out = RunReference(*g, feeds);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    ASSERT_EQ(g->outputs.size(), spec.outputs.size());
    for (size_t i = 0; i < spec.outputs.size(); ++i) {
      const Tensor& t = out->at(g->outputs[i]);
      EXPECT_EQ(t.shape(), spec.outputs[i].shape) << spec.outputs[i].name;
      bool finite = true;
      for (int64_t k = 0; k < t.elements() && finite; ++k) finite = std::isfinite(t.GetDouble(k));
      EXPECT_TRUE(finite) << spec.outputs[i].name << " has a non-finite element";
    }
    ++ran;
  }
  EXPECT_GT(ran, 5);
}

}  // namespace
}  // namespace kfleet::runtime
