#include "agents/template_family.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::ModelSpecs;
using testing::SpecFromText;

TEST(AnalyzeSpecTest, NamesTheFamilyAndAnchor) {
  auto spec = SpecFromText("ln", R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[4,8] in0, float[8] in1, float[8] in2) => (float[4,8] out0) {
        out0 = LayerNormalization <axis = -1> (in0, in1, in2)
      })");
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->view.family, "layernorm");
  EXPECT_EQ(spec->view.anchor, 0);
  EXPECT_EQ(spec->view.graph, &spec->graph);
}

TEST(AnalyzeSpecTest, TwoKernelsAreNotOneSpec) {
  Result<std::string> bytes =
      planner::OnnxTextToModelBytes(R"(<ir_version: 8, opset_import: ["" : 17]>
      g (float[4,8] in0, float[8,8] in1) => (float[4,8] out0) {
        a = MatMul (in0, in1)
        b = Softmax (a)
        out0 = MatMul (b, in1)
      })");
  ASSERT_TRUE(bytes.ok());
  Result<planner::Graph> graph = planner::ImportOnnxBytes(*bytes, "two", "", {});
  ASSERT_TRUE(graph.ok());
  Result<SpecView> view = AnalyzeSpec(*graph);
  EXPECT_FALSE(view.ok());
  EXPECT_NE(view.status().message().find("one fusion group"), std::string::npos);
}

TEST(ParamsTest, DefaultsAreTheFirstValues) {
  const std::vector<ParamSpace> space = {{"threads", {"all", "1"}}, {"tile", {"32", "64"}}};
  EXPECT_EQ(DefaultParams(space), (Params{{"threads", "all"}, {"tile", "32"}}));
}

TEST(ParamsTest, CheckNamesTheBadParameter) {
  const std::vector<ParamSpace> space = {{"threads", {"all", "1"}}, {"tile", {"32", "64"}}};
  EXPECT_TRUE(CheckParams(space, {{"threads", "1"}, {"tile", "64"}}).ok());
  Status missing = CheckParams(space, {{"threads", "1"}});
  EXPECT_NE(missing.message().find("'tile' is missing"), std::string::npos);
  Status bad = CheckParams(space, {{"threads", "1"}, {"tile", "48"}});
  EXPECT_NE(bad.message().find("'tile' cannot be '48' (one of: 32, 64)"), std::string::npos);
  Status unknown = CheckParams(space, {{"threads", "1"}, {"tile", "32"}, {"unroll", "2"}});
  EXPECT_NE(unknown.message().find("unknown parameter 'unroll'"), std::string::npos);
}

TEST(RegistryTest, EveryFamilyHasAUniqueNameAndADefaultThatRenders) {
  std::vector<std::unique_ptr<TemplateFamily>> families = CpuTemplateFamilies();
  std::set<std::string> names;
  for (const auto& family : families) {
    ASSERT_NE(family, nullptr);
    EXPECT_TRUE(names.insert(std::string(family->name())).second) << family->name();
  }
  EXPECT_EQ(names, (std::set<std::string>{"elementwise", "rownorm", "gemm_blas", "gemm_tiled",
                                          "conv_im2col", "conv_direct"}));
}

// Which GPT-2 jobs the template agent can write a kernel for at all: every job but attention
// and gather (their templates come later) has at least one family, and every supporting family
// renders its defaults.
TEST(RegistryTest, Gpt2JobsHaveATemplate) {
  std::vector<std::unique_ptr<TemplateFamily>> families = CpuTemplateFamilies();
  for (const auto& spec : ModelSpecs("gpt2-small_b1s128.onnx")) {
    int supported = 0;
    for (const auto& family : families) {
      if (!family->Supports(spec->view).ok()) continue;
      ++supported;
      Result<RenderedKernel> kernel =
          family->Render(spec->view, DefaultParams(family->Space(spec->view)));
      EXPECT_TRUE(kernel.ok()) << family->name() << " on " << spec->name << ": "
                               << kernel.status().ToString();
    }
    const bool expected = spec->view.family != "attention" && spec->view.family != "gather";
    EXPECT_EQ(supported > 0, expected) << spec->name << " (" << spec->view.family << ")";
  }
}

}  // namespace
}  // namespace kfleet::agents
