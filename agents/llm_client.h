// The LLM agent's HTTP client: one chat request at a time per caller, over libcurl, in the
// OpenAI dialect (POST {endpoint}/chat/completions) or Anthropic's (POST {endpoint}/messages).
// It retries 429, 5xx, timeouts and refused connections with doubling backoff (a Retry-After
// header wins), keeps at most `concurrency` requests in flight and the tokens of the last minute
// under `tokens_per_minute`, and can record every answer in a directory and replay them later
// (a reproducible, offline run). Never logs or stores the API key.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "agents/llm_config.h"
#include "common/status.h"

namespace kfleet::agents {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  double temperature = 0.0;
  int64_t max_tokens = 0;  // 0: the config's
};

struct ChatAnswer {
  std::string content;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  bool truncated = false;                // the server stopped at the token limit
  int attempts = 0;                      // requests sent (0 when replayed)
  std::vector<std::string> retried_for;  // what each failed attempt before the answer met
  double latency_s = 0;                  // of the successful attempt, waits for retries excluded
  double cost = 0;                       // from the config's prices
  bool replayed = false;
  std::string key;  // the request's hash: the record's name
};

struct LlmClientOptions {
  std::filesystem::path record_dir;  // when set, every answer is written here as KEY.json
  bool replay = false;               // answers come from record_dir only; a miss is an error
  // How the client waits between retries (tests pass one that records and returns at once).
  std::function<void(std::chrono::milliseconds)> sleep;
  // The clock the tokens-per-minute window runs on (tests pass one their `sleep` advances).
  std::function<std::chrono::steady_clock::time_point()> now;
};

class LlmClient {
 public:
  LlmClient(LlmConfig config, LlmClientOptions options = {});

  // The answer, or why there is none after the retries: Unavailable for 429 / 5xx / timeouts /
  // connection failures, InvalidArgument for another 4xx, Corruption for a body that is not the
  // dialect's JSON, NotFound for a replay miss, FailedPrecondition for a missing key.
  Result<ChatAnswer> Chat(const ChatRequest& request);

  // sha256 over the dialect, model and request: what record / replay files are named by.
  std::string RequestKey(const ChatRequest& request) const;

  const LlmConfig& config() const { return config_; }

 private:
  struct Attempt;
  Attempt Send(const std::string& body, const std::string& key_header) const;
  void AcquireSlot();
  void ReleaseSlot();
  void WaitForTokenBudget(int64_t estimate);
  void NoteTokens(int64_t tokens);

  LlmConfig config_;
  LlmClientOptions options_;
  std::mutex mutex_;  // guards in_flight_ and recent_
  std::condition_variable slot_free_;
  int64_t in_flight_ = 0;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent_;  // tokens used
};

// The first model an OpenAI-compatible server lists (GET {endpoint}/models), for a run that names
// only the endpoint: vLLM, llama.cpp's server and SGLang serve one model, Ollama lists what it
// has pulled. Unavailable when the server cannot be reached, NotFound when it lists none.
Result<std::string> DiscoverModel(const LlmConfig& config);

}  // namespace kfleet::agents
