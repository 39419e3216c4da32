#include "storage/db.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

using testing::TempDir;

class StorageDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KF_ASSERT_OK_AND_ASSIGN(db_, Database::Open(dir_.path() / "test.db"));
    KF_ASSERT_OK(db_->Exec(R"sql(
      CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'old')),
        weight REAL,
        data BLOB
      );
    )sql"));
  }

  Result<int64_t> Count() { return db_->QueryInt64("SELECT count(*) FROM items"); }

  Status Insert(std::string_view name) {
    KF_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("INSERT INTO items (name) VALUES (?1)"));
    KF_RETURN_IF_ERROR(stmt.BindAll(name));
    return stmt.Run().status();
  }

  TempDir dir_;
  std::unique_ptr<Database> db_;
};

TEST_F(StorageDbTest, OpenAppliesPragmas) {
  KF_ASSERT_OK_AND_ASSIGN(std::string journal_mode, db_->QueryText("PRAGMA journal_mode"));
  EXPECT_EQ(journal_mode, "wal");
  KF_ASSERT_OK_AND_ASSIGN(int64_t synchronous, db_->QueryInt64("PRAGMA synchronous"));
  EXPECT_EQ(synchronous, 2);  // FULL by default
  KF_ASSERT_OK_AND_ASSIGN(int64_t foreign_keys, db_->QueryInt64("PRAGMA foreign_keys"));
  EXPECT_EQ(foreign_keys, 1);
  KF_ASSERT_OK_AND_ASSIGN(int64_t busy_timeout, db_->QueryInt64("PRAGMA busy_timeout"));
  EXPECT_EQ(busy_timeout, 5000);
}

TEST_F(StorageDbTest, OpenHonoursOptions) {
  DatabaseOptions options;
  options.synchronous = SyncMode::kNormal;
  options.busy_timeout_ms = 250;
  KF_ASSERT_OK_AND_ASSIGN(auto db, Database::Open(dir_.path() / "normal.db", options));
  KF_ASSERT_OK_AND_ASSIGN(int64_t synchronous, db->QueryInt64("PRAGMA synchronous"));
  EXPECT_EQ(synchronous, 1);
  KF_ASSERT_OK_AND_ASSIGN(int64_t busy_timeout, db->QueryInt64("PRAGMA busy_timeout"));
  EXPECT_EQ(busy_timeout, 250);
}

TEST_F(StorageDbTest, OpenErrorNamesThePath) {
  std::filesystem::path path = dir_.path() / "missing-dir" / "kfleet.db";
  auto db = Database::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), ErrorCode::kIoError);
  EXPECT_EQ(db.status().message(), path.string() + ": unable to open database file");
}

TEST_F(StorageDbTest, OpenRefusesAFileThatIsNotADatabase) {
  std::filesystem::path path = dir_.path() / "notes.txt";
  std::ofstream(path) << std::string(4096, 'x');
  auto db = Database::Open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(db.status().message().find(path.string()), std::string::npos);
  EXPECT_NE(db.status().message().find("file is not a database"), std::string::npos)
      << db.status().ToString();
}

TEST_F(StorageDbTest, BindsAndReadsEveryType) {
  KF_ASSERT_OK_AND_ASSIGN(
      Statement insert,
      db_->Prepare("INSERT INTO items (id, name, weight, data) VALUES (?1, ?2, ?3, ?4)"));
  const std::string bytes("a\0b", 3);
  KF_ASSERT_OK(insert.BindAll(int64_t{1} << 40, "first", 2.5, Blob{bytes}));
  KF_ASSERT_OK(insert.Run());
  insert.Reset();
  KF_ASSERT_OK(insert.BindAll(7, std::string("second"), std::nullopt, Blob{""}));
  KF_ASSERT_OK(insert.Run());
  insert.Reset();
  KF_ASSERT_OK(insert.BindAll(8, std::string_view("third"), std::optional<double>(),
                              std::optional<std::string_view>()));
  KF_ASSERT_OK(insert.Run());

  KF_ASSERT_OK_AND_ASSIGN(Statement select,
                          db_->Prepare("SELECT id, name, weight, data FROM items ORDER BY id"));
  KF_ASSERT_OK_AND_ASSIGN(bool row, select.Step());
  ASSERT_TRUE(row);
  EXPECT_EQ(select.ColumnInt64(0), 7);
  EXPECT_EQ(select.ColumnText(1), "second");
  EXPECT_EQ(select.ColumnOptionalDouble(2), std::nullopt);
  EXPECT_FALSE(select.IsNull(3)) << "an empty blob must not become NULL";
  EXPECT_EQ(select.ColumnBlob(3), "");
  KF_ASSERT_OK_AND_ASSIGN(row, select.Step());
  ASSERT_TRUE(row);
  EXPECT_TRUE(select.IsNull(3));
  KF_ASSERT_OK_AND_ASSIGN(row, select.Step());
  ASSERT_TRUE(row);
  EXPECT_EQ(select.ColumnInt64(0), int64_t{1} << 40);
  EXPECT_EQ(select.ColumnText(1), "first");
  EXPECT_EQ(select.ColumnOptionalDouble(2), 2.5);
  EXPECT_EQ(select.ColumnBlob(3), bytes);
  KF_ASSERT_OK_AND_ASSIGN(row, select.Step());
  EXPECT_FALSE(row);
}

TEST_F(StorageDbTest, StatementsAreCachedAndComeBackReset) {
  KF_ASSERT_OK(Insert("a"));
  KF_ASSERT_OK(Insert("b"));
  const size_t cached = db_->cached_statement_count();
  for (int i = 0; i < 50; ++i) {
    KF_ASSERT_OK_AND_ASSIGN(Statement stmt, db_->Prepare("SELECT name FROM items ORDER BY id"));
    KF_ASSERT_OK_AND_ASSIGN(bool row, stmt.Step());
    ASSERT_TRUE(row);
    EXPECT_EQ(stmt.ColumnText(0), "a") << "a reused statement starts from its first row";
  }
  EXPECT_EQ(db_->cached_statement_count(), cached + 1);
}

TEST_F(StorageDbTest, SameSqlTwiceAtOnceIsAnError) {
  KF_ASSERT_OK_AND_ASSIGN(Statement outer, db_->Prepare("SELECT 1"));
  auto inner = db_->Prepare("SELECT 1");
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(inner.status().code(), ErrorCode::kInternal);
}

TEST_F(StorageDbTest, ErrorsBecomeStatuses) {
  auto syntax = db_->Prepare("SELEC nonsense");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.status().message().find("syntax error"), std::string::npos);

  auto two = db_->Prepare("SELECT 1; SELECT 2");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("more than one statement"), std::string::npos);

  KF_ASSERT_OK(Insert("dup"));
  Status duplicate = Insert("dup");
  EXPECT_EQ(duplicate.code(), ErrorCode::kAlreadyExists) << duplicate.ToString();
  EXPECT_NE(duplicate.message().find("UNIQUE constraint failed: items.name"), std::string::npos);

  Status check = db_->Exec("UPDATE items SET state = 'bogus'");
  EXPECT_EQ(check.code(), ErrorCode::kInvalidArgument) << check.ToString();
  EXPECT_NE(check.message().find("CHECK constraint failed"), std::string::npos);
}

TEST_F(StorageDbTest, TransactionCommitsOrRollsBack) {
  {
    KF_ASSERT_OK_AND_ASSIGN(Transaction txn, db_->Begin());
    EXPECT_TRUE(db_->in_transaction());
    KF_ASSERT_OK(Insert("kept"));
    KF_ASSERT_OK(txn.Commit());
  }
  {
    KF_ASSERT_OK_AND_ASSIGN(Transaction txn, db_->Begin());
    KF_ASSERT_OK(Insert("dropped"));
  }  // no Commit: rolled back
  EXPECT_FALSE(db_->in_transaction());
  KF_ASSERT_OK_AND_ASSIGN(int64_t count, Count());
  EXPECT_EQ(count, 1);
}

TEST_F(StorageDbTest, InTransactionRollsBackOnError) {
  Status status = db_->InTransaction([&]() -> Status {
    KF_RETURN_IF_ERROR(Insert("one"));
    KF_RETURN_IF_ERROR(Insert("two"));
    return Insert("one");  // duplicate: the whole transaction goes
  });
  EXPECT_EQ(status.code(), ErrorCode::kAlreadyExists);
  KF_ASSERT_OK_AND_ASSIGN(int64_t count, Count());
  EXPECT_EQ(count, 0);
}

TEST_F(StorageDbTest, NestedTransactionsAreSavepoints) {
  Status status = db_->InTransaction([&]() -> Status {
    KF_RETURN_IF_ERROR(Insert("outer"));
    Status inner = db_->InTransaction([&]() -> Status {
      KF_RETURN_IF_ERROR(Insert("inner"));
      return Cancelled("inner gives up");
    });
    EXPECT_EQ(inner.code(), ErrorCode::kCancelled);
    return db_->InTransaction([&]() { return Insert("inner2"); });
  });
  KF_ASSERT_OK(status);
  KF_ASSERT_OK_AND_ASSIGN(
      std::string names,
      db_->QueryText("SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY id)"));
  EXPECT_EQ(names, "outer,inner2");
}

TEST_F(StorageDbTest, CommitTwiceIsAnError) {
  KF_ASSERT_OK_AND_ASSIGN(Transaction txn, db_->Begin());
  KF_ASSERT_OK(txn.Commit());
  EXPECT_EQ(txn.Commit().code(), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kfleet::storage
