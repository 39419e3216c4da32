// Runs assigned tasks. A TaskExecutor starts tasks without blocking and hands each finished one
// back through a thread-safe queue; the session's poll loop learns that something finished from
// a WakeupFd (an eventfd it polls next to its socket), then calls TakeFinished().
//
// Two executors:
//  - ProcessTaskExecutor (kfleet-worker): every task is a child process
//    `kfleet-worker run-task --kind K --task-id N --attempt A [--device D]`, in its own process
//    group, with the worker's environment (CUDA_VISIBLE_DEVICES included, so device numbers mean
//    the same cards), payload on stdin, output on stdout, error text on stderr; one thread per
//    running task waits for it.
//  - InProcessTaskExecutor (`kfleet bench dispatch`, many workers in one process): echo tasks run
//  on
//    a small shared thread pool; a crash or hang becomes a failure, since neither may happen to a
//    process that serves other workers.
#pragma once

#include <atomic>
#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "messages/protocol.capnp.h"

namespace kfleet::worker {

// One execution of a task: a retry has a higher attempt.
struct TaskKey {
  uint64_t task_id = 0;
  uint32_t attempt = 0;
  auto operator<=>(const TaskKey&) const = default;
};

// What an Assign asks for, copied out of the message.
struct AssignedTask {
  TaskKey key;
  uint64_t job_id = 0;
  std::string kind;         // "echo" or a kernel task kind (kernel_tasks.h)
  uint32_t timeout_ms = 0;  // wall-clock limit; 0 = none
  std::string payload;      // kind-specific input bytes
  int device = -1;          // the GPU the session gave a CUDA task (run-task --device); -1: none
};

// How an attempt ended; becomes a TaskResult message.
struct FinishedTask {
  TaskKey key;
  msg::Outcome outcome = msg::Outcome::FAILED;
  std::string output;       // outcome ok: the task's output bytes
  std::string error;        // otherwise: what went wrong, for a person
  int64_t started_us = 0;   // wall clock
  int64_t finished_us = 0;  // wall clock
  int32_t exit_code = 0;    // when the process exited
  int32_t signal = 0;       // when it was killed by a signal
};

// An eventfd that a poll loop watches: Notify() makes it readable, Drain() resets it. One may be
// shared by many executors, so a benchmark with 1000 sessions polls one fd instead of 1000.
class WakeupFd {
 public:
  [[nodiscard]] static Result<std::shared_ptr<WakeupFd>> Create();
  ~WakeupFd();
  WakeupFd(const WakeupFd&) = delete;
  WakeupFd& operator=(const WakeupFd&) = delete;

  int fd() const { return fd_; }
  void Notify();
  void Drain();

 private:
  explicit WakeupFd(int fd) : fd_(fd) {}
  int fd_;
};

// Finished tasks on their way from executor threads to the session. Shared with work still in
// flight, so a late finisher never touches a destroyed executor.
class FinishedQueue {
 public:
  explicit FinishedQueue(std::shared_ptr<WakeupFd> wakeup) : wakeup_(std::move(wakeup)) {}

  void Push(FinishedTask task);
  std::vector<FinishedTask> TakeAll();
  WakeupFd& wakeup() { return *wakeup_; }

 private:
  std::shared_ptr<WakeupFd> wakeup_;
  std::mutex mutex_;
  std::vector<FinishedTask> tasks_;  // guarded by mutex_
};

class TaskExecutor {
 public:
  virtual ~TaskExecutor() = default;

  // Whether Start accepts tasks of `kind` at all.
  virtual bool Runs(std::string_view kind) const = 0;
  // Starts the task and returns at once. An error means it was not started (a kind this worker
  // cannot run, a payload it cannot read, no thread); the caller reports it as a failed attempt.
  [[nodiscard]] virtual Status Start(const AssignedTask& task) = 0;
  // Kills the attempt; it finishes with outcome cancelled (or with whatever it finished with
  // first). Unknown keys are ignored.
  virtual void Cancel(const TaskKey& key) = 0;
  // Cancels everything still running; their results are dropped, never queued.
  virtual void CancelAll() = 0;
  // Every attempt that finished since the last call. Thread-safe.
  virtual std::vector<FinishedTask> TakeFinished() = 0;
  // Becomes readable when TakeFinished has something; the caller drains it before taking.
  virtual WakeupFd& wakeup() = 0;
};

// The message a worker sends for a kind it cannot run.
Status UnknownKindError(std::string_view kind);

struct ProcessExecutorOptions {
  // The kfleet-worker binary; /proc/self/exe re-executes the running worker.
  std::filesystem::path program = "/proc/self/exe";
  std::filesystem::path cwd;        // the children's working directory; empty: the worker's
  ProcessRunner* runner = nullptr;  // null: SystemProcessRunner(); tests inject crashes and hangs
  Clock* clock = nullptr;           // timestamps; null: SystemClock()
  size_t max_output_bytes = size_t{16} << 20;  // more is a failed attempt, not a silent cut
  size_t max_error_bytes = size_t{8} << 10;    // of stderr kept in TaskResult.error
};

class ProcessTaskExecutor final : public TaskExecutor {
 public:
  ProcessTaskExecutor(ProcessExecutorOptions options, std::shared_ptr<WakeupFd> wakeup);
  // Kills every child and waits for their threads.
  ~ProcessTaskExecutor() override;

  // echo and the kernel search's plan / code / test / profile.
  bool Runs(std::string_view kind) const override;
  [[nodiscard]] Status Start(const AssignedTask& task) override;
  void Cancel(const TaskKey& key) override;
  void CancelAll() override;
  std::vector<FinishedTask> TakeFinished() override;
  WakeupFd& wakeup() override { return queue_->wakeup(); }

 private:
  struct Running {
    std::atomic<bool> cancel{false};
    bool dropped = false;  // CancelAll: do not queue the result; guarded by mutex_
    bool done = false;     // the thread has nothing left to do but return; guarded by mutex_
    std::thread thread;
  };
  void RunTask(AssignedTask task, Running* running);
  // Joins threads that finished; never blocks for long since they are about to return.
  void JoinDone();

  ProcessExecutorOptions options_;
  std::shared_ptr<FinishedQueue> queue_;
  std::mutex mutex_;
  std::map<TaskKey, std::unique_ptr<Running>> running_;  // guarded by mutex_
};

// What becomes of a finished child, separate from the executor so that it is tested alone.
FinishedTask ToFinishedTask(const TaskKey& key, const Result<ProcessResult>& run,
                            const ProcessExecutorOptions& options);

// A few threads shared by many InProcessTaskExecutors. Each task waits out its delay in a timer
// heap, not on a thread, so 1000 workers with slow tasks need no more threads than the pool has.
class InProcessTaskPool {
 public:
  [[nodiscard]] static Result<std::unique_ptr<InProcessTaskPool>> Create(size_t threads);
  // Stops the threads; work not yet due is dropped. Destroy the executors that use it first.
  ~InProcessTaskPool();
  InProcessTaskPool(const InProcessTaskPool&) = delete;
  InProcessTaskPool& operator=(const InProcessTaskPool&) = delete;

  // Runs `work` on a pool thread once `due` has passed.
  void Schedule(std::chrono::steady_clock::time_point due, std::function<void()> work);

 private:
  InProcessTaskPool() = default;
  void Serve();

  struct Item {
    std::chrono::steady_clock::time_point due;
    uint64_t sequence;  // first in, first out among equal due times
    std::function<void()> work;
  };
  struct Later {
    bool operator()(const Item& a, const Item& b) const {
      return a.due != b.due ? a.due > b.due : a.sequence > b.sequence;
    }
  };

  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Item> heap_;  // guarded by mutex_; a min-heap by Later
  uint64_t sequence_ = 0;   // guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  std::vector<std::thread> threads_;
};

class InProcessTaskExecutor final : public TaskExecutor {
 public:
  // `pool` must outlive the executor.
  InProcessTaskExecutor(InProcessTaskPool& pool, std::shared_ptr<WakeupFd> wakeup,
                        Clock& clock = SystemClock());
  // Tasks still pending are dropped.
  ~InProcessTaskExecutor() override;

  bool Runs(std::string_view kind) const override { return kind == "echo"; }
  [[nodiscard]] Status Start(const AssignedTask& task) override;
  void Cancel(const TaskKey& key) override;
  void CancelAll() override;
  std::vector<FinishedTask> TakeFinished() override;
  WakeupFd& wakeup() override { return state_->queue.wakeup(); }

 private:
  // Shared with scheduled work: whoever removes a key from `pending` first reports that attempt.
  struct State {
    explicit State(std::shared_ptr<WakeupFd> wakeup) : queue(std::move(wakeup)) {}
    FinishedQueue queue;
    std::mutex mutex;
    std::map<TaskKey, int64_t> pending;  // started_us by attempt; guarded by mutex
  };

  InProcessTaskPool& pool_;
  Clock& clock_;
  std::shared_ptr<State> state_;
};

}  // namespace kfleet::worker
