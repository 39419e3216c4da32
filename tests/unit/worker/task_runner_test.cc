#include "worker/task_runner.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "common/ids.h"
#include "tests/test_binaries.h"
#include "worker/echo_task.h"

namespace kfleet::worker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Waits on the executor's wakeup fd until `count` tasks have finished or `timeout` passes.
std::vector<FinishedTask> WaitFinished(TaskExecutor& executor, size_t count,
                                       milliseconds timeout = milliseconds(5000)) {
  std::vector<FinishedTask> finished;
  const auto deadline = steady_clock::now() + timeout;
  while (finished.size() < count && steady_clock::now() < deadline) {
    pollfd fd{executor.wakeup().fd(), POLLIN, 0};
    if (::poll(&fd, 1, 20) < 0) break;
    executor.wakeup().Drain();
    for (FinishedTask& task : executor.TakeFinished()) finished.push_back(std::move(task));
  }
  return finished;
}

AssignedTask EchoTask(uint64_t task_id, const EchoSpec& spec, uint32_t timeout_ms = 0) {
  AssignedTask task;
  task.key = {task_id, 1};
  task.job_id = 1;
  task.kind = "echo";
  task.timeout_ms = timeout_ms;
  task.payload = BuildEchoPayload(spec);
  return task;
}

std::shared_ptr<WakeupFd> NewWakeup() {
  Result<std::shared_ptr<WakeupFd>> wakeup = WakeupFd::Create();
  EXPECT_TRUE(wakeup.ok()) << wakeup.status().ToString();
  return *wakeup;
}

// The real runner and the real kfleet-worker binary: `run-task` as the worker starts it.
ProcessExecutorOptions RealBinary() {
  ProcessExecutorOptions options;
  options.program = kfleet::testing::TestBinary("kfleet-worker", KFLEET_WORKER_BINARY);
  return options;
}

class ProcessTaskExecutorTest : public ::testing::Test {
 protected:
  ProcessTaskExecutor executor_{RealBinary(), NewWakeup()};
};

TEST_F(ProcessTaskExecutorTest, EchoAnswersInAChildProcess) {
  EchoSpec spec;
  spec.data = "hello from a child";
  ASSERT_TRUE(executor_.Start(EchoTask(1, spec)).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].key, (TaskKey{1, 1}));
  EXPECT_EQ(finished[0].outcome, msg::Outcome::OK) << finished[0].error;
  EXPECT_EQ(finished[0].output, Sha256Hex(spec.data));
  EXPECT_EQ(finished[0].exit_code, 0);
  EXPECT_GT(finished[0].started_us, 0);
  EXPECT_GE(finished[0].finished_us, finished[0].started_us);
}

TEST_F(ProcessTaskExecutorTest, FailureCarriesTheChildsError) {
  EchoSpec spec;
  spec.fail_rate = 1.0f;
  ASSERT_TRUE(executor_.Start(EchoTask(2, spec)).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::FAILED);
  EXPECT_EQ(finished[0].exit_code, 1);
  EXPECT_EQ(finished[0].error.rfind("echo: asked to fail (draw ", 0), 0u) << finished[0].error;
}

TEST_F(ProcessTaskExecutorTest, SegfaultIsACrashWithItsSignal) {
  EchoSpec spec;
  spec.crash_rate = 1.0f;
  ASSERT_TRUE(executor_.Start(EchoTask(3, spec)).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::CRASHED);
  EXPECT_EQ(finished[0].signal, SIGSEGV);
  EXPECT_NE(finished[0].error.find("killed by SIGSEGV"), std::string::npos) << finished[0].error;
  EXPECT_NE(finished[0].error.find("asked to crash"), std::string::npos) << finished[0].error;
}

TEST_F(ProcessTaskExecutorTest, HangIsKilledAtTheTimeout) {
  EchoSpec spec;
  spec.hang_rate = 1.0f;
  const auto start = steady_clock::now();
  ASSERT_TRUE(executor_.Start(EchoTask(4, spec, /*timeout_ms=*/300)).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::TIMED_OUT);
  EXPECT_NE(finished[0].error.find("timed out after"), std::string::npos) << finished[0].error;
  EXPECT_GE(steady_clock::now() - start, milliseconds(300));
  EXPECT_LT(steady_clock::now() - start, milliseconds(3000));
}

TEST_F(ProcessTaskExecutorTest, CancelKillsTheChild) {
  EchoSpec spec;
  spec.delay_ms = 30'000;
  const auto start = steady_clock::now();
  ASSERT_TRUE(executor_.Start(EchoTask(5, spec)).ok());
  std::this_thread::sleep_for(milliseconds(100));
  executor_.Cancel({5, 1});
  executor_.Cancel({6, 1});  // unknown: ignored
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::CANCELLED);
  EXPECT_LT(steady_clock::now() - start, milliseconds(3000));
}

TEST_F(ProcessTaskExecutorTest, UnknownKindIsRefusedAtStart) {
  AssignedTask task = EchoTask(7, EchoSpec{});
  task.kind = "train";
  const Status started = executor_.Start(task);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.message(), "this worker cannot run tasks of kind 'train' yet");
}

TEST_F(ProcessTaskExecutorTest, UnreadablePayloadFailsTheAttempt) {
  AssignedTask task = EchoTask(8, EchoSpec{});
  task.payload = "garbage";
  ASSERT_TRUE(executor_.Start(task).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::FAILED);
  EXPECT_EQ(finished[0].exit_code, 2);
  EXPECT_NE(finished[0].error.find("echo payload"), std::string::npos) << finished[0].error;
}

TEST_F(ProcessTaskExecutorTest, CancelAllDropsResultsAndDestructionReapsChildren) {
  EchoSpec spec;
  spec.delay_ms = 30'000;
  ASSERT_TRUE(executor_.Start(EchoTask(9, spec)).ok());
  ASSERT_TRUE(executor_.Start(EchoTask(10, spec)).ok());
  std::this_thread::sleep_for(milliseconds(50));
  executor_.CancelAll();
  EXPECT_TRUE(WaitFinished(executor_, 1, milliseconds(400)).empty());
}

// A runner that records the spec and returns a scripted result, as a crashing or hanging child
// would produce it.
class ScriptedRunner final : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec, const std::atomic<bool>*) override {
    last_spec = spec;
    return result;
  }
  ProcessSpec last_spec;
  Result<ProcessResult> result = ProcessResult{};
};

TEST(ProcessTaskExecutorSpecTest, RunsTheBinaryWithTheTaskOnItsCommandLineAndStdin) {
  ScriptedRunner runner;
  ProcessResult ok;
  ok.exit_code = 0;
  ok.stdout_bytes = "out";
  runner.result = ok;
  ProcessExecutorOptions options;
  options.runner = &runner;
  options.cwd = "/tmp";
  ProcessTaskExecutor executor(options, NewWakeup());
  AssignedTask task = EchoTask(11, EchoSpec{}, 1500);
  task.key.attempt = 3;
  ASSERT_TRUE(executor.Start(task).ok());
  std::vector<FinishedTask> finished = WaitFinished(executor, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].output, "out");
  EXPECT_EQ(runner.last_spec.argv,
            (std::vector<std::string>{"/proc/self/exe", "run-task", "--kind", "echo", "--task-id",
                                      "11", "--attempt", "3", "--timeout-ms", "1500"}));
  EXPECT_EQ(runner.last_spec.stdin_bytes, task.payload);
  EXPECT_EQ(runner.last_spec.timeout_ms, 1500);
  EXPECT_EQ(runner.last_spec.cwd, "/tmp");
}

TEST(ToFinishedTaskTest, MapsEveryWayAChildEnds) {
  ProcessExecutorOptions options;
  options.max_error_bytes = 16;
  const TaskKey key{1, 1};

  ProcessResult crashed;
  crashed.term_signal = SIGSEGV;
  FinishedTask task = ToFinishedTask(key, crashed, options);
  EXPECT_EQ(task.outcome, msg::Outcome::CRASHED);
  EXPECT_EQ(task.signal, SIGSEGV);
  EXPECT_EQ(task.error, "killed by SIGSEGV");

  ProcessResult timed_out;
  timed_out.term_signal = SIGKILL;
  timed_out.timed_out = true;
  timed_out.wall_ms = 2000;
  task = ToFinishedTask(key, timed_out, options);
  EXPECT_EQ(task.outcome, msg::Outcome::TIMED_OUT);
  EXPECT_EQ(task.error, "timed out after 2000 ms (killed)");

  ProcessResult cancelled;
  cancelled.term_signal = SIGKILL;
  cancelled.cancelled = true;
  EXPECT_EQ(ToFinishedTask(key, cancelled, options).outcome, msg::Outcome::CANCELLED);

  ProcessResult failed;
  failed.exit_code = 3;
  failed.stderr_bytes = std::string("bad") + '\0' + "thing happened here, at length\n";
  task = ToFinishedTask(key, failed, options);
  EXPECT_EQ(task.outcome, msg::Outcome::FAILED);
  EXPECT_EQ(task.exit_code, 3);
  EXPECT_EQ(task.error, "bad?thing happen ... (19 more bytes)");

  failed.stderr_bytes.clear();
  EXPECT_EQ(ToFinishedTask(key, failed, options).error, "exited with 3");

  ProcessResult too_much;
  too_much.exit_code = 0;
  too_much.stdout_truncated = true;
  task = ToFinishedTask(key, too_much, options);
  EXPECT_EQ(task.outcome, msg::Outcome::FAILED);
  EXPECT_NE(task.error.find("more than"), std::string::npos);

  task = ToFinishedTask(key, Result<ProcessResult>(NotFound("exec: no such file")), options);
  EXPECT_EQ(task.outcome, msg::Outcome::FAILED);
  EXPECT_NE(task.error.find("could not run the task process"), std::string::npos);
}

class InProcessTaskExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<InProcessTaskPool>> pool = InProcessTaskPool::Create(2);
    ASSERT_TRUE(pool.ok()) << pool.status().ToString();
    pool_ = std::move(pool).value();
    executor_ = std::make_unique<InProcessTaskExecutor>(*pool_, NewWakeup());
  }
  void TearDown() override {
    executor_.reset();
    pool_.reset();
  }
  std::unique_ptr<InProcessTaskPool> pool_;
  std::unique_ptr<InProcessTaskExecutor> executor_;
};

TEST_F(InProcessTaskExecutorTest, AnswersAfterTheDelay) {
  EchoSpec spec;
  spec.delay_ms = 50;
  spec.data = "in process";
  const auto start = steady_clock::now();
  ASSERT_TRUE(executor_->Start(EchoTask(1, spec)).ok());
  std::vector<FinishedTask> finished = WaitFinished(*executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_GE(steady_clock::now() - start, milliseconds(50));
  EXPECT_EQ(finished[0].outcome, msg::Outcome::OK);
  EXPECT_EQ(finished[0].output, Sha256Hex("in process"));
}

TEST_F(InProcessTaskExecutorTest, FailCrashAndHangAreFailures) {
  EchoSpec fail, crash, hang;
  fail.fail_rate = 1.0f;
  crash.crash_rate = 1.0f;
  hang.hang_rate = 1.0f;
  ASSERT_TRUE(executor_->Start(EchoTask(1, fail)).ok());
  ASSERT_TRUE(executor_->Start(EchoTask(2, crash)).ok());
  ASSERT_TRUE(executor_->Start(EchoTask(3, hang)).ok());
  std::vector<FinishedTask> finished = WaitFinished(*executor_, 3);
  ASSERT_EQ(finished.size(), 3u);
  for (const FinishedTask& task : finished) {
    EXPECT_EQ(task.outcome, msg::Outcome::FAILED) << task.error;
    EXPECT_NE(task.error.find("echo: asked to"), std::string::npos) << task.error;
  }
}

TEST_F(InProcessTaskExecutorTest, DelayPastTheTimeoutTimesOut) {
  EchoSpec spec;
  spec.delay_ms = 60'000;
  ASSERT_TRUE(executor_->Start(EchoTask(1, spec, /*timeout_ms=*/30)).ok());
  std::vector<FinishedTask> finished = WaitFinished(*executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].outcome, msg::Outcome::TIMED_OUT);
}

TEST_F(InProcessTaskExecutorTest, CancelReportsAtOnceAndCancelAllDrops) {
  EchoSpec spec;
  spec.delay_ms = 60'000;
  ASSERT_TRUE(executor_->Start(EchoTask(1, spec)).ok());
  ASSERT_TRUE(executor_->Start(EchoTask(2, spec)).ok());
  EXPECT_EQ(executor_->Start(EchoTask(2, spec)).code(), ErrorCode::kAlreadyExists);
  executor_->Cancel({1, 1});
  std::vector<FinishedTask> finished = WaitFinished(*executor_, 1);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].key, (TaskKey{1, 1}));
  EXPECT_EQ(finished[0].outcome, msg::Outcome::CANCELLED);
  executor_->CancelAll();
  EXPECT_TRUE(WaitFinished(*executor_, 1, milliseconds(100)).empty());
}

TEST_F(InProcessTaskExecutorTest, ManyExecutorsShareOnePoolAndOneWakeup) {
  std::shared_ptr<WakeupFd> shared = NewWakeup();
  std::vector<std::unique_ptr<InProcessTaskExecutor>> executors;
  for (int i = 0; i < 200; ++i) {
    executors.push_back(std::make_unique<InProcessTaskExecutor>(*pool_, shared));
    EchoSpec spec;
    spec.delay_ms = 20;
    spec.data = std::to_string(i);
    ASSERT_TRUE(executors.back()->Start(EchoTask(static_cast<uint64_t>(i), spec)).ok());
  }
  size_t done = 0;
  const auto deadline = steady_clock::now() + milliseconds(5000);
  while (done < executors.size() && steady_clock::now() < deadline) {
    pollfd fd{shared->fd(), POLLIN, 0};
    ASSERT_GE(::poll(&fd, 1, 20), 0);
    shared->Drain();
    for (auto& executor : executors) {
      for (const FinishedTask& task : executor->TakeFinished()) {
        EXPECT_EQ(task.output, Sha256Hex(std::to_string(task.key.task_id)));
        ++done;
      }
    }
  }
  EXPECT_EQ(done, executors.size());
}

}  // namespace
}  // namespace kfleet::worker
