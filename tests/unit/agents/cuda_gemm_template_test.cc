#include <fmt/format.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "agents/cuda_templates.h"
#include "agents/gemm_analysis.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::CudaEvaluator;
using testing::ExpectCudaKernelPasses;
using testing::ModelSpecs;
using testing::Spec;
using testing::SpecFromFile;
using testing::SpecFromText;

// Attention's Q K^T as a plain batched MatMul, in f16.
const char* kBatchedF16 = R"(<ir_version: 8, opset_import: ["" : 17]>
bmm_f16 (float16[1,12,128,64] in0, float16[1,12,64,128] in1) => (float16[1,12,128,128] out0) {
  out0 = MatMul (in0, in1)
})";

// B stored [N, K], alpha, a [1, N] bias as C: BIAS with alpha on the lt path.
const char* kGemmTransB = R"(<ir_version: 8, opset_import: ["" : 17]>
gemm_trans_b (float[40,56] in0, float[48,56] in1, float[1,48] in2) => (float[40,48] out0) {
  out0 = Gemm <transB = 1, alpha = 0.5> (in0, in1, in2)
})";

const char* kMatMulBiasReluBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
mm_bias_relu_bf16 (bfloat16[64,96] in0, bfloat16[96,80] in1, bfloat16[80] in2) => (bfloat16[64,80] out0) {
  mm = MatMul (in0, in1)
  h = Add (mm, in2)
  out0 = Relu (h)
})";

// Bias then residual, as a transformer block's projections: BIAS with the residual as C.
const char* kMatMulBiasResidualBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
mm_bias_residual_bf16 (bfloat16[2,48,64] in0, bfloat16[64,72] in1, bfloat16[72] in2, bfloat16[2,48,72] in3) => (bfloat16[2,48,72] out0) {
  mm = MatMul (in0, in1)
  h = Add (mm, in2)
  out0 = Add (h, in3)
})";

// Batched A^T against one B for every batch (batch stride 0), plus a residual shared by every
// batch: the kernel path.
const char* kBatchedBroadcastBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
bmm_broadcast_bf16 (bfloat16[4,24,32] in0, bfloat16[24,40] in1, bfloat16[32,40] in2) => (bfloat16[4,32,40] out0) {
  at = Transpose <perm = [0, 2, 1]> (in0)
  mm = MatMul (at, in1)
  out0 = Add (mm, in2)
})";

// Odd N (no vector path), a per-row operand, erf GELU, a residual: the kernel path's general case.
const char* kMatMulOddEpilogue = R"(<ir_version: 8, opset_import: ["" : 17]>
mm_odd (float[3,33,40] in0, float[40,37] in1, float[3,33,1] in2, float[3,33,37] in3) => (float[3,33,37] out0) {
  mm = MatMul (in0, in1)
  s = Mul (mm, in2)
  g = Gelu (s)
  out0 = Add (g, in3)
})";

// Clip(0, 6) agrees with Relu near zero only: not a cuBLASLt epilogue.
const char* kMatMulBiasRelu6 = R"(<ir_version: 8, opset_import: ["" : 17]>
mm_relu6 (float[16,32] in0, float[32,24] in1, float[24] in2) => (float[16,24] out0) {
  mm = MatMul (in0, in1)
  h = Add (mm, in2)
  lo = Constant <value = float {0.0}> ()
  hi = Constant <value = float {6.0}> ()
  out0 = Clip (h, lo, hi)
})";

const char* kMatMulI64 = R"(<ir_version: 8, opset_import: ["" : 17]>
mm_i64 (int64[16,32] in0, int64[32,24] in1) => (int64[16,24] out0) {
  out0 = MatMul (in0, in1)
})";

const char* kElementwise = R"(<ir_version: 8, opset_import: ["" : 17]>
add (float[2,3] in0, float[3] in1) => (float[2,3] out0) {
  out0 = Add (in0, in1)
})";

// The `epilogue` values the family offers for the spec.
std::vector<std::string> EpilogueModes(const TemplateFamily& family, const Spec& spec) {
  for (const ParamSpace& space : family.Space(spec.view)) {
    if (space.name == "epilogue") return space.values;
  }
  return {};
}

std::string Statements(const GemmPlan& plan) {
  return fmt::format("epilogue:\n{}\nresult {}", fmt::join(plan.statements, "\n"), plan.result);
}

Params WithParams(std::string epilogue, std::string algo, std::string workspace_mb) {
  return {{"epilogue", std::move(epilogue)},
          {"algo", std::move(algo)},
          {"workspace_mb", std::move(workspace_mb)},
          {"compute", "f32"}};
}

class CudaGemmTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gpt2_f32_ = new std::vector<std::unique_ptr<Spec>>(ModelSpecs("gpt2-small_b1s128.onnx"));
    // f16 rather than bf16: the planner does not take its bf16 GELU spec for one fusion group
    // (sqrt(2/pi) rounded to bf16 misses its pattern), so ModelSpecs fails on it.
    gpt2_f16_ = new std::vector<std::unique_ptr<Spec>>(
        ModelSpecs("gpt2-small_b1s128.onnx", planner::DType::kF16));
  }
  static void TearDownTestSuite() {
    delete gpt2_f32_;
    delete gpt2_f16_;
  }

  static const Spec* Gpt2F32(const std::string& name) {
    return testing::FindSpec(*gpt2_f32_, name);
  }
  static const Spec* Gpt2F16(const std::string& name) {
    return testing::FindSpec(*gpt2_f16_, name);
  }

  GemmPlan Plan(const Spec& spec) {
    Result<GemmPlan> plan = AnalyzeGemm(spec.view, {.half_types = true});
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    return plan.ok() ? *plan : GemmPlan{};
  }

  std::string Source(const Spec& spec, const Params& params) {
    Result<RenderedKernel> kernel = lt_->Render(spec.view, params);
    EXPECT_TRUE(kernel.ok()) << kernel.status().ToString();
    return kernel.ok() ? kernel->source : "";
  }

  std::unique_ptr<TemplateFamily> lt_ = MakeCudaGemmLtTemplate();
  CudaEvaluator evaluator_;

  static std::vector<std::unique_ptr<Spec>>* gpt2_f32_;
  static std::vector<std::unique_ptr<Spec>>* gpt2_f16_;
};

std::vector<std::unique_ptr<Spec>>* CudaGemmTemplateTest::gpt2_f32_ = nullptr;
std::vector<std::unique_ptr<Spec>>* CudaGemmTemplateTest::gpt2_f16_ = nullptr;

TEST_F(CudaGemmTemplateTest, SupportsEveryGemmJobOfGpt2InF32AndF16) {
  int gemm_jobs = 0;
  for (const auto* specs : {gpt2_f32_, gpt2_f16_}) {
    for (const auto& spec : *specs) {
      if (spec->view.family.rfind("gemm", 0) != 0) continue;
      ++gemm_jobs;
      EXPECT_TRUE(lt_->Supports(spec->view).ok())
          << spec->name << ": " << lt_->Supports(spec->view).ToString();
    }
  }
  EXPECT_GE(gemm_jobs, 8);
}

TEST_F(CudaGemmTemplateTest, RecognizesWhatCuBlasLtCanFuse) {
  // GELU in its tanh form decomposed into Mul / Pow / Add / Tanh, constants in f16.
  const Spec* gelu = Gpt2F16("gemm+gelu_tanh 128x768x3072 f16");
  ASSERT_NE(gelu, nullptr);
  GemmPlan plan = Plan(*gelu);
  EXPECT_EQ(plan.dtype, planner::DType::kF16);
  ASSERT_TRUE(plan.blas_epilogue.has_value()) << Statements(plan);
  EXPECT_EQ(plan.blas_epilogue->activation, GemmActivation::kGeluTanh);
  EXPECT_EQ(plan.blas_epilogue->residual, -1);
  EXPECT_NE(Source(*gelu, WithParams("lt", "0", "32")).find("CUBLASLT_EPILOGUE_GELU"),
            std::string::npos);

  // The same after a bias, in f32.
  std::unique_ptr<Spec> bias_gelu = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(bias_gelu, nullptr);
  plan = Plan(*bias_gelu);
  ASSERT_TRUE(plan.blas_epilogue.has_value()) << Statements(plan);
  EXPECT_EQ(plan.blas_epilogue->activation, GemmActivation::kGeluTanh);
  EXPECT_GE(plan.blas_epilogue->bias, 0);
  EXPECT_NE(Source(*bias_gelu, WithParams("lt", "0", "32")).find("CUBLASLT_EPILOGUE_GELU_BIAS"),
            std::string::npos);

  // A residual: the C of cuBLASLt's product.
  const Spec* residual = Gpt2F32("gemm+add 128x3072x768 f32");
  ASSERT_NE(residual, nullptr);
  plan = Plan(*residual);
  ASSERT_TRUE(plan.blas_epilogue.has_value()) << Statements(plan);
  EXPECT_EQ(plan.blas_epilogue->activation, GemmActivation::kNone);
  EXPECT_GE(plan.blas_epilogue->residual, 0);

  std::unique_ptr<Spec> relu = SpecFromText("mm_bias_relu_bf16", kMatMulBiasReluBf16);
  ASSERT_NE(relu, nullptr);
  plan = Plan(*relu);
  ASSERT_TRUE(plan.blas_epilogue.has_value());
  EXPECT_EQ(plan.blas_epilogue->activation, GemmActivation::kRelu);

  std::unique_ptr<Spec> trans_b = SpecFromText("gemm_trans_b", kGemmTransB);
  ASSERT_NE(trans_b, nullptr);
  plan = Plan(*trans_b);
  ASSERT_TRUE(plan.blas_epilogue.has_value());
  EXPECT_EQ(plan.blas_epilogue->alpha, 0.5);
  EXPECT_GE(plan.blas_epilogue->bias, 0);
  EXPECT_EQ(EpilogueModes(*lt_, *trans_b), (std::vector<std::string>{"lt", "kernel"}));

  std::unique_ptr<Spec> bias_residual =
      SpecFromText("mm_bias_residual_bf16", kMatMulBiasResidualBf16);
  ASSERT_NE(bias_residual, nullptr);
  plan = Plan(*bias_residual);
  ASSERT_TRUE(plan.blas_epilogue.has_value());
  EXPECT_GE(plan.blas_epilogue->bias, 0);
  EXPECT_GE(plan.blas_epilogue->residual, 0);

  // Not fusable: only the kernel path is offered.
  for (const char* text : {kMatMulBiasRelu6, kMatMulOddEpilogue, kBatchedBroadcastBf16}) {
    std::unique_ptr<Spec> spec = SpecFromText("not_fusable", text);
    ASSERT_NE(spec, nullptr);
    EXPECT_FALSE(Plan(*spec).blas_epilogue.has_value()) << text;
    EXPECT_EQ(EpilogueModes(*lt_, *spec), std::vector<std::string>{"kernel"}) << text;
  }
  // No epilogue: nothing to choose.
  std::unique_ptr<Spec> bmm = SpecFromText("bmm_f16", kBatchedF16);
  ASSERT_NE(bmm, nullptr);
  EXPECT_EQ(EpilogueModes(*lt_, *bmm), std::vector<std::string>{"lt"});
}

TEST_F(CudaGemmTemplateTest, RendersTheLmHeadWithTransposedB) {
  // Rendered only: its float64 reference (128x768x50257) is too slow for a test.
  const Spec* spec = Gpt2F16("gemm 128x768x50257 f16");
  ASSERT_NE(spec, nullptr);
  Result<RenderedKernel> kernel = lt_->Render(spec->view, DefaultParams(lt_->Space(spec->view)));
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  EXPECT_NE(kernel->source.find("kTransB = true"), std::string::npos);
  EXPECT_NE(kernel->source.find("CUDA_R_16F"), std::string::npos);
  EXPECT_NE(kernel->explanation.find("B^T"), std::string::npos);
}

TEST_F(CudaGemmTemplateTest, RejectsWhatItCannotExpress) {
  std::unique_ptr<Spec> i64 = SpecFromText("mm_i64", kMatMulI64);
  std::unique_ptr<Spec> add = SpecFromText("add", kElementwise);
  ASSERT_TRUE(i64 && add);
  Status status = lt_->Supports(i64->view);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("i64"), std::string::npos) << status.ToString();
  status = lt_->Supports(add->view);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("not a GEMM"), std::string::npos) << status.ToString();
}

TEST_F(CudaGemmTemplateTest, RenderRejectsBadParams) {
  std::unique_ptr<Spec> spec = SpecFromText("mm_relu6", kMatMulBiasRelu6);
  ASSERT_NE(spec, nullptr);
  const Params params = DefaultParams(lt_->Space(spec->view));
  EXPECT_TRUE(lt_->Render(spec->view, params).ok());
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"epilogue", "lt"},  // not fusable here
                                                        {"algo", "4"},
                                                        {"workspace_mb", "8"},
                                                        {"compute", "tf32"},
                                                        {"unroll", "4"}}) {
    Params bad = params;
    bad[key] = value;
    EXPECT_FALSE(lt_->Render(spec->view, bad).ok()) << key << "=" << value;
  }
  Params missing = params;
  missing.erase("algo");
  EXPECT_FALSE(lt_->Render(spec->view, missing).ok());
}

// Each epilogue path, dtype and parameter value at least once, on GPT-2's GEMMs and hand-written
// specs; compiled with nvcc here, run through the harness where there is a GPU.
TEST_F(CudaGemmTemplateTest, PassesOnGpt2Gemms) {
  struct Case {
    const Spec* spec;
    Params params;
  };
  const std::vector<Case> cases = {
      {Gpt2F32("gemm+gelu_tanh 128x768x3072 f32"), WithParams("lt", "0", "32")},
      {Gpt2F16("gemm+gelu_tanh 128x768x3072 f16"), WithParams("lt", "1", "4")},
      {Gpt2F16("gemm+gelu_tanh 128x768x3072 f16"), WithParams("kernel", "0", "32")},
      {Gpt2F16("gemm+add 128x3072x768 f16"), WithParams("lt", "2", "32")},
      {Gpt2F32("gemm+add 128x3072x768 f32"), WithParams("kernel", "3", "4")},
      {Gpt2F32("gemm 128x768x2304 f32"), WithParams("lt", "0", "4")},
  };
  for (const Case& c : cases) {
    ASSERT_NE(c.spec, nullptr);
    ExpectCudaKernelPasses(evaluator_, *lt_, *c.spec, c.params);
  }
}

TEST_F(CudaGemmTemplateTest, PassesOnHandWrittenSpecs) {
  struct Case {
    const char* name;
    const char* text;
    Params params;
  };
  const std::vector<Case> cases = {
      {"bmm_f16", kBatchedF16, WithParams("lt", "2", "32")},
      {"gemm_trans_b", kGemmTransB, WithParams("lt", "3", "32")},
      {"gemm_trans_b", kGemmTransB, WithParams("kernel", "1", "4")},
      {"mm_bias_relu_bf16", kMatMulBiasReluBf16, WithParams("lt", "0", "32")},
      {"mm_bias_residual_bf16", kMatMulBiasResidualBf16, WithParams("lt", "1", "4")},
      {"bmm_broadcast_bf16", kBatchedBroadcastBf16, WithParams("kernel", "3", "32")},
      {"mm_odd", kMatMulOddEpilogue, WithParams("kernel", "0", "32")},
  };
  for (const Case& c : cases) {
    std::unique_ptr<Spec> spec = SpecFromText(c.name, c.text);
    ASSERT_NE(spec, nullptr) << c.name;
    ExpectCudaKernelPasses(evaluator_, *lt_, *spec, c.params);
  }
  std::unique_ptr<Spec> file = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(file, nullptr);
  ExpectCudaKernelPasses(evaluator_, *lt_, *file, WithParams("kernel", "2", "4"));
}

}  // namespace
}  // namespace kfleet::agents
