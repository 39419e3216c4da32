#include "storage/llm_call_repo.h"

namespace kfleet::storage {
namespace {

Result<LlmCallRow> ReadLlmCall(const Statement& stmt) {
  LlmCallRow row;
  row.id = stmt.ColumnInt64(0);
  row.call.job_id = stmt.ColumnOptionalInt64(1);
  row.call.kernel_job_id = stmt.ColumnOptionalInt64(2);
  row.call.role = stmt.ColumnText(3);
  row.call.model = stmt.ColumnText(4);
  row.call.prompt_tokens = stmt.ColumnInt64(5);
  row.call.completion_tokens = stmt.ColumnInt64(6);
  row.call.cost_usd = stmt.ColumnDouble(7);
  row.call.latency_ms = stmt.ColumnInt64(8);
  row.call.ok = stmt.ColumnInt64(9) != 0;
  row.call.error = stmt.ColumnText(10);
  row.ts_us = stmt.ColumnInt64(11);
  row.call.candidate_id = stmt.ColumnOptionalInt64(12);
  row.call.outcome = stmt.ColumnText(13);
  return row;
}

}  // namespace

Result<int64_t> LlmCallRepo::Record(const NewLlmCall& c) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO llm_calls (job_id, kernel_job_id, role, model, prompt_tokens, completion_tokens,
                           cost_usd, latency_ms, ok, error, ts_us, candidate_id, outcome)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(c.job_id, c.kernel_job_id, c.role, c.model, c.prompt_tokens,
                                  c.completion_tokens, c.cost_usd, c.latency_ms, c.ok, c.error,
                                  clock_.NowUs(), c.candidate_id, c.outcome));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> id, stmt.RunReturningInt64());
  if (!id.has_value()) return Internal("insert llm call returned no id");
  return *id;
}

Result<std::vector<LlmCallRow>> LlmCallRepo::ListByJob(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, job_id, kernel_job_id, role, model, prompt_tokens, completion_tokens, cost_usd,
           latency_ms, ok, error, ts_us, candidate_id, outcome
    FROM llm_calls WHERE job_id = ?1 ORDER BY ts_us, id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  return ReadAllRows(stmt, ReadLlmCall);
}

Result<LlmSpend> LlmCallRepo::SpendByJob(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
           total(cost_usd), coalesce(sum(ok = 0), 0)
    FROM llm_calls WHERE job_id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return Internal("llm spend query returned no row");
  LlmSpend spend;
  spend.calls = stmt.ColumnInt64(0);
  spend.prompt_tokens = stmt.ColumnInt64(1);
  spend.completion_tokens = stmt.ColumnInt64(2);
  spend.cost_usd = stmt.ColumnDouble(3);
  spend.failed_calls = stmt.ColumnInt64(4);
  return spend;
}

}  // namespace kfleet::storage
