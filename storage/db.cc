#include "storage/db.h"

#include <sqlite3.h>

#include <cctype>
#include <climits>

#include "common/log.h"

namespace kfleet::storage {

namespace {

// SQLite's "copy the bytes now" destructor, spelled without the header's C-style cast.
const sqlite3_destructor_type kCopyBytes = reinterpret_cast<sqlite3_destructor_type>(-1);

// The SQL as one short line for error messages: "UPDATE tasks SET state = 'leased', ...".
std::string Excerpt(std::string_view sql) {
  constexpr size_t kMaxChars = 80;
  std::string out;
  bool space = false;
  for (char c : sql) {
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
    if (out.size() >= kMaxChars) return out + " ...";
  }
  return out;
}

Status StatusFromSqlite(int rc, std::string message, int busy_timeout_ms) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Unavailable(message + " (another connection held the database for longer than" +
                         " busy_timeout_ms=" + std::to_string(busy_timeout_ms) +
                         "; retry, or look for a stuck kfleet process)");
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return AlreadyExists(std::move(message));
      }
      if (rc == SQLITE_CONSTRAINT_TRIGGER) return FailedPrecondition(std::move(message));
      return InvalidArgument(std::move(message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Corruption(std::move(message));
    case SQLITE_FULL:
    case SQLITE_TOOBIG:
      return ResourceExhausted(std::move(message));
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return IoError(std::move(message));
    case SQLITE_AUTH:
      return PermissionDenied(std::move(message));
    case SQLITE_INTERRUPT:
      return Cancelled(std::move(message));
    default:
      // SQLITE_ERROR (no such table, syntax), MISUSE, RANGE: the SQL or its use is wrong.
      return Internal(std::move(message));
  }
}

}  // namespace

// ---- Statement ----

Statement::Statement(Statement&& other) noexcept : db_(other.db_), entry_(other.entry_) {
  other.entry_ = nullptr;
}

Statement::~Statement() {
  if (entry_ == nullptr) return;
  Reset();
  entry_->in_use = false;
}

Status Statement::BindInt64(int index, int64_t value) {
  int rc = sqlite3_bind_int64(entry_->stmt, index, value);
  return CheckBind(rc, index);
}

Status Statement::BindDouble(int index, double value) {
  int rc = sqlite3_bind_double(entry_->stmt, index, value);
  return CheckBind(rc, index);
}

Status Statement::BindText(int index, std::string_view value) {
  // A null data pointer would bind NULL; an empty string_view may carry one.
  const char* data = value.data() != nullptr ? value.data() : "";
  int rc = sqlite3_bind_text64(entry_->stmt, index, data, value.size(), kCopyBytes, SQLITE_UTF8);
  return CheckBind(rc, index);
}

Status Statement::BindBlob(int index, std::string_view bytes) {
  // sqlite3_bind_blob64 with no bytes binds NULL; an empty BLOB is a zero-length zeroblob.
  int rc = bytes.empty()
               ? sqlite3_bind_zeroblob(entry_->stmt, index, 0)
               : sqlite3_bind_blob64(entry_->stmt, index, bytes.data(), bytes.size(), kCopyBytes);
  return CheckBind(rc, index);
}

Status Statement::BindNull(int index) {
  int rc = sqlite3_bind_null(entry_->stmt, index);
  return CheckBind(rc, index);
}

Status Statement::CheckBind(int rc, int index) const {
  if (rc == SQLITE_OK) return Status::Ok();
  return db_->Error(rc, "bind ?" + std::to_string(index) + " of " + Excerpt(sql()));
}

Result<bool> Statement::Step() {
  int rc = sqlite3_step(entry_->stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->Error(rc, Excerpt(sql()));
}

Result<int64_t> Statement::Run() {
  while (true) {
    KF_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) break;
  }
  return static_cast<int64_t>(sqlite3_changes64(db_->handle_));
}

Result<std::optional<int64_t>> Statement::RunReturningInt64() {
  KF_ASSIGN_OR_RETURN(bool row, Step());
  if (!row) return std::optional<int64_t>();
  int64_t value = ColumnInt64(0);
  KF_RETURN_IF_ERROR(Run().status());
  return std::optional<int64_t>(value);
}

Result<std::optional<std::string>> Statement::RunReturningText() {
  KF_ASSIGN_OR_RETURN(bool row, Step());
  if (!row) return std::optional<std::string>();
  std::string value = ColumnText(0);
  KF_RETURN_IF_ERROR(Run().status());
  return std::optional<std::string>(std::move(value));
}

void Statement::Reset() {
  // sqlite3_reset only repeats the error of the last step, which Step() already returned, and
  // sqlite3_clear_bindings always succeeds.
  sqlite3_reset(entry_->stmt);
  sqlite3_clear_bindings(entry_->stmt);
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(entry_->stmt, column) == SQLITE_NULL;
}

int64_t Statement::ColumnInt64(int column) const {
  return sqlite3_column_int64(entry_->stmt, column);
}

double Statement::ColumnDouble(int column) const {
  return sqlite3_column_double(entry_->stmt, column);
}

std::string Statement::ColumnText(int column) const {
  const unsigned char* text = sqlite3_column_text(entry_->stmt, column);
  if (text == nullptr) return {};
  int size = sqlite3_column_bytes(entry_->stmt, column);
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

std::string Statement::ColumnBlob(int column) const {
  const void* bytes = sqlite3_column_blob(entry_->stmt, column);
  if (bytes == nullptr) return {};
  int size = sqlite3_column_bytes(entry_->stmt, column);
  return std::string(static_cast<const char*>(bytes), static_cast<size_t>(size));
}

std::optional<int64_t> Statement::ColumnOptionalInt64(int column) const {
  if (IsNull(column)) return std::nullopt;
  return ColumnInt64(column);
}

std::optional<double> Statement::ColumnOptionalDouble(int column) const {
  if (IsNull(column)) return std::nullopt;
  return ColumnDouble(column);
}

std::string_view Statement::sql() const { return sqlite3_sql(entry_->stmt); }

// ---- Transaction ----

Transaction::Transaction(Transaction&& other) noexcept
    : db_(other.db_), savepoint_(other.savepoint_), open_(other.open_) {
  other.open_ = false;
}

Transaction::~Transaction() {
  if (open_) Rollback();
}

Status Transaction::Commit() {
  if (!open_) return FailedPrecondition("commit: the transaction is already finished");
  Status status = db_->RunCached(savepoint_ ? "RELEASE kf_nested" : "COMMIT");
  if (!status.ok()) {
    Rollback();
    return status.WithContext("commit");
  }
  open_ = false;
  return Status::Ok();
}

void Transaction::Rollback() {
  open_ = false;
  // SQLite rolls the whole transaction back by itself after some errors (I/O, full disk).
  if (!db_->in_transaction()) return;
  Status status = savepoint_ ? db_->RunCached("ROLLBACK TO kf_nested") : db_->RunCached("ROLLBACK");
  if (status.ok() && savepoint_) status = db_->RunCached("RELEASE kf_nested");
  if (!status.ok()) {
    log::Error("storage.rollback_failed").Kv("db", db_->path().string()).Kv("error", status);
  }
}

// ---- Database ----

Result<std::unique_ptr<Database>> Database::Open(const std::filesystem::path& path,
                                                 const DatabaseOptions& options) {
  if (options.busy_timeout_ms < 0) {
    return InvalidArgument(path.string() + ": busy_timeout_ms must be >= 0, got " +
                           std::to_string(options.busy_timeout_ms));
  }
  sqlite3* handle = nullptr;
  int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  int rc = sqlite3_open_v2(path.c_str(), &handle, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string message =
        path.string() + ": " + (handle != nullptr ? sqlite3_errmsg(handle) : sqlite3_errstr(rc));
    // Closing the handle of a failed open frees it and cannot fail.
    sqlite3_close(handle);
    return StatusFromSqlite(rc, std::move(message), options.busy_timeout_ms);
  }
  std::unique_ptr<Database> db(new Database(handle, path, options));
  KF_RETURN_IF_ERROR(db->ApplyPragmas().WithContext(path.string()));
  return db;
}

Status Database::ApplyPragmas() {
  int rc = sqlite3_busy_timeout(handle_, options_.busy_timeout_ms);
  if (rc != SQLITE_OK) return Error(rc, "set busy_timeout");

  KF_ASSIGN_OR_RETURN(std::string journal_mode, QueryText("PRAGMA journal_mode = WAL"));
  if (journal_mode != "wal") {
    return FailedPrecondition("journal_mode is '" + journal_mode +
                              "' after asking for WAL; put the state directory on a local file "
                              "system (WAL needs shared memory, which network file systems lack)");
  }

  bool full = options_.synchronous == SyncMode::kFull;
  KF_RETURN_IF_ERROR(Exec(full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL"));
  KF_ASSIGN_OR_RETURN(int64_t synchronous, QueryInt64("PRAGMA synchronous"));
  if (synchronous != (full ? 2 : 1)) {
    return FailedPrecondition("PRAGMA synchronous reads " + std::to_string(synchronous) +
                              " after setting it to " + (full ? "FULL (2)" : "NORMAL (1)"));
  }

  KF_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys = ON"));
  KF_ASSIGN_OR_RETURN(int64_t foreign_keys, QueryInt64("PRAGMA foreign_keys"));
  if (foreign_keys != 1) {
    return FailedPrecondition("foreign keys stay off; this SQLite was built without them");
  }
  return Status::Ok();
}

Database::~Database() {
  // sqlite3_finalize only repeats the last step's error, which was reported then.
  for (auto& [sql, entry] : statements_) sqlite3_finalize(entry->stmt);
  statements_.clear();
  int rc = sqlite3_close(handle_);
  if (rc != SQLITE_OK) {
    log::Error("storage.close_failed").Kv("db", path_.string()).Kv("error", sqlite3_errstr(rc));
  }
}

Result<Statement> Database::Prepare(std::string_view sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    if (sql.size() >= static_cast<size_t>(INT_MAX)) {
      return InvalidArgument("prepare: SQL of " + std::to_string(sql.size()) +
                             " bytes is too long");
    }
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v3(handle_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) return Error(rc, "prepare " + Excerpt(sql));
    if (stmt == nullptr) return InvalidArgument("prepare: the SQL holds no statement");
    std::string_view rest = sql.substr(static_cast<size_t>(tail - sql.data()));
    if (!Excerpt(rest).empty()) {
      sqlite3_finalize(stmt);  // fresh and never stepped: nothing to report
      return Internal("prepare " + Excerpt(sql) + ": more than one statement; use Exec");
    }
    auto entry = std::make_unique<detail::CachedStatement>();
    entry->stmt = stmt;
    it = statements_.emplace(std::string(sql), std::move(entry)).first;
  }
  detail::CachedStatement& entry = *it->second;
  if (entry.in_use) {
    return Internal("prepare " + Excerpt(sql) +
                    ": the statement is already in use (the same SQL nested in itself)");
  }
  entry.in_use = true;
  return Statement(this, &entry);
}

Status Database::Exec(std::string_view sql) {
  std::string text(sql);
  int rc = sqlite3_exec(handle_, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, Excerpt(sql));
  return Status::Ok();
}

Result<int64_t> Database::QueryInt64(std::string_view sql) {
  KF_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return Internal(Excerpt(sql) + ": returned no row");
  return stmt.ColumnInt64(0);
}

Result<std::string> Database::QueryText(std::string_view sql) {
  KF_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return Internal(Excerpt(sql) + ": returned no row");
  return stmt.ColumnText(0);
}

Status Database::RunCached(std::string_view sql) {
  KF_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
  return stmt.Run().status();
}

Result<Transaction> Database::Begin() {
  if (in_transaction()) {
    KF_RETURN_IF_ERROR(RunCached("SAVEPOINT kf_nested"));
    return Transaction(this, /*savepoint=*/true);
  }
  KF_RETURN_IF_ERROR(RunCached("BEGIN IMMEDIATE"));
  return Transaction(this, /*savepoint=*/false);
}

bool Database::in_transaction() const { return sqlite3_get_autocommit(handle_) == 0; }

Status Database::Error(int rc, std::string_view what) const {
  std::string message(what);
  message += ": ";
  message += sqlite3_errmsg(handle_);
  return StatusFromSqlite(rc, std::move(message), options_.busy_timeout_ms);
}

}  // namespace kfleet::storage
