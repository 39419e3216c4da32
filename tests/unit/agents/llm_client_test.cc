#include "agents/llm_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/fakes/fake_llm_server.h"

namespace kfleet::agents {
namespace {

using testing::FakeLlmServer;
using Reply = FakeLlmServer::Reply;

LlmConfig ConfigFor(const FakeLlmServer& server, const std::string& extra = "") {
  Result<LlmConfig> config = ParseLlmConfig(
      "endpoint: " + server.endpoint() + "\nmodel: test-coder\ntimeout: 1s\nretries: 3\n" +
          "backoff: 100ms\nprice: {input_per_mtok: 2.0, output_per_mtok: 8.0}\n" + extra,
      "test");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : LlmConfig{};
}

ChatRequest Request(const std::string& prompt) {
  ChatRequest request;
  request.messages = {{"system", "You write CUDA kernels."}, {"user", prompt}};
  request.temperature = 0.2;
  return request;
}

// Records the waits instead of sleeping.
struct Sleeps {
  std::vector<int64_t> ms;
  LlmClientOptions Options() {
    LlmClientOptions options;
    options.sleep = [this](std::chrono::milliseconds d) { ms.push_back(d.count()); };
    return options;
  }
};

TEST(LlmClient, SendsAnOpenAiChatRequestAndReadsTheAnswer) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("```cuda\n// kernel\n```", "stop", 1000, 500));
  LlmClient client(ConfigFor(server));
  Result<ChatAnswer> answer = client.Chat(Request("Write a LayerNorm."));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->content, "```cuda\n// kernel\n```");
  EXPECT_EQ(answer->input_tokens, 1000);
  EXPECT_EQ(answer->output_tokens, 500);
  EXPECT_FALSE(answer->truncated);
  EXPECT_EQ(answer->attempts, 1);
  EXPECT_DOUBLE_EQ(answer->cost, (1000 * 2.0 + 500 * 8.0) / 1e6);
  const std::vector<FakeLlmServer::Received> got = server.received();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].target, "/v1/chat/completions");
  EXPECT_EQ(got[0].authorization, "");  // no key configured
  const nlohmann::json body = nlohmann::json::parse(got[0].body);
  EXPECT_EQ(body["model"], "test-coder");
  EXPECT_EQ(body["messages"].size(), 2u);
  EXPECT_EQ(body["messages"][1]["content"], "Write a LayerNorm.");
  EXPECT_DOUBLE_EQ(body["temperature"].get<double>(), 0.2);
  EXPECT_EQ(body["max_tokens"], 8192);
}

TEST(LlmClient, SendsTheKeyFromTheEnvironmentAndSaysWhenItIsMissing) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("ok"));
  LlmClient client(ConfigFor(server, "api_key_env: KFLEET_TEST_CLIENT_KEY\n"));
  unsetenv("KFLEET_TEST_CLIENT_KEY");
  Result<ChatAnswer> missing = client.Chat(Request("x"));
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("KFLEET_TEST_CLIENT_KEY"), std::string::npos);
  EXPECT_TRUE(server.received().empty());
  setenv("KFLEET_TEST_CLIENT_KEY", "sk-test-123", 1);
  ASSERT_TRUE(client.Chat(Request("x")).ok());
  EXPECT_EQ(server.received().at(0).authorization, "Bearer sk-test-123");
  unsetenv("KFLEET_TEST_CLIENT_KEY");
}

TEST(LlmClient, RetriesRateLimitsHonouringRetryAfterAndServerErrorsWithBackoff) {
  FakeLlmServer server;
  server.Push({429, R"({"error":"slow down"})", {{"Retry-After", "3"}}, 0});
  server.Push({500, R"({"error":"boom"})", {}, 0});
  server.Push({503, "upstream down", {}, 0});
  server.Push(FakeLlmServer::Answer("finally"));
  Sleeps sleeps;
  LlmClient client(ConfigFor(server), sleeps.Options());
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->content, "finally");
  EXPECT_EQ(answer->attempts, 4);
  // Retry-After 3 s first; then the backoff of 100 ms doubled per retry.
  EXPECT_EQ(sleeps.ms, (std::vector<int64_t>{3000, 200, 400}));
}

TEST(LlmClient, GivesUpAfterTheRetriesWithTheLastProblem) {
  FakeLlmServer server;
  for (int i = 0; i < 4; ++i) server.Push({502, "bad gateway", {}, 0});
  Sleeps sleeps;
  LlmClient client(ConfigFor(server), sleeps.Options());
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  EXPECT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(answer.status().message().find("after 4 attempt(s)"), std::string::npos);
  EXPECT_NE(answer.status().message().find("HTTP 502: bad gateway"), std::string::npos);
  EXPECT_EQ(server.received().size(), 4u);
}

TEST(LlmClient, AHangPastTheTimeoutIsRetried) {
  FakeLlmServer server;
  server.Push({200, FakeLlmServer::Answer("late").body, {}, 1500});
  server.Push(FakeLlmServer::Answer("in time"));
  Sleeps sleeps;
  LlmClient client(ConfigFor(server), sleeps.Options());
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->content, "in time");
  EXPECT_EQ(answer->attempts, 2);
}

TEST(LlmClient, AMalformedBodyOrAnotherClientErrorIsNotRetried) {
  FakeLlmServer server;
  server.Push({200, "{\"choices\": [", {}, 0});
  server.Push({200, R"({"object": "list"})", {}, 0});
  server.Push({400, R"({"error":"model not found"})", {}, 0});
  LlmClient client(ConfigFor(server));
  Result<ChatAnswer> broken = client.Chat(Request("a"));
  EXPECT_EQ(broken.status().code(), ErrorCode::kCorruption) << broken.status().ToString();
  EXPECT_NE(broken.status().message().find("not JSON"), std::string::npos);
  Result<ChatAnswer> shape = client.Chat(Request("b"));
  EXPECT_EQ(shape.status().code(), ErrorCode::kCorruption) << shape.status().ToString();
  Result<ChatAnswer> refused = client.Chat(Request("c"));
  EXPECT_EQ(refused.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("HTTP 400"), std::string::npos);
  EXPECT_EQ(server.received().size(), 3u);
}

TEST(LlmClient, ATruncatedAnswerIsMarked) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("```cuda\n#include", "length"));
  LlmClient client(ConfigFor(server));
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  ASSERT_TRUE(answer.ok());
  EXPECT_TRUE(answer->truncated);
}

TEST(LlmClient, AnUnreachableServerIsUnavailable) {
  int port = 0;
  {
    FakeLlmServer gone;  // a port that was just free
    port = std::stoi(gone.endpoint().substr(gone.endpoint().rfind(':') + 1));
  }
  Result<LlmConfig> config = ParseLlmConfig(
      "endpoint: http://127.0.0.1:" + std::to_string(port) + "/v1\nmodel: m\nretries: 1\n", "t");
  ASSERT_TRUE(config.ok());
  Sleeps sleeps;
  LlmClient client(*config, sleeps.Options());
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  EXPECT_EQ(answer.status().code(), ErrorCode::kUnavailable) << answer.status().ToString();
  EXPECT_EQ(sleeps.ms.size(), 1u);
}

TEST(LlmClient, SpeaksAnthropicsDialect) {
  FakeLlmServer server;
  server.Push({200,
               R"({"content":[{"type":"text","text":"part one "},{"type":"text","text":"two"}],)"
               R"("stop_reason":"max_tokens","usage":{"input_tokens":7,"output_tokens":9}})",
               {},
               0});
  setenv("KFLEET_TEST_ANTHROPIC_KEY", "ak-1", 1);
  LlmClient client(
      ConfigFor(server, "dialect: anthropic\napi_key_env: KFLEET_TEST_ANTHROPIC_KEY\n"));
  Result<ChatAnswer> answer = client.Chat(Request("x"));
  unsetenv("KFLEET_TEST_ANTHROPIC_KEY");
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->content, "part one two");
  EXPECT_TRUE(answer->truncated);
  EXPECT_EQ(answer->input_tokens, 7);
  const FakeLlmServer::Received got = server.received().at(0);
  EXPECT_EQ(got.target, "/v1/messages");
  EXPECT_EQ(got.api_key, "ak-1");
  const nlohmann::json body = nlohmann::json::parse(got.body);
  EXPECT_EQ(body["system"], "You write CUDA kernels.");
  EXPECT_EQ(body["messages"].size(), 1u);
}

TEST(LlmClient, RecordsAndReplaysExactly) {
  Result<TempDir> dir = TempDir::Create("kfleet-llm-record");
  ASSERT_TRUE(dir.ok());
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("first answer", "stop", 11, 22));
  server.Push(FakeLlmServer::Answer("second answer", "length", 33, 44));
  LlmClientOptions record;
  record.record_dir = dir->path();
  LlmClient recorder(ConfigFor(server), record);
  Result<ChatAnswer> a = recorder.Chat(Request("one"));
  Result<ChatAnswer> b = recorder.Chat(Request("two"));
  ASSERT_TRUE(a.ok() && b.ok());

  LlmClientOptions replay;
  replay.record_dir = dir->path();
  replay.replay = true;
  LlmClient replayer(ConfigFor(server), replay);
  for (const auto& [prompt, recorded] : {std::pair{"two", *b}, std::pair{"one", *a}}) {
    Result<ChatAnswer> again = replayer.Chat(Request(prompt));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_TRUE(again->replayed);
    EXPECT_EQ(again->content, recorded.content);
    EXPECT_EQ(again->input_tokens, recorded.input_tokens);
    EXPECT_EQ(again->output_tokens, recorded.output_tokens);
    EXPECT_EQ(again->truncated, recorded.truncated);
    EXPECT_EQ(again->key, recorded.key);
  }
  EXPECT_EQ(server.received().size(), 2u);  // replay never reached the server
  Result<ChatAnswer> miss = replayer.Chat(Request("three"));
  EXPECT_EQ(miss.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(miss.status().message().find("no recorded answer"), std::string::npos);
  // A different temperature is a different request.
  ChatRequest warmer = Request("one");
  warmer.temperature = 0.9;
  EXPECT_NE(replayer.RequestKey(warmer), a->key);
}

TEST(LlmClient, KeepsTokensPerMinuteUnderTheLimit) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("a", "stop", 600, 300));
  server.Push(FakeLlmServer::Answer("b", "stop", 600, 300));
  // A clock the client's waits advance.
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();
  std::vector<int64_t> waits;
  LlmClientOptions options;
  options.now = [&now] { return now; };
  options.sleep = [&](std::chrono::milliseconds d) {
    waits.push_back(d.count());
    now += d;
  };
  LlmClient client(ConfigFor(server, "tokens_per_minute: 1000\nmax_tokens: 100\n"), options);
  ASSERT_TRUE(client.Chat(Request("x")).ok());
  EXPECT_TRUE(waits.empty());
  now += std::chrono::seconds(10);
  // 900 tokens used in this minute and about 100 more asked for: the request waits out the rest
  // of the minute (50 s).
  ASSERT_TRUE(client.Chat(Request("y")).ok());
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_NEAR(static_cast<double>(waits[0]), 50'000.0, 5.0);
}

}  // namespace
}  // namespace kfleet::agents
