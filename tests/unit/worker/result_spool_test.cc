#include "worker/result_spool.h"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>

#include "common/files.h"

namespace kfleet::worker {
namespace {

msg::EncodedFrames EncodeResult(const TaskKey& key, std::string_view output) {
  capnp::MallocMessageBuilder builder;
  msg::TaskResult::Builder result = builder.initRoot<msg::TaskResult>();
  result.setTaskId(key.task_id);
  result.setAttempt(key.attempt);
  result.setOutcome(msg::Outcome::OK);
  result.setOutput(
      capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(output.data()), output.size()));
  return msg::Encode<msg::TaskResult>(builder);
}

class ResultSpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kfleet-spool-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    Result<ResultSpool> spool = ResultSpool::Open(root_ / "results");
    ASSERT_TRUE(spool.ok()) << spool.status().ToString();
    spool_.emplace(std::move(spool).value());
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  std::vector<TaskKey> ListedKeys() {
    Result<std::vector<SpooledResult>> listed = spool_->List();
    EXPECT_TRUE(listed.ok()) << listed.status().ToString();
    std::vector<TaskKey> keys;
    if (listed.ok()) {
      for (const SpooledResult& result : *listed) keys.push_back(result.key);
    }
    return keys;
  }

  std::filesystem::path root_;
  std::optional<ResultSpool> spool_;
};

TEST_F(ResultSpoolTest, OpenMakesAPrivateDirectory) {
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "results").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(ResultSpoolTest, WriteListRemove) {
  ASSERT_TRUE(spool_->Write({12, 2}, EncodeResult({12, 2}, "twelve")).ok());
  ASSERT_TRUE(spool_->Write({3, 1}, EncodeResult({3, 1}, "three")).ok());
  EXPECT_TRUE(std::filesystem::exists(root_ / "results" / "12-2.result"));

  Result<std::vector<SpooledResult>> listed = spool_->List();
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].key, (TaskKey{3, 1}));
  EXPECT_EQ((*listed)[1].key, (TaskKey{12, 2}));
  Result<msg::TaskResult::Reader> result = (*listed)[1].message.Root<msg::TaskResult>();
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->getTaskId(), 12u);
  EXPECT_EQ(result->getOutput().size(), 6u);

  ASSERT_TRUE(spool_->Remove({12, 2}).ok());
  EXPECT_EQ(ListedKeys(), (std::vector<TaskKey>{{3, 1}}));
  // A second Ack for the same result finds nothing to remove, which is fine.
  EXPECT_TRUE(spool_->Remove({12, 2}).ok());
}

TEST_F(ResultSpoolTest, CorruptFilesAreMovedAsideNotFatal) {
  const std::filesystem::path dir = root_ / "results";
  ASSERT_TRUE(spool_->Write({1, 1}, EncodeResult({1, 1}, "good")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "7-1.result", "not a kfleet message at all").ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "8-1.result", "KFL").ok());
  // A valid message under another task's name.
  const msg::EncodedFrames other = EncodeResult({99, 4}, "x");
  ASSERT_TRUE(
      WriteFileAtomic(dir / "9-1.result", other.header + std::string(other.BodyBytes())).ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "notes.result", "?").ok());

  EXPECT_EQ(ListedKeys(), (std::vector<TaskKey>{{1, 1}}));
  for (const char* name : {"7-1.result", "8-1.result", "9-1.result", "notes.result"}) {
    EXPECT_FALSE(std::filesystem::exists(dir / name)) << name;
    EXPECT_TRUE(std::filesystem::exists(dir / (std::string(name) + ".corrupt"))) << name;
  }
  // Moved aside once; a second listing does not touch them again.
  EXPECT_EQ(ListedKeys(), (std::vector<TaskKey>{{1, 1}}));
}

TEST_F(ResultSpoolTest, InterruptedWritesAreDeletedAndOtherFilesLeftAlone) {
  const std::filesystem::path dir = root_ / "results";
  ASSERT_TRUE(WriteFileAtomic(dir / "5-1.result.tmp-abc", "half").ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "README", "a person's note").ok());
  EXPECT_TRUE(ListedKeys().empty());
  EXPECT_FALSE(std::filesystem::exists(dir / "5-1.result.tmp-abc"));
  EXPECT_TRUE(std::filesystem::exists(dir / "README"));
}

}  // namespace
}  // namespace kfleet::worker
