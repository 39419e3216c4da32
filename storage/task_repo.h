// Tasks: the subtasks (plan / code / test / profile) the scheduler leases to workers, and the
// record of every attempt. Each state change is one conditional UPDATE that reports whether it
// applied, so a duplicate or late message cannot apply twice: a result is accepted only from the
// attempt that holds the lease (at-least-once execution, exactly-once effect).
//
// Lease deadlines are Unix microseconds (Clock::NowUs) because they outlive the process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"
#include "storage/row_enums.h"

namespace kfleet::storage {

struct NewTask {
  int64_t job_id = 0;
  std::optional<int64_t> kernel_job_id;
  std::optional<int64_t> candidate_id;
  TaskKind kind = TaskKind::kEcho;
  double priority = 0;             // higher runs first
  std::optional<Backend> backend;  // nullopt: any backend
  std::string arch;                // empty: any architecture
  bool exclusive_device = false;   // profiling needs the device to itself
  int64_t min_memory_bytes = 0;
  std::string payload;  // a Cap'n Proto task body, opaque here
  int64_t timeout_ms = 60'000;
  int64_t max_attempts = 3;
};

struct TaskRow {
  int64_t id = 0;
  int64_t job_id = 0;
  std::optional<int64_t> kernel_job_id;
  std::optional<int64_t> candidate_id;
  TaskKind kind = TaskKind::kEcho;
  TaskState state = TaskState::kQueued;
  double priority = 0;
  std::optional<Backend> backend;
  std::string arch;
  bool exclusive_device = false;
  int64_t min_memory_bytes = 0;
  std::string payload;
  int64_t timeout_ms = 0;
  uint32_t attempt = 0;  // attempts started so far
  int64_t max_attempts = 0;
  std::optional<int64_t> node_id;  // the lease holder, or the last node for finished tasks
  std::optional<int64_t> lease_deadline_us;
  std::string result;  // empty until done
  std::string error;   // for failed tasks: every attempt's reason
  int64_t created_us = 0;
  int64_t updated_us = 0;
  std::optional<int64_t> finished_us;
};

struct TaskAttemptRow {
  int64_t task_id = 0;
  uint32_t attempt = 0;
  int64_t node_id = 0;
  int64_t started_us = 0;
  std::optional<int64_t> ended_us;
  std::optional<AttemptOutcome> outcome;  // nullopt while the attempt runs
  std::string reason;
};

struct LeasedTask {
  int64_t task_id = 0;
  uint32_t attempt = 0;
  int64_t node_id = 0;
  int64_t lease_deadline_us = 0;
};

// What a failed attempt did to its task: requeued (kQueued) or gave up (kFailed).
struct TaskTransition {
  int64_t task_id = 0;
  uint32_t attempt = 0;
  TaskState state = TaskState::kQueued;
};

struct TaskCounts {
  int64_t queued = 0;
  int64_t leased = 0;
  int64_t done = 0;
  int64_t failed = 0;
  int64_t cancelled = 0;
};

class TaskRepo {
 public:
  TaskRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  [[nodiscard]] Result<int64_t> Enqueue(const NewTask& task);
  // All or none, in one transaction; ids in the order given.
  [[nodiscard]] Result<std::vector<int64_t>> EnqueueMany(const std::vector<NewTask>& tasks);
  // Queued tasks by priority (highest first), FIFO within a priority.
  [[nodiscard]] Result<std::vector<TaskRow>> NextQueued(int limit);

  // The queued tasks that have waited longest (lowest ids), for the scheduler's ageing.
  [[nodiscard]] Result<std::vector<TaskRow>> OldestQueued(int limit);
  // queued -> leased to `node_id` until `lease_deadline_us`; returns the new attempt number,
  // or nullopt when the task was not queued (someone else leased it, or it finished).
  [[nodiscard]] Result<std::optional<uint32_t>> Lease(int64_t task_id, int64_t node_id,
                                                      int64_t lease_deadline_us);
  // Heartbeat: moves every lease of the node to `new_deadline_us` (never earlier). Returns the
  // number of leases extended.
  [[nodiscard]] Result<int64_t> ExtendLeases(int64_t node_id, int64_t new_deadline_us);
  // leased -> done, only for the attempt holding the lease; false (nothing changed) otherwise.
  [[nodiscard]] Result<bool> Complete(int64_t task_id, uint32_t attempt, std::string_view result);
  // Ends the attempt holding the lease with `outcome` (not kOk): back to queued while attempts
  // remain, else failed with every attempt's reason. nullopt when the attempt is stale.
  [[nodiscard]] Result<std::optional<TaskState>> Fail(int64_t task_id, uint32_t attempt,
                                                      AttemptOutcome outcome,
                                                      std::string_view reason);
  // Leases whose deadline is before `now_us`, earliest first (the caller Fails them).
  [[nodiscard]] Result<std::vector<LeasedTask>> ExpiredLeases(int64_t now_us);
  // Fails every lease a lost or removed node holds, in one transaction.
  [[nodiscard]] Result<std::vector<TaskTransition>> RequeueNode(int64_t node_id,
                                                                AttemptOutcome outcome,
                                                                std::string_view reason);
  // Cancels the job's queued and leased tasks; returns how many.
  [[nodiscard]] Result<int64_t> Cancel(int64_t job_id);

  [[nodiscard]] Result<TaskRow> Get(int64_t task_id);
  [[nodiscard]] Result<std::vector<TaskRow>> ListByJob(int64_t job_id);
  [[nodiscard]] Result<TaskCounts> CountsByState(int64_t job_id);
  // Whether any task of the job is still queued or leased (an index probe, not a count).
  [[nodiscard]] Result<bool> HasOpenTasks(int64_t job_id);
  // The same for one kernel job's tasks.
  [[nodiscard]] Result<bool> HasOpenKernelJobTasks(int64_t kernel_job_id);
  // Cancels the kernel job's queued tasks (running ones finish); returns how many.
  [[nodiscard]] Result<int64_t> CancelQueuedOfKernelJob(int64_t kernel_job_id);
  // Microseconds the attempts of a kernel job's tasks have run (finished attempts, plus running
  // ones up to `now_us`): what its search budget is charged.
  [[nodiscard]] Result<int64_t> KernelJobAttemptMicros(int64_t kernel_job_id, int64_t now_us);
  // Attempts of the job's tasks that ended and were followed by another attempt.
  [[nodiscard]] Result<int64_t> RetryCount(int64_t job_id);
  [[nodiscard]] Result<std::vector<TaskAttemptRow>> Attempts(int64_t task_id);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
