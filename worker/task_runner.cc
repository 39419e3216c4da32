#include "worker/task_runner.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

#include "common/log.h"
#include "worker/kernel_tasks.h"

namespace kfleet::worker {
namespace {

// Error text travels in a Cap'n Proto Text field and into logs: keep it printable and bounded.
std::string Printable(std::string_view bytes, size_t max_bytes) {
  std::string text;
  const size_t kept = std::min(bytes.size(), max_bytes);
  text.reserve(kept);
  for (const char c : bytes.substr(0, kept)) {
    const bool ok = c == '\n' || c == '\t' || static_cast<unsigned char>(c) >= ' ';
    text.push_back(ok && c != '\x7f' ? c : '?');
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (bytes.size() > kept) {
    text += " ... (" + std::to_string(bytes.size() - kept) + " more bytes)";
  }
  return text;
}

}  // namespace

Result<std::shared_ptr<WakeupFd>> WakeupFd::Create() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return ErrnoError("create an eventfd for finished tasks", errno);
  return std::shared_ptr<WakeupFd>(new WakeupFd(fd));
}

WakeupFd::~WakeupFd() {
  // Nothing useful can be done about a failed close of an eventfd; Linux frees it anyway.
  ::close(fd_);
}

void WakeupFd::Notify() {
  const uint64_t one = 1;
  ssize_t n;
  do {
    n = ::write(fd_, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  // EAGAIN: the counter is saturated, so the fd is readable already.
  if (n < 0 && errno != EAGAIN) {
    log::Error("worker.wakeup_failed").Kv("error", std::strerror(errno));
  }
}

void WakeupFd::Drain() {
  uint64_t count = 0;
  ssize_t n;
  do {
    n = ::read(fd_, &count, sizeof count);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN) {
    log::Error("worker.wakeup_failed").Kv("error", std::strerror(errno));
  }
}

void FinishedQueue::Push(FinishedTask task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  wakeup_->Notify();
}

std::vector<FinishedTask> FinishedQueue::TakeAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(tasks_, {});
}

bool ProcessTaskExecutor::Runs(std::string_view kind) const {
  return kind == "echo" || IsKernelTaskKind(kind);
}

Status UnknownKindError(std::string_view kind) {
  return InvalidArgument("this worker cannot run tasks of kind '" + std::string(kind) + "' yet");
}

FinishedTask ToFinishedTask(const TaskKey& key, const Result<ProcessResult>& run,
                            const ProcessExecutorOptions& options) {
  FinishedTask finished;
  finished.key = key;
  if (!run.ok()) {
    finished.outcome = msg::Outcome::FAILED;
    finished.error = "could not run the task process: " + run.status().ToString();
    return finished;
  }
  const ProcessResult& process = *run;
  const std::string stderr_text = Printable(process.stderr_bytes, options.max_error_bytes);
  const std::string described =
      stderr_text.empty() ? process.Describe() : process.Describe() + ": " + stderr_text;
  finished.exit_code = process.term_signal == 0 ? process.exit_code : 0;
  finished.signal = process.term_signal;
  if (process.cancelled) {
    finished.outcome = msg::Outcome::CANCELLED;
    finished.error = described;
  } else if (process.timed_out) {
    finished.outcome = msg::Outcome::TIMED_OUT;
    finished.error = described;
  } else if (process.term_signal != 0) {
    finished.outcome = msg::Outcome::CRASHED;
    finished.error = described;
  } else if (process.exit_code != 0) {
    finished.outcome = msg::Outcome::FAILED;
    finished.error = stderr_text.empty() ? process.Describe() : stderr_text;
  } else if (process.stdout_truncated) {
    finished.outcome = msg::Outcome::FAILED;
    finished.error = "the task wrote more than " + std::to_string(options.max_output_bytes) +
                     " bytes of output, the most a worker returns";
  } else {
    finished.outcome = msg::Outcome::OK;
    finished.output = process.stdout_bytes;
  }
  return finished;
}

ProcessTaskExecutor::ProcessTaskExecutor(ProcessExecutorOptions options,
                                         std::shared_ptr<WakeupFd> wakeup)
    : options_(std::move(options)), queue_(std::make_shared<FinishedQueue>(std::move(wakeup))) {
  if (options_.runner == nullptr) options_.runner = &SystemProcessRunner();
  if (options_.clock == nullptr) options_.clock = &SystemClock();
}

ProcessTaskExecutor::~ProcessTaskExecutor() {
  CancelAll();
  std::map<TaskKey, std::unique_ptr<Running>> running;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    running.swap(running_);
  }
  // The threads still take mutex_ to mark themselves done, so join without holding it.
  for (auto& [key, task] : running) task->thread.join();
}

Status ProcessTaskExecutor::Start(const AssignedTask& task) {
  if (!Runs(task.kind)) return UnknownKindError(task.kind);
  JoinDone();
  std::lock_guard<std::mutex> lock(mutex_);
  if (running_.count(task.key) != 0) {
    return AlreadyExists("task " + std::to_string(task.key.task_id) + " attempt " +
                         std::to_string(task.key.attempt) + " is running already");
  }
  auto running = std::make_unique<Running>();
  try {
    running->thread = std::thread(&ProcessTaskExecutor::RunTask, this, task, running.get());
  } catch (const std::system_error& e) {
    return ResourceExhausted(std::string("cannot start a thread for the task: ") + e.what());
  }
  running_[task.key] = std::move(running);
  return Status::Ok();
}

void ProcessTaskExecutor::RunTask(AssignedTask task, Running* running) {
  ProcessSpec spec;
  spec.argv = {options_.program.string(),
               "run-task",
               "--kind",
               task.kind,
               "--task-id",
               std::to_string(task.key.task_id),
               "--attempt",
               std::to_string(task.key.attempt),
               "--timeout-ms",
               std::to_string(task.timeout_ms)};
  if (task.device >= 0) {
    spec.argv.insert(spec.argv.end(), {"--device", std::to_string(task.device)});
  }
  spec.cwd = options_.cwd;
  spec.stdin_bytes = std::move(task.payload);
  spec.timeout_ms = task.timeout_ms;
  spec.max_output_bytes = options_.max_output_bytes;
  const int64_t started_us = options_.clock->NowUs();
  const Result<ProcessResult> run = options_.runner->Run(spec, &running->cancel);
  FinishedTask finished = ToFinishedTask(task.key, run, options_);
  finished.started_us = started_us;
  finished.finished_us = options_.clock->NowUs();

  std::lock_guard<std::mutex> lock(mutex_);
  if (!running->dropped) queue_->Push(std::move(finished));
  running->done = true;
}

void ProcessTaskExecutor::JoinDone() {
  std::vector<std::unique_ptr<Running>> done;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second->done) {
        done.push_back(std::move(it->second));
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const std::unique_ptr<Running>& task : done) task->thread.join();
}

void ProcessTaskExecutor::Cancel(const TaskKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = running_.find(key);
  if (it != running_.end()) it->second->cancel = true;
}

void ProcessTaskExecutor::CancelAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [key, task] : running_) {
    task->dropped = true;
    task->cancel = true;
  }
}

std::vector<FinishedTask> ProcessTaskExecutor::TakeFinished() {
  JoinDone();
  return queue_->TakeAll();
}

}  // namespace kfleet::worker
