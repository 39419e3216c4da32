// A kfleet deployment on loopback for tests: kfleetd, workers and the CLI as real processes in a
// temporary directory, with short heartbeats so failures are detected in well under a second.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "storage/store.h"
#include "tests/integration/daemon_process.h"

namespace kfleet::testing {

constexpr int kHeartbeatMs = 100;
constexpr int kLiveness = 5;

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  nlohmann::json Json() const;  // stdout as JSON (null when it is not)
};

class Fleet {
 public:
  explicit Fleet(std::string extra_config = "");
  ~Fleet();

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path state_dir() const { return dir_ / "state"; }

  // Starts kfleetd (secure) on fresh ports, or on the previous ones after a kill.
  void StartCoordinator();
  DaemonProcess& coordinator() { return *coordinator_; }
  const std::string& worker_endpoint() const { return worker_endpoint_; }

  // Invites `name` through the CLI and starts its worker; returns the credential file.
  std::filesystem::path AddWorker(const std::string& name, int cpu_slots = 2);
  std::filesystem::path Invite(const std::string& name);
  DaemonProcess& worker(const std::string& name) { return *workers_.at(name); }

  CliResult Cli(const std::vector<std::string>& args, int timeout_ms = 60'000);

  // Waits until `kfleet nodes` shows `count` connected nodes.
  bool WaitForNodes(size_t count, int timeout_ms = 10'000);
  // A store opened beside the running kfleetd (WAL allows readers next to its writer).
  storage::Store& Store();

 private:
  std::filesystem::path dir_;
  std::string extra_config_;
  std::unique_ptr<DaemonProcess> coordinator_;
  size_t starts_ = 0;  // kfleetd starts so far (its log is appended across restarts)
  std::string worker_endpoint_;
  std::string api_endpoint_;
  std::map<std::string, std::unique_ptr<DaemonProcess>> workers_;
  std::unique_ptr<storage::Store> store_;
};

}  // namespace kfleet::testing
