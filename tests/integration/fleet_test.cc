// The fleet as a user runs it: kfleetd, kfleet-worker and kfleet as separate processes on
// loopback with CurveZMQ, killed and restarted the hard way.
#include <gtest/gtest.h>
#include <signal.h>

#include <regex>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "common/files.h"
#include "common/ids.h"
#include "messages/curve.h"
#include "messages/transport.h"
#include "tests/integration/fleet.h"
#include "worker/echo_task.h"

namespace kfleet::testing {
namespace {

using storage::TaskState;

int64_t JobOf(const CliResult& submitted) {
  nlohmann::json reply = submitted.Json();
  EXPECT_TRUE(reply.is_object()) << submitted.out << submitted.err;
  return reply.is_object() ? reply.value("job", int64_t{0}) : 0;
}

// Every task of the job is done, by exactly one successful attempt, with the right answer.
void ExpectEveryTaskDoneOnce(storage::Store& store, int64_t job_id, size_t tasks) {
  auto rows = store.tasks().ListByJob(job_id);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), tasks);
  for (const storage::TaskRow& task : *rows) {
    EXPECT_EQ(task.state, TaskState::kDone) << "task " << task.id;
    auto attempts = store.tasks().Attempts(task.id);
    ASSERT_TRUE(attempts.ok());
    int ok = 0;
    for (const auto& attempt : *attempts) ok += attempt.outcome == storage::AttemptOutcome::kOk;
    EXPECT_EQ(ok, 1) << "task " << task.id << " succeeded " << ok << " times";
    auto payload = worker::DecodeEchoPayload(task.payload);
    ASSERT_TRUE(payload.ok());
    const capnp::Data::Reader data = payload->root().getData();
    EXPECT_EQ(task.result,
              Sha256Hex(std::string_view(reinterpret_cast<const char*>(data.begin()), data.size())))
        << "task " << task.id;
  }
}

bool WaitFor(const std::function<bool()>& condition, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

int64_t CountState(storage::Store& store, int64_t job_id, TaskState state,
                   std::optional<int64_t> node_id = std::nullopt) {
  auto rows = store.tasks().ListByJob(job_id);
  if (!rows.ok()) return -1;
  int64_t n = 0;
  for (const auto& task : *rows) {
    if (task.state == state && (!node_id || task.node_id == node_id)) ++n;
  }
  return n;
}

TEST(FleetTest, ThreeWorkersRunEveryTaskExactlyOnce) {
  Fleet fleet;
  fleet.StartCoordinator();
  for (const char* name : {"w1", "w2", "w3"}) fleet.AddWorker(name);
  ASSERT_TRUE(fleet.WaitForNodes(3)) << fleet.Cli({"nodes"}).out;

  CliResult run = fleet.Cli({"diag", "echo", "--tasks", "60", "--delay-ms", "30",
                             "--payload-bytes", "64", "--seed", "3", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  nlohmann::json summary = run.Json();
  EXPECT_EQ(summary.value("done", 0), 60);
  EXPECT_EQ(summary.value("failed", -1), 0);
  EXPECT_EQ(summary.value("retries", -1), 0);
  const int64_t job = JobOf(run);
  ExpectEveryTaskDoneOnce(fleet.Store(), job, 60);

  std::set<int64_t> nodes_used;
  const auto tasks = fleet.Store().tasks().ListByJob(job);
  ASSERT_TRUE(tasks.ok());
  for (const auto& task : *tasks) nodes_used.insert(*task.node_id);
  EXPECT_EQ(nodes_used.size(), 3u) << "work is spread over the pool";
}

TEST(FleetTest, TasksOfAKilledWorkerFinishElsewhere) {
  Fleet fleet;
  fleet.StartCoordinator();
  for (const char* name : {"w1", "w2", "w3"}) fleet.AddWorker(name);
  ASSERT_TRUE(fleet.WaitForNodes(3));
  const int64_t job = JobOf(fleet.Cli({"diag", "echo", "--tasks", "24", "--delay-ms", "600",
                                       "--no-wait", "--json"}));
  ASSERT_GT(job, 0);
  const int64_t w1 = fleet.Store().nodes().GetByName("w1")->id;
  ASSERT_TRUE(WaitFor([&] { return CountState(fleet.Store(), job, TaskState::kLeased, w1) > 0; },
                      10'000));

  fleet.worker("w1").Signal(SIGKILL);
  CliResult watched = fleet.Cli({"watch", std::to_string(job)}, 60'000);
  EXPECT_EQ(watched.exit_code, 0) << watched.out << watched.err;

  ExpectEveryTaskDoneOnce(fleet.Store(), job, 24);
  EXPECT_GE(*fleet.Store().tasks().RetryCount(job), 1);
  bool lost_on_w1 = false;
  const auto tasks = fleet.Store().tasks().ListByJob(job);
  ASSERT_TRUE(tasks.ok());
  for (const auto& task : *tasks) {
    const auto attempts = fleet.Store().tasks().Attempts(task.id);
    ASSERT_TRUE(attempts.ok());
    for (const auto& attempt : *attempts) {
      lost_on_w1 |= attempt.node_id == w1 && attempt.outcome == storage::AttemptOutcome::kLost;
    }
  }
  EXPECT_TRUE(lost_on_w1) << "the killed worker's attempts are recorded as lost";
  nlohmann::json shown = fleet.Cli({"show", std::to_string(job), "--json"}).Json();
  ASSERT_TRUE(shown.is_object());
  EXPECT_GE(shown["job"]["progress"].value("retries", 0), 1);
  EXPECT_EQ(fleet.Store().nodes().GetByName("w1")->state, storage::NodeState::kLost);
}

TEST(FleetTest, KilledCoordinatorRestartsAndTheJobFinishesWithNothingLostOrDoubled) {
  Fleet fleet;
  fleet.StartCoordinator();
  fleet.AddWorker("w1");
  fleet.AddWorker("w2");
  ASSERT_TRUE(fleet.WaitForNodes(2));
  // Tasks long enough that some are still running when the workers register again.
  const int64_t job = JobOf(fleet.Cli({"diag", "echo", "--tasks", "12", "--delay-ms", "2500",
                                       "--no-wait", "--json"}));
  ASSERT_GT(job, 0);
  ASSERT_TRUE(WaitFor([&] { return CountState(fleet.Store(), job, TaskState::kDone) >= 4; },
                      20'000));

  fleet.coordinator().Signal(SIGKILL);
  ASSERT_TRUE(fleet.coordinator().Wait(std::chrono::seconds(5)).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // workers finish tasks meanwhile
  fleet.StartCoordinator();

  CliResult watched = fleet.Cli({"watch", std::to_string(job)}, 90'000);
  EXPECT_EQ(watched.exit_code, 0) << watched.out << watched.err;
  ExpectEveryTaskDoneOnce(fleet.Store(), job, 12);
  // The workers came back to the new kfleetd holding their tasks, and it kept those leases: no
  // attempt was lost to the restart, so no work was done twice.
  EXPECT_TRUE(std::regex_search(fleet.coordinator().Log(), std::regex("kept_leases=[1-9]")))
      << fleet.coordinator().Log();
  EXPECT_EQ(*fleet.Store().tasks().RetryCount(job), 0);
  EXPECT_TRUE(fleet.worker("w1").Running());
  EXPECT_TRUE(fleet.worker("w2").Running());
}

// A DEALER speaking raw frames with the given credentials (or a fresh, unknown key).
class RawPeer {
 public:
  RawPeer(zmq::context_t& context, const msg::ClientCredentials& credentials,
          const std::string& endpoint)
      : socket_(context, zmq::socket_type::dealer) {
    EXPECT_TRUE(msg::ConfigureSocket(socket_, {}).ok());
    EXPECT_TRUE(msg::UseCurveClient(socket_, credentials).ok());
    socket_.connect(endpoint);
  }
  void SendParts(const std::vector<std::string>& parts) {
    for (size_t i = 0; i < parts.size(); ++i) {
      auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      socket_.send(zmq::buffer(parts[i]), flags | zmq::send_flags::dontwait);
    }
  }
  // The next message within `timeout_ms`, decoded in this build's version.
  std::optional<msg::ReceivedMessage> Next(int timeout_ms) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return std::nullopt;
    auto received = msg::Receive(socket_, /*with_routing_id=*/false);
    if (!received.ok() || !received->has_value()) return std::nullopt;
    return std::move(**received);
  }

 private:
  zmq::socket_t socket_;
};

std::string RegisterBody(const std::string& name) {
  capnp::MallocMessageBuilder builder;
  msg::Register::Builder reg = builder.initRoot<msg::Register>();
  reg.setInstanceId("raw");
  reg.initCapabilities().setNodeName(name);
  return std::string(msg::Encode<msg::Register>(builder).BodyBytes());
}

std::string HeaderOf(msg::MessageType type, uint16_t version) {
  std::string header = "KFLT";
  header += static_cast<char>(version & 0xff);
  header += static_cast<char>(version >> 8);
  header += static_cast<char>(static_cast<uint16_t>(type) & 0xff);
  header += static_cast<char>(static_cast<uint16_t>(type) >> 8);
  return header;
}

TEST(FleetTest, BadPeersAreRefusedOrDroppedAndTheCoordinatorKeepsServing) {
  Fleet fleet("limits:\n  max_message: 64KiB\n");
  fleet.StartCoordinator();
  fleet.AddWorker("w1");
  ASSERT_TRUE(fleet.WaitForNodes(1));
  zmq::context_t context;
  const std::string server_key =
      ReadFile(fleet.state_dir() / "keys" / "server.pub").value_or("");
  msg::ClientCredentials stranger;
  stranger.name = "stranger";
  stranger.server_public_key = server_key.substr(0, 40);
  stranger.keys = *msg::GenerateCurveKeyPair();

  // An unknown key never gets a message through: the ZAP handler refuses the handshake.
  RawPeer unknown(context, stranger, fleet.worker_endpoint());
  unknown.SendParts({HeaderOf(msg::MessageType::REGISTER, msg::kProtocolVersion),
                     RegisterBody("stranger")});
  EXPECT_FALSE(unknown.Next(1000).has_value());

  // A known key speaking another protocol version is told so.
  auto rogue = msg::LoadClientCredentials(fleet.Invite("rogue"));
  ASSERT_TRUE(rogue.ok()) << rogue.status().ToString();
  RawPeer peer(context, *rogue, fleet.worker_endpoint());
  peer.SendParts({HeaderOf(msg::MessageType::REGISTER, 9), RegisterBody("rogue")});
  auto reply = peer.Next(5000);
  ASSERT_TRUE(reply.has_value());
  auto reject = reply->message.Root<msg::Reject>();
  ASSERT_TRUE(reject.ok()) << reject.status().ToString();
  EXPECT_EQ(reject->getReason(), msg::RejectReason::VERSION_MISMATCH);
  EXPECT_NE(std::string(reject->getMessage().cStr()).find("version 9"), std::string::npos);

  // Garbage, a truncated body and a wrong part count are dropped and counted.
  const std::string header = HeaderOf(msg::MessageType::HEARTBEAT, msg::kProtocolVersion);
  peer.SendParts({"garbage"});
  peer.SendParts({header, "12345"});
  peer.SendParts({header, std::string(16, '\xff')});
  peer.SendParts({header, "a", "b"});
  // Over the 64 KiB cap: ZeroMQ drops the frame and this connection.
  peer.SendParts({header, std::string(256 << 10, '\0')});

  nlohmann::json counters;
  ASSERT_TRUE(WaitFor(
      [&] {
        counters = fleet.Cli({"status", "--json"}).Json()["coordinator"];
        return counters.is_object() && counters.value("malformed_dropped", 0) >= 5;
      },
      10'000))
      << counters.dump();
  EXPECT_GE(counters.value("version_mismatches", 0), 1);

  // Still serving: the real worker runs a job.
  EXPECT_TRUE(fleet.coordinator().Running());
  CliResult run = fleet.Cli({"diag", "echo", "--tasks", "10", "--json"});
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(fleet.coordinator().Log().find("zap.denied"), std::string::npos)
      << "the refused handshake is logged";
}

TEST(FleetTest, ARevokedKeyCannotRegisterAgainOnItsOpenConnection) {
  Fleet fleet;
  fleet.StartCoordinator();
  zmq::context_t context;
  auto credentials = msg::LoadClientCredentials(fleet.Invite("rogue"));
  ASSERT_TRUE(credentials.ok()) << credentials.status().ToString();
  RawPeer peer(context, *credentials, fleet.worker_endpoint());
  const std::string header = HeaderOf(msg::MessageType::REGISTER, msg::kProtocolVersion);
  peer.SendParts({header, RegisterBody("rogue")});
  auto welcome = peer.Next(5000);
  ASSERT_TRUE(welcome.has_value());
  EXPECT_TRUE(welcome->message.Is<msg::Welcome>());

  ASSERT_EQ(fleet.Cli({"nodes", "revoke", "rogue"}).exit_code, 0);
  // The revoke's own Reject arrives first; then a new Register on the same connection is refused.
  peer.SendParts({header, RegisterBody("rogue")});
  bool refused_again = false;
  int rejects = 0;
  for (int i = 0; i < 10 && !refused_again; ++i) {
    auto reply = peer.Next(2000);
    if (!reply.has_value()) break;
    ASSERT_FALSE(reply->message.Is<msg::Welcome>()) << "a revoked key was admitted again";
    if (auto reject = reply->message.Root<msg::Reject>(); reject.ok()) {
      EXPECT_EQ(reject->getReason(), msg::RejectReason::REVOKED);
      refused_again = ++rejects == 2;
    }
  }
  EXPECT_TRUE(refused_again);
}

TEST(FleetTest, HangingTasksAreKilledCrashesAreReportedAndTheWorkerStaysHealthy) {
  Fleet fleet;
  fleet.StartCoordinator();
  fleet.AddWorker("w1");
  ASSERT_TRUE(fleet.WaitForNodes(1));

  CliResult hung = fleet.Cli({"diag", "echo", "--tasks", "2", "--hang-rate", "1",
                              "--task-timeout-ms", "300", "--json"});
  EXPECT_EQ(hung.exit_code, 1) << hung.out << hung.err;
  EXPECT_EQ(hung.Json().value("failed", 0), 2);
  nlohmann::json shown = fleet.Cli({"show", std::to_string(JobOf(hung)), "--json"}).Json();
  EXPECT_NE(shown.dump().find("timed out"), std::string::npos) << shown.dump(2);

  CliResult crashed = fleet.Cli({"diag", "echo", "--tasks", "2", "--crash-rate", "1", "--json"});
  EXPECT_EQ(crashed.exit_code, 1);
  shown = fleet.Cli({"show", std::to_string(JobOf(crashed)), "--json"}).Json();
  EXPECT_NE(shown.dump().find("SIGSEGV"), std::string::npos) << shown.dump(2);

  CliResult healthy = fleet.Cli({"diag", "echo", "--tasks", "6", "--json"});
  EXPECT_EQ(healthy.exit_code, 0) << healthy.out << healthy.err;
  EXPECT_TRUE(fleet.worker("w1").Running());
}

TEST(FleetTest, DrainRemoveAndRevokeFromTheCli) {
  Fleet fleet;
  fleet.StartCoordinator();
  fleet.AddWorker("w1");
  fleet.AddWorker("w2");
  ASSERT_TRUE(fleet.WaitForNodes(2));
  EXPECT_EQ(fleet.Cli({"nodes", "drain", "w1"}).exit_code, 0);
  const int64_t job = JobOf(fleet.Cli({"diag", "echo", "--tasks", "8", "--json"}));
  const auto tasks = fleet.Store().tasks().ListByJob(job);
  ASSERT_TRUE(tasks.ok());
  for (const auto& task : *tasks) {
    EXPECT_EQ(*task.node_id, fleet.Store().nodes().GetByName("w2")->id) << "w1 is draining";
  }
  EXPECT_EQ(fleet.Cli({"nodes", "remove", "w1"}).exit_code, 0);
  EXPECT_TRUE(fleet.worker("w1").Wait(std::chrono::seconds(5)).has_value())
      << "a removed worker exits";
  EXPECT_EQ(fleet.Cli({"nodes", "revoke", "w2"}).exit_code, 0);
  auto status = fleet.worker("w2").Wait(std::chrono::seconds(5));
  ASSERT_TRUE(status.has_value()) << "a revoked worker exits";
  EXPECT_NE(WEXITSTATUS(*status), 0);
  EXPECT_NE(fleet.worker("w2").Log().find("revoked"), std::string::npos);
}

}  // namespace
}  // namespace kfleet::testing
