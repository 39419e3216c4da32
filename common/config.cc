#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include "common/files.h"

namespace kfleet {

struct ConfigReader::Leaf {
  YAML::Node node;
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

namespace {

std::string Location(const std::string& source, int line, int column) {
  if (line <= 0) return source;
  return source + ":" + std::to_string(line) + ":" + std::to_string(column);
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

Result<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return InvalidArgument("not an integer");
  }
  return value;
}

// Splits "250ms" into 250 and "ms".
bool SplitNumberUnit(std::string_view text, int64_t& number, std::string_view& unit) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return false;
  Result<int64_t> parsed = ParseInt(text.substr(0, digits));
  if (!parsed.ok()) return false;
  number = *parsed;
  unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  return true;
}

bool MultiplyChecked(int64_t a, int64_t b, int64_t& out) {
  return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace

ConfigReader::ConfigReader() : source_("(defaults)") {}
ConfigReader::~ConfigReader() = default;
ConfigReader::ConfigReader(ConfigReader&&) noexcept = default;
ConfigReader& ConfigReader::operator=(ConfigReader&&) noexcept = default;

Result<ConfigReader> ConfigReader::LoadFile(const std::filesystem::path& path) {
  Result<std::string> text = ReadFile(path, size_t{16} << 20);
  if (!text.ok()) return text.status().WithContext("reading config");
  return LoadString(*text, path.string());
}

Result<ConfigReader> ConfigReader::LoadString(std::string_view text, std::string source) {
  ConfigReader reader;
  reader.source_ = std::move(source);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(Location(reader.source_, e.mark.line + 1, e.mark.column + 1) +
                           ": not valid YAML: " + e.msg);
  }
  if (root.IsNull()) return reader;  // an empty file means all defaults
  if (!root.IsMap()) {
    return InvalidArgument(reader.source_ + ": expected a mapping of keys at the top level");
  }
  reader.AddLeaves(root, "");
  return reader;
}

// Maps are walked into dotted keys; scalars and lists are leaves.
void ConfigReader::AddLeaves(const YAML::Node& node, const std::string& prefix) {
  if (node.IsMap()) {
    for (const auto& entry : node) {
      const std::string key = entry.first.Scalar();
      AddLeaves(entry.second, prefix.empty() ? key : prefix + "." + key);
    }
    return;
  }
  if (prefix.empty()) return;
  auto leaf = std::make_unique<Leaf>();
  leaf->node = node;
  leaf->line = node.Mark().line + 1;
  leaf->column = node.Mark().column + 1;
  leaves_.emplace(prefix, std::move(leaf));
}

bool ConfigReader::Has(std::string_view key) const { return leaves_.find(key) != leaves_.end(); }

const ConfigReader::Leaf* ConfigReader::Find(std::string_view key) {
  read_keys_.emplace(key);
  auto it = leaves_.find(key);
  if (it == leaves_.end() || it->second->node.IsNull()) return nullptr;
  return it->second.get();
}

void ConfigReader::AddError(const Leaf* leaf, std::string_view key, std::string_view problem) {
  std::string error = leaf ? Location(source_, leaf->line, leaf->column) : source_;
  error += ": ";
  error += key;
  error += ": ";
  error += problem;
  errors_.push_back(std::move(error));
}

std::string ConfigReader::String(std::string_view key, std::string_view fallback) {
  const Leaf* leaf = Find(key);
  if (!leaf) return std::string(fallback);
  if (!leaf->node.IsScalar()) {
    AddError(leaf, key, "expected a single value, got a list or mapping");
    return std::string(fallback);
  }
  return leaf->node.Scalar();
}

int64_t ConfigReader::Int(std::string_view key, int64_t fallback, int64_t min, int64_t max) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback;
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  Result<int64_t> value = ParseInt(text);
  if (!value.ok() || *value < min || *value > max) {
    AddError(leaf, key,
             "expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                 "], got '" + text + "'");
    return fallback;
  }
  return *value;
}

double ConfigReader::Double(std::string_view key, double fallback, double min, double max) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback;
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      !std::isfinite(value) || value < min || value > max) {
    std::ostringstream range;
    range << "expected a number in [" << min << ", " << max << "], got '" << text << "'";
    AddError(leaf, key, range.str());
    return fallback;
  }
  return value;
}

bool ConfigReader::Bool(std::string_view key, bool fallback) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback;
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  if (text == "true" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "no" || text == "off") return false;
  AddError(leaf, key, "expected true or false, got '" + text + "'");
  return fallback;
}

std::string ConfigReader::Enum(std::string_view key, std::string_view fallback,
                               const std::vector<std::string>& allowed) {
  const Leaf* leaf = Find(key);
  if (!leaf) return std::string(fallback);
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  if (std::find(allowed.begin(), allowed.end(), text) != allowed.end()) return text;
  std::string choices;
  for (const std::string& choice : allowed) choices += (choices.empty() ? "" : ", ") + choice;
  AddError(leaf, key, "expected one of " + choices + ", got '" + text + "'");
  return std::string(fallback);
}

int64_t ConfigReader::DurationMs(std::string_view key, int64_t fallback_ms, int64_t min_ms,
                                 int64_t max_ms) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback_ms;
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  Result<int64_t> value = ParseDurationMs(text);
  if (!value.ok()) {
    AddError(leaf, key, "expected a duration such as 500ms, 2s, 5m, 2h; got '" + text + "'");
    return fallback_ms;
  }
  if (*value < min_ms || *value > max_ms) {
    AddError(leaf, key,
             "duration '" + text + "' is outside [" + std::to_string(min_ms) + "ms, " +
                 std::to_string(max_ms) + "ms]");
    return fallback_ms;
  }
  return *value;
}

int64_t ConfigReader::Bytes(std::string_view key, int64_t fallback, int64_t min, int64_t max) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback;
  std::string text = leaf->node.IsScalar() ? leaf->node.Scalar() : "";
  Result<int64_t> value = ParseBytes(text);
  if (!value.ok()) {
    AddError(leaf, key, "expected a size such as 4096, 64KiB, 16MiB, 2GiB; got '" + text + "'");
    return fallback;
  }
  if (*value < min || *value > max) {
    AddError(leaf, key,
             "size '" + text + "' is outside [" + std::to_string(min) + ", " +
                 std::to_string(max) + "] bytes");
    return fallback;
  }
  return *value;
}

std::vector<std::string> ConfigReader::StringList(std::string_view key,
                                                  std::vector<std::string> fallback) {
  const Leaf* leaf = Find(key);
  if (!leaf) return fallback;
  if (leaf->node.IsScalar()) return {leaf->node.Scalar()};
  if (!leaf->node.IsSequence()) {
    AddError(leaf, key, "expected a list of strings");
    return fallback;
  }
  std::vector<std::string> out;
  for (const auto& item : leaf->node) {
    if (!item.IsScalar()) {
      AddError(leaf, key, "expected a list of strings, found a nested list or mapping");
      return fallback;
    }
    out.push_back(item.Scalar());
  }
  return out;
}

Status ConfigReader::Finish() const {
  std::vector<std::string> problems = errors_;
  for (const auto& [key, leaf] : leaves_) {
    if (read_keys_.count(key)) continue;
    std::string problem = Location(source_, leaf->line, leaf->column) + ": unknown key '" + key + "'";
    std::string_view best;
    size_t best_distance = 4;  // suggest only near misses
    for (const std::string& known : read_keys_) {
      size_t distance = EditDistance(key, known);
      if (distance < best_distance) {
        best_distance = distance;
        best = known;
      }
    }
    if (!best.empty()) problem += " (did you mean '" + std::string(best) + "'?)";
    problems.push_back(std::move(problem));
  }
  if (problems.empty()) return Status::Ok();
  std::string message;
  for (const std::string& problem : problems) message += (message.empty() ? "" : "\n") + problem;
  return InvalidArgument(message);
}

Result<int64_t> ParseDurationMs(std::string_view text) {
  int64_t number = 0;
  std::string_view unit;
  if (!SplitNumberUnit(text, number, unit)) return InvalidArgument("not a duration");
  int64_t scale = 0;
  if (unit.empty() || unit == "ms") scale = 1;
  else if (unit == "s") scale = 1000;
  else if (unit == "m" || unit == "min") scale = 60'000;
  else if (unit == "h") scale = 3'600'000;
  else if (unit == "d") scale = 86'400'000;
  else return InvalidArgument("unknown duration unit '" + std::string(unit) + "'");
  int64_t out = 0;
  if (!MultiplyChecked(number, scale, out)) return InvalidArgument("duration too large");
  return out;
}

Result<int64_t> ParseBytes(std::string_view text) {
  int64_t number = 0;
  std::string_view unit;
  if (!SplitNumberUnit(text, number, unit)) return InvalidArgument("not a size");
  int64_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB") scale = int64_t{1} << 10;
  else if (unit == "MiB") scale = int64_t{1} << 20;
  else if (unit == "GiB") scale = int64_t{1} << 30;
  else if (unit == "TiB") scale = int64_t{1} << 40;
  else if (unit == "KB" || unit == "kB") scale = 1000;
  else if (unit == "MB") scale = 1000 * 1000;
  else if (unit == "GB") scale = 1000 * 1000 * 1000;
  else return InvalidArgument("unknown size unit '" + std::string(unit) + "'");
  int64_t out = 0;
  if (!MultiplyChecked(number, scale, out)) return InvalidArgument("size too large");
  return out;
}

}  // namespace kfleet
