#include "coordinator/scheduler.h"

#include <capnp/serialize.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "common/log.h"

namespace kfleet::coordinator {
namespace {

using nlohmann::json;
using storage::AttemptOutcome;
using storage::Backend;
using storage::NodeState;

Backend ToBackend(msg::Backend backend) {
  switch (backend) {
    case msg::Backend::CUDA:
      return Backend::kCuda;
    case msg::Backend::HIP:
      return Backend::kHip;
    default:
      return Backend::kCpu;
  }
}

AttemptOutcome ToOutcome(msg::Outcome outcome) {
  switch (outcome) {
    case msg::Outcome::OK:
      return AttemptOutcome::kOk;
    case msg::Outcome::CRASHED:
      return AttemptOutcome::kCrashed;
    case msg::Outcome::TIMED_OUT:
      return AttemptOutcome::kTimedOut;
    case msg::Outcome::CANCELLED:
      return AttemptOutcome::kCancelled;
    default:
      return AttemptOutcome::kFailed;
  }
}

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// Node names appear in file names (keys) and logs: keep them plain.
bool IsValidNodeName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return name[0] != '-' && name[0] != '.';
}

std::string CapabilitiesBytes(msg::Capabilities::Reader capabilities) {
  capnp::MallocMessageBuilder builder;
  builder.setRoot(capabilities);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  kj::ArrayPtr<const char> bytes = words.asChars();
  return std::string(bytes.begin(), bytes.size());
}

uint64_t NewEpoch() {
  uint64_t epoch = 0;
  SystemRandom().Fill({reinterpret_cast<uint8_t*>(&epoch), sizeof(epoch)});
  return epoch;
}

}  // namespace

bool WholeNode(const storage::TaskRow& task) {
  return task.exclusive_device && task.backend == Backend::kCpu;
}

bool QuietGpu(const storage::TaskRow& task, const Session& session) {
  return task.exclusive_device && !WholeNode(task) && session.devices.size() == 1;
}

SlotClass SlotFor(const storage::TaskRow& task) {
  if (WholeNode(task)) return SlotClass::kCpu;
  if (task.exclusive_device) return SlotClass::kGpuExclusive;
  if (task.backend == Backend::kCuda || task.backend == Backend::kHip) return SlotClass::kCompile;
  return SlotClass::kCpu;
}

Scheduler::Scheduler(storage::Store& store, Clock& clock, Outbox& outbox,
                     const SchedulerOptions& options)
    : store_(store), clock_(clock), outbox_(outbox), options_(options), epoch_(NewEpoch()) {}

Status Scheduler::Recover() {
  KF_ASSIGN_OR_RETURN(std::vector<storage::LeasedTask> stored,
                      store_.tasks().ExpiredLeases(std::numeric_limits<int64_t>::max()));
  const int64_t deadline_us = clock_.MonotonicUs() + options_.recovery_grace_ms * 1000;
  leases_.clear();
  for (const storage::LeasedTask& lease : stored) {
    KF_ASSIGN_OR_RETURN(storage::TaskRow task, store_.tasks().Get(lease.task_id));
    leases_[lease.task_id] = Lease{lease.attempt, lease.node_id,  task.job_id, SlotFor(task), "",
                                   deadline_us,   WholeNode(task)};
  }
  KF_ASSIGN_OR_RETURN(std::vector<storage::JobRow> running,
                      store_.jobs().List(storage::JobState::kRunning));
  for (const storage::JobRow& job : running) {
    running_jobs_.insert(job.id);
    unsettled_jobs_.insert(job.id);
  }
  KF_ASSIGN_OR_RETURN(std::vector<storage::JobRow> queued,
                      store_.jobs().List(storage::JobState::kQueued));
  for (const storage::JobRow& job : queued) unsettled_jobs_.insert(job.id);
  log::Info("scheduler.recovered")
      .Kv("leases", static_cast<int64_t>(leases_.size()))
      .Kv("grace_ms", options_.recovery_grace_ms);
  return Status::Ok();
}

Status Scheduler::Resync() {
  // Like a restart: workers notice the silence, register again and reclaim their leases.
  sessions_.clear();
  by_name_.clear();
  running_jobs_.clear();
  unsettled_jobs_.clear();
  queue_changed_ = true;
  return Recover();
}

Session* Scheduler::SessionFor(const std::string& routing_id) {
  if (routing_id.empty()) return nullptr;
  auto it = sessions_.find(routing_id);
  return it == sessions_.end() ? nullptr : &it->second;
}

Session* Scheduler::SessionNamed(const std::string& name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : SessionFor(it->second);
}

void Scheduler::Reject(const std::string& routing_id, msg::RejectReason reason,
                       const std::string& text) {
  msg::Reject::Builder reject = outbox_.Add<msg::Reject>(Channel::kWorkers, routing_id);
  reject.setReason(reason);
  reject.setMessage(text);
  log::Warn("worker.rejected").Kv("reason", text);
}

Status Scheduler::Event(std::optional<int64_t> job_id, std::string_view kind,
                        const std::string& data_json) {
  return store_.events().Append(job_id, kind, data_json).status();
}

void Scheduler::Heard(const std::string& routing_id) {
  if (Session* session = SessionFor(routing_id)) session->last_heard_us = clock_.MonotonicUs();
}

Status Scheduler::OnRegister(const std::string& routing_id, const std::string& user_id,
                             msg::Register::Reader request) {
  msg::Capabilities::Reader capabilities = request.getCapabilities();
  const std::string name = Text(capabilities.getNodeName());
  const std::string instance_id = Text(request.getInstanceId());
  if (!IsValidNodeName(name)) {
    Reject(routing_id, msg::RejectReason::MALFORMED,
           "node name '" + name + "' is not valid: use 1-64 letters, digits, '-', '_' or '.'");
    return Status::Ok();
  }
  if (!user_id.empty() && user_id != name) {
    Reject(routing_id, msg::RejectReason::UNKNOWN_KEY,
           "this key was issued for node '" + user_id + "', not '" + name +
               "'; start the worker with the key file that `kfleet nodes invite " + name +
               "` wrote");
    return Status::Ok();
  }
  if (Session* holder = SessionNamed(name)) {
    if (holder->instance_id != instance_id) {
      Reject(routing_id, msg::RejectReason::DUPLICATE_NAME,
             "a worker named '" + name +
                 "' is already connected; stop it, or start this one with another --name");
      return Status::Ok();
    }
    // The same worker process on a new socket: its leases move to the new session below.
    const std::string old_routing_id = holder->routing_id;
    sessions_.erase(old_routing_id);
    for (auto& [task_id, lease] : leases_) {
      if (lease.routing_id == old_routing_id) lease.routing_id.clear();
    }
  }

  storage::NodeRegistration registration;
  registration.name = name;
  registration.hostname = Text(capabilities.getHostname());
  registration.capabilities = CapabilitiesBytes(capabilities);
  Session session;
  session.routing_id = routing_id;
  session.name = name;
  session.instance_id = instance_id;
  for (msg::Device::Reader gpu : capabilities.getGpus()) {
    storage::NewDevice device;
    device.idx = gpu.getIndex();
    device.backend = ToBackend(gpu.getBackend());
    device.name = Text(gpu.getName());
    device.arch = Text(gpu.getArch());
    device.memory_bytes = static_cast<int64_t>(gpu.getMemoryBytes());
    device.compute_units = gpu.getComputeUnits();
    registration.devices.push_back(device);
    session.devices.push_back({device.backend, device.arch, gpu.getMemoryBytes()});
  }
  msg::Slots::Reader slots = capabilities.getSlots();
  session.slots_total[static_cast<int>(SlotClass::kCpu)] = slots.getCpu();
  session.slots_total[static_cast<int>(SlotClass::kGpuExclusive)] = slots.getGpuExclusive();
  session.slots_total[static_cast<int>(SlotClass::kCompile)] = slots.getCompile();

  Result<storage::NodeRow> previous = store_.nodes().GetByName(name);
  const bool was_draining = previous.ok() && previous->state == NodeState::kDraining;
  KF_ASSIGN_OR_RETURN(session.node_id, store_.nodes().Upsert(registration));
  if (was_draining) {
    KF_RETURN_IF_ERROR(store_.nodes().SetState(session.node_id, NodeState::kDraining).status());
    session.draining = true;
  }

  // Reconcile: keep the leases the worker still holds, requeue the ones it lost.
  std::set<std::pair<int64_t, uint32_t>> held;
  for (msg::TaskRef::Reader ref : request.getRunningTasks()) {
    held.insert({static_cast<int64_t>(ref.getTaskId()), ref.getAttempt()});
  }
  for (msg::TaskRef::Reader ref : request.getFinishedTasks()) {
    held.insert({static_cast<int64_t>(ref.getTaskId()), ref.getAttempt()});
  }
  const int64_t now_us = clock_.MonotonicUs();
  std::vector<std::pair<int64_t, Lease>> lost;
  for (auto& [task_id, lease] : leases_) {
    if (lease.node_id != session.node_id) continue;
    if (held.count({task_id, lease.attempt})) {
      lease.routing_id = routing_id;
      lease.deadline_us = now_us + options_.lease_ms * 1000;
      ++session.slots_used[static_cast<int>(lease.slot)];
      if (lease.whole_node) ++session.whole_node_leases;
      // A lease recovered from the store does not know its node's GPUs until now.
      if (lease.slot == SlotClass::kGpuExclusive && session.devices.size() == 1) {
        lease.quiet_gpu = true;
      }
      if (lease.quiet_gpu) ++session.quiet_gpu_leases;
    } else {
      lost.push_back({task_id, lease});
    }
  }
  for (const auto& [task_id, lease] : lost) {
    leases_.erase(task_id);
    KF_RETURN_IF_ERROR(FailAttempt(task_id, lease, AttemptOutcome::kLost,
                                   "worker '" + name + "' came back without this task"));
  }
  for (msg::TaskRef::Reader ref : request.getRunningTasks()) {
    auto it = leases_.find(static_cast<int64_t>(ref.getTaskId()));
    if (it != leases_.end() && it->second.attempt == ref.getAttempt() &&
        it->second.node_id == session.node_id) {
      continue;
    }
    msg::Cancel::Builder cancel = outbox_.Add<msg::Cancel>(Channel::kWorkers, routing_id);
    cancel.setTaskId(ref.getTaskId());
    cancel.setAttempt(ref.getAttempt());
    cancel.setReason("stale: this attempt no longer holds the task's lease");
  }

  msg::Welcome::Builder welcome = outbox_.Add<msg::Welcome>(Channel::kWorkers, routing_id);
  welcome.setNodeId(static_cast<uint64_t>(session.node_id));
  welcome.setHeartbeatIntervalMs(static_cast<uint32_t>(options_.heartbeat_interval_ms));
  welcome.setLiveness(static_cast<uint32_t>(options_.liveness));
  welcome.setCoordinatorEpoch(epoch_);

  session.last_heard_us = now_us;
  session.next_heartbeat_us = now_us + options_.heartbeat_interval_ms * 1000;
  log::Info("worker.registered")
      .Kv("node", name)
      .Kv("node_id", session.node_id)
      .Kv("cpu_slots", slots.getCpu())
      .Kv("gpus", static_cast<int64_t>(session.devices.size()))
      .Kv("kept_leases", static_cast<int64_t>(held.size()))
      .Kv("lost_leases", static_cast<int64_t>(lost.size()));
  KF_RETURN_IF_ERROR(Event(std::nullopt, "node.registered",
                           json{{"node", name}, {"node_id", session.node_id}}.dump()));
  by_name_[name] = routing_id;
  sessions_[routing_id] = std::move(session);
  queue_changed_ = true;
  return Status::Ok();
}

Status Scheduler::OnHeartbeat(const std::string& routing_id, msg::Heartbeat::Reader beat) {
  Session* session = SessionFor(routing_id);
  if (session == nullptr) return Status::Ok();  // not registered (yet, or any more): ignored
  const int64_t deadline_us = clock_.MonotonicUs() + options_.lease_ms * 1000;
  for (msg::TaskRef::Reader ref : beat.getRunningTasks()) {
    auto it = leases_.find(static_cast<int64_t>(ref.getTaskId()));
    if (it == leases_.end() || it->second.attempt != ref.getAttempt() ||
        it->second.node_id != session->node_id) {
      continue;
    }
    it->second.deadline_us = deadline_us;
  }
  return Status::Ok();
}

Status Scheduler::FailAttempt(int64_t task_id, const Lease& lease, AttemptOutcome outcome,
                              std::string_view reason) {
  KF_ASSIGN_OR_RETURN(std::optional<storage::TaskState> state,
                      store_.tasks().Fail(task_id, lease.attempt, outcome, reason));
  if (!state.has_value()) return Status::Ok();  // stale: the task moved on already
  unsettled_jobs_.insert(lease.job_id);
  queue_changed_ = true;
  const bool final = *state == storage::TaskState::kFailed;
  if (final && observer_ != nullptr) observer_->TaskEnded(task_id, lease.job_id);
  log::Warn(final ? "task.failed" : "task.retry")
      .Kv("task", task_id)
      .Kv("attempt", static_cast<int64_t>(lease.attempt))
      .Kv("job", lease.job_id)
      .Kv("outcome", storage::Name(outcome))
      .Kv("reason", reason);
  return Event(lease.job_id, final ? "task.failed" : "task.retry",
               json{{"task", task_id},
                    {"attempt", lease.attempt},
                    {"outcome", storage::Name(outcome)},
                    {"reason", reason}}
                   .dump());
}

void Scheduler::ReleaseSlot(const Lease& lease) {
  if (Session* session = SessionFor(lease.routing_id)) {
    int64_t& used = session->slots_used[static_cast<int>(lease.slot)];
    if (used > 0) --used;
    if (lease.whole_node && session->whole_node_leases > 0) --session->whole_node_leases;
    if (lease.quiet_gpu && session->quiet_gpu_leases > 0) --session->quiet_gpu_leases;
    queue_changed_ = true;
  }
}

Status Scheduler::OnResult(const std::string& routing_id, msg::TaskResult::Reader result) {
  const auto task_id = static_cast<int64_t>(result.getTaskId());
  const uint32_t attempt = result.getAttempt();
  // Whatever happens below, the worker may forget the result once this batch commits.
  msg::Ack::Builder ack = outbox_.Add<msg::Ack>(Channel::kWorkers, routing_id);
  ack.setTaskId(result.getTaskId());
  ack.setAttempt(attempt);

  auto it = leases_.find(task_id);
  if (it == leases_.end() || it->second.attempt != attempt) {
    log::Debug("task.result_stale")
        .Kv("task", task_id)
        .Kv("attempt", static_cast<int64_t>(attempt));
    return Status::Ok();
  }
  Lease lease = it->second;
  leases_.erase(it);
  ReleaseSlot(lease);
  const AttemptOutcome outcome = ToOutcome(result.getOutcome());
  if (outcome == AttemptOutcome::kOk) {
    capnp::Data::Reader output = result.getOutput();
    KF_ASSIGN_OR_RETURN(
        bool applied,
        store_.tasks().Complete(
            task_id, attempt,
            std::string_view(reinterpret_cast<const char*>(output.begin()), output.size())));
    if (applied) {
      unsettled_jobs_.insert(lease.job_id);
      if (observer_ != nullptr) observer_->TaskEnded(task_id, lease.job_id);
    }
    return Status::Ok();
  }
  std::string reason = Text(result.getError());
  if (outcome == AttemptOutcome::kCrashed && reason.empty()) {
    reason = "killed by signal " + std::to_string(result.getSignal());
  }
  if (reason.empty()) reason = std::string(storage::Name(outcome));
  return FailAttempt(task_id, lease, outcome, reason);
}

Status Scheduler::EndSession(const std::string& routing_id, NodeState state, AttemptOutcome outcome,
                             std::string_view reason, log::Level level) {
  Session* session = SessionFor(routing_id);
  if (session == nullptr) return Status::Ok();
  const int64_t node_id = session->node_id;
  const std::string name = session->name;
  std::vector<std::pair<int64_t, Lease>> held;
  for (const auto& [task_id, lease] : leases_) {
    if (lease.node_id == node_id) held.push_back({task_id, lease});
  }
  for (const auto& [task_id, lease] : held) {
    leases_.erase(task_id);
    KF_RETURN_IF_ERROR(FailAttempt(task_id, lease, outcome, reason));
  }
  KF_RETURN_IF_ERROR(store_.nodes().SetState(node_id, state).status());
  KF_RETURN_IF_ERROR(Event(std::nullopt, "node." + std::string(storage::Name(state)),
                           json{{"node", name}, {"reason", reason}}.dump()));
  log::Event(level, "worker.session_ended")
      .Kv("node", name)
      .Kv("state", storage::Name(state))
      .Kv("requeued", static_cast<int64_t>(held.size()))
      .Kv("reason", reason);
  by_name_.erase(name);
  sessions_.erase(routing_id);
  queue_changed_ = true;
  return Status::Ok();
}

Status Scheduler::OnBye(const std::string& routing_id, std::string_view reason) {
  Session* session = SessionFor(routing_id);
  if (session == nullptr) return Status::Ok();
  return EndSession(routing_id, NodeState::kLost, AttemptOutcome::kLost,
                    "worker '" + session->name + "' stopped: " + std::string(reason),
                    log::Level::kInfo);
}

Status Scheduler::Tick() {
  const int64_t now_us = clock_.MonotonicUs();
  const int64_t silence_limit_us = options_.liveness * options_.heartbeat_interval_ms * 1000;
  std::vector<std::string> silent;
  for (auto& [routing_id, session] : sessions_) {
    if (now_us - session.last_heard_us > silence_limit_us) {
      silent.push_back(routing_id);
      continue;
    }
    if (now_us >= session.next_heartbeat_us) {
      msg::Heartbeat::Builder beat = outbox_.Add<msg::Heartbeat>(Channel::kWorkers, routing_id);
      beat.setSequence(++session.heartbeat_sequence);
      beat.setSentUs(clock_.NowUs());
      session.next_heartbeat_us = now_us + options_.heartbeat_interval_ms * 1000;
    }
  }
  for (const std::string& routing_id : silent) {
    const std::string name = sessions_[routing_id].name;
    KF_RETURN_IF_ERROR(EndSession(
        routing_id, NodeState::kLost, AttemptOutcome::kLost,
        "worker '" + name + "' missed " + std::to_string(options_.liveness) + " heartbeats",
        log::Level::kWarn));
  }
  std::vector<std::pair<int64_t, Lease>> expired;
  for (const auto& [task_id, lease] : leases_) {
    if (lease.deadline_us < now_us) expired.push_back({task_id, lease});
  }
  for (const auto& [task_id, lease] : expired) {
    leases_.erase(task_id);
    ReleaseSlot(lease);
    const std::string why = lease.routing_id.empty()
                                ? "its worker did not come back after the coordinator restarted"
                                : "its worker stopped reporting it";
    KF_RETURN_IF_ERROR(FailAttempt(task_id, lease, AttemptOutcome::kLost, "lease expired: " + why));
  }
  return Status::Ok();
}

Session* Scheduler::Place(const storage::TaskRow& task, SlotClass slot) {
  Session* best = nullptr;
  const bool whole_node = WholeNode(task);
  for (auto& [routing_id, session] : sessions_) {
    if (session.draining || session.Free(slot) <= 0) continue;
    if (session.whole_node_leases > 0) continue;
    if (whole_node ? session.Used() > 0 : session.reserved) continue;
    if (QuietGpu(task, session)) {
      if (session.slots_used[static_cast<int>(SlotClass::kCompile)] > 0) continue;
    } else if (slot == SlotClass::kCompile &&
               (session.quiet_gpu_leases > 0 || session.gpu_reserved)) {
      continue;
    }
    if (slot != SlotClass::kCpu) {
      const bool has_device =
          std::any_of(session.devices.begin(), session.devices.end(), [&](const DeviceOffer& d) {
            return d.backend == task.backend && (task.arch.empty() || task.arch == d.arch) &&
                   d.memory_bytes >= static_cast<uint64_t>(task.min_memory_bytes);
          });
      if (!has_device) continue;
    }
    if (best == nullptr || session.Free(slot) > best->Free(slot)) best = &session;
  }
  return best;
}

void Scheduler::Reserve(const storage::TaskRow& task) {
  Session* pick = nullptr;
  if (WholeNode(task)) {
    for (auto& [routing_id, session] : sessions_) {
      if (session.draining || session.reserved || session.slots_total[0] <= 0) continue;
      if (pick == nullptr || session.Used() < pick->Used()) pick = &session;
    }
    if (pick != nullptr) pick->reserved = true;
    return;
  }
  // A GPU timing task: a one-GPU node with that GPU and a free timing slot, the fewest tests
  // first (nodes with several GPUs run tests on the others and need no reservation).
  for (auto& [routing_id, session] : sessions_) {
    if (session.draining || session.gpu_reserved || !QuietGpu(task, session)) continue;
    if (session.Free(SlotClass::kGpuExclusive) <= 0 || session.whole_node_leases > 0) continue;
    const DeviceOffer& gpu = session.devices.front();
    if (gpu.backend != task.backend || (!task.arch.empty() && task.arch != gpu.arch) ||
        gpu.memory_bytes < static_cast<uint64_t>(task.min_memory_bytes)) {
      continue;
    }
    const auto tests = [](const Session& s) {
      return s.slots_used[static_cast<int>(SlotClass::kCompile)];
    };
    if (pick == nullptr || tests(session) < tests(*pick)) pick = &session;
  }
  if (pick != nullptr) pick->gpu_reserved = true;
}

int64_t Scheduler::TotalSlots(SlotClass slot) const {
  int64_t total = 0;
  for (const auto& [routing_id, session] : sessions_) {
    if (!session.draining) total += session.slots_total[static_cast<int>(slot)];
  }
  return total;
}

Status Scheduler::Assign(const storage::TaskRow& task, Session& session, SlotClass slot) {
  const int64_t deadline_wall_us = clock_.NowUs() + options_.lease_ms * 1000;
  KF_ASSIGN_OR_RETURN(std::optional<uint32_t> attempt,
                      store_.tasks().Lease(task.id, session.node_id, deadline_wall_us));
  if (!attempt.has_value()) return Status::Ok();  // no longer queued
  leases_[task.id] = Lease{*attempt,           session.node_id,
                           task.job_id,        slot,
                           session.routing_id, clock_.MonotonicUs() + options_.lease_ms * 1000,
                           WholeNode(task),    QuietGpu(task, session)};
  ++session.slots_used[static_cast<int>(slot)];
  if (WholeNode(task)) {
    ++session.whole_node_leases;
    session.reserved = false;
  }
  if (QuietGpu(task, session)) {
    ++session.quiet_gpu_leases;
    session.gpu_reserved = false;
  }
  if (running_jobs_.insert(task.job_id).second) {
    KF_ASSIGN_OR_RETURN(bool started,
                        store_.jobs().SetState(task.job_id, storage::JobState::kRunning));
    if (started) KF_RETURN_IF_ERROR(Event(task.job_id, "job.running", "{}"));
  }

  msg::Assign::Builder assign = outbox_.Add<msg::Assign>(Channel::kWorkers, session.routing_id);
  assign.setTaskId(static_cast<uint64_t>(task.id));
  assign.setAttempt(*attempt);
  assign.setJobId(static_cast<uint64_t>(task.job_id));
  assign.setKind(std::string(storage::Name(task.kind)));
  msg::Requirements::Builder requirements = assign.initRequirements();
  requirements.setBackend(task.backend == Backend::kCuda  ? msg::Backend::CUDA
                          : task.backend == Backend::kHip ? msg::Backend::HIP
                                                          : msg::Backend::CPU);
  requirements.setArch(task.arch);
  requirements.setExclusiveDevice(task.exclusive_device);
  requirements.setMinMemoryBytes(static_cast<uint64_t>(task.min_memory_bytes));
  assign.setLeaseMs(static_cast<uint32_t>(options_.lease_ms));
  assign.setTimeoutMs(static_cast<uint32_t>(task.timeout_ms));
  assign.setPayload(
      kj::arrayPtr(reinterpret_cast<const capnp::byte*>(task.payload.data()), task.payload.size()));
  log::Debug("task.assigned")
      .Kv("task", task.id)
      .Kv("attempt", static_cast<int64_t>(*attempt))
      .Kv("node", session.name);
  return Status::Ok();
}

Status Scheduler::Dispatch() {
  if (!queue_changed_) return Status::Ok();
  int64_t free_slots = 0;
  for (const auto& [routing_id, session] : sessions_) {
    if (session.draining) continue;
    for (int c = 0; c < kSlotClasses; ++c)
      free_slots += std::max<int64_t>(0, session.Free(SlotClass(c)));
  }
  if (free_slots == 0) {
    queue_changed_ = false;
    return Status::Ok();
  }
  const int limit = static_cast<int>(std::min(options_.max_assign_per_round, 4 * free_slots));
  KF_ASSIGN_OR_RETURN(std::vector<storage::TaskRow> candidates, store_.tasks().NextQueued(limit));
  KF_ASSIGN_OR_RETURN(std::vector<storage::TaskRow> oldest,
                      store_.tasks().OldestQueued(std::min(limit, 32)));
  std::set<int64_t> seen;
  for (const storage::TaskRow& task : candidates) seen.insert(task.id);
  for (storage::TaskRow& task : oldest) {
    if (seen.insert(task.id).second) candidates.push_back(std::move(task));
  }
  // Ageing: waiting aging_ms is worth one priority level, so old work eventually wins.
  const int64_t now_wall_us = clock_.NowUs();
  auto score = [&](const storage::TaskRow& task) {
    return task.priority +
           static_cast<double>(now_wall_us - task.created_us) / (options_.aging_ms * 1000.0);
  };
  std::stable_sort(
      candidates.begin(), candidates.end(),
      [&](const storage::TaskRow& a, const storage::TaskRow& b) { return score(a) > score(b); });
  int64_t placed = 0;
  // Reservations are decided again every round, in priority order.
  for (auto& [routing_id, session] : sessions_) {
    session.reserved = false;
    session.gpu_reserved = false;
  }
  for (const storage::TaskRow& task : candidates) {
    const SlotClass slot = SlotFor(task);
    Session* session = Place(task, slot);
    if (session == nullptr) {
      if (task.exclusive_device) Reserve(task);
      continue;
    }
    KF_RETURN_IF_ERROR(Assign(task, *session, slot));
    ++placed;
    if (--free_slots == 0) break;
  }
  // Nothing placeable: wait for a change (new tasks, freed slots, new workers) before looking
  // again.
  if (placed == 0) queue_changed_ = false;
  return Status::Ok();
}

Status Scheduler::SettleJobs() {
  for (int64_t job_id : std::exchange(unsettled_jobs_, {})) {
    // Cheap for a job with work left; the full count runs once, when it may be finished.
    KF_ASSIGN_OR_RETURN(bool open, store_.tasks().HasOpenTasks(job_id));
    if (open) continue;
    // A model job moves between phases with no task open for a moment; the conductor ends it.
    KF_ASSIGN_OR_RETURN(storage::JobRow job, store_.jobs().Get(job_id));
    if (job.kind == storage::JobKind::kModel) continue;
    KF_ASSIGN_OR_RETURN(storage::TaskCounts counts, store_.tasks().CountsByState(job_id));
    const storage::JobState state =
        counts.failed > 0 ? storage::JobState::kFailed : storage::JobState::kDone;
    const std::string error =
        counts.failed > 0 ? std::to_string(counts.failed) + " task(s) failed after retries" : "";
    KF_ASSIGN_OR_RETURN(bool finished, store_.jobs().SetState(job_id, state, error));
    running_jobs_.erase(job_id);
    if (!finished) continue;  // already finished (cancelled)
    KF_RETURN_IF_ERROR(Event(
        job_id, "job.finished",
        json{{"state", storage::Name(state)}, {"done", counts.done}, {"failed", counts.failed}}
            .dump()));
    log::Info("job.finished").Kv("job", job_id).Kv("state", storage::Name(state));
  }
  return Status::Ok();
}

Status Scheduler::JobSubmitted(int64_t job_id) {
  unsettled_jobs_.insert(job_id);
  queue_changed_ = true;
  return Status::Ok();
}

Status Scheduler::Drain(const std::string& name) {
  KF_ASSIGN_OR_RETURN(storage::NodeRow node, store_.nodes().GetByName(name));
  KF_RETURN_IF_ERROR(store_.nodes().SetState(node.id, NodeState::kDraining).status());
  KF_RETURN_IF_ERROR(Event(std::nullopt, "node.draining", json{{"node", name}}.dump()));
  if (Session* session = SessionNamed(name)) {
    session->draining = true;
    msg::Drain::Builder drain = outbox_.Add<msg::Drain>(Channel::kWorkers, session->routing_id);
    drain.setReason("drained by an operator: finish running tasks, no new ones");
  }
  return Status::Ok();
}

Status Scheduler::Remove(const std::string& name, std::string_view reason, bool revoked) {
  KF_ASSIGN_OR_RETURN(storage::NodeRow node, store_.nodes().GetByName(name));
  Session* session = SessionNamed(name);
  if (session != nullptr) {
    const std::string routing_id = session->routing_id;
    if (revoked) {
      Reject(routing_id, msg::RejectReason::REVOKED, std::string(reason));
    } else {
      outbox_.Add<msg::Bye>(Channel::kWorkers, routing_id).setReason(std::string(reason));
    }
    return EndSession(routing_id, NodeState::kRemoved, AttemptOutcome::kLost, reason,
                      log::Level::kInfo);
  }
  // Not connected: leases it held across a restart are requeued now rather than after the grace.
  std::vector<std::pair<int64_t, Lease>> held;
  for (const auto& [task_id, lease] : leases_) {
    if (lease.node_id == node.id) held.push_back({task_id, lease});
  }
  for (const auto& [task_id, lease] : held) {
    leases_.erase(task_id);
    KF_RETURN_IF_ERROR(FailAttempt(task_id, lease, AttemptOutcome::kLost, reason));
  }
  KF_RETURN_IF_ERROR(store_.nodes().SetState(node.id, NodeState::kRemoved).status());
  return Event(std::nullopt, "node.removed", json{{"node", name}, {"reason", reason}}.dump());
}

Result<int64_t> Scheduler::CancelJob(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(storage::JobRow job, store_.jobs().Get(job_id));
  KF_ASSIGN_OR_RETURN(int64_t cancelled, store_.tasks().Cancel(job_id));
  std::vector<int64_t> held;
  for (const auto& [task_id, lease] : leases_) {
    if (lease.job_id == job_id) held.push_back(task_id);
  }
  for (int64_t task_id : held) {
    const Lease lease = leases_[task_id];
    leases_.erase(task_id);
    ReleaseSlot(lease);
    if (lease.routing_id.empty()) continue;
    msg::Cancel::Builder cancel = outbox_.Add<msg::Cancel>(Channel::kWorkers, lease.routing_id);
    cancel.setTaskId(static_cast<uint64_t>(task_id));
    cancel.setAttempt(lease.attempt);
    cancel.setReason("job " + std::to_string(job_id) + " was cancelled");
  }
  KF_ASSIGN_OR_RETURN(bool changed, store_.jobs().SetState(job_id, storage::JobState::kCancelled));
  running_jobs_.erase(job_id);
  if (changed) {
    KF_RETURN_IF_ERROR(Event(job_id, "job.cancelled", json{{"tasks", cancelled}}.dump()));
  }
  log::Info("job.cancelled").Kv("job", job.id).Kv("tasks", cancelled);
  return cancelled;
}

std::optional<SessionView> Scheduler::ViewOf(int64_t node_id) const {
  for (const auto& [routing_id, session] : sessions_) {
    if (session.node_id != node_id) continue;
    SessionView view;
    view.node_id = node_id;
    view.draining = session.draining;
    std::copy(std::begin(session.slots_used), std::end(session.slots_used), view.slots_used);
    view.last_heard_age_ms = (clock_.MonotonicUs() - session.last_heard_us) / 1000;
    return view;
  }
  return std::nullopt;
}

int64_t Scheduler::NextTimerUs() const {
  const int64_t now_us = clock_.MonotonicUs();
  int64_t next_us = now_us + options_.heartbeat_interval_ms * 1000;
  for (const auto& [routing_id, session] : sessions_) {
    next_us = std::min(next_us, session.next_heartbeat_us);
  }
  for (const auto& [task_id, lease] : leases_) next_us = std::min(next_us, lease.deadline_us);
  return std::max<int64_t>(0, next_us - now_us);
}

}  // namespace kfleet::coordinator
