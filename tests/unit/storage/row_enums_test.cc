#include "storage/row_enums.h"

#include <gtest/gtest.h>

#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

using StorageRowEnumsTest = testing::StoreTest;

// Writes every name of E through `sql` (?1 = the name) and expects SQLite to accept each, so the
// enums and the schema's CHECK constraints cannot drift apart.
template <typename E>
void ExpectSchemaAcceptsEveryName(Database& db, const std::string& sql) {
  for (std::string_view name : ValueNames<E>::kNames) {
    SCOPED_TRACE(std::string(ValueNames<E>::kWhat) + " " + std::string(name));
    auto parsed = Parse<E>(name);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(Name(*parsed), name);
    auto stmt = db.Prepare(sql);
    ASSERT_TRUE(stmt.ok()) << stmt.status().ToString();
    ASSERT_TRUE(stmt->BindAll(name).ok());
    auto changed = stmt->Run();
    ASSERT_TRUE(changed.ok()) << changed.status().ToString();
    EXPECT_EQ(*changed, 1);
  }
}

TEST_F(StorageRowEnumsTest, SchemaAcceptsEveryEnumValue) {
  int64_t job = MakeJob();
  int64_t node = MakeNode("n");
  KF_ASSERT_OK(store_->db().Exec(R"sql(
    INSERT INTO kernel_jobs (id, job_id, name, spec_hash, spec, baseline_us, sol_us,
                             expected_saving_us, rank)
      VALUES (1, 1, 'k', 'h', x'', 1, 1, 0, 0);
    INSERT INTO candidates (id, kernel_job_id, island, agent, created_us, updated_us)
      VALUES (1, 1, 0, 'template', 0, 0);
    INSERT INTO devices (node_id, idx, backend, name, arch, memory_bytes, compute_units)
      VALUES (1, 0, 'cpu', 'cpu', 'x86-64', 0, 1);
    INSERT INTO tasks (id, job_id, kind, timeout_ms, created_us, updated_us)
      VALUES (1, 1, 'echo', 1, 0, 0);
    INSERT INTO task_attempts (task_id, attempt, node_id, started_us) VALUES (1, 1, 1, 0);
  )sql"));
  ASSERT_EQ(job, 1);
  ASSERT_EQ(node, 1);
  Database& db = store_->db();
  constexpr std::string_view kFinished = "?1 IN ('done', 'failed', 'cancelled')";
  ExpectSchemaAcceptsEveryName<JobKind>(db, "UPDATE jobs SET kind = ?1");
  ExpectSchemaAcceptsEveryName<Backend>(db, "UPDATE jobs SET target = ?1");
  ExpectSchemaAcceptsEveryName<Backend>(db, "UPDATE devices SET backend = ?1");
  ExpectSchemaAcceptsEveryName<Backend>(db, "UPDATE tasks SET backend = ?1");
  ExpectSchemaAcceptsEveryName<JobState>(
      db, "UPDATE jobs SET state = ?1, finished_us = CASE WHEN " + std::string(kFinished) +
              " THEN 1 END");
  ExpectSchemaAcceptsEveryName<KernelJobState>(db, "UPDATE kernel_jobs SET state = ?1");
  ExpectSchemaAcceptsEveryName<CandidateState>(db, "UPDATE candidates SET state = ?1");
  ExpectSchemaAcceptsEveryName<NodeState>(db, "UPDATE nodes SET state = ?1");
  ExpectSchemaAcceptsEveryName<TaskKind>(db, "UPDATE tasks SET kind = ?1");
  ExpectSchemaAcceptsEveryName<TaskState>(db,
                                          "UPDATE tasks SET state = ?1, node_id = 1,"
                                          " lease_deadline_us = CASE WHEN ?1 = 'leased' THEN 1 END,"
                                          " finished_us = CASE WHEN " +
                                              std::string(kFinished) + " THEN 1 END");
  ExpectSchemaAcceptsEveryName<AttemptOutcome>(
      db, "UPDATE task_attempts SET outcome = ?1, ended_us = 1");
}

TEST(StorageRowEnums, ParseNamesTheAllowedValues) {
  auto bad = Parse<Backend>("rocm");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "backend 'rocm' is not one of cpu, cuda, hip");
  EXPECT_EQ(Name(AttemptOutcome::kTimedOut), "timed_out");
}

}  // namespace
}  // namespace kfleet::storage
