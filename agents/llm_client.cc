#include "agents/llm_client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/files.h"
#include "common/ids.h"

namespace kfleet::agents {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The longest a Retry-After header may make the client wait.
constexpr int64_t kMaxRetryAfterMs = 120'000;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// Keeps the Retry-After header (seconds) of the response.
size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  const std::string_view line(data, size * count);
  constexpr std::string_view kName = "retry-after:";
  if (line.size() > kName.size()) {
    std::string lower(line.substr(0, kName.size()));
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == kName) {
      const std::string value(line.substr(kName.size()));
      char* end = nullptr;
      const double seconds = std::strtod(value.c_str(), &end);
      if (end != value.c_str() && seconds >= 0) {
        *static_cast<int64_t*>(user) = static_cast<int64_t>(seconds * 1000);
      }
    }
  }
  return size * count;
}

Json RequestBody(const LlmConfig& config, const ChatRequest& request) {
  const int64_t max_tokens = request.max_tokens > 0 ? request.max_tokens : config.max_tokens;
  Json messages = Json::array();
  std::string system;
  for (const ChatMessage& m : request.messages) {
    // Anthropic's API takes the system prompt beside the messages.
    if (config.dialect == "anthropic" && m.role == "system") {
      system += (system.empty() ? "" : "\n\n") + m.content;
      continue;
    }
    messages.push_back({{"role", m.role}, {"content", m.content}});
  }
  Json body = {{"model", config.model},
               {"messages", messages},
               {"temperature", request.temperature},
               {"max_tokens", max_tokens}};
  if (config.dialect == "anthropic" && !system.empty()) body["system"] = system;
  return body;
}

// What record / replay files are named by: the request body and the dialect, hashed.
std::string KeyOf(const LlmConfig& config, Json body) {
  body["dialect"] = config.dialect;
  return Sha256Hex(body.dump());
}

// The same with every number masked (a run of digits becomes one '#'): prompts carry measured
// times and error counts, which differ from run to run, so a replayed run whose prompt differs
// from the recorded one only in numbers still finds its answer.
std::string MaskedKeyOf(const LlmConfig& config, Json body) {
  body["dialect"] = config.dialect;
  const std::string text = body.dump();
  std::string masked;
  masked.reserve(text.size());
  for (char c : text) {
    const bool digit = c >= '0' && c <= '9';
    if (!digit) {
      masked.push_back(c);
    } else if (masked.empty() || masked.back() != '#') {
      masked.push_back('#');
    }
  }
  return Sha256Hex(masked);
}

// The recorded answer whose request matches `masked_key`, the first by file name; empty when
// none does.
std::filesystem::path FindByMaskedKey(const std::filesystem::path& dir,
                                      const std::string& masked_key) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const std::filesystem::path& file : files) {
    Result<std::string> text = ReadFile(file);
    if (!text.ok()) continue;
    const Json saved = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (saved.is_object() && saved.value("masked_key", "") == masked_key) return file;
  }
  return {};
}

// The answer in a response body of the dialect, or DataLoss saying what is missing.
Result<ChatAnswer> ParseAnswer(const LlmConfig& config, const std::string& text) {
  const auto malformed = [&](std::string_view what) {
    return Corruption(fmt::format("the server's answer is not a {} chat response ({}): {}",
                                  config.dialect, what, text.substr(0, 200)));
  };
  Json body;
  try {
    body = Json::parse(text);
  } catch (const Json::exception& e) {
    return malformed(fmt::format("not JSON: {}", e.what()));
  }
  ChatAnswer answer;
  try {
    if (config.dialect == "anthropic") {
      for (const Json& part : body.at("content")) {
        if (part.value("type", "") == "text") answer.content += part.at("text").get<std::string>();
      }
      answer.truncated = body.value("stop_reason", "") == "max_tokens";
      const Json& usage = body.at("usage");
      answer.input_tokens = usage.value("input_tokens", int64_t{0});
      answer.output_tokens = usage.value("output_tokens", int64_t{0});
    } else {
      const Json& choice = body.at("choices").at(0);
      const Json& content = choice.at("message").at("content");
      if (!content.is_null()) answer.content = content.get<std::string>();
      answer.truncated = choice.value("finish_reason", "") == "length";
      if (body.contains("usage") && body["usage"].is_object()) {
        answer.input_tokens = body["usage"].value("prompt_tokens", int64_t{0});
        answer.output_tokens = body["usage"].value("completion_tokens", int64_t{0});
      }
    }
  } catch (const Json::exception& e) {
    return malformed(e.what());
  }
  return answer;
}

}  // namespace

// One HTTP exchange: the status (0 when there was no response) and what went wrong.
struct LlmClient::Attempt {
  long status = 0;
  std::string body;
  CURLcode curl = CURLE_OK;
  int64_t retry_after_ms = -1;
  double seconds = 0;
};

LlmClient::LlmClient(LlmConfig config, LlmClientOptions options)
    : config_(std::move(config)), options_(std::move(options)) {
  if (!options_.sleep) {
    options_.sleep = [](std::chrono::milliseconds ms) { std::this_thread::sleep_for(ms); };
  }
  if (!options_.now) options_.now = [] { return Clock::now(); };
  GlobalInit();
}

std::string LlmClient::RequestKey(const ChatRequest& request) const {
  return KeyOf(config_, RequestBody(config_, request));
}

LlmClient::Attempt LlmClient::Send(const std::string& body, const std::string& key) const {
  Attempt attempt;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    attempt.curl = CURLE_FAILED_INIT;
    return attempt;
  }
  const bool anthropic = config_.dialect == "anthropic";
  const std::string url = config_.endpoint + (anthropic ? "/messages" : "/chat/completions");
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (anthropic) headers = curl_slist_append(headers, "anthropic-version: 2023-06-01");
  std::string auth;
  if (!key.empty()) {
    auth = anthropic ? "x-api-key: " + key : "Authorization: Bearer " + key;
    headers = curl_slist_append(headers, auth.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &attempt.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, ReadHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &attempt.retry_after_ms);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_ms));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min<int64_t>(config_.timeout_ms, 10'000)));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const Clock::time_point start = Clock::now();
  attempt.curl = curl_easy_perform(curl);
  attempt.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (attempt.curl == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &attempt.status);
  // The key lives in `auth` only; wipe it before the memory goes back.
  std::fill(auth.begin(), auth.end(), '\0');
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return attempt;
}

void LlmClient::AcquireSlot() {
  std::unique_lock<std::mutex> lock(mutex_);
  slot_free_.wait(lock, [this] { return in_flight_ < config_.concurrency; });
  ++in_flight_;
}

void LlmClient::ReleaseSlot() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
  }
  slot_free_.notify_one();
}

void LlmClient::WaitForTokenBudget(int64_t estimate) {
  if (config_.tokens_per_minute <= 0) return;
  while (true) {
    std::chrono::milliseconds wait{0};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const Clock::time_point now = options_.now();
      while (!recent_.empty() && now - recent_.front().first >= std::chrono::minutes(1)) {
        recent_.pop_front();
      }
      int64_t used = 0;
      for (const auto& entry : recent_) used += entry.second;
      // A request larger than the whole budget goes alone once the minute is clear.
      if (recent_.empty() || used + estimate <= config_.tokens_per_minute) return;
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(recent_.front().first +
                                                                   std::chrono::minutes(1) - now) +
             std::chrono::milliseconds(1);
    }
    options_.sleep(wait);
  }
}

void LlmClient::NoteTokens(int64_t tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  recent_.emplace_back(options_.now(), tokens);
}

Result<ChatAnswer> LlmClient::Chat(const ChatRequest& request) {
  const Json request_body = RequestBody(config_, request);
  const std::string key = KeyOf(config_, request_body);
  const std::filesystem::path record =
      options_.record_dir.empty() ? std::filesystem::path() : options_.record_dir / (key + ".json");
  if (options_.replay) {
    if (record.empty()) return InvalidArgument("replay needs a directory of recorded answers");
    std::filesystem::path found = record;
    std::error_code ec;
    if (!std::filesystem::exists(found, ec)) {
      found = FindByMaskedKey(options_.record_dir, MaskedKeyOf(config_, request_body));
    }
    Result<std::string> text =
        found.empty() ? Result<std::string>(NotFound("no record")) : ReadFile(found);
    if (!text.ok()) {
      return NotFound(fmt::format(
          "no recorded answer for this request in {} (key {}): the prompt differs from the "
          "recorded run's",
          options_.record_dir.string(), key.substr(0, 12)));
    }
    ChatAnswer answer;
    try {
      const Json saved = Json::parse(*text);
      answer.content = saved.at("content").get<std::string>();
      answer.input_tokens = saved.value("input_tokens", int64_t{0});
      answer.output_tokens = saved.value("output_tokens", int64_t{0});
      answer.truncated = saved.value("truncated", false);
    } catch (const Json::exception& e) {
      return Corruption(fmt::format("recorded answer {} is damaged: {}", found.string(), e.what()));
    }
    answer.replayed = true;
    answer.key = key;
    answer.cost = config_.Cost(answer.input_tokens, answer.output_tokens);
    return answer;
  }
  KF_ASSIGN_OR_RETURN(std::string api_key, config_.ApiKey());
  const std::string body = request_body.dump();
  int64_t prompt_chars = 0;
  for (const ChatMessage& m : request.messages)
    prompt_chars += static_cast<int64_t>(m.content.size());
  const int64_t estimate =
      prompt_chars / 4 + (request.max_tokens > 0 ? request.max_tokens : config_.max_tokens);

  std::string last_problem;
  std::vector<std::string> problems;
  int64_t backoff_ms = config_.backoff_ms;
  for (int attempt_number = 1; attempt_number <= config_.retries + 1; ++attempt_number) {
    WaitForTokenBudget(estimate);
    AcquireSlot();
    const Attempt attempt = Send(body, api_key);
    ReleaseSlot();
    bool retry = false;
    if (attempt.curl != CURLE_OK) {
      last_problem = fmt::format("{} ({})", curl_easy_strerror(attempt.curl), config_.endpoint);
      retry = attempt.curl == CURLE_OPERATION_TIMEDOUT || attempt.curl == CURLE_COULDNT_CONNECT ||
              attempt.curl == CURLE_RECV_ERROR || attempt.curl == CURLE_SEND_ERROR ||
              attempt.curl == CURLE_GOT_NOTHING || attempt.curl == CURLE_PARTIAL_FILE;
      if (!retry) return Unavailable("the LLM request failed: " + last_problem);
    } else if (attempt.status == 429 || attempt.status >= 500) {
      last_problem = fmt::format("HTTP {}: {}", attempt.status, attempt.body.substr(0, 200));
      retry = true;
    } else if (attempt.status != 200) {
      return InvalidArgument(fmt::format("the LLM server refused the request: HTTP {}: {}",
                                         attempt.status, attempt.body.substr(0, 300)));
    } else {
      KF_ASSIGN_OR_RETURN(ChatAnswer answer, ParseAnswer(config_, attempt.body));
      answer.attempts = attempt_number;
      answer.retried_for = std::move(problems);
      answer.latency_s = attempt.seconds;
      answer.key = key;
      answer.cost = config_.Cost(answer.input_tokens, answer.output_tokens);
      NoteTokens(answer.input_tokens + answer.output_tokens > 0
                     ? answer.input_tokens + answer.output_tokens
                     : estimate);
      if (!record.empty()) {
        const Json saved = {{"content", answer.content},
                            {"input_tokens", answer.input_tokens},
                            {"output_tokens", answer.output_tokens},
                            {"truncated", answer.truncated},
                            {"masked_key", MaskedKeyOf(config_, request_body)}};
        KF_RETURN_IF_ERROR(MakeDirs(options_.record_dir));
        KF_RETURN_IF_ERROR(WriteFileAtomic(record, saved.dump(2) + "\n"));
      }
      return answer;
    }
    problems.push_back(last_problem);
    if (attempt_number > config_.retries) break;
    const int64_t wait_ms = attempt.retry_after_ms >= 0
                                ? std::min(attempt.retry_after_ms, kMaxRetryAfterMs)
                                : backoff_ms;
    options_.sleep(std::chrono::milliseconds(wait_ms));
    backoff_ms = std::min<int64_t>(backoff_ms * 2, kMaxRetryAfterMs);
  }
  return Unavailable(fmt::format("the LLM request failed after {} attempt(s); last: {}",
                                 config_.retries + 1, last_problem));
}

Result<std::string> DiscoverModel(const LlmConfig& config) {
  KF_ASSIGN_OR_RETURN(std::string key, config.ApiKey());
  GlobalInit();
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return Internal("libcurl could not start a request");
  const std::string url = config.endpoint + "/models";
  curl_slist* headers = nullptr;
  std::string auth;
  if (!key.empty()) {
    auth = config.dialect == "anthropic" ? "x-api-key: " + key : "Authorization: Bearer " + key;
    headers = curl_slist_append(headers, auth.c_str());
  }
  if (config.dialect == "anthropic") {
    headers = curl_slist_append(headers, "anthropic-version: 2023-06-01");
  }
  std::string body;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(std::min<int64_t>(config.timeout_ms, int64_t{30'000})));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;
  if (code == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  std::fill(auth.begin(), auth.end(), '\0');
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (code != CURLE_OK) {
    return Unavailable(
        fmt::format("cannot list the models of {}: {}", url, curl_easy_strerror(code)));
  }
  if (status != 200) {
    return Unavailable(fmt::format("{} answered HTTP {}: {}", url, status, body.substr(0, 200)));
  }
  const Json listing = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (listing.is_object() && listing.contains("data") && listing["data"].is_array()) {
    for (const Json& model : listing["data"]) {
      if (model.is_object() && model.contains("id") && model["id"].is_string()) {
        return model["id"].get<std::string>();
      }
    }
  }
  return NotFound(
      fmt::format("{} lists no model; name one with --llm-model or in the config file", url));
}

}  // namespace kfleet::agents
