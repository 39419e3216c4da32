#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "agents/attention_analysis.h"
#include "agents/cuda_templates.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using planner::DType;
using testing::CudaEvaluator;
using testing::ExpectCudaKernelPasses;
using testing::Spec;
using testing::SpecFromText;

// Separate Q, K, V already split into heads, K longer than Q (cross attention), Div for the
// scale, no mask: every size is read at run time, the head dim too. (K and V pass through a
// scaling: an input only ever multiplied from the right would be imported as a weight.)
const char* kSeparateHeads = R"(<ir_version: 8, opset_import: ["" : 17]>
attn_heads (float[2,4,40,32] in0, float[2,4,56,32] in1, float[2,4,56,32] in2)
    => (float[2,4,40,32] out0) {
  half = Constant <value = float {0.5}> ()
  k = Mul (in1, half)
  kt = Transpose <perm = [0, 1, 3, 2]> (k)
  qk = MatMul (in0, kt)
  c = Constant <value = float {2.828427}> ()
  s = Div (qk, c)
  p = Softmax <axis = -1> (s)
  v = Mul (in2, half)
  out0 = MatMul (p, v)
})";

// Q, K, V as separate [batch, seq, hidden] inputs split into heads by one Reshape, a boolean mask
// through Where, the heads merged back into the hidden axis.
const char* kBoolMask = R"(<ir_version: 8, opset_import: ["" : 17]>
attn_bool (float16[1,48,128] in0, float16[1,48,128] in1, float16[1,48,128] in2,
           bool[1,1,48,48] in3) => (float16[1,48,128] out0) {
  shape = Constant <value = int64[4] {1, 48, 2, 64}> ()
  q4 = Reshape (in0, shape)
  k4 = Reshape (in1, shape)
  v4 = Reshape (in2, shape)
  q = Transpose <perm = [0, 2, 1, 3]> (q4)
  kt = Transpose <perm = [0, 2, 3, 1]> (k4)
  v = Transpose <perm = [0, 2, 1, 3]> (v4)
  qk = MatMul (q, kt)
  c32 = Constant <value = float {0.125}> ()
  c = Cast <to = 10> (c32)
  s = Mul (qk, c)
  fill32 = Constant <value = float {-10000.0}> ()
  fill = Cast <to = 10> (fill32)
  m = Where (in3, s, fill)
  p = Softmax <axis = -1> (m)
  o = MatMul (p, v)
  ot = Transpose <perm = [0, 2, 1, 3]> (o)
  oshape = Constant <value = int64[3] {1, 48, 128}> ()
  out0 = Reshape (ot, oshape)
})";

const char* kMatMul = R"(<ir_version: 8, opset_import: ["" : 17]>
mm (float[64,96] in0, float[96,80] in1) => (float[64,80] out0) {
  out0 = MatMul (in0, in1)
})";

class CudaAttentionTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { evaluator_ = new CudaEvaluator(); }
  static void TearDownTestSuite() {
    delete evaluator_;
    evaluator_ = nullptr;
  }

  // The attention job of a bundled model planned in `dtype` (the model's other jobs are not
  // imported again: their templates are not this test's business).
  static std::unique_ptr<Spec> ModelAttention(const std::string& model, DType dtype) {
    planner::ImportOptions import;
    import.compute_dtype = dtype;
    Result<planner::DeviceModel> device = planner::DeviceCatalog::Builtin().Find("h200");
    EXPECT_TRUE(device.ok());
    if (!device.ok()) return nullptr;
    Result<planner::PlannedModel> planned =
        planner::PlanOnnxFile(testing::ModelPath(model), import, *device, {});
    EXPECT_TRUE(planned.ok()) << planned.status().ToString();
    if (!planned.ok()) return nullptr;
    for (const auto& job : planned->plan.jobs) {
      if (job.spec.family == "attention") {
        return testing::SpecFromBytes(job.spec.name, job.spec.onnx_model);
      }
    }
    ADD_FAILURE() << model << " has no attention job";
    return nullptr;
  }

  void ExpectPasses(const Spec& spec, const Params& params) {
    ExpectCudaKernelPasses(*evaluator_, *family_, spec, params);
  }

  static CudaEvaluator* evaluator_;
  std::unique_ptr<TemplateFamily> family_ = MakeCudaAttentionTemplate();
};

CudaEvaluator* CudaAttentionTemplateTest::evaluator_ = nullptr;

Params P(const std::string& block_m, const std::string& block_n, const std::string& warps,
         const std::string& mma = "") {
  Params params = {{"block_m", block_m}, {"block_n", block_n}, {"warps", warps}};
  if (!mma.empty()) params["mma"] = mma;
  return params;
}

TEST_F(CudaAttentionTemplateTest, ReadsTinyGpt2FusedQkv) {
  std::unique_ptr<Spec> spec = ModelAttention("tinygpt2_1.onnx", DType::kF32);
  ASSERT_NE(spec, nullptr);
  ASSERT_TRUE(family_->Supports(spec->view).ok()) << family_->Supports(spec->view).ToString();
  Result<AttentionPlan> plan = AnalyzeAttention(spec->view);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->batch, 1);
  EXPECT_EQ(plan->heads, 4);
  EXPECT_EQ(plan->seq_q, 32);
  EXPECT_EQ(plan->seq_kv, 32);
  EXPECT_EQ(plan->head_dim, 16);
  for (const HeadOperand* op : {&plan->q, &plan->k, &plan->v}) {
    EXPECT_TRUE(op->packed);
    EXPECT_EQ(op->input, 0);
    EXPECT_EQ(op->parts, 3);
    EXPECT_EQ(op->fixed_head_dim, 16);  // Reshape [1, 32, -1, 16]: the head count is derived
    EXPECT_EQ(op->fixed_heads, 0);
  }
  EXPECT_EQ(plan->q.part, 0);
  EXPECT_EQ(plan->k.part, 1);
  EXPECT_EQ(plan->v.part, 2);
  EXPECT_TRUE(plan->head_dim_fixed);
  EXPECT_FALSE(plan->out_heads_major);
  ASSERT_EQ(plan->operands.size(), 1u);
  EXPECT_EQ(plan->operands[0].input, 1);
  // sqrt(1/sqrt(16)) on Q and on K, then the additive mask.
  EXPECT_EQ(plan->score_steps,
            (std::vector<std::string>{"s = s * 0.5f;", "s = s * 0.5f;", "s = s + x0;"}));
  EXPECT_TRUE(plan->zero_masked_rows);  // Where(IsNaN(P), 0, P)
}

TEST_F(CudaAttentionTemplateTest, ReadsGpt2SmallBf16) {
  std::unique_ptr<Spec> spec = ModelAttention("gpt2-small_b1s128.onnx", DType::kBF16);
  ASSERT_NE(spec, nullptr);
  Result<AttentionPlan> plan = AnalyzeAttention(spec->view);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->dtype, DType::kBF16);
  EXPECT_EQ(plan->heads, 12);
  EXPECT_EQ(plan->seq_q, 128);
  EXPECT_EQ(plan->head_dim, 64);
  EXPECT_EQ(plan->k.part, 1);
  EXPECT_EQ(plan->score_steps, (std::vector<std::string>{"s = s * 0.125f;", "s = s + x0;"}));
  EXPECT_NE(plan->description.find("fused QKV"), std::string::npos) << plan->description;
}

TEST_F(CudaAttentionTemplateTest, ReadsSeparateHeadInputs) {
  std::unique_ptr<Spec> spec = SpecFromText("attn_heads", kSeparateHeads);
  ASSERT_NE(spec, nullptr);
  Result<AttentionPlan> plan = AnalyzeAttention(spec->view);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->seq_q, 40);
  EXPECT_EQ(plan->seq_kv, 56);
  EXPECT_FALSE(plan->q.packed);
  EXPECT_EQ(plan->k.input, 1);
  EXPECT_EQ(plan->k.axis, (std::array<int, 4>{0, 1, 2, 3}));
  EXPECT_FALSE(plan->head_dim_fixed);
  EXPECT_TRUE(plan->out_heads_major);
  EXPECT_TRUE(plan->operands.empty());
  EXPECT_EQ(plan->score_steps, (std::vector<std::string>{"s = s * 0.5f;", "s = s / 2.82842708f;"}));
  EXPECT_EQ(plan->out_scale, 0.5);
}

TEST_F(CudaAttentionTemplateTest, ReadsBooleanMask) {
  std::unique_ptr<Spec> spec = SpecFromText("attn_bool", kBoolMask);
  ASSERT_NE(spec, nullptr);
  Result<AttentionPlan> plan = AnalyzeAttention(spec->view);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->q.packed);
  EXPECT_EQ(plan->q.parts, 1);
  EXPECT_EQ(plan->v.input, 2);
  ASSERT_EQ(plan->operands.size(), 1u);
  EXPECT_EQ(plan->operands[0].dtype, DType::kBool);
  EXPECT_EQ(plan->score_steps.back(), "s = c0 ? s : (-10000.0f);");
}

TEST_F(CudaAttentionTemplateTest, RejectsWhatIsNotAttention) {
  std::unique_ptr<Spec> mm = SpecFromText("mm", kMatMul);
  ASSERT_NE(mm, nullptr);
  Status status = family_->Supports(mm->view);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("not attention"), std::string::npos) << status.ToString();
}

TEST_F(CudaAttentionTemplateTest, RenderChecksParameters) {
  std::unique_ptr<Spec> spec = SpecFromText("attn_heads", kSeparateHeads);
  ASSERT_NE(spec, nullptr);
  const std::vector<ParamSpace> space = family_->Space(spec->view);
  EXPECT_EQ(space.size(), 3u);  // no mma switch for f32
  EXPECT_TRUE(family_->Render(spec->view, DefaultParams(space)).ok());
  Result<RenderedKernel> narrow = family_->Render(spec->view, P("16", "32", "8"));
  ASSERT_FALSE(narrow.ok());
  EXPECT_NE(narrow.status().message().find("keys per warp"), std::string::npos)
      << narrow.status().ToString();
  EXPECT_FALSE(family_->Render(spec->view, P("16", "64", "4", "on")).ok());  // unknown for f32
  EXPECT_FALSE(family_->Render(spec->view, P("48", "64", "4")).ok());
}

// Every parameter value at least once, each dtype, each spec layout; about ten nvcc builds.
TEST_F(CudaAttentionTemplateTest, TinyGpt2Passes) {
  std::unique_ptr<Spec> f32 = ModelAttention("tinygpt2_1.onnx", DType::kF32);
  std::unique_ptr<Spec> f16 = ModelAttention("tinygpt2_1.onnx", DType::kF16);
  std::unique_ptr<Spec> bf16 = ModelAttention("tinygpt2_1.onnx", DType::kBF16);
  ASSERT_TRUE(f32 && f16 && bf16);
  ExpectPasses(*f32, DefaultParams(family_->Space(f32->view)));
  ExpectPasses(*f16, P("32", "32", "2", "on"));
  ExpectPasses(*bf16, P("64", "128", "8", "on"));
  ExpectPasses(*bf16, P("64", "64", "2", "off"));
}

TEST_F(CudaAttentionTemplateTest, Gpt2SmallPasses) {
  std::unique_ptr<Spec> bf16 = ModelAttention("gpt2-small_b1s128.onnx", DType::kBF16);
  std::unique_ptr<Spec> f16 = ModelAttention("gpt2-small_b1s128.onnx", DType::kF16);
  ASSERT_TRUE(bf16 && f16);
  ExpectPasses(*bf16, DefaultParams(family_->Space(bf16->view)));
  ExpectPasses(*f16, P("16", "128", "8", "on"));
}

TEST_F(CudaAttentionTemplateTest, SeparateHeadsPass) {
  std::unique_ptr<Spec> spec = SpecFromText("attn_heads", kSeparateHeads);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, P("32", "64", "4"));
}

TEST_F(CudaAttentionTemplateTest, BooleanMaskPasses) {
  std::unique_ptr<Spec> spec = SpecFromText("attn_bool", kBoolMask);
  ASSERT_NE(spec, nullptr);
  ExpectPasses(*spec, P("64", "64", "4", "on"));
  ExpectPasses(*spec, P("16", "32", "2", "off"));
}

}  // namespace
}  // namespace kfleet::agents
