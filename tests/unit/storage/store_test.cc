#include "storage/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>

#include "storage/migrations.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::storage {
namespace {

using testing::TempDir;

int ModeOf(const std::filesystem::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<int>(st.st_mode & 0777);
}

TEST(StorageStoreTest, OpenCreatesAPrivateStateDirectory) {
  TempDir dir;
  const std::filesystem::path state = dir.path() / "deep" / "state";
  KF_ASSERT_OK_AND_ASSIGN(auto store, Store::Open(state));
  EXPECT_EQ(store->state_dir(), state);
  EXPECT_TRUE(std::filesystem::exists(state / "kfleet.db"));
  EXPECT_EQ(ModeOf(state), 0700);
  EXPECT_EQ(ModeOf(state / "blobs"), 0700);
  KF_ASSERT_OK_AND_ASSIGN(int version, SchemaVersion(store->db()));
  EXPECT_EQ(version, LatestSchemaVersion());
}

TEST(StorageStoreTest, StateSurvivesReopening) {
  TempDir dir;
  int64_t job_id = 0;
  std::string hash;
  {
    KF_ASSERT_OK_AND_ASSIGN(auto store, Store::Open(dir.path()));
    NewJob job;
    job.name = "persisted";
    KF_ASSERT_OK_AND_ASSIGN(job_id, store->jobs().Create(job));
    KF_ASSERT_OK_AND_ASSIGN(hash, store->blobs().Put("model bytes"));
  }
  KF_ASSERT_OK_AND_ASSIGN(auto store, Store::Open(dir.path()));
  KF_ASSERT_OK_AND_ASSIGN(JobRow job, store->jobs().Get(job_id));
  EXPECT_EQ(job.name, "persisted");
  KF_ASSERT_OK_AND_ASSIGN(std::string bytes, store->blobs().Get(hash, BlobCheck::kSizeAndHash));
  EXPECT_EQ(bytes, "model bytes");
}

TEST(StorageStoreTest, OpenFailsClearlyWhenTheDirectoryCannotBeMade) {
  TempDir dir;
  const std::filesystem::path file = dir.path() / "a-file";
  KF_ASSERT_OK(Store::Open(dir.path() / "ok"));  // sanity: a good path opens
  std::FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  auto store = Store::Open(file / "state");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(file.string()), std::string::npos)
      << store.status().ToString();
}

TEST(StorageStoreTest, BatchCommitsTogetherOrNotAtAll) {
  TempDir dir;
  FakeClock clock;
  KF_ASSERT_OK_AND_ASSIGN(auto store, Store::Open(dir.path(), {}, clock));
  NewJob job;
  job.name = "batched";
  KF_ASSERT_OK_AND_ASSIGN(int64_t job_id, store->jobs().Create(job));
  NewTask task;
  task.job_id = job_id;

  KF_ASSERT_OK(store->Batch([&]() -> Status {
    KF_RETURN_IF_ERROR(store->tasks().EnqueueMany({task, task}).status());
    KF_RETURN_IF_ERROR(store->tasks().Enqueue(task).status());
    return store->events().Append(job_id, "tasks.enqueued").status();
  }));
  KF_ASSERT_OK_AND_ASSIGN(TaskCounts counts, store->tasks().CountsByState(job_id));
  EXPECT_EQ(counts.queued, 3);

  Status failed = store->Batch([&]() -> Status {
    KF_RETURN_IF_ERROR(store->tasks().EnqueueMany({task, task}).status());
    KF_RETURN_IF_ERROR(store->events().Append(job_id, "tasks.enqueued").status());
    return Unavailable("the planner gave up");
  });
  EXPECT_EQ(failed.code(), ErrorCode::kUnavailable);
  KF_ASSERT_OK_AND_ASSIGN(counts, store->tasks().CountsByState(job_id));
  EXPECT_EQ(counts.queued, 3) << "nothing from the failed batch remains";
  KF_ASSERT_OK_AND_ASSIGN(std::vector<EventRow> events, store->events().ListAfter(job_id, 0, 10));
  EXPECT_EQ(events.size(), 1u);
  EXPECT_FALSE(store->db().in_transaction());
}

}  // namespace
}  // namespace kfleet::storage
