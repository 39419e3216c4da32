// The worker's side of protocol.md over one DEALER socket: register, heartbeat, run what is
// assigned, keep results until acknowledged, reconnect when the coordinator goes silent.
//
// A session never blocks and owns no thread: a poll loop (RunSessionLoop, or the caller's own)
// waits on socket() and the executor's wakeup fd, then calls OnReadable() and Tick(). So one
// thread can drive many sessions, which is how `kfleet bench dispatch` runs 1000 workers.
//
//   disconnected --Tick at reconnect time--> registering --Welcome--> registered
//        ^                                       |                      |
//        +---- no reply / silence / duplicateName (backoff 1 s .. 30 s) +
//   any state --Reject, Bye, Shutdown()--> stopped (exit code and reason)
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"
#include "messages/curve.h"
#include "messages/framing.h"
#include "worker/capabilities.h"
#include "worker/probe.h"
#include "worker/result_spool.h"
#include "worker/task_runner.h"

namespace kfleet::worker {

struct SessionOptions {
  std::string endpoint;  // "tcp://coordinator:7600", "ipc:///run/kfleet.sock"
  // CURVE client keys; nullopt speaks the NULL mechanism (--insecure, loopback only).
  std::optional<msg::ClientCredentials> credentials;
  std::string node_name;
  std::string instance_id;  // random per process; empty: NewId("instance")
  std::string worker_version;
  NodeProbe probe;
  SlotCounts slots;
  // Where results wait for their Ack; empty keeps them in memory only (benchmarks), so a restart
  // loses them.
  std::filesystem::path spool_dir;
  // Until a Welcome says otherwise.
  uint32_t heartbeat_interval_ms = 1000;
  uint32_t liveness = 5;
  // Reconnect delays: initial, doubling per failed attempt up to max, each shortened by up to a
  // quarter at random so that a fleet does not reconnect in lockstep.
  int64_t backoff_initial_ms = 1000;
  int64_t backoff_max_ms = 30'000;
  RandomSource* random = nullptr;  // jitter; null: SystemRandom()
  msg::DecodeLimits limits;
  // One line for a person at the moments that matter (registered, lost, rejected, stopped);
  // `problem` marks the ones that went wrong. Empty: none.
  std::function<void(const std::string& line, bool problem)> on_status;
};

enum class SessionState { kDisconnected, kRegistering, kRegistered, kStopped };
std::string_view SessionStateName(SessionState state);

struct SessionCounters {
  uint64_t messages_sent = 0;
  uint64_t send_failures = 0;       // ZeroMQ could not take a message (it is retried if it matters)
  uint64_t messages_received = 0;   // decoded and handled
  uint64_t dropped_malformed = 0;   // failed to decode: counted, logged and ignored
  uint64_t dropped_unexpected = 0;  // decoded but wrong for the state or direction
  uint64_t connects = 0;            // sockets created
  uint64_t registrations = 0;       // Welcomes accepted
  uint64_t heartbeats_sent = 0;
  uint64_t tasks_started = 0;
  uint64_t tasks_refused = 0;  // answered at once with a failed result
  uint64_t results_sent = 0;   // including resends
  uint64_t results_acked = 0;
  uint64_t spool_errors = 0;  // results that could not be written to or removed from disk
};

class WorkerSession {
 public:
  // Loads the spool (results a previous process left unacknowledged); the first Tick connects.
  // `context` and `clock` must outlive the session.
  [[nodiscard]] static Result<std::unique_ptr<WorkerSession>> Create(
      zmq::context_t& context, SessionOptions options, std::unique_ptr<TaskExecutor> executor,
      Clock& clock = SystemClock());
  ~WorkerSession();
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  // The DEALER socket to poll for input; null while disconnected or stopped. It changes on every
  // reconnect, so look it up before each poll.
  zmq::socket_t* socket() { return socket_.get(); }
  // Readable when a task finished; Tick drains it.
  int wakeup_fd() { return executor_->wakeup().fd(); }

  // Handles every message waiting on the socket.
  void OnReadable();
  // Takes finished tasks, then does whatever is due at `now_us` (monotonic): connect, heartbeat,
  // give up on a silent coordinator, resend unacknowledged results.
  void Tick(int64_t now_us);
  // When Tick next has something to do (monotonic); INT64_MAX once stopped.
  int64_t NextDeadlineUs() const;

  // Stops on purpose (SIGINT, SIGTERM): sends Bye, kills running tasks; exit code 0.
  void Shutdown(const std::string& reason);

  SessionState state() const { return state_; }
  bool stopped() const { return state_ == SessionState::kStopped; }
  int exit_code() const { return exit_code_; }
  const std::string& stop_reason() const { return stop_reason_; }
  const SessionCounters& counters() const { return counters_; }
  const std::string& instance_id() const { return options_.instance_id; }
  uint64_t node_id() const { return node_id_; }
  bool draining() const { return draining_; }
  size_t running_count() const { return running_.size(); }
  size_t unacked_count() const { return unacked_.size(); }

 private:
  struct RunningTask {
    SlotClass slot_class;
    uint64_t job_id;
    int device;  // the CUDA GPU it runs on; -1: none
  };
  struct UnackedResult {
    msg::DecodedMessage message;  // the TaskResult as first encoded
    int64_t last_sent_us;         // monotonic; 0: never sent
  };

  WorkerSession(zmq::context_t& context, SessionOptions options,
                std::unique_ptr<TaskExecutor> executor, Clock& clock);

  int64_t IntervalUs() const { return int64_t{heartbeat_interval_ms_} * 1000; }
  int64_t SilenceLimitUs() const { return int64_t{liveness_} * IntervalUs(); }

  void Connect(int64_t now_us);
  // Closes the socket and schedules the next connect after the backoff.
  void Disconnect(int64_t now_us, std::string_view why);
  void Stop(int exit_code, const std::string& reason);
  void PrintStatus(const std::string& line, bool problem = false);

  // Counts the send and its failure; false when ZeroMQ did not take the message.
  bool SendMessage(msg::MessageType type, capnp::MessageBuilder& builder);
  void SendRegister();
  void SendHeartbeat();
  void SendResult(const TaskKey& key, UnackedResult& result, int64_t now_us);

  void Handle(const msg::DecodedMessage& message, int64_t now_us);
  void OnWelcome(msg::Welcome::Reader welcome, int64_t now_us);
  void OnReject(msg::Reject::Reader reject, int64_t now_us);
  void OnAssign(msg::Assign::Reader assign, int64_t now_us);
  void OnAck(msg::Ack::Reader ack);
  void OnCancel(msg::Cancel::Reader cancel);

  // Spools and sends the result of a finished (or refused) attempt.
  void Finish(const FinishedTask& finished, uint64_t job_id, int64_t now_us);
  void Refuse(const AssignedTask& task, const std::string& error, int64_t now_us);
  uint32_t SlotsInUse(SlotClass slot_class) const;
  // The GPU (CUDA runtime index) a task of `requirements` runs on, -1 for other backends; an
  // error, for the refusal, when no GPU of this node fits.
  Result<int> ChooseDevice(msg::Requirements::Reader requirements, SlotClass slot_class) const;

  zmq::context_t& context_;
  SessionOptions options_;
  std::unique_ptr<TaskExecutor> executor_;
  Clock& clock_;
  RandomSource& random_;
  std::optional<ResultSpool> spool_;

  std::unique_ptr<zmq::socket_t> socket_;
  SessionState state_ = SessionState::kDisconnected;
  int exit_code_ = 0;
  std::string stop_reason_;
  SessionCounters counters_;

  uint32_t heartbeat_interval_ms_;
  uint32_t liveness_;
  uint64_t node_id_ = 0;
  uint64_t coordinator_epoch_ = 0;
  bool draining_ = false;
  uint64_t heartbeat_sequence_ = 0;

  int64_t reconnect_at_us_ = 0;                // kDisconnected: when to connect
  int64_t register_deadline_us_ = 0;           // kRegistering: give up waiting for a reply
  int64_t last_heard_us_ = 0;                  // kRegistered: any message counts
  int64_t next_heartbeat_us_ = 0;              // kRegistered
  int64_t backoff_ms_ = 0;                     // the next delay before jitter
  std::optional<int64_t> duplicate_since_us_;  // first duplicateName Reject of this streak

  std::map<TaskKey, RunningTask> running_;
  std::map<TaskKey, UnackedResult> unacked_;
};

// Drives `sessions` on the calling thread until every one has stopped, or until `stop_fd` (a
// signalfd, say; -1 for none) turns readable, which returns true and leaves the sessions as they
// are for the caller to Shutdown. An error only for a failed poll.
[[nodiscard]] Result<bool> RunSessionLoop(std::span<WorkerSession* const> sessions,
                                          Clock& clock = SystemClock(), int stop_fd = -1);

}  // namespace kfleet::worker
