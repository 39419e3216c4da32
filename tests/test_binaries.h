// Where tests find kfleet's programs: $KFLEET_BIN_DIR/NAME when set (a bundle copied to another
// machine, scripts/device-bundle.sh), else the path this build put them at.
#pragma once

#include <cstdlib>
#include <string>

namespace kfleet::testing {

inline std::string TestBinary(const char* name, const char* build_path) {
  const char* dir = std::getenv("KFLEET_BIN_DIR");
  if (dir == nullptr || *dir == '\0') return build_path;
  return std::string(dir) + "/" + name;
}

}  // namespace kfleet::testing
