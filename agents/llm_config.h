// What the LLM agent needs to reach a model: configs/llm.yaml (see the file for every key). The
// API key itself is never in the file, the store or a log: the file names the environment
// variable that holds it, read when a request is made.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kfleet::agents {

struct LlmConfig {
  std::string endpoint;            // base URL, "http://127.0.0.1:8000/v1"
  std::string dialect = "openai";  // "openai" (/chat/completions) or "anthropic" (/messages)
  std::string model;
  std::string api_key_env;  // empty: the endpoint needs no key
  int64_t max_tokens = 8192;
  int64_t timeout_ms = 120'000;
  int64_t retries = 4;               // after the first attempt, on 429 / 5xx / timeouts
  int64_t backoff_ms = 2'000;        // first wait, doubled per retry; Retry-After wins
  int64_t concurrency = 4;           // requests in flight per process
  int64_t tokens_per_minute = 0;     // 0: no limit
  double price_input_per_mtok = 0;   // cost per million prompt tokens
  double price_output_per_mtok = 0;  // cost per million completion tokens
  double temperature_designer = 0.7;
  double temperature_coder = 0.2;
  double temperature_conductor = 0.0;
  // Set from `--llm-record DIR` / `--llm-replay DIR` (not from the file): where answers are
  // recorded, and whether they come only from there (an offline, reproducible run).
  std::string record_dir;
  bool replay = false;

  // The key from the environment; FailedPrecondition naming the variable when it is unset.
  Result<std::string> ApiKey() const;
  // For logs and `kfleet show`: endpoint, dialect, model, and where the key comes from.
  std::string Describe() const;
  // The cost of one call.
  double Cost(int64_t input_tokens, int64_t output_tokens) const;
};

// The config as JSON and back: how it travels in job options and task payloads. It holds the
// name of the key's variable, never the key.
std::string LlmConfigToJson(const LlmConfig& config);
// InvalidArgument for text that is not such an object or breaks the file's rules.
Result<LlmConfig> LlmConfigFromJson(std::string_view text);
// The rules a parsed config must meet (endpoint URL, model, variable name); `source` names it.
Status ValidateLlmConfig(LlmConfig& config, std::string_view source);

Result<LlmConfig> ParseLlmConfig(std::string_view yaml, std::string source);
Result<LlmConfig> LoadLlmConfig(const std::filesystem::path& path);

}  // namespace kfleet::agents
