#include "storage/migrations.h"

#include <string>

#include "common/log.h"

namespace kfleet::storage {

int LatestSchemaVersion() { return static_cast<int>(SchemaMigrations().size()); }

Result<int> SchemaVersion(Database& db) {
  KF_ASSIGN_OR_RETURN(int64_t version, db.QueryInt64("PRAGMA user_version"));
  return static_cast<int>(version);
}

Status Migrate(Database& db) { return MigrateTo(db, LatestSchemaVersion()); }

Status MigrateTo(Database& db, int version) {
  const std::string where = db.path().string();
  const int latest = LatestSchemaVersion();
  if (version < 0 || version > latest) {
    return InvalidArgument(where + ": cannot migrate to schema version " + std::to_string(version) +
                           "; this kfleet knows versions 0 to " + std::to_string(latest));
  }
  KF_ASSIGN_OR_RETURN(int current, SchemaVersion(db));
  if (current > latest) {
    return FailedPrecondition(where + ": schema version " + std::to_string(current) +
                              " is newer than this kfleet (" + std::to_string(latest) +
                              "); upgrade kfleet");
  }
  if (current > version) {
    return FailedPrecondition(where + ": schema version " + std::to_string(current) +
                              " is past the requested " + std::to_string(version) +
                              "; migrations only go forward");
  }
  for (const Migration& migration : SchemaMigrations()) {
    if (migration.version <= current || migration.version > version) continue;
    bool applied = false;
    Status status = db.InTransaction([&]() -> Status {
      // Read again under the write lock: another process may have migrated since.
      KF_ASSIGN_OR_RETURN(int now, SchemaVersion(db));
      if (now >= migration.version) return Status::Ok();
      KF_RETURN_IF_ERROR(db.Exec(migration.sql));
      applied = true;
      return db.Exec("PRAGMA user_version = " + std::to_string(migration.version));
    });
    KF_RETURN_IF_ERROR(status.WithContext(where + ": migrating to schema version " +
                                          std::to_string(migration.version) + " (" +
                                          std::string(migration.name) + ")"));
    if (applied) {
      log::Info("storage.migrated")
          .Kv("db", where)
          .Kv("version", migration.version)
          .Kv("name", migration.name);
    }
  }
  return Status::Ok();
}

}  // namespace kfleet::storage
