#include "runtime/profile_store.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/files.h"
#include "common/ids.h"

namespace kfleet::runtime {
namespace {

namespace fs = std::filesystem;

// Hashed in slices so the mapping is read front to back once.
constexpr size_t kHashSliceBytes = size_t{64} << 20;

constexpr std::string_view kAsExported = "as exported";

Result<StoredProfile> FromJson(const nlohmann::json& doc, const std::string& path) {
  auto corrupt = [&](std::string_view what) {
    return Corruption(fmt::format("{}: stored profile {}", path, what));
  };
  if (!doc.is_object()) return corrupt("is not a JSON object");
  StoredProfile p;
  p.path = path;
  const auto string_field = [&](const char* name, std::string* out) {
    if (!doc.contains(name) || !doc[name].is_string()) return false;
    *out = doc[name].get<std::string>();
    return true;
  };
  if (!string_field("model_sha256", &p.key.model_sha256) || !IsSha256Hex(p.key.model_sha256)) {
    return corrupt("has no model_sha256");
  }
  if (!string_field("target", &p.key.target)) return corrupt("has no target");
  if (!string_field("dtype", &p.key.dtype)) return corrupt("has no dtype");
  if (p.key.dtype == kAsExported) p.key.dtype.clear();
  if (!doc.contains("dims") || !doc["dims"].is_object()) return corrupt("has no dims object");
  for (const auto& [name, value] : doc["dims"].items()) {
    if (!value.is_number_integer()) return corrupt(fmt::format("has a non-integer dim {}", name));
    p.key.dims[name] = value.get<int64_t>();
  }
  if (!doc.contains("node_us") || !doc["node_us"].is_object()) {
    return corrupt("has no node_us object");
  }
  for (const auto& [name, us] : doc["node_us"].items()) {
    if (!us.is_number() || us.get<double>() < 0) {
      return corrupt(fmt::format("has a bad time for node '{}'", name));
    }
    p.node_us[name] = us.get<double>();
  }
  string_field("model", &p.model);
  string_field("cpu_model", &p.cpu_model);
  string_field("measured_at", &p.measured_at);
  if (doc.contains("end_to_end_us") && doc["end_to_end_us"].is_number()) {
    p.end_to_end_us = doc["end_to_end_us"].get<double>();
  }
  if (doc.contains("threads") && doc["threads"].is_number_integer()) {
    p.threads = doc["threads"].get<int>();
  }
  if (doc.contains("reps") && doc["reps"].is_number_integer()) p.reps = doc["reps"].get<int>();
  return p;
}

}  // namespace

std::string ProfileKey::Hex() const {
  Sha256 hash;
  hash.Update("kfleet profile key v1\n");
  hash.Update(model_sha256 + "\n" + target + "\n" + dtype + "\n");
  for (const auto& [name, value] : dims) hash.Update(fmt::format("{}={}\n", name, value));
  return hash.FinishHex();
}

std::string DefaultProfileDir() {
  const char* kfleet = std::getenv("KFLEET_CACHE_DIR");
  if (kfleet != nullptr && kfleet[0] != '\0') return (fs::path(kfleet) / "profiles").string();
  // XDG: an empty or relative XDG_CACHE_HOME is to be ignored.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return (fs::path(xdg) / "kfleet" / "profiles").string();
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') {
    return (fs::path(home) / ".cache" / "kfleet" / "profiles").string();
  }
  return (fs::path("/tmp/kfleet-" + std::to_string(::getuid())) / "profiles").string();
}

Result<std::string> ModelSha256(const std::string& model_path) {
  KF_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(model_path));
  const std::string_view bytes = file.data();
  Sha256 hash;
  for (size_t offset = 0; offset < bytes.size(); offset += kHashSliceBytes) {
    hash.Update(bytes.substr(offset, kHashSliceBytes));
  }
  return hash.FinishHex();
}

Result<std::string> SaveProfile(const std::string& dir, const StoredProfile& profile) {
  if (!IsSha256Hex(profile.key.model_sha256)) {
    return InvalidArgument("a stored profile needs the model's SHA-256");
  }
  nlohmann::json dims = nlohmann::json::object();
  for (const auto& [name, value] : profile.key.dims) dims[name] = value;
  nlohmann::json node_us = nlohmann::json::object();
  for (const auto& [name, us] : profile.node_us) node_us[name] = us;
  const nlohmann::json doc = {
      {"node_us", node_us},
      {"end_to_end_us", profile.end_to_end_us},
      {"model", profile.model},
      {"model_sha256", profile.key.model_sha256},
      {"target", profile.key.target},
      {"dtype", profile.key.dtype.empty() ? std::string(kAsExported) : profile.key.dtype},
      {"dims", dims},
      {"cpu_model", profile.cpu_model},
      {"threads", profile.threads},
      {"reps", profile.reps},
      {"measured_at", profile.measured_at},
  };
  KF_RETURN_IF_ERROR(MakeDirs(dir));
  const std::string path = (fs::path(dir) / (profile.key.Hex() + ".json")).string();
  KF_RETURN_IF_ERROR(WriteFileAtomic(path, doc.dump(2) + "\n"));
  return path;
}

Result<StoredProfile> LoadProfile(const std::string& path) {
  KF_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Corruption(path + ": stored profile is not valid JSON");
  return FromJson(doc, path);
}

Result<std::optional<StoredProfile>> FindStoredProfile(const std::string& dir,
                                                       const ProfileKey& key) {
  const std::string path = (fs::path(dir) / (key.Hex() + ".json")).string();
  std::error_code error;
  if (!fs::exists(path, error)) return std::optional<StoredProfile>();
  KF_ASSIGN_OR_RETURN(StoredProfile profile, LoadProfile(path));
  if (profile.key.Hex() != key.Hex()) {
    return Corruption(path + ": stored profile was measured for another model, dtype or dims");
  }
  return std::optional<StoredProfile>(std::move(profile));
}

}  // namespace kfleet::runtime
