#include "storage/event_repo.h"

#include <gtest/gtest.h>

#include "storage/llm_call_repo.h"
#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

using StorageEventRepoTest = testing::StoreTest;

TEST_F(StorageEventRepoTest, AppendAndPage) {
  int64_t job_a = MakeJob("a");
  int64_t job_b = MakeJob("b");
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    clock_.AdvanceMs(1);
    KF_ASSERT_OK_AND_ASSIGN(int64_t id,
                            store_->events().Append(i % 2 == 0 ? job_a : job_b, "task.done",
                                                    R"({"i":)" + std::to_string(i) + "}"));
    ids.push_back(id);
  }
  KF_ASSERT_OK(store_->events().Append(std::nullopt, "coordinator.started"));

  KF_ASSERT_OK_AND_ASSIGN(std::vector<EventRow> a, store_->events().ListAfter(job_a, 0, 100));
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].data_json, R"({"i":0})");
  EXPECT_EQ(a[0].kind, "task.done");
  EXPECT_EQ(a[0].job_id, job_a);
  EXPECT_LT(a[0].ts_us, a[1].ts_us);

  // Page through everything two at a time with the last id as the cursor.
  std::vector<std::string> kinds;
  int64_t cursor = 0;
  while (true) {
    KF_ASSERT_OK_AND_ASSIGN(std::vector<EventRow> page,
                            store_->events().ListAfter(std::nullopt, cursor, 2));
    if (page.empty()) break;
    for (const EventRow& e : page) kinds.push_back(e.kind);
    cursor = page.back().id;
  }
  EXPECT_EQ(kinds.size(), 6u);
  EXPECT_EQ(kinds.back(), "coordinator.started");

  KF_ASSERT_OK_AND_ASSIGN(std::vector<EventRow> after,
                          store_->events().ListAfter(job_b, ids[1], 10));
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].id, ids[3]);
}

TEST_F(StorageEventRepoTest, EventsAreAppendOnly) {
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->events().Append(std::nullopt, "x"));
  Status update =
      store_->db().Exec("UPDATE events SET kind = 'y' WHERE id = " + std::to_string(id));
  EXPECT_EQ(update.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(update.message().find("events are append-only"), std::string::npos);
  Status remove = store_->db().Exec("DELETE FROM events");
  EXPECT_EQ(remove.code(), ErrorCode::kFailedPrecondition);
  auto bad = store_->events().Append(std::nullopt, "x", "{oops");
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(StorageEventRepoTest, LlmCallsAndSpend) {
  int64_t job = MakeJob();
  NewLlmCall call;
  call.job_id = job;
  call.role = "designer";
  call.model = "qwen2.5-coder";
  call.prompt_tokens = 1000;
  call.completion_tokens = 200;
  call.cost_usd = 0.25;
  call.latency_ms = 900;
  KF_ASSERT_OK(store_->llm_calls().Record(call));
  call.role = "coder";
  call.ok = false;
  call.error = "HTTP 429";
  call.outcome = "http_429";
  call.cost_usd = 0.5;
  KF_ASSERT_OK(store_->llm_calls().Record(call));

  KF_ASSERT_OK_AND_ASSIGN(std::vector<LlmCallRow> calls, store_->llm_calls().ListByJob(job));
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].call.role, "designer");
  EXPECT_TRUE(calls[0].call.ok);
  EXPECT_FALSE(calls[1].call.ok);
  EXPECT_EQ(calls[1].call.error, "HTTP 429");
  EXPECT_EQ(calls[1].call.outcome, "http_429");
  EXPECT_EQ(calls[0].call.outcome, "");
  EXPECT_FALSE(calls[0].call.candidate_id.has_value());
  EXPECT_EQ(calls[1].ts_us, clock_.NowUs());

  // A call for one candidate keeps its id; deleting the job keeps the spend (SET NULL).
  NewKernelJob kernel;
  kernel.job_id = job;
  kernel.name = "softmax";
  kernel.spec_hash = "h";
  KF_ASSERT_OK_AND_ASSIGN(int64_t kernel_job, store_->kernel_jobs().Create(kernel));
  NewCandidate candidate;
  candidate.kernel_job_id = kernel_job;
  candidate.agent = "llm:qwen2.5-coder";
  KF_ASSERT_OK_AND_ASSIGN(int64_t candidate_id, store_->candidates().Create(candidate));
  NewLlmCall for_candidate;
  for_candidate.job_id = job;
  for_candidate.kernel_job_id = kernel_job;
  for_candidate.candidate_id = candidate_id;
  for_candidate.role = "coder";
  for_candidate.model = "qwen2.5-coder";
  for_candidate.outcome = "no_code";
  for_candidate.ok = false;
  KF_ASSERT_OK(store_->llm_calls().Record(for_candidate));
  KF_ASSERT_OK_AND_ASSIGN(calls, store_->llm_calls().ListByJob(job));
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[2].call.candidate_id, candidate_id);
  EXPECT_EQ(calls[2].call.outcome, "no_code");
  calls.pop_back();

  KF_ASSERT_OK_AND_ASSIGN(LlmSpend spend, store_->llm_calls().SpendByJob(job));
  EXPECT_EQ(spend.calls, 3);
  EXPECT_EQ(spend.prompt_tokens, 2000);
  EXPECT_EQ(spend.completion_tokens, 400);
  EXPECT_DOUBLE_EQ(spend.cost_usd, 0.75);
  KF_ASSERT_OK_AND_ASSIGN(LlmSpend none, store_->llm_calls().SpendByJob(job + 1));
  EXPECT_EQ(none.calls, 0);
  EXPECT_EQ(none.cost_usd, 0);
}

}  // namespace
}  // namespace kfleet::storage
