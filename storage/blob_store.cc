#include "storage/blob_store.h"

#include <system_error>

#include "common/files.h"
#include "common/ids.h"

namespace kfleet::storage {
namespace {

Status CheckHash(std::string_view hash) {
  if (IsSha256Hex(hash)) return Status::Ok();
  return InvalidArgument("blob hash '" + std::string(hash) +
                         "' is not 64 lowercase hexadecimal characters");
}

// The recorded size of a blob, or nullopt when it has no row.
Result<std::optional<int64_t>> RecordedSize(Database& db, std::string_view hash) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(R"sql(
    SELECT size_bytes FROM blobs WHERE hash = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(hash));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<int64_t>();
  return std::optional<int64_t>(stmt.ColumnInt64(0));
}

bool FileHasSize(const std::filesystem::path& path, int64_t size_bytes) {
  std::error_code error;
  uintmax_t size = std::filesystem::file_size(path, error);
  return !error && size == static_cast<uintmax_t>(size_bytes);
}

}  // namespace

BlobStore::BlobStore(Database& db, std::filesystem::path dir, Clock& clock)
    : db_(db), dir_(std::move(dir)), clock_(clock) {}

std::filesystem::path BlobStore::PathOf(std::string_view hash) const {
  return dir_ / std::string(hash.substr(0, 2)) / std::string(hash);
}

Result<std::string> BlobStore::Put(std::string_view bytes) {
  std::string hash = Sha256Hex(bytes);
  std::filesystem::path path = PathOf(hash);
  const auto size_bytes = static_cast<int64_t>(bytes.size());
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> recorded, RecordedSize(db_, hash));
  if (recorded.has_value() && FileHasSize(path, size_bytes)) return hash;

  // (Re)write the file first: a row must never point at a missing or partial file.
  KF_RETURN_IF_ERROR(MakeDirs(path.parent_path(), /*private_dir=*/true));
  KF_RETURN_IF_ERROR(WriteFileAtomic(path, bytes, 0600).WithContext("store blob " + hash));
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO blobs (hash, size_bytes, created_us) VALUES (?1, ?2, ?3)
    ON CONFLICT (hash) DO NOTHING
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(hash, size_bytes, clock_.NowUs()));
  KF_RETURN_IF_ERROR(stmt.Run().status().WithContext("record blob " + hash));
  return hash;
}

Result<std::string> BlobStore::Get(std::string_view hash, BlobCheck check) {
  KF_RETURN_IF_ERROR(CheckHash(hash));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> recorded, RecordedSize(db_, hash));
  if (!recorded.has_value()) return NotFound("blob " + std::string(hash) + " is not in the store");
  std::filesystem::path path = PathOf(hash);
  KF_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (static_cast<int64_t>(bytes.size()) != *recorded) {
    return Corruption(path.string() + ": holds " + std::to_string(bytes.size()) +
                      " bytes but the store recorded " + std::to_string(*recorded) +
                      "; the blob file is damaged, store the content again");
  }
  if (check == BlobCheck::kSizeAndHash) {
    std::string actual = Sha256Hex(bytes);
    if (actual != hash) {
      return Corruption(path.string() + ": content hashes to " + actual +
                        ", not its name; the blob file is damaged, store the content again");
    }
  }
  return bytes;
}

Result<bool> BlobStore::Contains(std::string_view hash) {
  KF_RETURN_IF_ERROR(CheckHash(hash));
  KF_ASSIGN_OR_RETURN(std::optional<int64_t> recorded, RecordedSize(db_, hash));
  return recorded.has_value();
}

}  // namespace kfleet::storage
