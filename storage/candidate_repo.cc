#include "storage/candidate_repo.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSelectCandidate = R"sql(
  SELECT id, kernel_job_id, island, parents, agent, plan, params, source_hash, state,
         test_report, profile_report, median_us, speedup, created_us, updated_us, round,
         template, failed_stage, error
  FROM candidates
)sql";

Result<CandidateRow> ReadCandidate(const Statement& stmt) {
  CandidateRow row;
  row.id = stmt.ColumnInt64(0);
  row.kernel_job_id = stmt.ColumnInt64(1);
  row.island = stmt.ColumnInt64(2);
  row.parents_json = stmt.ColumnText(3);
  row.agent = stmt.ColumnText(4);
  row.plan = stmt.ColumnText(5);
  row.params_json = stmt.ColumnText(6);
  if (!stmt.IsNull(7)) row.source_hash = stmt.ColumnText(7);
  KF_ASSIGN_OR_RETURN(row.state, Parse<CandidateState>(stmt.ColumnText(8)));
  row.test_report = stmt.ColumnBlob(9);
  row.profile_report = stmt.ColumnBlob(10);
  row.median_us = stmt.ColumnOptionalDouble(11);
  row.speedup = stmt.ColumnOptionalDouble(12);
  row.created_us = stmt.ColumnInt64(13);
  row.updated_us = stmt.ColumnInt64(14);
  row.round = stmt.ColumnInt64(15);
  row.template_name = stmt.ColumnText(16);
  row.failed_stage = stmt.ColumnText(17);
  row.error = stmt.ColumnText(18);
  return row;
}

Result<bool> Applied(Statement& stmt) {
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

}  // namespace

Result<int64_t> CandidateRepo::Create(const NewCandidate& c) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO candidates (kernel_job_id, island, parents, agent, plan, params, created_us,
                            updated_us, round, template)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(c.kernel_job_id, c.island, c.parents_json, c.agent, c.plan,
                                  c.params_json, clock_.NowUs(), c.round, c.template_name));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> id, stmt.RunReturningInt64());
  if (!id.has_value()) return Internal("insert candidate returned no id");
  return *id;
}

Result<CandidateRow> CandidateRepo::Get(int64_t id) {
  static const std::string sql = std::string(kSelectCandidate) + " WHERE id = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(id));
  return ReadOneRow(stmt, ReadCandidate, "no candidate " + std::to_string(id));
}

Result<std::vector<CandidateRow>> CandidateRepo::ListByKernelJob(int64_t kernel_job_id) {
  static const std::string sql =
      std::string(kSelectCandidate) + " WHERE kernel_job_id = ?1 ORDER BY id";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(kernel_job_id));
  return ReadAllRows(stmt, ReadCandidate);
}

Result<std::vector<CandidateRow>> CandidateRepo::Fastest(int64_t kernel_job_id, int limit) {
  static const std::string sql = std::string(kSelectCandidate) +
                                 " WHERE kernel_job_id = ?1 AND state = 'profiled'"
                                 " ORDER BY speedup DESC, id LIMIT ?2";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(kernel_job_id, limit));
  return ReadAllRows(stmt, ReadCandidate);
}

Result<bool> CandidateRepo::SetPlan(int64_t id, std::string_view plan) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates SET plan = ?2, updated_us = ?3 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, plan, clock_.NowUs()));
  return Applied(stmt);
}

Result<bool> CandidateRepo::SetSource(int64_t id, std::string_view source_hash) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates SET source_hash = ?2, state = 'coded', updated_us = ?3
    WHERE id = ?1 AND state = 'proposed'
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, source_hash, clock_.NowUs()));
  return Applied(stmt);
}

Result<bool> CandidateRepo::SetState(int64_t id, CandidateState state) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates SET state = ?2, updated_us = ?3 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Name(state), clock_.NowUs()));
  return Applied(stmt);
}

Result<bool> CandidateRepo::RecordTest(int64_t id, bool passed, std::string_view report) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates SET state = ?2, test_report = ?3, updated_us = ?4
    WHERE id = ?1 AND state IN ('coded', 'compiled')
  )sql"));
  CandidateState state = passed ? CandidateState::kPassed : CandidateState::kFailed;
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Name(state), Blob{report}, clock_.NowUs()));
  return Applied(stmt);
}

Result<bool> CandidateRepo::RecordFailure(int64_t id, std::string_view stage,
                                          std::string_view error, std::string_view report) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates
    SET state = 'failed', failed_stage = ?2, error = ?3,
        test_report = CASE WHEN length(?4) > 0 THEN ?4 ELSE test_report END, updated_us = ?5
    WHERE id = ?1 AND state NOT IN ('failed', 'profiled')
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, stage, error, Blob{report}, clock_.NowUs()));
  return Applied(stmt);
}

Result<bool> CandidateRepo::RecordProfile(int64_t id, std::string_view report, double median_us,
                                          double speedup) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE candidates
    SET state = 'profiled', profile_report = ?2, median_us = ?3, speedup = ?4, updated_us = ?5
    WHERE id = ?1 AND state = 'passed'
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Blob{report}, median_us, speedup, clock_.NowUs()));
  return Applied(stmt);
}

}  // namespace kfleet::storage
