// The real kfleet-worker binary against a scripted coordinator: a task runs in a re-executed
// child, the worker is SIGKILLed before the Ack, and its successor resends the spooled result.
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/files.h"
#include "common/ids.h"
#include "common/temp_dir.h"
#include "messages/transport.h"
#include "tests/test_binaries.h"
#include "worker/echo_task.h"

extern char** environ;

namespace kfleet::worker {
namespace {

using msg::MessageType;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

class WorkerDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> temp = TempDir::Create("kfleet-daemon");
    ASSERT_TRUE(temp.ok()) << temp.status().ToString();
    temp_.emplace(std::move(temp).value());
    dir_ = temp_->path();
    ASSERT_TRUE(msg::ConfigureSocket(router_, {}).ok());
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Reap();
    }
  }

  void Spawn() {
    const std::vector<std::string> args = {kfleet::testing::TestBinary("kfleet-worker", KFLEET_WORKER_BINARY),
                                           "--insecure",
                                           "--name",
                                           "it-1",
                                           "--join",
                                           endpoint_,
                                           "--work-dir",
                                           (dir_ / "work").string(),
                                           "--cpu-slots",
                                           "2"};
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    ASSERT_EQ(posix_spawn_file_actions_init(&actions), 0);
    const std::string output = (dir_ / "output.txt").string();
    ASSERT_EQ(posix_spawn_file_actions_addopen(&actions, 1, output.c_str(),
                                               O_WRONLY | O_CREAT | O_APPEND, 0600),
              0);
    ASSERT_EQ(posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0), 0);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ASSERT_EQ(rc, 0) << std::strerror(rc);
  }

  // The worker's wait status.
  int Reap() {
    int status = 0;
    EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
    pid_ = -1;
    return status;
  }

  // The next message of `type` from the worker; heartbeats and others are skipped.
  std::optional<msg::ReceivedMessage> Expect(MessageType type,
                                             milliseconds timeout = milliseconds(10'000)) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, milliseconds(20));
      while (true) {
        Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(router_, true);
        if (!received.ok()) {
          ADD_FAILURE() << received.status().ToString();
          return std::nullopt;
        }
        if (!received->has_value()) break;
        worker_id_ = (*received)->routing_id;
        if ((*received)->message.type() == type) return std::move(**received);
      }
    }
    ADD_FAILURE() << "no " << msg::MessageTypeName(type) << " from the worker";
    return std::nullopt;
  }

  template <typename T>
  void Send(capnp::MallocMessageBuilder& builder) {
    ASSERT_TRUE(msg::Send<T>(router_, builder, worker_id_).ok());
  }

  void SendWelcome() {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<msg::Welcome>().setNodeId(21);
    Send<msg::Welcome>(builder);
  }

  std::optional<TempDir> temp_;  // removed, with everything in it, after TearDown
  std::filesystem::path dir_;
  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string endpoint_;
  std::string worker_id_;
  pid_t pid_ = -1;
};

TEST_F(WorkerDaemonTest, RunsATaskAndItsSuccessorResendsTheResultAfterSigkill) {
  Spawn();
  std::optional<msg::ReceivedMessage> joined = Expect(MessageType::REGISTER);
  ASSERT_TRUE(joined.has_value());
  msg::Register::Reader request = *joined->message.Root<msg::Register>();
  EXPECT_EQ(std::string(request.getCapabilities().getNodeName().cStr()), "it-1");
  EXPECT_EQ(request.getCapabilities().getSlots().getCpu(), 2u);
  SendWelcome();

  EchoSpec spec;
  spec.data = "integration";
  const std::string payload = BuildEchoPayload(spec);
  capnp::MallocMessageBuilder assign_builder;
  msg::Assign::Builder assign = assign_builder.initRoot<msg::Assign>();
  assign.setTaskId(1);
  assign.setAttempt(1);
  assign.setKind("echo");
  assign.setTimeoutMs(10'000);
  assign.setPayload(
      capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(payload.data()), payload.size()));
  Send<msg::Assign>(assign_builder);

  std::optional<msg::ReceivedMessage> result = Expect(MessageType::RESULT);
  ASSERT_TRUE(result.has_value());
  msg::TaskResult::Reader first = *result->message.Root<msg::TaskResult>();
  EXPECT_EQ(first.getOutcome(), msg::Outcome::OK) << first.getError().cStr();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(first.getOutput().begin()),
                        first.getOutput().size()),
            Sha256Hex("integration"));
  const std::filesystem::path spooled = dir_ / "work" / "results" / "1-1.result";
  EXPECT_TRUE(std::filesystem::exists(spooled));

  // Killed before the Ack: the successor must still deliver the result.
  ASSERT_EQ(::kill(pid_, SIGKILL), 0);
  Reap();
  Spawn();
  std::optional<msg::ReceivedMessage> rejoined = Expect(MessageType::REGISTER);
  ASSERT_TRUE(rejoined.has_value());
  capnp::List<msg::TaskRef>::Reader finished =
      rejoined->message.Root<msg::Register>()->getFinishedTasks();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].getTaskId(), 1u);
  SendWelcome();
  std::optional<msg::ReceivedMessage> resent = Expect(MessageType::RESULT);
  ASSERT_TRUE(resent.has_value());
  EXPECT_EQ(resent->message.Root<msg::TaskResult>()->getOutcome(), msg::Outcome::OK);

  capnp::MallocMessageBuilder ack;
  ack.initRoot<msg::Ack>().setTaskId(1);
  ack.getRoot<msg::Ack>().setAttempt(1);
  Send<msg::Ack>(ack);
  const auto deadline = steady_clock::now() + milliseconds(5000);
  while (std::filesystem::exists(spooled) && steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_FALSE(std::filesystem::exists(spooled));

  // SIGTERM: Bye, then exit 0.
  ASSERT_EQ(::kill(pid_, SIGTERM), 0);
  std::optional<msg::ReceivedMessage> bye = Expect(MessageType::BYE);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(std::string(bye->message.Root<msg::Bye>()->getReason().cStr()), "SIGTERM received");
  const int status = Reap();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  Result<std::string> output = ReadFile(dir_ / "output.txt");
  ASSERT_TRUE(output.ok());
  EXPECT_NE(output->find("kfleet-worker it-1: 2 CPU slots"), std::string::npos) << *output;
  EXPECT_NE(output->find("kfleet-worker it-1: registered as node 21"), std::string::npos)
      << *output;
}

}  // namespace
}  // namespace kfleet::worker
