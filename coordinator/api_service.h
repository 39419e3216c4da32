// The client API (api.capnp): one request in, one reply (or apiError) queued in the outbox. The
// coordinator runs each request in its own transaction, so a failed one changes nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/conductor.h"
#include "coordinator/outbox.h"
#include "coordinator/scheduler.h"
#include "messages/framing.h"
#include "storage/store.h"

namespace kfleet::coordinator {

struct NodeInvitation {
  std::string command;   // the one command that joins the node
  std::string key_path;  // where the node's credential file was written
  std::string public_key;
};

// Node keys, kept apart so an insecure coordinator can refuse invites with a clear reason.
class NodeKeys {
 public:
  virtual ~NodeKeys() = default;
  [[nodiscard]] virtual Result<NodeInvitation> Invite(const std::string& name) = 0;
  [[nodiscard]] virtual Status Revoke(const std::string& name) = 0;
};

// Counters for logs, `kfleet status` and tests.
struct CoordinatorStats {
  uint64_t worker_messages = 0;
  uint64_t client_messages = 0;
  uint64_t malformed_dropped = 0;
  uint64_t version_mismatches = 0;
  uint64_t send_failures = 0;
  uint64_t failed_batches = 0;
  int64_t started_us = 0;
};

struct ApiOptions {
  int64_t max_attempts = 3;
  uint32_t max_watch_wait_ms = 30'000;
};

class ApiService {
 public:
  ApiService(storage::Store& store, Scheduler& scheduler, Conductor& conductor, Outbox& outbox,
             NodeKeys& keys, Clock& clock, const CoordinatorStats& stats,
             const ApiOptions& options);

  // Handles one request from `routing_id`. An error means nothing was replied: the caller rolls
  // the transaction back and answers with ReplyError.
  [[nodiscard]] Status Handle(const std::string& routing_id, const msg::DecodedMessage& request);
  void ReplyError(const std::string& routing_id, const Status& status);
  // Answers parked watches that have news or whose wait has passed.
  [[nodiscard]] Status ServeWatches();
  bool has_watches() const { return !watches_.empty(); }

 private:
  struct Watch {
    std::string routing_id;
    int64_t job_id = 0;
    int64_t after_event_id = 0;
    int64_t deadline_us = 0;  // monotonic
  };

  [[nodiscard]] Status Submit(const std::string& routing_id, msg::SubmitRequest::Reader request);
  [[nodiscard]] Status JobStatus(const std::string& routing_id);
  [[nodiscard]] Status Nodes(const std::string& routing_id);
  [[nodiscard]] Status NodeAction(const std::string& routing_id,
                                  msg::NodeActionRequest::Reader request);
  [[nodiscard]] Status Invite(const std::string& routing_id, msg::InviteRequest::Reader request);
  [[nodiscard]] Status Cancel(const std::string& routing_id, msg::CancelRequest::Reader request);
  [[nodiscard]] Status Show(const std::string& routing_id, msg::ShowRequest::Reader request);
  // Replies to `watch` if there is news or its wait has passed; true when it replied.
  [[nodiscard]] Result<bool> TryAnswer(const Watch& watch, bool force);
  [[nodiscard]] Status FillJob(const storage::JobRow& job, msg::JobSummary::Builder out);

  storage::Store& store_;
  Scheduler& scheduler_;
  Conductor& conductor_;
  Outbox& outbox_;
  NodeKeys& keys_;
  Clock& clock_;
  const CoordinatorStats& stats_;
  ApiOptions options_;
  std::vector<Watch> watches_;
};

// "not_found", "invalid_argument", ...: the stable code an apiError carries.
std::string ApiErrorCode(ErrorCode code);

}  // namespace kfleet::coordinator
