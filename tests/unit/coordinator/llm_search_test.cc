// The LLM agent's helpers in the coordinator against a real store: the examples a Coder is shown,
// how far a failed lineage has gone, and the time an LLM task may take.
#include "coordinator/llm_search.h"

#include <gtest/gtest.h>

#include "agents/llm_config.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::coordinator {
namespace {

class LlmSearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = storage::Store::Open(dir_.path() / "state", {}, clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  int64_t Job(storage::Backend target) {
    storage::NewJob job;
    job.name = "model";
    job.target = target;
    return *store_->jobs().Create(job);
  }

  // A kernel job of `family` whose best candidate has `source` (none when empty).
  int64_t KernelJob(int64_t job, const std::string& family, double sol_us,
                    const std::string& source) {
    storage::NewKernelJob row;
    row.job_id = job;
    row.name = family + " " + std::to_string(sol_us);
    row.spec_hash = row.name;
    row.family = family;
    row.sol_us = sol_us;
    const int64_t id = *store_->kernel_jobs().Create(row);
    if (source.empty()) return id;
    storage::NewCandidate candidate;
    candidate.kernel_job_id = id;
    candidate.agent = "template";
    const int64_t candidate_id = *store_->candidates().Create(candidate);
    EXPECT_TRUE(store_->candidates().SetSource(candidate_id, *store_->blobs().Put(source)).ok());
    EXPECT_TRUE(store_->kernel_jobs().SetBest(id, candidate_id).ok());
    return id;
  }

  storage::testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<storage::Store> store_;
};

TEST_F(LlmSearchTest, ExamplesAreTheJobsOwnBestThenTheNearestOfTheFamilyOnTheSameTarget) {
  const int64_t old_cpu = Job(storage::Backend::kCpu);
  KernelJob(old_cpu, "gemm+bias+gelu_tanh", 100, "far gemm");
  KernelJob(old_cpu, "gemm+bias", 12, "near gemm, cpu");
  KernelJob(old_cpu, "layernorm", 10, "a layernorm");
  KernelJob(old_cpu, "gemm+bias+add", 10, std::string(20'000, 'x'));  // too long to show
  const int64_t old_cuda = Job(storage::Backend::kCuda);
  KernelJob(old_cuda, "gemm+bias", 10, "nearest gemm, but cuda");
  const int64_t job = Job(storage::Backend::kCpu);
  const int64_t own = KernelJob(job, "gemm+bias", 10, "this job's best");

  auto kernel_job = store_->kernel_jobs().Get(own);
  ASSERT_TRUE(kernel_job.ok());
  auto examples = RetrieveExamples(*store_, *kernel_job, storage::Backend::kCpu, 3);
  ASSERT_TRUE(examples.ok()) << examples.status().ToString();
  EXPECT_EQ(*examples, (std::vector<std::string>{"this job's best", "near gemm, cpu", "far gemm"}));
  // Another target's kernels come after this target's.
  examples = RetrieveExamples(*store_, *kernel_job, storage::Backend::kCuda, 2);
  EXPECT_EQ(*examples, (std::vector<std::string>{"this job's best", "nearest gemm, but cuda"}));
  EXPECT_TRUE(RetrieveExamples(*store_, *kernel_job, storage::Backend::kCpu, 0)->empty());
}

TEST_F(LlmSearchTest, ALineageCountsItsFailedLlmAncestorsAlongFirstParents) {
  const auto row = [](int64_t id, const std::string& agent, storage::CandidateState state,
                      const std::string& parents) {
    storage::CandidateRow c;
    c.id = id;
    c.agent = agent;
    c.state = state;
    c.parents_json = parents;
    return c;
  };
  using State = storage::CandidateState;
  const std::vector<storage::CandidateRow> candidates = {
      row(1, "template", State::kFailed, "[]"),   row(2, "llm:m", State::kFailed, "[1]"),
      row(3, "llm:m", State::kFailed, "[2, 1]"),  row(4, "llm:m", State::kProfiled, "[3]"),
      row(5, "llm:m", State::kFailed, "[4]"),     row(6, "llm:m", State::kFailed, "[9]"),
      row(7, "llm:m", State::kFailed, "not json")};
  EXPECT_EQ(LineageAttempts(candidates, candidates[1]), 1);  // a template parent ends it
  EXPECT_EQ(LineageAttempts(candidates, candidates[2]), 2);
  EXPECT_EQ(LineageAttempts(candidates, candidates[4]), 1);  // a profiled parent ends it
  EXPECT_EQ(LineageAttempts(candidates, candidates[5]), 1);  // an unknown parent
  EXPECT_EQ(LineageAttempts(candidates, candidates[6]), 1);
}

TEST(LlmTaskTimeout, CoversEveryAttemptAndItsWait) {
  agents::LlmConfig config;
  config.endpoint = "http://127.0.0.1:9/v1";
  config.model = "m";
  config.timeout_ms = 10'000;
  config.retries = 2;
  config.backoff_ms = 1'000;
  const std::string json = agents::LlmConfigToJson(config);
  // 3 attempts of 10 s, waits of 1 s and 2 s, a minute of margin.
  EXPECT_EQ(LlmTaskTimeoutMs(json, 1, 5), 3 * 10'000 + 1'000 + 2'000 + 60'000);
  EXPECT_EQ(LlmTaskTimeoutMs(json, 2, 5), 2 * (3 * 10'000 + 3'000) + 60'000);
  EXPECT_EQ(LlmTaskTimeoutMs("not json", 1, 5), 5);
}

TEST(SearchAgent, ParsesTheThreeAgents) {
  EXPECT_EQ(*ParseSearchAgent(""), SearchAgent::kTemplate);
  EXPECT_EQ(*ParseSearchAgent("llm"), SearchAgent::kLlm);
  EXPECT_EQ(*ParseSearchAgent("hybrid"), SearchAgent::kHybrid);
  EXPECT_EQ(ParseSearchAgent("robot").status().code(), ErrorCode::kInvalidArgument);
  const JobAgent agent = JobAgentOf(
      nlohmann::json{{"agent", "hybrid"}, {"llm", R"({"model": "qwen"})"}, {"budget_usd", 2.5}});
  EXPECT_EQ(agent.agent, SearchAgent::kHybrid);
  EXPECT_EQ(agent.model, "qwen");
  EXPECT_DOUBLE_EQ(agent.budget_usd, 2.5);
  EXPECT_EQ(LlmCandidateAgent(agent), "llm:qwen");
  EXPECT_EQ(JobAgentOf(nlohmann::json::object()).agent, SearchAgent::kTemplate);
}

}  // namespace
}  // namespace kfleet::coordinator
