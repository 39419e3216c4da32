#include "storage/store.h"

#include "common/files.h"
#include "common/log.h"
#include "storage/migrations.h"

namespace kfleet::storage {

Store::Store(std::filesystem::path state_dir, std::unique_ptr<Database> db, Clock& clock)
    : state_dir_(std::move(state_dir)),
      db_(std::move(db)),
      blobs_(*db_, state_dir_ / "blobs", clock),
      models_(*db_, clock),
      jobs_(*db_, clock),
      kernel_jobs_(*db_),
      candidates_(*db_, clock),
      nodes_(*db_, clock),
      tasks_(*db_, clock),
      events_(*db_, clock),
      llm_calls_(*db_, clock) {}

Result<std::unique_ptr<Store>> Store::Open(const std::filesystem::path& state_dir,
                                           const StoreOptions& options, Clock& clock) {
  KF_RETURN_IF_ERROR(MakeDirs(state_dir, /*private_dir=*/true));
  KF_RETURN_IF_ERROR(MakeDirs(state_dir / "blobs", /*private_dir=*/true));
  KF_ASSIGN_OR_RETURN(std::unique_ptr<Database> db,
                      Database::Open(state_dir / "kfleet.db", options.database));
  KF_RETURN_IF_ERROR(Migrate(*db));
  KF_ASSIGN_OR_RETURN(int version, SchemaVersion(*db));
  log::Debug("storage.opened")
      .Kv("db", db->path().string())
      .Kv("schema_version", version)
      .Kv("synchronous", options.database.synchronous == SyncMode::kFull ? "full" : "normal");
  return std::unique_ptr<Store>(new Store(state_dir, std::move(db), clock));
}

}  // namespace kfleet::storage
