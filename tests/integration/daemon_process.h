// Real kfleet processes for integration tests: started in the background with their output in a
// log file, killed with any signal, waited for with a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kfleet::testing {

class DaemonProcess {
 public:
  // Starts argv[0] (a path) with `env` added to this process's environment; stdout and stderr
  // go to `log_path`.
  static Result<DaemonProcess> Start(const std::vector<std::string>& argv,
                                     const std::vector<std::string>& env,
                                     const std::filesystem::path& log_path);
  DaemonProcess(DaemonProcess&& other) noexcept;
  DaemonProcess& operator=(DaemonProcess&& other) noexcept;
  ~DaemonProcess();  // SIGKILL and reap if still running

  pid_t pid() const { return pid_; }
  void Signal(int signal_number) const;
  // The wait status once it exited within `timeout`, or nullopt.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool Running();
  std::string Log() const;
  // Waits until the log contains `text`; false on timeout or exit.
  bool WaitForLog(const std::string& text, std::chrono::milliseconds timeout);

 private:
  DaemonProcess(pid_t pid, std::filesystem::path log_path)
      : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path log_path_;
};

}  // namespace kfleet::testing
