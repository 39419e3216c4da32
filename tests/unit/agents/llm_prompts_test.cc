#include "agents/llm_prompts.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/temp_dir.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

std::filesystem::path KnowledgeRoot() {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::filesystem::path(root != nullptr ? root : "tests/data") / ".." / ".." / "configs" /
         "knowledge";
}

TEST(Knowledge, TheShippedDocumentsParseForEveryBackendWithTagsOnEverySection) {
  for (const char* backend : {"cpu", "cuda"}) {
    Result<std::vector<KnowledgeSection>> sections = LoadKnowledge(KnowledgeRoot(), backend);
    ASSERT_TRUE(sections.ok()) << backend << ": " << sections.status().ToString();
    EXPECT_GE(sections->size(), 8u) << backend;
    for (const KnowledgeSection& s : *sections) {
      EXPECT_FALSE(s.families.empty()) << backend << "/" << s.document << ": " << s.title;
    }
    // Trimmed for a GEMM job within 12,000 characters, something is left.
    const std::string gemm = TrimKnowledge(*sections, "gemm", 12'000);
    EXPECT_FALSE(gemm.empty());
    EXPECT_LE(gemm.size(), 12'000u + 64);
  }
  Result<std::vector<KnowledgeSection>> none = LoadKnowledge(KnowledgeRoot(), "tpu");
  EXPECT_EQ(none.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(none.status().message().find("add Markdown documents"), std::string::npos);
}

class KnowledgeFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-knowledge");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = std::make_unique<TempDir>(std::move(*dir));
  }
  void Write(const std::string& name, const std::string& text) {
    ASSERT_TRUE(MakeDirs(root() / "gpu").ok());
    ASSERT_TRUE(WriteFileAtomic(root() / "gpu" / name, text).ok());
  }
  std::filesystem::path root() const { return dir_->path(); }
  std::unique_ptr<TempDir> dir_;
};

TEST_F(KnowledgeFiles, KeepsTheSectionsOfTheFamilyAndDropsTheLeastGeneralFirst) {
  Write("basics.md",
        "# Basics\nintro text\n## ABI\nfamilies: all\nabi text\n## Streams\nfamilies: all\n"
        "stream text\n");
  Write("optimization.md",
        "# Optimization\n## Tiling\nfamilies: gemm, conv\ntiling text\n## Warp reductions\n"
        "families: rownorm, reduce\nshuffle text\n## Epilogues\nfamilies: gemm\nepilogue text\n");
  Result<std::vector<KnowledgeSection>> sections = LoadKnowledge(root(), "gpu");
  ASSERT_TRUE(sections.ok()) << sections.status().ToString();
  ASSERT_EQ(sections->size(), 5u);
  EXPECT_EQ((*sections)[2].families, (std::vector<std::string>{"gemm", "conv"}));

  const std::string gemm = TrimKnowledge(*sections, "gemm", 10'000);
  EXPECT_NE(gemm.find("abi text"), std::string::npos);
  EXPECT_NE(gemm.find("tiling text"), std::string::npos);
  EXPECT_NE(gemm.find("epilogue text"), std::string::npos);
  EXPECT_EQ(gemm.find("shuffle text"), std::string::npos);
  EXPECT_EQ(gemm.find("families:"), std::string::npos);  // tag lines stay out of prompts
  const std::string rows = TrimKnowledge(*sections, "rownorm", 10'000);
  EXPECT_NE(rows.find("shuffle text"), std::string::npos);
  EXPECT_EQ(rows.find("tiling text"), std::string::npos);
  // Too little room: optimization's last section goes before basics loses anything.
  const std::string tight = TrimKnowledge(*sections, "gemm", gemm.size() - 10);
  EXPECT_NE(tight.find("abi text"), std::string::npos);
  EXPECT_NE(tight.find("stream text"), std::string::npos);
  EXPECT_EQ(tight.find("epilogue text"), std::string::npos);
}

TEST_F(KnowledgeFiles, AHeadingWithoutItsTagLineIsAnErrorNamingTheLine) {
  Write("pitfalls.md", "# Pitfalls\n## Races\nfamilies: all\ntext\n## Overflow\nuse int64\n");
  Result<std::vector<KnowledgeSection>> sections = LoadKnowledge(root(), "gpu");
  EXPECT_FALSE(sections.ok());
  EXPECT_NE(sections.status().message().find("pitfalls.md:6"), std::string::npos)
      << sections.status().ToString();
}

TEST(FamilyClass, MapsThePlannersFamilies) {
  EXPECT_EQ(FamilyClass("gemm+gelu_tanh"), "gemm");
  EXPECT_EQ(FamilyClass("gemm"), "gemm");
  EXPECT_EQ(FamilyClass("conv+add+relu"), "conv");
  EXPECT_EQ(FamilyClass("attention"), "attention");
  EXPECT_EQ(FamilyClass("layernorm"), "rownorm");
  EXPECT_EQ(FamilyClass("softmax"), "rownorm");
  EXPECT_EQ(FamilyClass("reduce"), "reduce");
  EXPECT_EQ(FamilyClass("pool"), "pool");
  EXPECT_EQ(FamilyClass("elementwise"), "elementwise");
}

TEST(Prompts, DescribeTheSpecAndCarryEveryPart) {
  std::unique_ptr<testing::Spec> spec =
      testing::SpecFromText("bias_gelu", R"(<ir_version: 8, opset_import: ["" : 17]>
bias_gelu (float[128,3072] in0, float[3072] in1) => (float[128,3072] out0) {
  h = Add (in0, in1)
  out0 = Gelu <approximate = "tanh"> (h)
})");
  ASSERT_NE(spec, nullptr);
  const std::string graph = DescribeSpecGraph(spec->graph);
  EXPECT_NE(graph.find("in[0]: in0 f32[128,3072]"), std::string::npos) << graph;
  EXPECT_NE(graph.find("in[1]: in1 f32[3072]"), std::string::npos) << graph;
  EXPECT_NE(graph.find("Gelu(h) {approximate=\"tanh\"} -> out0 f32[128,3072]"), std::string::npos)
      << graph;

  SpecBrief brief{"bias+gelu 128x3072 f32",      "elementwise", "cuda", graph, 12.5, 1.1,
                  "NVIDIA H200 (sm_90, 132 SMs)"};
  DesignerInput designer{brief, "## Coalescing\nload 16 bytes\n", {}, ""};
  designer.parents.push_back({"template:cuda_elementwise", "vector=4 block=256", 6.0, 2.08, ""});
  designer.parents.push_back({"llm:m", "one thread per element", 0, 0, "failed at smoke: NaN"});
  designer.advice = "The results are wrong at the smoke stage.";
  const std::vector<ChatMessage> d = DesignerMessages(designer);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].role, "system");
  EXPECT_NE(d[0].content.find("load 16 bytes"), std::string::npos);
  EXPECT_NE(d[1].content.find("12.5 us"), std::string::npos);
  EXPECT_NE(d[1].content.find("NVIDIA H200"), std::string::npos);
  EXPECT_NE(d[1].content.find("6.0 us (2.08x the baseline)"), std::string::npos);
  EXPECT_NE(d[1].content.find("failed at smoke: NaN"), std::string::npos);
  EXPECT_NE(d[1].content.find("wrong at the smoke stage"), std::string::npos);

  CoderInput coder{brief,
                   "one warp per row",
                   "typedef struct kf_tensor;\n",
                   "## K\nk\n",
                   {"// example kernel\n"},
                   "// old file\n",
                   "kernel.cu(3): error: x"};
  const std::vector<ChatMessage> c = CoderMessages(coder);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NE(c[0].content.find("CUDA C++17"), std::string::npos);
  EXPECT_NE(c[0].content.find("typedef struct kf_tensor;"), std::string::npos);
  EXPECT_NE(c[0].content.find("kf_kernel_run"), std::string::npos);
  EXPECT_NE(c[1].content.find("one warp per row"), std::string::npos);
  EXPECT_NE(c[1].content.find("// example kernel"), std::string::npos);
  EXPECT_NE(c[1].content.find("// old file"), std::string::npos);
  EXPECT_NE(c[1].content.find("kernel.cu(3): error: x"), std::string::npos);
}

TEST(Conductor, RoutesCompileAndCodeProblemsToTheCoderAndTheRestToTheDesigner) {
  const std::string log =
      "kernel.cu(12): warning: variable declared but never referenced\n"
      "kernel.cu(40): error: identifier \"rowz\" is undefined\n"
      "      float v = x[rowz];\n"
      "\n"
      "1 error detected in the compilation of \"kernel.cu\".\n";
  ConductorVerdict v = RouteFailure("compile", "nvcc exited with 2", log);
  EXPECT_EQ(v.route, FailureRoute::kCoder);
  EXPECT_EQ(v.category, "compile");
  EXPECT_NE(v.excerpt.find("identifier \"rowz\" is undefined"), std::string::npos);
  EXPECT_NE(v.excerpt.find("float v = x[rowz];"), std::string::npos);
  EXPECT_EQ(v.excerpt.find("warning"), std::string::npos);

  EXPECT_EQ(RouteFailure("static_check", "line 3: opens sockets: socket", "").route,
            FailureRoute::kCoder);
  v = RouteFailure("extract", "the answer ends inside its code block: it was cut off", "");
  EXPECT_EQ(v.route, FailureRoute::kCoder);
  EXPECT_EQ(v.category, "truncated");
  EXPECT_EQ(RouteFailure("extract", "no code block", "").category, "no_code");

  struct Case {
    const char* stage;
    const char* reason;
    const char* category;
  };
  const Case cases[] = {
      {"smoke", "412 of 1024 elements outside tolerance (rtol 1e-4)", "wrong_result"},
      {"shape_sweep", "out0 has NaN at [3,7]", "wrong_result"},
      {"smoke", "the kernel crashed: an illegal memory access (sticky CUDA error)", "crash"},
      {"stability", "killed by signal 11 (SIGSEGV)", "crash"},
      {"smoke", "the call timed out after 10000 ms", "timeout"},
      {"determinism", "out0 differs between runs at 12 elements", "nondeterministic"},
      {"shape_sweep", "kf_kernel_run returned KF_ERR_UNSUPPORTED_SHAPE (1)", "unsupported_shape"},
  };
  for (const Case& c : cases) {
    v = RouteFailure(c.stage, c.reason, "");
    EXPECT_EQ(v.route, FailureRoute::kDesigner) << c.reason;
    EXPECT_EQ(v.category, c.category) << c.reason;
    EXPECT_EQ(v.excerpt, c.reason);
    EXPECT_FALSE(v.advice.empty());
  }
}

TEST(Conductor, AnExcerptWithoutErrorLinesIsTheLogsTail) {
  std::string log;
  for (int i = 0; i < 60; ++i) log += "line " + std::to_string(i) + "\n";
  const std::string excerpt = CompileErrorExcerpt(log, 5);
  EXPECT_EQ(excerpt, "line 55\nline 56\nline 57\nline 58\nline 59\n");
}

}  // namespace
}  // namespace kfleet::agents
