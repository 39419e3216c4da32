#include "common/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>

#include "common/log.h"

namespace kfleet {

Result<TempDir> TempDir::Create(std::string_view prefix, std::filesystem::path parent) {
  if (parent.empty()) {
    const char* tmpdir = std::getenv("TMPDIR");
    parent = (tmpdir != nullptr && *tmpdir != '\0') ? tmpdir : "/tmp";
  }
  std::string pattern = (parent / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) return ErrnoError("mkdtemp " + pattern, errno);
  return TempDir(pattern);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code error;
  std::filesystem::remove_all(path_, error);
  if (error) log::Warn("temp_dir.cleanup_failed").Kv("dir", path_.string()).Kv("error", error.message());
}

}  // namespace kfleet
