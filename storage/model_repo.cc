#include "storage/model_repo.h"

namespace kfleet::storage {
namespace {

Result<ModelRow> ReadModel(const Statement& stmt) {
  ModelRow row;
  row.id = stmt.ColumnInt64(0);
  row.name = stmt.ColumnText(1);
  row.blob_hash = stmt.ColumnText(2);
  row.format = stmt.ColumnText(3);
  row.size_bytes = stmt.ColumnInt64(4);
  row.created_us = stmt.ColumnInt64(5);
  return row;
}

}  // namespace

Result<int64_t> ModelRepo::Create(const NewModel& model) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO models (name, blob_hash, format, size_bytes, created_us)
    SELECT ?1, hash, ?3, size_bytes, ?4 FROM blobs WHERE hash = ?2
    RETURNING id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(model.name, model.blob_hash, model.format, clock_.NowUs()));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> id, stmt.RunReturningInt64());
  if (!id.has_value()) {
    return NotFound("model '" + model.name + "': blob " + model.blob_hash +
                    " is not in the store; store the file first");
  }
  return *id;
}

Result<ModelRow> ModelRepo::Get(int64_t id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, name, blob_hash, format, size_bytes, created_us FROM models WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(id));
  return ReadOneRow(stmt, ReadModel, "no model " + std::to_string(id));
}

Result<std::vector<ModelRow>> ModelRepo::List() {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, name, blob_hash, format, size_bytes, created_us FROM models ORDER BY id
  )sql"));
  return ReadAllRows(stmt, ReadModel);
}

}  // namespace kfleet::storage
