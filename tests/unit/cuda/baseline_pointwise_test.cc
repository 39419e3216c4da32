// The CUDA baseline's elementwise ops against the float64 reference, and the executor itself
// (feeds, timing, custom ops, errors).
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/device.h"
#include "cuda_testing.h"
#include "planner/onnx_import.h"
#include "runtime/feeds.h"
#include "runtime/tensor.h"

namespace kfleet::cuda {
namespace {

using testing::Model;
using testing::RunAndCompare;
using testing::Tolerance;

// A floating type as ONNX text spells it and as Cast's `to` codes it.
struct FloatType {
  std::string_view name;
  int onnx = 1;
};
constexpr FloatType kFloatTypes[] = {{"float", 1}, {"float16", 10}, {"bfloat16", 16}};

// For outputs whose largest element is up to ~8 times their rms (products and quotients of
// normal draws): one f16 / bf16 rounding costs up to 2^-11 / 2^-8 of an element, so twice the
// default bound relative to the rms.
constexpr Tolerance kWideRange{1e-5, 4e-3, 3.2e-2};

// `body` with $T replaced by the type's name and $C by its Cast code.
std::string ForType(std::string body, const FloatType& type) {
  for (size_t at = body.find("$T"); at != std::string::npos; at = body.find("$T", at)) {
    body.replace(at, 2, type.name);
  }
  const std::string code = std::to_string(type.onnx);
  for (size_t at = body.find("$C"); at != std::string::npos; at = body.find("$C", at)) {
    body.replace(at, 2, code);
  }
  return body;
}

void ExpectMatches(const std::string& body, const Tolerance& tolerance = {}, int opset = 17) {
  Result<testing::Checked> checked = RunAndCompare(Model(body, opset), tolerance);
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
}

runtime::Tensor F32(planner::Shape shape, const std::vector<double>& values) {
  runtime::Tensor t(planner::DType::kF32, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.elements()), values.size());
  for (size_t i = 0; i < values.size() && static_cast<int64_t>(i) < t.elements(); ++i) {
    t.SetDouble(static_cast<int64_t>(i), values[i]);
  }
  return t;
}

Result<planner::Graph> Import(std::string_view body, int opset = 17) {
  return planner::ImportOnnxText(Model(body, opset), {});
}

// ---- Elementwise ops ----

TEST(CudaPointwiseTest, UnaryMathAtEveryFloatType) {
  KF_REQUIRE_GPU();
  // 123 elements: vector groups and a scalar tail at every width. Each output is one rounding
  // away from the reference (Abs, Mul by 0.25 are exact); inputs of Exp and Reciprocal are
  // bounded so no output reaches more than a few times its rms.
  const std::string body = R"(g ($T[3,41] x) => ($T[3,41] y_neg, $T[3,41] y_abs, $T[3,41] y_relu,
      $T[3,41] y_exp, $T[3,41] y_log, $T[3,41] y_sqrt, $T[3,41] y_recip, $T[3,41] y_erf,
      $T[3,41] y_tanh, $T[3,41] y_sig, $T[3,41] y_cos, $T[3,41] y_sin, $T[3,41] y_softplus,
      $T[3,41] y_hswish, $T[3,41] y_leaky, $T[3,41] y_hsig) {
    one_f = Constant<value = float {1.0}>()
    one = Cast<to = $C>(one_f)
    quarter_f = Constant<value = float {0.25}>()
    quarter = Cast<to = $C>(quarter_f)
    y_neg = Neg(x)
    y_abs = Abs(x)
    y_relu = Relu(x)
    xq = Mul(x, quarter)
    y_exp = Exp(xq)
    ax = Abs(x)
    ax1 = Add(ax, one)
    y_log = Log(ax1)
    y_sqrt = Sqrt(ax)
    y_recip = Reciprocal(ax1)
    y_erf = Erf(x)
    y_tanh = Tanh(x)
    y_sig = Sigmoid(x)
    y_cos = Cos(x)
    y_sin = Sin(x)
    y_softplus = Softplus(x)
    y_hswish = HardSwish(x)
    y_leaky = LeakyRelu<alpha = 0.1>(x)
    y_hsig = HardSigmoid<alpha = 0.3, beta = 0.4>(x)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaPointwiseTest, GeluBothFormsAtEveryFloatType) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[5,13] x) => ($T[5,13] exact, $T[5,13] approx) {
    exact = Gelu(x)
    approx = Gelu<approximate = "tanh">(x)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type), {}, 20);
  }
}

TEST(CudaPointwiseTest, ArithmeticBroadcastsAtEveryFloatType) {
  KF_REQUIRE_GPU();
  // [3,1,7] with [5,1]; a scalar; a row of constants; a column of constant divisors.
  const std::string body = R"(g ($T[3,1,7] a, $T[5,1] b, $T[2,3,8] c, $T s)
      => ($T[3,5,7] add, $T[2,3,8] sub, $T[2,3,8] mul, $T[3,5,7] div, $T[3,5,7] rsub) {
    add = Add(a, b)
    sub = Sub(c, s)
    row_f = Constant<value = float[8] {0.5, -1.5, 2.0, 0.25, -0.75, 1.0, -2.0, 1.25}>()
    row = Cast<to = $C>(row_f)
    mul = Mul(c, row)
    col_f = Constant<value = float[5,1] {1.5, -2.0, 0.75, 3.0, -1.25}>()
    col = Cast<to = $C>(col_f)
    div = Div(a, col)
    rsub = Sub(b, a)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type), kWideRange);
  }
}

TEST(CudaPointwiseTest, VectorizedPathsAndTails) {
  KF_REQUIRE_GPU();
  // Same-shape operands of sizes that are and are not multiples of every vector width, one
  // large enough for a grid-stride loop; row broadcasts whose rows are (64) and are not (63)
  // multiples of the vector width. Max and Where are exact; Add rounds once.
  const std::string body = R"(g ($T[8] a8, $T[8] b8, $T[4099] a, $T[4099] b, $T[257,1031] x,
      $T[257,1031] y, bool[257,1031] p, $T[129,64] r, $T[64] v, $T[129,63] q, $T[63] w)
      => ($T[8] s8, $T[4099] s, $T[4099] m, $T[257,1031] big_max, $T[257,1031] big_sel,
          $T[129,64] row_max, $T[129,63] odd_max, $T[129,64] row_add) {
    s8 = Add(a8, b8)
    s = Add(a, b)
    m = Max(a, b)
    big_max = Max(x, y)
    big_sel = Where(p, x, y)
    row_max = Max(r, v)
    odd_max = Max(q, w)
    row_add = Add(r, v)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaPointwiseTest, MaxMinBinaryAndVariadic) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[4,9] x, $T[9] y, $T[1] z, $T[4,1] u)
      => ($T[4,9] mx, $T[4,9] mn, $T[4,9] mx3, $T[4,9] mn4, $T[4,9] one) {
    mx = Max(x, y)
    mn = Min(y, x)
    mx3 = Max(y, x, z)
    mn4 = Min(z, u, y, x)
    one = Max(x)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaPointwiseTest, PowForms) {
  KF_REQUIRE_GPU();
  // Constant exponents 2 and 0.5 take the square and square-root kernels, 1.7 powf; an int64
  // exponent (drawn from [0, 4)) and an integer base go through their own forms.
  const std::string body = R"(g ($T[6,11] x, $T[6,11] e, int64[11] k, int64[6,11] i, int64[6,11] j)
      => ($T[6,11] sq, $T[6,11] rt, $T[6,11] gen, $T[6,11] by_tensor, $T[6,11] by_int,
          int64[6,11] ints) {
    two_f = Constant<value = float {2.0}>()
    two = Cast<to = $C>(two_f)
    half_f = Constant<value = float {0.5}>()
    half = Cast<to = $C>(half_f)
    other_f = Constant<value = float {1.7}>()
    other = Cast<to = $C>(other_f)
    sq = Pow(x, two)
    ax = Abs(x)
    rt = Pow(ax, half)
    gen = Pow(ax, other)
    th = Tanh(e)
    by_tensor = Pow(ax, th)
    by_int = Pow(x, k)
    ints = Pow(i, j)
  })";
  ExpectMatches(ForType(body, kFloatTypes[0]));
  // In half precision the integer powers take a base of |x| / 4 (exact), so x^3 does not reach
  // many times the output's rms.
  const std::string half_body = R"(g ($T[6,11] x, int64[11] k) => ($T[6,11] sq, $T[6,11] rt,
                                                               $T[6,11] by_int) {
    two_f = Constant<value = float {2.0}>()
    two = Cast<to = $C>(two_f)
    half_f = Constant<value = float {0.5}>()
    half = Cast<to = $C>(half_f)
    quarter_f = Constant<value = float {0.25}>()
    quarter = Cast<to = $C>(quarter_f)
    sq = Pow(x, two)
    ax = Abs(x)
    rt = Pow(ax, half)
    xq = Mul(x, quarter)
    by_int = Pow(xq, k)
  })";
  for (const FloatType& type : {kFloatTypes[1], kFloatTypes[2]}) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(half_body, type), kWideRange);
  }
}

TEST(CudaPointwiseTest, IntegerArithmeticAndUnary) {
  KF_REQUIRE_GPU();
  // Integers are drawn from [0, 4); divisors are shifted away from zero (the reference rejects
  // a division by zero). int32 values are held as i64 and come back as int32.
  ExpectMatches(R"(g (int64[5,7] a, int64[7] b, int32[5,7] c, int32[5,7] d)
      => (int64[5,7] add, int64[5,7] sub, int64[5,7] mul, int64[5,7] div, int64[5,7] neg,
          int64[5,7] abs_, int64[5,7] relu, int64[5,7] mx, int64[5,7] mn, int32[5,7] sum32) {
    add = Add(a, b)
    sub = Sub(b, a)
    mul = Mul(a, b)
    one = Constant<value = int64 {1}>()
    b1 = Add(b, one)
    div = Div(sub, b1)
    neg = Neg(sub)
    abs_ = Abs(sub)
    relu = Relu(sub)
    mx = Max(a, b)
    mn = Min(a, b)
    sum32 = Add(c, d)
  })");
}

TEST(CudaPointwiseTest, ComparisonsLogicWhereAndNot) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[4,9] a, $T[9] b, bool[4,9] p, bool[9] q, bool[3,1,7] c,
      $T[5,7] x, $T y, int64[4,9] i, int64[4,9] j)
      => (bool[4,9] eq, bool[4,9] lt, bool[4,9] gt, bool[4,9] le, bool[4,9] ge, bool[4,9] and_,
          bool[4,9] or_, bool[4,9] not_, $T[3,5,7] sel, bool[4,9] nan, bool[4,9] ieq,
          bool[4,9] ilt, int64[4,9] isel, bool[4,9] bsel, bool[4,9] beq) {
    eq = Equal(a, a)
    lt = Less(a, b)
    gt = Greater(a, b)
    le = LessOrEqual(b, a)
    ge = GreaterOrEqual(a, b)
    and_ = And(p, q)
    or_ = Or(p, q)
    not_ = Not(p)
    sel = Where(c, x, y)
    l = Log(a)
    nan = IsNaN(l)
    ieq = Equal(i, j)
    ilt = Less(i, j)
    isel = Where(p, i, j)
    bsel = Where(p, q, p)
    beq = Equal(p, q)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaPointwiseTest, CastBetweenFloatsIntsAndBool) {
  KF_REQUIRE_GPU();
  // Floats to integers truncate (and wrap to int32); to f16 / bf16 they round once, which the
  // reference (it keeps doubles) sees as that dtype's rounding error.
  ExpectMatches(R"(g (float[7,9] x, float16[7,9] h, int64[7,9] i, bool[7,9] p)
      => (int64[7,9] f_i64, int32[7,9] f_i32, bool[7,9] f_bool, float16[7,9] f_f16,
          bfloat16[7,9] f_bf16, float[7,9] h_f32, int64[7,9] h_i64, bfloat16[7,9] h_bf16,
          float[7,9] i_f32, float16[7,9] i_f16, bool[7,9] i_bool, int32[7,9] i_i32,
          float[7,9] p_f32, int64[7,9] p_i64, bfloat16[7,9] p_bf16, double[7,9] f_f64) {
    f_i64 = Cast<to = 7>(x)
    f_i32 = Cast<to = 6>(x)
    f_bool = Cast<to = 9>(x)
    f_f16 = Cast<to = 10>(x)
    f_bf16 = Cast<to = 16>(x)
    h_f32 = Cast<to = 1>(h)
    h_i64 = Cast<to = 7>(h)
    h_bf16 = Cast<to = 16>(h)
    i_f32 = Cast<to = 1>(i)
    i_f16 = Cast<to = 10>(i)
    i_bool = Cast<to = 9>(i)
    i_i32 = Cast<to = 6>(i)
    p_f32 = Cast<to = 1>(p)
    p_i64 = Cast<to = 7>(p)
    p_bf16 = Cast<to = 16>(p)
    f_f64 = Cast<to = 11>(x)
  })");
}

TEST(CudaPointwiseTest, ClipWithBoundsAndWithout) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[6,10] x, int64[6,10] i) => ($T[6,10] both, $T[6,10] low,
                                                              $T[6,10] high, int64[6,10] ints) {
    lo_f = Constant<value = float {-0.5}>()
    lo = Cast<to = $C>(lo_f)
    hi_f = Constant<value = float {0.75}>()
    hi = Cast<to = $C>(hi_f)
    both = Clip(x, lo, hi)
    low = Clip(x, lo)
    high = Clip(x, , hi)
    ilo = Constant<value = int64 {1}>()
    ihi = Constant<value = int64 {2}>()
    ints = Clip(i, ilo, ihi)
  })";
  for (const FloatType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaPointwiseTest, DoublesAreHeldAsFloats) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (double[3,5] x, double[5] y) => (double[3,5] z, double[3,5] t) {
    z = Add(x, y)
    t = Tanh(z)
  })");
}

// ---- The executor ----

TEST(CudaBaselineExecutorTest, SetFeedsLaunchFetchMatchesRun) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = Import(R"(g (float[16,33] x, float[33] b) => (float[16,33] y) {
    s = Add(x, b)
    t = Tanh(s)
    y = Mul(t, x)
  })");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<runtime::TensorMap> feeds = runtime::MakeRandomFeeds(*g, {});
  ASSERT_TRUE(feeds.ok()) << feeds.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  runtime::TensorMap run;
  ASSERT_TRUE((*executor)->Run(*feeds, &run).ok());
  runtime::TensorMap launched;
  ASSERT_TRUE((*executor)->SetFeeds(*feeds).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*executor)->Launch().ok());
  ASSERT_TRUE((*executor)->FetchOutputs(&launched).ok());
  const int y = g->FindValue("y");
  ASSERT_EQ(run.count(y), 1u);
  ASSERT_EQ(launched.count(y), 1u);
  EXPECT_TRUE(runtime::BitwiseEqual(run.at(y), launched.at(y)));
  EXPECT_GT((*executor)->DeviceBytes(), 0);
}

TEST(CudaBaselineExecutorTest, RunTimedGivesOneTimePerNode) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = Import(R"(g (float[64,128] x) => (float[128,64] y) {
    a = Relu(x)
    b = Exp(a)
    y = Transpose(b)
  })");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<runtime::TensorMap> feeds = runtime::MakeRandomFeeds(*g, {});
  ASSERT_TRUE(feeds.ok());
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  runtime::TensorMap timed;
  std::vector<double> seconds;
  for (int round = 0; round < 2; ++round) {
    const Status status = (*executor)->RunTimed(*feeds, &timed, &seconds);
    ASSERT_TRUE(status.ok()) << status.ToString();
    ASSERT_EQ(seconds.size(), g->nodes.size());
    for (double s : seconds) {
      EXPECT_GE(s, 0.0);
      EXPECT_LT(s, 1.0);
    }
  }
  runtime::TensorMap run;
  ASSERT_TRUE((*executor)->Run(*feeds, &run).ok());
  const int y = g->FindValue("y");
  EXPECT_TRUE(runtime::BitwiseEqual(run.at(y), timed.at(y)));
}

TEST(CudaBaselineExecutorTest, CustomOpGetsDevicePointersAndFeedsDownstream) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = Import(R"(g (float[2,3] x) => (float[2,3] z) {
    y = Relu(x)
    z = Neg(y)
  })");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  int calls = 0;
  bool on_device = false;
  runtime::BaselineOptions options;
  // Node 0 (Relu) becomes a device-to-device copy: z = -x proves its output was used.
  options.custom_ops[0] = [&](const std::vector<runtime::CustomOpTensor>& inputs,
                              const std::vector<runtime::CustomOpTensor>& outputs) -> Status {
    ++calls;
    if (inputs.size() != 1 || outputs.size() != 1 || inputs[0].data == nullptr ||
        outputs[0].data == nullptr || inputs[0].shape == nullptr) {
      return Internal("the custom op got the wrong tensors");
    }
    if (inputs[0].dtype != planner::DType::kF32 || *inputs[0].shape != planner::Shape{2, 3}) {
      return Internal("the custom op got the wrong dtype or shape");
    }
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, inputs[0].data) != cudaSuccess) {
      return Internal("cudaPointerGetAttributes failed");
    }
    on_device = attributes.type == cudaMemoryTypeDevice;
    if (cudaMemcpy(outputs[0].data, inputs[0].data, 6 * sizeof(float), cudaMemcpyDeviceToDevice) !=
        cudaSuccess) {
      return Internal("cudaMemcpy failed");
    }
    return Status::Ok();
  };
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g, options);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  runtime::TensorMap feeds;
  feeds.emplace(g->FindValue("x"), F32({2, 3}, {1, -2, 3, -4, 5, -6}));
  runtime::TensorMap outputs;
  const Status status = (*executor)->Run(feeds, &outputs);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(on_device);
  const runtime::Tensor& z = outputs.at(g->FindValue("z"));
  const std::vector<double> expected = {-1, 2, -3, 4, -5, 6};
  for (int64_t i = 0; i < z.elements(); ++i) {
    EXPECT_EQ(z.GetDouble(i), expected[static_cast<size_t>(i)]) << "element " << i;
  }
}

TEST(CudaBaselineExecutorTest, UnsupportedNodesAreNamed) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> celu = Import("g (float[3] x) => (float[3] y) { y = Celu(x) }");
  ASSERT_TRUE(celu.ok()) << celu.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*celu);
  ASSERT_FALSE(executor.ok());
  EXPECT_NE(executor.status().message().find("(Celu)"), std::string::npos)
      << executor.status().message();

  Result<planner::Graph> training = Import(R"(g (float[3] x, bool training) => (float[3] y) {
    y = Dropout(x, , training)
  })");
  ASSERT_TRUE(training.ok()) << training.status().ToString();
  executor = CudaBaseline::Create(*training);
  ASSERT_FALSE(executor.ok());
  EXPECT_NE(executor.status().message().find("(Dropout)"), std::string::npos)
      << executor.status().message();
  EXPECT_NE(executor.status().message().find("no CUDA baseline kernel"), std::string::npos)
      << executor.status().message();
}

TEST(CudaBaselineExecutorTest, MissingAndMisshapenFeedsAreTheCpuMessages) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = Import("g (float[3] x, float[3] y) => (float[3] z) { z = Add(x, y) }");
  ASSERT_TRUE(g.ok());
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  runtime::TensorMap feeds;
  feeds.emplace(g->FindValue("x"), F32({3}, {1, 2, 3}));
  runtime::TensorMap outputs;
  EXPECT_EQ((*executor)->Run(feeds, &outputs).message(), "input 'y' is not fed");
  EXPECT_FALSE((*executor)->Launch().ok());
  feeds.emplace(g->FindValue("y"), F32({1}, {1}));
  EXPECT_EQ((*executor)->Run(feeds, &outputs).message(), "feed for 'y' is f32[1], expected f32[3]");
  feeds.erase(g->FindValue("y"));
  feeds.emplace(g->FindValue("y"), F32({3}, {10, 20, 30}));
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_EQ(outputs.at(g->FindValue("z")).GetDouble(2), 33.0);
}

TEST(CudaBaselineExecutorTest, WeightsFromTheGraphAndFedWeightsWin) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = Import(R"(g (float[2,16] x) => (float[2,16] y)
      <float[16] w = {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> {
    y = Mul(x, w)
  })");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  EXPECT_GE((*executor)->DeviceBytes(), static_cast<int64_t>(16 * sizeof(float)));
  runtime::TensorMap feeds;
  feeds.emplace(g->FindValue("x"), F32({2, 16}, std::vector<double>(32, 1.0)));
  runtime::TensorMap outputs;
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_EQ(outputs.at(g->FindValue("y")).GetDouble(17), 2.0);
  feeds.emplace(g->FindValue("w"), F32({16}, std::vector<double>(16, -1.0)));
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_EQ(outputs.at(g->FindValue("y")).GetDouble(17), -1.0);
  feeds.erase(g->FindValue("w"));
  ASSERT_TRUE((*executor)->Run(feeds, &outputs).ok());
  EXPECT_EQ(outputs.at(g->FindValue("y")).GetDouble(17), 2.0);
}

}  // namespace
}  // namespace kfleet::cuda
