#include "runtime/baseline.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "planner/onnx_import.h"
#include "runtime/feeds.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::runtime {
namespace {

using planner::Graph;
using planner::Shape;

Tensor F32(Shape shape, const std::vector<double>& values) {
  Tensor t(DType::kF32, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.elements()), values.size());
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.elements(); ++i) {
    t.SetDouble(static_cast<int64_t>(i), values[i]);
  }
  return t;
}

Tensor Typed(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(dtype, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.elements()), values.size());
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.elements(); ++i) {
    t.SetDouble(static_cast<int64_t>(i), values[i]);
  }
  return t;
}

// Deterministic, varied values in [-1, 1) for the larger tests.
std::vector<double> Ramp(int64_t n, uint32_t seed) {
  std::vector<double> out;
  uint32_t state = seed;
  for (int64_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    out.push_back(static_cast<double>(state >> 8) / static_cast<double>(1u << 23) - 1.0);
  }
  return out;
}

std::string Model(int opset, std::string_view body) {
  return "<ir_version: 8, opset_import: [\"\" : " + std::to_string(opset) + "]>\n" +
         std::string(body);
}

struct Ran {
  Graph graph;
  std::map<std::string, Tensor> outputs;
};

// Imports `body` (opset 17 unless given), feeds tensors by input name, runs the baseline once.
Result<Ran> TryRun(std::string_view body, std::map<std::string, Tensor> feeds_by_name,
                   int opset = 17, const planner::ImportOptions& options = {}) {
  Ran ran;
  KF_ASSIGN_OR_RETURN(ran.graph, planner::ImportOnnxText(Model(opset, body), options));
  TensorMap feeds;
  for (auto& [name, tensor] : feeds_by_name) {
    const int id = ran.graph.FindValue(name);
    if (id < 0) return NotFound("no value " + name);
    feeds.emplace(id, std::move(tensor));
  }
  KF_ASSIGN_OR_RETURN(auto executor, BaselineExecutor::Create(ran.graph));
  TensorMap outputs;
  KF_RETURN_IF_ERROR(executor->Run(feeds, &outputs));
  for (auto& [id, tensor] : outputs) ran.outputs.emplace(ran.graph.values[id].name, tensor);
  return ran;
}

std::map<std::string, Tensor> MustRun(std::string_view body,
                                      std::map<std::string, Tensor> feeds_by_name, int opset = 17,
                                      const planner::ImportOptions& options = {}) {
  Result<Ran> ran = TryRun(body, std::move(feeds_by_name), opset, options);
  EXPECT_TRUE(ran.ok()) << ran.status().ToString();
  return ran.ok() ? std::move(ran->outputs) : std::map<std::string, Tensor>{};
}

void ExpectValues(const Tensor& t, const Shape& shape, const std::vector<double>& expected,
                  double tolerance = 1e-5) {
  ASSERT_EQ(t.shape(), shape);
  ASSERT_EQ(static_cast<size_t>(t.elements()), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const double got = t.GetDouble(static_cast<int64_t>(i));
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(got)) << "element " << i;
      continue;
    }
    if (std::isinf(expected[i])) {
      EXPECT_EQ(got, expected[i]) << "element " << i;
      continue;
    }
    EXPECT_NEAR(got, expected[i], tolerance * std::max(1.0, std::fabs(expected[i])))
        << "element " << i;
  }
}

// One elementwise op over x = [-2, -0.5, 0.5, 3] against a function computed here.
void ExpectUnary(std::string_view op, double (*f)(double), std::string_view attrs = "") {
  const std::vector<double> x = {-2, -0.5, 0.5, 3};
  std::string body =
      "g (float[4] x) => (float[4] y) { y = " + std::string(op) + std::string(attrs) + "(x) }";
  auto out = MustRun(body, {{"x", F32({4}, x)}});
  std::vector<double> expected;
  for (double v : x) expected.push_back(f(v));
  SCOPED_TRACE(std::string(op));
  ExpectValues(out["y"], {4}, expected, 1e-5);
}

TEST(BaselineElementwiseTest, UnaryOps) {
  ExpectUnary("Neg", [](double v) { return -v; });
  ExpectUnary("Abs", [](double v) { return std::fabs(v); });
  ExpectUnary("Relu", [](double v) { return v > 0 ? v : 0.0; });
  ExpectUnary("Exp", [](double v) { return std::exp(v); });
  ExpectUnary("Erf", [](double v) { return std::erf(v); });
  ExpectUnary("Tanh", [](double v) { return std::tanh(v); });
  ExpectUnary("Sigmoid", [](double v) { return 1 / (1 + std::exp(-v)); });
  ExpectUnary("Cos", [](double v) { return std::cos(v); });
  ExpectUnary("Sin", [](double v) { return std::sin(v); });
  ExpectUnary("Reciprocal", [](double v) { return 1 / v; });
  ExpectUnary("Softplus", [](double v) { return std::log(1 + std::exp(v)); });
  ExpectUnary("HardSwish", [](double v) { return v * std::clamp(v / 6 + 0.5, 0.0, 1.0); });
  ExpectUnary("Identity", [](double v) { return v; });
  ExpectUnary(
      "LeakyRelu", [](double v) { return v >= 0 ? v : 0.1 * v; }, "<alpha = 0.1>");
  ExpectUnary(
      "HardSigmoid", [](double v) { return std::clamp(0.5 * v + 0.25, 0.0, 1.0); },
      "<alpha = 0.5, beta = 0.25>");
}

TEST(BaselineElementwiseTest, ExpTanhSigmoidAcrossTheirRange) {
  // The vectorized exp and tanh: ~1 ulp in range, Inf / 0 / +-1 at the ends, NaN kept.
  std::vector<double> x = {-100, -87, -20,   -3,    -0.7, -1e-3, -1e-6, 0,  1e-6,
                           1e-3, 0.5, 0.624, 0.626, 1,    5,     20,    88, 100};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  x.push_back(nan);
  auto out = MustRun(R"(g (float[19] x) => (float[19] e, float[19] t, float[19] s) {
    e = Exp(x)
    t = Tanh(x)
    s = Sigmoid(x)
  })",
                     {{"x", F32({19}, x)}});
  std::vector<double> e;
  std::vector<double> t;
  std::vector<double> sig;
  for (double v : x) {
    const auto f = static_cast<double>(static_cast<float>(v));
    e.push_back(f > 88.7 ? std::numeric_limits<double>::infinity() : std::exp(f));
    t.push_back(std::tanh(f));
    sig.push_back(1 / (1 + std::exp(-f)));
  }
  e[0] = 0;  // e^-100 is below FLT_MIN: flushed to zero
  ExpectValues(out["e"], {19}, e, 1e-6);
  ExpectValues(out["t"], {19}, t, 1e-6);
  ExpectValues(out["s"], {19}, sig, 1e-6);
  // Relative accuracy where tanh is tiny.
  EXPECT_NEAR(out["t"].GetDouble(5) / std::tanh(-1e-3), 1.0, 1e-6);
}

TEST(BaselineElementwiseTest, SqrtAndLogOfPositives) {
  auto out = MustRun("g (float[3] x) => (float[3] s, float[3] l) { s = Sqrt(x)  l = Log(x) }",
                     {{"x", F32({3}, {0.25, 4, 9})}});
  ExpectValues(out["s"], {3}, {0.5, 2, 3});
  ExpectValues(out["l"], {3}, {std::log(0.25), std::log(4.0), std::log(9.0)});
}

TEST(BaselineElementwiseTest, GeluBothForms) {
  const std::vector<double> x = {-3, -1, 0, 0.5, 2};
  auto exact = MustRun("g (float[5] x) => (float[5] y) { y = Gelu(x) }", {{"x", F32({5}, x)}}, 20);
  auto tanh = MustRun("g (float[5] x) => (float[5] y) { y = Gelu<approximate = \"tanh\">(x) }",
                      {{"x", F32({5}, x)}}, 20);
  std::vector<double> want_exact;
  std::vector<double> want_tanh;
  for (double v : x) {
    want_exact.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
    want_tanh.push_back(0.5 * v *
                        (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
  }
  ExpectValues(exact["y"], {5}, want_exact);
  ExpectValues(tanh["y"], {5}, want_tanh);
}

TEST(BaselineElementwiseTest, ClipWithInputsAndWithout) {
  auto out =
      MustRun(R"(g (float[4] x, float lo, float hi) => (float[4] y, float[4] z) {
    y = Clip(x, lo, hi)
    z = Clip(x, lo, )
  })",
              {{"x", F32({4}, {-2, -0.5, 0.5, 3})}, {"lo", F32({}, {-1})}, {"hi", F32({}, {1})}});
  ExpectValues(out["y"], {4}, {-1, -0.5, 0.5, 1});
  ExpectValues(out["z"], {4}, {-1, -0.5, 0.5, 3});
}

TEST(BaselineElementwiseTest, ArithmeticWithBroadcasting) {
  // [2,3] with [3] (row), [2,1] (column) and a scalar.
  auto out = MustRun(R"(g (float[2,3] a, float[3] row, float[2,1] col, float s)
      => (float[2,3] add, float[2,3] sub, float[2,3] mul, float[2,3] div) {
    add = Add(a, row)
    sub = Sub(a, col)
    mul = Mul(a, s)
    div = Div(row, a)
  })",
                     {{"a", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                      {"row", F32({3}, {10, 20, 30})},
                      {"col", F32({2, 1}, {1, 2})},
                      {"s", F32({}, {0.5})}});
  ExpectValues(out["add"], {2, 3}, {11, 22, 33, 14, 25, 36});
  ExpectValues(out["sub"], {2, 3}, {0, 1, 2, 2, 3, 4});
  ExpectValues(out["mul"], {2, 3}, {0.5, 1, 1.5, 2, 2.5, 3});
  ExpectValues(out["div"], {2, 3}, {10, 10, 10, 2.5, 4, 5});
}

TEST(BaselineElementwiseTest, BroadcastBothSidesAndMiddleDims) {
  // [2,1,3] + [1,4,1] -> [2,4,3]; and [4,1,2] * [3,1] -> [4,3,2].
  auto out = MustRun(R"(g (float[2,1,3] a, float[1,4,1] b, float[4,1,2] c, float[3,1] d)
      => (float[2,4,3] y, float[4,3,2] z) {
    y = Add(a, b)
    z = Mul(c, d)
  })",
                     {{"a", F32({2, 1, 3}, {1, 2, 3, 4, 5, 6})},
                      {"b", F32({1, 4, 1}, {10, 20, 30, 40})},
                      {"c", F32({4, 1, 2}, {1, 2, 3, 4, 5, 6, 7, 8})},
                      {"d", F32({3, 1}, {1, 10, 100})}});
  std::vector<double> y;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) {
      for (int k = 0; k < 3; ++k) y.push_back((i * 3 + k + 1) + 10 * (j + 1));
    }
  }
  ExpectValues(out["y"], {2, 4, 3}, y);
  std::vector<double> z;
  const double d[] = {1, 10, 100};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int k = 0; k < 2; ++k) z.push_back((i * 2 + k + 1) * d[j]);
    }
  }
  ExpectValues(out["z"], {4, 3, 2}, z);
}

TEST(BaselineElementwiseTest, LargeSameShapeAndRowBroadcastUseEveryThread) {
  // Large enough to split across threads.
  constexpr int64_t kRows = 512;
  constexpr int64_t kCols = 384;
  std::vector<double> a = Ramp(kRows * kCols, 3);
  std::vector<double> b = Ramp(kRows * kCols, 4);
  std::vector<double> row = Ramp(kCols, 5);
  auto out = MustRun(
      R"(g (float[512,384] a, float[512,384] b, float[384] row)
      => (float[512,384] s, float[512,384] t) {
    s = Add(a, b)
    t = Mul(a, row)
  })",
      {{"a", F32({kRows, kCols}, a)}, {"b", F32({kRows, kCols}, b)}, {"row", F32({kCols}, row)}});
  std::vector<double> s;
  std::vector<double> t;
  for (int64_t i = 0; i < kRows * kCols; ++i) {
    s.push_back(static_cast<float>(a[i]) + static_cast<float>(b[i]));
    t.push_back(static_cast<float>(a[i]) * static_cast<float>(row[i % kCols]));
  }
  ExpectValues(out["s"], {kRows, kCols}, s);
  ExpectValues(out["t"], {kRows, kCols}, t);
}

TEST(BaselineElementwiseTest, PowMaxMinVariadic) {
  auto out = MustRun(R"(g (float[3] x, float[3] e, float[3] y, float[1] z)
      => (float[3] sq, float[3] p, float[3] mx, float[3] mn) {
    two = Constant<value = float {2.0}>()
    sq = Pow(x, two)
    p = Pow(x, e)
    mx = Max(x, y, z)
    mn = Min(x, y)
  })",
                     {{"x", F32({3}, {1.5, 2, 3})},
                      {"e", F32({3}, {2, 0.5, -1})},
                      {"y", F32({3}, {2, 1, 4})},
                      {"z", F32({1}, {2.5})}});
  ExpectValues(out["sq"], {3}, {2.25, 4, 9});
  ExpectValues(out["p"], {3}, {2.25, std::sqrt(2.0), 1.0 / 3});
  ExpectValues(out["mx"], {3}, {2.5, 2.5, 4});
  ExpectValues(out["mn"], {3}, {1.5, 1, 3});
}

TEST(BaselineElementwiseTest, IntegerArithmetic) {
  auto out = MustRun(R"(g (int64[4] a, int64[4] b) => (int64[4] s, int64[4] d, int64[4] m) {
    s = Add(a, b)
    d = Div(a, b)
    m = Mul(a, b)
  })",
                     {{"a", Typed(DType::kI64, {4}, {7, -7, 9, 5})},
                      {"b", Typed(DType::kI64, {4}, {2, 2, 3, 0})}});
  ExpectValues(out["s"], {4}, {9, -5, 12, 5});
  ExpectValues(out["d"], {4}, {3, -3, 3, 0});  // truncation; division by zero gives 0
  ExpectValues(out["m"], {4}, {14, -14, 27, 0});
}

TEST(BaselineElementwiseTest, ComparisonsLogicAndWhere) {
  auto out = MustRun(R"(g (float[4] a, float[4] b, bool[4] p, bool[4] q)
      => (bool[4] eq, bool[4] lt, bool[4] gt, bool[4] le, bool[4] ge, bool[4] and_, bool[4] or_,
          bool[4] not_, float[4] w, bool[4] nan) {
    eq = Equal(a, b)
    lt = Less(a, b)
    gt = Greater(a, b)
    le = LessOrEqual(a, b)
    ge = GreaterOrEqual(a, b)
    and_ = And(p, q)
    or_ = Or(p, q)
    not_ = Not(p)
    w = Where(p, a, b)
    r = Div(a, b)
    nan = IsNaN(r)
  })",
                     {{"a", F32({4}, {1, 2, 3, 0})},
                      {"b", F32({4}, {2, 2, 1, 0})},
                      {"p", Typed(DType::kBool, {4}, {1, 1, 0, 0})},
                      {"q", Typed(DType::kBool, {4}, {1, 0, 1, 0})}});
  ExpectValues(out["eq"], {4}, {0, 1, 0, 1});
  ExpectValues(out["lt"], {4}, {1, 0, 0, 0});
  ExpectValues(out["gt"], {4}, {0, 0, 1, 0});
  ExpectValues(out["le"], {4}, {1, 1, 0, 1});
  ExpectValues(out["ge"], {4}, {0, 1, 1, 1});
  ExpectValues(out["and_"], {4}, {1, 0, 0, 0});
  ExpectValues(out["or_"], {4}, {1, 1, 1, 0});
  ExpectValues(out["not_"], {4}, {0, 0, 1, 1});
  ExpectValues(out["w"], {4}, {1, 2, 1, 0});
  ExpectValues(out["nan"], {4}, {0, 0, 0, 1});
  EXPECT_EQ(out["eq"].dtype(), DType::kBool);
}

TEST(BaselineElementwiseTest, WhereBroadcastsAllThree) {
  auto out = MustRun(R"(g (bool[2,1] c, float[3] x, float y) => (float[2,3] z) {
    z = Where(c, x, y)
  })",
                     {{"c", Typed(DType::kBool, {2, 1}, {1, 0})},
                      {"x", F32({3}, {1, 2, 3})},
                      {"y", F32({}, {-1})}});
  ExpectValues(out["z"], {2, 3}, {1, 2, 3, -1, -1, -1});
}

TEST(BaselineElementwiseTest, CastRoundsAndTruncates) {
  auto out = MustRun(R"(g (float[4] x, int64[2] i) => (int64[4] a, float16[4] h, bool[4] b,
                                                        float[2] f) {
    a = Cast<to = 7>(x)
    h = Cast<to = 10>(x)
    b = Cast<to = 9>(x)
    f = Cast<to = 1>(i)
  })",
                     {{"x", F32({4}, {1.7, -1.7, 0, 1.0009765625 + 1e-4})},
                      {"i", Typed(DType::kI64, {2}, {3, -4})}});
  ExpectValues(out["a"], {4}, {1, -1, 0, 1});
  EXPECT_EQ(out["h"].dtype(), DType::kF16);
  // 1.00107... rounds to the f16 grid (spacing 2^-10 near 1).
  ExpectValues(out["h"], {4}, {1.7001953125, -1.7001953125, 0, 1.0009765625}, 1e-7);
  ExpectValues(out["b"], {4}, {1, 1, 0, 1});
  ExpectValues(out["f"], {2}, {3, -4});
}

TEST(BaselineSoftmaxTest, LargeValuesStayFinite) {
  auto out = MustRun(R"(g (float[2,3] x) => (float[2,3] y, float[2,3] l) {
    y = Softmax(x)
    l = LogSoftmax(x)
  })",
                     {{"x", F32({2, 3}, {1000, 1001, 1002, -5, 0, 5})}});
  const double e0 = std::exp(-2.0);
  const double e1 = std::exp(-1.0);
  const double sum = e0 + e1 + 1;
  ExpectValues(
      out["y"], {2, 3},
      {e0 / sum, e1 / sum, 1 / sum, std::exp(-10.0) / (std::exp(-10.0) + std::exp(-5.0) + 1),
       std::exp(-5.0) / (std::exp(-10.0) + std::exp(-5.0) + 1),
       1 / (std::exp(-10.0) + std::exp(-5.0) + 1)});
  ExpectValues(out["l"], {2, 3},
               {-2 - std::log(sum), -1 - std::log(sum), -std::log(sum),
                -10 - std::log(std::exp(-10.0) + std::exp(-5.0) + 1),
                -5 - std::log(std::exp(-10.0) + std::exp(-5.0) + 1),
                -std::log(std::exp(-10.0) + std::exp(-5.0) + 1)});
}

TEST(BaselineSoftmaxTest, InnerAxis) {
  // axis 0 of [2,2]: softmax down each column.
  auto out = MustRun("g (float[2,2] x) => (float[2,2] y) { y = Softmax<axis = 0>(x) }",
                     {{"x", F32({2, 2}, {0, 1, std::log(3.0), 1})}});
  ExpectValues(out["y"], {2, 2}, {0.25, 0.5, 0.75, 0.5});
}

TEST(BaselineReduceTest, MeanSumMax) {
  const std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [2,3,2]
  auto out = MustRun(R"(g (float[2,3,2] x) => (float[2,1,2] mean, float[2] sum, float[3] mx,
                                               float[1,1,1] all) {
    a1 = Constant<value = int64[1] {1}>()
    a12 = Constant<value = int64[2] {1, 2}>()
    a02 = Constant<value = int64[2] {0, 2}>()
    mean = ReduceMean(x, a1)
    sum = ReduceSum<keepdims = 0>(x, a12)
    mx = ReduceMax<keepdims = 0>(x, a02)
    all = ReduceSum(x)
  })",
                     {{"x", F32({2, 3, 2}, x)}}, 18);
  ExpectValues(out["mean"], {2, 1, 2}, {3, 4, 9, 10});
  ExpectValues(out["sum"], {2}, {21, 57});
  ExpectValues(out["mx"], {3}, {8, 10, 12});
  ExpectValues(out["all"], {1, 1, 1}, {78});
}

TEST(BaselineReduceTest, AxesAsAttributeBeforeOpset18AndLongRows) {
  std::vector<double> x = Ramp(4 * 5000, 9);
  auto out = MustRun(R"(g (float[4,5000] x) => (float[4,1] y) { y = ReduceSum<axes = [-1]>(x) })",
                     {{"x", F32({4, 5000}, x)}}, 13);
  std::vector<double> expected(4, 0.0);
  for (int64_t i = 0; i < 4 * 5000; ++i) expected[i / 5000] += static_cast<float>(x[i]);
  ExpectValues(out["y"], {4, 1}, expected, 1e-4);
}

TEST(BaselineNormTest, LayerNormalization) {
  auto out = MustRun(R"(g (float[2,3] x, float[3] s, float[3] b) => (float[2,3] y) {
    y = LayerNormalization<epsilon = 0.001>(x, s, b)
  })",
                     {{"x", F32({2, 3}, {1, 2, 3, 4, 6, 8})},
                      {"s", F32({3}, {1, 1, 2})},
                      {"b", F32({3}, {0, 1, 0})}});
  const double inv0 = 1 / std::sqrt(2.0 / 3 + 0.001);
  const double inv1 = 1 / std::sqrt(8.0 / 3 + 0.001);
  ExpectValues(out["y"], {2, 3}, {-inv0, 1, 2 * inv0, -2 * inv1, 1, 2 * 2 * inv1});
}

TEST(BaselineNormTest, LayerNormalizationOverTwoDimsWithStatistics) {
  auto out = MustRun(R"(g (float[1,2,2] x, float[2,2] s) => (float[1,2,2] y, float[1,1,1] mean,
                                                            float[1,1,1] inv) {
    y, mean, inv = LayerNormalization<axis = 1, epsilon = 0.0>(x, s)
  })",
                     {{"x", F32({1, 2, 2}, {1, 3, 5, 7})}, {"s", F32({2, 2}, {1, 1, 1, 1})}});
  const double inv = 1 / std::sqrt(5.0);
  ExpectValues(out["y"], {1, 2, 2}, {-3 * inv, -inv, inv, 3 * inv});
  ExpectValues(out["mean"], {1, 1, 1}, {4});
  ExpectValues(out["inv"], {1, 1, 1}, {inv});
}

TEST(BaselineNormTest, BatchAndInstanceNormalization) {
  auto out = MustRun(R"(g (float[1,2,2] x, float[2] s, float[2] b, float[2] m, float[2] v)
      => (float[1,2,2] bn, float[1,2,2] in) {
    bn = BatchNormalization<epsilon = 0.0>(x, s, b, m, v)
    in = InstanceNormalization<epsilon = 0.0>(x, s, b)
  })",
                     {{"x", F32({1, 2, 2}, {1, 3, 10, 20})},
                      {"s", F32({2}, {2, 1})},
                      {"b", F32({2}, {1, -1})},
                      {"m", F32({2}, {2, 10})},
                      {"v", F32({2}, {4, 25})}});
  ExpectValues(out["bn"], {1, 2, 2}, {0, 2, -1, 1});
  ExpectValues(out["in"], {1, 2, 2}, {-1, 3, -2, 0});
}

TEST(BaselineMatMulTest, TwoDimAndBatched) {
  auto out = MustRun(R"(g (float[2,3] a, float[3,2] b, float[2,2,3] ba, float[2,3,2] bb)
      => (float[2,2] c, float[2,2,2] bc) {
    c = MatMul(a, b)
    bc = MatMul(ba, bb)
  })",
                     {{"a", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                      {"b", F32({3, 2}, {7, 8, 9, 10, 11, 12})},
                      {"ba", F32({2, 2, 3}, {1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0})},
                      {"bb", F32({2, 3, 2}, {1, 0, 0, 1, 0, 0, 1, 2, 3, 4, 5, 6})}});
  ExpectValues(out["c"], {2, 2}, {58, 64, 139, 154});
  ExpectValues(out["bc"], {2, 2, 2}, {1, 2, 4, 5, 1, 2, 3, 4});
}

TEST(BaselineMatMulTest, BroadcastBatchesAndVectors) {
  // [2,1,2,3] x [3,3,2] -> [2,3,2,2]; a vector on either side.
  std::vector<double> a = Ramp(12, 1);
  std::vector<double> b = Ramp(18, 2);
  auto out = MustRun(R"(g (float[2,1,2,3] a, float[3,3,2] b, float[3] v, float[3,2] m)
      => (float[2,3,2,2] c, float[2] vm, float[3] mv) {
    c = MatMul(a, b)
    vm = MatMul(v, m)
    v2 = Constant<value = float[2] {1.0, -1.0}>()
    mv = MatMul(m, v2)
  })",
                     {{"a", F32({2, 1, 2, 3}, a)},
                      {"b", F32({3, 3, 2}, b)},
                      {"v", F32({3}, {1, 2, 3})},
                      {"m", F32({3, 2}, {1, 2, 3, 4, 5, 6})}});
  std::vector<double> c;
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      for (int r = 0; r < 2; ++r) {
        for (int col = 0; col < 2; ++col) {
          double acc = 0;
          for (int k = 0; k < 3; ++k) {
            acc += static_cast<float>(a[i * 6 + r * 3 + k]) *
                   static_cast<float>(b[j * 6 + k * 2 + col]);
          }
          c.push_back(acc);
        }
      }
    }
  }
  ExpectValues(out["c"], {2, 3, 2, 2}, c);
  ExpectValues(out["vm"], {2}, {22, 28});
  ExpectValues(out["mv"], {3}, {-1, -1, -1});
}

TEST(BaselineMatMulTest, GemmTransBAndBias) {
  auto out = MustRun(R"(g (float[2,3] a, float[4,3] b, float[4] c) => (float[2,4] y, float[2,4] z) {
    y = Gemm<transB = 1>(a, b, c)
    z = Gemm<transB = 1, alpha = 2.0, beta = 0.5>(a, b, c)
  })",
                     {{"a", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                      {"b", F32({4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1})},
                      {"c", F32({4}, {10, 20, 30, 40})}});
  ExpectValues(out["y"], {2, 4}, {11, 22, 33, 46, 14, 25, 36, 55});
  ExpectValues(out["z"], {2, 4}, {7, 14, 21, 32, 13, 20, 27, 50});
}

TEST(BaselineMatMulTest, GemmTransAWithoutBias) {
  auto out =
      MustRun(R"(g (float[3,2] a, float[3,2] b) => (float[2,2] y) {
    y = Gemm<transA = 1>(a, b)
  })",
              {{"a", F32({3, 2}, {1, 4, 2, 5, 3, 6})}, {"b", F32({3, 2}, {7, 8, 9, 10, 11, 12})}});
  ExpectValues(out["y"], {2, 2}, {58, 64, 139, 154});
}

// Direct convolution: out[n, m, oh, ow] = bias[m] + sum over the group's channels and taps.
std::vector<double> DirectConv(const std::vector<double>& x, const Shape& xs,
                               const std::vector<double>& w, const Shape& ws,
                               const std::vector<double>& bias, int64_t group,
                               std::array<int64_t, 2> stride, std::array<int64_t, 4> pads,
                               std::array<int64_t, 2> dilation, Shape* out_shape) {
  const int64_t n = xs[0], c = xs[1], h = xs[2], wd = xs[3];
  const int64_t m = ws[0], cg = ws[1], kh = ws[2], kw = ws[3];
  const int64_t oh = (h + pads[0] + pads[2] - ((kh - 1) * dilation[0] + 1)) / stride[0] + 1;
  const int64_t ow = (wd + pads[1] + pads[3] - ((kw - 1) * dilation[1] + 1)) / stride[1] + 1;
  *out_shape = {n, m, oh, ow};
  std::vector<double> out;
  const int64_t mg = m / group;
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t f = 0; f < m; ++f) {
      const int64_t g = f / mg;
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t xo = 0; xo < ow; ++xo) {
          double acc = bias.empty() ? 0 : bias[f];
          for (int64_t ch = 0; ch < cg; ++ch) {
            for (int64_t i = 0; i < kh; ++i) {
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t iy = y * stride[0] - pads[0] + i * dilation[0];
                const int64_t ix = xo * stride[1] - pads[1] + j * dilation[1];
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                acc += static_cast<float>(x[((b * c + g * cg + ch) * h + iy) * wd + ix]) *
                       static_cast<float>(w[((f * cg + ch) * kh + i) * kw + j]);
              }
            }
          }
          out.push_back(acc);
        }
      }
    }
  }
  return out;
}

TEST(BaselineConvTest, StridedPaddedDilatedGroupedMatchesDirectLoops) {
  const Shape xs = {2, 4, 7, 6};
  const Shape ws = {6, 2, 3, 2};
  std::vector<double> x = Ramp(2 * 4 * 7 * 6, 11);
  std::vector<double> w = Ramp(6 * 2 * 3 * 2, 12);
  std::vector<double> bias = Ramp(6, 13);
  Shape out_shape;
  std::vector<double> expected =
      DirectConv(x, xs, w, ws, bias, 2, {2, 1}, {1, 0, 2, 1}, {1, 2}, &out_shape);
  ASSERT_EQ(out_shape, (Shape{2, 6, 4, 5}));
  auto out = MustRun(R"(g (float[2,4,7,6] x, float[6,2,3,2] w, float[6] b) => (float[2,6,4,5] y) {
    y = Conv<group = 2, strides = [2, 1], pads = [1, 0, 2, 1], dilations = [1, 2]>(x, w, b)
  })",
                     {{"x", F32(xs, x)}, {"w", F32(ws, w)}, {"b", F32({6}, bias)}});
  ExpectValues(out["y"], out_shape, expected, 1e-4);
}

TEST(BaselineConvTest, DepthwisePointwiseAndSamePadding) {
  const Shape xs = {1, 3, 5, 5};
  std::vector<double> x = Ramp(75, 21);
  std::vector<double> dw = Ramp(6 * 1 * 3 * 3, 22);  // channel multiplier 2
  std::vector<double> pw = Ramp(4 * 3, 23);
  Shape dw_shape;
  std::vector<double> dw_expected =
      DirectConv(x, xs, dw, {6, 1, 3, 3}, {}, 3, {1, 1}, {1, 1, 1, 1}, {1, 1}, &dw_shape);
  Shape pw_shape;
  std::vector<double> pw_expected =
      DirectConv(x, xs, pw, {4, 3, 1, 1}, {}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, &pw_shape);
  auto out =
      MustRun(R"(g (float[1,3,5,5] x, float[6,1,3,3] dw, float[4,3,1,1] pw)
      => (float[1,6,5,5] d, float[1,4,5,5] p) {
    d = Conv<group = 3, auto_pad = "SAME_UPPER">(x, dw)
    p = Conv(x, pw)
  })",
              {{"x", F32(xs, x)}, {"dw", F32({6, 1, 3, 3}, dw)}, {"pw", F32({4, 3, 1, 1}, pw)}});
  ExpectValues(out["d"], dw_shape, dw_expected, 1e-4);
  ExpectValues(out["p"], pw_shape, pw_expected, 1e-4);
}

TEST(BaselineConvTest, OneDimensionalConv) {
  auto out = MustRun(R"(g (float[1,1,5] x, float[1,1,2] w) => (float[1,1,2] y) {
    y = Conv<strides = [2]>(x, w)
  })",
                     {{"x", F32({1, 1, 5}, {1, 2, 3, 4, 5})}, {"w", F32({1, 1, 2}, {1, -1})}});
  ExpectValues(out["y"], {1, 1, 2}, {-1, -1});
}

TEST(BaselineConvTest, ConvTransposeScattersEachInput) {
  // Stride 2, kernel 3, pads 1: out = 2 * (3 - 1) + 3 - 2 = 5 per dim.
  const std::vector<double> x = Ramp(2 * 3 * 3, 31);
  const std::vector<double> w = Ramp(2 * 2 * 3 * 3, 32);  // [Cin=2, Cout=2, 3, 3]
  std::vector<double> expected(2 * 5 * 5, 0.0);
  for (int co = 0; co < 2; ++co) {
    for (int ci = 0; ci < 2; ++ci) {
      for (int iy = 0; iy < 3; ++iy) {
        for (int ix = 0; ix < 3; ++ix) {
          for (int ky = 0; ky < 3; ++ky) {
            for (int kx = 0; kx < 3; ++kx) {
              const int oy = iy * 2 - 1 + ky;
              const int ox = ix * 2 - 1 + kx;
              if (oy < 0 || oy >= 5 || ox < 0 || ox >= 5) continue;
              expected[(co * 5 + oy) * 5 + ox] +=
                  static_cast<float>(x[(ci * 3 + iy) * 3 + ix]) *
                  static_cast<float>(w[((ci * 2 + co) * 3 + ky) * 3 + kx]);
            }
          }
        }
      }
    }
  }
  for (int co = 0; co < 2; ++co) {
    for (int i = 0; i < 25; ++i) expected[co * 25 + i] += co == 0 ? 0.5 : -0.5;
  }
  auto out = MustRun(
      R"(g (float[1,2,3,3] x, float[2,2,3,3] w, float[2] b) => (float[1,2,5,5] y) {
    y = ConvTranspose<strides = [2, 2], pads = [1, 1, 1, 1]>(x, w, b)
  })",
      {{"x", F32({1, 2, 3, 3}, x)}, {"w", F32({2, 2, 3, 3}, w)}, {"b", F32({2}, {0.5, -0.5})}});
  ExpectValues(out["y"], {1, 2, 5, 5}, expected, 1e-4);
}

TEST(BaselinePoolTest, MaxAverageAndGlobal) {
  // [1,1,4,4] with values 0..15.
  std::vector<double> x;
  for (int i = 0; i < 16; ++i) x.push_back(i);
  auto out = MustRun(R"(g (float[1,1,4,4] x) => (float[1,1,2,2] mx, int64[1,1,2,2] idx,
                                               float[1,1,2,2] avg, float[1,1,2,2] pad_avg,
                                               float[1,1,1,1] gap) {
    mx, idx = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)
    avg = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 0, 0]>(x)
    pad_avg = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 0, 0],
                          count_include_pad = 1>(x)
    gap = GlobalAveragePool(x)
  })",
                     {{"x", F32({1, 1, 4, 4}, x)}});
  ExpectValues(out["mx"], {1, 1, 2, 2}, {5, 7, 13, 15});
  ExpectValues(out["idx"], {1, 1, 2, 2}, {5, 7, 13, 15});
  // Window rows/cols: [-1,0,1] -> {0,1}; [1,2,3] -> {1,2,3}.
  ExpectValues(out["avg"], {1, 1, 2, 2},
               {(0 + 1 + 4 + 5) / 4.0, (1 + 2 + 3 + 5 + 6 + 7) / 6.0,
                (4 + 5 + 8 + 9 + 12 + 13) / 6.0, (5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15) / 9.0});
  ExpectValues(out["pad_avg"], {1, 1, 2, 2},
               {(0 + 1 + 4 + 5) / 9.0, (1 + 2 + 3 + 5 + 6 + 7) / 9.0,
                (4 + 5 + 8 + 9 + 12 + 13) / 9.0, (5 + 6 + 7 + 9 + 10 + 11 + 13 + 14 + 15) / 9.0});
  ExpectValues(out["gap"], {1, 1, 1, 1}, {7.5});
}

TEST(BaselinePoolTest, DilatedWindows) {
  std::vector<double> x;
  for (int i = 0; i < 25; ++i) x.push_back(i);
  auto out = MustRun(R"(g (float[1,1,5,5] x) => (float[1,1,3,3] mx, float[1,1,3,3] avg) {
    mx = MaxPool<kernel_shape = [2, 2], dilations = [2, 2], pads = [1, 1, 0, 0]>(x)
    avg = AveragePool<kernel_shape = [2, 2], dilations = [2, 2], pads = [1, 1, 0, 0]>(x)
  })",
                     {{"x", F32({1, 1, 5, 5}, x)}}, 19);
  // Window (oh, ow) takes rows oh-1, oh+1 and cols ow-1, ow+1 of those inside the input.
  std::vector<double> mx;
  std::vector<double> avg;
  for (int oh = 0; oh < 3; ++oh) {
    for (int ow = 0; ow < 3; ++ow) {
      double best = -1e9;
      double sum = 0;
      int count = 0;
      for (int r : {oh - 1, oh + 1}) {
        for (int c : {ow - 1, ow + 1}) {
          if (r < 0 || c < 0) continue;
          best = std::max(best, static_cast<double>(r * 5 + c));
          sum += r * 5 + c;
          ++count;
        }
      }
      mx.push_back(best);
      avg.push_back(sum / count);
    }
  }
  ExpectValues(out["mx"], {1, 1, 3, 3}, mx);
  ExpectValues(out["avg"], {1, 1, 3, 3}, avg);
}

TEST(BaselinePoolTest, MaxPoolCeilModeAndPadding) {
  auto out = MustRun(R"(g (float[1,1,1,5] x) => (float[1,1,1,3] y) {
    y = MaxPool<kernel_shape = [1, 2], strides = [1, 2], ceil_mode = 1>(x)
  })",
                     {{"x", F32({1, 1, 1, 5}, {1, 5, 2, 4, 3})}});
  ExpectValues(out["y"], {1, 1, 1, 3}, {5, 4, 3});
}

TEST(BaselineLayoutTest, ViewsTransposeAndExpand) {
  auto out = MustRun(R"(g (float[2,3] x) => (float[3,2] r, float[3,2] t, float[1,2,3] u,
                                            float[2,3] s, float[6,1] f, float[2,2,3] e) {
    shape = Constant<value = int64[2] {3, 2}>()
    r = Reshape(x, shape)
    t = Transpose<perm = [1, 0]>(x)
    zero = Constant<value = int64[1] {0}>()
    u = Unsqueeze(x, zero)
    s = Squeeze(u, zero)
    f = Flatten<axis = 2>(x)
    eshape = Constant<value = int64[3] {2, 1, 1}>()
    e = Expand(x, eshape)
  })",
                     {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ExpectValues(out["r"], {3, 2}, {1, 2, 3, 4, 5, 6});
  ExpectValues(out["t"], {3, 2}, {1, 4, 2, 5, 3, 6});
  ExpectValues(out["u"], {1, 2, 3}, {1, 2, 3, 4, 5, 6});
  ExpectValues(out["s"], {2, 3}, {1, 2, 3, 4, 5, 6});
  ExpectValues(out["f"], {6, 1}, {1, 2, 3, 4, 5, 6});
  ExpectValues(out["e"], {2, 2, 3}, {1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6});
}

TEST(BaselineLayoutTest, TransposeLargeTiledAnd4D) {
  // [64,96] -> [96,64] takes the tiled path; [2,3,4,5] perm [0,2,1,3] keeps rows contiguous.
  std::vector<double> a = Ramp(64 * 96, 41);
  std::vector<double> b = Ramp(120, 42);
  auto out = MustRun(R"(g (float[64,96] a, float[2,3,4,5] b) => (float[96,64] at, float[2,4,3,5] bt,
                                                               float[5,4,3,2] br) {
    at = Transpose(a)
    bt = Transpose<perm = [0, 2, 1, 3]>(b)
    br = Transpose(b)
  })",
                     {{"a", F32({64, 96}, a)}, {"b", F32({2, 3, 4, 5}, b)}});
  std::vector<double> at;
  for (int j = 0; j < 96; ++j) {
    for (int i = 0; i < 64; ++i) at.push_back(static_cast<float>(a[i * 96 + j]));
  }
  ExpectValues(out["at"], {96, 64}, at);
  std::vector<double> bt;
  for (int n = 0; n < 2; ++n) {
    for (int k = 0; k < 4; ++k) {
      for (int c = 0; c < 3; ++c) {
        for (int w = 0; w < 5; ++w)
          bt.push_back(static_cast<float>(b[((n * 3 + c) * 4 + k) * 5 + w]));
      }
    }
  }
  ExpectValues(out["bt"], {2, 4, 3, 5}, bt);
  std::vector<double> br;
  for (int w = 0; w < 5; ++w) {
    for (int k = 0; k < 4; ++k) {
      for (int c = 0; c < 3; ++c) {
        for (int n = 0; n < 2; ++n)
          br.push_back(static_cast<float>(b[((n * 3 + c) * 4 + k) * 5 + w]));
      }
    }
  }
  ExpectValues(out["br"], {5, 4, 3, 2}, br);
}

TEST(BaselineLayoutTest, ConcatSplitSlice) {
  auto out =
      MustRun(R"(g (float[2,2] a, float[2,1] b) => (float[2,3] c, float[2,2] s0, float[2,1] s1,
                                                         float[1,2] sl, float[2,1] rev) {
    c = Concat<axis = 1>(a, b)
    s0, s1 = Split<axis = 1, num_outputs = 2>(c)
    starts = Constant<value = int64[2] {1, 0}>()
    ends = Constant<value = int64[2] {2, 3}>()
    axes = Constant<value = int64[2] {0, 1}>()
    steps = Constant<value = int64[2] {1, 2}>()
    sl = Slice(c, starts, ends, axes, steps)
    rstart = Constant<value = int64[1] {-1}>()
    rend = Constant<value = int64[1] {-9223372036854775807}>()
    raxis = Constant<value = int64[1] {1}>()
    rstep = Constant<value = int64[1] {-2}>()
    rev = Slice(a, rstart, rend, raxis, rstep)
  })",
              {{"a", F32({2, 2}, {1, 2, 3, 4})}, {"b", F32({2, 1}, {5, 6})}}, 18);
  ExpectValues(out["c"], {2, 3}, {1, 2, 5, 3, 4, 6});
  ExpectValues(out["s0"], {2, 2}, {1, 2, 3, 4});
  ExpectValues(out["s1"], {2, 1}, {5, 6});
  ExpectValues(out["sl"], {1, 2}, {3, 6});
  ExpectValues(out["rev"], {2, 1}, {2, 4});
}

TEST(BaselineLayoutTest, SplitWithSizesInput) {
  auto out = MustRun(R"(g (int64[5] x) => (int64[2] a, int64[3] b) {
    sizes = Constant<value = int64[2] {2, 3}>()
    a, b = Split(x, sizes)
  })",
                     {{"x", Typed(DType::kI64, {5}, {1, 2, 3, 4, 5})}});
  ExpectValues(out["a"], {2}, {1, 2});
  ExpectValues(out["b"], {3}, {3, 4, 5});
}

TEST(BaselineLayoutTest, GatherAndGatherElements) {
  auto out = MustRun(R"(g (float[3,2] t, int64[2,2] i, int64[2] j, float[2,3] d, int64[2,2] k)
      => (float[2,2,2] g, float[3,2] g1, float[2,2] ge) {
    g = Gather(t, i)
    g1 = Gather<axis = 1>(t, j)
    ge = GatherElements<axis = 1>(d, k)
  })",
                     {{"t", F32({3, 2}, {1, 2, 3, 4, 5, 6})},
                      {"i", Typed(DType::kI64, {2, 2}, {0, 2, -1, 1})},
                      {"j", Typed(DType::kI64, {2}, {1, 0})},
                      {"d", F32({2, 3}, {1, 2, 3, 4, 5, 6})},
                      {"k", Typed(DType::kI64, {2, 2}, {2, 0, 1, -1})}});
  ExpectValues(out["g"], {2, 2, 2}, {1, 2, 5, 6, 5, 6, 3, 4});
  ExpectValues(out["g1"], {3, 2}, {2, 1, 4, 3, 6, 5});
  ExpectValues(out["ge"], {2, 2}, {3, 1, 5, 6});
}

TEST(BaselineLayoutTest, GatherOutOfRangeNamesTheNode) {
  Result<Ran> ran =
      TryRun(R"(g (float[3,2] t, int64[1] i) => (float[1,2] y) {
    y = Gather(t, i)
  })",
             {{"t", F32({3, 2}, {1, 2, 3, 4, 5, 6})}, {"i", Typed(DType::kI64, {1}, {3})}});
  ASSERT_FALSE(ran.ok());
  EXPECT_NE(ran.status().message().find("(Gather)"), std::string::npos) << ran.status().message();
  EXPECT_NE(ran.status().message().find("index 3 is out of range"), std::string::npos);
}

TEST(BaselineLayoutTest, TilePadTrilu) {
  auto out = MustRun(R"(g (float[2,2] x, int64 k) => (float[2,4] t, float[4,5] p, float[2,6] r,
                                                   float[2,4] e, float[2,2] u, float[2,2] l) {
    reps = Constant<value = int64[2] {1, 2}>()
    t = Tile(x, reps)
    pads = Constant<value = int64[4] {1, 2, 1, 1}>()
    value = Constant<value = float {9.0}>()
    p = Pad(x, pads, value)
    rpads = Constant<value = int64[4] {0, 2, 0, 2}>()
    r = Pad<mode = "reflect">(x, rpads)
    epads = Constant<value = int64[4] {0, 1, 0, 1}>()
    e = Pad<mode = "edge">(x, epads)
    u = Trilu(x)
    l = Trilu<upper = 0>(x, k)
  })",
                     {{"x", F32({2, 2}, {1, 2, 3, 4})}, {"k", Typed(DType::kI64, {}, {-1})}});
  ExpectValues(out["t"], {2, 4}, {1, 2, 1, 2, 3, 4, 3, 4});
  ExpectValues(out["p"], {4, 5}, {9, 9, 9, 9, 9, 9, 9, 1, 2, 9, 9, 9, 3, 4, 9, 9, 9, 9, 9, 9});
  ExpectValues(out["r"], {2, 6}, {1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4});
  ExpectValues(out["e"], {2, 4}, {1, 1, 2, 2, 3, 3, 4, 4});
  ExpectValues(out["u"], {2, 2}, {1, 2, 0, 4});
  ExpectValues(out["l"], {2, 2}, {0, 0, 3, 0});
}

TEST(BaselineLayoutTest, ResizeNearestLinearCubic) {
  auto out = MustRun(
      R"(g (float[1,1,2,2] x, float[1,1,1,4] row) => (float[1,1,4,4] n,
                                                                    float[1,1,4,4] l,
                                                                    float[1,1,1,8] a,
                                                                    float[1,1,1,2] c) {
    roi = Constant<value = float[0] {}>()
    scales = Constant<value = float[4] {1.0, 1.0, 2.0, 2.0}>()
    n = Resize<mode = "nearest">(x, roi, scales)
    l = Resize<mode = "linear">(x, roi, scales)
    sizes = Constant<value = int64[4] {1, 1, 1, 8}>()
    a = Resize<mode = "linear", coordinate_transformation_mode = "align_corners">(row, roi, , sizes)
    half = Constant<value = float[4] {1.0, 1.0, 1.0, 0.5}>()
    c = Resize<mode = "cubic", coordinate_transformation_mode = "asymmetric">(row, roi, half)
  })",
      {{"x", F32({1, 1, 2, 2}, {1, 2, 3, 4})}, {"row", F32({1, 1, 1, 4}, {0, 1, 2, 3})}}, 18);
  ExpectValues(out["n"], {1, 1, 4, 4}, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  // half_pixel linear: source coordinates -0.25, 0.25, 0.75, 1.25, clamped to the edges.
  const std::vector<double> w = {1, 1.25, 1.75, 2};
  std::vector<double> linear;
  for (double rowv : {0.0, 0.25, 0.75, 1.0}) {
    for (double colv : w) linear.push_back(colv + 2 * rowv);
  }
  ExpectValues(out["l"], {1, 1, 4, 4}, linear);
  std::vector<double> aligned;
  for (int j = 0; j < 8; ++j) aligned.push_back(j * 3.0 / 7.0);
  ExpectValues(out["a"], {1, 1, 1, 8}, aligned);
  // asymmetric at scale 0.5: x = 0 and 2, integer positions, so cubic returns the samples.
  ExpectValues(out["c"], {1, 1, 1, 2}, {0, 2});
}

TEST(BaselineLayoutTest, ShapeRangeConstantOfShapeAtRunTime) {
  planner::ImportOptions no_folding;
  no_folding.max_fold_elements = 0;
  auto out = MustRun(R"(g (float[2,3] x) => (int64[2] s, float[4] r, int64[2,2] c) {
    s = Shape(x)
    start = Constant<value = float {1.0}>()
    limit = Constant<value = float {3.0}>()
    delta = Constant<value = float {0.5}>()
    r = Range(start, limit, delta)
    cshape = Constant<value = int64[2] {2, 2}>()
    c = ConstantOfShape<value = int64[1] {7}>(cshape)
  })",
                     {{"x", F32({2, 3}, {1, 2, 3, 4, 5, 6})}}, 17, no_folding);
  ExpectValues(out["s"], {2}, {2, 3});
  ExpectValues(out["r"], {4}, {1, 1.5, 2, 2.5});
  ExpectValues(out["c"], {2, 2}, {7, 7, 7, 7});
}

TEST(BaselineLayoutTest, DropoutIsIdentityAtInference) {
  auto out = MustRun(R"(g (float[3] x) => (float[3] y, bool[3] m) { y, m = Dropout(x) })",
                     {{"x", F32({3}, {1, 2, 3})}});
  ExpectValues(out["y"], {3}, {1, 2, 3});
  ExpectValues(out["m"], {3}, {1, 1, 1});
}

TEST(BaselineExecutorTest, HalfPrecisionFeedsAndOutputs) {
  planner::ImportOptions f16;
  f16.compute_dtype = DType::kF16;
  Result<Graph> g = planner::ImportOnnxText(
      Model(17, "g (float[3] x, float[3] y) => (float[3] z) { z = Add(x, y) }"), f16);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  TensorMap feeds;
  feeds.emplace(g->FindValue("x"), Typed(DType::kF16, {3}, {1, 2.5, -3}));
  feeds.emplace(g->FindValue("y"), Typed(DType::kF16, {3}, {0.5, 0.25, 1}));
  auto executor = BaselineExecutor::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  TensorMap outputs;
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  const Tensor& z = outputs.at(g->FindValue("z"));
  EXPECT_EQ(z.dtype(), DType::kF16);
  ExpectValues(z, {3}, {1.5, 2.75, -2});
}

TEST(BaselineExecutorTest, WeightsFromTheGraphAndFedWeightsWin) {
  Result<Graph> g = planner::ImportOnnxText(Model(17, R"(g (float[2,16] x) => (float[2,16] y)
      <float[16] w = {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> {
    y = Mul(x, w)
  })"),
                                            {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto executor = BaselineExecutor::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  TensorMap feeds;
  std::vector<double> ones(32, 1.0);
  feeds.emplace(g->FindValue("x"), F32({2, 16}, ones));
  TensorMap outputs;
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_DOUBLE_EQ(outputs.at(g->FindValue("y")).GetDouble(17), 2.0);
  feeds.emplace(g->FindValue("w"), F32({16}, std::vector<double>(16, -1.0)));
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_DOUBLE_EQ(outputs.at(g->FindValue("y")).GetDouble(17), -1.0);
  feeds.erase(g->FindValue("w"));
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_DOUBLE_EQ(outputs.at(g->FindValue("y")).GetDouble(17), 2.0);
}

TEST(BaselineExecutorTest, MissingAndMisshapenFeedsAreErrors) {
  Result<Graph> g = planner::ImportOnnxText(
      Model(17, "g (float[3] x, float[3] y) => (float[3] z) { z = Add(x, y) }"), {});
  ASSERT_TRUE(g.ok());
  auto executor = BaselineExecutor::Create(*g);
  ASSERT_TRUE(executor.ok());
  TensorMap feeds;
  feeds.emplace(g->FindValue("x"), F32({3}, {1, 2, 3}));
  TensorMap outputs;
  Status missing = (*executor)->Run(feeds, &outputs);
  EXPECT_EQ(missing.message(), "input 'y' is not fed");
  feeds.emplace(g->FindValue("y"), F32({1}, {1}));
  Status wrong = (*executor)->Run(feeds, &outputs);
  EXPECT_EQ(wrong.message(), "feed for 'y' is f32[1], expected f32[3]");
}

TEST(BaselineExecutorTest, UnsupportedNodeIsNamed) {
  Result<Graph> g =
      planner::ImportOnnxText(Model(17, "g (float[3] x) => (float[3] y) { y = Celu(x) }"), {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto executor = BaselineExecutor::Create(*g);
  ASSERT_FALSE(executor.ok());
  EXPECT_NE(executor.status().message().find("(Celu)"), std::string::npos)
      << executor.status().message();
}

TEST(BaselineExecutorTest, BuffersAreReusedAcrossAChain) {
  // A long chain of elementwise ops: each intermediate dies at once, so the pool recycles.
  std::string body = "g (float[1024] x) => (float[1024] y) {\n  t0 = Relu(x)\n";
  for (int i = 1; i < 50; ++i) body += fmt::format("  t{} = Neg(t{})\n", i, i - 1);
  body += "  y = Identity(t49)\n}";
  std::vector<double> x = Ramp(1024, 51);
  auto out = MustRun(body, {{"x", F32({1024}, x)}});
  std::vector<double> expected;
  for (double v : x) expected.push_back(-std::max(0.0, static_cast<double>(static_cast<float>(v))));
  ExpectValues(out["y"], {1024}, expected);
}

TEST(BaselineExecutorTest, ThreadCountsGiveTheSameAnswer) {
  Result<Graph> g = planner::ImportOnnxText(Model(17, R"(g (float[256,512] a, float[512,128] b)
      => (float[256,128] c) {
    m = MatMul(a, b)
    c = Softmax(m)
  })"),
                                            {});
  ASSERT_TRUE(g.ok());
  Result<TensorMap> feeds = MakeRandomFeeds(*g, FeedOptions{});
  ASSERT_TRUE(feeds.ok());
  TensorMap one;
  TensorMap all;
  auto serial = BaselineExecutor::Create(*g, BaselineOptions{1});
  auto parallel = BaselineExecutor::Create(*g, BaselineOptions{0});
  ASSERT_TRUE(serial.ok() && parallel.ok());
  ASSERT_TRUE((*serial)->Run(*feeds, &one).ok());
  ASSERT_TRUE((*parallel)->Run(*feeds, &all).ok());
  const Tensor& a = one.at(g->outputs[0]);
  const Tensor& b = all.at(g->outputs[0]);
  for (int64_t i = 0; i < a.elements(); ++i) ASSERT_NEAR(a.GetDouble(i), b.GetDouble(i), 1e-5);
  EXPECT_FALSE(BaselineExecutor::Create(*g, BaselineOptions{-1}).ok());
}

TEST(BaselineExecutorTest, SplitProductsMatchOneThread) {
  // Large enough that every product and convolution is split across the team: Gemm with each
  // transpose (column and row splits), batched MatMul with fewer batches than threads, grouped
  // ConvTranspose over two images.
  Result<Graph> g = planner::ImportOnnxText(Model(17, R"(g (float[96,256] a, float[512,256] b,
      float[256,300] at, float[256,96] bt, float[2,200,160] ba, float[2,160,300] bb,
      float[2,4,9,9] x, float[4,3,3,3] w) => (float[96,512] c1, float[300,96] c2,
      float[2,200,300] c3, float[2,6,19,19] c4) {
    c1 = Gemm<transB = 1>(a, b)
    c2 = Gemm<transA = 1>(at, bt)
    c3 = MatMul(ba, bb)
    c4 = ConvTranspose<strides = [2, 2], group = 2>(x, w)
  })"),
                                            {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  FeedOptions feed_options;
  feed_options.distribution = Distribution::kUniform;
  Result<TensorMap> feeds = MakeRandomFeeds(*g, feed_options);
  ASSERT_TRUE(feeds.ok());
  auto serial = BaselineExecutor::Create(*g, BaselineOptions{1});
  auto parallel = BaselineExecutor::Create(*g, BaselineOptions{4});
  ASSERT_TRUE(serial.ok() && parallel.ok());
  TensorMap one;
  TensorMap many;
  ASSERT_TRUE((*serial)->Run(*feeds, &one).ok());
  ASSERT_TRUE((*parallel)->Run(*feeds, &many).ok());
  for (int id : g->outputs) {
    const Tensor& a = one.at(id);
    const Tensor& b = many.at(id);
    ASSERT_EQ(a.shape(), b.shape());
    for (int64_t i = 0; i < a.elements(); ++i) {
      ASSERT_NEAR(a.GetDouble(i), b.GetDouble(i), 1e-4) << g->values[id].name << "[" << i << "]";
    }
  }
}

// A whole model on random feeds: every output finite and of its declared shape, one time per node.
void RunWholeModel(const std::string& file, double weight_scale) {
  Result<Graph> g = planner::ImportOnnxFile(planner::import_testing::TestModelPath(file),
                                            planner::ImportOptions{});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  FeedOptions options;
  options.seed = 5;
  options.scale = weight_scale;
  Result<TensorMap> feeds = MakeRandomFeeds(*g, options);
  ASSERT_TRUE(feeds.ok()) << feeds.status().ToString();
  auto executor = BaselineExecutor::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  TensorMap outputs;
  std::vector<double> node_seconds;
  Status status = (*executor)->RunTimed(*feeds, &outputs, &node_seconds);
  ASSERT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(node_seconds.size(), g->nodes.size());
  for (double s : node_seconds) EXPECT_GE(s, 0.0);
  ASSERT_EQ(outputs.size(), g->outputs.size());
  for (int id : g->outputs) {
    const Tensor& t = outputs.at(id);
    EXPECT_EQ(t.shape(), g->values[id].shape);
    EXPECT_EQ(t.dtype(), g->values[id].dtype);
    for (int64_t i = 0; i < t.elements(); ++i) {
      ASSERT_TRUE(std::isfinite(t.GetDouble(i))) << g->values[id].name << "[" << i << "]";
    }
  }
}

TEST(BaselineModelTest, Gpt2Small) { RunWholeModel("gpt2-small_b1s128.onnx", 0.02); }

TEST(BaselineModelTest, Resnet50) { RunWholeModel("resnet50_b8.onnx", 0.05); }

}  // namespace
}  // namespace kfleet::runtime
