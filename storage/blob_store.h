// Content-addressed blobs (model files, kernel sources): bytes in DIR/<first 2 hex>/<sha256 hex>,
// one row per blob in the blobs table. The file is written and fsynced before its row is
// inserted, so every row has its file; a crash may leave a file without a row, never the reverse.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"

namespace kfleet::storage {

enum class BlobCheck {
  kSize,         // the file's length matches the row (cheap, catches truncation)
  kSizeAndHash,  // and its SHA-256 matches its name (reads the whole file)
};

class BlobStore {
 public:
  BlobStore(Database& db, std::filesystem::path dir, Clock& clock);

  // Stores `bytes` and returns their SHA-256 hex; storing the same bytes again changes nothing.
  [[nodiscard]] Result<std::string> Put(std::string_view bytes);
  // NotFound when no row has `hash`; Corruption when the file does not match the row.
  [[nodiscard]] Result<std::string> Get(std::string_view hash, BlobCheck check = BlobCheck::kSize);
  [[nodiscard]] Result<bool> Contains(std::string_view hash);

  std::filesystem::path PathOf(std::string_view hash) const;

 private:
  Database& db_;
  std::filesystem::path dir_;
  Clock& clock_;
};

}  // namespace kfleet::storage
