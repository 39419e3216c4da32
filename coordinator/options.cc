#include "coordinator/options.h"

#include "common/config.h"

namespace kfleet::coordinator {

Result<CoordinatorOptions> LoadCoordinatorOptions(const std::filesystem::path& path) {
  KF_ASSIGN_OR_RETURN(ConfigReader config, ConfigReader::LoadFile(path));
  CoordinatorOptions options;
  options.state_dir = config.String("state_dir", "");
  options.listen = config.String("listen", options.listen);
  options.api = config.String("api", options.api);
  options.advertise = config.String("advertise", "");
  options.insecure = config.Bool("insecure", false);
  options.heartbeat_interval_ms =
      config.DurationMs("heartbeat.interval", options.heartbeat_interval_ms, 10, 60'000);
  options.liveness = config.Int("heartbeat.liveness", options.liveness, 2, 100);
  options.lease_ms = config.DurationMs("tasks.lease", 0, 0, 3'600'000);
  options.recovery_grace_ms = config.DurationMs("tasks.recovery_grace", 0, 0, 3'600'000);
  options.max_attempts = config.Int("tasks.max_attempts", options.max_attempts, 1, 100);
  options.aging_ms = config.DurationMs("tasks.aging", options.aging_ms, 1000, 86'400'000);
  options.max_message_bytes =
      config.Bytes("limits.max_message", options.max_message_bytes, 4096, int64_t{1} << 31);
  options.synchronous =
      config.Enum("store.synchronous", "full", {"full", "normal"}) == "normal"
          ? storage::SyncMode::kNormal
          : storage::SyncMode::kFull;
  const std::string level = config.Enum("log.level", "info", {"debug", "info", "warn", "error"});
  options.log.level = log::ParseLevel(level).value_or(log::Level::kInfo);
  options.log.file = config.String("log.file", "");
  KF_RETURN_IF_ERROR(config.Finish());
  return options;
}

bool IsLocalEndpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  if (host.starts_with("[::1]:")) return true;
  const size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  return host == "localhost" || host.starts_with("127.");
}

Status ValidateCoordinatorOptions(const CoordinatorOptions& options) {
  if (options.state_dir.empty()) {
    return InvalidArgument("no state directory: pass --state DIR (or state_dir in the config)");
  }
  if (options.insecure) {
    for (const std::string* endpoint : {&options.listen, &options.api}) {
      if (!IsLocalEndpoint(*endpoint)) {
        return InvalidArgument("--insecure serves loopback only, but " + *endpoint +
                               " is reachable from other machines; bind 127.0.0.1 or drop "
                               "--insecure");
      }
    }
  }
  return Status::Ok();
}

}  // namespace kfleet::coordinator
