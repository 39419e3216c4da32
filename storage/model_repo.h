// Imported models: a name and the blob holding the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"

namespace kfleet::storage {

struct NewModel {
  std::string name;
  std::string blob_hash;  // already in the BlobStore; the size is taken from its row
  std::string format = "onnx";
};

struct ModelRow {
  int64_t id = 0;
  std::string name;
  std::string blob_hash;
  std::string format;
  int64_t size_bytes = 0;
  int64_t created_us = 0;
};

class ModelRepo {
 public:
  ModelRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  // NotFound when the blob is not in the store.
  [[nodiscard]] Result<int64_t> Create(const NewModel& model);
  [[nodiscard]] Result<ModelRow> Get(int64_t id);
  [[nodiscard]] Result<std::vector<ModelRow>> List();

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
