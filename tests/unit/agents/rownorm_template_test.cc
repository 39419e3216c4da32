#include "agents/rownorm_template.h"

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

const char* kRmsNorm = R"(<ir_version: 8, opset_import: ["" : 17]>
rmsnorm (float[4,128,512] in0, float[512] in1) => (float[4,128,512] out0) {
  two = Constant <value = float {2.0}> ()
  sq = Pow (in0, two)
  ms = ReduceMean <axes = [-1]> (sq)
  eps = Constant <value = float {0.000001}> ()
  mse = Add (ms, eps)
  rms = Sqrt (mse)
  inv = Reciprocal (rms)
  n = Mul (in0, inv)
  out0 = Mul (n, in1)
})";

const char* kSoftmax = R"(<ir_version: 8, opset_import: ["" : 17]>
softmax (float[1,12,128,128] in0) => (float[1,12,128,128] out0) {
  out0 = Softmax <axis = -1> (in0)
})";

const char* kLogSoftmax = R"(<ir_version: 8, opset_import: ["" : 17]>
log_softmax (float[64,1000] in0) => (float[64,1000] out0) {
  out0 = LogSoftmax <axis = -1> (in0)
})";

const char* kReduceMean = R"(<ir_version: 8, opset_import: ["" : 17]>
reduce_mean (float[32,256,49] in0) => (float[32,256,1] out0) {
  out0 = ReduceMean <axes = [-1], keepdims = 1> (in0)
})";

// Opset 18 axes as an input, a fused square before and a per-row Add after.
const char* kReduceSumSquares = R"(<ir_version: 8, opset_import: ["" : 18]>
reduce_sum (float[16,64,300] in0, float[16,64] in1) => (float[16,64] out0) {
  axes = Constant <value = int64[1] {-1}> ()
  sq = Mul (in0, in0)
  s = ReduceSum <keepdims = 0> (sq, axes)
  out0 = Add (s, in1)
})";

const char* kReduceMax = R"(<ir_version: 8, opset_import: ["" : 17]>
reduce_max (float[8,32,7,7] in0) => (float[8,32] out0) {
  out0 = ReduceMax <axes = [2, 3], keepdims = 0> (in0)
})";

// A residual Add before the norm and a Relu after it.
const char* kResidualLayerNorm = R"(<ir_version: 8, opset_import: ["" : 17]>
residual_ln (float[8,64,256] in0, float[8,64,256] in1, float[256] in2, float[256] in3)
    => (float[8,64,256] out0) {
  sum = Add (in0, in1)
  ln = LayerNormalization <axis = -1, epsilon = 0.00001> (sum, in2, in3)
  out0 = Relu (ln)
})";

// Every parameter point the harness tests restricts itself to the parameters the spec's Space()
// has (reductions have no `passes`, ReduceMax no `accumulate`).
Params PointFor(const TemplateFamily& family, const Spec& spec, const Params& point) {
  Params params;
  for (const ParamSpace& p : family.Space(spec.view)) {
    auto it = point.find(p.name);
    params[p.name] = it != point.end() ? it->second : p.values.front();
  }
  return params;
}

const Params kDefault = {};
const Params kOnePassF64Serial = {
    {"passes", "one"}, {"threads", "1"}, {"rows_per_task", "1"}, {"accumulate", "f64"}};
const Params kOnePassF32Tasks32 = {
    {"passes", "one"}, {"threads", "all"}, {"rows_per_task", "32"}, {"accumulate", "f32"}};
const Params kTwoPassF64Tasks1 = {
    {"passes", "two"}, {"threads", "all"}, {"rows_per_task", "1"}, {"accumulate", "f64"}};

class RowNormTemplateTest : public ::testing::Test {
 protected:
  void ExpectPasses(const Spec& spec, const std::vector<Params>& points) {
    for (const Params& point : points) {
      ExpectRenderedKernelPasses(evaluator_, *family_, spec, PointFor(*family_, spec, point));
    }
  }

  std::unique_ptr<TemplateFamily> family_ = MakeRowNormTemplate();
  Evaluator evaluator_;
};

TEST_F(RowNormTemplateTest, SupportsRowPatterns) {
  for (const char* text : {kRmsNorm, kSoftmax, kLogSoftmax, kReduceMean, kReduceSumSquares,
                           kReduceMax, kResidualLayerNorm}) {
    auto spec = SpecFromText("spec", text);
    ASSERT_NE(spec, nullptr) << text;
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << text << "\n"
                                                    << family_->Supports(spec->view).ToString();
  }
  for (const char* file :
       {"layernorm_decomposed_1x128x768.onnxtxt", "layernorm_128x1024.onnxtxt"}) {
    auto spec = SpecFromFile(file);
    ASSERT_NE(spec, nullptr);
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << file;
  }
}

TEST_F(RowNormTemplateTest, RejectsWhatItCannotIndexWithAReason) {
  struct Case {
    const char* text;
    const char* reason;
  };
  const Case cases[] = {
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float[4,8] in0, float[8,8] in1) => (float[4,8] out0) { out0 = MatMul (in0, in1) })",
       "family 'gemm'"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float[4,8,16] in0) => (float[4,8,16] out0) { out0 = Softmax <axis = 1> (in0) })",
       "last axis"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float[4,8,16] in0) => (float[4,1,16] out0) {
            out0 = ReduceMean <axes = [1]> (in0)
          })",
       "trailing contiguous axes"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float16[4,8] in0) => (float16[4,8] out0) { out0 = Softmax (in0) })",
       "f16"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float[4,8] in0, float[8] in1) => (float[4,8] out0, float[4,1] out1) {
            out0, out1 = LayerNormalization <axis = -1> (in0, in1)
          })",
       "one output"},
      // A bias that varies along the rows' first axis only cannot be indexed by row or column.
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          g (float[4,8,16] in0, float[8,1] in1, float[16] in2) => (float[4,8,16] out0) {
            a = Add (in0, in1)
            out0 = LayerNormalization <axis = -1> (a, in2)
          })",
       "broadcasts against"},
  };
  for (const Case& c : cases) {
    auto spec = SpecFromText("reject", c.text);
    ASSERT_NE(spec, nullptr) << c.text;
    Status status = family_->Supports(spec->view);
    EXPECT_FALSE(status.ok()) << c.text;
    EXPECT_NE(status.message().find(c.reason), std::string::npos) << status.ToString();
  }
}

TEST_F(RowNormTemplateTest, SpaceFitsTheKindAndRenderChecksParams) {
  auto softmax = SpecFromText("softmax", kSoftmax);
  auto reduce_max = SpecFromText("reduce_max", kReduceMax);
  ASSERT_NE(softmax, nullptr);
  ASSERT_NE(reduce_max, nullptr);
  std::vector<std::string> names;
  for (const ParamSpace& p : family_->Space(softmax->view)) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"passes", "threads", "rows_per_task", "accumulate"}));
  names.clear();
  for (const ParamSpace& p : family_->Space(reduce_max->view)) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"threads", "rows_per_task"}));

  const Params good = DefaultParams(family_->Space(softmax->view));
  EXPECT_TRUE(family_->Render(softmax->view, good).ok());
  Params bad = good;
  bad["rows_per_task"] = "7";
  Result<RenderedKernel> rendered = family_->Render(softmax->view, bad);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("rows_per_task"), std::string::npos);
  Params missing = good;
  missing.erase("passes");
  EXPECT_FALSE(family_->Render(softmax->view, missing).ok());
  Params unknown = DefaultParams(family_->Space(reduce_max->view));
  unknown["accumulate"] = "f64";
  EXPECT_FALSE(family_->Render(reduce_max->view, unknown).ok());
}

TEST_F(RowNormTemplateTest, EveryParameterChangesTheSource) {
  auto spec = SpecFromFile("layernorm_decomposed_1x128x768.onnxtxt");
  ASSERT_NE(spec, nullptr);
  const std::vector<ParamSpace> space = family_->Space(spec->view);
  const Params base = DefaultParams(space);
  Result<RenderedKernel> reference = family_->Render(spec->view, base);
  ASSERT_TRUE(reference.ok());
  for (const ParamSpace& p : space) {
    for (const std::string& value : p.values) {
      if (value == base.at(p.name)) continue;
      Params changed = base;
      changed[p.name] = value;
      Result<RenderedKernel> other = family_->Render(spec->view, changed);
      ASSERT_TRUE(other.ok());
      EXPECT_NE(other->source, reference->source) << p.name << "=" << value;
    }
  }
}

TEST_F(RowNormTemplateTest, Gpt2LayerNormPasses) {
  std::vector<std::unique_ptr<Spec>> specs = ModelSpecs("gpt2-small_b1s128.onnx");
  const Spec* layernorm = nullptr;
  for (const auto& spec : specs) {
    if (spec->view.family == "layernorm" && layernorm == nullptr) layernorm = spec.get();
  }
  ASSERT_NE(layernorm, nullptr);
  ASSERT_TRUE(family_->Supports(layernorm->view).ok())
      << family_->Supports(layernorm->view).ToString();
  ExpectPasses(*layernorm, {kDefault, kOnePassF64Serial});
}

TEST_F(RowNormTemplateTest, TinyGpt2RowJobsPass) {
  std::vector<std::unique_ptr<Spec>> specs = ModelSpecs("tinygpt2_1.onnx");
  int tested = 0;
  for (const auto& spec : specs) {
    const std::string& family = spec->view.family;
    if (family != "layernorm" && family != "rmsnorm" && family != "softmax" &&
        family != "log_softmax" && family != "reduce") {
      continue;
    }
    ASSERT_TRUE(family_->Supports(spec->view).ok())
        << spec->name << ": " << family_->Supports(spec->view).ToString();
    ExpectPasses(*spec, {kDefault, kOnePassF32Tasks32});
    ++tested;
  }
  EXPECT_GT(tested, 0);
}

TEST_F(RowNormTemplateTest, ResNet50GlobalAverageReductionPasses) {
  std::vector<std::unique_ptr<Spec>> specs = ModelSpecs("resnet50_b8.onnx");
  const Spec* reduce = nullptr;
  for (const auto& spec : specs) {
    if (spec->view.family == "reduce" && reduce == nullptr) reduce = spec.get();
  }
  ASSERT_NE(reduce, nullptr);
  ExpectPasses(*reduce, {kDefault, kTwoPassF64Tasks1});
}

TEST_F(RowNormTemplateTest, DecomposedLayerNormPasses) {
  auto spec = SpecFromFile("layernorm_decomposed_1x128x768.onnxtxt");
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kDefault, kOnePassF64Serial, kOnePassF32Tasks32, kTwoPassF64Tasks1});
}

TEST_F(RowNormTemplateTest, FusedLayerNormPasses) {
  auto spec = SpecFromFile("layernorm_128x1024.onnxtxt");
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kDefault, kOnePassF32Tasks32});
}

TEST_F(RowNormTemplateTest, ResidualLayerNormReluPasses) {
  auto spec = SpecFromText("residual_ln", kResidualLayerNorm);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kTwoPassF64Tasks1});
}

TEST_F(RowNormTemplateTest, RmsNormPasses) {
  auto spec = SpecFromText("rmsnorm", kRmsNorm);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kDefault, kOnePassF64Serial});
}

TEST_F(RowNormTemplateTest, SoftmaxPasses) {
  auto spec = SpecFromText("softmax", kSoftmax);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kDefault, kOnePassF64Serial, kOnePassF32Tasks32});
}

TEST_F(RowNormTemplateTest, LogSoftmaxPasses) {
  auto spec = SpecFromText("log_softmax", kLogSoftmax);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, {kDefault, kOnePassF64Serial, kTwoPassF64Tasks1});
}

TEST_F(RowNormTemplateTest, ReductionsPass) {
  auto mean = SpecFromText("reduce_mean", kReduceMean);
  auto sum = SpecFromText("reduce_sum", kReduceSumSquares);
  auto max = SpecFromText("reduce_max", kReduceMax);
  ASSERT_NE(mean, nullptr);
  ASSERT_NE(sum, nullptr);
  ASSERT_NE(max, nullptr);
  ExpectPasses(*mean, {kDefault, kOnePassF64Serial});
  ExpectPasses(*sum, {kOnePassF32Tasks32});
  ExpectPasses(*max, {kDefault});
}

TEST_F(RowNormTemplateTest, ProfilesDefaultOnDecomposedLayerNorm) {
  auto spec = SpecFromFile("layernorm_decomposed_1x128x768.onnxtxt");
  ASSERT_NE(spec, nullptr);
  Result<RenderedKernel> kernel =
      family_->Render(spec->view, DefaultParams(family_->Space(spec->view)));
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  eval::EvalReport report = evaluator_.Evaluate(*spec, kernel->source, /*profile=*/true);
  EXPECT_TRUE(report.passed) << report.failed_stage << ": " << report.reason;
  EXPECT_TRUE(report.StageFor(eval::Stage::kProfile).passed);
  ASSERT_TRUE(report.profile.has_value());
  std::printf("rownorm default on layernorm_decomposed_1x128x768: %s\n",
              kernel->explanation.c_str());
  std::printf("  candidate %.2f us, baseline %.2f us: speedup %.2fx\n",
              report.profile->candidate.median_us, report.profile->baseline.median_us,
              report.profile->speedup);
}

}  // namespace
}  // namespace kfleet::agents
