// Client::Call against an in-test ROUTER standing in for kfleetd.
#include "cli/client.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "common/temp_dir.h"
#include "messages/curve.h"
#include "messages/transport.h"

namespace kfleet::cli {
namespace {

using Responder = std::function<void(zmq::socket_t& router, const msg::ReceivedMessage& request)>;

// A ROUTER on a free loopback port; Serve answers the first request on a thread.
class FakeCoordinator {
 public:
  FakeCoordinator() { EXPECT_TRUE(msg::ConfigureSocket(router_, {}).ok()); }
  ~FakeCoordinator() {
    if (thread_.joinable()) thread_.join();
  }

  // Call before Bind to require CURVE; ZeroMQ admits any client key when no ZAP handler runs.
  void UseCurve(const std::string& secret_key) {
    ASSERT_TRUE(msg::UseCurveServer(router_, secret_key, "kfleet-clients").ok());
  }
  void Bind() {
    router_.bind("tcp://127.0.0.1:0");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }

  void Serve(Responder responder) {
    thread_ = std::thread([this, responder = std::move(responder)] {
      std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
      if (zmq::poll(items, std::chrono::milliseconds(5000)) == 0) return;
      Result<std::optional<msg::ReceivedMessage>> request = msg::Receive(router_, true);
      if (!request.ok() || !request->has_value()) return;
      responder(router_, **request);
    });
  }

  const std::string& endpoint() const { return endpoint_; }
  zmq::context_t& context() { return context_; }

 private:
  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string endpoint_;
  std::thread thread_;
};

void AnswerStatus(zmq::socket_t& router, const msg::ReceivedMessage& request) {
  ASSERT_TRUE(request.message.Is<msg::StatusRequest>());
  capnp::MallocMessageBuilder builder;
  auto jobs = builder.initRoot<msg::StatusReply>().initJobs(1);
  jobs[0].setId(5);
  jobs[0].setName("echo x100");
  jobs[0].setState("running");
  jobs[0].initProgress().setTasksDone(37);
  ASSERT_TRUE(msg::Send<msg::StatusReply>(router, builder, request.routing_id).ok());
}

Client OpenClient(const std::string& endpoint, const std::filesystem::path& credentials = {}) {
  Result<Client> client = Client::Open(Connection{endpoint, credentials, "test", ""}, 5000);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return std::move(client).value();
}

Result<Answer<msg::StatusReply>> CallStatus(Client& client, int64_t timeout_ms = 5000) {
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::StatusRequest>();
  return client.Call<msg::StatusRequest, msg::StatusReply>(request, timeout_ms);
}

TEST(ClientTest, StatusRoundTrip) {
  FakeCoordinator coordinator;
  coordinator.Bind();
  coordinator.Serve(AnswerStatus);
  Client client = OpenClient(coordinator.endpoint());
  Result<Answer<msg::StatusReply>> reply = CallStatus(client);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_EQ(reply->root.getJobs().size(), 1u);
  EXPECT_EQ(reply->root.getJobs()[0].getId(), 5u);
  EXPECT_EQ(reply->root.getJobs()[0].getProgress().getTasksDone(), 37u);
}

TEST(ClientTest, ApiErrorBecomesStatus) {
  FakeCoordinator coordinator;
  coordinator.Bind();
  coordinator.Serve([](zmq::socket_t& router, const msg::ReceivedMessage& request) {
    capnp::MallocMessageBuilder builder;
    msg::ApiError::Builder error = builder.initRoot<msg::ApiError>();
    error.setCode("not_found");
    error.setMessage("no job 12");
    ASSERT_TRUE(msg::Send<msg::ApiError>(router, builder, request.routing_id).ok());
  });
  Client client = OpenClient(coordinator.endpoint());
  Result<Answer<msg::StatusReply>> reply = CallStatus(client);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(reply.status().message(), "no job 12");
}

TEST(ClientTest, WrongReplyTypeIsInternal) {
  FakeCoordinator coordinator;
  coordinator.Bind();
  coordinator.Serve([](zmq::socket_t& router, const msg::ReceivedMessage& request) {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<msg::NodesReply>();
    ASSERT_TRUE(msg::Send<msg::NodesReply>(router, builder, request.routing_id).ok());
  });
  Client client = OpenClient(coordinator.endpoint());
  Result<Answer<msg::StatusReply>> reply = CallStatus(client);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kInternal);
  EXPECT_NE(reply.status().message().find("nodesReply"), std::string::npos);
  EXPECT_NE(reply.status().message().find("statusReply"), std::string::npos);
}

TEST(ClientTest, NoAnswerIsUnavailableWithAHint) {
  FakeCoordinator coordinator;
  coordinator.Bind();  // accepts the connection, never answers
  Client client = OpenClient(coordinator.endpoint());
  const auto started = std::chrono::steady_clock::now();
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 300);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kUnavailable);
  const std::string& message = reply.status().message();
  EXPECT_NE(message.find("no answer from the coordinator at " + coordinator.endpoint() +
                         " within 300 ms"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("kfleetd --state DIR"), std::string::npos) << message;
}

TEST(ClientTest, NothingListeningIsUnavailable) {
  std::string endpoint;
  {
    FakeCoordinator closed;  // a port that was free a moment ago
    closed.Bind();
    endpoint = closed.endpoint();
  }
  Client client = OpenClient(endpoint);
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 200);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(reply.status().message().find("is kfleetd running?"), std::string::npos);
}

TEST(ClientTest, BadEndpointIsInvalidArgument) {
  Client client = OpenClient("tcp://no port here");
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 200);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(reply.status().message().find("tcp://no port here"), std::string::npos);
}

class CurveClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> temp = TempDir::Create("kfleet-cli-curve");
    ASSERT_TRUE(temp.ok()) << temp.status().ToString();
    temp_.emplace(std::move(temp).value());
    dir_ = temp_->path();
    Result<msg::CurveKeyPair> server = msg::GenerateCurveKeyPair();
    Result<msg::CurveKeyPair> client = msg::GenerateCurveKeyPair();
    ASSERT_TRUE(server.ok() && client.ok());
    server_ = *server;
    credentials_ = dir_ / "client.key";
    ASSERT_TRUE(msg::SaveClientCredentials(
                    credentials_, {"local", "tcp://127.0.0.1:1", server_.public_key, *client})
                    .ok());
  }
  std::optional<TempDir> temp_;  // removed, with everything in it, after TearDown
  std::filesystem::path dir_;
  std::filesystem::path credentials_;
  msg::CurveKeyPair server_;
};

TEST_F(CurveClientTest, RoundTripWithCredentials) {
  FakeCoordinator coordinator;
  coordinator.UseCurve(server_.secret_key);
  coordinator.Bind();
  coordinator.Serve(AnswerStatus);
  Client client = OpenClient(coordinator.endpoint(), credentials_);
  Result<Answer<msg::StatusReply>> reply = CallStatus(client);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->root.getJobs().size(), 1u);
}

TEST_F(CurveClientTest, MissingCredentialsAreNamedNotTimedOut) {
  FakeCoordinator coordinator;
  coordinator.UseCurve(server_.secret_key);
  coordinator.Bind();
  Client client = OpenClient(coordinator.endpoint());
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 3000);
  ASSERT_FALSE(reply.ok());
  // As below, the mismatch is either reported by the server or seen as a closed connection.
  EXPECT_TRUE(reply.status().code() == ErrorCode::kPermissionDenied ||
              reply.status().code() == ErrorCode::kUnavailable)
      << reply.status().ToString();
  EXPECT_NE(reply.status().message().find("requires credentials"), std::string::npos)
      << reply.status().message();
}

TEST_F(CurveClientTest, CredentialsForAnInsecureCoordinatorAreNamed) {
  FakeCoordinator coordinator;
  coordinator.Bind();
  Client client = OpenClient(coordinator.endpoint(), credentials_);
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 3000);
  ASSERT_FALSE(reply.ok());
  // Which side sees the mechanism mismatch first is a race: the client either hears why
  // (FailedPrecondition) or only sees the connection close (Unavailable); both name the cause.
  EXPECT_TRUE(reply.status().code() == ErrorCode::kFailedPrecondition ||
              reply.status().code() == ErrorCode::kUnavailable)
      << reply.status().ToString();
  EXPECT_NE(reply.status().message().find("--insecure"), std::string::npos)
      << reply.status().message();
}

TEST_F(CurveClientTest, RefusedKeyIsPermissionDenied) {
  FakeCoordinator coordinator;
  // A ZAP handler that refuses everyone, as kfleetd's does for an unlisted key.
  zmq::socket_t zap(coordinator.context(), zmq::socket_type::rep);
  zap.bind("inproc://zeromq.zap.01");
  coordinator.UseCurve(server_.secret_key);
  coordinator.Bind();
  std::thread handler([&zap] {
    std::vector<zmq::pollitem_t> items = {{zap.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, std::chrono::milliseconds(5000)) == 0) return;
    std::vector<zmq::message_t> request;
    while (true) {
      zmq::message_t part;
      if (!zap.recv(part, zmq::recv_flags::none)) return;
      const bool more = part.more();
      request.push_back(std::move(part));
      if (!more) break;
    }
    const std::string request_id = request.size() > 1 ? request[1].to_string() : "";
    const std::string reply[] = {"1.0", request_id, "400", "key not authorized", "", ""};
    for (size_t i = 0; i < std::size(reply); ++i) {
      const auto flags =
          i + 1 < std::size(reply) ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!zap.send(zmq::buffer(reply[i]), flags)) return;
    }
  });
  Client client = OpenClient(coordinator.endpoint(), credentials_);
  Result<Answer<msg::StatusReply>> reply = CallStatus(client, 3000);
  handler.join();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(reply.status().message().find("refused this client's key"), std::string::npos)
      << reply.status().message();
}

TEST(ApiErrorStatusTest, MapsCodesBack) {
  EXPECT_EQ(ApiErrorStatus("not_found", "no job 3"), NotFound("no job 3"));
  EXPECT_EQ(ApiErrorStatus("invalid_argument", "x").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ApiErrorStatus("already_exists", "x").code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(ApiErrorStatus("failed_precondition", "x").code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ApiErrorStatus("permission_denied", "x").code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(ApiErrorStatus("resource_exhausted", "x").code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(ApiErrorStatus("deadline_exceeded", "x").code(), ErrorCode::kDeadlineExceeded);
  EXPECT_EQ(ApiErrorStatus("unavailable", "x").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(ApiErrorStatus("internal", "x").code(), ErrorCode::kInternal);

  const Status unknown = ApiErrorStatus("quota_exceeded", "too many jobs");
  EXPECT_EQ(unknown.code(), ErrorCode::kInternal);
  EXPECT_NE(unknown.message().find("too many jobs"), std::string::npos);
  EXPECT_NE(unknown.message().find("quota_exceeded"), std::string::npos);
  EXPECT_FALSE(ApiErrorStatus("not_found", "").message().empty());
}

TEST(ApiErrorStatusTest, TimeoutsReadNaturally) {
  EXPECT_EQ(FormatTimeout(10'000), "10 s");
  EXPECT_EQ(FormatTimeout(250), "250 ms");
  EXPECT_EQ(FormatTimeout(1500), "1.5 s");
}

}  // namespace
}  // namespace kfleet::cli
