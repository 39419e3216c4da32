// Structured logging: one line per event, `key=value` pairs after the event name.
//   log::Info("task.assigned").Kv("task", id).Kv("node", name).Kv("attempt", 2);
// prints
//   2026-11-20T22:41:03.123Z info task.assigned task=12 node=gpu-7 attempt=2
// Values with spaces, quotes or '=' are quoted. Thread-safe.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/status.h"

namespace kfleet::log {

enum class Level { kDebug = 0, kInfo, kWarn, kError, kOff };

Result<Level> ParseLevel(std::string_view name);

struct LogOptions {
  Level level = Level::kInfo;
  std::string file;  // empty: standard error
};

// Replaces the process-wide sink. Before Init, events go to standard error at level info;
// KFLEET_LOG_LEVEL (debug, info, warn, error, off) overrides the default level.
Status Init(const LogOptions& options);
void SetLevel(Level level);
bool Enabled(Level level);

// Quotes `value` when a log reader could not split it on spaces.
std::string QuoteValue(std::string_view value);

class Event {
 public:
  Event(Level level, std::string_view name);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  Event& Kv(std::string_view key, std::string_view value);
  Event& Kv(std::string_view key, const char* value) { return Kv(key, std::string_view(value)); }
  Event& Kv(std::string_view key, const std::string& value) {
    return Kv(key, std::string_view(value));
  }
  Event& Kv(std::string_view key, bool value) { return Kv(key, value ? "true" : "false"); }
  Event& Kv(std::string_view key, const Status& status) { return Kv(key, status.ToString()); }
  template <typename T>
    requires std::is_arithmetic_v<T>
  Event& Kv(std::string_view key, T value) {
    if (enabled_) {
      std::ostringstream text;
      text << value;
      Append(key, text.str());
    }
    return *this;
  }

 private:
  void Append(std::string_view key, std::string_view raw_value);

  Level level_;
  bool enabled_;
  std::string line_;
};

inline Event Debug(std::string_view name) { return Event(Level::kDebug, name); }
inline Event Info(std::string_view name) { return Event(Level::kInfo, name); }
inline Event Warn(std::string_view name) { return Event(Level::kWarn, name); }
inline Event Error(std::string_view name) { return Event(Level::kError, name); }

}  // namespace kfleet::log
