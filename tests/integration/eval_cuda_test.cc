// `kfleet eval --backend cuda` as a user runs it on a GPU machine: a good CUDA kernel passes every
// stage against the CUDA baseline, timed with CUDA events; planted CUDA bugs (an illegal address,
// an unwritten output, an unchecked failed launch) fail at the right stage and take down only the
// harness process. Every test here but the first skips without a usable GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/files.h"
#include "eval/device.h"
#include "planner/onnx_import.h"
#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

std::string DataPath(const std::string& relative) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/" + relative;
}

class EvalCudaTest : public ::testing::Test {
 protected:
  std::string Spec(const std::string& name) {
    const std::filesystem::path out = fleet_.dir() / (name + ".onnx");
    if (!std::filesystem::exists(out)) {
      Result<std::string> text = ReadFile(DataPath("specs/" + name + ".onnxtxt"));
      EXPECT_TRUE(text.ok()) << text.status().ToString();
      Result<std::string> bytes = planner::OnnxTextToModelBytes(*text);
      EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
      EXPECT_TRUE(WriteFileAtomic(out, *bytes).ok());
    }
    return out.string();
  }

  std::string Config() {
    const std::filesystem::path path = fleet_.dir() / "eval.yaml";
    EXPECT_TRUE(WriteFileAtomic(path,
                                "profile:\n  budget: 1s\n"
                                "limits:\n  call_timeout: 5s\n  timeout: 180s\n")
                    .ok());
    return path.string();
  }

  CliResult Eval(const std::string& kernel, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"eval",
                                     "--backend",
                                     "cuda",
                                     "--spec",
                                     Spec("layernorm_128x1024"),
                                     "--source",
                                     DataPath("kernels/cuda/" + kernel),
                                     "--config",
                                     Config(),
                                     "--cache-dir",
                                     (fleet_.dir() / "cache").string(),
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return fleet_.Cli(args, 300'000);
  }

  void ExpectRejected(const std::string& kernel, const std::string& stage,
                      const std::string& reason_part) {
    CliResult run = Eval(kernel, {"--no-profile"});
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    nlohmann::json r = run.Json();
    ASSERT_TRUE(r.is_object()) << run.out << run.err;
    EXPECT_EQ(r.value("failed_stage", ""), stage) << kernel << ": " << r.value("reason", "");
    EXPECT_NE(r.value("reason", "").find(reason_part), std::string::npos)
        << kernel << ": " << r.value("reason", "");
  }

  Fleet fleet_;  // its scratch directory and CLI runner only
};

#define KF_REQUIRE_GPU()                                                                   \
  do {                                                                                     \
    if (Status gpu = eval::CheckDevice("cuda", 0); !gpu.ok()) {                            \
      GTEST_SKIP() << "no usable CUDA device (" << gpu.message() << "): GPU test skipped"; \
    }                                                                                      \
  } while (false)

TEST_F(EvalCudaTest, WithoutAGpuTheCudaBackendSaysWhy) {
  if (eval::CheckDevice("cuda", 0).ok()) GTEST_SKIP() << "a GPU is usable here";
  CliResult run = Eval("layernorm_good.cu");
  EXPECT_NE(run.exit_code, 0) << run.out << run.err;
  EXPECT_TRUE(run.out.empty()) << run.out;
  EXPECT_NE(run.err.find("--backend cuda --device 0: "), std::string::npos) << run.err;
}

TEST_F(EvalCudaTest, GoodKernelPassesEveryStageAgainstTheCudaBaseline) {
  KF_REQUIRE_GPU();
  CliResult run = Eval("layernorm_good.cu");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  nlohmann::json r = run.Json();
  ASSERT_TRUE(r.value("passed", false)) << r.dump(2);
  for (const auto& stage : r["stages"]) {
    EXPECT_TRUE(stage["ran"].get<bool>() && stage["passed"].get<bool>()) << stage.dump();
  }
  EXPECT_NE(r.value("device", "").find("cuda:0"), std::string::npos) << r.value("device", "");
  const nlohmann::json& p = r["profile"];
  EXPECT_GT(p["candidate"]["median_us"].get<double>(), 0.0) << p.dump(2);
  EXPECT_GT(p["baseline"]["median_us"].get<double>(), 0.0) << p.dump(2);
  EXPECT_EQ(p.value("baseline_check", ""), "ok") << p.dump(2);
  // The flush writes at least twice the L2 of any current NVIDIA GPU's smallest L2.
  EXPECT_GE(p["flush_bytes"].get<int64_t>(), int64_t{8} << 20);
  // nvcc's resource report is kept with the compile log.
  EXPECT_NE(r["compile"].value("log", "").find("registers"), std::string::npos);
}

TEST_F(EvalCudaTest, IllegalAddressFailsSmokeAndTheDeviceStaysUsable) {
  KF_REQUIRE_GPU();
  ExpectRejected("bug_illegal_address.cu", "smoke", "illegal memory access");
  // The fault died with the harness process; a new process gets a working device.
  EXPECT_TRUE(eval::CheckDevice("cuda", 0).ok());
  CliResult good = Eval("layernorm_good.cu", {"--no-profile"});
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
}

TEST_F(EvalCudaTest, UnwrittenOutputFailsSmoke) {
  KF_REQUIRE_GPU();
  ExpectRejected("bug_unwritten.cu", "smoke", "never written");
}

// The launch error lives in the candidate's own CUDA runtime (a shared libcudart, not the
// harness's), so the harness sees what it did: outputs that were never written.
TEST_F(EvalCudaTest, AFailedLaunchTheKernelIgnoredStillFailsSmoke) {
  KF_REQUIRE_GPU();
  ExpectRejected("bug_unchecked_launch.cu", "smoke", "never written");
}

}  // namespace
}  // namespace kfleet::testing
