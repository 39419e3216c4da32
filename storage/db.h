// A thin RAII layer over one SQLite connection: open with kfleet's pragmas, cached prepared
// statements, BEGIN IMMEDIATE transactions, and every SQLite error turned into a Status.
//
// A Database is used from one thread at a time (the connection is opened without SQLite's own
// mutex). Concurrency comes from separate connections, usually in separate processes; WAL lets
// readers run beside the single writer, and busy_timeout_ms makes writers wait for each other.
#pragma once

#include <concepts>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kfleet::storage {

enum class SyncMode {
  kFull,    // fsync the WAL on every commit: an acknowledged commit survives power loss
  kNormal,  // fsync only at checkpoints: survives a process crash, may lose commits on power loss
};

struct DatabaseOptions {
  // How long a writer waits for another connection's write lock before giving up (Unavailable).
  int busy_timeout_ms = 5000;
  SyncMode synchronous = SyncMode::kFull;
};

// Marks bytes to be bound as a BLOB rather than TEXT in Statement::BindAll.
struct Blob {
  std::string_view bytes;
};

class Database;

namespace detail {
// One prepared statement owned by a Database's cache.
struct CachedStatement {
  sqlite3_stmt* stmt = nullptr;
  bool in_use = false;  // a Statement handle is alive; the same SQL cannot be borrowed twice
};
}  // namespace detail

// A prepared statement borrowed from its Database's cache. Destroying the handle resets the
// statement and clears its bindings, so a half-read SELECT never pins a WAL snapshot. The handle
// must not outlive the Database.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are numbered from 1, as in SQLite.
  [[nodiscard]] Status BindInt64(int index, int64_t value);
  [[nodiscard]] Status BindDouble(int index, double value);
  [[nodiscard]] Status BindText(int index, std::string_view value);
  [[nodiscard]] Status BindBlob(int index, std::string_view bytes);
  [[nodiscard]] Status BindNull(int index);

  // Binds ?1, ?2, ... in order: integers, floating point, strings (TEXT), Blob{...} (BLOB),
  // std::nullopt (NULL) and std::optional<T> (NULL or the value).
  template <typename... Args>
  [[nodiscard]] Status BindAll(const Args&... args) {
    Status status;
    int index = 1;
    auto bind_one = [&](const auto& arg) {
      if (status.ok()) status = BindValue(index, arg);
      ++index;
    };
    (bind_one(args), ...);
    return status;
  }

  // true: a row is ready for the column getters; false: the statement is done.
  [[nodiscard]] Result<bool> Step();
  // Steps to completion (for INSERT / UPDATE / DELETE); returns the number of rows changed.
  [[nodiscard]] Result<int64_t> Run();
  // For INSERT / UPDATE ... RETURNING one column: steps to completion (outside a transaction the
  // write commits only then) and returns the first row's value; nullopt when no row matched.
  [[nodiscard]] Result<std::optional<int64_t>> RunReturningInt64();
  [[nodiscard]] Result<std::optional<std::string>> RunReturningText();
  // Rewinds the statement and clears its bindings for another use through this handle.
  void Reset();

  // Columns are numbered from 0, as in SQLite.
  bool IsNull(int column) const;
  int64_t ColumnInt64(int column) const;
  double ColumnDouble(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  std::optional<int64_t> ColumnOptionalInt64(int column) const;
  std::optional<double> ColumnOptionalDouble(int column) const;

  std::string_view sql() const;

 private:
  friend class Database;
  Statement(Database* db, detail::CachedStatement* entry) : db_(db), entry_(entry) {}
  Status CheckBind(int rc, int index) const;

  template <typename T>
  Status BindValue(int index, const T& value) {
    if constexpr (std::is_same_v<T, std::nullopt_t>) {
      return BindNull(index);
    } else if constexpr (std::is_same_v<T, Blob>) {
      return BindBlob(index, value.bytes);
    } else if constexpr (std::is_same_v<T, bool>) {
      return BindInt64(index, value ? 1 : 0);
    } else if constexpr (std::integral<T>) {
      return BindInt64(index, static_cast<int64_t>(value));
    } else if constexpr (std::floating_point<T>) {
      return BindDouble(index, static_cast<double>(value));
    } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
      return BindText(index, std::string_view(value));
    } else {
      if (!value.has_value()) return BindNull(index);
      return BindValue(index, *value);
    }
  }

  Database* db_;
  detail::CachedStatement* entry_;
};

// An open write transaction: BEGIN IMMEDIATE, or a SAVEPOINT when one is already open on the
// connection (so repositories that group their own statements compose inside Store::Batch).
// Destroying it without a successful Commit rolls back.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  [[nodiscard]] Status Commit();

 private:
  friend class Database;
  Transaction(Database* db, bool savepoint) : db_(db), savepoint_(savepoint) {}
  void Rollback();

  Database* db_;
  bool savepoint_;
  bool open_ = true;
};

class Database {
 public:
  // Opens (creating if missing) the database at `path` in WAL mode with foreign keys on.
  [[nodiscard]] static Result<std::unique_ptr<Database>> Open(const std::filesystem::path& path,
                                                              const DatabaseOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Returns the cached statement for `sql`, prepared on first use and reset since its last use.
  // Using the same SQL again while a handle to it is alive is a bug and returns Internal.
  [[nodiscard]] Result<Statement> Prepare(std::string_view sql);
  // Runs one or more statements that return no rows (DDL, pragmas that set).
  [[nodiscard]] Status Exec(std::string_view sql);
  // Runs a query returning one row and returns its first column.
  [[nodiscard]] Result<int64_t> QueryInt64(std::string_view sql);
  [[nodiscard]] Result<std::string> QueryText(std::string_view sql);

  [[nodiscard]] Result<Transaction> Begin();
  // Runs `fn` inside Begin() / Commit(); an error from `fn` rolls its writes back.
  template <typename Fn>
  [[nodiscard]] Status InTransaction(Fn&& fn) {
    KF_ASSIGN_OR_RETURN(Transaction txn, Begin());
    KF_RETURN_IF_ERROR(fn());
    return txn.Commit();
  }
  bool in_transaction() const;

  // Statements prepared so far on this connection (each SQL text once).
  size_t cached_statement_count() const { return statements_.size(); }
  const std::filesystem::path& path() const { return path_; }
  const DatabaseOptions& options() const { return options_; }

 private:
  friend class Statement;
  friend class Transaction;
  Database(sqlite3* handle, std::filesystem::path path, const DatabaseOptions& options)
      : handle_(handle), path_(std::move(path)), options_(options) {}
  // Turns a SQLite result code into a Status: "`what`: sqlite's message", with the code mapped
  // (busy / locked -> Unavailable, constraints -> InvalidArgument or AlreadyExists, ...).
  Status Error(int rc, std::string_view what) const;
  Status ApplyPragmas();
  // Runs one statement through the cache (BEGIN, COMMIT, ...): parsed once per connection.
  Status RunCached(std::string_view sql);

  struct SqlHash {
    using is_transparent = void;
    size_t operator()(std::string_view sql) const { return std::hash<std::string_view>()(sql); }
  };

  sqlite3* handle_;
  std::filesystem::path path_;
  DatabaseOptions options_;
  std::unordered_map<std::string, std::unique_ptr<detail::CachedStatement>, SqlHash,
                     std::equal_to<>>
      statements_;
};

// Steps `stmt` to the end, turning each row into a T with `read`.
template <typename T>
[[nodiscard]] Result<std::vector<T>> ReadAllRows(Statement& stmt,
                                                 Result<T> (*read)(const Statement&)) {
  std::vector<T> rows;
  while (true) {
    KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return rows;
    KF_ASSIGN_OR_RETURN(T value, read(stmt));
    rows.push_back(std::move(value));
  }
}

// Reads the first row of `stmt` with `read`; NotFound(`not_found`) when there is none.
template <typename T>
[[nodiscard]] Result<T> ReadOneRow(Statement& stmt, Result<T> (*read)(const Statement&),
                                   std::string_view not_found) {
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return NotFound(std::string(not_found));
  return read(stmt);
}

}  // namespace kfleet::storage
