// Measured per-node profiles of models on this machine (`kfleet profile`), stored so that
// `kfleet plan MODEL --target cpu` ranks kernel jobs on measured times instead of roofline
// estimates. One JSON file per model bytes, target, dtype and dimension bindings:
//   <cache>/profiles/<key>.json, cache = $KFLEET_CACHE_DIR, else $XDG_CACHE_HOME/kfleet, else
//   ~/.cache/kfleet.
// The file's "node_us" object is what planner::LoadNodeProfile reads, so a stored profile also
// works as `kfleet plan --profile FILE`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"

namespace kfleet::runtime {

// What a profile was measured for; two runs with equal keys measured the same graph.
struct ProfileKey {
  std::string model_sha256;             // of the model file's bytes
  std::string target = "cpu";           // device id
  std::string dtype;                    // compute dtype ("f16", "bf16", ...); empty: as exported
  std::map<std::string, int64_t> dims;  // --dim bindings

  // Lowercase hex SHA-256 of every field: the profile's file name without ".json".
  std::string Hex() const;
};

struct StoredProfile {
  ProfileKey key;
  std::string model;                      // the model path it was measured from
  std::map<std::string, double> node_us;  // node name -> median microseconds
  double end_to_end_us = 0;               // median wall time of a whole run
  std::string cpu_model;
  int threads = 0;
  int reps = 0;
  std::string measured_at;  // ISO 8601 UTC
  std::string path;         // where it was read from or written to
};

// $KFLEET_CACHE_DIR/profiles, else $XDG_CACHE_HOME/kfleet/profiles (when absolute), else
// ~/.cache/kfleet/profiles.
std::string DefaultProfileDir();

// SHA-256 of a model file, read through a mapping so a 2 GB model is never copied into memory.
Result<std::string> ModelSha256(const std::string& model_path);

// Writes `profile` to `dir`/<key>.json (crash-safe) and returns that path.
Result<std::string> SaveProfile(const std::string& dir, const StoredProfile& profile);

// Reads one stored profile; Corruption names the file and what is wrong with it.
Result<StoredProfile> LoadProfile(const std::string& path);

// The profile stored in `dir` for `key`, or nullopt when there is none.
Result<std::optional<StoredProfile>> FindStoredProfile(const std::string& dir,
                                                       const ProfileKey& key);

}  // namespace kfleet::runtime
