#include "storage/job_repo.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSelectJob = R"sql(
  SELECT id, kind, name, model_id, target, state, priority, budget_ms, options, error,
         created_us, updated_us, finished_us, phase, summary
  FROM jobs
)sql";

Result<JobRow> ReadJob(const Statement& stmt) {
  JobRow row;
  row.id = stmt.ColumnInt64(0);
  KF_ASSIGN_OR_RETURN(row.kind, Parse<JobKind>(stmt.ColumnText(1)));
  row.name = stmt.ColumnText(2);
  row.model_id = stmt.ColumnOptionalInt64(3);
  KF_ASSIGN_OR_RETURN(row.target, Parse<Backend>(stmt.ColumnText(4)));
  KF_ASSIGN_OR_RETURN(row.state, Parse<JobState>(stmt.ColumnText(5)));
  row.priority = stmt.ColumnDouble(6);
  row.budget_ms = stmt.ColumnInt64(7);
  row.options_json = stmt.ColumnText(8);
  row.error = stmt.ColumnText(9);
  row.created_us = stmt.ColumnInt64(10);
  row.updated_us = stmt.ColumnInt64(11);
  row.finished_us = stmt.ColumnOptionalInt64(12);
  row.phase = stmt.ColumnText(13);
  row.summary_json = stmt.ColumnText(14);
  return row;
}

}  // namespace

Result<int64_t> JobRepo::Create(const NewJob& job) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO jobs (kind, name, model_id, target, priority, budget_ms, options, created_us,
                      updated_us, phase)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(Name(job.kind), job.name, job.model_id, Name(job.target),
                                  job.priority, job.budget_ms, job.options_json, clock_.NowUs(),
                                  job.phase));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> id, stmt.RunReturningInt64());
  if (!id.has_value()) return Internal("insert job '" + job.name + "' returned no id");
  return *id;
}

Result<JobRow> JobRepo::Get(int64_t id) {
  static const std::string sql = std::string(kSelectJob) + " WHERE id = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(id));
  return ReadOneRow(stmt, ReadJob, "no job " + std::to_string(id));
}

Result<std::vector<JobRow>> JobRepo::List(std::optional<JobState> state) {
  static const std::string all_sql = std::string(kSelectJob) + " ORDER BY id";
  static const std::string in_state_sql = std::string(kSelectJob) + " WHERE state = ?1 ORDER BY id";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(state.has_value() ? in_state_sql : all_sql));
  if (state.has_value()) KF_RETURN_IF_ERROR(stmt.BindAll(Name(*state)));
  return ReadAllRows(stmt, ReadJob);
}

Result<bool> JobRepo::SetState(int64_t id, JobState state, std::string_view error) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE jobs
    SET state = ?2, error = ?3, updated_us = ?4,
        finished_us = CASE WHEN ?2 IN ('done', 'failed', 'cancelled') THEN ?4 END
    WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Name(state), error, clock_.NowUs()));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  if (changed == 1) return true;
  KF_RETURN_IF_ERROR(Get(id).status());  // NotFound for an unknown job
  return false;
}

Result<bool> JobRepo::SetPhase(int64_t id, std::string_view phase) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE jobs SET phase = ?2, updated_us = ?3
    WHERE id = ?1 AND state NOT IN ('done', 'failed', 'cancelled')
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, phase, clock_.NowUs()));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

Status JobRepo::SetSummary(int64_t id, std::string_view summary_json) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE jobs SET summary = ?2, updated_us = ?3 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, summary_json, clock_.NowUs()));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  if (changed != 1) return NotFound("no job " + std::to_string(id));
  return Status::Ok();
}

}  // namespace kfleet::storage
