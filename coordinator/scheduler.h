// The pool and the queue: which workers are connected, what each can run, which task attempts
// they hold, and what to run next. It applies every decision to the store (inside the caller's
// batch) and queues the resulting messages in the outbox; it owns no sockets, so tests drive it
// with a real store and a fake clock.
//
// Lease deadlines live here, in memory, on the monotonic clock: heartbeats extend them many times a
// second across a fleet, and the store keeps only the lease itself (holder, attempt). After a
// restart every stored lease gets a recovery grace period instead (Recover).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/status.h"
#include "coordinator/outbox.h"
#include "messages/protocol.capnp.h"
#include "storage/store.h"

namespace kfleet::coordinator {

struct SchedulerOptions {
  int64_t heartbeat_interval_ms = 1000;
  int64_t liveness = 5;
  int64_t lease_ms = 5000;
  int64_t recovery_grace_ms = 10'000;
  int64_t aging_ms = 60'000;
  int64_t max_assign_per_round = 512;
};

// The three kinds of capacity a worker offers (protocol.capnp Slots).
enum class SlotClass { kCpu = 0, kGpuExclusive = 1, kCompile = 2 };
constexpr int kSlotClasses = 3;

struct DeviceOffer {
  storage::Backend backend = storage::Backend::kCpu;
  std::string arch;
  uint64_t memory_bytes = 0;
};

struct Session {
  std::string routing_id;
  int64_t node_id = 0;
  std::string name;
  std::string instance_id;
  bool draining = false;
  std::vector<DeviceOffer> devices;
  int64_t slots_total[kSlotClasses] = {0, 0, 0};
  int64_t slots_used[kSlotClasses] = {0, 0, 0};
  int64_t last_heard_us = 0;      // monotonic
  int64_t next_heartbeat_us = 0;  // monotonic
  uint64_t heartbeat_sequence = 0;
  // A CPU timing task owns the whole node: nothing else runs beside it, and while one waits for
  // the node to empty, no new task is placed there (else it would wait forever).
  int64_t whole_node_leases = 0;
  bool reserved = false;
  // A GPU timing task on a node with one GPU owns its GPU work: no GPU test (compile slot) runs
  // beside it, since a test's kernels and its CPU reference on every core disturb the timing,
  // and while one waits for the tests to finish no new one starts there. Plan / code tasks
  // (CPU slots) go on.
  int64_t quiet_gpu_leases = 0;
  bool gpu_reserved = false;

  int64_t Used() const {
    int64_t used = 0;
    for (int64_t u : slots_used) used += u;
    return used;
  }

  int64_t Free(SlotClass c) const {
    return slots_total[static_cast<int>(c)] - slots_used[static_cast<int>(c)];
  }
};

struct Lease {
  uint32_t attempt = 0;
  int64_t node_id = 0;
  int64_t job_id = 0;
  SlotClass slot = SlotClass::kCpu;
  std::string routing_id;   // the session holding it; empty until its worker re-registers
  int64_t deadline_us = 0;  // monotonic
  bool whole_node = false;  // a CPU timing task (WholeNode)
  bool quiet_gpu = false;   // a GPU timing task on a one-GPU node (QuietGpu)
};

// What `kfleet nodes` shows of a connected worker.
struct SessionView {
  int64_t node_id = 0;
  bool draining = false;
  int64_t slots_used[kSlotClasses] = {0, 0, 0};
  int64_t last_heard_age_ms = 0;
};

// Told of every task that ended for good: done, or failed with no attempt left. Called inside
// the batch that recorded it.
class TaskEndObserver {
 public:
  virtual ~TaskEndObserver() = default;
  virtual void TaskEnded(int64_t task_id, int64_t job_id) = 0;
};

class Scheduler {
 public:
  Scheduler(storage::Store& store, Clock& clock, Outbox& outbox, const SchedulerOptions& options);

  // After a start: every lease in the store waits recovery_grace_ms for its worker.
  [[nodiscard]] Status Recover();
  // After a failed batch (rolled back): forgets every session and recovers as after a start, so
  // memory cannot disagree with the store.
  [[nodiscard]] Status Resync();

  // Worker protocol. `user_id` is the ZAP identity (the key's name), empty when insecure.
  [[nodiscard]] Status OnRegister(const std::string& routing_id, const std::string& user_id,
                                  msg::Register::Reader request);
  [[nodiscard]] Status OnHeartbeat(const std::string& routing_id, msg::Heartbeat::Reader beat);
  [[nodiscard]] Status OnResult(const std::string& routing_id, msg::TaskResult::Reader result);
  [[nodiscard]] Status OnBye(const std::string& routing_id, std::string_view reason);
  // Any message from a peer counts as a sign of life.
  void Heard(const std::string& routing_id);

  // Timers: lost workers, expired leases, heartbeats out. Then new assignments.
  [[nodiscard]] Status Tick();
  [[nodiscard]] Status Dispatch();
  // Finishes jobs whose tasks have all ended (done, or failed when any task failed).
  [[nodiscard]] Status SettleJobs();

  // Operator actions. NotFound for an unknown node name.
  [[nodiscard]] Status Drain(const std::string& name);
  [[nodiscard]] Status Remove(const std::string& name, std::string_view reason, bool revoked);
  // Cancels the job's unfinished tasks and tells their workers; returns how many.
  [[nodiscard]] Result<int64_t> CancelJob(int64_t job_id);
  // Queues tasks and wakes the dispatcher; marks the job for settling.
  [[nodiscard]] Status JobSubmitted(int64_t job_id);

  void SetTaskEndObserver(TaskEndObserver* observer) { observer_ = observer; }
  // Slots of a class over every connected, non-draining worker.
  int64_t TotalSlots(SlotClass slot) const;

  std::optional<SessionView> ViewOf(int64_t node_id) const;
  size_t session_count() const { return sessions_.size(); }
  size_t lease_count() const { return leases_.size(); }
  // Monotonic microseconds until the next timer, at most one heartbeat interval.
  int64_t NextTimerUs() const;
  uint64_t epoch() const { return epoch_; }

 private:
  Session* SessionFor(const std::string& routing_id);
  Session* SessionNamed(const std::string& name);
  void Reject(const std::string& routing_id, msg::RejectReason reason, const std::string& text);
  // Ends a session: its leases are requeued with `reason`, the node marked `state`. `level`: a
  // lost worker is a warning, a goodbye or an operator's removal is not.
  [[nodiscard]] Status EndSession(const std::string& routing_id, storage::NodeState state,
                                  storage::AttemptOutcome outcome, std::string_view reason,
                                  log::Level level);
  void ReleaseSlot(const Lease& lease);
  // Ends one attempt that did not succeed; records a retry or the final failure.
  [[nodiscard]] Status FailAttempt(int64_t task_id, const Lease& lease,
                                   storage::AttemptOutcome outcome, std::string_view reason);
  // The session best placed to run `task` now, or nullptr.
  Session* Place(const storage::TaskRow& task, SlotClass slot);
  [[nodiscard]] Status Assign(const storage::TaskRow& task, Session& session, SlotClass slot);
  // Keeps new work off the least busy CPU node until the whole-node task can start there, or new
  // GPU tests off the least busy one-GPU node until the GPU timing task can start there.
  void Reserve(const storage::TaskRow& task);
  [[nodiscard]] Status Event(std::optional<int64_t> job_id, std::string_view kind,
                             const std::string& data_json);

  storage::Store& store_;
  Clock& clock_;
  Outbox& outbox_;
  SchedulerOptions options_;
  uint64_t epoch_;  // changes on every start, so workers can tell a restarted coordinator
  std::unordered_map<std::string, Session> sessions_;  // by routing id
  std::map<std::string, std::string> by_name_;         // node name -> routing id
  std::unordered_map<int64_t, Lease> leases_;          // by task id
  std::set<int64_t> unsettled_jobs_;                   // jobs whose tasks changed state
  std::set<int64_t> running_jobs_;                     // jobs known to be past 'queued'
  bool queue_changed_ = true;  // false after a round that found nothing to place
  TaskEndObserver* observer_ = nullptr;
};

// The slot a task needs: an exclusive device for timing, a compile slot for other GPU work, a CPU
// slot otherwise.
SlotClass SlotFor(const storage::TaskRow& task);
// Timing on the CPU needs the node to itself: an exclusive task for the CPU backend.
bool WholeNode(const storage::TaskRow& task);
// Timing on the GPU of a node with one GPU needs that node's GPU work to itself (Session).
bool QuietGpu(const storage::TaskRow& task, const Session& session);

}  // namespace kfleet::coordinator
