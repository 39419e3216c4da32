#include "storage/transition_bench.h"

#include <gtest/gtest.h>

#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

TEST(StorageTransitionBenchTest, ReportsEveryRunAndCleansUp) {
  testing::TempDir dir;
  TransitionBenchOptions options;
  options.tasks = 40;
  options.batch_size = 20;
  options.state_dir = dir.path();
  KF_ASSERT_OK_AND_ASSIGN(TransitionBenchReport report, RunTransitionBench(options));
  EXPECT_EQ(report.tasks, 40);
  EXPECT_EQ(report.batch_size, 20);
  for (const TransitionRate* rate : {&report.full_unbatched, &report.full_batched,
                                     &report.normal_unbatched, &report.normal_batched}) {
    EXPECT_EQ(rate->transitions, 80);
    EXPECT_GT(rate->elapsed_us, 0);
    EXPECT_GT(rate->transitions_per_s, 0);
  }
  EXPECT_EQ(report.full_unbatched.transactions, 80);
  EXPECT_EQ(report.full_batched.transactions, 4);
  EXPECT_EQ(report.scratch_dir.parent_path(), dir.path());
  EXPECT_FALSE(std::filesystem::exists(report.scratch_dir));
}

TEST(StorageTransitionBenchTest, RejectsNonsenseOptions) {
  TransitionBenchOptions options;
  options.tasks = 0;
  EXPECT_EQ(RunTransitionBench(options).status().code(), ErrorCode::kInvalidArgument);
  options.tasks = 10;
  options.batch_size = 0;
  EXPECT_EQ(RunTransitionBench(options).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::storage
