// WorkerSession against a scripted coordinator: a ROUTER socket on 127.0.0.1 that the test
// answers by hand. Sockets are real; time is a FakeClock the test advances, so heartbeats,
// liveness and backoff are checked without waiting for them.
#include "worker/session.h"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <thread>

#include "common/ids.h"
#include "common/temp_dir.h"
#include "messages/curve.h"
#include "messages/transport.h"
#include "worker/echo_task.h"

namespace kfleet::worker {
namespace {

using msg::MessageType;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Runs nothing: the test decides when a task finishes, and sees what was started and cancelled.
class FakeExecutor final : public TaskExecutor {
 public:
  FakeExecutor() : queue_(*WakeupFd::Create()) {}

  bool Runs(std::string_view kind) const override { return kind == "echo"; }
  Status Start(const AssignedTask& task) override {
    started.push_back(task.key);
    devices[task.key] = task.device;
    return Status::Ok();
  }
  void Cancel(const TaskKey& key) override {
    cancelled.push_back(key);
    Complete(key, msg::Outcome::CANCELLED);
  }
  void CancelAll() override { ++cancel_all_calls; }
  std::vector<FinishedTask> TakeFinished() override { return queue_.TakeAll(); }
  WakeupFd& wakeup() override { return queue_.wakeup(); }

  void Complete(const TaskKey& key, msg::Outcome outcome, std::string output = "") {
    FinishedTask finished;
    finished.key = key;
    finished.outcome = outcome;
    finished.output = std::move(output);
    finished.started_us = 1;
    finished.finished_us = 2;
    queue_.Push(std::move(finished));
  }

  std::vector<TaskKey> started;
  std::map<TaskKey, int> devices;  // the GPU each started task was given
  std::vector<TaskKey> cancelled;
  int cancel_all_calls = 0;

 private:
  FinishedQueue queue_;
};

std::vector<TaskKey> Keys(capnp::List<msg::TaskRef>::Reader refs) {
  std::vector<TaskKey> keys;
  for (msg::TaskRef::Reader ref : refs) keys.push_back({ref.getTaskId(), ref.getAttempt()});
  return keys;
}

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

std::string Bytes(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> temp = TempDir::Create("kfleet-session");
    ASSERT_TRUE(temp.ok()) << temp.status().ToString();
    temp_.emplace(std::move(temp).value());
    dir_ = temp_->path();
    ASSERT_TRUE(msg::ConfigureSocket(router_, {}).ok());
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  void TearDown() override { session_.reset(); }

  SessionOptions Options() {
    SessionOptions options;
    options.endpoint = endpoint_;
    options.node_name = "gpu-7";
    options.worker_version = "0.1.0-test";
    options.probe.hostname = "host-a";
    options.probe.cpu.model = "Test CPU";
    options.probe.cpu.cores = 4;
    options.probe.cpu.threads = 8;
    options.probe.cpu.features = {"avx2", "fma"};
    GpuInfo gpu;
    gpu.backend = "cuda";
    gpu.name = "NVIDIA H200";
    gpu.arch = "sm_90";
    gpu.memory_bytes = uint64_t{141} << 30;
    options.probe.gpus = {gpu};
    options.probe.toolchains = {{"g++", "12.2.0", "/usr/bin/g++"}};
    options.slots = {2, 1, 4};
    options.spool_dir = dir_ / "results";
    options.random = &random_;
    options.on_status = [this](const std::string& line, bool problem) {
      status_lines_.push_back((problem ? "! " : "") + line);
    };
    return options;
  }

  // With no executor given, a FakeExecutor (executor_) runs the tasks.
  void Start(SessionOptions options, std::unique_ptr<TaskExecutor> executor = nullptr) {
    if (executor == nullptr) {
      auto fake = std::make_unique<FakeExecutor>();
      executor_ = fake.get();
      executor = std::move(fake);
    }
    Result<std::unique_ptr<WorkerSession>> session =
        WorkerSession::Create(context_, std::move(options), std::move(executor), clock_);
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    session_ = std::move(session).value();
  }

  // One round of the loop a worker runs: wait (really) for input, then read and tick at the fake
  // time; whatever reaches the coordinator goes to inbox_.
  void PumpOnce(milliseconds wait = milliseconds(5)) {
    std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                          {nullptr, session_->wakeup_fd(), ZMQ_POLLIN, 0}};
    if (zmq::socket_t* socket = session_->socket()) {
      items.push_back({socket->handle(), 0, ZMQ_POLLIN, 0});
    }
    zmq::poll(items, wait);
    if (items.size() > 2 && (items[2].revents & ZMQ_POLLIN) != 0) session_->OnReadable();
    session_->Tick(clock_.MonotonicUs());
    while (true) {
      Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(router_, true);
      ASSERT_TRUE(received.ok()) << received.status().ToString();
      if (!received->has_value()) break;
      worker_id_ = (*received)->routing_id;
      inbox_.push_back(std::move(**received));
    }
  }

  template <typename Done>
  bool PumpUntil(Done done, milliseconds timeout = milliseconds(3000)) {
    const auto deadline = steady_clock::now() + timeout;
    while (!done()) {
      if (steady_clock::now() > deadline) return false;
      PumpOnce();
    }
    return true;
  }

  // The first message of `type` to reach the coordinator; others stay in the inbox.
  std::optional<msg::ReceivedMessage> Expect(MessageType type,
                                             milliseconds timeout = milliseconds(3000)) {
    auto find = [&] {
      return std::find_if(inbox_.begin(), inbox_.end(), [type](const msg::ReceivedMessage& m) {
        return m.message.type() == type;
      });
    };
    if (!PumpUntil([&] { return find() != inbox_.end(); }, timeout)) {
      ADD_FAILURE() << "no " << msg::MessageTypeName(type) << " reached the coordinator";
      return std::nullopt;
    }
    auto it = find();
    msg::ReceivedMessage message = std::move(*it);
    inbox_.erase(it);
    return message;
  }

  size_t Count(MessageType type) const {
    return static_cast<size_t>(
        std::count_if(inbox_.begin(), inbox_.end(),
                      [type](const msg::ReceivedMessage& m) { return m.message.type() == type; }));
  }

  template <typename T>
  void Send(capnp::MallocMessageBuilder& builder) {
    ASSERT_TRUE(msg::Send<T>(router_, builder, worker_id_).ok());
  }

  void SendWelcome(uint32_t interval_ms = 1000, uint32_t liveness = 5, uint64_t epoch = 1) {
    capnp::MallocMessageBuilder builder;
    msg::Welcome::Builder welcome = builder.initRoot<msg::Welcome>();
    welcome.setNodeId(12);
    welcome.setHeartbeatIntervalMs(interval_ms);
    welcome.setLiveness(liveness);
    welcome.setCoordinatorEpoch(epoch);
    Send<msg::Welcome>(builder);
  }

  void SendReject(msg::RejectReason reason, const std::string& text) {
    capnp::MallocMessageBuilder builder;
    msg::Reject::Builder reject = builder.initRoot<msg::Reject>();
    reject.setReason(reason);
    reject.setMessage(text);
    Send<msg::Reject>(builder);
  }

  // `cuda` makes a non-exclusive task a GPU one (a test); exclusive tasks are GPU timing anyway.
  void SendAssign(const TaskKey& key, const std::string& kind = "echo",
                  const std::string& payload = BuildEchoPayload(EchoSpec{}),
                  bool exclusive_device = false, bool cuda = false) {
    capnp::MallocMessageBuilder builder;
    msg::Assign::Builder assign = builder.initRoot<msg::Assign>();
    assign.setTaskId(key.task_id);
    assign.setAttempt(key.attempt);
    assign.setJobId(3);
    assign.setKind(kind);
    // An exclusive task here is GPU timing; CPU timing takes a CPU slot (and the whole node).
    msg::Requirements::Builder requirements = assign.initRequirements();
    requirements.setExclusiveDevice(exclusive_device);
    if (exclusive_device || cuda) requirements.setBackend(msg::Backend::CUDA);
    assign.setLeaseMs(5000);
    assign.setTimeoutMs(60'000);
    assign.setPayload(
        capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(payload.data()), payload.size()));
    Send<msg::Assign>(builder);
  }

  void SendAck(const TaskKey& key) {
    capnp::MallocMessageBuilder builder;
    msg::Ack::Builder ack = builder.initRoot<msg::Ack>();
    ack.setTaskId(key.task_id);
    ack.setAttempt(key.attempt);
    Send<msg::Ack>(builder);
  }

  // Register, Welcome, registered.
  void Join(uint32_t interval_ms = 1000, uint32_t liveness = 5) {
    ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
    SendWelcome(interval_ms, liveness);
    ASSERT_TRUE(PumpUntil([&] { return session_->state() == SessionState::kRegistered; }));
  }

  void AssignAndWaitStarted(const TaskKey& key) {
    SendAssign(key);
    ASSERT_TRUE(PumpUntil([&] {
      return std::find(executor_->started.begin(), executor_->started.end(), key) !=
             executor_->started.end();
    }));
  }

  std::filesystem::path SpoolFile(const TaskKey& key) const {
    return dir_ / "results" /
           (std::to_string(key.task_id) + "-" + std::to_string(key.attempt) + ".result");
  }

  std::optional<TempDir> temp_;  // removed, with everything in it, after TearDown
  std::filesystem::path dir_;
  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string endpoint_;
  std::string worker_id_;  // routing id of the worker's current socket
  std::deque<msg::ReceivedMessage> inbox_;
  FakeClock clock_;
  SeededRandom random_{7};
  std::vector<std::string> status_lines_;
  FakeExecutor* executor_ = nullptr;  // owned by session_
  std::unique_ptr<WorkerSession> session_;
};

TEST_F(SessionTest, RegistersWithCapabilitiesAndInstanceId) {
  Start(Options());
  std::optional<msg::ReceivedMessage> received = Expect(MessageType::REGISTER);
  ASSERT_TRUE(received.has_value());
  msg::Register::Reader request = *received->message.Root<msg::Register>();
  EXPECT_EQ(request.getProtocolVersion(), msg::kProtocolVersion);
  EXPECT_EQ(Text(request.getInstanceId()), session_->instance_id());
  EXPECT_TRUE(session_->instance_id().starts_with("instance-"));
  EXPECT_EQ(request.getRunningTasks().size(), 0u);
  EXPECT_EQ(request.getFinishedTasks().size(), 0u);
  msg::Capabilities::Reader capabilities = request.getCapabilities();
  EXPECT_EQ(Text(capabilities.getNodeName()), "gpu-7");
  EXPECT_EQ(Text(capabilities.getHostname()), "host-a");
  EXPECT_EQ(Text(capabilities.getWorkerVersion()), "0.1.0-test");
  EXPECT_EQ(capabilities.getCpu().getCores(), 4u);
  EXPECT_EQ(capabilities.getCpu().getFeatures().size(), 2u);
  ASSERT_EQ(capabilities.getGpus().size(), 1u);
  EXPECT_EQ(capabilities.getGpus()[0].getBackend(), msg::Backend::CUDA);
  EXPECT_EQ(Text(capabilities.getGpus()[0].getArch()), "sm_90");
  EXPECT_EQ(Text(capabilities.getToolchains()[0].getName()), "g++");
  EXPECT_EQ(capabilities.getSlots().getCpu(), 2u);
  EXPECT_EQ(capabilities.getSlots().getGpuExclusive(), 1u);
  EXPECT_EQ(capabilities.getSlots().getCompile(), 4u);
  EXPECT_EQ(session_->state(), SessionState::kRegistering);

  SendWelcome();
  ASSERT_TRUE(PumpUntil([&] { return session_->state() == SessionState::kRegistered; }));
  EXPECT_EQ(session_->node_id(), 12u);
  ASSERT_FALSE(status_lines_.empty());
  EXPECT_EQ(status_lines_.back().rfind("kfleet-worker gpu-7: registered as node 12", 0), 0u)
      << status_lines_.back();
}

TEST_F(SessionTest, WelcomeSetsTheHeartbeatAndLiveness) {
  Start(Options());
  Join(/*interval_ms=*/200, /*liveness=*/3);
  EXPECT_EQ(session_->NextDeadlineUs(), clock_.MonotonicUs() + 200'000);
  clock_.AdvanceMs(199);
  PumpOnce(milliseconds(30));
  EXPECT_EQ(Count(MessageType::HEARTBEAT), 0u);
  clock_.AdvanceMs(1);
  std::optional<msg::ReceivedMessage> beat = Expect(MessageType::HEARTBEAT);
  ASSERT_TRUE(beat.has_value());
  EXPECT_EQ(beat->message.Root<msg::Heartbeat>()->getSequence(), 1u);
  EXPECT_EQ(beat->message.Root<msg::Heartbeat>()->getSentUs(), clock_.NowUs());
  // Silent for liveness x interval = 600 ms: the coordinator counts as gone.
  clock_.AdvanceMs(400);
  PumpOnce();
  EXPECT_EQ(session_->state(), SessionState::kDisconnected);
  EXPECT_EQ(session_->socket(), nullptr);
}

TEST_F(SessionTest, AssignRunsAndTheResultIsSpooledUntilAcked) {
  Start(Options());
  Join();
  const TaskKey key{5, 1};
  AssignAndWaitStarted(key);
  EXPECT_EQ(session_->running_count(), 1u);
  executor_->Complete(key, msg::Outcome::OK, "the output");
  std::optional<msg::ReceivedMessage> received = Expect(MessageType::RESULT);
  ASSERT_TRUE(received.has_value());
  msg::TaskResult::Reader result = *received->message.Root<msg::TaskResult>();
  EXPECT_EQ(result.getTaskId(), 5u);
  EXPECT_EQ(result.getAttempt(), 1u);
  EXPECT_EQ(result.getOutcome(), msg::Outcome::OK);
  EXPECT_EQ(Bytes(result.getOutput()), "the output");
  EXPECT_TRUE(std::filesystem::exists(SpoolFile(key)));
  EXPECT_EQ(session_->running_count(), 0u);
  EXPECT_EQ(session_->unacked_count(), 1u);

  // Unacknowledged, it is still held: heartbeats list it so its lease is kept.
  clock_.AdvanceMs(1000);
  std::optional<msg::ReceivedMessage> beat = Expect(MessageType::HEARTBEAT);
  ASSERT_TRUE(beat.has_value());
  EXPECT_EQ(Keys(beat->message.Root<msg::Heartbeat>()->getRunningTasks()),
            std::vector<TaskKey>{key});

  SendAck(key);
  ASSERT_TRUE(PumpUntil([&] { return session_->unacked_count() == 0; }));
  EXPECT_FALSE(std::filesystem::exists(SpoolFile(key)));
  EXPECT_EQ(session_->counters().results_acked, 1u);
}

TEST_F(SessionTest, SilenceMeansANewSocketThatListsRunningAndFinishedTasksAndResends) {
  Start(Options());
  Join();
  const std::string first_socket = worker_id_;
  const TaskKey running{1, 1}, finished{2, 1};
  AssignAndWaitStarted(running);
  AssignAndWaitStarted(finished);
  executor_->Complete(finished, msg::Outcome::FAILED);
  ASSERT_TRUE(Expect(MessageType::RESULT).has_value());

  // No Ack and nothing else for liveness x interval.
  clock_.AdvanceMs(5000);
  PumpOnce();
  EXPECT_EQ(session_->state(), SessionState::kDisconnected);
  EXPECT_EQ(executor_->cancel_all_calls, 0) << "running tasks must survive a reconnect";
  clock_.AdvanceMs(1000);  // the first backoff
  std::optional<msg::ReceivedMessage> again = Expect(MessageType::REGISTER);
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(worker_id_, first_socket);
  msg::Register::Reader request = *again->message.Root<msg::Register>();
  EXPECT_EQ(Keys(request.getRunningTasks()), std::vector<TaskKey>{running});
  EXPECT_EQ(Keys(request.getFinishedTasks()), std::vector<TaskKey>{finished});
  EXPECT_EQ(Text(request.getInstanceId()), session_->instance_id());

  SendWelcome();
  std::optional<msg::ReceivedMessage> resent = Expect(MessageType::RESULT);
  ASSERT_TRUE(resent.has_value());
  EXPECT_EQ(resent->message.Root<msg::TaskResult>()->getTaskId(), finished.task_id);
  EXPECT_EQ(resent->message.Root<msg::TaskResult>()->getOutcome(), msg::Outcome::FAILED);
  EXPECT_EQ(session_->counters().connects, 2u);
  EXPECT_EQ(session_->counters().registrations, 2u);
}

TEST_F(SessionTest, CancelAheadOfTheWelcomeStopsStaleWork) {
  Start(Options());
  Join();
  AssignAndWaitStarted({1, 1});
  clock_.AdvanceMs(5000);
  PumpOnce();
  clock_.AdvanceMs(1000);
  ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
  // The coordinator no longer leases {1, 1} to this node: it says so before welcoming it.
  capnp::MallocMessageBuilder builder;
  msg::Cancel::Builder cancel = builder.initRoot<msg::Cancel>();
  cancel.setTaskId(1);
  cancel.setAttempt(1);
  cancel.setReason("stale: this attempt no longer holds the task's lease");
  Send<msg::Cancel>(builder);
  SendWelcome();
  std::optional<msg::ReceivedMessage> result = Expect(MessageType::RESULT);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->message.Root<msg::TaskResult>()->getOutcome(), msg::Outcome::CANCELLED);
  EXPECT_EQ(executor_->cancelled, (std::vector<TaskKey>{{1, 1}}));
  EXPECT_EQ(session_->counters().dropped_unexpected, 0u);
}

TEST_F(SessionTest, ARestartedWorkerResendsWhatItFinishedBeforeTheAck) {
  Start(Options());
  Join();
  const std::string first_instance = session_->instance_id();
  AssignAndWaitStarted({9, 2});
  executor_->Complete({9, 2}, msg::Outcome::OK, "kept on disk");
  ASSERT_TRUE(Expect(MessageType::RESULT).has_value());
  session_.reset();  // killed before the Ack

  Start(Options());
  std::optional<msg::ReceivedMessage> received = Expect(MessageType::REGISTER);
  ASSERT_TRUE(received.has_value());
  msg::Register::Reader request = *received->message.Root<msg::Register>();
  EXPECT_NE(Text(request.getInstanceId()), first_instance);
  EXPECT_EQ(Keys(request.getFinishedTasks()), (std::vector<TaskKey>{{9, 2}}));
  EXPECT_EQ(request.getRunningTasks().size(), 0u);
  SendWelcome();
  std::optional<msg::ReceivedMessage> resent = Expect(MessageType::RESULT);
  ASSERT_TRUE(resent.has_value());
  EXPECT_EQ(Bytes(resent->message.Root<msg::TaskResult>()->getOutput()), "kept on disk");
}

TEST_F(SessionTest, RejectRevokedStopsWithExitCode1) {
  Start(Options());
  ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
  SendReject(msg::RejectReason::REVOKED, "the operator revoked this node's key");
  ASSERT_TRUE(PumpUntil([&] { return session_->stopped(); }));
  EXPECT_EQ(session_->exit_code(), 1);
  EXPECT_EQ(session_->stop_reason(),
            "the coordinator refused this worker (revoked): the operator revoked this node's key");
  ASSERT_FALSE(status_lines_.empty());
  EXPECT_EQ(status_lines_.back(), "! kfleet-worker gpu-7: " + session_->stop_reason());
  EXPECT_EQ(session_->NextDeadlineUs(), std::numeric_limits<int64_t>::max());
}

TEST_F(SessionTest, DuplicateNameIsRetriedForTwoLivenessPeriodsThenStops) {
  Start(Options());
  int registers = 0;
  int64_t backoff_ms = 1000;
  while (!session_->stopped() && registers < 10) {
    ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
    ++registers;
    SendReject(msg::RejectReason::DUPLICATE_NAME, "a worker named 'gpu-7' is already connected");
    ASSERT_TRUE(PumpUntil([&] { return session_->state() != SessionState::kRegistering; }));
    clock_.AdvanceMs(backoff_ms);
    backoff_ms *= 2;
  }
  // Rejected at 0, ~1, ~3 and ~7 s: inside 2 x 5 s, so retried; at ~15 s it gives up.
  EXPECT_EQ(registers, 5);
  EXPECT_EQ(session_->exit_code(), 1);
  EXPECT_NE(session_->stop_reason().find("(duplicateName)"), std::string::npos);
}

TEST_F(SessionTest, NoReplyToRegisterBacksOffDoublingWithJitter) {
  Start(Options());
  ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
  clock_.AdvanceMs(5000);
  PumpOnce();
  ASSERT_EQ(session_->state(), SessionState::kDisconnected);
  int64_t wait_us = session_->NextDeadlineUs() - clock_.MonotonicUs();
  EXPECT_GE(wait_us, 750'000);
  EXPECT_LE(wait_us, 1'000'000);
  clock_.AdvanceUs(wait_us);
  ASSERT_TRUE(Expect(MessageType::REGISTER).has_value());
  clock_.AdvanceMs(5000);
  PumpOnce();
  ASSERT_EQ(session_->state(), SessionState::kDisconnected);
  wait_us = session_->NextDeadlineUs() - clock_.MonotonicUs();
  EXPECT_GE(wait_us, 1'500'000);
  EXPECT_LE(wait_us, 2'000'000);
}

TEST_F(SessionTest, ByeFromTheCoordinatorKillsTasksAndStopsWithExitCode0) {
  Start(Options());
  Join();
  AssignAndWaitStarted({1, 1});
  capnp::MallocMessageBuilder builder;
  builder.initRoot<msg::Bye>().setReason("node removed by the operator");
  Send<msg::Bye>(builder);
  ASSERT_TRUE(PumpUntil([&] { return session_->stopped(); }));
  EXPECT_EQ(session_->exit_code(), 0);
  EXPECT_NE(session_->stop_reason().find("node removed by the operator"), std::string::npos);
  EXPECT_EQ(executor_->cancel_all_calls, 1);
  EXPECT_EQ(session_->running_count(), 0u);
}

TEST_F(SessionTest, ShutdownSaysByeAndStops) {
  Start(Options());
  Join();
  session_->Shutdown("SIGTERM received");
  EXPECT_TRUE(session_->stopped());
  EXPECT_EQ(session_->exit_code(), 0);
  std::optional<msg::ReceivedMessage> bye = Expect(MessageType::BYE);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(Text(bye->message.Root<msg::Bye>()->getReason()), "SIGTERM received");
}

TEST_F(SessionTest, CancelKillsTheTaskAndReportsItCancelled) {
  Result<std::unique_ptr<InProcessTaskPool>> pool = InProcessTaskPool::Create(1);
  ASSERT_TRUE(pool.ok());
  Start(Options(), std::make_unique<InProcessTaskExecutor>(**pool, *WakeupFd::Create(), clock_));
  Join();
  EchoSpec slow;
  slow.delay_ms = 60'000;
  SendAssign({4, 2}, "echo", BuildEchoPayload(slow));
  ASSERT_TRUE(PumpUntil([&] { return session_->running_count() == 1; }));
  capnp::MallocMessageBuilder builder;
  msg::Cancel::Builder cancel = builder.initRoot<msg::Cancel>();
  cancel.setTaskId(4);
  cancel.setAttempt(2);
  cancel.setReason("job cancelled");
  Send<msg::Cancel>(builder);
  std::optional<msg::ReceivedMessage> result = Expect(MessageType::RESULT);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->message.Root<msg::TaskResult>()->getOutcome(), msg::Outcome::CANCELLED);
  EXPECT_EQ(session_->running_count(), 0u);
  session_.reset();  // before the pool it uses
}

TEST_F(SessionTest, DrainKeepsRunningTasks) {
  Start(Options());
  Join();
  AssignAndWaitStarted({1, 1});
  capnp::MallocMessageBuilder builder;
  builder.initRoot<msg::Drain>().setReason("maintenance at noon");
  Send<msg::Drain>(builder);
  ASSERT_TRUE(PumpUntil([&] { return session_->draining(); }));
  EXPECT_EQ(session_->state(), SessionState::kRegistered);
  EXPECT_EQ(session_->running_count(), 1u);
  EXPECT_EQ(executor_->cancel_all_calls, 0);
  executor_->Complete({1, 1}, msg::Outcome::OK, "done anyway");
  std::optional<msg::ReceivedMessage> result = Expect(MessageType::RESULT);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->message.Root<msg::TaskResult>()->getOutcome(), msg::Outcome::OK);
}

TEST_F(SessionTest, NoFreeSlotOrUnknownKindFailsTheAttemptAtOnce) {
  SessionOptions options = Options();
  options.slots = {1, 0, 1};
  Start(std::move(options));
  Join();
  AssignAndWaitStarted({1, 1});
  auto expect_refusal = [&](const TaskKey& key, const std::string& error) {
    std::optional<msg::ReceivedMessage> received = Expect(MessageType::RESULT);
    ASSERT_TRUE(received.has_value());
    msg::TaskResult::Reader result = *received->message.Root<msg::TaskResult>();
    EXPECT_EQ(result.getTaskId(), key.task_id);
    EXPECT_EQ(result.getOutcome(), msg::Outcome::FAILED);
    EXPECT_EQ(Text(result.getError()), error);
    EXPECT_TRUE(std::filesystem::exists(SpoolFile(key)));
  };
  SendAssign({2, 1});
  expect_refusal({2, 1}, "no free cpu slot on this worker: all 1 busy");
  SendAssign({3, 1}, "profile");
  expect_refusal({3, 1}, "this worker cannot run tasks of kind 'profile' yet");
  SendAssign({4, 1}, "echo", BuildEchoPayload(EchoSpec{}), /*exclusive_device=*/true);
  expect_refusal({4, 1}, "this worker has no gpu-exclusive slots");
  EXPECT_EQ(session_->counters().tasks_refused, 3u);
  EXPECT_EQ(session_->running_count(), 1u);
}

TEST_F(SessionTest, CudaTasksGetAGpuAndExclusiveOnesAGpuOfTheirOwn) {
  SessionOptions options = Options();
  GpuInfo second = options.probe.gpus[0];
  second.index = 1;
  options.probe.gpus.push_back(second);
  options.slots = {2, 3, 4};  // an exclusive slot more than GPUs: the GPUs are the limit
  Start(std::move(options));
  Join();
  const std::string payload = BuildEchoPayload(EchoSpec{});
  // The GPU the task was started on.
  auto device_of = [&](const TaskKey& key) {
    EXPECT_TRUE(PumpUntil([&] { return executor_->devices.count(key) != 0; }))
        << "task " << key.task_id << " did not start";
    return executor_->devices.count(key) != 0 ? executor_->devices[key] : -2;
  };
  SendAssign({1, 1}, "echo", payload, /*exclusive_device=*/true);
  EXPECT_EQ(device_of({1, 1}), 0);
  // A test avoids the GPU under a timing run.
  SendAssign({2, 1}, "echo", payload, /*exclusive_device=*/false, /*cuda=*/true);
  EXPECT_EQ(device_of({2, 1}), 1);
  // A test beside it does not hold GPU 1 against timing.
  SendAssign({3, 1}, "echo", payload, /*exclusive_device=*/true);
  EXPECT_EQ(device_of({3, 1}), 1);
  // Both GPUs timing: the one with fewer tasks.
  SendAssign({4, 1}, "echo", payload, /*exclusive_device=*/false, /*cuda=*/true);
  EXPECT_EQ(device_of({4, 1}), 0);

  SendAssign({5, 1}, "echo", payload, /*exclusive_device=*/true);
  std::optional<msg::ReceivedMessage> refused = Expect(MessageType::RESULT);
  ASSERT_TRUE(refused.has_value());
  msg::TaskResult::Reader result = *refused->message.Root<msg::TaskResult>();
  EXPECT_EQ(result.getTaskId(), 5u);
  EXPECT_EQ(result.getOutcome(), msg::Outcome::FAILED);
  EXPECT_EQ(Text(result.getError()),
            "no free CUDA GPU on this worker: all 2 run an exclusive task");
  EXPECT_EQ(executor_->devices.count({5, 1}), 0u);

  // Once the timing run on GPU 0 ends, GPU 0 is free for the next one.
  executor_->Complete({1, 1}, msg::Outcome::OK);
  ASSERT_TRUE(Expect(MessageType::RESULT).has_value());
  SendAssign({6, 1}, "echo", payload, /*exclusive_device=*/true);
  EXPECT_EQ(device_of({6, 1}), 0);
  // CPU tasks get no GPU.
  SendAssign({7, 1});
  EXPECT_EQ(device_of({7, 1}), -1);
}

TEST_F(SessionTest, CudaTaskOnAWorkerWithoutACudaGpuIsRefused) {
  SessionOptions options = Options();
  options.probe.gpus[0].backend = "hip";
  Start(std::move(options));
  Join();
  SendAssign({1, 1}, "echo", BuildEchoPayload(EchoSpec{}), /*exclusive_device=*/false,
             /*cuda=*/true);
  std::optional<msg::ReceivedMessage> refused = Expect(MessageType::RESULT);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(Text(refused->message.Root<msg::TaskResult>()->getError()),
            "this worker has no CUDA GPU");
  EXPECT_TRUE(executor_->started.empty());
}

// Sends raw parts from the coordinator, as a broken or hostile peer would.
void SendRaw(zmq::socket_t& socket, const std::vector<std::string>& parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    ASSERT_TRUE(socket.send(zmq::buffer(parts[i]), flags).has_value());
  }
}

TEST_F(SessionTest, MalformedFramesAreCountedAndIgnored) {
  Start(Options());
  Join();
  capnp::MallocMessageBuilder beat;
  beat.initRoot<msg::Heartbeat>();
  const std::string header = msg::Encode<msg::Heartbeat>(beat).header;
  SendRaw(router_, {worker_id_, "one part only"});
  SendRaw(router_, {worker_id_, header, "notwords"});
  SendRaw(router_, {worker_id_, "a", "b", "c"});
  ASSERT_TRUE(PumpUntil([&] { return session_->counters().dropped_malformed == 3; }));
  SendWelcome();  // well-formed but out of place once registered
  ASSERT_TRUE(PumpUntil([&] { return session_->counters().dropped_unexpected == 1; }));
  EXPECT_EQ(session_->state(), SessionState::kRegistered);
  AssignAndWaitStarted({1, 1});
}

TEST_F(SessionTest, CoordinatorOfAnotherProtocolVersionStopsTheWorker) {
  Start(Options());
  Join();
  capnp::MallocMessageBuilder beat;
  beat.initRoot<msg::Heartbeat>();
  msg::EncodedFrames frames = msg::Encode<msg::Heartbeat>(beat);
  std::string other_version = frames.header;
  other_version[4] = 9;
  SendRaw(router_, {worker_id_, other_version, std::string(frames.BodyBytes())});
  ASSERT_TRUE(PumpUntil([&] { return session_->stopped(); }));
  EXPECT_EQ(session_->exit_code(), 1);
  EXPECT_NE(session_->stop_reason().find("protocol version 9"), std::string::npos)
      << session_->stop_reason();
}

TEST(SessionCurveTest, RegistersOverCurve) {
  Result<msg::CurveKeyPair> server = msg::GenerateCurveKeyPair();
  Result<msg::CurveKeyPair> client = msg::GenerateCurveKeyPair();
  ASSERT_TRUE(server.ok() && client.ok()) << server.status().ToString();
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  ASSERT_TRUE(msg::ConfigureSocket(router, {}).ok());
  ASSERT_TRUE(msg::UseCurveServer(router, server->secret_key, "kfleet-workers").ok());
  router.bind("tcp://127.0.0.1:*");

  SessionOptions options;
  options.endpoint = router.get(zmq::sockopt::last_endpoint);
  options.node_name = "gpu-7";
  options.credentials =
      msg::ClientCredentials{"gpu-7", options.endpoint, server->public_key, *client};
  Result<std::shared_ptr<WakeupFd>> wakeup = WakeupFd::Create();
  ASSERT_TRUE(wakeup.ok());
  Result<std::unique_ptr<InProcessTaskPool>> pool = InProcessTaskPool::Create(1);
  ASSERT_TRUE(pool.ok());
  Result<std::unique_ptr<WorkerSession>> session = WorkerSession::Create(
      context, options, std::make_unique<InProcessTaskExecutor>(**pool, *wakeup));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  (*session)->Tick(SystemClock().MonotonicUs());
  ASSERT_NE((*session)->socket(), nullptr);
  std::vector<zmq::pollitem_t> items = {{router.handle(), 0, ZMQ_POLLIN, 0}};
  ASSERT_EQ(zmq::poll(items, milliseconds(3000)), 1) << "no Register arrived over CURVE";
  Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(router, true);
  ASSERT_TRUE(received.ok() && received->has_value()) << received.status().ToString();
  EXPECT_EQ((*received)->message.type(), MessageType::REGISTER);
}

// The shape `kfleet bench dispatch` uses: many sessions, in-process executors sharing a pool and
// one wakeup fd, all driven by RunSessionLoop on one thread.
TEST(RunSessionLoopTest, OneThreadDrivesManySessions) {
  constexpr int kWorkers = 100;
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  ASSERT_TRUE(msg::ConfigureSocket(router, {}).ok());
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  Result<std::unique_ptr<InProcessTaskPool>> pool = InProcessTaskPool::Create(2);
  ASSERT_TRUE(pool.ok());
  Result<std::shared_ptr<WakeupFd>> wakeup = WakeupFd::Create();
  ASSERT_TRUE(wakeup.ok());
  std::vector<std::unique_ptr<WorkerSession>> owned;
  std::vector<WorkerSession*> sessions;
  for (int i = 0; i < kWorkers; ++i) {
    SessionOptions options;
    options.endpoint = endpoint;
    options.node_name = "w-" + std::to_string(i);
    options.slots = {1, 0, 1};
    Result<std::unique_ptr<WorkerSession>> session = WorkerSession::Create(
        context, options, std::make_unique<InProcessTaskExecutor>(**pool, *wakeup));
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    sessions.push_back(session->get());
    owned.push_back(std::move(session).value());
  }
  const int stop_fd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(stop_fd, 0);
  Result<bool> loop_result = false;
  std::thread loop([&] { loop_result = RunSessionLoop(sessions, SystemClock(), stop_fd); });

  // The coordinator: welcome each worker, give it one echo task, ack the result, say bye. A
  // lambda, so that a failed ASSERT still reaches the join below.
  int welcomed = 0, results = 0;
  auto serve = [&] {
    const auto deadline = steady_clock::now() + milliseconds(10'000);
    while (results < kWorkers && steady_clock::now() < deadline) {
      std::vector<zmq::pollitem_t> items = {{router.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, milliseconds(20));
      while (true) {
        Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(router, true);
        ASSERT_TRUE(received.ok()) << received.status().ToString();
        if (!received->has_value()) break;
        const std::string& id = (*received)->routing_id;
        const msg::DecodedMessage& message = (*received)->message;
        if (message.Is<msg::Register>()) {
          capnp::MallocMessageBuilder welcome;
          welcome.initRoot<msg::Welcome>().setNodeId(static_cast<uint64_t>(++welcomed));
          ASSERT_TRUE(msg::Send<msg::Welcome>(router, welcome, id).ok());
          capnp::MallocMessageBuilder assign;
          msg::Assign::Builder task = assign.initRoot<msg::Assign>();
          task.setTaskId(static_cast<uint64_t>(welcomed));
          task.setAttempt(1);
          task.setKind("echo");
          EchoSpec spec;
          spec.delay_ms = 10;
          spec.data = id;
          const std::string payload = BuildEchoPayload(spec);
          task.setPayload(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(payload.data()),
                                              payload.size()));
          ASSERT_TRUE(msg::Send<msg::Assign>(router, assign, id).ok());
        } else if (message.Is<msg::TaskResult>()) {
          msg::TaskResult::Reader result = *message.Root<msg::TaskResult>();
          EXPECT_EQ(result.getOutcome(), msg::Outcome::OK) << Text(result.getError());
          EXPECT_EQ(Bytes(result.getOutput()), Sha256Hex(id));
          ++results;
          capnp::MallocMessageBuilder ack;
          ack.initRoot<msg::Ack>().setTaskId(result.getTaskId());
          ASSERT_TRUE(msg::Send<msg::Ack>(router, ack, id).ok());
          capnp::MallocMessageBuilder bye;
          bye.initRoot<msg::Bye>().setReason("test over");
          ASSERT_TRUE(msg::Send<msg::Bye>(router, bye, id).ok());
        }
      }
    }
  };
  serve();
  EXPECT_EQ(results, kWorkers);
  if (results < kWorkers) {
    const uint64_t one = 1;
    EXPECT_EQ(::write(stop_fd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }
  loop.join();
  ::close(stop_fd);
  ASSERT_TRUE(loop_result.ok()) << loop_result.status().ToString();
  EXPECT_FALSE(*loop_result) << "the loop should end because every session stopped";
  for (WorkerSession* session : sessions) {
    EXPECT_TRUE(session->stopped());
    EXPECT_EQ(session->exit_code(), 0);
  }
}

}  // namespace
}  // namespace kfleet::worker
