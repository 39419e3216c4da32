// A second process holds the write lock; the parent's writes wait for it (busy_timeout) or,
// with a shorter timeout, fail with Unavailable.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/clock.h"
#include "storage/event_repo.h"
#include "storage/migrations.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

constexpr auto kHold = std::chrono::milliseconds(300);

class StorageConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() / "kfleet.db";
    // Create and migrate, then close: no connection may be open across fork().
    KF_ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_));
    KF_ASSERT_OK(Migrate(*db));
  }

  // Forks a process that opens its own connection, takes the write lock with BEGIN IMMEDIATE,
  // writes one event, tells the parent, holds the lock for kHold and commits.
  pid_t StartLockHolder() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      auto db = Database::Open(path_);
      if (!db.ok()) ::_exit(2);
      auto txn = (*db)->Begin();
      if (!txn.ok()) ::_exit(3);
      EventRepo events(**db, SystemClock());
      if (!events.Append(std::nullopt, "holder").ok()) ::_exit(4);
      char ready = 'L';
      if (::write(fds[1], &ready, 1) != 1) ::_exit(5);
      std::this_thread::sleep_for(kHold);
      if (!txn->Commit().ok()) ::_exit(6);
      ::_exit(0);
    }
    ::close(fds[1]);
    char ready = 0;
    EXPECT_EQ(::read(fds[0], &ready, 1), 1) << "the lock holder died before taking the lock";
    ::close(fds[0]);
    return pid;
  }

  void ExpectCleanExit(pid_t pid) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }

  testing::TempDir dir_;
  std::filesystem::path path_;
};

TEST_F(StorageConcurrencyTest, WriterWaitsForTheLockHolder) {
  pid_t holder = StartLockHolder();
  ASSERT_GT(holder, 0);
  KF_ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_));  // busy_timeout_ms = 5000
  EventRepo events(*db, SystemClock());
  const auto start = std::chrono::steady_clock::now();
  KF_EXPECT_OK(events.Append(std::nullopt, "waiter"));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, std::chrono::milliseconds(100)) << "the write should have waited for the lock";
  ExpectCleanExit(holder);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<EventRow> rows, events.ListAfter(std::nullopt, 0, 10));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].kind, "holder");
  EXPECT_EQ(rows[1].kind, "waiter");
}

TEST_F(StorageConcurrencyTest, ShortBusyTimeoutGivesUnavailable) {
  pid_t holder = StartLockHolder();
  ASSERT_GT(holder, 0);
  DatabaseOptions options;
  options.busy_timeout_ms = 50;
  KF_ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_, options));
  EventRepo events(*db, SystemClock());

  auto append = events.Append(std::nullopt, "impatient");
  ASSERT_FALSE(append.ok());
  EXPECT_EQ(append.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(append.status().message().find("database is locked"), std::string::npos)
      << append.status().ToString();
  EXPECT_NE(append.status().message().find("busy_timeout_ms=50"), std::string::npos);

  auto txn = db->Begin();
  ASSERT_FALSE(txn.ok());
  EXPECT_EQ(txn.status().code(), ErrorCode::kUnavailable);
  EXPECT_FALSE(db->in_transaction());

  ExpectCleanExit(holder);
  // Once the holder has committed, the same connection writes normally.
  KF_EXPECT_OK(events.Append(std::nullopt, "after"));
}

}  // namespace
}  // namespace kfleet::storage
