#include "storage/kernel_job_repo.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSelectKernelJob = R"sql(
  SELECT id, job_id, name, spec_hash, spec, count, baseline_us, sol_us, expected_saving_us,
         rank, state, best_candidate_id, family, share, budget_ms, note, rounds
  FROM kernel_jobs
)sql";

Result<KernelJobRow> ReadKernelJob(const Statement& stmt) {
  KernelJobRow row;
  row.id = stmt.ColumnInt64(0);
  row.job_id = stmt.ColumnInt64(1);
  row.name = stmt.ColumnText(2);
  row.spec_hash = stmt.ColumnText(3);
  row.spec = stmt.ColumnBlob(4);
  row.count = stmt.ColumnInt64(5);
  row.baseline_us = stmt.ColumnDouble(6);
  row.sol_us = stmt.ColumnDouble(7);
  row.expected_saving_us = stmt.ColumnDouble(8);
  row.rank = stmt.ColumnInt64(9);
  KF_ASSIGN_OR_RETURN(row.state, Parse<KernelJobState>(stmt.ColumnText(10)));
  row.best_candidate_id = stmt.ColumnOptionalInt64(11);
  row.family = stmt.ColumnText(12);
  row.share = stmt.ColumnDouble(13);
  row.budget_ms = stmt.ColumnInt64(14);
  row.note = stmt.ColumnText(15);
  row.rounds = stmt.ColumnInt64(16);
  return row;
}

}  // namespace

Result<int64_t> KernelJobRepo::Create(const NewKernelJob& k) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO kernel_jobs (job_id, name, spec_hash, spec, count, baseline_us, sol_us,
                             expected_saving_us, rank, family, share, budget_ms, state, note)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(k.job_id, k.name, k.spec_hash, Blob{k.spec}, k.count,
                                  k.baseline_us, k.sol_us, k.expected_saving_us, k.rank, k.family,
                                  k.share, k.budget_ms, Name(k.state), k.note));
  Result<std::optional<int64_t>> id = stmt.RunReturningInt64();
  if (!id.ok()) {
    return id.status().WithContext("job " + std::to_string(k.job_id) + ": add kernel job '" +
                                   k.name + "'");
  }
  if (!id->has_value()) return Internal("insert kernel job '" + k.name + "' returned no id");
  return **id;
}

Result<KernelJobRow> KernelJobRepo::Get(int64_t id) {
  static const std::string sql = std::string(kSelectKernelJob) + " WHERE id = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(id));
  return ReadOneRow(stmt, ReadKernelJob, "no kernel job " + std::to_string(id));
}

Result<std::vector<KernelJobRow>> KernelJobRepo::ListByJob(int64_t job_id) {
  static const std::string sql =
      std::string(kSelectKernelJob) + " WHERE job_id = ?1 ORDER BY rank, id";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  return ReadAllRows(stmt, ReadKernelJob);
}

Result<bool> KernelJobRepo::SetState(int64_t id, KernelJobState state) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE kernel_jobs SET state = ?2 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Name(state)));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

Result<int64_t> KernelJobRepo::StartRound(int64_t id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE kernel_jobs SET rounds = rounds + 1 WHERE id = ?1 RETURNING rounds - 1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> round, stmt.RunReturningInt64());
  if (!round.has_value()) return NotFound("no kernel job " + std::to_string(id));
  return *round;
}

Result<bool> KernelJobRepo::Finish(int64_t id, KernelJobState state, std::string_view note) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE kernel_jobs SET state = ?2, note = ?3 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, Name(state), note));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

Result<bool> KernelJobRepo::SetBest(int64_t id, int64_t candidate_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE kernel_jobs SET best_candidate_id = ?2
    WHERE id = ?1 AND EXISTS (SELECT 1 FROM candidates WHERE id = ?2 AND kernel_job_id = ?1)
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id, candidate_id));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

}  // namespace kfleet::storage
