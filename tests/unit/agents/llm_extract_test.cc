#include "agents/llm_extract.h"

#include <gtest/gtest.h>

#include <string>

namespace kfleet::agents {
namespace {

const char* kKernel = R"(#include "kfleet/kernel.h"

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  return KF_OK;
}
)";

std::string Fenced(const std::string& info, const std::string& body) {
  return "```" + info + "\n" + body + "```\n";
}

TEST(ExtractKernelSource, TakesTheOnlyBlockWithProseAround) {
  const std::string answer = "Here is a kernel that fuses the bias into the GEMM.\n\n" +
                             Fenced("cuda", kKernel) + "\nIt launches one block per row.\n";
  const ExtractedSource got = ExtractKernelSource(answer);
  EXPECT_EQ(got.failure, ExtractFailure::kNone) << got.reason;
  EXPECT_EQ(got.source, kKernel);
  EXPECT_EQ(got.info, "cuda");
  EXPECT_EQ(got.blocks, 1);
}

TEST(ExtractKernelSource, PicksTheBlockDefiningTheEntryPointAndTheLastRevision) {
  const std::string sketch = "// the plan\n// 1. load a row\n";
  const std::string usage = "kf_kernel_run(in, 2, out, 1, nullptr);\n";  // a call, not a definition
  std::string revised = kKernel;
  revised.replace(revised.find("return KF_OK;"), 13, "return KF_ERR_UNSUPPORTED_SHAPE;");
  const std::string answer = Fenced("text", sketch) + "First try:\n" + Fenced("c++", kKernel) +
                             "Better:\n" + Fenced("cpp title=kernel.cu", revised) +
                             "Call it like this:\n" + Fenced("cpp", usage);
  const ExtractedSource got = ExtractKernelSource(answer);
  EXPECT_EQ(got.failure, ExtractFailure::kNone) << got.reason;
  EXPECT_EQ(got.source, revised);
  EXPECT_EQ(got.info, "cpp");
  EXPECT_EQ(got.blocks, 4);
}

TEST(ExtractKernelSource, TildeFencesAndLongerFencesHoldBackticks) {
  const std::string body = std::string(kKernel) + "// ``` inside a comment\n";
  const std::string answer = "~~~cuda\n" + body + "~~~\n";
  EXPECT_EQ(ExtractKernelSource(answer).source, body);
  const std::string four = "````cpp\n" + body + "````\n";
  EXPECT_EQ(ExtractKernelSource(four).source, body);
}

TEST(ExtractKernelSource, AnAnswerWithoutFencesIsTheFileFromItsFirstInclude) {
  const std::string answer = std::string("Sure.\n") + kKernel;
  const ExtractedSource got = ExtractKernelSource(answer);
  EXPECT_EQ(got.failure, ExtractFailure::kNone) << got.reason;
  EXPECT_EQ(got.source, kKernel);
  EXPECT_EQ(got.blocks, 0);
}

TEST(ExtractKernelSource, ProseWithoutCodeIsAFailureNotACrash) {
  for (const std::string& answer :
       {std::string(), std::string("I cannot help with that."),
        std::string("Use shared memory and call kf_kernel_run once per batch.")}) {
    const ExtractedSource got = ExtractKernelSource(answer);
    EXPECT_EQ(got.failure, ExtractFailure::kNoCode) << answer;
    EXPECT_TRUE(got.source.empty());
    EXPECT_FALSE(got.reason.empty());
  }
}

TEST(ExtractKernelSource, ABlockWithoutTheEntryPointSaysSo) {
  const ExtractedSource got =
      ExtractKernelSource(Fenced("cuda", "__global__ void Add(float* x) { x[0] += 1; }\n"));
  EXPECT_EQ(got.failure, ExtractFailure::kNoEntry);
  EXPECT_NE(got.reason.find("kf_kernel_run"), std::string::npos) << got.reason;
  EXPECT_EQ(ExtractFailureName(got.failure), "no_entry");
}

TEST(ExtractKernelSource, AnAnswerCutOffInsideItsBlockIsTruncated) {
  const std::string kernel = kKernel;
  const std::string answer = "Here it is:\n```cuda\n" + kernel.substr(0, kernel.size() / 2);
  const ExtractedSource got = ExtractKernelSource(answer);
  EXPECT_EQ(got.failure, ExtractFailure::kTruncated);
  EXPECT_NE(got.reason.find("cut off"), std::string::npos) << got.reason;
  // A complete kernel before the cut still counts.
  const ExtractedSource earlier =
      ExtractKernelSource(Fenced("cuda", kKernel) + "And a variant:\n```cuda\n#include <x>\n");
  EXPECT_EQ(earlier.failure, ExtractFailure::kNone) << earlier.reason;
  EXPECT_EQ(earlier.source, kKernel);
}

}  // namespace
}  // namespace kfleet::agents
