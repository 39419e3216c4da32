#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agents/cuda_templates.h"
#include "agents/elementwise_template.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::CudaEvaluator;
using testing::ExpectCudaKernelPasses;
using testing::ModelSpecs;
using testing::Spec;
using testing::SpecFromFile;
using testing::SpecFromText;

// GPT-2's MLP activation as its export writes it, with the up-projection's bias added first: the
// bias broadcasts over the rows, so the kernel takes the strided path. $T is the element type;
// constants are f32 cast to it (the ONNX text parser reads no half literals; the importer folds
// the casts).
constexpr const char* kBiasGeluTanh = R"(<ir_version: 8, opset_import: ["" : 17]>
    g ($T[1,128,3072] in0, $T[3072] in1) => ($T[1,128,3072] out0) {
      c3 = Constant <value = float {3.0}> ()
      cc = Constant <value = float {0.044715}> ()
      cs = Constant <value = float {0.7978845608028654}> ()
      c1 = Constant <value = float {1.0}> ()
      ch = Constant <value = float {0.5}> ()
      three = Cast <to = $TO> (c3)
      c = Cast <to = $TO> (cc)
      s = Cast <to = $TO> (cs)
      one = Cast <to = $TO> (c1)
      half = Cast <to = $TO> (ch)
      x = Add (in0, in1)
      h = Mul (x, half)
      p = Pow (x, three)
      t1 = Mul (p, c)
      t2 = Add (x, t1)
      t3 = Mul (t2, s)
      t4 = Tanh (t3)
      t5 = Add (t4, one)
      out0 = Mul (h, t5)
    })";

// GELU in its erf form, written the other way round (x * 1/sqrt(2), constants first): erf
// only, which the math parameter does not switch.
constexpr const char* kGeluErf = R"(<ir_version: 8, opset_import: ["" : 17]>
    gelu_erf (float[4,1000] in0) => (float[4,1000] out0) {
      rsqrt2 = Constant <value = float {0.70710678}> ()
      one = Constant <value = float {1.0}> ()
      half = Constant <value = float {0.5}> ()
      scaled = Mul (in0, rsqrt2)
      e = Erf (scaled)
      shifted = Add (one, e)
      h = Mul (half, in0)
      out0 = Mul (h, shifted)
    })";

// Operands broadcast along different dims.
constexpr const char* kBroadcast = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[8,1,16] in0, float[1,32,1] in1, float[16] in2) => (float[8,32,16] out0) {
      a = Add (in0, in1)
      b = Relu (a)
      out0 = Mul (b, in2)
    })";

// Embedded constant tensors (device arrays; the importer embeds up to 8 floats) broadcast along
// the rows, and a bool input.
constexpr const char* kConstantRows = R"(<ir_version: 8, opset_import: ["" : 17]>
    g (float[96,8] in0, bool[96,8] in1) => (float[96,8] out0) {
      w = Constant <value = float[8] {1, -2, 3, -4, 5, -6, 7, -8}> ()
      k = Constant <value = bool[8] {1, 0, 1, 1, 0, 1, 1, 0}> ()
      x = Mul (in0, w)
      m = And (in1, k)
      out0 = Where (m, x, in0)
    })";

// Two outputs, f16 and bool, written in one pass.
constexpr const char* kTwoOutputs = R"(<ir_version: 8, opset_import: ["" : 17]>
    two_outputs (float16[64,300] in0, float16[64,300] in1)
        => (float16[64,300] out0, bool[64,300] out1) {
      z = Constant <value = float {0.0}> ()
      zero = Cast <to = 10> (z)
      d = Sub (in0, in1)
      out0 = Sigmoid (d)
      out1 = Less (d, zero)
    })";

// kBiasGeluTanh in `type` ("float", "float16", "bfloat16").
std::string BiasGeluTanh(const std::string& type) {
  const std::string onnx_code = type == "float" ? "1" : type == "float16" ? "10" : "16";
  std::string text = kBiasGeluTanh;
  for (auto [from, to] : {std::pair<std::string, std::string>{"$TO", onnx_code}, {"$T", type}}) {
    for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at)) {
      text.replace(at, from.size(), to);
    }
  }
  return text;
}

std::unique_ptr<Spec> MustParse(const std::string& name, const std::string& text) {
  std::unique_ptr<Spec> spec = SpecFromText(name, text);
  EXPECT_NE(spec, nullptr) << name;
  return spec;
}

std::vector<std::unique_ptr<Spec>> Gpt2ElementwiseSpecs(std::optional<planner::DType> dtype) {
  std::vector<std::unique_ptr<Spec>> specs;
  for (auto& spec : ModelSpecs("gpt2-small_b1s128.onnx", dtype)) {
    if (spec->view.family == "elementwise") specs.push_back(std::move(spec));
  }
  return specs;
}

class CudaElementwiseTemplateTest : public ::testing::Test {
 protected:
  // The spec's default parameters with `overrides` applied.
  Params Point(const Spec& spec, const Params& overrides) const {
    Params params = DefaultParams(family_->Space(spec.view));
    for (const auto& [name, value] : overrides) params[name] = value;
    return params;
  }

  std::unique_ptr<TemplateFamily> family_ = MakeCudaElementwiseTemplate();
};

TEST_F(CudaElementwiseTemplateTest, SupportsWhatTheCpuTemplateDoesAndHalfTypes) {
  EXPECT_EQ(family_->name(), "cuda_elementwise");
  std::unique_ptr<TemplateFamily> cpu = MakeElementwiseTemplate();
  const std::vector<std::unique_ptr<Spec>> gpt2 = Gpt2ElementwiseSpecs({});
  EXPECT_GE(gpt2.size(), 2u);
  for (const auto& spec : gpt2) {
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << spec->name;
  }
  std::vector<std::unique_ptr<Spec>> chains;
  for (const std::string& text : {BiasGeluTanh("float"), std::string(kGeluErf),
                                  std::string(kBroadcast), std::string(kConstantRows)}) {
    chains.push_back(MustParse("chain", text));
  }
  chains.push_back(SpecFromFile("elementwise_op_zoo_16x333.onnxtxt"));
  for (const auto& spec : chains) {
    ASSERT_NE(spec, nullptr);
    EXPECT_TRUE(cpu->Supports(spec->view).ok()) << spec->name;
    Status supported = family_->Supports(spec->view);
    EXPECT_TRUE(supported.ok()) << spec->view.family << ": " << supported.ToString();
  }
  // Half types: CUDA only.
  for (const char* type : {"float16", "bfloat16"}) {
    std::unique_ptr<Spec> spec = MustParse(type, BiasGeluTanh(type));
    ASSERT_NE(spec, nullptr);
    EXPECT_TRUE(family_->Supports(spec->view).ok()) << family_->Supports(spec->view).ToString();
    EXPECT_FALSE(cpu->Supports(spec->view).ok()) << type;
  }
  auto two_outputs = MustParse("two_outputs", kTwoOutputs);
  ASSERT_NE(two_outputs, nullptr);
  EXPECT_TRUE(family_->Supports(two_outputs->view).ok())
      << family_->Supports(two_outputs->view).ToString();
  for (const auto& spec : Gpt2ElementwiseSpecs(planner::DType::kF16)) {
    EXPECT_TRUE(family_->Supports(spec->view).ok())
        << spec->name << ": " << family_->Supports(spec->view).ToString();
  }
}

TEST_F(CudaElementwiseTemplateTest, RejectsOtherFamiliesAndWhatItCannotCompile) {
  // Each spec with a phrase the reason must hold.
  const std::pair<const char*, const char*> rejected[] = {
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          softmax (float[6,10] in0) => (float[6,10] out0) { out0 = Softmax <axis = -1> (in0) })",
       "family 'softmax'"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          f64 (double[3,5] in0) => (double[3,5] out0) { out0 = Relu (in0) })",
       "f32, f16, bf16 and bool tensors"},
      // [24] viewed as [4,6]: the bias's run-time dims cannot be told apart.
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          regroup (float[7,4,6] in0, float[24] in1) => (float[7,4,6] out0) {
            dims = Constant <value = int64[2] {4, 6}> ()
            bias = Reshape (in1, dims)
            out0 = Mul (in0, bias)
          })",
       "regroups"},
      {R"(<ir_version: 8, opset_import: ["" : 17]>
          to_i64 (float[9] in0) => (int64[9] out0) {
            r = Relu (in0)
            out0 = Cast <to = 7> (r)
          })",
       "'out0' is i64"},
  };
  for (const auto& [text, reason] : rejected) {
    std::unique_ptr<Spec> spec = MustParse("reject", text);
    ASSERT_NE(spec, nullptr);
    const Status status = family_->Supports(spec->view);
    EXPECT_NE(status.message().find(reason), std::string::npos) << text << "\n"
                                                                << status.ToString();
  }
}

TEST_F(CudaElementwiseTemplateTest, SpaceLeadsWith16ByteAccessesAndOffersMathForExpAndTanh) {
  auto f32 = MustParse("f32", BiasGeluTanh("float"));
  auto f16 = MustParse("f16", BiasGeluTanh("float16"));
  auto erf = MustParse("erf", kGeluErf);
  auto bcast = MustParse("bcast", kBroadcast);
  ASSERT_TRUE(f32 && f16 && erf && bcast);
  EXPECT_EQ(DefaultParams(family_->Space(f32->view)),
            (Params{{"vector", "4"}, {"per_thread", "2"}, {"block", "256"}, {"math", "fast"}}));
  EXPECT_EQ(DefaultParams(family_->Space(f16->view)),
            (Params{{"vector", "8"}, {"per_thread", "2"}, {"block", "256"}, {"math", "fast"}}));
  EXPECT_EQ(DefaultParams(family_->Space(erf->view)),
            (Params{{"vector", "4"}, {"per_thread", "2"}, {"block", "256"}}));
  EXPECT_EQ(DefaultParams(family_->Space(bcast->view)),
            (Params{{"vector", "4"}, {"per_thread", "2"}, {"block", "256"}}));
}

TEST_F(CudaElementwiseTemplateTest, RenderRejectsBadParams) {
  auto spec = MustParse("bcast", kBroadcast);
  ASSERT_NE(spec, nullptr);
  Params params = Point(*spec, {{"vector", "3"}});
  Result<RenderedKernel> bad = family_->Render(spec->view, params);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'vector' cannot be '3'"), std::string::npos)
      << bad.status().ToString();
  bad = family_->Render(spec->view, Point(*spec, {{"math", "fast"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown parameter 'math'"), std::string::npos);
  params = DefaultParams(family_->Space(spec->view));
  params.erase("block");
  bad = family_->Render(spec->view, params);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'block' is missing"), std::string::npos);
}

TEST_F(CudaElementwiseTemplateTest, ParametersReachTheSource) {
  auto spec = MustParse("f32", BiasGeluTanh("float"));
  ASSERT_NE(spec, nullptr);
  const Params point = {
      {"vector", "8"}, {"per_thread", "4"}, {"block", "512"}, {"math", "accurate"}};
  Result<RenderedKernel> kernel = family_->Render(spec->view, point);
  ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
  for (const char* text : {"kVector = 8;", "kPerThread = 4;", "kBlock = 512;", "tanhf(x)",
                           "kf_chain<uint32_t>", "kf_chain<uint64_t>"}) {
    EXPECT_NE(kernel->source.find(text), std::string::npos) << text;
  }
  EXPECT_EQ(kernel->source.find("__expf"), std::string::npos);
  EXPECT_NE(kernel->explanation.find("broadcast operands"), std::string::npos);
  kernel = family_->Render(spec->view, Point(*spec, {}));
  ASSERT_TRUE(kernel.ok());
  EXPECT_NE(kernel->source.find("__expf"), std::string::npos);
  EXPECT_EQ(kernel->source.find("tanhf(x)"), std::string::npos);
}

// Every parameter value at least once, f32 / f16 / bf16, on GPT-2's broadcast bias + tanh GELU.
TEST_F(CudaElementwiseTemplateTest, BiasGeluTanhPassesInEveryDType) {
  CudaEvaluator evaluator;
  auto f32 = MustParse("bias_gelu_f32", BiasGeluTanh("float"));
  auto f16 = MustParse("bias_gelu_f16", BiasGeluTanh("float16"));
  auto bf16 = MustParse("bias_gelu_bf16", BiasGeluTanh("bfloat16"));
  ASSERT_TRUE(f32 && f16 && bf16);
  for (const Params& point :
       {Params{}, Params{{"vector", "8"}, {"per_thread", "4"}, {"block", "512"}},
        Params{{"vector", "1"}, {"per_thread", "1"}, {"block", "128"}, {"math", "accurate"}},
        Params{{"vector", "2"}, {"math", "accurate"}}}) {
    ExpectCudaKernelPasses(evaluator, *family_, *f32, Point(*f32, point));
  }
  for (const Params& point : {Params{}, Params{{"vector", "4"}, {"math", "accurate"}}}) {
    ExpectCudaKernelPasses(evaluator, *family_, *f16, Point(*f16, point));
  }
  for (const Params& point : {Params{}, Params{{"vector", "2"}, {"per_thread", "4"}}}) {
    ExpectCudaKernelPasses(evaluator, *family_, *bf16, Point(*bf16, point));
  }
}

TEST_F(CudaElementwiseTemplateTest, BroadcastsAndConstantsPass) {
  CudaEvaluator evaluator;
  auto bcast = MustParse("bcast", kBroadcast);
  auto constants = MustParse("constant_rows", kConstantRows);
  ASSERT_TRUE(bcast && constants);
  for (const Params& point : {Params{}, Params{{"vector", "8"}, {"block", "512"}}}) {
    ExpectCudaKernelPasses(evaluator, *family_, *bcast, Point(*bcast, point));
  }
  for (const Params& point : {Params{}, Params{{"vector", "1"}, {"per_thread", "4"}}}) {
    ExpectCudaKernelPasses(evaluator, *family_, *constants, Point(*constants, point));
  }
}

TEST_F(CudaElementwiseTemplateTest, MultiOutputChainsAndEveryOpPass) {
  CudaEvaluator evaluator;
  auto two = MustParse("two_outputs", kTwoOutputs);
  auto zoo = SpecFromFile("elementwise_op_zoo_16x333.onnxtxt");
  auto erf = MustParse("gelu_erf", kGeluErf);
  ASSERT_TRUE(two && zoo && erf);
  ExpectCudaKernelPasses(evaluator, *family_, *two, Point(*two, {}));
  ExpectCudaKernelPasses(evaluator, *family_, *two,
                         Point(*two, {{"vector", "1"}, {"math", "accurate"}}));
  ExpectCudaKernelPasses(evaluator, *family_, *zoo, Point(*zoo, {}));
  ExpectCudaKernelPasses(evaluator, *family_, *zoo, Point(*zoo, {{"math", "accurate"}}));
  ExpectCudaKernelPasses(evaluator, *family_, *erf, Point(*erf, {{"per_thread", "1"}}));
}

TEST_F(CudaElementwiseTemplateTest, Gpt2JobsPassInF32AndF16) {
  CudaEvaluator evaluator;
  for (std::optional<planner::DType> dtype :
       {std::optional<planner::DType>{}, std::optional<planner::DType>{planner::DType::kF16}}) {
    for (const auto& spec : Gpt2ElementwiseSpecs(dtype)) {
      ExpectCudaKernelPasses(evaluator, *family_, *spec, Point(*spec, {}));
    }
  }
}

}  // namespace
}  // namespace kfleet::agents
