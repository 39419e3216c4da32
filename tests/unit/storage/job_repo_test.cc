#include "storage/job_repo.h"

#include <gtest/gtest.h>

#include "common/ids.h"
#include "storage/candidate_repo.h"
#include "storage/kernel_job_repo.h"
#include "storage/model_repo.h"
#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

using StorageJobRepoTest = testing::StoreTest;

NewKernelJob Kernel(int64_t job_id, const std::string& name, int64_t rank) {
  NewKernelJob k;
  k.job_id = job_id;
  k.name = name;
  k.spec_hash = "spec-" + name;
  k.spec = std::string("\x01\x00\x02", 3);
  k.count = 4;
  k.baseline_us = 100;
  k.sol_us = 20;
  k.expected_saving_us = 320;
  k.rank = rank;
  return k;
}

NewCandidate Candidate(int64_t kernel_job_id) {
  NewCandidate c;
  c.kernel_job_id = kernel_job_id;
  c.island = 2;
  c.agent = "template";
  c.plan = "tile 64x64";
  c.params_json = R"({"tile":64})";
  return c;
}

TEST_F(StorageJobRepoTest, ModelNeedsItsBlob) {
  NewModel model;
  model.name = "resnet50";
  model.blob_hash = Sha256Hex("not stored");
  auto missing = store_->models().Create(model);
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);

  KF_ASSERT_OK_AND_ASSIGN(model.blob_hash, store_->blobs().Put("onnx bytes"));
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->models().Create(model));
  KF_ASSERT_OK_AND_ASSIGN(ModelRow row, store_->models().Get(id));
  EXPECT_EQ(row.name, "resnet50");
  EXPECT_EQ(row.format, "onnx");
  EXPECT_EQ(row.size_bytes, 10);
  EXPECT_EQ(row.created_us, clock_.NowUs());
  KF_ASSERT_OK_AND_ASSIGN(std::vector<ModelRow> all, store_->models().List());
  EXPECT_EQ(all.size(), 1u);
}

TEST_F(StorageJobRepoTest, CreateGetList) {
  NewJob job;
  job.kind = JobKind::kModel;
  job.name = "first";
  job.target = Backend::kHip;
  job.priority = 2.5;
  job.budget_ms = 7'200'000;
  job.options_json = R"({"islands":4})";
  KF_ASSERT_OK_AND_ASSIGN(int64_t first, store_->jobs().Create(job));
  int64_t second = MakeJob("second");

  KF_ASSERT_OK_AND_ASSIGN(JobRow row, store_->jobs().Get(first));
  EXPECT_EQ(row.kind, JobKind::kModel);
  EXPECT_EQ(row.name, "first");
  EXPECT_EQ(row.target, Backend::kHip);
  EXPECT_EQ(row.state, JobState::kQueued);
  EXPECT_EQ(row.priority, 2.5);
  EXPECT_EQ(row.budget_ms, 7'200'000);
  EXPECT_EQ(row.options_json, R"({"islands":4})");
  EXPECT_EQ(row.model_id, std::nullopt);
  EXPECT_EQ(row.finished_us, std::nullopt);

  KF_ASSERT_OK(store_->jobs().SetState(second, JobState::kRunning));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<JobRow> all, store_->jobs().List());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, first);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<JobRow> running, store_->jobs().List(JobState::kRunning));
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].id, second);

  EXPECT_EQ(store_->jobs().Get(999).status().code(), ErrorCode::kNotFound);
}

TEST_F(StorageJobRepoTest, InvalidOptionsJsonIsRejected) {
  NewJob job;
  job.name = "bad";
  job.options_json = "{not json";
  auto id = store_->jobs().Create(job);
  EXPECT_EQ(id.status().code(), ErrorCode::kInvalidArgument) << id.status().ToString();
}

TEST_F(StorageJobRepoTest, FinishedStatesAreFinal) {
  int64_t job = MakeJob();
  clock_.AdvanceMs(10);
  KF_ASSERT_OK_AND_ASSIGN(bool failed, store_->jobs().SetState(job, JobState::kFailed, "no nodes"));
  EXPECT_TRUE(failed);
  KF_ASSERT_OK_AND_ASSIGN(JobRow row, store_->jobs().Get(job));
  EXPECT_EQ(row.state, JobState::kFailed);
  EXPECT_EQ(row.error, "no nodes");
  EXPECT_EQ(row.finished_us, clock_.NowUs());
  EXPECT_EQ(row.updated_us, clock_.NowUs());

  KF_ASSERT_OK_AND_ASSIGN(bool again, store_->jobs().SetState(job, JobState::kRunning));
  EXPECT_FALSE(again);
  EXPECT_EQ(store_->jobs().SetState(12345, JobState::kDone).status().code(), ErrorCode::kNotFound);
}

TEST_F(StorageJobRepoTest, KernelJobsByRankAndUniqueSpec) {
  int64_t job = MakeJob();
  KF_ASSERT_OK_AND_ASSIGN(int64_t second, store_->kernel_jobs().Create(Kernel(job, "b", 1)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t first, store_->kernel_jobs().Create(Kernel(job, "a", 0)));
  auto duplicate = store_->kernel_jobs().Create(Kernel(job, "a", 5));
  EXPECT_EQ(duplicate.status().code(), ErrorCode::kAlreadyExists);

  KF_ASSERT_OK_AND_ASSIGN(std::vector<KernelJobRow> ranked, store_->kernel_jobs().ListByJob(job));
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].id, first);
  EXPECT_EQ(ranked[1].id, second);
  EXPECT_EQ(ranked[0].spec, std::string("\x01\x00\x02", 3));
  EXPECT_EQ(ranked[0].count, 4);
  EXPECT_EQ(ranked[0].expected_saving_us, 320);

  KF_ASSERT_OK_AND_ASSIGN(bool set,
                          store_->kernel_jobs().SetState(first, KernelJobState::kSearching));
  EXPECT_TRUE(set);
  KF_ASSERT_OK_AND_ASSIGN(KernelJobRow row, store_->kernel_jobs().Get(first));
  EXPECT_EQ(row.state, KernelJobState::kSearching);
}

TEST_F(StorageJobRepoTest, CandidateLifecycle) {
  int64_t job = MakeJob();
  KF_ASSERT_OK_AND_ASSIGN(int64_t kernel, store_->kernel_jobs().Create(Kernel(job, "k", 0)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t slow, store_->candidates().Create(Candidate(kernel)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t fast, store_->candidates().Create(Candidate(kernel)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t broken, store_->candidates().Create(Candidate(kernel)));
  KF_ASSERT_OK_AND_ASSIGN(std::string source, store_->blobs().Put("__global__ void k() {}"));

  for (int64_t id : {slow, fast, broken}) {
    KF_ASSERT_OK_AND_ASSIGN(bool coded, store_->candidates().SetSource(id, source));
    EXPECT_TRUE(coded);
  }
  KF_ASSERT_OK_AND_ASSIGN(bool recoded, store_->candidates().SetSource(slow, source));
  EXPECT_FALSE(recoded) << "only a proposed candidate gets its source";

  KF_ASSERT_OK_AND_ASSIGN(bool compiled,
                          store_->candidates().SetState(fast, CandidateState::kCompiled));
  EXPECT_TRUE(compiled);
  KF_ASSERT_OK(store_->candidates().RecordTest(slow, true, "all 12 cases pass"));
  KF_ASSERT_OK(store_->candidates().RecordTest(fast, true, "all 12 cases pass"));
  KF_ASSERT_OK(store_->candidates().RecordTest(broken, false, "case 3: max abs error 0.5"));
  KF_ASSERT_OK_AND_ASSIGN(bool profiled_broken,
                          store_->candidates().RecordProfile(broken, "r", 1.0, 100.0));
  EXPECT_FALSE(profiled_broken) << "a failed candidate is never profiled";
  KF_ASSERT_OK(store_->candidates().RecordProfile(slow, "slow report", 80.0, 1.25));
  KF_ASSERT_OK(store_->candidates().RecordProfile(fast, "fast report", 40.0, 2.5));

  KF_ASSERT_OK_AND_ASSIGN(std::vector<CandidateRow> best, store_->candidates().Fastest(kernel, 5));
  ASSERT_EQ(best.size(), 2u);
  EXPECT_EQ(best[0].id, fast);
  EXPECT_EQ(best[0].speedup, 2.5);
  EXPECT_EQ(best[0].median_us, 40.0);
  EXPECT_EQ(best[0].profile_report, "fast report");
  EXPECT_EQ(best[0].source_hash, source);
  EXPECT_EQ(best[1].id, slow);

  KF_ASSERT_OK_AND_ASSIGN(CandidateRow failed, store_->candidates().Get(broken));
  EXPECT_EQ(failed.state, CandidateState::kFailed);
  EXPECT_EQ(failed.test_report, "case 3: max abs error 0.5");
  EXPECT_EQ(failed.speedup, std::nullopt);
  EXPECT_EQ(failed.params_json, R"({"tile":64})");

  KF_ASSERT_OK_AND_ASSIGN(bool best_set, store_->kernel_jobs().SetBest(kernel, fast));
  EXPECT_TRUE(best_set);
  KF_ASSERT_OK_AND_ASSIGN(std::vector<CandidateRow> all,
                          store_->candidates().ListByKernelJob(kernel));
  EXPECT_EQ(all.size(), 3u);
}

TEST_F(StorageJobRepoTest, BestCandidateMustBelongToTheKernelJob) {
  int64_t job = MakeJob();
  KF_ASSERT_OK_AND_ASSIGN(int64_t k1, store_->kernel_jobs().Create(Kernel(job, "one", 0)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t k2, store_->kernel_jobs().Create(Kernel(job, "two", 1)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t c2, store_->candidates().Create(Candidate(k2)));
  KF_ASSERT_OK_AND_ASSIGN(bool set, store_->kernel_jobs().SetBest(k1, c2));
  EXPECT_FALSE(set);
}

TEST_F(StorageJobRepoTest, DeletingAJobCascades) {
  int64_t job = MakeJob("doomed");
  int64_t kept_job = MakeJob("kept");
  int64_t node = MakeNode("n1");
  KF_ASSERT_OK_AND_ASSIGN(int64_t kernel, store_->kernel_jobs().Create(Kernel(job, "k", 0)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t candidate, store_->candidates().Create(Candidate(kernel)));
  KF_ASSERT_OK(store_->kernel_jobs().SetBest(kernel, candidate));
  NewTask task;
  task.job_id = job;
  task.kernel_job_id = kernel;
  task.candidate_id = candidate;
  task.kind = TaskKind::kTest;
  KF_ASSERT_OK_AND_ASSIGN(int64_t task_id, store_->tasks().Enqueue(task));
  KF_ASSERT_OK(store_->tasks().Lease(task_id, node, clock_.NowUs() + 1000));
  task.job_id = kept_job;
  task.kernel_job_id.reset();
  task.candidate_id.reset();
  KF_ASSERT_OK(store_->tasks().Enqueue(task));
  KF_ASSERT_OK(store_->events().Append(job, "job.created"));
  NewLlmCall call;
  call.job_id = job;
  call.kernel_job_id = kernel;
  call.role = "coder";
  call.model = "m";
  KF_ASSERT_OK(store_->llm_calls().Record(call));

  KF_ASSERT_OK(store_->db().Exec("DELETE FROM jobs WHERE id = " + std::to_string(job)));

  auto count = [&](const std::string& sql) {
    auto n = store_->db().QueryInt64(sql);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.value_or(-1);
  };
  EXPECT_EQ(count("SELECT count(*) FROM kernel_jobs"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM candidates"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM tasks"), 1) << "the other job's task stays";
  EXPECT_EQ(count("SELECT count(*) FROM task_attempts"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM events"), 1) << "the audit log outlives the job";
  EXPECT_EQ(count("SELECT count(*) FROM llm_calls WHERE job_id IS NULL"), 1)
      << "spend records outlive the job";
}

TEST_F(StorageJobRepoTest, CheckConstraintRejectsABadStateAsAStatus) {
  int64_t job = MakeJob();
  KF_ASSERT_OK_AND_ASSIGN(Statement stmt,
                          store_->db().Prepare("UPDATE jobs SET state = ?2 WHERE id = ?1"));
  KF_ASSERT_OK(stmt.BindAll(job, "exploded"));
  auto result = stmt.Run();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("CHECK constraint failed"), std::string::npos)
      << result.status().ToString();
  KF_ASSERT_OK_AND_ASSIGN(JobRow row, store_->jobs().Get(job));
  EXPECT_EQ(row.state, JobState::kQueued);
}

}  // namespace
}  // namespace kfleet::storage
