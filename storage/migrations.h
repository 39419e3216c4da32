// Versioned schema migrations tracked in PRAGMA user_version (0 = empty database).
#pragma once

#include <span>
#include <string_view>

#include "common/status.h"
#include "storage/db.h"

namespace kfleet::storage {

struct Migration {
  int version;            // user_version once applied: 1, 2, 3, ...
  std::string_view name;  // for logs and errors: "initial schema"
  std::string_view sql;   // one or more statements
};

// kfleet's migrations in version order (defined in schema.cc). A shipped migration is never
// edited: a schema change is a new migration appended to the list.
std::span<const Migration> SchemaMigrations();
int LatestSchemaVersion();

[[nodiscard]] Result<int> SchemaVersion(Database& db);

// Applies each pending migration in its own transaction, user_version set inside it, so a crash
// leaves the database at a whole version. Refuses a database newer than this binary knows.
[[nodiscard]] Status Migrate(Database& db);
// Migrates up to `version` only (tests build databases at old versions with it).
[[nodiscard]] Status MigrateTo(Database& db, int version);

}  // namespace kfleet::storage
