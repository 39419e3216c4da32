#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "agents/conv_analysis.h"
#include "agents/cuda_templates.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::CudaEvaluator;
using testing::ExpectCudaKernelPasses;
using testing::ModelSpecs;
using testing::Spec;
using testing::SpecFromFile;
using testing::SpecFromText;

// No bias, the residual first and ReLU: cuDNN fuses it with a zero bias.
const char* kResidualReluNoBias = R"(<ir_version: 8, opset_import: ["" : 17]>
residual_relu (float[2,16,9,9] in0, float[24,16,3,3] in1, float[2,24,9,9] in2)
    => (float[2,24,9,9] out0) {
  c = Conv <pads = [1, 1, 1, 1]> (in0, in1)
  a = Add (in2, c)
  out0 = Relu (a)
})";

// ReLU before the residual: not cuDNN's order.
const char* kReluThenResidual = R"(<ir_version: 8, opset_import: ["" : 17]>
relu_residual (float[1,8,6,6] in0, float[8,8,1,1] in1, float[8] in2, float[1,8,6,6] in3)
    => (float[1,8,6,6] out0) {
  c = Conv (in0, in1, in2)
  r = Relu (c)
  out0 = Add (r, in3)
})";

// Two groups, dilation 2, SAME_UPPER with stride 1 (even padding at every size), no bias, a
// per-image per-channel scale (squeeze-excite) and HardSwish; odd sizes, bf16.
const char* kGroupedDilatedBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
grouped_dilated_bf16 (bfloat16[2,8,15,17] in0, bfloat16[12,4,3,3] in1, bfloat16[2,12,1,1] in2)
    => (bfloat16[2,12,15,17] out0) {
  c = Conv <group = 2, dilations = [2, 2], auto_pad = "SAME_UPPER"> (in0, in1)
  s = Mul (c, in2)
  out0 = HardSwish (s)
})";

// Depthwise 3x3 stride 2, BatchNormalization and a scalar after it, f16.
const char* kDepthwiseBatchNormF16 = R"(<ir_version: 8, opset_import: ["" : 17]>
dw_bn_f16 (float16[1,16,14,14] in0, float16[16,1,3,3] in1, float16[16] in2, float16[16] in3,
           float16[16] in4, float16[16] in5, float16[1] in6) => (float16[1,16,7,7] out0) {
  c = Conv <group = 16, strides = [2, 2], pads = [1, 1, 1, 1]> (in0, in1)
  b = BatchNormalization (c, in2, in3, in4, in5)
  out0 = Mul (b, in6)
})";

// Pads before and after differ.
const char* kAsymmetricPads = R"(<ir_version: 8, opset_import: ["" : 17]>
asymmetric (float[1,4,8,8] in0, float[8,4,3,3] in1) => (float[1,8,8,8] out0) {
  out0 = Conv <pads = [0, 0, 2, 2]> (in0, in1)
})";

// SAME_UPPER with stride 2: the total pad is odd for some input sizes.
const char* kSameStrided = R"(<ir_version: 8, opset_import: ["" : 17]>
same_strided (float[1,4,9,9] in0, float[8,4,3,3] in1) => (float[1,8,5,5] out0) {
  out0 = Conv <strides = [2, 2], auto_pad = "SAME_UPPER"> (in0, in1)
})";

const char* kConvI64 = R"(<ir_version: 8, opset_import: ["" : 17]>
conv_i64 (int64[1,4,8,8] in0, int64[8,4,3,3] in1) => (int64[1,8,6,6] out0) {
  out0 = Conv (in0, in1)
})";

const char* kConv1d = R"(<ir_version: 8, opset_import: ["" : 17]>
conv_1d (float[1,4,16] in0, float[8,4,3] in1) => (float[1,8,14] out0) {
  out0 = Conv (in0, in1)
})";

Params WithParams(std::string path, std::string algo, std::string launch) {
  return {{"path", std::move(path)}, {"algo", std::move(algo)}, {"launch", std::move(launch)}};
}

class CudaConvTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    resnet_f32_ = new std::vector<std::unique_ptr<Spec>>(ModelSpecs("resnet50_b8.onnx"));
    resnet_bf16_ = new std::vector<std::unique_ptr<Spec>>(
        ModelSpecs("resnet50_b8.onnx", planner::DType::kBF16));
  }
  static void TearDownTestSuite() {
    delete resnet_f32_;
    delete resnet_bf16_;
  }

  static const Spec* ResNetF32(const std::string& name) {
    return testing::FindSpec(*resnet_f32_, name);
  }
  static const Spec* ResNetBf16(const std::string& name) {
    return testing::FindSpec(*resnet_bf16_, name);
  }

  static std::vector<std::string> PathsOf(const TemplateFamily& family, const Spec& spec) {
    for (const ParamSpace& space : family.Space(spec.view)) {
      if (space.name == "path") return space.values;
    }
    return {};
  }

  std::unique_ptr<TemplateFamily> dnn_ = MakeCudaConvDnnTemplate();
  CudaEvaluator evaluator_;

  static std::vector<std::unique_ptr<Spec>>* resnet_f32_;
  static std::vector<std::unique_ptr<Spec>>* resnet_bf16_;
};

std::vector<std::unique_ptr<Spec>>* CudaConvTemplateTest::resnet_f32_ = nullptr;
std::vector<std::unique_ptr<Spec>>* CudaConvTemplateTest::resnet_bf16_ = nullptr;

// ResNet-50's conv jobs (the export's Convs have no bias) are a Conv, then maybe the residual,
// then maybe ReLU: every one is supported, in f32 and bf16, with cuDNN's fused call among its
// paths when there is an epilogue.
TEST_F(CudaConvTemplateTest, SupportsEveryConvJobOfResNet50WithTheFusedPath) {
  int convs = 0;
  for (const auto* specs : {resnet_f32_, resnet_bf16_}) {
    for (const auto& spec : *specs) {
      if (spec->view.family.rfind("conv", 0) != 0) continue;
      ++convs;
      ASSERT_TRUE(dnn_->Supports(spec->view).ok())
          << spec->name << ": " << dnn_->Supports(spec->view).ToString();
      Result<ConvPlan> plan = AnalyzeConv(spec->view, {.half_types = true});
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      ASSERT_TRUE(plan->fused.has_value()) << spec->name;
      EXPECT_EQ(plan->fused->bias, -1) << spec->name;
      EXPECT_EQ(plan->fused->relu, spec->view.family.find("relu") != std::string::npos)
          << spec->name;
      EXPECT_EQ(plan->fused->residual >= 0, spec->view.family.find("add") != std::string::npos)
          << spec->name;
      const bool epilogue = spec->view.family != "conv";
      // f16 / bf16 try NHWC before NCHW.
      std::vector<std::string> paths = specs == resnet_f32_
                                           ? std::vector<std::string>{"nchw", "nhwc"}
                                           : std::vector<std::string>{"nhwc", "nchw"};
      if (epilogue) paths.insert(paths.begin(), "fused");
      EXPECT_EQ(PathsOf(*dnn_, *spec), paths) << spec->name;
      Result<RenderedKernel> kernel =
          dnn_->Render(spec->view, DefaultParams(dnn_->Space(spec->view)));
      ASSERT_TRUE(kernel.ok()) << spec->name << ": " << kernel.status().ToString();
      EXPECT_EQ(kernel->source.find("cudnnConvolutionBiasActivationForward") != std::string::npos,
                epilogue)
          << spec->name;
    }
  }
  EXPECT_GE(convs, 40);
}

TEST_F(CudaConvTemplateTest, RecognizesWhatCuDnnFuses) {
  std::unique_ptr<Spec> residual = SpecFromText("residual_relu", kResidualReluNoBias);
  ASSERT_NE(residual, nullptr);
  Result<ConvPlan> plan = AnalyzeConv(residual->view, {.half_types = true});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->fused.has_value());
  EXPECT_EQ(plan->fused->bias, -1);
  EXPECT_EQ(plan->fused->residual, 0);
  EXPECT_TRUE(plan->fused->relu);

  // Conv + bias is of the fused form, but without ReLU the fused call is not offered: cuDNN's
  // identity activation was seen applying ReLU.
  std::unique_ptr<Spec> bias_only = SpecFromFile("conv_bias_1x1_s2_2x24x28x28.onnxtxt");
  ASSERT_NE(bias_only, nullptr);
  plan = AnalyzeConv(bias_only->view, {.half_types = true});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->fused.has_value());
  EXPECT_EQ(plan->fused->bias, 0);
  EXPECT_FALSE(plan->fused->relu);
  EXPECT_EQ(PathsOf(*dnn_, *bias_only), (std::vector<std::string>{"nchw", "nhwc"}));

  for (const auto& [name, text] : {std::pair{"relu_residual", kReluThenResidual},
                                   std::pair{"grouped_dilated_bf16", kGroupedDilatedBf16},
                                   std::pair{"dw_bn_f16", kDepthwiseBatchNormF16}}) {
    std::unique_ptr<Spec> spec = SpecFromText(name, text);
    ASSERT_NE(spec, nullptr) << name;
    plan = AnalyzeConv(spec->view, {.half_types = true});
    ASSERT_TRUE(plan.ok()) << name << ": " << plan.status().ToString();
    EXPECT_FALSE(plan->fused.has_value()) << name;
    const std::vector<std::string> paths = std::string(name) == "relu_residual"
                                               ? std::vector<std::string>{"nchw", "nhwc"}
                                               : std::vector<std::string>{"nhwc", "nchw"};
    EXPECT_EQ(PathsOf(*dnn_, *spec), paths) << name;
  }
}

TEST_F(CudaConvTemplateTest, RejectsWhatItCannotExpress) {
  struct Case {
    const char* name;
    const char* text;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"asymmetric", kAsymmetricPads, "pads [0,0,2,2] differ before and after"},
      {"same_strided", kSameStrided, "SAME_UPPER with stride 2"},
      {"conv_i64", kConvI64, "f32, f16 and bf16 only; in0 is i64"},
      {"conv_1d", kConv1d, "2-D convolutions"},
  };
  for (const Case& c : cases) {
    std::unique_ptr<Spec> spec = SpecFromText(c.name, c.text);
    ASSERT_NE(spec, nullptr) << c.name;
    const Status status = dnn_->Supports(spec->view);
    EXPECT_FALSE(status.ok()) << c.name;
    EXPECT_NE(status.message().find(c.expected), std::string::npos) << status.ToString();
    EXPECT_FALSE(dnn_->Render(spec->view, DefaultParams(dnn_->Space(spec->view))).ok());
  }
  // The CPU analysis still takes f32 only.
  std::unique_ptr<Spec> bf16 = SpecFromText("grouped_dilated_bf16", kGroupedDilatedBf16);
  ASSERT_NE(bf16, nullptr);
  const Status cpu = AnalyzeConv(bf16->view).status();
  EXPECT_NE(cpu.message().find("f32 only; in0 is bf16"), std::string::npos) << cpu.ToString();
}

TEST_F(CudaConvTemplateTest, RenderRejectsBadParams) {
  std::unique_ptr<Spec> spec = SpecFromText("relu_residual", kReluThenResidual);
  ASSERT_NE(spec, nullptr);
  // No fused path for an epilogue cuDNN cannot fuse.
  EXPECT_FALSE(dnn_->Render(spec->view, WithParams("fused", "find", "graph")).ok());
  EXPECT_FALSE(dnn_->Render(spec->view, WithParams("nchw", "fastest", "graph")).ok());
  EXPECT_FALSE(dnn_->Render(spec->view, WithParams("nchw", "find", "sometimes")).ok());
  Params extra = WithParams("nhwc", "heuristic", "direct");
  extra["tile"] = "64";
  EXPECT_FALSE(dnn_->Render(spec->view, extra).ok());
  Result<RenderedKernel> kernel =
      dnn_->Render(spec->view, WithParams("nhwc", "heuristic", "direct"));
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  EXPECT_NE(kernel->source.find("CUDNN_TENSOR_NHWC"), std::string::npos);
  EXPECT_NE(kernel->source.find("kMaxWorkspaceBytes = uint64_t{256} << 20;"), std::string::npos);
  EXPECT_NE(kernel->source.find("kRelu = false;"), std::string::npos);
  EXPECT_NE(kernel->explanation.find("NHWC"), std::string::npos) << kernel->explanation;
}

// Each path, algorithm choice and dtype on ResNet-50's own jobs; compiled with nvcc here, run
// through the harness where there is a GPU.
TEST_F(CudaConvTemplateTest, PassesOnResNet50Convs) {
  struct Case {
    const Spec* spec;
    Params params;
  };
  const std::vector<Case> cases = {
      {ResNetF32("conv+relu 8x64x56x56 w64x64x3x3 f32"), WithParams("fused", "find", "graph")},
      {ResNetF32("conv+add+relu 8x64x56x56 w256x64x1x1 f32"),
       WithParams("nchw", "heuristic", "direct")},
      {ResNetBf16("conv+add+relu 8x256x14x14 w1024x256x1x1 bf16"),
       WithParams("fused", "heuristic", "graph")},
      {ResNetBf16("conv+add+relu 8x256x14x14 w1024x256x1x1 bf16"),
       WithParams("nhwc", "find", "direct")},
      {ResNetBf16("conv+relu 8x3x224x224 w64x3x7x7 s2x2 bf16"),
       WithParams("nhwc", "find", "graph")},
      {ResNetBf16("conv 8x1024x14x14 w2048x1024x1x1 s2x2 bf16"),
       WithParams("nchw", "find", "graph")},
  };
  for (const Case& c : cases) {
    ASSERT_NE(c.spec, nullptr);
    ExpectCudaKernelPasses(evaluator_, *dnn_, *c.spec, c.params);
  }
}

TEST_F(CudaConvTemplateTest, PassesOnHandWrittenSpecs) {
  struct Case {
    const char* name;
    const char* text;
    Params params;
  };
  const std::vector<Case> cases = {
      {"residual_relu", kResidualReluNoBias, WithParams("fused", "find", "direct")},
      {"residual_relu", kResidualReluNoBias, WithParams("nhwc", "heuristic", "graph")},
      {"relu_residual", kReluThenResidual, WithParams("nchw", "find", "graph")},
      {"grouped_dilated_bf16", kGroupedDilatedBf16, WithParams("nchw", "heuristic", "direct")},
      {"grouped_dilated_bf16", kGroupedDilatedBf16, WithParams("nhwc", "find", "graph")},
      {"dw_bn_f16", kDepthwiseBatchNormF16, WithParams("nchw", "find", "graph")},
      {"dw_bn_f16", kDepthwiseBatchNormF16, WithParams("nhwc", "heuristic", "direct")},
  };
  for (const Case& c : cases) {
    std::unique_ptr<Spec> spec = SpecFromText(c.name, c.text);
    ASSERT_NE(spec, nullptr) << c.name;
    ExpectCudaKernelPasses(evaluator_, *dnn_, *spec, c.params);
  }
  std::unique_ptr<Spec> file = SpecFromFile("conv_bias_1x1_s2_2x24x28x28.onnxtxt");
  ASSERT_NE(file, nullptr);
  ExpectCudaKernelPasses(evaluator_, *dnn_, *file, WithParams("nchw", "heuristic", "graph"));
}

}  // namespace
}  // namespace kfleet::agents
