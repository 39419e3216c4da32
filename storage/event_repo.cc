#include "storage/event_repo.h"

namespace kfleet::storage {
namespace {

Result<EventRow> ReadEvent(const Statement& stmt) {
  EventRow row;
  row.id = stmt.ColumnInt64(0);
  row.job_id = stmt.ColumnOptionalInt64(1);
  row.ts_us = stmt.ColumnInt64(2);
  row.kind = stmt.ColumnText(3);
  row.data_json = stmt.ColumnText(4);
  return row;
}

}  // namespace

Result<int64_t> EventRepo::Append(std::optional<int64_t> job_id, std::string_view kind,
                                  std::string_view data_json) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO events (job_id, ts_us, kind, data) VALUES (?1, ?2, ?3, ?4)
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id, clock_.NowUs(), kind, data_json));
  Result<std::optional<int64_t>> id = stmt.RunReturningInt64();
  if (!id.ok()) return id.status().WithContext("append event '" + std::string(kind) + "'");
  if (!id->has_value()) return Internal("insert event returned no id");
  return **id;
}

Result<std::vector<EventRow>> EventRepo::ListAfter(std::optional<int64_t> job_id, int64_t after_id,
                                                   int limit) {
  if (job_id.has_value()) {
    KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
      SELECT id, job_id, ts_us, kind, data FROM events
      WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3
    )sql"));
    KF_RETURN_IF_ERROR(stmt.BindAll(*job_id, after_id, limit));
    return ReadAllRows(stmt, ReadEvent);
  }
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, job_id, ts_us, kind, data FROM events WHERE id > ?1 ORDER BY id LIMIT ?2
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(after_id, limit));
  return ReadAllRows(stmt, ReadEvent);
}

}  // namespace kfleet::storage
