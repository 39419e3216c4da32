#include "messages/transport.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace kfleet::msg {
namespace {

using std::chrono::milliseconds;

// Receive() does not block; tests wait for the socket to become readable first.
Result<std::optional<ReceivedMessage>> ReceiveWithin(zmq::socket_t& socket, bool with_routing_id,
                                                     milliseconds timeout,
                                                     const DecodeLimits& limits = {}) {
  std::vector<zmq::pollitem_t> items = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
  if (zmq::poll(items, timeout) == 0) return std::optional<ReceivedMessage>();
  return Receive(socket, with_routing_id, limits);
}

// Sends raw parts, bypassing framing, as a broken or hostile peer would.
void SendRaw(zmq::socket_t& socket, const std::vector<std::string>& parts) {
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto flags = i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    ASSERT_TRUE(socket.send(zmq::buffer(parts[i]), flags).has_value());
  }
}

Status SendHeartbeat(zmq::socket_t& socket, uint64_t sequence, std::string_view routing_id = {}) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<Heartbeat>().setSequence(sequence);
  return Send<Heartbeat>(socket, builder, routing_id);
}

uint64_t SequenceOf(const ReceivedMessage& received) {
  Result<Heartbeat::Reader> heartbeat = received.message.Root<Heartbeat>();
  return heartbeat.ok() ? heartbeat->getSequence() : 0;
}

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ConfigureSocket(router_, {}).ok());
    ASSERT_TRUE(ConfigureSocket(dealer_, {}).ok());
    router_.bind("inproc://transport-test");
    dealer_.set(zmq::sockopt::routing_id, "worker-1");
    dealer_.connect("inproc://transport-test");
  }

  // Receives one heartbeat on the router and checks it came from worker-1.
  void ExpectHeartbeatAtRouter(uint64_t sequence) {
    Result<std::optional<ReceivedMessage>> received =
        ReceiveWithin(router_, true, milliseconds(2000));
    ASSERT_TRUE(received.ok()) << received.status().ToString();
    ASSERT_TRUE(received->has_value()) << "nothing arrived";
    EXPECT_EQ((*received)->routing_id, "worker-1");
    EXPECT_EQ(SequenceOf(**received), sequence);
  }

  void ExpectRejectedAtRouter(std::string_view words) {
    Result<std::optional<ReceivedMessage>> received =
        ReceiveWithin(router_, true, milliseconds(2000));
    ASSERT_FALSE(received.ok());
    EXPECT_NE(received.status().message().find(words), std::string::npos)
        << received.status().ToString();
  }

  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  zmq::socket_t dealer_{context_, zmq::socket_type::dealer};
};

TEST_F(TransportTest, DealerToRouterAndBack) {
  ASSERT_TRUE(SendHeartbeat(dealer_, 41).ok());
  ExpectHeartbeatAtRouter(41);

  ASSERT_TRUE(SendHeartbeat(router_, 42, "worker-1").ok());
  Result<std::optional<ReceivedMessage>> reply = ReceiveWithin(dealer_, false, milliseconds(2000));
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_TRUE(reply->has_value());
  EXPECT_EQ((*reply)->routing_id, "");
  EXPECT_EQ(SequenceOf(**reply), 42u);
}

TEST_F(TransportTest, NothingToReadIsNotAnError) {
  Result<std::optional<ReceivedMessage>> received = Receive(router_, true);
  ASSERT_TRUE(received.ok());
  EXPECT_FALSE(received->has_value());
}

TEST_F(TransportTest, SendWithoutPeerIsUnavailable) {
  zmq::socket_t lonely(context_, zmq::socket_type::dealer);
  ASSERT_TRUE(ConfigureSocket(lonely, {}).ok());
  const Status status = SendHeartbeat(lonely, 1);
  EXPECT_EQ(status.code(), ErrorCode::kUnavailable) << status.ToString();
}

TEST_F(TransportTest, UnknownRoutingIdIsUnavailableWhenMandatory) {
  router_.set(zmq::sockopt::router_mandatory, 1);
  const Status status = SendHeartbeat(router_, 1, "nobody");
  EXPECT_EQ(status.code(), ErrorCode::kUnavailable) << status.ToString();
}

TEST_F(TransportTest, MalformedMessagesAreDrainedAndReported) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<Heartbeat>().setSequence(9);
  const EncodedFrames frames = Encode<Heartbeat>(builder);
  const std::string body(frames.BodyBytes());

  SendRaw(dealer_, {frames.header, body, "extra", "parts"});
  ExpectRejectedAtRouter("from peer 0x776f726b65722d31: message has 5 parts, expected 3");
  SendRaw(dealer_, {frames.header});
  ExpectRejectedAtRouter("2 parts, expected 3");
  SendRaw(dealer_, {"NOTKFLT!", body});
  ExpectRejectedAtRouter("KFLT");
  SendRaw(dealer_, {frames.header, "garbage!"});
  ExpectRejectedAtRouter("heartbeat body is not a valid message");

  ASSERT_TRUE(SendHeartbeat(dealer_, 10).ok());
  ExpectHeartbeatAtRouter(10);
}

TEST_F(TransportTest, MalformedMessageAtDealerDoesNotDesync) {
  SendRaw(router_, {"worker-1", "one", "two", "three"});
  Result<std::optional<ReceivedMessage>> bad = ReceiveWithin(dealer_, false, milliseconds(2000));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);

  ASSERT_TRUE(SendHeartbeat(router_, 11, "worker-1").ok());
  Result<std::optional<ReceivedMessage>> good = ReceiveWithin(dealer_, false, milliseconds(2000));
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  ASSERT_TRUE(good->has_value());
  EXPECT_EQ(SequenceOf(**good), 11u);
}

// ZMQ_MAXMSGSIZE is enforced by the stream decoder, so this test needs a real (ipc) connection.
class TransportLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/kfleet-transport-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    endpoint_ = "ipc://" + (dir_ / "router.sock").string();
    limits_.max_body_bytes = 4096;
    ASSERT_TRUE(ConfigureSocket(router_, limits_).ok());
    router_.bind(endpoint_);
  }

  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Sends heartbeats until one with `sequence` reaches the router; earlier ones may still be in
  // flight and are skipped. A DEALER whose connection was dropped reconnects on its own.
  void ExpectHeartbeatsGetThrough(zmq::socket_t& dealer, uint64_t sequence) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      // Unavailable while the DEALER has no connection; the next round retries.
      SendHeartbeat(dealer, sequence).IgnoreError();
      Result<std::optional<ReceivedMessage>> received =
          ReceiveWithin(router_, true, milliseconds(100), limits_);
      ASSERT_TRUE(received.ok()) << received.status().ToString();
      if (received->has_value() && SequenceOf(**received) == sequence) return;
    }
    FAIL() << "heartbeat " << sequence << " did not reach the router within 5 s";
  }

  zmq::socket_t Connect() {
    zmq::socket_t dealer(context_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint_);
    return dealer;
  }

  std::filesystem::path dir_;
  std::string endpoint_;
  DecodeLimits limits_;
  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
};

TEST_F(TransportLimitTest, OversizedFrameIsDroppedAndServiceContinues) {
  zmq::socket_t offender = Connect();
  zmq::socket_t bystander = Connect();
  ExpectHeartbeatsGetThrough(offender, 1);
  ExpectHeartbeatsGetThrough(bystander, 2);

  capnp::MallocMessageBuilder builder;
  builder.initRoot<Assign>().initPayload(8192);
  const EncodedFrames frames = Encode<Assign>(builder);
  SendRaw(offender, {frames.header, std::string(frames.BodyBytes())});

  // ZeroMQ closes the offender's connection instead of delivering the frame; only stray
  // heartbeats may show up meanwhile.
  const auto quiet_until = std::chrono::steady_clock::now() + milliseconds(300);
  while (std::chrono::steady_clock::now() < quiet_until) {
    Result<std::optional<ReceivedMessage>> received =
        ReceiveWithin(router_, true, milliseconds(50), limits_);
    ASSERT_TRUE(received.ok()) << received.status().ToString();
    if (received->has_value()) {
      EXPECT_TRUE((*received)->message.Is<Heartbeat>());
    }
  }

  ExpectHeartbeatsGetThrough(bystander, 3);
  ExpectHeartbeatsGetThrough(offender, 4);
}

}  // namespace
}  // namespace kfleet::msg
