// Reading YAML configuration with defaults and validation.
//
//   KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadFile(path));
//   options.interval_ms = reader.DurationMs("heartbeat.interval", 1000, 10, 60'000);
//   options.listen = reader.String("listen", "tcp://0.0.0.0:7600");
//   KF_RETURN_IF_ERROR(reader.Finish());
//
// Getters never fail on their own: a missing key yields the default, a bad value records an error
// ("coordinator.yaml:7:14: heartbeat.interval: expected a duration such as 500ms, 2s, 1h; got
// 'fast'") and yields the default. Finish() reports every recorded error and every key in the file
// that no getter asked for (a typo), with the closest known key as a suggestion.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace YAML {
class Node;
}

namespace kfleet {

class ConfigReader {
 public:
  // An empty reader: every getter yields its default (no config file given).
  ConfigReader();
  ~ConfigReader();
  ConfigReader(ConfigReader&&) noexcept;
  ConfigReader& operator=(ConfigReader&&) noexcept;

  static Result<ConfigReader> LoadFile(const std::filesystem::path& path);
  // `source` names the text in error messages.
  static Result<ConfigReader> LoadString(std::string_view text, std::string source);

  bool Has(std::string_view key) const;
  std::string String(std::string_view key, std::string_view fallback);
  int64_t Int(std::string_view key, int64_t fallback, int64_t min, int64_t max);
  double Double(std::string_view key, double fallback, double min, double max);
  bool Bool(std::string_view key, bool fallback);
  // One of `allowed`.
  std::string Enum(std::string_view key, std::string_view fallback,
                   const std::vector<std::string>& allowed);
  // "250ms", "2s", "5m", "2h", "1d", or a bare integer of milliseconds.
  int64_t DurationMs(std::string_view key, int64_t fallback_ms, int64_t min_ms, int64_t max_ms);
  // "512", "64KiB", "16MiB", "2GiB" (also KB/MB/GB as powers of ten).
  int64_t Bytes(std::string_view key, int64_t fallback, int64_t min, int64_t max);
  std::vector<std::string> StringList(std::string_view key, std::vector<std::string> fallback);

  // Every error recorded so far plus unknown keys, one per line; ok when there are none.
  Status Finish() const;

 private:
  struct Leaf;
  void AddLeaves(const YAML::Node& node, const std::string& prefix);
  const Leaf* Find(std::string_view key);
  void AddError(const Leaf* leaf, std::string_view key, std::string_view problem);

  std::string source_;
  std::map<std::string, std::unique_ptr<Leaf>, std::less<>> leaves_;  // dotted key -> value
  std::set<std::string, std::less<>> read_keys_;
  std::vector<std::string> errors_;
};

// Parses "250ms" / "2s" / "5m" / "2h" / "1d" / "1500" (milliseconds).
Result<int64_t> ParseDurationMs(std::string_view text);
// Parses "512" / "64KiB" / "16MiB" / "2GiB" / "10MB".
Result<int64_t> ParseBytes(std::string_view text);

}  // namespace kfleet
