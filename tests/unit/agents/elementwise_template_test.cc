#include "agents/elementwise_template.h"

#include <gtest/gtest.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::Evaluator;
using testing::ExpectRenderedKernelPasses;
using testing::ModelSpecs;
using testing::Spec;
using testing::SpecFromText;

// GELU as older exports write it: x * 0.5 * (1 + erf(x / sqrt(2))).
constexpr const char* kGeluErf = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,128,3072] in0) => (float[1,128,3072] out0) {
      sqrt2 = Constant <value = float {1.4142135}> ()
      one = Constant <value = float {1.0}> ()
      half = Constant <value = float {0.5}> ()
      a = Div (in0, sqrt2)
      b = Erf (a)
      c = Add (b, one)
      d = Mul (in0, c)
      out0 = Mul (d, half)
    })";

// GPT-2's tanh GELU, eight ops.
constexpr const char* kGeluTanh = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,128,3072] in0) => (float[1,128,3072] out0) {
      three = Constant <value = float {3.0}> ()
      c = Constant <value = float {0.044715}> ()
      s = Constant <value = float {0.7978845608028654}> ()
      one = Constant <value = float {1.0}> ()
      half = Constant <value = float {0.5}> ()
      h = Mul (in0, half)
      p = Pow (in0, three)
      t1 = Mul (p, c)
      t2 = Add (in0, t1)
      t3 = Mul (t2, s)
      t4 = Tanh (t3)
      t5 = Add (t4, one)
      out0 = Mul (h, t5)
    })";

// Operands broadcast along different dims: the strided path.
constexpr const char* kBroadcast = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[8,1,16] in0, float[1,32,1] in1, float[16] in2) => (float[8,32,16] out0) {
      a = Add (in0, in1)
      b = Relu (a)
      out0 = Mul (b, in2)
    })";

// A bias reshaped to a higher rank before it broadcasts, then a comparison feeding Where. (The
// comparison is against a constant: x > in1 would flip where float rounding of in0 + in1 differs
// from the float64 reference's.)
constexpr const char* kReshapedBiasWhere = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,64,256] in0, float[256] in1) => (float[2,64,256] out0) {
      shape = Constant <value = int64[3] {1, 1, 256}> ()
      tenth = Constant <value = float {0.1}> ()
      zero = Constant <value = float {0.0}> ()
      bias = Reshape (in1, shape)
      x = Add (in0, bias)
      pos = Greater (x, zero)
      small = Mul (x, tenth)
      out0 = Where (pos, x, small)
    })";

// Two outputs of different dtypes written in one pass.
constexpr const char* kTwoOutputs = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[64,300] in0, float[64,300] in1) => (float[64,300] out0, bool[64,300] out1) {
      zero = Constant <value = float {0.0}> ()
      s = Add (in0, in1)
      out0 = Tanh (s)
      out1 = Greater (s, zero)
    })";

// Every op the chain compiles, each on one shared value (so the chain is one fusion group).
constexpr const char* kOpZoo = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[16,333] in0, float[16,333] in1, bool[16,333] in2)
      => (float[16,333] o0, float[16,333] o1, float[16,333] o2, float[16,333] o3,
          float[16,333] o4, float[16,333] o5, float[16,333] o6, float[16,333] o7,
          float[16,333] o8, float[16,333] o9, float[16,333] o10, float[16,333] o11,
          float[16,333] o12, float[16,333] o13, float[16,333] o14, float[16,333] o15,
          float[16,333] o16, float[16,333] o17, bool[16,333] o18, bool[16,333] o19,
          float[16,333] o20, float[16,333] o21, float[16,333] o22, float[16,333] o23) {
      lo = Constant <value = float {-0.5}> ()
      hi = Constant <value = float {0.5}> ()
      n = Neg (in0)
      o0 = Exp (n)
      o1 = Log (n)
      o2 = Sqrt (n)
      o3 = Reciprocal (n)
      o4 = Erf (n)
      o5 = Sigmoid (n)
      o6 = LeakyRelu <alpha = 0.2> (n)
      o7 = Clip (n, lo, hi)
      o8 = HardSigmoid (n)
      o9 = HardSwish (n)
      o10 = Softplus (n)
      o11 = Cos (n)
      o12 = Sin (n)
      o13 = Max (n, in1, lo)
      o14 = Min (n, in1)
      o15 = Abs (n)
      o16 = Pow (n, in1)
      o17 = Sub (n, in1)
      isnan = IsNaN (o2)
      o18 = Or (isnan, in2)
      nb = Cast <to = 9> (n)
      o19 = Not (nb)
      o20 = Cast <to = 1> (o18)
      less = LessOrEqual (n, in1)
      o21 = Where (less, n, in1)
      o22 = Tanh (n)
      eq = Equal (nb, in2)
      o23 = Where (eq, o22, lo)
    })";

std::unique_ptr<Spec> MustParse(const std::string& name, const char* text) {
  std::unique_ptr<Spec> spec = SpecFromText(name, text);
  EXPECT_NE(spec, nullptr) << name;
  return spec;
}

std::vector<std::unique_ptr<Spec>> Gpt2ElementwiseSpecs() {
  std::vector<std::unique_ptr<Spec>> specs;
  for (auto& spec : ModelSpecs("gpt2-small_b1s128.onnx")) {
    if (spec->view.family == "elementwise") specs.push_back(std::move(spec));
  }
  return specs;
}

// The GPT-2 job that turns the two bool attention masks into an additive f32 mask.
std::unique_ptr<Spec> Gpt2MaskSpec() {
  for (auto& spec : Gpt2ElementwiseSpecs()) {
    if (spec->graph.nodes.back().op_type == "Where") return std::move(spec);
  }
  return nullptr;
}

class ElementwiseTemplateTest : public ::testing::Test {
 protected:
  std::unique_ptr<TemplateFamily> family_ = MakeElementwiseTemplate();
};

TEST_F(ElementwiseTemplateTest, SupportsEveryGpt2ElementwiseJobAndHandWrittenChains) {
  ASSERT_NE(family_, nullptr);
  EXPECT_EQ(family_->name(), "elementwise");
  const std::vector<std::unique_ptr<Spec>> gpt2 = Gpt2ElementwiseSpecs();
  EXPECT_GE(gpt2.size(), 2u);
  for (const auto& spec : gpt2) {
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << spec->name;
  }
  for (const char* text :
       {kGeluErf, kGeluTanh, kBroadcast, kReshapedBiasWhere, kTwoOutputs, kOpZoo}) {
    std::unique_ptr<Spec> spec = MustParse("chain", text);
    ASSERT_NE(spec, nullptr);
    Status supported = family_->Supports(spec->view);
    EXPECT_TRUE(supported.ok()) << spec->view.family << ": " << supported.ToString();
  }
}

TEST_F(ElementwiseTemplateTest, RejectsOtherFamiliesAndWhatItCannotCompile) {
  auto layernorm = MustParse("ln", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[4,8] in0, float[8] in1, float[8] in2) => (float[4,8] out0) {
        out0 = LayerNormalization <axis = -1> (in0, in1, in2)
      })");
  ASSERT_NE(layernorm, nullptr);
  Status status = family_->Supports(layernorm->view);
  EXPECT_NE(status.message().find("family 'layernorm'"), std::string::npos) << status.ToString();

  auto half = MustParse("f16", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float16[4,8] in0, float16[4,8] in1) => (float16[4,8] out0) {
        out0 = Add (in0, in1)
      })");
  ASSERT_NE(half, nullptr);
  status = family_->Supports(half->view);
  EXPECT_NE(status.message().find("f16"), std::string::npos) << status.ToString();

  // [12] viewed as [3,4]: the bias's run-time dims cannot be told apart.
  auto regroup = MustParse("regroup", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[5,3,4] in0, float[12] in1) => (float[5,3,4] out0) {
        shape = Constant <value = int64[2] {3, 4}> ()
        b = Reshape (in1, shape)
        out0 = Add (in0, b)
      })");
  ASSERT_NE(regroup, nullptr);
  status = family_->Supports(regroup->view);
  EXPECT_NE(status.message().find("regroups"), std::string::npos) << status.ToString();

  auto int64 = MustParse("i64", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[4,8] in0, float[4,8] in1) => (int64[4,8] out0) {
        s = Add (in0, in1)
        out0 = Cast <to = 7> (s)
      })");
  ASSERT_NE(int64, nullptr);
  status = family_->Supports(int64->view);
  EXPECT_NE(status.message().find("'out0' is i64"), std::string::npos) << status.ToString();
}

TEST_F(ElementwiseTemplateTest, SpaceOffersMathOnlyForTranscendentalChains) {
  auto gelu = MustParse("gelu", kGeluErf);
  auto bcast = MustParse("bcast", kBroadcast);
  ASSERT_NE(gelu, nullptr);
  ASSERT_NE(bcast, nullptr);
  EXPECT_EQ(DefaultParams(family_->Space(gelu->view)),
            (Params{{"threads", "all"}, {"chunk", "16384"}, {"math", "poly"}, {"unroll", "1"}}));
  EXPECT_EQ(DefaultParams(family_->Space(bcast->view)),
            (Params{{"threads", "all"}, {"chunk", "16384"}, {"unroll", "1"}}));
}

TEST_F(ElementwiseTemplateTest, RenderRejectsBadParams) {
  auto spec = MustParse("bcast", kBroadcast);
  ASSERT_NE(spec, nullptr);
  Params params = DefaultParams(family_->Space(spec->view));
  params["chunk"] = "1000";
  Result<RenderedKernel> bad = family_->Render(spec->view, params);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'chunk' cannot be '1000'"), std::string::npos);
  params = DefaultParams(family_->Space(spec->view));
  params["math"] = "poly";  // no transcendental op: not a parameter here
  bad = family_->Render(spec->view, params);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown parameter 'math'"), std::string::npos);
  params = DefaultParams(family_->Space(spec->view));
  params.erase("threads");
  EXPECT_FALSE(family_->Render(spec->view, params).ok());
}

TEST_F(ElementwiseTemplateTest, Gpt2JobsPassTheHarness) {
  Evaluator evaluator;
  for (const auto& spec : Gpt2ElementwiseSpecs()) {
    ExpectRenderedKernelPasses(evaluator, *family_, *spec,
                               DefaultParams(family_->Space(spec->view)));
  }
  for (const auto& spec : ModelSpecs("tinygpt2_1.onnx")) {
    if (spec->view.family != "elementwise") continue;
    ExpectRenderedKernelPasses(evaluator, *family_, *spec,
                               DefaultParams(family_->Space(spec->view)));
  }
  std::unique_ptr<Spec> mask = Gpt2MaskSpec();
  ASSERT_NE(mask, nullptr);
  for (const Params& params : {Params{{"threads", "1"}, {"chunk", "4096"}, {"unroll", "4"}},
                               Params{{"threads", "all"}, {"chunk", "65536"}, {"unroll", "4"}}}) {
    ExpectRenderedKernelPasses(evaluator, *family_, *mask, params);
  }
}

TEST_F(ElementwiseTemplateTest, GeluChainsPassTheHarnessAtSeveralPoints) {
  Evaluator evaluator;
  auto erf = MustParse("gelu_erf", kGeluErf);
  ASSERT_NE(erf, nullptr);
  for (const Params& params :
       {DefaultParams(family_->Space(erf->view)),
        Params{{"threads", "1"}, {"chunk", "4096"}, {"math", "libm"}, {"unroll", "4"}},
        Params{{"threads", "all"}, {"chunk", "65536"}, {"math", "poly"}, {"unroll", "4"}}}) {
    ExpectRenderedKernelPasses(evaluator, *family_, *erf, params);
  }
  auto tanh = MustParse("gelu_tanh", kGeluTanh);
  ASSERT_NE(tanh, nullptr);
  for (const Params& params :
       {DefaultParams(family_->Space(tanh->view)),
        Params{{"threads", "all"}, {"chunk", "4096"}, {"math", "libm"}, {"unroll", "1"}}}) {
    ExpectRenderedKernelPasses(evaluator, *family_, *tanh, params);
  }
}

TEST_F(ElementwiseTemplateTest, BroadcastingChainsPassTheHarness) {
  Evaluator evaluator;
  auto bcast = MustParse("bcast", kBroadcast);
  ASSERT_NE(bcast, nullptr);
  for (const Params& params : {DefaultParams(family_->Space(bcast->view)),
                               Params{{"threads", "1"}, {"chunk", "4096"}, {"unroll", "4"}},
                               Params{{"threads", "all"}, {"chunk", "65536"}, {"unroll", "1"}}}) {
    ExpectRenderedKernelPasses(evaluator, *family_, *bcast, params);
  }
  auto where = MustParse("bias_where", kReshapedBiasWhere);
  ASSERT_NE(where, nullptr);
  ExpectRenderedKernelPasses(evaluator, *family_, *where,
                             DefaultParams(family_->Space(where->view)));
}

TEST_F(ElementwiseTemplateTest, MultiOutputChainsPassTheHarness) {
  Evaluator evaluator;
  for (const auto& [name, text] : {std::pair{"two_outputs", kTwoOutputs}, {"op_zoo", kOpZoo}}) {
    auto spec = MustParse(name, text);
    ASSERT_NE(spec, nullptr);
    ExpectRenderedKernelPasses(evaluator, *family_, *spec,
                               DefaultParams(family_->Space(spec->view)));
  }
}

TEST_F(ElementwiseTemplateTest, ProfilesGeluErfAgainstTheBaseline) {
  auto spec = MustParse("gelu_erf_128x3072", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[128,3072] in0) => (float[128,3072] out0) {
        sqrt2 = Constant <value = float {1.4142135}> ()
        one = Constant <value = float {1.0}> ()
        half = Constant <value = float {0.5}> ()
        a = Div (in0, sqrt2)
        b = Erf (a)
        c = Add (b, one)
        d = Mul (in0, c)
        out0 = Mul (d, half)
      })");
  ASSERT_NE(spec, nullptr);
  Result<RenderedKernel> kernel =
      family_->Render(spec->view, DefaultParams(family_->Space(spec->view)));
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  Evaluator evaluator;
  eval::EvalReport report = evaluator.Evaluate(*spec, kernel->source, /*profile=*/true);
  EXPECT_TRUE(report.passed) << report.failed_stage << ": " << report.reason;
  ASSERT_TRUE(report.profile.has_value());
  std::cout << "elementwise gelu_erf 128x3072: " << kernel->explanation << "\n"
            << "  candidate median " << report.profile->candidate.median_us << " us, baseline "
            << report.profile->baseline.median_us << " us, speedup " << report.profile->speedup
            << "x\n";
}

}  // namespace
}  // namespace kfleet::agents
