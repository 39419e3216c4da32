// Whole-file reads and crash-safe writes.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kfleet {

// Reads a whole file; refuses files larger than `max_bytes` with ResourceExhausted.
Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes = size_t{1} << 34);

// A whole file mapped read-only: large inputs (model files up to protobuf's 2 GiB) are parsed in
// place instead of being copied into memory first.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::filesystem::path& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::string_view data() const { return {static_cast<const char*>(addr_), size_}; }

 private:
  MappedFile(void* addr, size_t size) : addr_(addr), size_(size) {}
  void* addr_ = nullptr;  // null for an empty file
  size_t size_ = 0;
};

// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs
// the directory: after a crash the file holds either the old or the new contents, never a mix.
Status WriteFileAtomic(const std::filesystem::path& path, std::string_view bytes, int mode = 0644);

// Creates a directory and its parents (mode 0700 for the leaf when `private_dir`).
Status MakeDirs(const std::filesystem::path& path, bool private_dir = false);

}  // namespace kfleet
