#include "agents/conv_template.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/files.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::Evaluator;
using testing::ExpectRenderedKernelPasses;
using testing::ModelSpecs;
using testing::Spec;
using testing::SpecFromFile;
using testing::SpecFromText;

constexpr const char* k3x3BiasRelu = "conv_bias_relu_3x3_1x32x28x28.onnxtxt";
constexpr const char* k1x1Residual = "conv_bias_add_relu_1x1_2x16x14x14.onnxtxt";
constexpr const char* kDepthwiseRelu6 = "conv_dw_bias_relu6_3x3_s2_1x32x28x28.onnxtxt";
constexpr const char* k1x1Strided = "conv_bias_1x1_s2_2x24x28x28.onnxtxt";

// Two groups, dilation 2, stride 2 x 1 with SAME_UPPER padding, no bias, a per-channel scale
// and HardSwish; odd sizes.
const char* kGroupedDilatedSame = R"(<ir_version: 8, opset_import: ["" : 17]>
grouped_dilated (float[1,8,15,17] in0, float[12,4,3,3] in1, float[1,12,1,1] in2)
    => (float[1,12,8,17] out0) {
  c = Conv <group = 2, dilations = [2, 2], strides = [2, 1], auto_pad = "SAME_UPPER"> (in0, in1)
  s = Mul (c, in2)
  out0 = HardSwish (s)
})";

// Depthwise with a channel multiplier of 2, dilation 2, asymmetric pads, then SiLU.
const char* kDepthwiseMultiplierSilu = R"(<ir_version: 8, opset_import: ["" : 17]>
dw_multiplier (float[2,6,11,13] in0, float[12,1,3,3] in1, float[12] in2)
    => (float[2,12,11,10] out0) {
  c = Conv <group = 6, dilations = [2, 2], pads = [2, 1, 2, 0]> (in0, in1, in2)
  sg = Sigmoid (c)
  out0 = Mul (c, sg)
})";

const char* kConvF16 = R"(<ir_version: 8, opset_import: ["" : 17]>
conv_f16 (float16[1,8,10,10] in0, float16[8,8,3,3] in1) => (float16[1,8,8,8] out0) {
  out0 = Conv (in0, in1)
})";

const char* kConv3d = R"(<ir_version: 8, opset_import: ["" : 17]>
conv_3d (float[1,4,6,6,6] in0, float[8,4,3,3,3] in1) => (float[1,8,4,4,4] out0) {
  out0 = Conv (in0, in1)
})";

const char* kConvSoftplus = R"(<ir_version: 8, opset_import: ["" : 17]>
conv_softplus (float[1,4,8,8] in0, float[8,4,3,3] in1) => (float[1,8,6,6] out0) {
  c = Conv (in0, in1)
  out0 = Softplus (c)
})";

const char* kPadded1x1 = R"(<ir_version: 8, opset_import: ["" : 17]>
padded_1x1 (float[1,4,8,8] in0, float[8,4,1,1] in1) => (float[1,8,10,10] out0) {
  out0 = Conv <pads = [1, 1, 1, 1]> (in0, in1)
})";

const char* kMatMul = R"(<ir_version: 8, opset_import: ["" : 17]>
mm (float[16,32] in0, float[32,24] in1) => (float[16,24] out0) {
  out0 = MatMul (in0, in1)
})";

// Between them the im2col points give every parameter each of its values.
const Params kIm2colLoopsTeamPlaneSeparate = {
    {"gemm", "loops"}, {"threads", "gemm"}, {"col_block", "plane"}, {"epilogue", "separate"}};
const Params kIm2colBlasTeam1024Separate = {
    {"gemm", "blas"}, {"threads", "gemm"}, {"col_block", "1024"}, {"epilogue", "separate"}};
const Params kIm2colLoopsItems256Fused = {
    {"gemm", "loops"}, {"threads", "items"}, {"col_block", "256"}, {"epilogue", "fused"}};
const Params kIm2colF64Team256Fused = {
    {"gemm", "loops_f64"}, {"threads", "gemm"}, {"col_block", "256"}, {"epilogue", "fused"}};
const Params kDepthwiseSerialRowsNoUnrollF32 = {
    {"threads", "1"}, {"rows", "4"}, {"unroll", "1"}, {"acc", "f32"}};
const Params kPointwiseSerialF64Small = {
    {"threads", "1"}, {"acc", "f64"}, {"tile", "8x16"}, {"col_block", "128"}};
const Params kPointwiseF32Narrow = {
    {"threads", "all"}, {"acc", "f32"}, {"tile", "6x32"}, {"col_block", "128"}};

class ConvTemplateTest : public ::testing::Test {
 protected:
  std::unique_ptr<TemplateFamily> im2col_ = MakeConvIm2colTemplate();
  std::unique_ptr<TemplateFamily> direct_ = MakeConvDirectTemplate();
  Evaluator evaluator_;
};

TEST_F(ConvTemplateTest, SupportsEveryConvJobOfResNetAndMobileNet) {
  int convs = 0;
  int direct = 0;
  for (const char* model : {"resnet50_b8.onnx", "mobilenet_v2_b8.op17.onnx"}) {
    for (const auto& spec : ModelSpecs(model)) {
      if (spec->view.family.rfind("conv", 0) != 0) continue;
      ++convs;
      ASSERT_TRUE(im2col_->Supports(spec->view).ok())
          << spec->name << ": " << im2col_->Supports(spec->view).ToString();
      Result<RenderedKernel> kernel =
          im2col_->Render(spec->view, DefaultParams(im2col_->Space(spec->view)));
      EXPECT_TRUE(kernel.ok()) << spec->name << ": " << kernel.status().ToString();
      const Status supports = direct_->Supports(spec->view);
      const std::vector<int64_t>& w = spec->graph.values[spec->graph.inputs[1]].shape;
      const bool depthwise_or_1x1 = w.size() == 4 && (w[1] == 1 || (w[2] == 1 && w[3] == 1));
      EXPECT_EQ(supports.ok(), depthwise_or_1x1) << spec->name << ": " << supports.ToString();
      if (!supports.ok()) continue;
      ++direct;
      kernel = direct_->Render(spec->view, DefaultParams(direct_->Space(spec->view)));
      EXPECT_TRUE(kernel.ok()) << spec->name << ": " << kernel.status().ToString();
    }
  }
  EXPECT_GE(convs, 20);
  EXPECT_GE(direct, 10);
}

TEST_F(ConvTemplateTest, RejectsWhatItCannotExpress) {
  struct Case {
    const char* name;
    const char* text;
    const TemplateFamily* family;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"conv_f16", kConvF16, im2col_.get(), "f32 only; in0 is f16"},
      {"conv_3d", kConv3d, im2col_.get(), "2-D convolutions"},
      {"conv_softplus", kConvSoftplus, im2col_.get(), "cannot express Softplus"},
      {"padded_1x1", kPadded1x1, direct_.get(), "needs zero pads"},
      {"mm", kMatMul, direct_.get(), "is not a Conv"},
  };
  for (const Case& c : cases) {
    std::unique_ptr<Spec> spec = SpecFromText(c.name, c.text);
    ASSERT_NE(spec, nullptr) << c.name;
    const Status status = c.family->Supports(spec->view);
    EXPECT_FALSE(status.ok()) << c.name;
    EXPECT_NE(status.message().find(c.expected), std::string::npos) << status.ToString();
    EXPECT_FALSE(c.family->Render(spec->view, DefaultParams(c.family->Space(spec->view))).ok());
  }
  std::unique_ptr<Spec> full = SpecFromFile(k3x3BiasRelu);
  ASSERT_NE(full, nullptr);
  const Status status = direct_->Supports(full->view);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("conv_direct handles depthwise"), std::string::npos)
      << status.ToString();
  EXPECT_NE(status.message().find("3x3"), std::string::npos) << status.ToString();
}

TEST_F(ConvTemplateTest, RenderRejectsBadParams) {
  for (const char* file : {k3x3BiasRelu, kDepthwiseRelu6, k1x1Residual}) {
    std::unique_ptr<Spec> spec = SpecFromFile(file);
    ASSERT_NE(spec, nullptr);
    for (const TemplateFamily* family : {im2col_.get(), direct_.get()}) {
      if (!family->Supports(spec->view).ok()) continue;
      const Params params = DefaultParams(family->Space(spec->view));
      Params bad_value = params;
      bad_value["threads"] = "3";
      EXPECT_FALSE(family->Render(spec->view, bad_value).ok()) << family->name();
      Params missing = params;
      missing.erase("threads");
      EXPECT_FALSE(family->Render(spec->view, missing).ok()) << family->name();
      Params unknown = params;
      unknown["vector_width"] = "8";
      Result<RenderedKernel> rendered = family->Render(spec->view, unknown);
      ASSERT_FALSE(rendered.ok()) << family->name();
      EXPECT_NE(rendered.status().message().find("unknown parameter 'vector_width'"),
                std::string::npos);
    }
  }
}

TEST_F(ConvTemplateTest, Im2colPassesOnSpecs) {
  struct Case {
    std::unique_ptr<Spec> spec;
    std::vector<Params> params;
  };
  const Params defaults = DefaultParams(im2col_->Space(SpecView{}));
  std::vector<Case> cases;
  cases.push_back({SpecFromFile(k3x3BiasRelu), {defaults, kIm2colLoopsTeamPlaneSeparate}});
  cases.push_back({SpecFromFile(k1x1Residual), {defaults, kIm2colBlasTeam1024Separate}});
  cases.push_back({SpecFromFile(kDepthwiseRelu6), {defaults}});
  cases.push_back({SpecFromFile(k1x1Strided), {defaults, kIm2colLoopsItems256Fused}});
  cases.push_back(
      {SpecFromText("grouped_dilated", kGroupedDilatedSame), {kIm2colLoopsItems256Fused}});
  cases.push_back({SpecFromText("dw_multiplier", kDepthwiseMultiplierSilu),
                   {kIm2colBlasTeam1024Separate, kIm2colF64Team256Fused}});
  for (const Case& c : cases) {
    ASSERT_NE(c.spec, nullptr);
    for (const Params& params : c.params) {
      ExpectRenderedKernelPasses(evaluator_, *im2col_, *c.spec, params);
    }
  }
}

TEST_F(ConvTemplateTest, DirectPassesOnDepthwiseAndPointwiseSpecs) {
  std::unique_ptr<Spec> depthwise = SpecFromFile(kDepthwiseRelu6);
  std::unique_ptr<Spec> multiplier = SpecFromText("dw_multiplier", kDepthwiseMultiplierSilu);
  std::unique_ptr<Spec> residual = SpecFromFile(k1x1Residual);
  std::unique_ptr<Spec> strided = SpecFromFile(k1x1Strided);
  ASSERT_TRUE(depthwise && multiplier && residual && strided);
  for (const Spec* spec : {depthwise.get(), multiplier.get(), residual.get(), strided.get()}) {
    ExpectRenderedKernelPasses(evaluator_, *direct_, *spec,
                               DefaultParams(direct_->Space(spec->view)));
  }
  ExpectRenderedKernelPasses(evaluator_, *direct_, *multiplier, kDepthwiseSerialRowsNoUnrollF32);
  ExpectRenderedKernelPasses(evaluator_, *direct_, *strided, kPointwiseSerialF64Small);
  ExpectRenderedKernelPasses(evaluator_, *direct_, *residual, kPointwiseF32Narrow);
}

TEST_F(ConvTemplateTest, ProfilesDefaultsAgainstTheBaseline) {
  struct Case {
    const char* file;
    const TemplateFamily* family;
  };
  for (const Case& c : {Case{k3x3BiasRelu, im2col_.get()}, Case{kDepthwiseRelu6, direct_.get()}}) {
    std::unique_ptr<Spec> spec = SpecFromFile(c.file);
    ASSERT_NE(spec, nullptr);
    Result<RenderedKernel> kernel =
        c.family->Render(spec->view, DefaultParams(c.family->Space(spec->view)));
    ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
    eval::EvalReport report = evaluator_.Evaluate(*spec, kernel->source, /*profile=*/true);
    EXPECT_TRUE(report.StageFor(eval::Stage::kProfile).passed) << report.reason;
    ASSERT_TRUE(report.profile.has_value());
    std::printf("%s default on %s: candidate %.1f us, baseline %.1f us, speedup %.2fx\n",
                std::string(c.family->name()).c_str(), spec->name.c_str(),
                report.profile->candidate.median_us, report.profile->baseline.median_us,
                report.profile->speedup);
  }
}

}  // namespace
}  // namespace kfleet::agents
