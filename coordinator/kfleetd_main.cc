// kfleetd: the coordinator daemon.
#include <CLI/CLI.hpp>
#include <signal.h>

#include <atomic>
#include <iostream>

#include "common/log.h"
#include "coordinator/coordinator.h"
#include "coordinator/options.h"

namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

kfleet::Status InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGINT, SIGTERM}) {
    if (sigaction(signal_number, &action, nullptr) != 0) {
      return kfleet::ErrnoError("installing a signal handler", errno);
    }
  }
  return kfleet::Status::Ok();
}

int Fail(const kfleet::Status& status) {
  std::cerr << "kfleetd: " << status.message() << "\n";
  return status.code() == kfleet::ErrorCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kfleetd: the kfleet coordinator. Keeps the job queue and the node pool in STATE "
               "and hands tasks to workers."};
  std::string config_path, state_dir, listen, api, advertise, log_level, log_file;
  bool insecure = false;
  int64_t heartbeat_ms = 0, liveness = 0;
  app.add_option("--config", config_path, "YAML settings (see configs/coordinator.yaml)")
      ->check(CLI::ExistingFile);
  app.add_option("--state", state_dir, "Directory for the database, blobs and keys");
  app.add_option("--listen", listen, "Endpoint for workers (default tcp://0.0.0.0:7600)");
  app.add_option("--api", api, "Endpoint for the CLI (default tcp://127.0.0.1:7601)");
  app.add_option("--advertise", advertise, "Worker endpoint printed by `kfleet nodes invite`");
  app.add_flag("--insecure", insecure, "No CurveZMQ: for one machine only (loopback endpoints)");
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval in milliseconds")
      ->check(CLI::Range(int64_t{10}, int64_t{60'000}));
  app.add_option("--liveness", liveness, "Missed heartbeats before a worker is lost")
      ->check(CLI::Range(int64_t{2}, int64_t{100}));
  app.add_option("--log-level", log_level, "debug, info, warn or error");
  app.add_option("--log-file", log_file, "Append logs to this file instead of standard error");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  kfleet::coordinator::CoordinatorOptions options;
  if (!config_path.empty()) {
    auto loaded = kfleet::coordinator::LoadCoordinatorOptions(config_path);
    if (!loaded.ok()) return Fail(loaded.status());
    options = *loaded;
  }
  if (!state_dir.empty()) options.state_dir = state_dir;
  if (!listen.empty()) options.listen = listen;
  if (!api.empty()) options.api = api;
  if (!advertise.empty()) options.advertise = advertise;
  if (insecure) options.insecure = true;
  if (heartbeat_ms > 0) options.heartbeat_interval_ms = heartbeat_ms;
  if (liveness > 0) options.liveness = liveness;
  if (!log_level.empty()) {
    auto level = kfleet::log::ParseLevel(log_level);
    if (!level.ok()) return Fail(level.status());
    options.log.level = *level;
  }
  if (!log_file.empty()) options.log.file = log_file;
  if (kfleet::Status logging = kfleet::log::Init(options.log); !logging.ok()) return Fail(logging);
  if (kfleet::Status signals = InstallSignalHandlers(); !signals.ok()) return Fail(signals);

  auto coordinator = kfleet::coordinator::Coordinator::Start(options);
  if (!coordinator.ok()) return Fail(coordinator.status());
  std::cout << "kfleetd: serving workers on " << (*coordinator)->worker_endpoint()
            << " and clients on " << (*coordinator)->api_endpoint() << " (state in "
            << options.state_dir.string() << ")\n";
  if (!options.insecure) std::cout << "kfleetd: add a node with: kfleet nodes invite NAME\n";
  std::cout.flush();
  kfleet::Status run = (*coordinator)->Run(g_stop);
  if (!run.ok()) return Fail(run);
  return 0;
}
