#include "worker/session.h"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/log.h"
#include "messages/transport.h"

namespace kfleet::worker {
namespace {

// Bounds one OnReadable call, so one busy socket cannot starve the other sessions of a loop.
constexpr int kMaxMessagesPerRead = 256;
// How long closing the socket may wait to deliver the Bye of a deliberate shutdown.
constexpr int kShutdownLingerMs = 1000;
// The longest a RunSessionLoop poll sleeps, so a stalled clock or a missed wakeup costs a second.
constexpr int64_t kMaxPollMs = 1000;

std::string ToString(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

capnp::Data::Reader AsData(std::string_view bytes) {
  return {reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()};
}

std::string_view OutcomeName(msg::Outcome outcome) {
  switch (outcome) {
    case msg::Outcome::OK: return "ok";
    case msg::Outcome::FAILED: return "failed";
    case msg::Outcome::CRASHED: return "crashed";
    case msg::Outcome::TIMED_OUT: return "timedOut";
    case msg::Outcome::CANCELLED: return "cancelled";
  }
  return "unknown";
}

std::string_view RejectReasonName(msg::RejectReason reason) {
  switch (reason) {
    case msg::RejectReason::VERSION_MISMATCH: return "versionMismatch";
    case msg::RejectReason::UNKNOWN_KEY: return "unknownKey";
    case msg::RejectReason::DUPLICATE_NAME: return "duplicateName";
    case msg::RejectReason::REVOKED: return "revoked";
    case msg::RejectReason::REMOVED: return "removed";
    case msg::RejectReason::MALFORMED: return "malformed";
  }
  return "unknown";
}

std::string FormatDuration(int64_t us) {
  const int64_t ms = us / 1000;
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

}  // namespace

std::string_view SessionStateName(SessionState state) {
  switch (state) {
    case SessionState::kDisconnected: return "disconnected";
    case SessionState::kRegistering: return "registering";
    case SessionState::kRegistered: return "registered";
    case SessionState::kStopped: return "stopped";
  }
  return "unknown";
}

Result<std::unique_ptr<WorkerSession>> WorkerSession::Create(zmq::context_t& context,
                                                             SessionOptions options,
                                                             std::unique_ptr<TaskExecutor> executor,
                                                             Clock& clock) {
  if (options.endpoint.empty()) {
    return InvalidArgument("worker session: no coordinator endpoint (tcp://HOST:7600)");
  }
  if (options.node_name.empty()) return InvalidArgument("worker session: no node name");
  if (executor == nullptr) return InvalidArgument("worker session: no task executor");
  if (options.instance_id.empty()) options.instance_id = NewId("instance");
  std::optional<ResultSpool> spool;
  std::vector<SpooledResult> spooled;
  if (!options.spool_dir.empty()) {
    KF_ASSIGN_OR_RETURN(ResultSpool opened, ResultSpool::Open(options.spool_dir));
    KF_ASSIGN_OR_RETURN(spooled, opened.List());
    spool.emplace(std::move(opened));
  }
  std::unique_ptr<WorkerSession> session(
      new WorkerSession(context, std::move(options), std::move(executor), clock));
  session->spool_ = std::move(spool);
  for (SpooledResult& result : spooled) {
    session->unacked_.emplace(result.key, UnackedResult{std::move(result.message), 0});
  }
  if (!spooled.empty()) {
    log::Info("worker.spool_loaded")
        .Kv("node", session->options_.node_name)
        .Kv("results", static_cast<uint64_t>(spooled.size()))
        .Kv("dir", session->options_.spool_dir.string());
  }
  return session;
}

WorkerSession::WorkerSession(zmq::context_t& context, SessionOptions options,
                             std::unique_ptr<TaskExecutor> executor, Clock& clock)
    : context_(context),
      options_(std::move(options)),
      executor_(std::move(executor)),
      clock_(clock),
      random_(options_.random != nullptr ? *options_.random : SystemRandom()),
      heartbeat_interval_ms_(std::max<uint32_t>(options_.heartbeat_interval_ms, 1)),
      liveness_(std::max<uint32_t>(options_.liveness, 1)),
      backoff_ms_(std::max<int64_t>(options_.backoff_initial_ms, 1)) {}

// The executor is destroyed after the socket (declaration order): it kills and reaps children.
WorkerSession::~WorkerSession() = default;

void WorkerSession::PrintStatus(const std::string& line, bool problem) {
  if (options_.on_status) {
    options_.on_status("kfleet-worker " + options_.node_name + ": " + line, problem);
  }
}

void WorkerSession::Connect(int64_t now_us) {
  ++counters_.connects;
  try {
    auto socket = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    const kfleet::Status configured = msg::ConfigureSocket(*socket, options_.limits);
    if (!configured.ok()) {
      Disconnect(now_us, configured.message());
      return;
    }
    if (options_.credentials.has_value()) {
      const kfleet::Status curve = msg::UseCurveClient(*socket, *options_.credentials);
      if (!curve.ok()) {
        Stop(1, "cannot use the worker's CURVE key: " + curve.message());
        return;
      }
    }
    socket->connect(options_.endpoint);
    socket_ = std::move(socket);
  } catch (const zmq::error_t& e) {
    // A malformed endpoint never becomes valid; anything else (EMFILE, say) may pass.
    if (e.num() == EINVAL || e.num() == EPROTONOSUPPORT || e.num() == ENOCOMPATPROTO) {
      Stop(1, "cannot connect to '" + options_.endpoint + "': " + e.what() +
                  "; give an endpoint such as tcp://HOST:7600");
      return;
    }
    Disconnect(now_us, std::string("cannot open a socket: ") + e.what());
    return;
  }
  state_ = SessionState::kRegistering;
  register_deadline_us_ = now_us + SilenceLimitUs();
  SendRegister();
}

void WorkerSession::Disconnect(int64_t now_us, std::string_view why) {
  // Linger is 0: messages still queued for the old connection are dropped. Results among them
  // are resent after the next Welcome; everything else is rebuilt from state.
  socket_.reset();
  state_ = SessionState::kDisconnected;
  uint64_t draw = 0;
  random_.Fill({reinterpret_cast<uint8_t*>(&draw), sizeof draw});
  const int64_t delay_ms = backoff_ms_ - static_cast<int64_t>(draw % (backoff_ms_ / 4 + 1));
  reconnect_at_us_ = now_us + delay_ms * 1000;
  backoff_ms_ = std::min(backoff_ms_ * 2, std::max<int64_t>(options_.backoff_max_ms, 1));
  log::Warn("worker.disconnected")
      .Kv("node", options_.node_name)
      .Kv("endpoint", options_.endpoint)
      .Kv("why", why)
      .Kv("retry_in_ms", delay_ms)
      .Kv("running", static_cast<uint64_t>(running_.size()))
      .Kv("unacked", static_cast<uint64_t>(unacked_.size()));
}

void WorkerSession::Stop(int exit_code, const std::string& reason) {
  if (state_ == SessionState::kStopped) return;
  executor_->CancelAll();
  running_.clear();
  socket_.reset();
  state_ = SessionState::kStopped;
  exit_code_ = exit_code;
  stop_reason_ = reason;
  log::Event(exit_code == 0 ? log::Level::kInfo : log::Level::kError, "worker.stopped")
      .Kv("node", options_.node_name)
      .Kv("exit_code", exit_code)
      .Kv("reason", reason)
      .Kv("unacked", static_cast<uint64_t>(unacked_.size()));
  PrintStatus(reason, exit_code != 0);
}

void WorkerSession::Shutdown(const std::string& reason) {
  if (state_ == SessionState::kStopped) return;
  if (socket_ != nullptr) {
    // The coordinator requeues our tasks at once instead of waiting out the liveness timeout.
    capnp::MallocMessageBuilder builder;
    builder.initRoot<msg::Bye>().setReason(reason);
    SendMessage(msg::MessageType::BYE, builder);
    try {
      socket_->set(zmq::sockopt::linger, kShutdownLingerMs);
    } catch (const zmq::error_t& e) {
      log::Warn("worker.bye_may_be_lost").Kv("node", options_.node_name).Kv("error", e.what());
    }
  }
  Stop(0, "stopped: " + reason);
}

bool WorkerSession::SendMessage(msg::MessageType type, capnp::MessageBuilder& builder) {
  const kfleet::Status sent = msg::Send(*socket_, type, builder);
  if (sent.ok()) {
    ++counters_.messages_sent;
    return true;
  }
  ++counters_.send_failures;
  log::Warn("worker.send_failed")
      .Kv("node", options_.node_name)
      .Kv("type", msg::MessageTypeName(type))
      .Kv("error", sent);
  return false;
}

void WorkerSession::SendRegister() {
  capnp::MallocMessageBuilder builder;
  msg::Register::Builder request = builder.initRoot<msg::Register>();
  request.setProtocolVersion(msg::kProtocolVersion);
  FillCapabilities(request.initCapabilities(), options_.probe, options_.slots, options_.node_name,
                   options_.worker_version);
  capnp::List<msg::TaskRef>::Builder running =
      request.initRunningTasks(static_cast<unsigned>(running_.size()));
  unsigned i = 0;
  for (const auto& [key, task] : running_) {
    running[i].setTaskId(key.task_id);
    running[i++].setAttempt(key.attempt);
  }
  capnp::List<msg::TaskRef>::Builder finished =
      request.initFinishedTasks(static_cast<unsigned>(unacked_.size()));
  i = 0;
  for (const auto& [key, result] : unacked_) {
    finished[i].setTaskId(key.task_id);
    finished[i++].setAttempt(key.attempt);
  }
  request.setInstanceId(options_.instance_id);
  log::Info("worker.registering")
      .Kv("node", options_.node_name)
      .Kv("endpoint", options_.endpoint)
      .Kv("instance", options_.instance_id)
      .Kv("running", static_cast<uint64_t>(running_.size()))
      .Kv("finished", static_cast<uint64_t>(unacked_.size()));
  SendMessage(msg::MessageType::REGISTER, builder);
}

void WorkerSession::SendHeartbeat() {
  // Every task this worker holds, running or awaiting its Ack: each listed lease is extended.
  std::set<TaskKey> held;
  for (const auto& [key, task] : running_) held.insert(key);
  for (const auto& [key, result] : unacked_) held.insert(key);
  capnp::MallocMessageBuilder builder;
  msg::Heartbeat::Builder beat = builder.initRoot<msg::Heartbeat>();
  beat.setSequence(++heartbeat_sequence_);
  beat.setSentUs(clock_.NowUs());
  capnp::List<msg::TaskRef>::Builder tasks =
      beat.initRunningTasks(static_cast<unsigned>(held.size()));
  unsigned i = 0;
  for (const TaskKey& key : held) {
    tasks[i].setTaskId(key.task_id);
    tasks[i++].setAttempt(key.attempt);
  }
  if (SendMessage(msg::MessageType::HEARTBEAT, builder)) ++counters_.heartbeats_sent;
}

void WorkerSession::SendResult(const TaskKey& key, UnackedResult& result, int64_t now_us) {
  // Stored messages were validated when they were encoded or loaded, so Root cannot fail here.
  Result<msg::TaskResult::Reader> root = result.message.Root<msg::TaskResult>();
  if (!root.ok()) return;
  capnp::MallocMessageBuilder builder;
  builder.setRoot(*root);
  const bool resend = result.last_sent_us != 0;
  result.last_sent_us = now_us;
  if (!SendMessage(msg::MessageType::RESULT, builder)) return;
  ++counters_.results_sent;
  log::Debug(resend ? "task.result_resent" : "task.result_sent")
      .Kv("node", options_.node_name)
      .Kv("task", key.task_id)
      .Kv("attempt", key.attempt);
}

void WorkerSession::OnReadable() {
  const int64_t now_us = clock_.MonotonicUs();
  for (int i = 0; i < kMaxMessagesPerRead && socket_ != nullptr; ++i) {
    Result<std::optional<msg::ReceivedMessage>> received =
        msg::Receive(*socket_, /*with_routing_id=*/false, options_.limits);
    if (!received.ok()) {
      if (received.status().code() == ErrorCode::kIoError) {
        Disconnect(now_us, received.status().message());
        return;
      }
      if (received.status().code() == ErrorCode::kFailedPrecondition) {
        // Another protocol version: retrying cannot help, the operator must upgrade one side.
        Stop(1, "the coordinator speaks another protocol version: " + received.status().message());
        return;
      }
      ++counters_.dropped_malformed;
      log::Warn("worker.malformed_message")
          .Kv("node", options_.node_name)
          .Kv("error", received.status());
      continue;
    }
    if (!received->has_value()) return;
    ++counters_.messages_received;
    last_heard_us_ = now_us;
    Handle((*received)->message, now_us);
  }
}

void WorkerSession::Handle(const msg::DecodedMessage& message, int64_t now_us) {
  // Messages about tasks are taken before the Welcome too: the coordinator answers a Register
  // with Cancels for stale listed tasks ahead of its Welcome, on the same connection.
  switch (message.type()) {
    case msg::MessageType::WELCOME:
      if (state_ != SessionState::kRegistering) break;
      OnWelcome(*message.Root<msg::Welcome>(), now_us);
      return;
    case msg::MessageType::REJECT: OnReject(*message.Root<msg::Reject>(), now_us); return;
    case msg::MessageType::HEARTBEAT: return;  // being heard was the point
    case msg::MessageType::ASSIGN: OnAssign(*message.Root<msg::Assign>(), now_us); return;
    case msg::MessageType::ACK: OnAck(*message.Root<msg::Ack>()); return;
    case msg::MessageType::CANCEL: OnCancel(*message.Root<msg::Cancel>()); return;
    case msg::MessageType::DRAIN: {
      const std::string reason = ToString(message.Root<msg::Drain>()->getReason());
      draining_ = true;
      log::Info("worker.draining")
          .Kv("node", options_.node_name)
          .Kv("reason", reason)
          .Kv("running", static_cast<uint64_t>(running_.size()));
      PrintStatus("draining (" + reason + "): running tasks finish, no new ones will come");
      return;
    }
    case msg::MessageType::BYE:
      Stop(0, "the coordinator ended this worker's session: " +
                  ToString(message.Root<msg::Bye>()->getReason()));
      return;
    default: break;
  }
  ++counters_.dropped_unexpected;
  log::Warn("worker.unexpected_message")
      .Kv("node", options_.node_name)
      .Kv("type", msg::MessageTypeName(message.type()))
      .Kv("state", SessionStateName(state_));
}

void WorkerSession::OnWelcome(msg::Welcome::Reader welcome, int64_t now_us) {
  node_id_ = welcome.getNodeId();
  if (welcome.getHeartbeatIntervalMs() > 0)
    heartbeat_interval_ms_ = welcome.getHeartbeatIntervalMs();
  if (welcome.getLiveness() > 0) liveness_ = welcome.getLiveness();
  const bool coordinator_restarted =
      coordinator_epoch_ != 0 && coordinator_epoch_ != welcome.getCoordinatorEpoch();
  coordinator_epoch_ = welcome.getCoordinatorEpoch();
  state_ = SessionState::kRegistered;
  ++counters_.registrations;
  backoff_ms_ = std::max<int64_t>(options_.backoff_initial_ms, 1);
  duplicate_since_us_.reset();
  next_heartbeat_us_ = now_us + IntervalUs();
  log::Info("worker.registered")
      .Kv("node", options_.node_name)
      .Kv("node_id", node_id_)
      .Kv("epoch", coordinator_epoch_)
      .Kv("coordinator_restarted", coordinator_restarted)
      .Kv("heartbeat_ms", heartbeat_interval_ms_)
      .Kv("liveness", liveness_)
      .Kv("running", static_cast<uint64_t>(running_.size()))
      .Kv("resending", static_cast<uint64_t>(unacked_.size()));
  PrintStatus("registered as node " + std::to_string(node_id_) + " at " + options_.endpoint +
              " (heartbeat every " + std::to_string(heartbeat_interval_ms_) + " ms, " +
              std::to_string(running_.size()) + " tasks running, " +
              std::to_string(unacked_.size()) + " results to resend)");
  for (auto& [key, result] : unacked_) SendResult(key, result, now_us);
}

void WorkerSession::OnReject(msg::Reject::Reader reject, int64_t now_us) {
  const msg::RejectReason reason = reject.getReason();
  const std::string text = ToString(reject.getMessage());
  if (reason == msg::RejectReason::DUPLICATE_NAME) {
    // The holder may be this worker's own crashed predecessor, which the coordinator declares
    // lost after one liveness period; two periods of retries outlast that.
    if (!duplicate_since_us_) duplicate_since_us_ = now_us;
    const int64_t window_us = 2 * SilenceLimitUs();
    if (now_us - *duplicate_since_us_ < window_us) {
      log::Warn("worker.duplicate_name")
          .Kv("node", options_.node_name)
          .Kv("message", text)
          .Kv("retrying_for_ms", (window_us - (now_us - *duplicate_since_us_)) / 1000);
      Disconnect(now_us, "duplicateName: " + text);
      return;
    }
  }
  Stop(1, "the coordinator refused this worker (" + std::string(RejectReasonName(reason)) +
              "): " + text);
}

uint32_t WorkerSession::SlotsInUse(SlotClass slot_class) const {
  return static_cast<uint32_t>(std::count_if(
      running_.begin(), running_.end(),
      [slot_class](const auto& entry) { return entry.second.slot_class == slot_class; }));
}

// Exclusive tasks (timing) own their GPU: they take one no other exclusive task holds. Other
// CUDA tasks (tests) go where the fewest tasks run, avoiding GPUs under a timing run while any
// other fits, since work beside a timed kernel disturbs its timing. Ties go to the probe's order.
Result<int> WorkerSession::ChooseDevice(msg::Requirements::Reader requirements,
                                        SlotClass slot_class) const {
  if (requirements.getBackend() != msg::Backend::CUDA) return -1;
  const std::string arch = ToString(requirements.getArch());
  struct Load {
    int device;
    uint32_t exclusive;  // running exclusive tasks
    uint32_t tasks;      // running tasks of any class
  };
  std::vector<Load> loads;
  size_t cuda_gpus = 0;
  for (const GpuInfo& gpu : options_.probe.gpus) {
    if (gpu.backend != "cuda") continue;
    ++cuda_gpus;
    if ((arch.empty() || gpu.arch == arch) &&
        gpu.memory_bytes >= requirements.getMinMemoryBytes()) {
      loads.push_back({static_cast<int>(gpu.index), 0, 0});
    }
  }
  if (cuda_gpus == 0) return FailedPrecondition("this worker has no CUDA GPU");
  if (loads.empty()) {
    return FailedPrecondition(
        "no CUDA GPU of this worker has " + (arch.empty() ? "" : "arch " + arch + " and ") +
        "at least " + std::to_string(requirements.getMinMemoryBytes()) + " bytes of memory");
  }
  for (const auto& [key, task] : running_) {
    for (Load& load : loads) {
      if (load.device != task.device) continue;
      ++load.tasks;
      if (task.slot_class == SlotClass::kGpuExclusive) ++load.exclusive;
    }
  }
  const bool exclusive = slot_class == SlotClass::kGpuExclusive;
  const Load* best = nullptr;
  for (const Load& load : loads) {
    if (exclusive && load.exclusive > 0) continue;
    if (best == nullptr ||
        std::tie(load.exclusive, load.tasks) < std::tie(best->exclusive, best->tasks)) {
      best = &load;
    }
  }
  if (best == nullptr) {
    return ResourceExhausted("no free CUDA GPU on this worker: all " +
                             std::to_string(loads.size()) + " run an exclusive task");
  }
  return best->device;
}

void WorkerSession::OnAssign(msg::Assign::Reader assign, int64_t now_us) {
  AssignedTask task;
  task.key = {assign.getTaskId(), assign.getAttempt()};
  task.job_id = assign.getJobId();
  task.kind = ToString(assign.getKind());
  task.timeout_ms = assign.getTimeoutMs();
  const capnp::Data::Reader payload = assign.getPayload();
  task.payload.assign(reinterpret_cast<const char*>(payload.begin()), payload.size());

  if (running_.count(task.key) != 0 || unacked_.count(task.key) != 0) {
    // A repeated Assign of an attempt this worker holds already: the first one stands.
    ++counters_.dropped_unexpected;
    log::Warn("task.duplicate_assign")
        .Kv("node", options_.node_name)
        .Kv("task", task.key.task_id)
        .Kv("attempt", task.key.attempt);
    return;
  }
  // A kind this worker cannot run is refused whatever the slots: retrying here will not help.
  if (!executor_->Runs(task.kind)) {
    Refuse(task, UnknownKindError(task.kind).message(), now_us);
    return;
  }
  const SlotClass slot_class = SlotClassOf(assign.getRequirements());
  const uint32_t slots = SlotsOf(options_.slots, slot_class);
  const std::string slot_name(SlotClassName(slot_class));
  if (slots == 0) {
    Refuse(task, "this worker has no " + slot_name + " slots", now_us);
    return;
  }
  if (SlotsInUse(slot_class) >= slots) {
    Refuse(task,
           "no free " + slot_name + " slot on this worker: all " + std::to_string(slots) + " busy",
           now_us);
    return;
  }
  const Result<int> device = ChooseDevice(assign.getRequirements(), slot_class);
  if (!device.ok()) {
    Refuse(task, device.status().message(), now_us);
    return;
  }
  task.device = *device;
  const kfleet::Status started = executor_->Start(task);
  if (!started.ok()) {
    Refuse(task, started.message(), now_us);
    return;
  }
  running_[task.key] = RunningTask{slot_class, task.job_id, task.device};
  ++counters_.tasks_started;
  log::Info("task.started")
      .Kv("node", options_.node_name)
      .Kv("task", task.key.task_id)
      .Kv("attempt", task.key.attempt)
      .Kv("job", task.job_id)
      .Kv("kind", task.kind)
      .Kv("slot", slot_name)
      .Kv("device", task.device)
      .Kv("timeout_ms", task.timeout_ms);
}

void WorkerSession::Refuse(const AssignedTask& task, const std::string& error, int64_t now_us) {
  ++counters_.tasks_refused;
  log::Warn("task.refused")
      .Kv("node", options_.node_name)
      .Kv("task", task.key.task_id)
      .Kv("attempt", task.key.attempt)
      .Kv("job", task.job_id)
      .Kv("error", error);
  FinishedTask finished;
  finished.key = task.key;
  finished.outcome = msg::Outcome::FAILED;
  finished.error = error;
  finished.started_us = finished.finished_us = clock_.NowUs();
  Finish(finished, task.job_id, now_us);
}

void WorkerSession::Finish(const FinishedTask& finished, uint64_t job_id, int64_t now_us) {
  const TaskKey& key = finished.key;
  running_.erase(key);
  capnp::MallocMessageBuilder builder;
  msg::TaskResult::Builder result = builder.initRoot<msg::TaskResult>();
  result.setTaskId(key.task_id);
  result.setAttempt(key.attempt);
  result.setOutcome(finished.outcome);
  result.setOutput(AsData(finished.output));
  result.setError(finished.error);
  result.setStartedUs(finished.started_us);
  result.setFinishedUs(finished.finished_us);
  result.setExitCode(finished.exit_code);
  result.setSignal(finished.signal);
  const msg::EncodedFrames frames = msg::Encode<msg::TaskResult>(builder);

  // On disk before it is sent: a worker killed before the Ack still has it after a restart.
  if (spool_.has_value()) {
    const kfleet::Status written = spool_->Write(key, frames);
    if (!written.ok()) {
      // Sending still beats losing it; only a restart before the Ack loses it now.
      ++counters_.spool_errors;
      log::Error("spool.write_failed")
          .Kv("node", options_.node_name)
          .Kv("task", key.task_id)
          .Kv("attempt", key.attempt)
          .Kv("error", written);
    }
  }
  Result<msg::DecodedMessage> decoded =
      msg::Decode(frames.header, frames.BodyBytes(), options_.limits);
  if (!decoded.ok()) {
    log::Error("task.result_unsendable")
        .Kv("node", options_.node_name)
        .Kv("task", key.task_id)
        .Kv("attempt", key.attempt)
        .Kv("error", decoded.status());
    return;
  }
  log::Event(finished.outcome == msg::Outcome::OK ? log::Level::kInfo : log::Level::kWarn,
             "task.finished")
      .Kv("node", options_.node_name)
      .Kv("task", key.task_id)
      .Kv("attempt", key.attempt)
      .Kv("job", job_id)
      .Kv("outcome", OutcomeName(finished.outcome))
      .Kv("ms", (finished.finished_us - finished.started_us) / 1000)
      .Kv("error", finished.error);
  auto [it, inserted] =
      unacked_.insert_or_assign(key, UnackedResult{std::move(decoded).value(), 0});
  if (state_ == SessionState::kRegistered) SendResult(key, it->second, now_us);
}

void WorkerSession::OnAck(msg::Ack::Reader ack) {
  const TaskKey key{ack.getTaskId(), ack.getAttempt()};
  auto it = unacked_.find(key);
  if (it == unacked_.end()) {
    log::Debug("task.ack_unknown")
        .Kv("node", options_.node_name)
        .Kv("task", key.task_id)
        .Kv("attempt", key.attempt);
    return;
  }
  unacked_.erase(it);
  ++counters_.results_acked;
  if (spool_.has_value()) {
    const kfleet::Status removed = spool_->Remove(key);
    if (!removed.ok()) {
      // Harmless beyond disk space: after a restart it is resent, acknowledged and ignored.
      ++counters_.spool_errors;
      log::Error("spool.remove_failed")
          .Kv("node", options_.node_name)
          .Kv("task", key.task_id)
          .Kv("attempt", key.attempt)
          .Kv("error", removed);
    }
  }
  log::Debug("task.acked")
      .Kv("node", options_.node_name)
      .Kv("task", key.task_id)
      .Kv("attempt", key.attempt);
}

void WorkerSession::OnCancel(msg::Cancel::Reader cancel) {
  const TaskKey key{cancel.getTaskId(), cancel.getAttempt()};
  const bool running = running_.count(key) != 0;
  log::Info(running ? "task.cancelling" : "task.cancel_ignored")
      .Kv("node", options_.node_name)
      .Kv("task", key.task_id)
      .Kv("attempt", key.attempt)
      .Kv("reason", ToString(cancel.getReason()));
  // Its cancelled result comes back from the executor like any other.
  if (running) executor_->Cancel(key);
}

void WorkerSession::Tick(int64_t now_us) {
  executor_->wakeup().Drain();
  for (const FinishedTask& finished : executor_->TakeFinished()) {
    auto running = running_.find(finished.key);
    Finish(finished, running != running_.end() ? running->second.job_id : 0, now_us);
  }
  switch (state_) {
    case SessionState::kDisconnected:
      if (now_us >= reconnect_at_us_) Connect(now_us);
      break;
    case SessionState::kRegistering:
      if (now_us >= register_deadline_us_) {
        Disconnect(now_us, "no reply to Register within " + FormatDuration(SilenceLimitUs()) +
                               "; is the coordinator running at that endpoint, and is this "
                               "worker's key authorized?");
      }
      break;
    case SessionState::kRegistered:
      if (now_us - last_heard_us_ >= SilenceLimitUs()) {
        PrintStatus("lost the coordinator (silent for " + FormatDuration(now_us - last_heard_us_) +
                        "); registering again, " + std::to_string(running_.size()) +
                        " tasks keep running",
                    /*problem=*/true);
        Disconnect(now_us, "coordinator silent for " + FormatDuration(now_us - last_heard_us_));
        break;
      }
      if (now_us >= next_heartbeat_us_) {
        SendHeartbeat();
        next_heartbeat_us_ = now_us + IntervalUs();
      }
      // A safety net for a result ZeroMQ could not take; duplicates are acknowledged and ignored.
      for (auto& [key, result] : unacked_) {
        if (now_us - result.last_sent_us >= SilenceLimitUs()) SendResult(key, result, now_us);
      }
      break;
    case SessionState::kStopped: break;
  }
}

int64_t WorkerSession::NextDeadlineUs() const {
  switch (state_) {
    case SessionState::kDisconnected: return reconnect_at_us_;
    case SessionState::kRegistering: return register_deadline_us_;
    case SessionState::kRegistered: {
      int64_t next = std::min(next_heartbeat_us_, last_heard_us_ + SilenceLimitUs());
      for (const auto& [key, result] : unacked_) {
        next = std::min(next, result.last_sent_us + SilenceLimitUs());
      }
      return next;
    }
    case SessionState::kStopped: break;
  }
  return std::numeric_limits<int64_t>::max();
}

Result<bool> RunSessionLoop(std::span<WorkerSession* const> sessions, Clock& clock, int stop_fd) {
  std::vector<zmq::pollitem_t> items;
  std::vector<WorkerSession*> socket_owners;
  while (true) {
    items.clear();
    socket_owners.clear();
    bool any_active = false;
    int64_t next_us = std::numeric_limits<int64_t>::max();
    std::set<int> wakeup_fds;  // executors may share one
    for (WorkerSession* session : sessions) {
      wakeup_fds.insert(session->wakeup_fd());
      if (session->stopped()) continue;
      any_active = true;
      next_us = std::min(next_us, session->NextDeadlineUs());
      if (zmq::socket_t* socket = session->socket()) {
        items.push_back({socket->handle(), 0, ZMQ_POLLIN, 0});
        socket_owners.push_back(session);
      }
    }
    if (!any_active) return false;
    for (const int fd : wakeup_fds) items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
    if (stop_fd >= 0) items.push_back({nullptr, stop_fd, ZMQ_POLLIN, 0});

    const int64_t now_us = clock.MonotonicUs();
    const int64_t wait_ms =
        next_us <= now_us ? 0 : std::min<int64_t>((next_us - now_us + 999) / 1000, kMaxPollMs);
    try {
      zmq::poll(items, std::chrono::milliseconds(wait_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      return IoError(std::string("worker poll loop: ") + e.what());
    }
    if (stop_fd >= 0 && (items.back().revents & ZMQ_POLLIN) != 0) return true;
    for (size_t i = 0; i < socket_owners.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) != 0) socket_owners[i]->OnReadable();
    }
    const int64_t after_us = clock.MonotonicUs();
    for (WorkerSession* session : sessions) session->Tick(after_us);
  }
}

}  // namespace kfleet::worker
