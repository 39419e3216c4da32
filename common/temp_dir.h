// A scratch directory for benchmarks and tests: created fresh, removed with its contents when it
// goes out of scope.
#pragma once

#include <filesystem>
#include <string_view>

#include "common/status.h"

namespace kfleet {

class TempDir {
 public:
  // A new directory named `prefix`-XXXXXX under `parent` (empty: $TMPDIR, else /tmp).
  [[nodiscard]] static Result<TempDir> Create(std::string_view prefix,
                                              std::filesystem::path parent = {});
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

}  // namespace kfleet
