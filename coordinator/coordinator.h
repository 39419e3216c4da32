// kfleetd: the coordinator daemon. One thread owns the sockets, the store and the scheduler; it
// polls the worker and client sockets, handles what arrived in one transaction, commits, and only
// then sends what it decided (acks, assignments, replies). The ZAP handler runs on its own thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/api_service.h"
#include "coordinator/options.h"

namespace kfleet::coordinator {

class Coordinator {
 public:
  // Opens the state, starts the ZAP handler (unless insecure) and binds both sockets.
  [[nodiscard]] static Result<std::unique_ptr<Coordinator>> Start(
      const CoordinatorOptions& options, Clock& clock = SystemClock());
  ~Coordinator();

  // Serves until `stop` becomes true. An error means kfleetd cannot go on safely (the ZAP handler
  // died, a socket failed).
  [[nodiscard]] Status Run(const std::atomic<bool>& stop);

  // The endpoints as bound (a port 0 resolved to the real port).
  const std::string& worker_endpoint() const;
  const std::string& api_endpoint() const;
  CoordinatorStats stats() const;

 private:
  struct State;
  explicit Coordinator(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kfleet::coordinator
