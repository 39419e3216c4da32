#include "coordinator/scheduler.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "tests/unit/storage/test_util.h"

namespace kfleet::coordinator {
namespace {

using storage::TaskState;

constexpr int64_t kIntervalMs = 100;
constexpr int64_t kLiveness = 5;
constexpr int64_t kLeaseMs = 500;
constexpr int64_t kGraceMs = 1000;

// A Register message for a worker with `cpu_slots` CPU slots and optional H200s.
class RegisterMessage {
 public:
  RegisterMessage(const std::string& name, uint32_t cpu_slots, int gpus = 0,
                  const std::string& instance = "i-1") {
    msg::Register::Builder reg = builder_.initRoot<msg::Register>();
    reg.setProtocolVersion(1);
    reg.setInstanceId(instance);
    msg::Capabilities::Builder caps = reg.initCapabilities();
    caps.setNodeName(name);
    caps.setHostname(name + ".local");
    caps.initSlots().setCpu(cpu_slots);
    caps.getSlots().setGpuExclusive(static_cast<uint32_t>(gpus));
    caps.getSlots().setCompile(2);
    auto list = caps.initGpus(static_cast<unsigned>(gpus));
    for (int i = 0; i < gpus; ++i) {
      list[static_cast<unsigned>(i)].setBackend(msg::Backend::CUDA);
      list[static_cast<unsigned>(i)].setIndex(static_cast<uint32_t>(i));
      list[static_cast<unsigned>(i)].setName("NVIDIA H200");
      list[static_cast<unsigned>(i)].setArch("sm_90");
      list[static_cast<unsigned>(i)].setMemoryBytes(uint64_t{141} << 30);
    }
  }
  void SetHeld(const std::vector<std::pair<uint64_t, uint32_t>>& running) {
    auto list =
        builder_.getRoot<msg::Register>().initRunningTasks(static_cast<unsigned>(running.size()));
    for (size_t i = 0; i < running.size(); ++i) {
      list[static_cast<unsigned>(i)].setTaskId(running[i].first);
      list[static_cast<unsigned>(i)].setAttempt(running[i].second);
    }
  }
  msg::Register::Reader Reader() { return builder_.getRoot<msg::Register>().asReader(); }

 private:
  capnp::MallocMessageBuilder builder_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = storage::Store::Open(dir_.path() / "state", {}, clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    scheduler_ = MakeScheduler();
    ASSERT_TRUE(scheduler_->Recover().ok());
  }

  std::unique_ptr<Scheduler> MakeScheduler() {
    return std::make_unique<Scheduler>(
        *store_, clock_, outbox_,
        SchedulerOptions{kIntervalMs, kLiveness, kLeaseMs, kGraceMs, 60'000, 512});
  }

  int64_t SubmitJob(int tasks, double priority = 0, bool gpu = false) {
    storage::NewJob job;
    job.kind = storage::JobKind::kDiag;
    job.name = "test";
    auto job_id = store_->jobs().Create(job);
    EXPECT_TRUE(job_id.ok());
    std::vector<storage::NewTask> list;
    for (int i = 0; i < tasks; ++i) {
      storage::NewTask task;
      task.job_id = *job_id;
      task.priority = priority;
      task.backend = gpu ? storage::Backend::kCuda : storage::Backend::kCpu;
      task.exclusive_device = gpu;
      task.kind = gpu ? storage::TaskKind::kProfile : storage::TaskKind::kEcho;
      task.max_attempts = 2;
      list.push_back(task);
    }
    EXPECT_TRUE(store_->tasks().EnqueueMany(list).ok());
    EXPECT_TRUE(scheduler_->JobSubmitted(*job_id).ok());
    return *job_id;
  }

  void Register(const std::string& routing, RegisterMessage& reg, const std::string& user = "") {
    ASSERT_TRUE(scheduler_->OnRegister(routing, user, reg.Reader()).ok());
  }

  // Runs one turn of timers and dispatch; returns the messages it decided to send.
  std::vector<OutgoingMessage> Turn() {
    EXPECT_TRUE(scheduler_->Tick().ok());
    EXPECT_TRUE(scheduler_->Dispatch().ok());
    EXPECT_TRUE(scheduler_->SettleJobs().ok());
    return outbox_.Take();
  }

  static size_t Count(const std::vector<OutgoingMessage>& messages, msg::MessageType type) {
    return static_cast<size_t>(
        std::count_if(messages.begin(), messages.end(),
                      [&](const OutgoingMessage& m) { return m.type == type; }));
  }

  // The messages of one type, taken out of `messages`.
  static std::vector<OutgoingMessage> OfType(std::vector<OutgoingMessage> messages,
                                             msg::MessageType type) {
    std::vector<OutgoingMessage> out;
    for (OutgoingMessage& m : messages) {
      if (m.type == type) out.push_back(std::move(m));
    }
    return out;
  }

  Status SendResult(const std::string& routing, uint64_t task, uint32_t attempt,
                    msg::Outcome outcome = msg::Outcome::OK) {
    capnp::MallocMessageBuilder builder;
    msg::TaskResult::Builder result = builder.initRoot<msg::TaskResult>();
    result.setTaskId(task);
    result.setAttempt(attempt);
    result.setOutcome(outcome);
    if (outcome != msg::Outcome::OK) result.setError("boom");
    return scheduler_->OnResult(routing, result.asReader());
  }

  storage::TaskRow Task(int64_t id) { return store_->tasks().Get(id).value(); }

  storage::testing::TempDir dir_;
  FakeClock clock_;
  Outbox outbox_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, RegisterIsWelcomedAndFillsTheNodeTable) {
  RegisterMessage reg("w1", 2, /*gpus=*/1);
  Register("r1", reg);
  auto out = outbox_.Take();
  auto welcome = OfType(std::move(out), msg::MessageType::WELCOME);
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0].routing_id, "r1");
  auto root = welcome[0].body->getRoot<msg::Welcome>();
  EXPECT_EQ(root.getHeartbeatIntervalMs(), kIntervalMs);
  EXPECT_EQ(root.getLiveness(), kLiveness);
  auto node = store_->nodes().GetByName("w1");
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(node->state, storage::NodeState::kOnline);
  EXPECT_EQ(store_->nodes().Devices(node->id)->size(), 1u);
}

TEST_F(SchedulerTest, BadNamesWrongKeysAndDuplicatesAreRejected) {
  RegisterMessage bad("../etc", 1);
  Register("r0", bad);
  RegisterMessage w1("w1", 1, 0, "i-1");
  Register("r1", w1, /*user=*/"w2");  // key issued for w2
  Register("r2", w1, /*user=*/"w1");
  RegisterMessage impostor("w1", 1, 0, "i-other");
  Register("r3", impostor, "w1");
  auto rejects = OfType(outbox_.Take(), msg::MessageType::REJECT);
  ASSERT_EQ(rejects.size(), 3u);
  EXPECT_EQ(rejects[0].body->getRoot<msg::Reject>().getReason(), msg::RejectReason::MALFORMED);
  EXPECT_EQ(rejects[1].body->getRoot<msg::Reject>().getReason(), msg::RejectReason::UNKNOWN_KEY);
  EXPECT_EQ(rejects[2].routing_id, "r3");
  EXPECT_EQ(rejects[2].body->getRoot<msg::Reject>().getReason(), msg::RejectReason::DUPLICATE_NAME);
  EXPECT_EQ(scheduler_->session_count(), 1u);
}

TEST_F(SchedulerTest, AssignsUpToFreeSlotsAndCompletesExactlyOnce) {
  RegisterMessage reg("w1", 2);
  Register("r1", reg);
  int64_t job = SubmitJob(3);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 2u) << "two CPU slots";
  auto first = assigns[0].body->getRoot<msg::Assign>();
  EXPECT_EQ(first.getAttempt(), 1u);
  EXPECT_EQ(first.getKind(), "echo");
  EXPECT_EQ(store_->jobs().Get(job)->state, storage::JobState::kRunning);

  ASSERT_TRUE(SendResult("r1", first.getTaskId(), 1).ok());
  ASSERT_TRUE(SendResult("r1", first.getTaskId(), 1).ok());  // duplicate: acked, ignored
  auto out = Turn();
  EXPECT_EQ(Count(out, msg::MessageType::ACK), 2u);
  EXPECT_EQ(Count(out, msg::MessageType::ASSIGN), 1u) << "the freed slot is reused";
  EXPECT_EQ(Task(static_cast<int64_t>(first.getTaskId())).state, TaskState::kDone);
  EXPECT_EQ(store_->tasks().Attempts(static_cast<int64_t>(first.getTaskId()))->size(), 1u);
}

TEST_F(SchedulerTest, JobFinishesWhenEveryTaskEnded) {
  RegisterMessage reg("w1", 4);
  Register("r1", reg);
  int64_t job = SubmitJob(2);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 2u);
  for (const OutgoingMessage& m : assigns) {
    ASSERT_TRUE(SendResult("r1", m.body->getRoot<msg::Assign>().getTaskId(), 1).ok());
  }
  Turn();
  auto row = store_->jobs().Get(job);
  EXPECT_EQ(row->state, storage::JobState::kDone);
  EXPECT_TRUE(row->finished_us.has_value());
}

TEST_F(SchedulerTest, FailedAttemptsRetryThenFailTheJob) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  int64_t job = SubmitJob(1);  // max_attempts = 2
  for (uint32_t attempt = 1; attempt <= 2; ++attempt) {
    auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
    ASSERT_EQ(assigns.size(), 1u) << "attempt " << attempt;
    auto assign = assigns[0].body->getRoot<msg::Assign>();
    EXPECT_EQ(assign.getAttempt(), attempt);
    ASSERT_TRUE(SendResult("r1", assign.getTaskId(), attempt, msg::Outcome::CRASHED).ok());
  }
  Turn();
  auto row = store_->jobs().Get(job);
  EXPECT_EQ(row->state, storage::JobState::kFailed);
  EXPECT_EQ(*store_->tasks().RetryCount(job), 1);
}

TEST_F(SchedulerTest, SilentWorkerIsLostAndItsTasksGoElsewhere) {
  RegisterMessage a("a", 1), b("b", 1);
  Register("ra", a);
  int64_t job = SubmitJob(1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  Register("rb", b);
  outbox_.Take();

  // b keeps talking, a goes silent for more than liveness x interval.
  for (int i = 0; i < 7; ++i) {
    clock_.AdvanceMs(kIntervalMs);
    scheduler_->Heard("rb");
    Turn();
  }
  EXPECT_EQ(store_->nodes().GetByName("a")->state, storage::NodeState::kLost);
  EXPECT_EQ(scheduler_->session_count(), 1u);
  auto row = Task(static_cast<int64_t>(task));
  EXPECT_EQ(row.state, TaskState::kLeased);
  EXPECT_EQ(row.attempt, 2u);
  EXPECT_EQ(row.node_id, store_->nodes().GetByName("b")->id);
  ASSERT_TRUE(SendResult("ra", task, 1).ok());  // the lost worker's late result: stale
  ASSERT_TRUE(SendResult("rb", task, 2).ok());
  Turn();
  EXPECT_EQ(Task(static_cast<int64_t>(task)).state, TaskState::kDone);
  EXPECT_EQ(*store_->tasks().RetryCount(job), 1);
}

TEST_F(SchedulerTest, LeaseExpiresWhenHeartbeatsStopListingTheTask) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  SubmitJob(1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  // The worker is alive but never mentions the task (the Assign was lost).
  capnp::MallocMessageBuilder builder;
  msg::Heartbeat::Builder beat = builder.initRoot<msg::Heartbeat>();
  for (int i = 0; i < 6; ++i) {
    clock_.AdvanceMs(kIntervalMs);
    scheduler_->Heard("r1");
    ASSERT_TRUE(scheduler_->OnHeartbeat("r1", beat.asReader()).ok());
    Turn();
  }
  auto row = Task(static_cast<int64_t>(task));
  EXPECT_EQ(row.attempt, 2u) << "requeued and leased again";
  auto attempts = store_->tasks().Attempts(static_cast<int64_t>(task));
  ASSERT_GE(attempts->size(), 1u);
  EXPECT_EQ((*attempts)[0].outcome, storage::AttemptOutcome::kLost);
}

TEST_F(SchedulerTest, HeartbeatListingTheTaskKeepsTheLease) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  SubmitJob(1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  capnp::MallocMessageBuilder builder;
  msg::Heartbeat::Builder beat = builder.initRoot<msg::Heartbeat>();
  beat.initRunningTasks(1)[0].setTaskId(task);
  beat.getRunningTasks()[0].setAttempt(1);
  for (int i = 0; i < 20; ++i) {
    clock_.AdvanceMs(kIntervalMs);
    scheduler_->Heard("r1");
    ASSERT_TRUE(scheduler_->OnHeartbeat("r1", beat.asReader()).ok());
    Turn();
  }
  EXPECT_EQ(Task(static_cast<int64_t>(task)).attempt, 1u);
  EXPECT_EQ(Task(static_cast<int64_t>(task)).state, TaskState::kLeased);
}

TEST_F(SchedulerTest, RestartKeepsLeasesTheWorkerReclaimsAndRequeuesTheRest) {
  RegisterMessage reg("w1", 2);
  Register("r1", reg);
  SubmitJob(2);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 2u);
  const uint64_t kept = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  const uint64_t dropped = assigns[1].body->getRoot<msg::Assign>().getTaskId();

  // A new coordinator process: same store, no sessions.
  scheduler_ = MakeScheduler();
  ASSERT_TRUE(scheduler_->Recover().ok());
  EXPECT_EQ(scheduler_->lease_count(), 2u);
  RegisterMessage again("w1", 2);
  again.SetHeld({{kept, 1}, {999, 1}});
  Register("r1-new", again);
  auto out = Turn();
  auto cancels = OfType(std::move(out), msg::MessageType::CANCEL);
  ASSERT_EQ(cancels.size(), 1u) << "the unknown running task is stale";
  EXPECT_EQ(cancels[0].body->getRoot<msg::Cancel>().getTaskId(), 999u);
  EXPECT_EQ(Task(static_cast<int64_t>(kept)).attempt, 1u);
  EXPECT_EQ(Task(static_cast<int64_t>(kept)).state, TaskState::kLeased);
  EXPECT_EQ(Task(static_cast<int64_t>(dropped)).attempt, 2u) << "requeued and leased again";
}

TEST_F(SchedulerTest, UnclaimedLeasesWaitTheGraceThenRequeue) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  SubmitJob(1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  scheduler_ = MakeScheduler();
  ASSERT_TRUE(scheduler_->Recover().ok());
  clock_.AdvanceMs(kGraceMs - 10);
  Turn();
  EXPECT_EQ(Task(static_cast<int64_t>(task)).state, TaskState::kLeased);
  clock_.AdvanceMs(20);
  Turn();
  EXPECT_EQ(Task(static_cast<int64_t>(task)).state, TaskState::kQueued);
}

TEST_F(SchedulerTest, HigherPriorityFirstButOldWorkAges) {
  RegisterMessage reg("w1", 1);
  int64_t low = SubmitJob(1, /*priority=*/0);
  clock_.AdvanceMs(5 * 60'000);  // low waited five aging periods
  int64_t high = SubmitJob(1, /*priority=*/3);
  int64_t higher = SubmitJob(1, /*priority=*/9);
  Register("r1", reg);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(static_cast<int64_t>(assigns[0].body->getRoot<msg::Assign>().getJobId()), higher);
  ASSERT_TRUE(SendResult("r1", assigns[0].body->getRoot<msg::Assign>().getTaskId(), 1).ok());
  assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(static_cast<int64_t>(assigns[0].body->getRoot<msg::Assign>().getJobId()), low)
      << "5 priority levels of ageing beat a priority 3 job submitted now";
  (void)high;
}

TEST_F(SchedulerTest, ExclusiveGpuWorkGoesOnlyToNodesWithTheDevice) {
  RegisterMessage cpu_only("cpu", 8), gpu("gpu", 1, /*gpus=*/1);
  Register("rc", cpu_only);
  SubmitJob(2, 0, /*gpu=*/true);
  EXPECT_TRUE(OfType(Turn(), msg::MessageType::ASSIGN).empty());
  Register("rg", gpu);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u) << "one exclusive slot";
  EXPECT_EQ(assigns[0].routing_id, "rg");
}

// CUDA work of one job: `tests` GPU tests (compile slots) and `timings` timing tasks (exclusive),
// the timings at a higher priority, as the conductor queues them.
int64_t SubmitCudaWork(storage::Store& store, Scheduler& scheduler, int tests, int timings) {
  storage::NewJob job;
  job.kind = storage::JobKind::kDiag;
  job.name = "cuda";
  auto job_id = store.jobs().Create(job);
  EXPECT_TRUE(job_id.ok());
  std::vector<storage::NewTask> list;
  for (int i = 0; i < tests + timings; ++i) {
    storage::NewTask task;
    task.job_id = *job_id;
    task.backend = storage::Backend::kCuda;
    task.exclusive_device = i >= tests;
    task.priority = task.exclusive_device ? 3 : 2;
    task.kind = task.exclusive_device ? storage::TaskKind::kProfile : storage::TaskKind::kTest;
    task.max_attempts = 2;
    list.push_back(task);
  }
  EXPECT_TRUE(store.tasks().EnqueueMany(list).ok());
  EXPECT_TRUE(scheduler.JobSubmitted(*job_id).ok());
  return *job_id;
}

TEST_F(SchedulerTest, OnAOneGpuNodeTimingWaitsForTheTestsAndRunsWithoutThem) {
  RegisterMessage reg("gpu", 2, /*gpus=*/1);  // 2 CPU slots, 2 compile slots, 1 GPU
  Register("rg", reg);
  SubmitCudaWork(*store_, *scheduler_, /*tests=*/1, /*timings=*/0);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  const uint64_t test = assigns[0].body->getRoot<msg::Assign>().getTaskId();

  // A timing task and more tests arrive while the test runs: the timing waits for it, and the
  // new tests wait behind the timing (the node is reserved for it).
  SubmitCudaWork(*store_, *scheduler_, /*tests=*/2, /*timings=*/1);
  EXPECT_TRUE(OfType(Turn(), msg::MessageType::ASSIGN).empty());
  // Plan / code work (CPU slots) goes on meanwhile.
  SubmitJob(1);
  assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(assigns[0].body->getRoot<msg::Assign>().getKind(), "echo");

  // The test ends: the timing starts, alone on the GPU.
  ASSERT_TRUE(SendResult("rg", test, 1).ok());
  assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(assigns[0].body->getRoot<msg::Assign>().getKind(), "profile");
  const uint64_t timing = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  EXPECT_TRUE(OfType(Turn(), msg::MessageType::ASSIGN).empty()) << "no test beside the timing";

  // The timing ends: the tests run.
  ASSERT_TRUE(SendResult("rg", timing, 1).ok());
  assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 2u);
  for (const auto& a : assigns) EXPECT_EQ(a.body->getRoot<msg::Assign>().getKind(), "test");
}

TEST_F(SchedulerTest, OnANodeWithSeveralGpusTestsRunBesideATiming) {
  RegisterMessage reg("gpus", 2, /*gpus=*/2);
  Register("rg", reg);
  SubmitCudaWork(*store_, *scheduler_, /*tests=*/2, /*timings=*/1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  EXPECT_EQ(assigns.size(), 3u) << "the other GPU takes the tests";
}

TEST_F(SchedulerTest, ARecoveredTimingLeaseStillKeepsTestsOffItsGpu) {
  RegisterMessage reg("gpu", 2, /*gpus=*/1);
  Register("rg", reg);
  SubmitCudaWork(*store_, *scheduler_, /*tests=*/0, /*timings=*/1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  const uint64_t timing = assigns[0].body->getRoot<msg::Assign>().getTaskId();

  // The coordinator restarts; the worker comes back holding the timing task.
  scheduler_ = MakeScheduler();
  ASSERT_TRUE(scheduler_->Recover().ok());
  RegisterMessage back("gpu", 2, /*gpus=*/1, "i-1");
  back.SetHeld({{timing, 1}});
  Register("rg2", back);
  SubmitCudaWork(*store_, *scheduler_, /*tests=*/1, /*timings=*/0);
  EXPECT_TRUE(OfType(Turn(), msg::MessageType::ASSIGN).empty());
  ASSERT_TRUE(SendResult("rg2", timing, 1).ok());
  EXPECT_EQ(OfType(Turn(), msg::MessageType::ASSIGN).size(), 1u);
}

TEST_F(SchedulerTest, DrainStopsNewWorkAndRemoveRequeues) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  SubmitJob(2);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  ASSERT_EQ(assigns.size(), 1u);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  ASSERT_TRUE(scheduler_->Drain("w1").ok());
  EXPECT_EQ(OfType(outbox_.Take(), msg::MessageType::DRAIN).size(), 1u);
  ASSERT_TRUE(SendResult("r1", task, 1).ok());
  EXPECT_TRUE(OfType(Turn(), msg::MessageType::ASSIGN).empty()) << "draining: no new work";
  EXPECT_EQ(store_->nodes().GetByName("w1")->state, storage::NodeState::kDraining);

  ASSERT_TRUE(scheduler_->Remove("w1", "removed by test", /*revoked=*/false).ok());
  EXPECT_EQ(OfType(outbox_.Take(), msg::MessageType::BYE).size(), 1u);
  EXPECT_EQ(store_->nodes().GetByName("w1")->state, storage::NodeState::kRemoved);
  EXPECT_EQ(scheduler_->Drain("nope").code(), ErrorCode::kNotFound);
}

TEST_F(SchedulerTest, CancelJobTellsTheWorkersAndFreesSlots) {
  RegisterMessage reg("w1", 2);
  Register("r1", reg);
  int64_t job = SubmitJob(3);
  ASSERT_EQ(OfType(Turn(), msg::MessageType::ASSIGN).size(), 2u);
  auto cancelled = scheduler_->CancelJob(job);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(*cancelled, 3);
  EXPECT_EQ(OfType(outbox_.Take(), msg::MessageType::CANCEL).size(), 2u);
  EXPECT_EQ(store_->jobs().Get(job)->state, storage::JobState::kCancelled);
  EXPECT_EQ(scheduler_->lease_count(), 0u);
}

TEST_F(SchedulerTest, ByeRequeuesAtOnce) {
  RegisterMessage reg("w1", 1);
  Register("r1", reg);
  SubmitJob(1);
  auto assigns = OfType(Turn(), msg::MessageType::ASSIGN);
  const uint64_t task = assigns[0].body->getRoot<msg::Assign>().getTaskId();
  ASSERT_TRUE(scheduler_->OnBye("r1", "SIGTERM").ok());
  EXPECT_EQ(Task(static_cast<int64_t>(task)).state, TaskState::kQueued);
  EXPECT_EQ(scheduler_->session_count(), 0u);
}

}  // namespace
}  // namespace kfleet::coordinator
