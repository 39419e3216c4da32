#include "cli/dispatch_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <zmq.hpp>

#include "cli/client.h"
#include "cli/format.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "coordinator/coordinator.h"
#include "coordinator/options.h"
#include "messages/api.capnp.h"
#include "worker/capabilities.h"
#include "worker/probe.h"
#include "worker/session.h"
#include "worker/task_runner.h"

namespace kfleet::cli {
namespace {

using worker::AssignedTask;
using worker::FinishedTask;
using worker::TaskExecutor;
using worker::TaskKey;
using worker::WorkerSession;

constexpr int64_t kJobPollIntervalMs = 50;
// Registration of a few workers takes milliseconds; a coarse poll would be most of the figure.
constexpr int64_t kRegistrationPollIntervalMs = 5;
constexpr int64_t kRegistrationTimeoutMs = 60'000;
// A job that finishes no task for this long (plus one task's delay) is stuck, not slow.
constexpr int64_t kStallTimeoutMs = 30'000;
constexpr int64_t kMaxLoopThreads = 4;
constexpr size_t kTaskPoolThreads = 2;
// A worker holds a DEALER (a TCP connection and a mailbox eventfd), the coordinator the other end
// of the connection; the spare covers SQLite, the API sockets and ZeroMQ's own.
constexpr int64_t kFilesPerWorker = 3;
constexpr int64_t kFilesSpare = 256;
// ZeroMQ sockets beyond the workers' DEALERs: the API client, ZeroMQ's internal ones.
constexpr int64_t kSocketsSpare = 64;
constexpr size_t kProblemsKept = 3;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

Status ValidateOptions(const DispatchBenchOptions& options) {
  constexpr int64_t kMaxU32 = std::numeric_limits<uint32_t>::max();
  if (options.workers < 1) {
    return InvalidArgument("--workers must be at least 1, got " + std::to_string(options.workers));
  }
  if (options.tasks < 1 || options.tasks > kMaxU32) {
    return InvalidArgument("--tasks must be 1.." + std::to_string(kMaxU32) + ", got " +
                           std::to_string(options.tasks));
  }
  if (options.slots < 1 || options.slots > kMaxU32) {
    return InvalidArgument("--slots must be 1.." + std::to_string(kMaxU32) + ", got " +
                           std::to_string(options.slots));
  }
  if (options.delay_ms < 0 || options.delay_ms > kMaxU32) {
    return InvalidArgument("--delay-ms must be 0.." + std::to_string(kMaxU32) + ", got " +
                           std::to_string(options.delay_ms));
  }
  return Status::Ok();
}


// Every worker and its coordinator-side connection take file descriptors; the soft limit is
// raised up to the hard one when that is not enough.
Status RaiseFileLimit(int64_t workers) {
  const auto needed = static_cast<rlim_t>(kFilesPerWorker * workers + kFilesSpare);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return ErrnoError("getrlimit(RLIMIT_NOFILE)", errno);
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
      return FailedPrecondition(
          std::to_string(workers) + " workers need about " + std::to_string(needed) +
          " open files, but the hard limit (ulimit -Hn) is " + std::to_string(limit.rlim_max) +
          ": raise `nofile` in /etc/security/limits.conf (or LimitNOFILE for a service), or run "
          "fewer workers");
    }
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return ErrnoError("setrlimit(RLIMIT_NOFILE) to " + std::to_string(limit.rlim_cur), errno);
    }
  }
  return Status::Ok();
}

// Lines the sessions flag as problems (rejected, lost the coordinator), for error messages.
class ProblemLog {
 public:
  void Add(const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (lines_.size() < kProblemsKept) lines_.push_back(line);
    ++count_;
  }
  // "; the workers said: A | B (and 7 more)", or empty.
  std::string Summary() const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (lines_.empty()) return "";
    std::string text = "; the workers said: ";
    for (size_t i = 0; i < lines_.size(); ++i) text += (i > 0 ? " | " : "") + lines_[i];
    if (count_ > lines_.size())
      text += " (and " + std::to_string(count_ - lines_.size()) + " more)";
    return text;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;  // guarded by mutex_: the first kProblemsKept
  size_t count_ = 0;                // guarded by mutex_
};

// What one worker saw. Written only by the thread that drives its session, read after that thread
// has been joined.
struct WorkerTrace {
  std::deque<int64_t> free_since_us;  // finishes not yet followed by a Start: free slots
  std::vector<int64_t> assignment_latency_us;
  std::vector<uint64_t> ok_task_ids;
};

// Timestamps what the assignment latency is made of: a finished task handed to the session (which
// sends its result at once) and the next Start (an Assign has reached the worker).
class ObservedExecutor final : public TaskExecutor {
 public:
  ObservedExecutor(std::unique_ptr<TaskExecutor> inner, WorkerTrace& trace, Clock& clock)
      : inner_(std::move(inner)), trace_(trace), clock_(clock) {}

  bool Runs(std::string_view kind) const override { return inner_->Runs(kind); }

  Status Start(const AssignedTask& task) override {
    const int64_t now_us = clock_.MonotonicUs();
    Status started = inner_->Start(task);
    if (started.ok() && !trace_.free_since_us.empty()) {
      trace_.assignment_latency_us.push_back(now_us - trace_.free_since_us.front());
      trace_.free_since_us.pop_front();
    }
    return started;
  }

  void Cancel(const TaskKey& key) override { inner_->Cancel(key); }
  void CancelAll() override { inner_->CancelAll(); }

  std::vector<FinishedTask> TakeFinished() override {
    std::vector<FinishedTask> finished = inner_->TakeFinished();
    if (finished.empty()) return finished;
    const int64_t now_us = clock_.MonotonicUs();
    for (const FinishedTask& task : finished) {
      trace_.free_since_us.push_back(now_us);
      if (task.outcome == msg::Outcome::OK) trace_.ok_task_ids.push_back(task.key.task_id);
    }
    return finished;
  }

  worker::WakeupFd& wakeup() override { return inner_->wakeup(); }

 private:
  std::unique_ptr<TaskExecutor> inner_;
  WorkerTrace& trace_;
  Clock& clock_;
};

// One thread running RunSessionLoop over a slice of the sessions.
struct SessionLoop {
  std::vector<WorkerSession*> sessions;
  // Shared by this slice's executors only: a loop that drained another loop's wakeup fd would
  // leave that loop asleep with results waiting.
  std::shared_ptr<worker::WakeupFd> wakeup;
  std::thread thread;
  std::atomic<bool> ended{false};
  Status status;  // written by `thread` before `ended`
};

Result<Answer<msg::StatusReply>> QueryStatus(Client& client) {
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::StatusRequest>();
  return client.Call<msg::StatusRequest, msg::StatusReply>(request);
}

std::optional<msg::JobSummary::Reader> FindJob(msg::StatusReply::Reader reply, uint64_t job_id) {
  for (msg::JobSummary::Reader job : reply.getJobs()) {
    if (job.getId() == job_id) return job;
  }
  return std::nullopt;
}

class DispatchBench {
 public:
  explicit DispatchBench(const DispatchBenchOptions& options) : options_(options) {}
  // Stops whatever Run started, in order: session loops, sessions and their sockets, the
  // coordinator, the task pool; the scratch directory goes last.
  ~DispatchBench();
  DispatchBench(const DispatchBench&) = delete;
  DispatchBench& operator=(const DispatchBench&) = delete;

  Result<DispatchBenchReport> Run();

 private:
  Status StartCoordinator();
  Status CreateWorkers();
  Status StartLoops();
  // Ok while the user, the coordinator and every session loop are still going.
  Status CheckRunning() const;
  Status AwaitRegistration(Client& client, int64_t started_us);
  Result<uint64_t> Submit(Client& client);
  // The status reply in which the job had finished.
  Result<Answer<msg::StatusReply>> AwaitJob(Client& client, uint64_t job_id);
  void StopLoops();
  void StopWorkers();
  void StopCoordinator();

  DispatchBenchOptions options_;
  Clock& clock_ = SystemClock();
  std::optional<TempDir> scratch_;
  std::unique_ptr<coordinator::Coordinator> coordinator_;
  std::atomic<bool> coordinator_stop_{false};
  std::atomic<bool> coordinator_ended_{false};
  Status coordinator_status_;  // written by coordinator_thread_ before coordinator_ended_
  std::thread coordinator_thread_;
  std::unique_ptr<worker::InProcessTaskPool> pool_;
  std::unique_ptr<zmq::context_t> context_;
  ProblemLog problems_;
  std::vector<WorkerTrace> traces_;  // one per worker; sized before any executor points into it
  std::vector<std::unique_ptr<WorkerSession>> sessions_;
  std::shared_ptr<worker::WakeupFd> stop_loops_;
  std::vector<std::unique_ptr<SessionLoop>> loops_;
};

DispatchBench::~DispatchBench() {
  StopWorkers();
  StopCoordinator();
  pool_.reset();
}

void DispatchBench::StopLoops() {
  if (stop_loops_ != nullptr) stop_loops_->Notify();
  for (const std::unique_ptr<SessionLoop>& loop : loops_) {
    if (loop->thread.joinable()) loop->thread.join();
  }
}

void DispatchBench::StopWorkers() {
  StopLoops();
  // Destroyed without a Bye: the coordinator is stopped next and its state discarded, and each Bye
  // would only make it log a warning. Sockets close at once (linger 0), executors cancel.
  sessions_.clear();
  context_.reset();
}

void DispatchBench::StopCoordinator() {
  coordinator_stop_.store(true);
  if (coordinator_thread_.joinable()) coordinator_thread_.join();
  coordinator_.reset();
}

Status DispatchBench::StartCoordinator() {
  coordinator::CoordinatorOptions options;
  options.state_dir = scratch_->path() / "state";
  options.listen = "tcp://127.0.0.1:0";
  options.api = "tcp://127.0.0.1:0";
  options.insecure = true;
  options.heartbeat_interval_ms = 1000;
  options.synchronous = storage::SyncMode::kFull;
  options.write_user_cli_config = false;  // a throwaway coordinator is not the CLI's default
  KF_ASSIGN_OR_RETURN(coordinator_, coordinator::Coordinator::Start(options));
  try {
    coordinator_thread_ = std::thread([this] {
      coordinator_status_ = coordinator_->Run(coordinator_stop_);
      coordinator_ended_.store(true);
    });
  } catch (const std::system_error& e) {
    return ResourceExhausted(std::string("cannot start the coordinator thread: ") + e.what());
  }
  return Status::Ok();
}

Status DispatchBench::CreateWorkers() {
  KF_ASSIGN_OR_RETURN(pool_, worker::InProcessTaskPool::Create(kTaskPoolThreads));
  try {
    context_ = std::make_unique<zmq::context_t>();
    context_->set(zmq::ctxopt::max_sockets, static_cast<int>(options_.workers + kSocketsSpare));
  } catch (const zmq::error_t& e) {
    return IoError("allowing " + std::to_string(options_.workers + kSocketsSpare) +
                   " ZeroMQ sockets: " + e.what());
  }
  KF_ASSIGN_OR_RETURN(stop_loops_, worker::WakeupFd::Create());
  const int64_t loop_count = std::min(options_.workers, kMaxLoopThreads);
  for (int64_t i = 0; i < loop_count; ++i) {
    auto loop = std::make_unique<SessionLoop>();
    KF_ASSIGN_OR_RETURN(loop->wakeup, worker::WakeupFd::Create());
    loops_.push_back(std::move(loop));
  }

  // The workers describe this machine's CPU as kfleet-worker would; echo tasks need no GPU or
  // compiler, and probing those takes seconds.
  worker::ProbeOptions probe_options;
  probe_options.probe_gpus = false;
  probe_options.probe_toolchains = false;
  const worker::NodeProbe probe = worker::ProbeNode(probe_options);

  traces_.resize(static_cast<size_t>(options_.workers));
  for (int64_t i = 0; i < options_.workers; ++i) {
    SessionLoop& loop = *loops_[static_cast<size_t>(i * loop_count / options_.workers)];
    worker::SessionOptions session_options;
    session_options.endpoint = coordinator_->worker_endpoint();
    session_options.node_name = "bench-" + std::to_string(i);
    session_options.worker_version = "kfleet-bench";
    session_options.probe = probe;
    session_options.slots = worker::SlotCounts{static_cast<uint32_t>(options_.slots), 0, 0};
    session_options.on_status = [this](const std::string& line, bool problem) {
      if (problem) problems_.Add(line);
    };
    auto executor = std::make_unique<ObservedExecutor>(
        std::make_unique<worker::InProcessTaskExecutor>(*pool_, loop.wakeup, clock_),
        traces_[static_cast<size_t>(i)], clock_);
    KF_ASSIGN_OR_RETURN(
        std::unique_ptr<WorkerSession> session,
        WorkerSession::Create(*context_, std::move(session_options), std::move(executor), clock_));
    loop.sessions.push_back(session.get());
    sessions_.push_back(std::move(session));
  }
  return Status::Ok();
}

Status DispatchBench::StartLoops() {
  for (const std::unique_ptr<SessionLoop>& loop : loops_) {
    try {
      loop->thread = std::thread([loop = loop.get(), stop_fd = stop_loops_->fd(), this] {
        Result<bool> stopped = worker::RunSessionLoop(loop->sessions, clock_, stop_fd);
        if (!stopped.ok()) {
          loop->status = stopped.status();
        } else if (!*stopped) {
          loop->status = FailedPrecondition("all " + std::to_string(loop->sessions.size()) +
                                            " worker sessions of a loop thread stopped");
        }
        loop->ended.store(true);
      });
    } catch (const std::system_error& e) {
      return ResourceExhausted(std::string("cannot start a worker loop thread: ") + e.what());
    }
  }
  return Status::Ok();
}

Status DispatchBench::CheckRunning() const {
  if (Interrupted()) return Cancelled("interrupted");
  if (coordinator_ended_.load()) {
    return coordinator_status_.ok() ? Internal("the coordinator stopped serving")
                                    : coordinator_status_.WithContext("the coordinator stopped");
  }
  for (const std::unique_ptr<SessionLoop>& loop : loops_) {
    if (loop->ended.load()) {
      return Status(loop->status.code(), loop->status.message() + problems_.Summary());
    }
  }
  return Status::Ok();
}

Status DispatchBench::AwaitRegistration(Client& client, int64_t started_us) {
  const auto workers = static_cast<uint32_t>(options_.workers);
  while (true) {
    KF_RETURN_IF_ERROR(CheckRunning());
    KF_ASSIGN_OR_RETURN(Answer<msg::StatusReply> status, QueryStatus(client));
    const uint32_t connected = status.root.getCoordinator().getNodesConnected();
    if (connected >= workers) return Status::Ok();
    if (clock_.MonotonicUs() - started_us > kRegistrationTimeoutMs * 1000) {
      return DeadlineExceeded("only " + std::to_string(connected) + " of " +
                              std::to_string(workers) + " workers registered within " +
                              FormatDuration(kRegistrationTimeoutMs * 1000) + problems_.Summary());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kRegistrationPollIntervalMs));
  }
}

Result<uint64_t> DispatchBench::Submit(Client& client) {
  capnp::MallocMessageBuilder request;
  msg::SubmitRequest::Builder submit = request.initRoot<msg::SubmitRequest>();
  submit.setName("bench dispatch");
  submit.setTarget(msg::Backend::CPU);
  msg::EchoSpec::Builder echo = submit.initEcho();
  echo.setTasks(static_cast<uint32_t>(options_.tasks));
  echo.setDelayMs(static_cast<uint32_t>(options_.delay_ms));
  KF_ASSIGN_OR_RETURN(Answer<msg::SubmitReply> reply,
                      (client.Call<msg::SubmitRequest, msg::SubmitReply>(request)));
  return reply.root.getJobId();
}

Result<Answer<msg::StatusReply>> DispatchBench::AwaitJob(Client& client, uint64_t job_id) {
  const int64_t stall_limit_us = (kStallTimeoutMs + options_.delay_ms) * 1000;
  uint64_t last_ended = 0;
  int64_t last_change_us = clock_.MonotonicUs();
  while (true) {
    KF_RETURN_IF_ERROR(CheckRunning());
    KF_ASSIGN_OR_RETURN(Answer<msg::StatusReply> status, QueryStatus(client));
    std::optional<msg::JobSummary::Reader> job = FindJob(status.root, job_id);
    if (!job.has_value()) {
      return Internal("the coordinator no longer lists job " + std::to_string(job_id));
    }
    if (IsFinishedState(Text(job->getState()))) return status;
    msg::JobProgress::Reader progress = job->getProgress();
    const uint64_t ended = uint64_t{progress.getTasksDone()} + progress.getTasksFailed();
    const int64_t now_us = clock_.MonotonicUs();
    if (ended != last_ended) {
      last_ended = ended;
      last_change_us = now_us;
    } else if (now_us - last_change_us > stall_limit_us) {
      return DeadlineExceeded("job " + std::to_string(job_id) + " finished no task for " +
                              FormatDuration(now_us - last_change_us) + " at " +
                              ProgressFraction(progress) + problems_.Summary());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kJobPollIntervalMs));
  }
}

Result<DispatchBenchReport> DispatchBench::Run() {
  KF_RETURN_IF_ERROR(ValidateOptions(options_));
  KF_RETURN_IF_ERROR(RaiseFileLimit(options_.workers));
  KF_ASSIGN_OR_RETURN(TempDir scratch, TempDir::Create("kfleet-bench-dispatch", options_.scratch_parent));
  scratch_.emplace(std::move(scratch));

  DispatchBenchReport report;
  report.workers = options_.workers;
  report.tasks = options_.tasks;
  report.slots = options_.slots;
  report.delay_ms = options_.delay_ms;
  report.loop_threads = std::min(options_.workers, kMaxLoopThreads);
  report.synchronous = "FULL";
  report.scratch_dir = scratch_->path();

  KF_RETURN_IF_ERROR(StartCoordinator());
  Connection connection;
  connection.endpoint = coordinator_->api_endpoint();
  KF_ASSIGN_OR_RETURN(Client client, Client::Open(connection, kDefaultTimeoutMs));
  KF_RETURN_IF_ERROR(CreateWorkers());
  const int64_t started_us = clock_.MonotonicUs();
  KF_RETURN_IF_ERROR(StartLoops());
  KF_RETURN_IF_ERROR(AwaitRegistration(client, started_us));
  report.registration_us = clock_.MonotonicUs() - started_us;

  KF_ASSIGN_OR_RETURN(const uint64_t job_id, Submit(client));
  KF_ASSIGN_OR_RETURN(Answer<msg::StatusReply> last, AwaitJob(client, job_id));
  // The traces and session counters belong to the loop threads until they are joined.
  StopLoops();

  const msg::JobSummary::Reader job = *FindJob(last.root, job_id);
  const msg::JobProgress::Reader progress = job.getProgress();
  report.done = progress.getTasksDone();
  report.failed = progress.getTasksFailed();
  report.retries = progress.getRetries();
  report.job_us = std::max<int64_t>(job.getUpdatedUs() - job.getCreatedUs(), 1);
  report.tasks_per_s =
      static_cast<double>(report.done + report.failed) / (static_cast<double>(report.job_us) / 1e6);
  const msg::CoordinatorCounters::Reader counters = last.root.getCoordinator();
  report.coordinator_worker_messages = counters.getWorkerMessages();
  report.coordinator_client_messages = counters.getClientMessages();
  report.coordinator_malformed_dropped = counters.getMalformedDropped();
  report.coordinator_send_failures = counters.getSendFailures();
  report.coordinator_failed_batches = counters.getFailedBatches();

  std::vector<int64_t> latencies_us;
  std::unordered_map<uint64_t, int64_t> runs_by_task;
  for (const WorkerTrace& trace : traces_) {
    latencies_us.insert(latencies_us.end(), trace.assignment_latency_us.begin(),
                        trace.assignment_latency_us.end());
    for (const uint64_t task_id : trace.ok_task_ids) ++runs_by_task[task_id];
    report.executions_ok += static_cast<int64_t>(trace.ok_task_ids.size());
  }
  report.distinct_tasks_ok = static_cast<int64_t>(runs_by_task.size());
  report.assignment_latency = SummarizeLatencies(std::move(latencies_us));
  uint64_t registrations = 0;
  for (const std::unique_ptr<WorkerSession>& session : sessions_) {
    registrations += session->counters().registrations;
    report.worker_send_failures += session->counters().send_failures;
  }
  report.reconnects = std::max<int64_t>(static_cast<int64_t>(registrations) - options_.workers, 0);

  const std::string state = Text(job.getState());
  if (state != "done" || report.done != options_.tasks || report.failed != 0) {
    const std::string error = Text(job.getError());
    return FailedPrecondition("job " + std::to_string(job_id) + " ended " + state + " with " +
                              ProgressFraction(progress) + " tasks done, " +
                              std::to_string(report.failed) + " failed, " +
                              std::to_string(report.retries) + " retries" +
                              (error.empty() ? "" : ": " + error) + problems_.Summary());
  }
  if (report.distinct_tasks_ok != options_.tasks) {
    return Internal("the coordinator counts " + std::to_string(report.done) +
                    " tasks done, but the workers completed " +
                    std::to_string(report.distinct_tasks_ok) + " distinct tasks");
  }
  const int64_t extra_runs = report.executions_ok - report.distinct_tasks_ok;
  if (extra_runs > int64_t{report.retries}) {
    return Internal(std::to_string(extra_runs) + " task executions beyond one per task, but only " +
                    std::to_string(report.retries) + " retries: a task was assigned twice");
  }
  return report;
}

}  // namespace

LatencySummary SummarizeLatencies(std::vector<int64_t> samples_us) {
  LatencySummary summary;
  summary.samples = static_cast<int64_t>(samples_us.size());
  if (samples_us.empty()) return summary;
  std::sort(samples_us.begin(), samples_us.end());
  const auto rank = [&](double fraction) {
    const auto n = static_cast<double>(samples_us.size());
    const auto index = static_cast<size_t>(std::ceil(fraction * n));
    return samples_us[std::max<size_t>(index, 1) - 1];
  };
  summary.p50_us = rank(0.50);
  summary.p99_us = rank(0.99);
  summary.max_us = samples_us.back();
  return summary;
}

Result<DispatchBenchReport> RunDispatchBench(const DispatchBenchOptions& options) {
  DispatchBench bench(options);
  return bench.Run();
}

}  // namespace kfleet::cli
