// `kfleet bench dispatch` end to end: a real coordinator and three worker sessions on loopback.
#include "cli/dispatch_bench.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "common/log.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::cli {
namespace {

using storage::testing::TempDir;

TEST(DispatchBenchTest, EveryTaskCompletesExactlyOnce) {
  log::SetLevel(log::Level::kWarn);  // the sessions log every task at info
  TempDir dir;
  // The coordinator writes ~/.config/kfleet/cli.yaml when it is missing; the bench must not.
  TempDir home;
  const char* previous_home = std::getenv("HOME");
  const std::string saved_home = previous_home != nullptr ? previous_home : "";
  ASSERT_EQ(::setenv("HOME", home.path().c_str(), 1), 0);

  DispatchBenchOptions options;
  options.workers = 3;
  options.tasks = 30;
  options.scratch_parent = dir.path();
  Result<DispatchBenchReport> report = RunDispatchBench(options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();

  EXPECT_EQ(report->workers, 3);
  EXPECT_EQ(report->tasks, 30);
  EXPECT_EQ(report->synchronous, "FULL");
  EXPECT_EQ(report->done, 30u);
  EXPECT_EQ(report->failed, 0u);
  EXPECT_EQ(report->retries, 0u);
  EXPECT_EQ(report->reconnects, 0);
  EXPECT_EQ(report->executions_ok, 30);
  EXPECT_EQ(report->distinct_tasks_ok, 30);

  EXPECT_GT(report->registration_us, 0);
  EXPECT_GT(report->job_us, 0);
  EXPECT_GT(report->tasks_per_s, 0);
  // With one slot, every task after a worker's first waits on the previous one's round trip.
  EXPECT_EQ(report->assignment_latency.samples, 30 - 3);
  EXPECT_GT(report->assignment_latency.p50_us, 0);
  EXPECT_LE(report->assignment_latency.p50_us, report->assignment_latency.p99_us);
  EXPECT_LE(report->assignment_latency.p99_us, report->assignment_latency.max_us);

  // 3 registers and 30 results at least, all handled and answered.
  EXPECT_GE(report->coordinator_worker_messages, 33u);
  EXPECT_GT(report->coordinator_client_messages, 0u);
  EXPECT_EQ(report->coordinator_send_failures, 0u);
  EXPECT_EQ(report->coordinator_failed_batches, 0u);
  EXPECT_EQ(report->coordinator_malformed_dropped, 0u);
  EXPECT_EQ(report->worker_send_failures, 0u);

  EXPECT_EQ(report->scratch_dir.parent_path(), dir.path());
  EXPECT_FALSE(std::filesystem::exists(report->scratch_dir));
  EXPECT_EQ(std::string(std::getenv("HOME")), home.path().string());
  EXPECT_FALSE(std::filesystem::exists(home.path() / ".config/kfleet/cli.yaml"));
  EXPECT_EQ(::setenv("HOME", saved_home.c_str(), 1), 0);
}

TEST(DispatchBenchTest, RejectsNonsenseOptions) {
  DispatchBenchOptions options;
  options.workers = 0;
  EXPECT_EQ(RunDispatchBench(options).status().code(), ErrorCode::kInvalidArgument);
  options.workers = 1;
  options.tasks = 0;
  EXPECT_EQ(RunDispatchBench(options).status().code(), ErrorCode::kInvalidArgument);
  options.tasks = 1;
  options.slots = 0;
  EXPECT_EQ(RunDispatchBench(options).status().code(), ErrorCode::kInvalidArgument);
}

TEST(DispatchBenchTest, SummarizesLatenciesByNearestRank) {
  std::vector<int64_t> samples;
  for (int64_t i = 100; i >= 1; --i) samples.push_back(i);
  const LatencySummary summary = SummarizeLatencies(samples);
  EXPECT_EQ(summary.samples, 100);
  EXPECT_EQ(summary.p50_us, 50);
  EXPECT_EQ(summary.p99_us, 99);
  EXPECT_EQ(summary.max_us, 100);

  const LatencySummary one = SummarizeLatencies({7});
  EXPECT_EQ(one.p50_us, 7);
  EXPECT_EQ(one.p99_us, 7);
  EXPECT_EQ(one.max_us, 7);
  EXPECT_EQ(SummarizeLatencies({}).samples, 0);
}

}  // namespace
}  // namespace kfleet::cli
