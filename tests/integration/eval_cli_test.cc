// `kfleet eval` as a user runs it: hand-written good kernels pass every stage and beat the
// baseline; each planted bug is rejected at the right stage with a reason that names it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/files.h"
#include "planner/onnx_import.h"
#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

std::string DataPath(const std::string& relative) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/" + relative;
}

class EvalCliTest : public ::testing::Test {
 protected:
  // The text spec as a binary ONNX file in the test's directory.
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

  // Short limits so the hanging and hoarding kernels are stopped quickly.
  std::string Config() {
    const std::filesystem::path path = fleet_.dir() / "eval.yaml";
    EXPECT_TRUE(WriteFileAtomic(path,
                                "profile:\n  budget: 1s\n"
                                "limits:\n  call_timeout: 3s\n  timeout: 120s\n  memory: 4GiB\n")
                    .ok());
    return path.string();
  }

  nlohmann::json Eval(const std::string& spec, const std::string& kernel, int expected_exit,
                      std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"eval",
                                     "--spec",
                                     Spec(spec),
                                     "--source",
                                     DataPath("kernels/" + kernel),
                                     "--config",
                                     Config(),
                                     "--cache-dir",
                                     (fleet_.dir() / "cache").string(),
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult run = fleet_.Cli(args, 300'000);
    EXPECT_EQ(run.exit_code, expected_exit) << kernel << "\n" << run.out << run.err;
    nlohmann::json report = run.Json();
    EXPECT_TRUE(report.is_object()) << run.out << run.err;
    return report;
  }

  void ExpectRejected(const std::string& kernel, const std::string& stage,
                      const std::string& reason_part) {
    nlohmann::json r = Eval("layernorm_128x1024", kernel, 1, {"--no-profile"});
    EXPECT_FALSE(r.value("passed", true)) << kernel;
    EXPECT_EQ(r.value("failed_stage", ""), stage) << kernel << ": " << r.value("reason", "");
    EXPECT_NE(r.value("reason", "").find(reason_part), std::string::npos)
        << kernel << ": " << r.value("reason", "");
  }

  Fleet fleet_;  // only for its scratch directory and CLI runner: no daemon starts
};

TEST_F(EvalCliTest, GoodLayerNormPassesEveryStageAndBeatsTheDecomposedBaseline) {
  nlohmann::json r = Eval("layernorm_decomposed_1x128x768", "layernorm_good.cpp", 0);
  ASSERT_TRUE(r.value("passed", false)) << r.dump(2);
  for (const auto& stage : r["stages"]) {
    EXPECT_TRUE(stage["ran"].get<bool>() && stage["passed"].get<bool>()) << stage.dump();
  }
  EXPECT_GT(r["profile"]["speedup"].get<double>(), 1.0) << r["profile"].dump(2);
  EXPECT_GT(r["profile"]["sol_us"].get<double>(), 0.0);
  // The sweep found other shapes: odd, halved and doubled sizes.
  const auto& sweep = r["stages"][3];
  EXPECT_EQ(sweep["stage"], "shape_sweep");
  EXPECT_GE(sweep["trials"].size(), 4u) << sweep.dump(2);
}

TEST_F(EvalCliTest, GoodLayerNormPassesOnTheFusedSpec) {
  nlohmann::json r = Eval("layernorm_128x1024", "layernorm_good.cpp", 0, {"--no-profile"});
  EXPECT_TRUE(r.value("passed", false)) << r.dump(2);
}

TEST_F(EvalCliTest, GoodGemmBiasGeluPassesEveryStageAndBeatsTheBaseline) {
  nlohmann::json r = Eval("gemm_bias_gelu_128x768x3072", "gemm_bias_gelu_good.cpp", 0);
  ASSERT_TRUE(r.value("passed", false)) << r.dump(2);
  EXPECT_GT(r["profile"]["speedup"].get<double>(), 1.0) << r["profile"].dump(2);
  EXPECT_TRUE(r["compile"]["ok"].get<bool>());
}

TEST_F(EvalCliTest, HalfPrecisionKernelIsJudgedWithTheF16Tolerance) {
  nlohmann::json r = Eval("layernorm_f16_128x1024", "layernorm_f16_good.cpp", 0, {"--no-profile"});
  ASSERT_TRUE(r.value("passed", false)) << r.dump(2);
  ASSERT_EQ(r["tolerances"].size(), 1u);
  EXPECT_EQ(r["tolerances"][0]["dtype"], "f16");
  EXPECT_DOUBLE_EQ(r["tolerances"][0]["rtol"].get<double>(), 1e-2);
  // The f32 kernel refuses f16 tensors, and says so through its status.
  nlohmann::json wrong = Eval("layernorm_f16_128x1024", "layernorm_good.cpp", 1, {"--no-profile"});
  EXPECT_EQ(wrong.value("failed_stage", ""), "smoke");
  EXPECT_NE(wrong.value("reason", "").find("KF_ERR_INVALID_ARGUMENT"), std::string::npos)
      << wrong.value("reason", "");
}

TEST_F(EvalCliTest, TableReportEndsWithTheVerdict) {
  CliResult run = fleet_.Cli({"eval", "--spec", Spec("layernorm_128x1024"), "--source",
                              DataPath("kernels/bug_unwritten.cpp"), "--config", Config(),
                              "--cache-dir", (fleet_.dir() / "cache").string()},
                             300'000);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.out.find("smoke        FAILED"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("result: FAILED at smoke"), std::string::npos) << run.out;
}

TEST_F(EvalCliTest, CompileErrorFailsTheCompileStageWithTheCompilerOutput) {
  const std::filesystem::path broken = fleet_.dir() / "broken.cpp";
  ASSERT_TRUE(WriteFileAtomic(broken, "extern \"C\" int kf_kernel_run( { return 0; }\n").ok());
  CliResult run =
      fleet_.Cli({"eval", "--spec", Spec("layernorm_128x1024"), "--source", broken.string(),
                  "--cache-dir", (fleet_.dir() / "cache").string(), "--json"});
  EXPECT_EQ(run.exit_code, 1);
  nlohmann::json r = run.Json();
  EXPECT_EQ(r.value("failed_stage", ""), "compile");
  EXPECT_NE(r["compile"].value("log", "").find("error"), std::string::npos);
}

TEST_F(EvalCliTest, WrongOnlyOnNonPowerOfTwoSizesFailsTheShapeSweep) {
  ExpectRejected("bug_wrong_non_pow2.cpp", "shape_sweep", "1024->1023");
}

TEST_F(EvalCliTest, UnwrittenOutputElementFailsSmoke) {
  ExpectRejected("bug_unwritten.cpp", "smoke", "never written");
}

TEST_F(EvalCliTest, WriteIntoAnInputFailsSmoke) {
  ExpectRejected("bug_writes_input.cpp", "smoke", "wrote into its input");
}

TEST_F(EvalCliTest, ResultsCachedAcrossCallsFailSmoke) {
  ExpectRejected("bug_cached.cpp", "smoke", "results kept across calls");
}

TEST_F(EvalCliTest, NondeterministicReductionFailsDeterminism) {
  ExpectRejected("bug_nondeterministic.cpp", "determinism", "bitwise reproducible");
}

TEST_F(EvalCliTest, InfiniteLoopIsStoppedByTheCallTimeout) {
  ExpectRejected("bug_infinite_loop.cpp", "smoke", "did not return within 3000 ms");
}

TEST_F(EvalCliTest, SegfaultCrashesOnlyTheHarness) {
  ExpectRejected("bug_segfault.cpp", "smoke", "SIGSEGV");
}

TEST_F(EvalCliTest, SocketIsBlockedByTheSandbox) {
  ExpectRejected("bug_socket.cpp", "smoke", "socket");
}

TEST_F(EvalCliTest, ForkBombIsBlockedByTheSandbox) {
  ExpectRejected("bug_fork_bomb.cpp", "smoke", "fork");
}

TEST_F(EvalCliTest, UnboundedAllocationHitsTheMemoryLimit) {
  ExpectRejected("bug_unbounded_alloc.cpp", "smoke", "memory limit");
}

TEST_F(EvalCliTest, MissingSpecIsAnErrorNamingTheFile) {
  CliResult run = fleet_.Cli({"eval", "--spec", (fleet_.dir() / "nope.onnx").string(), "--source",
                              DataPath("kernels/layernorm_good.cpp")});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("nope.onnx"), std::string::npos) << run.err;
  EXPECT_TRUE(run.out.empty()) << run.out;
}

}  // namespace
}  // namespace kfleet::testing
