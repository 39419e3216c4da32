#include "storage/task_repo.h"

#include <gtest/gtest.h>

#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

constexpr int64_t kLeaseUs = 30'000'000;

class StorageTaskRepoTest : public testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    job_ = MakeJob();
    node_ = MakeNode("gpu-1");
  }

  int64_t Enqueue(double priority = 0, int64_t max_attempts = 3) {
    NewTask task;
    task.job_id = job_;
    task.kind = TaskKind::kProfile;
    task.priority = priority;
    task.backend = Backend::kCuda;
    task.arch = "sm_90";
    task.exclusive_device = true;
    task.min_memory_bytes = 1 << 30;
    task.payload = std::string("\x00payload", 8);
    task.timeout_ms = 5000;
    task.max_attempts = max_attempts;
    auto id = store_->tasks().Enqueue(task);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.value_or(0);
  }

  // Leases `task` to `node` and returns the attempt; 0 when the lease did not apply.
  uint32_t Lease(int64_t task, int64_t node) {
    auto attempt = store_->tasks().Lease(task, node, clock_.NowUs() + kLeaseUs);
    EXPECT_TRUE(attempt.ok()) << attempt.status().ToString();
    return attempt.ok() ? attempt->value_or(0) : 0;
  }

  TaskRow Get(int64_t task) {
    auto row = store_->tasks().Get(task);
    EXPECT_TRUE(row.ok()) << row.status().ToString();
    return row.ok() ? *row : TaskRow{};
  }

  int64_t job_ = 0;
  int64_t node_ = 0;
};

TEST_F(StorageTaskRepoTest, EnqueueStoresEveryField) {
  int64_t id = Enqueue(1.5, 4);
  TaskRow row = Get(id);
  EXPECT_EQ(row.job_id, job_);
  EXPECT_EQ(row.kind, TaskKind::kProfile);
  EXPECT_EQ(row.state, TaskState::kQueued);
  EXPECT_EQ(row.priority, 1.5);
  EXPECT_EQ(row.backend, Backend::kCuda);
  EXPECT_EQ(row.arch, "sm_90");
  EXPECT_TRUE(row.exclusive_device);
  EXPECT_EQ(row.min_memory_bytes, 1 << 30);
  EXPECT_EQ(row.payload, std::string("\x00payload", 8));
  EXPECT_EQ(row.timeout_ms, 5000);
  EXPECT_EQ(row.attempt, 0u);
  EXPECT_EQ(row.max_attempts, 4);
  EXPECT_EQ(row.node_id, std::nullopt);
  EXPECT_EQ(row.created_us, clock_.NowUs());

  NewTask any;
  any.job_id = job_;
  KF_ASSERT_OK_AND_ASSIGN(int64_t any_id, store_->tasks().Enqueue(any));
  EXPECT_EQ(Get(any_id).backend, std::nullopt);
  EXPECT_EQ(store_->tasks().Get(999).status().code(), ErrorCode::kNotFound);
}

TEST_F(StorageTaskRepoTest, EnqueueManyIsAllOrNone) {
  std::vector<NewTask> tasks(3);
  for (NewTask& t : tasks) t.job_id = job_;
  KF_ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, store_->tasks().EnqueueMany(tasks));
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_LT(ids[0], ids[1]);

  tasks[2].timeout_ms = 0;  // violates CHECK (timeout_ms > 0)
  auto failed = store_->tasks().EnqueueMany(tasks);
  EXPECT_EQ(failed.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(failed.status().message().find("timeout_ms"), std::string::npos)
      << failed.status().ToString();
  KF_ASSERT_OK_AND_ASSIGN(TaskCounts counts, store_->tasks().CountsByState(job_));
  EXPECT_EQ(counts.queued, 3);
}

TEST_F(StorageTaskRepoTest, NextQueuedIsByPriorityThenFifo) {
  int64_t low1 = Enqueue(1);
  int64_t high1 = Enqueue(5);
  int64_t low2 = Enqueue(1);
  int64_t high2 = Enqueue(5);
  int64_t mid = Enqueue(3);
  int64_t leased = Enqueue(9);
  ASSERT_EQ(Lease(leased, node_), 1u);

  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskRow> next, store_->tasks().NextQueued(10));
  std::vector<int64_t> order;
  for (const TaskRow& t : next) order.push_back(t.id);
  EXPECT_EQ(order, (std::vector<int64_t>{high1, high2, mid, low1, low2}));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskRow> two, store_->tasks().NextQueued(2));
  EXPECT_EQ(two.size(), 2u);
}

TEST_F(StorageTaskRepoTest, OldestQueuedIgnoresPriorityAndFinishedTasks) {
  int64_t first = Enqueue(1);
  int64_t leased = Enqueue(9);
  int64_t second = Enqueue(5);
  int64_t third = Enqueue(0);
  ASSERT_EQ(Lease(leased, node_), 1u);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskRow> oldest, store_->tasks().OldestQueued(2));
  ASSERT_EQ(oldest.size(), 2u);
  EXPECT_EQ(oldest[0].id, first);
  EXPECT_EQ(oldest[1].id, second);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskRow> all, store_->tasks().OldestQueued(10));
  EXPECT_EQ(all.back().id, third);
}

TEST_F(StorageTaskRepoTest, RetryCountCountsAttemptsThatWereFollowedByAnother) {
  int64_t retried_twice = Enqueue(0, 3);
  int64_t clean = Enqueue(0, 3);
  KF_ASSERT_OK_AND_ASSIGN(int64_t none, store_->tasks().RetryCount(job_));
  EXPECT_EQ(none, 0);
  for (int i = 0; i < 2; ++i) {
    uint32_t attempt = Lease(retried_twice, node_);
    KF_ASSERT_OK(store_->tasks().Fail(retried_twice, attempt, AttemptOutcome::kLost, "gone").status());
  }
  uint32_t last = Lease(retried_twice, node_);
  KF_ASSERT_OK_AND_ASSIGN(bool done, store_->tasks().Complete(retried_twice, last, "ok"));
  EXPECT_TRUE(done);
  KF_ASSERT_OK_AND_ASSIGN(bool clean_done, store_->tasks().Complete(clean, Lease(clean, node_), "ok"));
  EXPECT_TRUE(clean_done);
  KF_ASSERT_OK_AND_ASSIGN(int64_t retries, store_->tasks().RetryCount(job_));
  EXPECT_EQ(retries, 2);
}

TEST_F(StorageTaskRepoTest, LeaseAppliesOnlyOnce) {
  int64_t task = Enqueue();
  int64_t other_node = MakeNode("gpu-2");
  clock_.AdvanceMs(5);
  KF_ASSERT_OK_AND_ASSIGN(std::optional<uint32_t> first,
                          store_->tasks().Lease(task, node_, clock_.NowUs() + kLeaseUs));
  EXPECT_EQ(first, 1u);
  KF_ASSERT_OK_AND_ASSIGN(std::optional<uint32_t> second,
                          store_->tasks().Lease(task, other_node, clock_.NowUs() + kLeaseUs));
  EXPECT_EQ(second, std::nullopt);

  TaskRow row = Get(task);
  EXPECT_EQ(row.state, TaskState::kLeased);
  EXPECT_EQ(row.node_id, node_);
  EXPECT_EQ(row.attempt, 1u);
  EXPECT_EQ(row.lease_deadline_us, clock_.NowUs() + kLeaseUs);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskAttemptRow> attempts, store_->tasks().Attempts(task));
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].node_id, node_);
  EXPECT_EQ(attempts[0].started_us, clock_.NowUs());
  EXPECT_EQ(attempts[0].outcome, std::nullopt);

  KF_ASSERT_OK_AND_ASSIGN(std::optional<uint32_t> missing,
                          store_->tasks().Lease(9999, node_, clock_.NowUs() + kLeaseUs));
  EXPECT_EQ(missing, std::nullopt);
}

TEST_F(StorageTaskRepoTest, LeaseToAnUnknownNodeIsAnError) {
  int64_t task = Enqueue();
  auto lease = store_->tasks().Lease(task, 4242, clock_.NowUs() + kLeaseUs);
  ASSERT_FALSE(lease.ok());
  EXPECT_NE(lease.status().message().find("FOREIGN KEY"), std::string::npos);
  EXPECT_EQ(Get(task).state, TaskState::kQueued) << "the failed lease left nothing behind";
}

TEST_F(StorageTaskRepoTest, CompleteAcceptsOnlyTheLeaseHolder) {
  int64_t task = Enqueue();
  ASSERT_EQ(Lease(task, node_), 1u);
  KF_ASSERT_OK_AND_ASSIGN(std::optional<TaskState> requeued,
                          store_->tasks().Fail(task, 1, AttemptOutcome::kLost, "node went away"));
  EXPECT_EQ(requeued, TaskState::kQueued);
  ASSERT_EQ(Lease(task, node_), 2u);
  TaskRow before = Get(task);

  // The first attempt's worker comes back with a result: stale, ignored.
  clock_.AdvanceMs(7);
  KF_ASSERT_OK_AND_ASSIGN(bool stale, store_->tasks().Complete(task, 1, "old result"));
  EXPECT_FALSE(stale);
  TaskRow after_stale = Get(task);
  EXPECT_EQ(after_stale.state, TaskState::kLeased);
  EXPECT_EQ(after_stale.attempt, 2u);
  EXPECT_EQ(after_stale.result, "");
  EXPECT_EQ(after_stale.updated_us, before.updated_us);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskAttemptRow> attempts, store_->tasks().Attempts(task));
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].outcome, AttemptOutcome::kLost);
  EXPECT_EQ(attempts[1].outcome, std::nullopt);

  KF_ASSERT_OK_AND_ASSIGN(bool done, store_->tasks().Complete(task, 2, std::string("r\0s", 3)));
  EXPECT_TRUE(done);
  KF_ASSERT_OK_AND_ASSIGN(bool duplicate, store_->tasks().Complete(task, 2, "again"));
  EXPECT_FALSE(duplicate);

  TaskRow row = Get(task);
  EXPECT_EQ(row.state, TaskState::kDone);
  EXPECT_EQ(row.result, std::string("r\0s", 3));
  EXPECT_EQ(row.finished_us, clock_.NowUs());
  EXPECT_EQ(row.lease_deadline_us, std::nullopt);
  KF_ASSERT_OK_AND_ASSIGN(attempts, store_->tasks().Attempts(task));
  EXPECT_EQ(attempts[1].outcome, AttemptOutcome::kOk);
  EXPECT_EQ(attempts[1].ended_us, clock_.NowUs());

  // A failure report for a finished task changes nothing either.
  KF_ASSERT_OK_AND_ASSIGN(std::optional<TaskState> late,
                          store_->tasks().Fail(task, 2, AttemptOutcome::kCrashed, "late"));
  EXPECT_EQ(late, std::nullopt);
  EXPECT_EQ(Get(task).state, TaskState::kDone);
}

TEST_F(StorageTaskRepoTest, FailRequeuesUntilMaxAttemptsThenFailsWithEveryReason) {
  int64_t task = Enqueue(0, 3);
  const std::vector<std::pair<AttemptOutcome, std::string>> failures = {
      {AttemptOutcome::kCrashed, "SIGSEGV in candidate"},
      {AttemptOutcome::kTimedOut, "ran past 5000 ms"},
      {AttemptOutcome::kFailed, "nvcc: error"},
  };
  for (size_t i = 0; i < failures.size(); ++i) {
    uint32_t attempt = Lease(task, node_);
    ASSERT_EQ(attempt, i + 1);
    clock_.AdvanceMs(1);
    KF_ASSERT_OK_AND_ASSIGN(
        std::optional<TaskState> state,
        store_->tasks().Fail(task, attempt, failures[i].first, failures[i].second));
    TaskRow row = Get(task);
    if (i + 1 < failures.size()) {
      EXPECT_EQ(state, TaskState::kQueued);
      EXPECT_EQ(row.state, TaskState::kQueued);
      EXPECT_EQ(row.node_id, std::nullopt);
      EXPECT_EQ(row.error, "");
    } else {
      EXPECT_EQ(state, TaskState::kFailed);
      EXPECT_EQ(row.state, TaskState::kFailed);
      EXPECT_EQ(row.finished_us, clock_.NowUs());
      const std::string node = std::to_string(node_);
      EXPECT_EQ(row.error, "attempt 1 on node " + node + " (crashed): SIGSEGV in candidate; " +
                               "attempt 2 on node " + node + " (timed_out): ran past 5000 ms; " +
                               "attempt 3 on node " + node + " (failed): nvcc: error");
    }
  }
  EXPECT_EQ(Lease(task, node_), 0u) << "a failed task is never leased again";
  EXPECT_EQ(store_->tasks().Fail(task, 3, AttemptOutcome::kOk, "").status().code(),
            ErrorCode::kInvalidArgument);
}

TEST_F(StorageTaskRepoTest, ExpiredLeasesFollowTheClock) {
  int64_t a = Enqueue();
  int64_t b = Enqueue();
  const int64_t start_us = clock_.NowUs();
  KF_ASSERT_OK(store_->tasks().Lease(a, node_, start_us + 1000));
  KF_ASSERT_OK(store_->tasks().Lease(b, node_, start_us + 2000));

  KF_ASSERT_OK_AND_ASSIGN(std::vector<LeasedTask> none,
                          store_->tasks().ExpiredLeases(clock_.NowUs()));
  EXPECT_TRUE(none.empty());
  clock_.AdvanceUs(1000);
  KF_ASSERT_OK_AND_ASSIGN(none, store_->tasks().ExpiredLeases(clock_.NowUs()));
  EXPECT_TRUE(none.empty()) << "a lease is good up to its deadline";
  clock_.AdvanceUs(1);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<LeasedTask> one,
                          store_->tasks().ExpiredLeases(clock_.NowUs()));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].task_id, a);
  EXPECT_EQ(one[0].attempt, 1u);
  EXPECT_EQ(one[0].node_id, node_);
  EXPECT_EQ(one[0].lease_deadline_us, start_us + 1000);

  // A heartbeat moves both leases out; it never pulls one in.
  KF_ASSERT_OK_AND_ASSIGN(int64_t extended, store_->tasks().ExtendLeases(node_, start_us + 5000));
  EXPECT_EQ(extended, 2);
  KF_ASSERT_OK(store_->tasks().ExtendLeases(node_, start_us + 10));
  EXPECT_EQ(Get(a).lease_deadline_us, start_us + 5000);
  KF_ASSERT_OK_AND_ASSIGN(none, store_->tasks().ExpiredLeases(clock_.NowUs()));
  EXPECT_TRUE(none.empty());

  clock_.AdvanceUs(10'000);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<LeasedTask> both,
                          store_->tasks().ExpiredLeases(clock_.NowUs()));
  ASSERT_EQ(both.size(), 2u);
  for (const LeasedTask& lease : both) {
    KF_ASSERT_OK_AND_ASSIGN(std::optional<TaskState> state,
                            store_->tasks().Fail(lease.task_id, lease.attempt,
                                                 AttemptOutcome::kTimedOut, "lease expired"));
    EXPECT_EQ(state, TaskState::kQueued);
  }
  KF_ASSERT_OK_AND_ASSIGN(none, store_->tasks().ExpiredLeases(clock_.NowUs()));
  EXPECT_TRUE(none.empty());
}

TEST_F(StorageTaskRepoTest, RequeueNodeReleasesOnlyThatNodesLeases) {
  int64_t lost_node = MakeNode("lost");
  int64_t a = Enqueue();
  int64_t b = Enqueue(0, 1);
  int64_t c = Enqueue();
  int64_t done = Enqueue();
  ASSERT_EQ(Lease(a, lost_node), 1u);
  ASSERT_EQ(Lease(b, lost_node), 1u);
  ASSERT_EQ(Lease(c, node_), 1u);
  ASSERT_EQ(Lease(done, lost_node), 1u);
  KF_ASSERT_OK(store_->tasks().Complete(done, 1, "ok"));

  KF_ASSERT_OK_AND_ASSIGN(
      std::vector<TaskTransition> transitions,
      store_->tasks().RequeueNode(lost_node, AttemptOutcome::kLost, "missed 3 heartbeats"));
  ASSERT_EQ(transitions.size(), 2u);
  EXPECT_EQ(transitions[0].task_id, a);
  EXPECT_EQ(transitions[0].state, TaskState::kQueued);
  EXPECT_EQ(transitions[1].task_id, b);
  EXPECT_EQ(transitions[1].state, TaskState::kFailed) << "b had a single attempt";

  EXPECT_EQ(Get(a).state, TaskState::kQueued);
  EXPECT_EQ(Get(c).state, TaskState::kLeased);
  EXPECT_EQ(Get(done).state, TaskState::kDone);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskAttemptRow> attempts, store_->tasks().Attempts(a));
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, AttemptOutcome::kLost);
  EXPECT_EQ(attempts[0].reason, "missed 3 heartbeats");

  KF_ASSERT_OK_AND_ASSIGN(transitions,
                          store_->tasks().RequeueNode(lost_node, AttemptOutcome::kLost, "again"));
  EXPECT_TRUE(transitions.empty());
}

TEST_F(StorageTaskRepoTest, CancelStopsQueuedAndLeasedTasks) {
  int64_t queued = Enqueue();
  int64_t leased = Enqueue();
  int64_t done = Enqueue();
  ASSERT_EQ(Lease(leased, node_), 1u);
  ASSERT_EQ(Lease(done, node_), 1u);
  KF_ASSERT_OK(store_->tasks().Complete(done, 1, "ok"));
  int64_t other_job = MakeJob("other");
  NewTask other;
  other.job_id = other_job;
  KF_ASSERT_OK_AND_ASSIGN(int64_t untouched, store_->tasks().Enqueue(other));

  KF_ASSERT_OK_AND_ASSIGN(int64_t cancelled, store_->tasks().Cancel(job_));
  EXPECT_EQ(cancelled, 2);
  EXPECT_EQ(Get(queued).state, TaskState::kCancelled);
  EXPECT_EQ(Get(leased).state, TaskState::kCancelled);
  EXPECT_EQ(Get(done).state, TaskState::kDone);
  EXPECT_EQ(Get(untouched).state, TaskState::kQueued);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskAttemptRow> attempts, store_->tasks().Attempts(leased));
  ASSERT_EQ(attempts.size(), 1u);
  EXPECT_EQ(attempts[0].outcome, AttemptOutcome::kCancelled);

  KF_ASSERT_OK_AND_ASSIGN(bool late, store_->tasks().Complete(leased, 1, "too late"));
  EXPECT_FALSE(late);

  KF_ASSERT_OK_AND_ASSIGN(TaskCounts counts, store_->tasks().CountsByState(job_));
  EXPECT_EQ(counts.cancelled, 2);
  EXPECT_EQ(counts.done, 1);
  EXPECT_EQ(counts.queued, 0);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<TaskRow> listed, store_->tasks().ListByJob(job_));
  EXPECT_EQ(listed.size(), 3u);
}

TEST_F(StorageTaskRepoTest, BadStateIsAnErrorStatus) {
  int64_t task = Enqueue();
  Status status =
      store_->db().Exec("UPDATE tasks SET state = 'exploded' WHERE id = " + std::to_string(task));
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.message().find("CHECK constraint failed"), std::string::npos);
  // A leased task must name its node and deadline.
  status =
      store_->db().Exec("UPDATE tasks SET state = 'leased' WHERE id = " + std::to_string(task));
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
}

// The scheduler's hot queries are served by indexes, not table scans or sorts.
TEST_F(StorageTaskRepoTest, HotQueriesUseIndexes) {
  const std::vector<std::pair<std::string, std::string>> queries = {
      {"SELECT id FROM tasks WHERE state = 'queued' ORDER BY priority DESC, id LIMIT 10",
       "tasks_queue"},
      {"SELECT id FROM tasks WHERE state = 'leased' AND lease_deadline_us < 5",
       "tasks_lease_deadline"},
      {"SELECT id FROM tasks WHERE node_id = 1 AND state = 'leased'", "tasks_by_node"},
      {"SELECT state, count(*) FROM tasks WHERE job_id = 1 GROUP BY state", "tasks_by_job"},
      {"SELECT id FROM events WHERE job_id = 1 AND id > 0 ORDER BY id LIMIT 5", "events_by_job"},
  };
  for (const auto& [sql, index] : queries) {
    auto stmt = store_->db().Prepare("EXPLAIN QUERY PLAN " + sql);
    ASSERT_TRUE(stmt.ok()) << stmt.status().ToString();
    std::string plan;
    while (true) {
      auto row = stmt->Step();
      ASSERT_TRUE(row.ok()) << row.status().ToString();
      if (!*row) break;
      plan += stmt->ColumnText(3) + "\n";
    }
    EXPECT_NE(plan.find(index), std::string::npos) << sql << "\n" << plan;
    EXPECT_EQ(plan.find("TEMP B-TREE"), std::string::npos) << sql << "\n" << plan;
  }
}

}  // namespace
}  // namespace kfleet::storage
