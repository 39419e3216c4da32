#include "tests/fakes/fake_llm_server.h"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace kfleet::agents::testing {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

struct FakeLlmServer::State {
  boost::asio::io_context io;
  tcp::acceptor acceptor{io, {boost::asio::ip::make_address("127.0.0.1"), 0}};
  unsigned short port = 0;
  std::atomic<bool> stopping{false};
  std::thread thread;
  std::mutex mutex;  // guards replies and received
  std::deque<Reply> replies;
  std::vector<Received> received;
  std::function<Reply(const Received&)> responder;
  std::string model = "fake-coder";

  void Serve() {
    while (true) {
      tcp::socket socket(io);
      boost::system::error_code ec;
      acceptor.accept(socket, ec);
      if (stopping) return;
      if (ec) continue;
      boost::beast::flat_buffer buffer;
      http::request<http::string_body> request;
      http::read(socket, buffer, request, ec);
      if (ec) continue;
      Reply reply;
      std::function<Reply(const Received&)> respond;
      Received got{std::string(request.method_string()), std::string(request.target()),
                   std::string(request[http::field::authorization]),
                   std::string(request["x-api-key"]), request.body()};
      {
        std::lock_guard<std::mutex> lock(mutex);
        received.push_back(got);
        if (request.method() == http::verb::get && got.target.ends_with("/models")) {
          reply = {
              200,
              nlohmann::json{{"object", "list"}, {"data", {{{"id", model}, {"object", "model"}}}}}
                  .dump(),
              {},
              0};
        } else if (!replies.empty()) {
          reply = replies.front();
          replies.pop_front();
        } else if (responder) {
          respond = responder;
        } else {
          reply = {500, R"({"error":"the test scripted no reply for this request"})", {}, 0};
        }
      }
      if (respond) reply = respond(got);
      if (reply.delay_ms > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(reply.delay_ms));
      http::response<http::string_body> response{static_cast<http::status>(reply.status),
                                                 request.version()};
      response.set(http::field::content_type, "application/json");
      for (const auto& [name, value] : reply.headers) response.set(name, value);
      response.body() = reply.body;
      response.prepare_payload();
      response.keep_alive(false);
      http::write(socket, response, ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
    }
  }
};

FakeLlmServer::FakeLlmServer() : state_(std::make_unique<State>()) {
  state_->port = state_->acceptor.local_endpoint().port();
  state_->thread = std::thread([state = state_.get()] { state->Serve(); });
}

FakeLlmServer::~FakeLlmServer() {
  state_->stopping = true;
  // Wake the blocking accept with a connection of our own.
  boost::system::error_code ec;
  tcp::socket poke(state_->io);
  poke.connect({boost::asio::ip::make_address("127.0.0.1"), state_->port}, ec);
  state_->thread.join();
}

std::string FakeLlmServer::endpoint() const {
  return "http://127.0.0.1:" + std::to_string(state_->port) + "/v1";
}

void FakeLlmServer::Push(Reply reply) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->replies.push_back(std::move(reply));
}

void FakeLlmServer::SetResponder(std::function<Reply(const Received&)> responder) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->responder = std::move(responder);
}

void FakeLlmServer::SetModel(std::string model) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->model = std::move(model);
}

FakeLlmServer::Reply FakeLlmServer::Malformed() {
  return {200, R"({"choices": [{"message": {"content": "half a)", {}, 0};
}

std::vector<FakeLlmServer::Received> FakeLlmServer::received() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->received;
}

FakeLlmServer::Reply FakeLlmServer::Answer(const std::string& content,
                                           const std::string& finish_reason, int prompt_tokens,
                                           int completion_tokens) {
  nlohmann::json body = {{"id", "chatcmpl-test"},
                         {"object", "chat.completion"},
                         {"choices",
                          {{{"index", 0},
                            {"message", {{"role", "assistant"}, {"content", content}}},
                            {"finish_reason", finish_reason}}}},
                         {"usage",
                          {{"prompt_tokens", prompt_tokens},
                           {"completion_tokens", completion_tokens},
                           {"total_tokens", prompt_tokens + completion_tokens}}}};
  return {200, body.dump(), {}, 0};
}

}  // namespace kfleet::agents::testing
