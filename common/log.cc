#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <mutex>

namespace kfleet::log {
namespace {

spdlog::level::level_enum ToSpdlog(Level level) {
  switch (level) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
    case Level::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> MakeLogger(spdlog::sink_ptr sink, Level level) {
  auto logger = std::make_shared<spdlog::logger>("kfleet", std::move(sink));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(ToSpdlog(level));
  logger->flush_on(spdlog::level::debug);
  return logger;
}

Level DefaultLevel() {
  const char* env = std::getenv("KFLEET_LOG_LEVEL");
  if (env == nullptr) return Level::kInfo;
  Result<Level> level = ParseLevel(env);
  return level.ok() ? *level : Level::kInfo;
}

std::mutex g_logger_mu;
std::shared_ptr<spdlog::logger> g_logger;  // guarded by g_logger_mu

std::shared_ptr<spdlog::logger> Logger() {
  std::lock_guard<std::mutex> lock(g_logger_mu);
  if (!g_logger) {
    g_logger = MakeLogger(std::make_shared<spdlog::sinks::stderr_sink_mt>(), DefaultLevel());
  }
  return g_logger;
}

}  // namespace

Result<Level> ParseLevel(std::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn" || name == "warning") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  return InvalidArgument("log level '" + std::string(name) +
                         "' is not one of debug, info, warn, error, off");
}

Status Init(const LogOptions& options) {
  spdlog::sink_ptr sink;
  if (options.file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file);
    } catch (const spdlog::spdlog_ex& e) {
      return IoError("open log file " + options.file + ": " + e.what());
    }
  }
  auto logger = MakeLogger(std::move(sink), options.level);
  std::lock_guard<std::mutex> lock(g_logger_mu);
  g_logger = std::move(logger);
  return Status::Ok();
}

void SetLevel(Level level) { Logger()->set_level(ToSpdlog(level)); }

bool Enabled(Level level) { return level != Level::kOff && Logger()->should_log(ToSpdlog(level)); }

std::string QuoteValue(std::string_view value) {
  bool needs_quotes = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      needs_quotes = true;
      break;
    }
  }
  if (!needs_quotes) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\x";
          out += kHex[(c >> 4) & 0xf];
          out += kHex[c & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

Event::Event(Level level, std::string_view name) : level_(level), enabled_(Enabled(level)) {
  if (enabled_) line_ = std::string(name);
}

Event::~Event() {
  if (enabled_) Logger()->log(ToSpdlog(level_), "{}", line_);
}

Event& Event::Kv(std::string_view key, std::string_view value) {
  if (enabled_) Append(key, value);
  return *this;
}

void Event::Append(std::string_view key, std::string_view raw_value) {
  line_ += ' ';
  line_ += key;
  line_ += '=';
  line_ += QuoteValue(raw_value);
}

}  // namespace kfleet::log
