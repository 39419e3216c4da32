#include "storage/migrations.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

using testing::TempDir;

// Every table, index and trigger, as SQLite stores their definitions.
Result<std::vector<std::string>> SchemaSnapshot(Database& db) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(R"sql(
    SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema
    ORDER BY type, name
  )sql"));
  std::vector<std::string> entries;
  while (true) {
    KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return entries;
    entries.push_back(stmt.ColumnText(0));
  }
}

// Rows valid at each schema version, and a check that they survived later migrations. When a
// migration is appended, add its version here: the loop below migrates from every version.
struct VersionFixture {
  std::function<Status(Database&)> insert;
  std::function<void(Database&)> check;
};

Status InsertV1Rows(Database& db) {
  return db.Exec(R"sql(
    INSERT INTO blobs VALUES
      ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 3, 10);
    INSERT INTO models VALUES
      (1, 'resnet',
       'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'onnx', 3, 10);
    INSERT INTO jobs (id, kind, name, model_id, target, created_us, updated_us)
      VALUES (1, 'model', 'job one', 1, 'cuda', 11, 11);
    INSERT INTO kernel_jobs (id, job_id, name, spec_hash, spec, baseline_us, sol_us,
                             expected_saving_us, rank)
      VALUES (1, 1, 'matmul', 'h1', x'00ff', 10.0, 2.0, 8.0, 0);
    INSERT INTO candidates (id, kernel_job_id, island, agent, created_us, updated_us)
      VALUES (1, 1, 0, 'template', 12, 12);
    INSERT INTO nodes (id, name, registered_us, last_heartbeat_us) VALUES (1, 'gpu-1', 13, 13);
    INSERT INTO devices (node_id, idx, backend, name, arch, memory_bytes, compute_units)
      VALUES (1, 0, 'cuda', 'H200', 'sm_90', 141000000000, 132);
    INSERT INTO tasks (id, job_id, kind, state, timeout_ms, attempt, node_id, lease_deadline_us,
                       created_us, updated_us)
      VALUES (1, 1, 'test', 'leased', 1000, 1, 1, 99, 14, 14);
    INSERT INTO task_attempts (task_id, attempt, node_id, started_us) VALUES (1, 1, 1, 14);
    INSERT INTO events (job_id, ts_us, kind, data) VALUES (1, 15, 'job.created', '{"a":1}');
    INSERT INTO llm_calls (job_id, role, model, prompt_tokens, completion_tokens, latency_ms, ok,
                           ts_us)
      VALUES (1, 'coder', 'm', 10, 20, 30, 1, 16);
  )sql");
}

void CheckV1Rows(Database& db) {
  const std::map<std::string, int64_t> expected_counts = {
      {"blobs", 1}, {"models", 1},  {"jobs", 1},          {"kernel_jobs", 1}, {"candidates", 1},
      {"nodes", 1}, {"devices", 1}, {"task_attempts", 1}, {"events", 1},      {"llm_calls", 1}};
  for (const auto& [table, count] : expected_counts) {
    auto actual = db.QueryInt64("SELECT count(*) FROM " + table);
    ASSERT_TRUE(actual.ok()) << actual.status().ToString();
    EXPECT_EQ(*actual, count) << table;
  }
  auto task =
      db.QueryText("SELECT state || ' ' || attempt || ' ' || node_id FROM tasks WHERE id = 1");
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(*task, "leased 1 1");
  auto spec = db.QueryText("SELECT hex(spec) FROM kernel_jobs");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(*spec, "00FF");
}

Status InsertV2Rows(Database& db) {
  return db.Exec(R"sql(
    INSERT INTO tasks (id, job_id, kind, state, timeout_ms, created_us, updated_us)
      VALUES (2, 1, 'echo', 'queued', 1000, 20, 20);
  )sql");
}

void CheckV2Rows(Database& db) {
  auto stmt =
      db.Prepare("EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE state = 'queued' ORDER BY id");
  ASSERT_TRUE(stmt.ok()) << stmt.status().ToString();
  std::string plan;
  while (true) {
    auto row = stmt->Step();
    ASSERT_TRUE(row.ok()) << row.status().ToString();
    if (!*row) break;
    plan += stmt->ColumnText(3) + "\n";
  }
  EXPECT_NE(plan.find("tasks_queue_age"), std::string::npos) << plan;
  auto queued = db.QueryInt64("SELECT count(*) FROM tasks WHERE state = 'queued'");
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(*queued, 1);
}

// Rows written before v3 get the defaults; v3 rows carry the search state.
Status InsertV3Rows(Database& db) {
  return db.Exec(R"sql(
    UPDATE jobs SET phase = 'searching', summary = '{"baseline_us": 12.5}' WHERE id = 1;
    UPDATE candidates SET round = 2, template = 'gemm_blas', state = 'failed',
                          failed_stage = 'smoke', error = 'wrong result';
  )sql");
}

void CheckV3Rows(Database& db) {
  auto phase = db.QueryText(
      "SELECT phase || ' ' || json_extract(summary, '$.baseline_us') "
      "FROM jobs WHERE id = 1");
  ASSERT_TRUE(phase.ok()) << phase.status().ToString();
  EXPECT_EQ(*phase, "searching 12.5");
  auto failed = db.QueryText(
      "SELECT template || ' ' || round || ' ' || failed_stage "
      "FROM candidates WHERE state = 'failed'");
  ASSERT_TRUE(failed.ok()) << failed.status().ToString();
  EXPECT_EQ(*failed, "gemm_blas 2 smoke");
  auto defaults =
      db.QueryInt64("SELECT count(*) FROM kernel_jobs WHERE budget_ms = 0 AND note = ''");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(*defaults, 1);
}

// V1's llm call gets its candidate and an outcome.
Status InsertV4Rows(Database& db) {
  return db.Exec(R"sql(
    UPDATE llm_calls SET candidate_id = (SELECT min(id) FROM candidates), outcome = 'truncated';
  )sql");
}

void CheckV4Rows(Database& db) {
  auto calls = db.QueryText(
      "SELECT group_concat(coalesce(candidate_id, 'none') || ':' || outcome, ' ') FROM llm_calls");
  ASSERT_TRUE(calls.ok()) << calls.status().ToString();
  auto candidate = db.QueryInt64("SELECT min(id) FROM candidates");
  ASSERT_TRUE(candidate.ok());
  EXPECT_EQ(*calls, std::to_string(*candidate) + ":truncated");
}

const std::map<int, VersionFixture>& Fixtures() {
  static const std::map<int, VersionFixture> fixtures = {
      {1, {InsertV1Rows, CheckV1Rows}},
      {2, {InsertV2Rows, CheckV2Rows}},
      {3, {InsertV3Rows, CheckV3Rows}},
      {4, {InsertV4Rows, CheckV4Rows}},
  };
  return fixtures;
}

class StorageMigrationsTest : public ::testing::Test {
 protected:
  Result<std::unique_ptr<Database>> OpenFresh(const std::string& name) {
    return Database::Open(dir_.path() / name);
  }
  TempDir dir_;
};

TEST_F(StorageMigrationsTest, VersionsAreConsecutiveFromOne) {
  int expected = 1;
  for (const Migration& migration : SchemaMigrations()) {
    EXPECT_EQ(migration.version, expected++) << migration.name;
    EXPECT_FALSE(migration.sql.empty());
  }
  EXPECT_EQ(LatestSchemaVersion(), expected - 1);
  EXPECT_EQ(Fixtures().size(), static_cast<size_t>(LatestSchemaVersion()))
      << "add rows for the new schema version to Fixtures()";
}

TEST_F(StorageMigrationsTest, EmptyToLatest) {
  KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("empty.db"));
  KF_ASSERT_OK_AND_ASSIGN(int before, SchemaVersion(*db));
  EXPECT_EQ(before, 0);
  KF_ASSERT_OK(Migrate(*db));
  KF_ASSERT_OK_AND_ASSIGN(int after, SchemaVersion(*db));
  EXPECT_EQ(after, LatestSchemaVersion());
  KF_ASSERT_OK_AND_ASSIGN(int64_t tasks, db->QueryInt64("SELECT count(*) FROM tasks"));
  EXPECT_EQ(tasks, 0);
}

TEST_F(StorageMigrationsTest, EveryEarlierVersionToLatest) {
  KF_ASSERT_OK_AND_ASSIGN(auto reference, OpenFresh("reference.db"));
  KF_ASSERT_OK(Migrate(*reference));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> latest_schema, SchemaSnapshot(*reference));

  for (int start = 0; start < LatestSchemaVersion(); ++start) {
    SCOPED_TRACE("from schema version " + std::to_string(start));
    KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("from-" + std::to_string(start) + ".db"));
    KF_ASSERT_OK(MigrateTo(*db, start));
    KF_ASSERT_OK_AND_ASSIGN(int version, SchemaVersion(*db));
    ASSERT_EQ(version, start);
    for (int v = 1; v <= start; ++v) KF_ASSERT_OK(Fixtures().at(v).insert(*db));

    KF_ASSERT_OK(Migrate(*db));
    KF_ASSERT_OK_AND_ASSIGN(version, SchemaVersion(*db));
    EXPECT_EQ(version, LatestSchemaVersion());
    for (int v = 1; v <= start; ++v) Fixtures().at(v).check(*db);
    KF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> schema, SchemaSnapshot(*db));
    EXPECT_EQ(schema, latest_schema);
    KF_ASSERT_OK_AND_ASSIGN(std::string integrity, db->QueryText("PRAGMA integrity_check"));
    EXPECT_EQ(integrity, "ok");
  }
}

TEST_F(StorageMigrationsTest, LatestRowsInsertCleanly) {
  KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("latest.db"));
  KF_ASSERT_OK(Migrate(*db));
  for (const auto& [version, fixture] : Fixtures()) KF_ASSERT_OK(fixture.insert(*db));
  for (const auto& [version, fixture] : Fixtures()) fixture.check(*db);
}

TEST_F(StorageMigrationsTest, MigratingTwiceIsANoOp) {
  KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("twice.db"));
  KF_ASSERT_OK(Migrate(*db));
  KF_ASSERT_OK(InsertV1Rows(*db));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> before, SchemaSnapshot(*db));
  KF_ASSERT_OK(Migrate(*db));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> after, SchemaSnapshot(*db));
  EXPECT_EQ(before, after);
  CheckV1Rows(*db);
}

TEST_F(StorageMigrationsTest, RefusesANewerDatabase) {
  KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("newer.db"));
  const int newer = LatestSchemaVersion() + 6;
  KF_ASSERT_OK(db->Exec("PRAGMA user_version = " + std::to_string(newer)));
  Status status = Migrate(*db);
  EXPECT_EQ(status.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), (dir_.path() / "newer.db").string() + ": schema version " +
                                  std::to_string(newer) + " is newer than this kfleet (" +
                                  std::to_string(LatestSchemaVersion()) + "); upgrade kfleet");
  KF_ASSERT_OK_AND_ASSIGN(int version, SchemaVersion(*db));
  EXPECT_EQ(version, newer) << "a refused database is left as it was";
}

TEST_F(StorageMigrationsTest, RefusesToGoBackwards) {
  KF_ASSERT_OK_AND_ASSIGN(auto db, OpenFresh("back.db"));
  KF_ASSERT_OK(Migrate(*db));
  EXPECT_EQ(MigrateTo(*db, 0).code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(MigrateTo(*db, LatestSchemaVersion() + 1).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::storage
