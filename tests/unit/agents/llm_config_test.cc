#include "agents/llm_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

namespace kfleet::agents {
namespace {

TEST(LlmConfig, TheShippedFileParses) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  const std::string path =
      std::string(root != nullptr ? root : "tests/data") + "/../../configs/llm.yaml";
  Result<LlmConfig> config = LoadLlmConfig(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->endpoint, "http://127.0.0.1:8000/v1");
  EXPECT_EQ(config->dialect, "openai");
  EXPECT_EQ(config->api_key_env, "");
  EXPECT_EQ(config->timeout_ms, 120'000);
  EXPECT_DOUBLE_EQ(config->temperature_coder, 0.2);
}

TEST(LlmConfig, ReadsEveryKey) {
  Result<LlmConfig> config = ParseLlmConfig(R"(
endpoint: https://api.example.com/v1/
dialect: anthropic
model: big-coder
api_key_env: EXAMPLE_KEY
max_tokens: 4096
timeout: 30s
retries: 2
backoff: 500ms
concurrency: 8
tokens_per_minute: 100000
price: {input_per_mtok: 3.0, output_per_mtok: 15.0}
temperature: {designer: 1.0, coder: 0.1, conductor: 0.0}
)",
                                            "llm.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->endpoint, "https://api.example.com/v1");  // trailing slash dropped
  EXPECT_EQ(config->dialect, "anthropic");
  EXPECT_EQ(config->max_tokens, 4096);
  EXPECT_EQ(config->timeout_ms, 30'000);
  EXPECT_EQ(config->retries, 2);
  EXPECT_EQ(config->backoff_ms, 500);
  EXPECT_EQ(config->concurrency, 8);
  EXPECT_EQ(config->tokens_per_minute, 100'000);
  EXPECT_DOUBLE_EQ(config->Cost(1'000'000, 200'000), 3.0 + 3.0);
  EXPECT_DOUBLE_EQ(config->temperature_designer, 1.0);
  EXPECT_EQ(config->Describe(),
            "https://api.example.com/v1 (anthropic API), model big-coder, key from $EXAMPLE_KEY");
}

TEST(LlmConfig, TheKeyComesFromTheEnvironmentOnly) {
  Result<LlmConfig> config = ParseLlmConfig(
      "endpoint: http://localhost:11434/v1\nmodel: m\napi_key_env: KFLEET_TEST_LLM_KEY\n", "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  unsetenv("KFLEET_TEST_LLM_KEY");
  Result<std::string> missing = config->ApiKey();
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("$KFLEET_TEST_LLM_KEY"), std::string::npos);
  setenv("KFLEET_TEST_LLM_KEY", "sk-secret", 1);
  Result<std::string> key = config->ApiKey();
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, "sk-secret");
  EXPECT_EQ(config->Describe().find("sk-secret"), std::string::npos);
  unsetenv("KFLEET_TEST_LLM_KEY");
}

TEST(LlmConfig, BadFilesSayWhatIsWrong) {
  struct Case {
    const char* yaml;
    const char* expected;
  };
  const Case cases[] = {
      {"model: m\n", "endpoint must be an http:// or https:// URL"},
      {"endpoint: localhost:8000\nmodel: m\n", "got 'localhost:8000'"},
      {"endpoint: http://h/v1\n", "model is required"},
      {"endpoint: http://h/v1\nmodel: m\napi_key_env: sk-abcdefghijklmnop\n",
       "not the key itself; 'sk-a...'"},
      {"endpoint: http://h/v1\nmodel: m\ndialect: gemini\n", "dialect"},
      {"endpoint: http://h/v1\nmodel: m\ntemprature: {coder: 0.1}\n", "temprature"},
      {"endpoint: http://h/v1\nmodel: m\ntimeout: soon\n", "timeout"},
  };
  for (const Case& c : cases) {
    Result<LlmConfig> config = ParseLlmConfig(c.yaml, "llm.yaml");
    EXPECT_FALSE(config.ok()) << c.yaml;
    EXPECT_NE(config.status().message().find(c.expected), std::string::npos)
        << config.status().ToString();
  }
  // The key never shows in the error, even when pasted in place of the variable's name.
  Result<LlmConfig> pasted =
      ParseLlmConfig("endpoint: http://h/v1\nmodel: m\napi_key_env: sk-abcdefghijklmnop\n", "x");
  EXPECT_EQ(pasted.status().message().find("abcdefghijklmnop"), std::string::npos);
}

}  // namespace
}  // namespace kfleet::agents
