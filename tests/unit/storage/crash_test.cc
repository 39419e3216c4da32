// Kills a writer process with SIGKILL at chosen and random moments and checks that every
// transaction it ran is all-or-none, and that the database is intact, for FULL and NORMAL sync.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "common/clock.h"
#include "storage/event_repo.h"
#include "storage/migrations.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

constexpr int kRowsPerTxn = 200;
constexpr int kTxnsPerRound = 1'000'000;  // transaction numbers of round r start at r * this

// Where the child stops inside a transaction and waits to be killed; nullopt: it runs freely
// and the parent kills it at a random moment.
struct StopPoint {
  int txn_in_round;
  int after_rows;
};

std::string SyncModeName(SyncMode mode) { return mode == SyncMode::kFull ? "Full" : "Normal"; }

bool WriteAll(int fd, const void* data, size_t size) {
  return ::write(fd, data, size) == static_cast<ssize_t>(size);
}

// The child: a new connection of its own (never the parent's handle), then transactions of
// kRowsPerTxn events each. Reports through `signal_fd` and ends only by SIGKILL or _exit.
[[noreturn]] void RunWriter(const std::filesystem::path& path, SyncMode sync, int round,
                            std::optional<StopPoint> stop, int signal_fd) {
  DatabaseOptions options;
  options.synchronous = sync;
  auto db = Database::Open(path, options);
  if (!db.ok()) ::_exit(2);
  // A tiny page cache makes SQLite spill uncommitted pages into the WAL mid-transaction, so a
  // kill leaves frames without a commit record for recovery to discard.
  if (!(*db)->Exec("PRAGMA cache_size = 10").ok()) ::_exit(2);
  EventRepo events(**db, SystemClock());
  const std::string padding(400, 'p');
  for (int n = 0;; ++n) {
    const int txn = round * kTxnsPerRound + n;
    auto transaction = (*db)->Begin();
    if (!transaction.ok()) ::_exit(3);
    for (int row = 0; row < kRowsPerTxn; ++row) {
      if (stop.has_value() && stop->txn_in_round == n && stop->after_rows == row) {
        if (!WriteAll(signal_fd, &txn, sizeof(txn))) ::_exit(4);
        while (true) ::pause();
      }
      std::string data = R"({"txn":)" + std::to_string(txn) + R"(,"row":)" + std::to_string(row) +
                         R"(,"pad":")" + padding + "\"}";
      if (!events.Append(std::nullopt, "crash.txn", data).ok()) ::_exit(5);
    }
    if (!transaction->Commit().ok()) ::_exit(6);
    if (!stop.has_value() && n == 0 && !WriteAll(signal_fd, &txn, sizeof(txn))) ::_exit(4);
  }
}

class StorageCrashTest : public ::testing::TestWithParam<SyncMode> {
 protected:
  void SetUp() override {
    path_ = dir_.path() / "kfleet.db";
    // Create and migrate, then close: no connection may be open across fork().
    KF_ASSERT_OK_AND_ASSIGN(auto db, Database::Open(path_));
    KF_ASSERT_OK(Migrate(*db));
  }

  // Forks a writer, waits for its signal, optionally sleeps, SIGKILLs it. Returns the txn
  // number it reported.
  void KillWriterDuring(int round, std::optional<StopPoint> stop, int sleep_us, int* reported) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      RunWriter(path_, GetParam(), round, stop, fds[1]);
    }
    ::close(fds[1]);
    ssize_t n = ::read(fds[0], reported, sizeof(*reported));
    ::close(fds[0]);
    if (n == sizeof(*reported) && sleep_us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    }
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_EQ(n, static_cast<ssize_t>(sizeof(*reported)))
        << "the writer exited before signalling, status " << status;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  }

  // Rows per transaction number, after checking the database opens intact.
  std::map<int64_t, int64_t> RowsPerTxn() {
    std::map<int64_t, int64_t> rows;
    auto db = Database::Open(path_);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (!db.ok()) return rows;
    auto integrity = (*db)->QueryText("PRAGMA integrity_check");
    EXPECT_TRUE(integrity.ok()) << integrity.status().ToString();
    EXPECT_EQ(integrity.value_or(""), "ok");
    auto stmt = (*db)->Prepare(R"sql(
      SELECT json_extract(data, '$.txn'), count(*) FROM events WHERE kind = 'crash.txn'
      GROUP BY 1 ORDER BY 1
    )sql");
    EXPECT_TRUE(stmt.ok()) << stmt.status().ToString();
    if (!stmt.ok()) return rows;
    while (true) {
      auto row = stmt->Step();
      EXPECT_TRUE(row.ok()) << row.status().ToString();
      if (!row.ok() || !*row) break;
      rows[stmt->ColumnInt64(0)] = stmt->ColumnInt64(1);
    }
    return rows;
  }

  testing::TempDir dir_;
  std::filesystem::path path_;
};

TEST_P(StorageCrashTest, EveryTransactionIsAllOrNone) {
  std::mt19937 random(20261120);
  // Rounds alternate between a kill inside a chosen transaction and a kill at a random moment.
  const std::vector<std::optional<StopPoint>> rounds = {StopPoint{2, 1}, std::nullopt,
                                                        StopPoint{1, kRowsPerTxn / 2}, std::nullopt,
                                                        StopPoint{3, kRowsPerTxn - 1}};
  int64_t committed_before = 0;
  for (int round = 0; round < static_cast<int>(rounds.size()); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::optional<StopPoint>& stop = rounds[static_cast<size_t>(round)];
    const int sleep_us =
        stop.has_value() ? 0 : std::uniform_int_distribution<int>(0, 30'000)(random);
    int reported = -1;
    KillWriterDuring(round, stop, sleep_us, &reported);
    if (HasFatalFailure()) return;

    std::map<int64_t, int64_t> rows = RowsPerTxn();
    int64_t committed_this_round = 0;
    for (const auto& [txn, count] : rows) {
      EXPECT_EQ(count, kRowsPerTxn) << "transaction " << txn << " is partial";
      if (txn / kTxnsPerRound == round) {
        // Commits happen in order: this round's transactions are 0, 1, ..., k-1.
        EXPECT_EQ(txn % kTxnsPerRound, committed_this_round) << "a gap before " << txn;
        ++committed_this_round;
      }
    }
    if (stop.has_value()) {
      EXPECT_EQ(rows.count(reported), 0u) << "the transaction killed mid-way left rows";
      EXPECT_EQ(committed_this_round, stop->txn_in_round);
    } else {
      EXPECT_GE(committed_this_round, 1) << "the first commit was acknowledged";
    }
    EXPECT_EQ(static_cast<int64_t>(rows.size()), committed_before + committed_this_round)
        << "earlier rounds' transactions must survive";
    committed_before = static_cast<int64_t>(rows.size());
  }
}

std::string ParamName(const ::testing::TestParamInfo<SyncMode>& param) {
  return SyncModeName(param.param);
}

INSTANTIATE_TEST_SUITE_P(SyncModes, StorageCrashTest,
                         ::testing::Values(SyncMode::kFull, SyncMode::kNormal), ParamName);

}  // namespace

// Names the parameter in gtest's output instead of dumping its bytes.
void PrintTo(SyncMode mode, std::ostream* out) { *out << SyncModeName(mode); }

}  // namespace kfleet::storage
