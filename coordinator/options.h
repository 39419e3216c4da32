// kfleetd's settings: defaults that work, a YAML file (configs/coordinator.yaml documents every
// key) and command-line flags on top.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/log.h"
#include "common/status.h"
#include "coordinator/conductor.h"
#include "storage/db.h"

namespace kfleet::coordinator {

// The longest a worker waits between attempts to register (worker/session.h backoff_max_ms).
inline constexpr int64_t kWorkerBackoffCapMs = 30'000;

struct CoordinatorOptions {
  std::filesystem::path state_dir;            // database, blobs, keys
  std::string listen = "tcp://0.0.0.0:7600";  // workers connect here
  std::string api = "tcp://127.0.0.1:7601";   // the CLI connects here
  // The worker endpoint printed by `kfleet nodes invite`; empty: derived from `listen` and the
  // hostname.
  std::string advertise;
  bool insecure = false;  // NULL mechanism instead of CURVE; loopback and ipc:// only
  // Also write ~/.config/kfleet/cli.yaml when the user has none; off for throwaway coordinators
  // (benchmarks) that must not become the CLI's default.
  bool write_user_cli_config = true;

  int64_t heartbeat_interval_ms = 1000;
  int64_t liveness = 5;           // missed intervals before a worker is lost
  int64_t lease_ms = 0;           // 0: liveness x interval
  int64_t recovery_grace_ms = 0;  // 0: 2 x liveness x interval + the worker's 30 s backoff cap
  int64_t max_attempts = 3;
  int64_t aging_ms = 60'000;  // a queued task gains one priority level per aging_ms waited

  int64_t max_message_bytes = int64_t{64} << 20;
  storage::SyncMode synchronous = storage::SyncMode::kFull;
  log::LogOptions log;
  ConductorOptions conductor;  // the kernel search of model jobs

  int64_t LeaseMs() const { return lease_ms > 0 ? lease_ms : liveness * heartbeat_interval_ms; }
  // Long enough for a worker that was backing off (up to 30 s) while kfleetd was down to notice
  // the restart and reclaim its leases, so finished work is not redone.
  int64_t RecoveryGraceMs() const {
    return recovery_grace_ms > 0 ? recovery_grace_ms
                                 : 2 * liveness * heartbeat_interval_ms + kWorkerBackoffCapMs;
  }
};

// Reads `path` over the defaults; every key is optional, unknown keys are errors.
[[nodiscard]] Result<CoordinatorOptions> LoadCoordinatorOptions(const std::filesystem::path& path);

// Checks the combination: a state dir is set; with `insecure`, endpoints are loopback or ipc.
[[nodiscard]] Status ValidateCoordinatorOptions(const CoordinatorOptions& options);

// True for ipc://, inproc://, and tcp:// on 127.0.0.0/8, [::1] or localhost.
bool IsLocalEndpoint(std::string_view endpoint);

}  // namespace kfleet::coordinator
