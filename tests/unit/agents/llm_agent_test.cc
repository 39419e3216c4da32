// The LLM agent's Designer and Coder steps against the fake server: what each kind of answer
// becomes (a sketch, a source, or a recorded failure with its outcome word), and the built-in
// knowledge they paste into prompts.
#include "agents/llm_agent.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "common/files.h"
#include "common/temp_dir.h"
#include "tests/fakes/fake_llm_server.h"

namespace kfleet::agents {
namespace {

using testing::FakeLlmServer;

constexpr char kGoodKernel[] =
    "#include \"kfleet/kernel.h\"\n"
    "extern \"C\" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out,\n"
    "                             int32_t n_out, void*) {\n"
    "  return n_in == 1 && n_out == 1 ? KF_OK : KF_ERR_INVALID_ARGUMENT;\n"
    "}\n";

LlmConfig ConfigFor(const FakeLlmServer& server) {
  Result<LlmConfig> config = ParseLlmConfig("endpoint: " + server.endpoint() +
                                                "\nmodel: test-coder\ntimeout: 1s\nretries: 2\n"
                                                "backoff: 0s\nprice: {input_per_mtok: 1.0}\n",
                                            "test");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : LlmConfig{};
}

CoderInput Coder(const std::string& measured = "12.5") {
  CoderInput input;
  input.spec.name = "relu 64x64 f32";
  input.spec.family = "elementwise";
  input.spec.backend = "cpu";
  input.spec.graph = "Relu(in0) -> out0 (took " + measured + " us)";
  input.sketch = "one pass, vectorized";
  input.abi_header = "/* abi */";
  return input;
}

TEST(LlmAgent, TheCoderReturnsTheFileFromAFencedAnswer) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer(std::string("Sure.\n```cpp\n") + kGoodKernel + "```\n", "stop",
                                    400, 100));
  LlmClient client(ConfigFor(server));
  const CodeResult code = Code(client, Coder());
  EXPECT_EQ(code.failed_stage, "");
  EXPECT_EQ(code.source, kGoodKernel);
  EXPECT_TRUE(code.call.ok);
  EXPECT_EQ(code.call.role, "coder");
  EXPECT_EQ(code.call.model, "test-coder");
  EXPECT_EQ(code.call.outcome, "ok");
  EXPECT_EQ(code.call.prompt_tokens, 400);
  EXPECT_EQ(code.call.completion_tokens, 100);
  EXPECT_DOUBLE_EQ(code.call.cost, 400 / 1e6);
}

TEST(LlmAgent, EveryUnusableAnswerIsARecordedFailureNotACrash) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("I would write a vectorized loop."));
  server.Push(
      FakeLlmServer::Answer("```cpp\n#include <cmath>\nextern \"C\" int kf_kernel_run(", "length"));
  server.Push(FakeLlmServer::Answer(
      std::string("```cpp\n#include <cstdio>\n") + kGoodKernel +
      "static void Leak() { FILE* f = popen(\"ls\", \"r\"); (void)f; }\n```\n"));
  server.Push(FakeLlmServer::Malformed());
  LlmClient client(ConfigFor(server));

  const CodeResult prose = Code(client, Coder());
  EXPECT_EQ(prose.failed_stage, "extract");
  EXPECT_EQ(prose.call.outcome, "no_code");
  EXPECT_TRUE(prose.call.ok);

  const CodeResult cut = Code(client, Coder());
  EXPECT_EQ(cut.failed_stage, "extract");
  EXPECT_EQ(cut.call.outcome, "truncated");
  EXPECT_NE(cut.failure.find("cut off"), std::string::npos) << cut.failure;

  const CodeResult refused = Code(client, Coder());
  EXPECT_EQ(refused.failed_stage, "static_check");
  EXPECT_EQ(refused.call.outcome, "static_check");
  EXPECT_NE(refused.failure.find("popen"), std::string::npos) << refused.failure;
  EXPECT_FALSE(refused.source.empty()) << "kept for the Coder's next attempt";

  const CodeResult malformed = Code(client, Coder());
  EXPECT_EQ(malformed.failed_stage, "llm");
  EXPECT_EQ(malformed.call.outcome, "malformed");
  EXPECT_FALSE(malformed.call.ok);
  EXPECT_FALSE(malformed.call.error.empty());
}

TEST(LlmAgent, RetriedAnswersSayWhatTheFailedAttemptsMet) {
  FakeLlmServer server;
  server.Push({429, R"({"error":"slow down"})", {{"Retry-After", "0"}}, 0});
  server.Push({503, R"({"error":"busy"})", {}, 0});
  server.Push(FakeLlmServer::Answer("SKETCH: tile by 64 rows."));
  LlmClient client(ConfigFor(server));
  DesignerInput input;
  input.spec = Coder().spec;
  input.island = 1;
  input.islands = 2;
  const DesignResult design = Design(client, input);
  EXPECT_EQ(design.sketch, "SKETCH: tile by 64 rows.");
  EXPECT_EQ(design.call.role, "designer");
  EXPECT_EQ(design.call.outcome, "retried");
  EXPECT_NE(design.call.error.find("HTTP 429"), std::string::npos) << design.call.error;
  EXPECT_NE(design.call.error.find("HTTP 503"), std::string::npos) << design.call.error;
  // The island is in the prompt: two islands ask two different questions.
  const auto got = server.received();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_NE(got[2].body.find("island 1"), std::string::npos);
}

TEST(LlmAgent, AnEmptyOrFailedDesignHasNoSketch) {
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer("  \n"));
  server.Push({400, R"({"error":"bad model"})", {}, 0});
  LlmClient client(ConfigFor(server));
  DesignerInput input;
  input.spec = Coder().spec;
  const DesignResult empty = Design(client, input);
  EXPECT_TRUE(empty.sketch.empty());
  EXPECT_EQ(empty.call.outcome, "empty");
  const DesignResult refused = Design(client, input);
  EXPECT_TRUE(refused.sketch.empty());
  EXPECT_EQ(refused.call.outcome, "refused");
  EXPECT_NE(refused.failure.find("HTTP 400"), std::string::npos) << refused.failure;
}

TEST(LlmAgent, AReplayFindsTheAnswerWhenOnlyMeasuredNumbersDiffer) {
  Result<TempDir> dir = TempDir::Create("kfleet-llm-agent");
  ASSERT_TRUE(dir.ok());
  FakeLlmServer server;
  server.Push(FakeLlmServer::Answer(std::string("```cpp\n") + kGoodKernel + "```\n"));
  LlmConfig config = ConfigFor(server);
  LlmClientOptions record;
  record.record_dir = dir->path();
  LlmClient recorder(config, record);
  ASSERT_EQ(Code(recorder, Coder("12.5")).failed_stage, "");

  LlmClientOptions replay;
  replay.record_dir = dir->path();
  replay.replay = true;
  LlmClient replayer(config, replay);
  const CodeResult again = Code(replayer, Coder("9.75"));
  EXPECT_EQ(again.failed_stage, "");
  EXPECT_EQ(again.source, kGoodKernel);
  EXPECT_EQ(again.call.outcome, "replayed");
  // Different words are a different request.
  CoderInput other = Coder();
  other.sketch = "two passes";
  const CodeResult miss = Code(replayer, other);
  EXPECT_EQ(miss.failed_stage, "llm");
  EXPECT_EQ(miss.call.outcome, "replay_miss");
  EXPECT_EQ(server.received().size(), 1u);
}

TEST(Knowledge, TheDocumentsAreBuiltInAndAFolderOfOnesOwnReplacesThem) {
  for (const char* backend : {"cpu", "cuda"}) {
    Result<std::vector<KnowledgeSection>> builtin = BuiltinKnowledge(backend);
    ASSERT_TRUE(builtin.ok()) << builtin.status().ToString();
    EXPECT_GE(builtin->size(), 8u);
  }
  EXPECT_EQ(BuiltinKnowledge("tpu").status().code(), ErrorCode::kNotFound);

  Result<TempDir> dir = TempDir::Create("kfleet-knowledge-env");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(MakeDirs(dir->path() / "tpu").ok());
  ASSERT_TRUE(WriteFileAtomic(dir->path() / "tpu" / "basics.md",
                              "# TPU\n\n## Tiles\nfamilies: all\nUse 128x128 tiles.\n")
                  .ok());
  ASSERT_EQ(setenv("KFLEET_KNOWLEDGE_DIR", dir->path().c_str(), 1), 0);
  Result<std::vector<KnowledgeSection>> own = KnowledgeFor("tpu");
  unsetenv("KFLEET_KNOWLEDGE_DIR");
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  ASSERT_EQ(own->size(), 1u);
  EXPECT_EQ((*own)[0].title, "Tiles");
  EXPECT_TRUE(KnowledgeFor("cuda").ok()) << "without the variable, the built-in documents";
}

TEST(LlmConfig, TravelsAsJsonWithoutTheKey) {
  FakeLlmServer server;
  LlmConfig config = ConfigFor(server);
  config.api_key_env = "KFLEET_TEST_SECRET";
  config.record_dir = "/tmp/records";
  config.replay = true;
  ASSERT_EQ(setenv("KFLEET_TEST_SECRET", "sk-do-not-store", 1), 0);
  const std::string json = LlmConfigToJson(config);
  unsetenv("KFLEET_TEST_SECRET");
  EXPECT_EQ(json.find("sk-do-not-store"), std::string::npos);
  Result<LlmConfig> back = LlmConfigFromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->endpoint, config.endpoint);
  EXPECT_EQ(back->model, "test-coder");
  EXPECT_EQ(back->api_key_env, "KFLEET_TEST_SECRET");
  EXPECT_EQ(back->retries, 2);
  EXPECT_EQ(back->record_dir, "/tmp/records");
  EXPECT_TRUE(back->replay);
  EXPECT_DOUBLE_EQ(back->price_input_per_mtok, 1.0);
  EXPECT_FALSE(LlmConfigFromJson("not json").ok());
  EXPECT_FALSE(LlmConfigFromJson(R"({"endpoint": "ftp://x", "model": "m"})").ok());
  EXPECT_FALSE(LlmConfigFromJson(R"({"endpoint": "http://x", "model": 3})").ok());
}

TEST(LlmClient, DiscoversTheModelTheServerLists) {
  FakeLlmServer server;
  server.SetModel("qwen2.5-coder:32b");
  LlmConfig config = ConfigFor(server);
  config.model.clear();
  Result<std::string> model = DiscoverModel(config);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(*model, "qwen2.5-coder:32b");
  config.endpoint = "http://127.0.0.1:1/v1";
  EXPECT_EQ(DiscoverModel(config).status().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace kfleet::agents
