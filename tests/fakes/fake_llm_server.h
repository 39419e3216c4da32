// An OpenAI-compatible (and Anthropic-compatible) server for tests: answers POSTs on loopback
// with scripted replies, one per request in order, or, once those are used up, with what a
// responder function returns for the request; answers GET /models with one model; keeps what it
// received. Boost.Beast, synchronous, one connection at a time (fake_llm_server.cc).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kfleet::agents::testing {

class FakeLlmServer {
 public:
  struct Reply {
    int status = 200;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    int delay_ms = 0;  // before answering (a hang past the client's timeout)
  };
  struct Received {
    std::string method;  // "POST", "GET"
    std::string target;
    std::string authorization;  // the Authorization header
    std::string api_key;        // the x-api-key header
    std::string body;
  };

  FakeLlmServer();
  ~FakeLlmServer();
  FakeLlmServer(const FakeLlmServer&) = delete;
  FakeLlmServer& operator=(const FakeLlmServer&) = delete;

  // http://127.0.0.1:PORT/v1
  std::string endpoint() const;
  void Push(Reply reply);
  // Answers the requests no scripted reply is left for (called on the server's thread).
  void SetResponder(std::function<Reply(const Received&)> responder);
  // What GET {endpoint}/models lists (default "fake-coder").
  void SetModel(std::string model);
  std::vector<Received> received();

  // A chat completion in the OpenAI dialect.
  // A body that is not JSON, for the client's malformed-answer path.
  static Reply Malformed();
  static Reply Answer(const std::string& content, const std::string& finish_reason = "stop",
                      int prompt_tokens = 100, int completion_tokens = 50);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kfleet::agents::testing
