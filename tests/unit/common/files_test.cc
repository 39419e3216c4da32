#include "common/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>

namespace kfleet {
namespace {

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kfleet-files-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(FilesTest, AtomicWriteThenRead) {
  std::filesystem::path path = dir_ / "a.bin";
  std::string bytes("head\0tail", 9);
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  Result<std::string> read = ReadFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(*read, bytes);
}

TEST_F(FilesTest, AtomicWriteReplacesAndLeavesNoTemporaries) {
  std::filesystem::path path = dir_ / "config";
  ASSERT_TRUE(WriteFileAtomic(path, "old").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "new").ok());
  EXPECT_EQ(*ReadFile(path), "new");
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(FilesTest, MissingFileNamesThePath) {
  Result<std::string> read = ReadFile(dir_ / "absent");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), ErrorCode::kIoError);
  EXPECT_NE(read.status().message().find("absent"), std::string::npos);
}

TEST_F(FilesTest, SizeLimitIsEnforced) {
  ASSERT_TRUE(WriteFileAtomic(dir_ / "big", std::string(1000, 'x')).ok());
  Result<std::string> read = ReadFile(dir_ / "big", 999);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), ErrorCode::kResourceExhausted);
}

TEST_F(FilesTest, ReadsProcFilesWhoseSizeIsZero) {
  Result<std::string> read = ReadFile("/proc/self/status");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_NE(read->find("Pid:"), std::string::npos);
  Result<std::string> capped = ReadFile("/proc/self/status", 16);
  ASSERT_FALSE(capped.ok());
  EXPECT_EQ(capped.status().code(), ErrorCode::kResourceExhausted);
}

TEST_F(FilesTest, DirectoryIsNotAFile) {
  Result<std::string> read = ReadFile(dir_);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("is a directory"), std::string::npos);
}

TEST_F(FilesTest, WriteIntoMissingDirectoryFails) {
  Status status = WriteFileAtomic(dir_ / "no" / "such" / "file", "x");
  EXPECT_EQ(status.code(), ErrorCode::kIoError);
}

TEST_F(FilesTest, MappedFileSeesTheContentsAndMovesItsMapping) {
  std::filesystem::path path = dir_ / "m.bin";
  std::string bytes(10000, 'x');
  bytes[9999] = 'y';
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
  Result<MappedFile> mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  MappedFile moved = std::move(mapped).value();
  EXPECT_EQ(moved.data(), bytes);

  ASSERT_TRUE(WriteFileAtomic(dir_ / "empty", "").ok());
  Result<MappedFile> empty = MappedFile::Open(dir_ / "empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->data().empty());

  Result<MappedFile> missing = MappedFile::Open(dir_ / "nope");
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  EXPECT_EQ(MappedFile::Open(dir_).status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(FilesTest, MakeDirsPrivate) {
  std::filesystem::path nested = dir_ / "a" / "b";
  ASSERT_TRUE(MakeDirs(nested, /*private_dir=*/true).ok());
  struct stat st {};
  ASSERT_EQ(stat(nested.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(MakeDirs(nested).ok());  // idempotent
}

}  // namespace
}  // namespace kfleet
