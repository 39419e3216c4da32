#include "agents/source_check.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "agents/cuda_templates.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

const char* kClean = R"(#include <cuda_runtime.h>
#include <cmath>

#include "kfleet/kernel.h"

// A comment may say system(), fopen or socket: only code counts.
static const char* kNote = "popen and clock_gettime in a string are fine";

// A member call is someone else's method, not the libc function.
template <typename T>
int Use(const T& t) { return t.open() + t->bind(); }

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  static_cast<void>(kNote);
  return KF_OK;
}
)";

TEST(SourceCheck, AcceptsAKernelThatOnlyComputes) {
  EXPECT_TRUE(ScanSource(kClean).empty());
  EXPECT_TRUE(CheckAgentSource(kClean).ok());
}

TEST(SourceCheck, RejectsEachCategoryWithItsLine) {
  struct Case {
    std::string code;
    std::string category;
    std::string what;
  };
  const std::vector<Case> cases = {
      {"int r = system(\"ls\");", "processes", "system"},
      {"FILE* p = popen(cmd, \"r\");", "processes", "popen"},
      {"if (fork() == 0) {}", "processes", "fork"},
      {"int s = socket(AF_INET, SOCK_STREAM, 0);", "sockets", "socket"},
      {"#include <sys/socket.h>", "sockets", "<sys/socket.h>"},
      {"clock_gettime(CLOCK_MONOTONIC, &ts);", "timing", "clock_gettime"},
      {"auto t = std::chrono::steady_clock::now();", "timing", "chrono"},
      {"usleep(100);", "timing", "usleep"},
      {"cudaEventRecord(start, stream);", "timing", "cudaEventRecord"},
      {"FILE* f = fopen(\"/tmp/expected.bin\", \"rb\");", "files", "fopen"},
      {"std::ifstream in(path);", "files", "ifstream"},
      {"int fd = open(path, O_RDONLY);", "files", "open"},
      {"void* h = dlopen(nullptr, RTLD_NOW);", "reference", "dlopen"},
      {"auto f = dlsym(h, \"kf_reference\");", "reference", "dlsym"},
      {"const char* d = getenv(\"KFLEET_EXPECTED\");", "reference", "getenv"},
      {"kfleet::runtime::RunReference(x);", "reference", "kfleet"},
      {"#include \"kfleet/runtime/reference.h\"", "reference", "<kfleet/runtime/reference.h>"},
  };
  for (const Case& c : cases) {
    const std::string source = std::string("#include \"kfleet/kernel.h\"\n\n") + c.code + "\n";
    const std::vector<SourceFinding> findings = ScanSource(source);
    ASSERT_FALSE(findings.empty()) << c.code;
    EXPECT_EQ(findings[0].line, 3) << c.code;
    EXPECT_EQ(findings[0].category, c.category) << c.code;
    EXPECT_EQ(findings[0].what, c.what) << c.code;
    const Status status = CheckAgentSource(source);
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.message().find("line 3: "), std::string::npos) << status.ToString();
  }
}

TEST(SourceCheck, ListsAtMostEightFindings) {
  std::string source;
  for (int i = 0; i < 12; ++i) source += "usleep(1);\n";
  const Status status = CheckAgentSource(source);
  EXPECT_NE(status.message().find("line 8: reads clocks or sleeps: usleep"), std::string::npos);
  EXPECT_EQ(status.message().find("line 9:"), std::string::npos);
  EXPECT_NE(status.message().find("4 more"), std::string::npos) << status.ToString();
}

// Every kernel the template families render passes: the check does not reject real kernels.
TEST(SourceCheck, TemplateKernelsPass) {
  int rendered = 0;
  for (const char* backend : {"cpu", "cuda"}) {
    Result<std::vector<std::unique_ptr<TemplateFamily>>> families = TemplateFamiliesFor(backend);
    ASSERT_TRUE(families.ok());
    for (const char* model : {"resnet50_b8.onnx", "gpt2-small_b1s128.onnx"}) {
      for (const auto& spec : testing::ModelSpecs(model)) {
        for (const auto& family : *families) {
          if (!family->Supports(spec->view).ok()) continue;
          Result<RenderedKernel> kernel =
              family->Render(spec->view, DefaultParams(family->Space(spec->view)));
          ASSERT_TRUE(kernel.ok()) << kernel.status().ToString();
          EXPECT_TRUE(CheckAgentSource(kernel->source).ok())
              << family->name() << " on " << spec->name << ": "
              << CheckAgentSource(kernel->source).ToString();
          ++rendered;
        }
      }
    }
  }
  EXPECT_GE(rendered, 40);
}

}  // namespace
}  // namespace kfleet::agents
