// The LLM agent end to end: `kfleet run --agent llm|hybrid` with real workers, compiler and
// harness, against the fake OpenAI-compatible server of tests/fakes (an LLM endpoint is the one
// thing CI cannot have). The fake plays a scripted model: per search island a story of failures
// (prose without code, a compile error, a wrong kernel, a truncated answer) that the Conductor
// must route back to the Coder or the Designer until a correct kernel comes out, and beneath it
// HTTP trouble (429 with Retry-After, a 500, a hang past the timeout, a malformed body).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "common/files.h"
#include "eval/device.h"
#include "tests/fakes/fake_llm_server.h"
#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

using agents::testing::FakeLlmServer;
using nlohmann::json;

std::string DataPath(const std::string& relative) {
  return std::string(std::getenv("KFLEET_TEST_DATA")) + "/" + relative;
}

std::string Fenced(const std::string& source) {
  return "Here is the kernel.\n\n```cpp\n" + source + "```\n";
}

// Replaces the first `from` in `text`; fails the test when it is not there.
std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

bool Contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// The scripted model. Requests are told apart by what kfleet's prompts say (the role, the
// island, the sketch, the Conductor's feedback), so the story does not depend on the order in
// which parallel tasks reach it.
class ScriptedModel {
 public:
  ScriptedModel() {
    good_gemm_ = *ReadFile(DataPath("kernels/gemm_bias_gelu_good.cpp"));
    good_layernorm_ = *ReadFile(DataPath("kernels/layernorm_good.cpp"));
    cuda_layernorm_ = *ReadFile(DataPath("kernels/cuda/layernorm_good.cu"));
  }

  FakeLlmServer::Reply Respond(const FakeLlmServer::Received& request) {
    const int n = ++requests_;
    // HTTP trouble on the first requests; the client retries each.
    if (n == 1) {
      return {429, R"({"error":"rate limited"})", {{"Retry-After", "1"}}, 0};
    }
    if (n == 2) return {500, R"({"error":"overloaded"})", {}, 0};
    if (n == 4) return {200, "", {}, 2500};  // past the client's 2 s timeout
    const json body = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("messages") || body["messages"].size() < 2) {
      return {400, R"({"error":"not a chat request"})", {}, 0};
    }
    const std::string system = body["messages"][0].value("content", "");
    const std::string user = body["messages"][1].value("content", "");
    const int prompt_tokens = static_cast<int>((system.size() + user.size()) / 4);
    if (Contains(system, "You are the designer")) {
      return FakeLlmServer::Answer(Design(user), "stop", prompt_tokens, 120);
    }
    if (Contains(system, "You are the coder") && Contains(system, "CUDA C++")) {
      return CudaCode(user, prompt_tokens);
    }
    if (Contains(system, "You are the coder")) return Code(user, prompt_tokens);
    return {400, R"({"error":"unknown role"})", {}, 0};
  }

 private:
  static std::string Design(const std::string& user) {
    if (Contains(user, "What went wrong last time")) {
      return "SKETCH-REDESIGN: keep the blocked GEMM, then apply bias and the tanh GELU to each "
             "block while it is in cache. Check the GELU against the reference first.";
    }
    if (Contains(user, "Candidates tried so far")) {
      return "SKETCH-REFINE: the best candidate's structure with larger column blocks.";
    }
    if (Contains(user, "this plan is for island 1")) {
      return "SKETCH-B: one OpenMP thread per block of output columns, BLAS for the product, "
             "bias and GELU fused after it.";
    }
    return "SKETCH-A: one OpenMP thread per block of output columns, one-thread sgemm per block, "
           "bias + GELU while the block is in cache.";
  }

  // On the CUDA target this model only knows how to write a LayerNorm.
  FakeLlmServer::Reply CudaCode(const std::string& user, int prompt_tokens) {
    if (Contains(user, "(family layernorm")) {
      return FakeLlmServer::Answer(Fenced(cuda_layernorm_), "stop", prompt_tokens, 900);
    }
    return FakeLlmServer::Answer("A GEMM on this GPU is best left to cuBLASLt.", "stop",
                                 prompt_tokens, 40);
  }

  FakeLlmServer::Reply Code(const std::string& user, int prompt_tokens) {
    const auto answer = [&](const std::string& content, const std::string& finish = "stop") {
      return FakeLlmServer::Answer(content, finish, prompt_tokens, 900);
    };
    // The story is the GEMM + GELU's; the LayerNorm gets a correct kernel at once, and the other
    // GEMM (bias and residual) only prose.
    if (Contains(user, "(family layernorm")) return answer(Fenced(good_layernorm_));
    if (!Contains(user, "(family gemm+bias+gelu")) {
      return answer("A blocked GEMM with the epilogue fused would do well here.");
    }
    const std::string& good = good_gemm_;
    const std::string feedback =
        Contains(user, "What to fix:") ? user.substr(user.find("What to fix:")) : std::string();
    if (Contains(user, "SKETCH-A")) {
      if (feedback.empty()) {
        return answer(
            "I would split the output columns over threads and fuse the epilogue; "
            "this should be fast on this CPU.");
      }
      if (Contains(feedback, "No usable source")) {
        return answer(Fenced(ReplaceOnce(good, "#include \"kfleet/kernel.h\"\n",
                                         "#include \"kfleet/kernel.h\"\nint broken = ;\n")));
      }
      if (Contains(feedback, "does not compile")) return answer(Fenced(good));
    }
    if (Contains(user, "SKETCH-B") && feedback.empty()) {
      // Forgets the GELU: a wrong result the tests catch.
      return answer(Fenced(ReplaceOnce(good, "row[j] = h / (1.0f + FastExp(-2.0f * u));",
                                       "row[j] = h + 0.0f * u;")));
    }
    if (Contains(user, "SKETCH-REDESIGN")) {
      if (feedback.empty()) {
        // Cut off by the token limit inside the code block.
        return answer("```cpp\n" + good.substr(0, good.size() / 2), "length");
      }
      return answer(Fenced(good));
    }
    if (Contains(user, "SKETCH-REFINE") && !malformed_sent_.exchange(true)) {
      return FakeLlmServer::Malformed();
    }
    return answer(Fenced(good));
  }

  std::string good_gemm_;
  std::string good_layernorm_;
  std::string cuda_layernorm_;
  std::atomic<int> requests_{0};
  std::atomic<bool> malformed_sent_{false};
};

// An llm.yaml for the fake: short timeout, quick retries, a price so cost shows.
std::filesystem::path WriteLlmConfig(const std::filesystem::path& dir,
                                     const std::string& endpoint) {
  const std::filesystem::path path = dir / "llm.yaml";
  EXPECT_TRUE(WriteFileAtomic(path, "endpoint: " + endpoint +
                                        "\n"
                                        "model: fake-coder\n"
                                        "timeout: 2s\n"
                                        "retries: 3\n"
                                        "backoff: 0s\n"
                                        "price:\n"
                                        "  input_per_mtok: 1.0\n"
                                        "  output_per_mtok: 2.0\n")
                  .ok());
  return path;
}

struct RunOutcome {
  json result;                                    // kfleet run --json
  std::vector<storage::CandidateRow> candidates;  // of the searched kernel job
  std::vector<storage::LlmCallRow> calls;
  std::vector<json> routed;                    // candidate.routed events
  std::optional<storage::CandidateRow> best;   // of the (last) kernel job with one
  std::vector<storage::KernelJobRow> kernels;  // searched
};

// Runs the search; `family`: the kernel job whose candidates and best the outcome holds (empty:
// every searched one).
RunOutcome RunSearch(Fleet& fleet, std::vector<std::string> extra, const std::string& family = "") {
  std::vector<std::string> args = {"run",
                                   DataPath("models/mlp_block.onnxtxt"),
                                   "--json",
                                   "--out",
                                   (fleet.dir() / "out").string(),
                                   "--state",
                                   fleet.state_dir().string()};
  args.insert(args.end(), extra.begin(), extra.end());
  CliResult run = fleet.Cli(args, 400'000);
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  RunOutcome outcome;
  outcome.result = run.Json();
  auto jobs = fleet.Store().jobs().List();
  EXPECT_TRUE(jobs.ok());
  if (!jobs.ok() || jobs->empty()) return outcome;
  const int64_t job = jobs->front().id;
  auto kernels = fleet.Store().kernel_jobs().ListByJob(job);
  EXPECT_TRUE(kernels.ok());
  for (const auto& k : *kernels) {
    if (k.state == storage::KernelJobState::kDone && k.note.starts_with("not searched")) continue;
    outcome.kernels.push_back(k);
    if (!family.empty() && k.family != family) continue;
    auto candidates = fleet.Store().candidates().ListByKernelJob(k.id);
    EXPECT_TRUE(candidates.ok());
    outcome.candidates.insert(outcome.candidates.end(), candidates->begin(), candidates->end());
    if (k.best_candidate_id.has_value()) {
      outcome.best = *fleet.Store().candidates().Get(*k.best_candidate_id);
    }
  }
  auto calls = fleet.Store().llm_calls().ListByJob(job);
  EXPECT_TRUE(calls.ok());
  outcome.calls = *calls;
  auto events = fleet.Store().events().ListAfter(job, 0, 100'000);
  EXPECT_TRUE(events.ok());
  for (const auto& event : *events) {
    if (event.kind == "candidate.routed") outcome.routed.push_back(json::parse(event.data_json));
  }
  return outcome;
}

// The kernel job the scripted model's story is about.
constexpr char kStoryFamily[] = "gemm+bias+gelu_tanh";

bool AnyFailedAt(const RunOutcome& run, const std::string& stage, const std::string& reason) {
  for (const auto& c : run.candidates) {
    if (c.state == storage::CandidateState::kFailed && c.failed_stage == stage &&
        Contains(c.error, reason)) {
      return true;
    }
  }
  return false;
}

bool AnyRouted(const RunOutcome& run, const std::string& category, const std::string& route) {
  for (const json& r : run.routed) {
    if (r.value("category", "") == category && r.value("route", "") == route) return true;
  }
  return false;
}

int CallsWithOutcome(const RunOutcome& run, const std::string& outcome) {
  int n = 0;
  for (const auto& call : run.calls) n += call.call.outcome == outcome ? 1 : 0;
  return n;
}

TEST(LlmSearchTest, TheLlmAgentFindsTheCorrectKernelThroughEveryKindOfFailureAndReplays) {
  FakeLlmServer server;
  ScriptedModel model;
  server.SetResponder([&](const FakeLlmServer::Received& r) { return model.Respond(r); });
  Fleet fleet;
  const std::filesystem::path records = fleet.dir() / "llm-records";
  const RunOutcome run = RunSearch(
      fleet,
      {"--top", "3", "--budget", "70s", "--agent", "llm", "--llm-config",
       WriteLlmConfig(fleet.dir(), server.endpoint()).string(), "--llm-record", records.string()},
      kStoryFamily);
  ASSERT_TRUE(run.result.is_object());
  EXPECT_EQ(run.result["job"].value("state", ""), "done") << run.result.dump(2);

  // The search ends with the correct kernel, written by the LLM and kept end to end.
  ASSERT_TRUE(run.best.has_value()) << run.result.dump(2);
  EXPECT_EQ(run.best->agent, "llm:fake-coder");
  EXPECT_EQ(run.best->state, storage::CandidateState::kProfiled);
  EXPECT_GT(run.result.value("measured_speedup", 0.0), 0) << run.result.dump(2);
  bool verified = false;
  for (const auto& kernel : run.result["kernels"]) {
    if (kernel.value("family", "") == kStoryFamily) verified = kernel.value("verified", false);
  }
  EXPECT_TRUE(verified) << run.result.dump(2);

  // Every failure recorded at its stage and routed: answer problems back to the Coder, a wrong
  // kernel to the Designer.
  EXPECT_TRUE(AnyFailedAt(run, "extract", "no code")) << "prose without code";
  EXPECT_TRUE(AnyFailedAt(run, "compile", "")) << "the compile error";
  EXPECT_TRUE(AnyFailedAt(run, "extract", "cut off")) << "the truncated answer";
  bool wrong = false;
  for (const auto& c : run.candidates) {
    wrong |= c.state == storage::CandidateState::kFailed && c.failed_stage != "extract" &&
             c.failed_stage != "compile" && c.failed_stage != "duplicate" &&
             c.failed_stage != "llm";
  }
  EXPECT_TRUE(wrong) << "the wrong kernel failed a test stage";
  EXPECT_TRUE(AnyRouted(run, "no_code", "coder"));
  EXPECT_TRUE(AnyRouted(run, "compile", "coder"));
  EXPECT_TRUE(AnyRouted(run, "wrong_result", "designer"));
  EXPECT_TRUE(AnyRouted(run, "truncated", "coder"));

  // The HTTP trouble: answers after retries record what the failed attempts met (whatever the
  // answer then was); the malformed body is a failed call.
  std::string retried;
  for (const auto& call : run.calls) {
    if (call.call.ok) retried += call.call.error + "\n";
  }
  EXPECT_TRUE(Contains(retried, "HTTP 429")) << retried;
  EXPECT_TRUE(Contains(retried, "HTTP 500")) << retried;
  EXPECT_TRUE(Contains(retried, "Timeout")) << retried;
  EXPECT_GE(CallsWithOutcome(run, "malformed"), 1);
  EXPECT_GE(CallsWithOutcome(run, "no_code"), 1);
  EXPECT_GE(CallsWithOutcome(run, "truncated"), 1);

  // Tokens and cost are visible: the calls carry what the fake reported, the job shows the sum.
  int64_t prompt_tokens = 0;
  for (const auto& call : run.calls) prompt_tokens += call.call.prompt_tokens;
  EXPECT_GT(prompt_tokens, 0);
  const json llm = run.result["job"]["llm"];
  EXPECT_EQ(llm.value("model", ""), "fake-coder");
  EXPECT_EQ(llm.value("calls", 0), static_cast<int>(run.calls.size()));
  EXPECT_EQ(llm.value("prompt_tokens", int64_t{0}), prompt_tokens);
  EXPECT_GT(llm.value("cost_usd", 0.0), 0);
  const std::string report = *ReadFile(fleet.dir() / "out" / "report.md");
  EXPECT_TRUE(Contains(report, "LLM use")) << report;
  EXPECT_TRUE(Contains(report, "Written by")) << report;

  // The API key is never in the store: the settings name no key here, and no row holds one.
  // Replay: the same search offline, from the records alone.
  Fleet replay_fleet;
  const RunOutcome replay = RunSearch(
      replay_fleet,
      {"--top", "3", "--budget", "70s", "--agent", "llm", "--llm-replay", records.string()},
      kStoryFamily);
  ASSERT_TRUE(replay.result.is_object());
  EXPECT_EQ(replay.result["job"].value("state", ""), "done") << replay.result.dump(2);
  ASSERT_TRUE(replay.best.has_value());
  EXPECT_EQ(replay.best->source_hash, run.best->source_hash);
  EXPECT_TRUE(AnyFailedAt(replay, "extract", "no code"));
  EXPECT_TRUE(AnyFailedAt(replay, "compile", ""));
  EXPECT_TRUE(AnyFailedAt(replay, "extract", "cut off"));
  EXPECT_TRUE(AnyRouted(replay, "wrong_result", "designer"));
  std::set<std::string> recorded_sources;
  for (const auto& c : run.candidates) {
    if (c.source_hash.has_value()) recorded_sources.insert(*c.source_hash);
  }
  for (const auto& c : replay.candidates) {
    if (c.source_hash.has_value()) {
      EXPECT_TRUE(recorded_sources.count(*c.source_hash)) << "candidate " << c.id;
    }
  }
  for (const auto& call : replay.calls) {
    EXPECT_TRUE(call.call.outcome != "ok" && call.call.outcome != "retried")
        << "a replayed run sent a request: " << call.call.outcome;
  }
  EXPECT_GE(CallsWithOutcome(replay, "replayed"), 6);
}

TEST(LlmSearchTest, HybridSeedsWithTemplatesAndTheLlmRefinesTheirBest) {
  FakeLlmServer server;
  ScriptedModel model;
  server.SetResponder([&](const FakeLlmServer::Received& r) { return model.Respond(r); });
  Fleet fleet;
  // Only the endpoint: the model's name comes from the server's /models.
  const RunOutcome run = RunSearch(fleet, {"--top", "1", "--budget", "45s", "--agent", "hybrid",
                                           "--llm-endpoint", server.endpoint()});
  ASSERT_TRUE(run.result.is_object());
  EXPECT_EQ(run.result["job"].value("state", ""), "done") << run.result.dump(2);
  std::map<std::string, int> by_agent;
  for (const auto& c : run.candidates) ++by_agent[c.agent];
  EXPECT_GT(by_agent["template"], 0);
  EXPECT_GT(by_agent["llm:fake-coder"], 0) << "the LLM joined from round 1";
  // The LLM saw the templates' candidates as parents.
  bool saw_templates = false;
  for (const auto& received : server.received()) {
    saw_templates |=
        Contains(received.body, "Candidates tried so far") && Contains(received.body, "template ");
  }
  EXPECT_TRUE(saw_templates);
  // Every LLM candidate of round >= 1 names parents.
  for (const auto& c : run.candidates) {
    if (c.agent == "template") continue;
    EXPECT_GE(c.round, 1);
  }
  EXPECT_GT(run.result["job"]["llm"].value("calls", 0), 0);
}

TEST(LlmSearchTest, BadLlmOptionsAreRefusedBeforeAnythingStarts) {
  Fleet fleet;
  const std::string model = DataPath("models/mlp_block.onnxtxt");
  const auto refused = [&](std::vector<std::string> args, const std::string& says) {
    args.insert(args.begin(), {"run", model, "--state", (fleet.dir() / "state-x").string()});
    CliResult run = fleet.Cli(args);
    EXPECT_NE(run.exit_code, 0) << run.out;
    EXPECT_NE(run.err.find(says), std::string::npos) << run.err;
  };
  refused({"--agent", "llm"}, "--llm-endpoint URL");
  refused({"--llm-endpoint", "http://127.0.0.1:9/v1"}, "are for --agent llm or --agent hybrid");
  refused({"--agent", "llm", "--llm-replay", (fleet.dir() / "nothing").string()},
          "is not a folder of recorded answers");
  refused({"--agent", "llm", "--llm-endpoint", "http://127.0.0.1:1/v1"},
          "no --llm-model given, and asking the server failed");
  refused({"--agent", "llm", "--llm-endpoint", "http://127.0.0.1:1/v1", "--llm-model", "m",
           "--llm-key-env", "KFLEET_TEST_UNSET_KEY"},
          "$KFLEET_TEST_UNSET_KEY, which is not set");
  EXPECT_FALSE(std::filesystem::exists(fleet.dir() / "state-x" / "kfleet.db"));
}

TEST(LlmSearchTest, OnTheCudaTargetTheLlmWritesAGpuKernelTestedAndTimedOnTheGpu) {
  if (Status gpu = eval::CheckDevice("cuda", 0); !gpu.ok()) {
    GTEST_SKIP() << "no usable CUDA device (" << gpu.message() << "): GPU test skipped";
  }
  FakeLlmServer server;
  ScriptedModel model;
  server.SetResponder([&](const FakeLlmServer::Received& r) { return model.Respond(r); });
  Fleet fleet;
  const RunOutcome run =
      RunSearch(fleet, {"--target", "cuda", "--top", "3", "--budget", "60s", "--agent", "llm",
                        "--llm-config", WriteLlmConfig(fleet.dir(), server.endpoint()).string()});
  ASSERT_TRUE(run.result.is_object());
  EXPECT_EQ(run.result["job"].value("state", ""), "done") << run.result.dump(2);
  // The LayerNorm the model wrote compiled with nvcc, passed the tests on the GPU and was timed
  // there (whether it beats the baseline's own LayerNorm by 2%, and so is swapped in, is the
  // GPU's business).
  bool profiled = false;
  for (const auto& kernel : run.result["kernels"]) {
    if (kernel.value("family", "") != "layernorm") continue;
    EXPECT_GT(kernel.value("speedup", 0.0), 0) << kernel.dump();
    profiled = true;
  }
  EXPECT_TRUE(profiled) << run.result.dump(2);
  for (const auto& k : run.kernels) {
    if (k.family != "layernorm") continue;
    ASSERT_TRUE(k.best_candidate_id.has_value());
    EXPECT_EQ(fleet.Store().candidates().Get(*k.best_candidate_id)->agent, "llm:fake-coder");
  }
  // The GEMMs got prose: recorded failures, routed back to the Coder, no crash.
  int no_code = 0;
  for (const auto& call : run.calls) no_code += call.call.outcome == "no_code" ? 1 : 0;
  EXPECT_GT(no_code, 0);
}

}  // namespace
}  // namespace kfleet::testing
