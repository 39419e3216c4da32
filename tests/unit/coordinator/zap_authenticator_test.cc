#include "coordinator/zap_authenticator.h"

#include <gtest/gtest.h>
#include <zmq.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/key_store.h"
#include "messages/curve.h"
#include "messages/transport.h"

namespace kfleet::coordinator {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// How long a refused peer is given to get a message through anyway.
constexpr milliseconds kQuietPeriod(300);
constexpr milliseconds kPatience(2000);

bool WaitFor(const std::function<bool()>& condition, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

Status SendHeartbeat(zmq::socket_t& dealer) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<msg::Heartbeat>().setSequence(1);
  return msg::Send<msg::Heartbeat>(dealer, builder);
}

std::string BinaryKey(const std::string& z85) {
  std::array<uint8_t, 32> binary{};
  EXPECT_NE(zmq_z85_decode(binary.data(), z85.c_str()), nullptr);
  return std::string(binary.begin(), binary.end());
}

class ZapAuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kfleet-zap-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    state_ = pattern;
    Result<KeyStore> store = KeyStore::Open(state_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_.emplace(std::move(store).value());

    // The handler first: a CURVE socket bound before it would admit any key.
    ASSERT_TRUE(zap_.Start().ok());
    workers_endpoint_ = BindServer(workers_router_, kWorkersZapDomain);
    clients_endpoint_ = BindServer(clients_router_, kClientsZapDomain);
  }

  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(state_, ignored);
  }

  std::string BindServer(zmq::socket_t& router, std::string_view domain) {
    EXPECT_TRUE(msg::ConfigureSocket(router, {}).ok());
    EXPECT_TRUE(msg::UseCurveServer(router, store_->ServerSecretKey(), domain).ok());
    router.bind("tcp://127.0.0.1:0");
    return router.get(zmq::sockopt::last_endpoint);
  }

  msg::ClientCredentials Invite(const std::string& name) {
    Result<Invitation> invitation = store_->InviteWorker(name, workers_endpoint_);
    EXPECT_TRUE(invitation.ok()) << invitation.status().ToString();
    zap_.SetAuthorized(store_->Snapshot());
    return invitation.ok() ? invitation->credentials : msg::ClientCredentials{};
  }

  zmq::socket_t Dealer(const msg::ClientCredentials& credentials, const std::string& endpoint) {
    zmq::socket_t dealer(context_, zmq::socket_type::dealer);
    EXPECT_TRUE(msg::ConfigureSocket(dealer, {}).ok());
    EXPECT_TRUE(msg::UseCurveClient(dealer, credentials).ok());
    dealer.connect(endpoint);
    return dealer;
  }

  // Sends a heartbeat from `dealer` (queued until the handshake completes) and returns the
  // User-Id it arrived with at `router`, or std::nullopt when nothing came within `timeout`.
  std::optional<std::string> Deliver(zmq::socket_t& dealer, zmq::socket_t& router,
                                     milliseconds timeout) {
    EXPECT_TRUE(SendHeartbeat(dealer).ok());
    std::vector<zmq::pollitem_t> items = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, timeout) == 0) return std::nullopt;
    Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(router, true);
    EXPECT_TRUE(received.ok()) << received.status().ToString();
    if (!received.ok() || !received->has_value()) return std::nullopt;
    EXPECT_TRUE((*received)->message.Is<msg::Heartbeat>());
    return (*received)->user_id;
  }

  // Sends a raw request to the handler, as libzmq would, and returns the reply's frames.
  std::vector<std::string> Ask(const std::vector<std::string>& request) {
    zmq::socket_t req(context_, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.set(zmq::sockopt::rcvtimeo, static_cast<int>(kPatience.count()));
    req.connect(std::string(kZapEndpoint));
    for (size_t i = 0; i < request.size(); ++i) {
      const auto flags = i + 1 < request.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      EXPECT_TRUE(req.send(zmq::buffer(request[i]), flags).has_value());
    }
    std::vector<std::string> reply;
    zmq::message_t part;
    do {
      if (!req.recv(part)) {
        ADD_FAILURE() << "no reply from the ZAP handler";
        return reply;
      }
      reply.push_back(part.to_string());
    } while (part.more());
    return reply;
  }

  std::vector<std::string> CurveRequest(const std::string& domain, const std::string& key) {
    return {"1.0", "req-9", domain, "192.0.2.1", "", "CURVE", BinaryKey(key)};
  }

  fs::path state_;
  std::optional<KeyStore> store_;
  zmq::context_t context_;
  ZapAuthenticator zap_{context_};
  zmq::socket_t workers_router_{context_, zmq::socket_type::router};
  zmq::socket_t clients_router_{context_, zmq::socket_type::router};
  std::string workers_endpoint_;
  std::string clients_endpoint_;
};

TEST_F(ZapAuthenticatorTest, InvitedWorkerGetsThroughUnderItsName) {
  const msg::ClientCredentials credentials = Invite("gpu-7");
  zmq::socket_t dealer = Dealer(credentials, workers_endpoint_);
  EXPECT_EQ(Deliver(dealer, workers_router_, kPatience), "gpu-7");
  EXPECT_EQ(zap_.accepted(), 1u);
  EXPECT_EQ(zap_.denied(), 0u);
  EXPECT_TRUE(zap_.healthy());
}

TEST_F(ZapAuthenticatorTest, UnknownKeyNeverGetsAMessageThrough) {
  Invite("gpu-7");
  Result<msg::CurveKeyPair> stranger = msg::GenerateCurveKeyPair();
  ASSERT_TRUE(stranger.ok());
  zmq::socket_t dealer =
      Dealer({"gpu-7", workers_endpoint_, store_->ServerPublicKey(), *stranger}, workers_endpoint_);
  EXPECT_EQ(Deliver(dealer, workers_router_, kQuietPeriod), std::nullopt);
  EXPECT_TRUE(WaitFor([&] { return zap_.denied() >= 1; }, kPatience));
  EXPECT_EQ(zap_.accepted(), 0u);
}

TEST_F(ZapAuthenticatorTest, RevokedKeyIsRefusedOnItsNextConnection) {
  const msg::ClientCredentials credentials = Invite("gpu-7");
  {
    zmq::socket_t dealer = Dealer(credentials, workers_endpoint_);
    ASSERT_EQ(Deliver(dealer, workers_router_, kPatience), "gpu-7");
  }
  ASSERT_TRUE(store_->RevokeWorker("gpu-7").ok());
  zap_.SetAuthorized(store_->Snapshot());

  zmq::socket_t dealer = Dealer(credentials, workers_endpoint_);
  EXPECT_EQ(Deliver(dealer, workers_router_, kQuietPeriod), std::nullopt);
  EXPECT_TRUE(WaitFor([&] { return zap_.denied() >= 1; }, kPatience));
}

TEST_F(ZapAuthenticatorTest, WorkerAndClientKeysStayInTheirDomains) {
  const msg::ClientCredentials worker = Invite("gpu-7");
  Result<msg::ClientCredentials> local = store_->EnsureLocalClient(clients_endpoint_);
  ASSERT_TRUE(local.ok());
  zap_.SetAuthorized(store_->Snapshot());

  zmq::socket_t client_at_workers = Dealer(*local, workers_endpoint_);
  zmq::socket_t worker_at_clients = Dealer(worker, clients_endpoint_);
  ASSERT_TRUE(SendHeartbeat(client_at_workers).ok());
  ASSERT_TRUE(SendHeartbeat(worker_at_clients).ok());
  std::vector<zmq::pollitem_t> items = {{workers_router_.handle(), 0, ZMQ_POLLIN, 0},
                                        {clients_router_.handle(), 0, ZMQ_POLLIN, 0}};
  EXPECT_EQ(zmq::poll(items, kQuietPeriod), 0);
  EXPECT_TRUE(WaitFor([&] { return zap_.denied() >= 2; }, kPatience));

  zmq::socket_t client_at_clients = Dealer(*local, clients_endpoint_);
  EXPECT_EQ(Deliver(client_at_clients, clients_router_, kPatience), "local");
}

TEST_F(ZapAuthenticatorTest, NullMechanismCannotTalkToCurveServer) {
  zmq::socket_t dealer(context_, zmq::socket_type::dealer);
  ASSERT_TRUE(msg::ConfigureSocket(dealer, {}).ok());
  dealer.connect(workers_endpoint_);
  EXPECT_EQ(Deliver(dealer, workers_router_, kQuietPeriod), std::nullopt);
  EXPECT_EQ(zap_.accepted(), 0u);
}

TEST_F(ZapAuthenticatorTest, AnswersRequestsByRfc27) {
  const msg::ClientCredentials worker = Invite("gpu-7");
  const std::string key = worker.keys.public_key;

  const std::vector<std::string> ok = Ask(CurveRequest("kfleet-workers", key));
  EXPECT_EQ(ok, (std::vector<std::string>{"1.0", "req-9", "200", "OK", "gpu-7", ""}));

  auto expect_denied = [&](const std::vector<std::string>& request, const std::string& reason) {
    const std::vector<std::string> reply = Ask(request);
    ASSERT_EQ(reply.size(), 6u);
    EXPECT_EQ(reply[0], "1.0");
    EXPECT_EQ(reply[2], "400");
    EXPECT_NE(reply[3].find(reason), std::string::npos) << reply[3];
    EXPECT_EQ(reply[4], "");
  };
  expect_denied(CurveRequest("kfleet-clients", key), "not authorized in kfleet-clients");
  expect_denied(CurveRequest("", key), "unknown ZAP domain ''");
  expect_denied(CurveRequest("other", key), "unknown ZAP domain 'other'");
  expect_denied({"1.0", "r", "kfleet-workers", "192.0.2.1", "", "NULL"}, "mechanism NULL");
  expect_denied({"1.0", "r", "kfleet-workers", "192.0.2.1", "", "PLAIN", "gpu-7", "pw"},
                "mechanism PLAIN");
  expect_denied({"1.0", "r", "kfleet-workers", "192.0.2.1", "", "CURVE", "short"},
                "malformed CURVE credentials");
  std::vector<std::string> two_keys = CurveRequest("kfleet-workers", key);
  two_keys.push_back(two_keys.back());
  expect_denied(two_keys, "malformed CURVE credentials");
  std::vector<std::string> old_version = CurveRequest("kfleet-workers", key);
  old_version[0] = "0.9";
  expect_denied(old_version, "unsupported ZAP version '0.9'");
  expect_denied({"1.0", "r", "kfleet-workers"}, "3 frames, expected at least 6");
  expect_denied(std::vector<std::string>(40, "x"), "malformed ZAP request: 40 frames");
  EXPECT_EQ(zap_.accepted(), 1u);
  EXPECT_EQ(zap_.denied(), 10u);
  EXPECT_TRUE(zap_.healthy());
}

TEST_F(ZapAuthenticatorTest, OnlyOneHandlerPerContext) {
  ZapAuthenticator second(context_);
  const Status status = second.Start();
  EXPECT_EQ(status.code(), ErrorCode::kAlreadyExists) << status.ToString();
  EXPECT_FALSE(second.healthy());
  EXPECT_EQ(zap_.Start().code(), ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(zap_.healthy());
}

TEST_F(ZapAuthenticatorTest, StopIsPrompt) {
  const auto start = Clock::now();
  zap_.Stop();
  EXPECT_LT(Clock::now() - start, milliseconds(100));
  EXPECT_FALSE(zap_.healthy());
  zap_.Stop();  // a second Stop is harmless
}

TEST(ZapAuthenticatorLifetimeTest, DestructorDoesNotHang) {
  const auto start = Clock::now();
  {
    zmq::context_t context;
    ZapAuthenticator zap(context);
    ASSERT_TRUE(zap.Start().ok());
    EXPECT_TRUE(zap.healthy());
  }  // the authenticator, then the context, which waits for every socket to close
  EXPECT_LT(Clock::now() - start, milliseconds(100));
}

TEST(ZapAuthenticatorLifetimeTest, ContextShutdownMakesItUnhealthy) {
  zmq::context_t context;
  ZapAuthenticator zap(context);
  ASSERT_TRUE(zap.Start().ok());
  context.shutdown();
  EXPECT_TRUE(WaitFor([&] { return !zap.healthy(); }, kPatience));
  zap.Stop();
}

}  // namespace
}  // namespace kfleet::coordinator
