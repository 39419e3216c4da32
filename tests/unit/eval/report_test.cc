#include "eval/report.h"

#include <gtest/gtest.h>

#include <csignal>

#include "eval/harness_protocol.h"
#include "eval/launcher.h"
#include "eval/sandbox.h"

namespace kfleet::eval {
namespace {

TEST(ReportTest, EmptyReportListsEveryStageNotRun) {
  EvalReport r = EmptyReport();
  ASSERT_EQ(r.stages.size(), std::size(kAllStages));
  for (const StageResult& s : r.stages) EXPECT_FALSE(s.ran);
  r.Finish();
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.failed_stage, "compile");
}

TEST(ReportTest, FirstFailureIsTheReason) {
  EvalReport r = EmptyReport();
  r.Fail(Stage::kSmoke, "out0[3] never written");
  r.Fail(Stage::kDeterminism, "later");
  r.Finish();
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.failed_stage, "smoke");
  EXPECT_EQ(r.reason, "out0[3] never written");
}

TEST(ReportTest, JsonRoundTrip) {
  EvalReport r = EmptyReport();
  for (StageResult& s : r.stages) s.ran = s.passed = true;
  r.StageFor(Stage::kSmoke)
      .trials.push_back({"seed 1, normal", "in0 f32[4]", true, "", 1e-7, 2e-7, 1.0});
  r.profile = ProfileResult{};
  r.profile->speedup = 2.5;
  r.profile->candidate.median_us = 10;
  r.tolerances.push_back({"f32", 1e-4, 1.0, 1e-3});
  r.compile.ok = true;
  r.compile.log = "warning: x";
  r.Finish();
  Result<EvalReport> back = ReportFromJson(nlohmann::json::parse(ToJson(r).dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->passed);
  EXPECT_EQ(back->stages.size(), r.stages.size());
  EXPECT_EQ(back->StageFor(Stage::kSmoke).trials[0].label, "seed 1, normal");
  ASSERT_TRUE(back->profile.has_value());
  EXPECT_DOUBLE_EQ(back->profile->speedup, 2.5);
  EXPECT_EQ(back->compile.log, "warning: x");
  EXPECT_NE(FormatReport(*back).find("result: PASSED"), std::string::npos);
}

TEST(ReportTest, MalformedJsonIsAnError) {
  EXPECT_FALSE(ReportFromJson(nlohmann::json::parse(R"({"stages": 3})")).ok());
  EXPECT_FALSE(ReportFromJson(nlohmann::json::parse("[]")).ok());
}

ProcessResult Died(std::string stderr_text) {
  ProcessResult result;
  result.stderr_bytes = std::move(stderr_text);
  return result;
}

TEST(ExplainAbnormalExitTest, CrashIsPlacedInTheStageAndTrialItHappened) {
  ProcessResult r = Died(
      "@stage load\n@stage smoke\n@trial seed 1001, normal\n"
      "@stage shape_sweep\n@trial 1024->1023, seed 1004, normal\n");
  r.term_signal = SIGSEGV;
  EvalReport report = ExplainAbnormalExit(r, {});
  EXPECT_EQ(report.failed_stage, "shape_sweep");
  EXPECT_NE(report.reason.find("SIGSEGV"), std::string::npos) << report.reason;
  EXPECT_NE(report.reason.find("1024->1023"), std::string::npos) << report.reason;
  EXPECT_TRUE(report.StageFor(Stage::kSmoke).passed);
  EXPECT_FALSE(report.StageFor(Stage::kStability).ran);
}

TEST(ExplainAbnormalExitTest, SandboxViolationSaysWhichCall) {
  ProcessResult r =
      Died("@stage load\n@stage smoke\nsandbox: blocked system call socket(family=2)\n");
  r.exit_code = kSandboxViolationExitCode;
  EvalReport report = ExplainAbnormalExit(r, {});
  EXPECT_EQ(report.failed_stage, "smoke");
  EXPECT_NE(report.reason.find("socket(family=2)"), std::string::npos) << report.reason;
  EXPECT_NE(report.reason.find("network"), std::string::npos) << report.reason;
}

TEST(ExplainAbnormalExitTest, HungAndOutOfMemoryKeepTheHarnessWords) {
  ProcessResult hung = Died("@stage smoke\n@hung one call did not return within 10 ms (x)\n");
  hung.exit_code = kHarnessHungExitCode;
  EXPECT_NE(ExplainAbnormalExit(hung, {}).reason.find("did not return"), std::string::npos);
  ProcessResult oom = Died("@stage smoke\n@oom an allocation failed: memory limit\n");
  oom.exit_code = kHarnessOutOfMemoryExitCode;
  LaunchOptions launch;
  launch.memory_limit_bytes = uint64_t{4} << 30;
  EXPECT_NE(ExplainAbnormalExit(oom, launch).reason.find("4 GiB"), std::string::npos);
}

TEST(ExplainAbnormalExitTest, WallClockKillSaysSo) {
  ProcessResult r = Died("@stage load\n");
  r.timed_out = true;
  r.term_signal = SIGKILL;
  LaunchOptions launch;
  launch.timeout_ms = 30'000;
  EvalReport report = ExplainAbnormalExit(r, launch);
  EXPECT_EQ(report.failed_stage, "load");
  EXPECT_NE(report.reason.find("30 s limit"), std::string::npos) << report.reason;
}

}  // namespace
}  // namespace kfleet::eval
