#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

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

const char* kLayerNormBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
layernorm_bf16 (bfloat16[64,768] in0, bfloat16[768] in1, bfloat16[768] in2) => (bfloat16[64,768] out0) {
  out0 = LayerNormalization <axis = -1, epsilon = 0.00001> (in0, in1, in2)
})";

// A residual Add before the norm and a Relu after it, in f16.
const char* kResidualLayerNorm = R"(<ir_version: 8, opset_import: ["" : 17]>
residual_ln_f16 (float16[4,32,512] in0, float16[4,32,512] in1, float16[512] in2, float16[512] in3)
    => (float16[4,32,512] out0) {
  sum = Add (in0, in1)
  ln = LayerNormalization <axis = -1, epsilon = 0.00001> (sum, in2, in3)
  out0 = Relu (ln)
})";

// RMSNorm as x / sqrt(mean(x * x) + eps) * w, in f16.
const char* kRmsNorm = R"(<ir_version: 8, opset_import: ["" : 17]>
rmsnorm_f16 (float16[2,64,1024] in0, float16[1024] in1) => (float16[2,64,1024] out0) {
  sq = Mul (in0, in0)
  ms = ReduceMean <axes = [-1]> (sq)
  e = Constant <value = float {0.00001}> ()
  eps = Cast <to = 10> (e)
  mse = Add (ms, eps)
  rms = Sqrt (mse)
  n = Div (in0, rms)
  out0 = Mul (n, in1)
})";

// GPT-2's attention probabilities.
const char* kSoftmax = R"(<ir_version: 8, opset_import: ["" : 17]>
attention_probs (float[1,12,128,128] in0) => (float[1,12,128,128] out0) {
  out0 = Softmax <axis = -1> (in0)
})";

const char* kSoftmaxF16 = R"(<ir_version: 8, opset_import: ["" : 17]>
softmax_f16 (float16[1,12,128,128] in0) => (float16[1,12,128,128] out0) {
  out0 = Softmax <axis = -1> (in0)
})";

// A vocabulary-sized row: longer than the registers hold, so every pass streams it.
const char* kLongSoftmax = R"(<ir_version: 8, opset_import: ["" : 17]>
long_softmax (float[8,20000] in0) => (float[8,20000] out0) {
  out0 = Softmax <axis = -1> (in0)
})";

// An odd row length: no 16-byte packs.
const char* kLogSoftmax = R"(<ir_version: 8, opset_import: ["" : 17]>
log_softmax_bf16 (bfloat16[32,777] in0) => (bfloat16[32,777] out0) {
  out0 = LogSoftmax <axis = -1> (in0)
})";

const char* kReduceMean = R"(<ir_version: 8, opset_import: ["" : 17]>
reduce_mean_f16 (float16[16,128,49] in0) => (float16[16,128,1] out0) {
  out0 = ReduceMean <axes = [-1], keepdims = 1> (in0)
})";

// Opset 18 axes as an input over two trailing axes, a fused product before and a per-row scale
// after.
const char* kReduceSumProducts = R"(<ir_version: 8, opset_import: ["" : 18]>
reduce_sum (float[8,16,12,25] in0, float[8,16,12,25] in1, float[8,16,1,1] in2)
    => (float[8,16,1,1] out0) {
  axes = Constant <value = int64[2] {-2, -1}> ()
  p = Mul (in0, in1)
  s = ReduceSum <keepdims = 1> (p, axes)
  out0 = Mul (s, in2)
})";

const char* kReduceMaxBf16 = R"(<ir_version: 8, opset_import: ["" : 17]>
reduce_max (bfloat16[8,32,7,7] in0) => (bfloat16[8,32] out0) {
  out0 = ReduceMax <axes = [2, 3], keepdims = 0> (in0)
})";

std::unique_ptr<Spec> MustParse(const std::string& name, const char* text) {
  std::unique_ptr<Spec> spec = SpecFromText(name, text);
  EXPECT_NE(spec, nullptr) << name;
  return spec;
}

std::unique_ptr<Spec> Gpt2LayerNorm() {
  for (auto& spec : ModelSpecs("gpt2-small_b1s128.onnx")) {
    if (spec->view.family == "layernorm") return std::move(spec);
  }
  return nullptr;
}

class CudaRowNormTemplateTest : public ::testing::Test {
 protected:
  // The spec's default parameters with those of `overrides` its space has (reductions have no
  // `passes`).
  Params Point(const Spec& spec, const Params& overrides) const {
    Params params = DefaultParams(family_->Space(spec.view));
    for (const auto& [name, value] : overrides) {
      if (params.count(name) != 0) params[name] = value;
    }
    return params;
  }

  void ExpectPasses(const Spec& spec, const std::vector<Params>& points) {
    for (const Params& point : points) {
      ExpectCudaKernelPasses(evaluator_, *family_, spec, Point(spec, point));
    }
  }

  std::unique_ptr<TemplateFamily> family_ = MakeCudaRowNormTemplate();
  CudaEvaluator evaluator_;
};

TEST_F(CudaRowNormTemplateTest, SupportsRowPatternsInEveryFloatType) {
  EXPECT_EQ(family_->name(), "cuda_rownorm");
  for (const char* text :
       {kLayerNormBf16, kResidualLayerNorm, kRmsNorm, kSoftmax, kSoftmaxF16, kLongSoftmax,
        kLogSoftmax, kReduceMean, kReduceSumProducts, kReduceMaxBf16}) {
    auto spec = MustParse("spec", text);
    ASSERT_NE(spec, nullptr);
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << text << "\n"
                                                    << family_->Supports(spec->view).ToString();
  }
  for (const char* file : {"layernorm_decomposed_1x128x768.onnxtxt", "layernorm_128x1024.onnxtxt",
                           "layernorm_f16_128x1024.onnxtxt"}) {
    auto spec = SpecFromFile(file);
    ASSERT_NE(spec, nullptr);
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << file;
  }
  auto gpt2 = Gpt2LayerNorm();
  ASSERT_NE(gpt2, nullptr);
  EXPECT_TRUE(family_->Supports(gpt2->view).ok()) << family_->Supports(gpt2->view).ToString();
}

TEST_F(CudaRowNormTemplateTest, RejectsWhatItCannotIndexWithAReason) {
  // Each spec with a phrase the reason must hold.
  const std::pair<const char*, const char*> rejected[] = {
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          mm (float[3,5] in0, float[5,2] in1) => (float[3,2] out0) { out0 = MatMul (in0, in1) })",
       "family 'gemm'"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          columns (float[6,10] in0) => (float[6,10] out0) { out0 = Softmax <axis = 0> (in0) })",
       "last axis"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          f64 (double[6,10] in0) => (double[6,10] out0) { out0 = LogSoftmax (in0) })",
       "f32, f16 and bf16 only"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          stats (float[6,10] in0, float[10] in1) => (float[6,10] out0, float[6,1] out1) {
            out0, out1 = LayerNormalization <axis = -1> (in0, in1)
          })",
       "one output"},
  };
  for (const auto& [text, reason] : rejected) {
    auto spec = MustParse("reject", text);
    ASSERT_NE(spec, nullptr);
    const Status status = family_->Supports(spec->view);
    EXPECT_NE(status.message().find(reason), std::string::npos) << text << "\n"
                                                                << status.ToString();
  }
}

TEST_F(CudaRowNormTemplateTest, SpaceFitsTheKindAndTheRowLength) {
  auto layernorm = SpecFromFile("layernorm_128x1024.onnxtxt");
  auto softmax = MustParse("softmax", kSoftmax);
  auto long_softmax = MustParse("long_softmax", kLongSoftmax);
  auto reduce = MustParse("reduce_mean", kReduceMean);
  ASSERT_TRUE(layernorm && softmax && long_softmax && reduce);
  EXPECT_EQ(DefaultParams(family_->Space(layernorm->view)), (Params{{"row_threads", "warp"},
                                                                    {"block", "256"},
                                                                    {"cache", "registers"},
                                                                    {"passes", "two"},
                                                                    {"loads", "16B"}}));
  EXPECT_EQ(family_->Space(softmax->view)[3].values, (std::vector<std::string>{"three", "online"}));
  // Rows longer than any configuration keeps in registers: the most threads, read once less.
  const Params long_rows = DefaultParams(family_->Space(long_softmax->view));
  EXPECT_EQ(long_rows.at("row_threads"), "block");
  EXPECT_EQ(long_rows.at("block"), "512");
  EXPECT_EQ(long_rows.at("passes"), "online");
  std::vector<std::string> names;
  for (const ParamSpace& p : family_->Space(reduce->view)) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"row_threads", "block", "cache", "loads"}));
}

TEST_F(CudaRowNormTemplateTest, RenderRejectsBadParams) {
  auto softmax = MustParse("softmax", kSoftmax);
  auto reduce = MustParse("reduce_mean", kReduceMean);
  ASSERT_TRUE(softmax && reduce);
  const Params good = DefaultParams(family_->Space(softmax->view));
  EXPECT_TRUE(family_->Render(softmax->view, good).ok());
  Params bad = good;
  bad["block"] = "1024";
  Result<RenderedKernel> rendered = family_->Render(softmax->view, bad);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("'block' cannot be '1024'"), std::string::npos);
  bad = good;
  bad["passes"] = "welford";  // LayerNorm's, not softmax's
  EXPECT_FALSE(family_->Render(softmax->view, bad).ok());
  bad = good;
  bad.erase("loads");
  EXPECT_FALSE(family_->Render(softmax->view, bad).ok());
  Params unknown = DefaultParams(family_->Space(reduce->view));
  unknown["passes"] = "two";
  rendered = family_->Render(reduce->view, unknown);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("unknown parameter 'passes'"), std::string::npos);
}

TEST_F(CudaRowNormTemplateTest, EveryParameterChangesTheSource) {
  auto spec = SpecFromFile("layernorm_decomposed_1x128x768.onnxtxt");
  ASSERT_NE(spec, nullptr);
  const std::vector<ParamSpace> space = family_->Space(spec->view);
  const Params base = DefaultParams(space);
  Result<RenderedKernel> reference = family_->Render(spec->view, base);
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();
  for (const ParamSpace& p : space) {
    for (const std::string& value : p.values) {
      if (value == base.at(p.name)) continue;
      Result<RenderedKernel> other = family_->Render(spec->view, Point(*spec, {{p.name, value}}));
      ASSERT_TRUE(other.ok());
      EXPECT_NE(other->source, reference->source) << p.name << "=" << value;
    }
  }
}

// Every parameter value at least once across the LayerNorms, in f32, f16 and bf16.
TEST_F(CudaRowNormTemplateTest, LayerNormsPass) {
  auto gpt2 = Gpt2LayerNorm();
  auto f16 = SpecFromFile("layernorm_f16_128x1024.onnxtxt");
  auto bf16 = MustParse("layernorm_bf16", kLayerNormBf16);
  auto decomposed = SpecFromFile("layernorm_decomposed_1x128x768.onnxtxt");
  auto residual = MustParse("residual_ln", kResidualLayerNorm);
  ASSERT_TRUE(gpt2 && f16 && bf16 && decomposed && residual);
  ExpectPasses(*gpt2, {Params{}, Params{{"row_threads", "block"},
                                        {"block", "128"},
                                        {"cache", "none"},
                                        {"passes", "welford"},
                                        {"loads", "scalar"}}});
  ExpectPasses(
      *f16, {Params{}, Params{{"row_threads", "block"}, {"block", "512"}, {"passes", "welford"}}});
  ExpectPasses(*bf16, {Params{}});
  ExpectPasses(*decomposed, {Params{{"block", "512"}, {"cache", "none"}}});
  ExpectPasses(*residual, {Params{{"block", "128"}, {"passes", "welford"}, {"loads", "scalar"}}});
}

TEST_F(CudaRowNormTemplateTest, SoftmaxesPass) {
  auto softmax_f32 = MustParse("softmax", kSoftmax);
  auto f16 = MustParse("softmax_f16", kSoftmaxF16);
  auto long_rows = MustParse("long_softmax", kLongSoftmax);
  auto log = MustParse("log_softmax", kLogSoftmax);
  ASSERT_TRUE(softmax_f32 && f16 && long_rows && log);
  ExpectPasses(*softmax_f32, {Params{}, Params{{"row_threads", "block"}, {"passes", "online"}}});
  ExpectPasses(*f16, {Params{{"block", "128"}, {"cache", "none"}, {"passes", "online"}}});
  ExpectPasses(*long_rows, {Params{}});
  ExpectPasses(*log,
               {Params{}, Params{{"row_threads", "block"}, {"block", "512"}, {"loads", "scalar"}}});
}

TEST_F(CudaRowNormTemplateTest, RmsNormAndReductionsPass) {
  auto rms = MustParse("rmsnorm", kRmsNorm);
  auto mean = MustParse("reduce_mean", kReduceMean);
  auto sum = MustParse("reduce_sum", kReduceSumProducts);
  auto max = MustParse("reduce_max_bf16", kReduceMaxBf16);
  ASSERT_TRUE(rms && mean && sum && max);
  ExpectPasses(*rms, {Params{}});
  ExpectPasses(*mean, {Params{}});
  ExpectPasses(*sum, {Params{{"row_threads", "block"}, {"block", "128"}, {"cache", "none"}}});
  ExpectPasses(*max, {Params{}});
}

}  // namespace
}  // namespace kfleet::agents
