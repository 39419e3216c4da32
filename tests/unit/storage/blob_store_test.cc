#include "storage/blob_store.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/ids.h"
#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

using StorageBlobStoreTest = testing::StoreTest;

size_t CountFiles(const std::filesystem::path& dir) {
  size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) ++files;
  }
  return files;
}

TEST_F(StorageBlobStoreTest, RoundTrip) {
  const std::string bytes = std::string("kernel source\0with a NUL", 24);
  KF_ASSERT_OK_AND_ASSIGN(std::string hash, store_->blobs().Put(bytes));
  EXPECT_EQ(hash, Sha256Hex(bytes));
  EXPECT_EQ(store_->blobs().PathOf(hash),
            dir_.path() / "state" / "blobs" / hash.substr(0, 2) / hash);
  KF_ASSERT_OK_AND_ASSIGN(std::string read, store_->blobs().Get(hash, BlobCheck::kSizeAndHash));
  EXPECT_EQ(read, bytes);
  KF_ASSERT_OK_AND_ASSIGN(bool contains, store_->blobs().Contains(hash));
  EXPECT_TRUE(contains);
  KF_ASSERT_OK_AND_ASSIGN(int64_t size, store_->db().QueryInt64("SELECT size_bytes FROM blobs"));
  EXPECT_EQ(size, 24);
}

TEST_F(StorageBlobStoreTest, EmptyBlob) {
  KF_ASSERT_OK_AND_ASSIGN(std::string hash, store_->blobs().Put(""));
  KF_ASSERT_OK_AND_ASSIGN(std::string read, store_->blobs().Get(hash, BlobCheck::kSizeAndHash));
  EXPECT_EQ(read, "");
}

TEST_F(StorageBlobStoreTest, SameContentIsStoredOnce) {
  KF_ASSERT_OK_AND_ASSIGN(std::string first, store_->blobs().Put("same bytes"));
  clock_.AdvanceMs(5);
  KF_ASSERT_OK_AND_ASSIGN(std::string second, store_->blobs().Put("same bytes"));
  KF_ASSERT_OK_AND_ASSIGN(std::string other, store_->blobs().Put("other bytes"));
  EXPECT_EQ(first, second);
  EXPECT_NE(first, other);
  EXPECT_EQ(CountFiles(dir_.path() / "state" / "blobs"), 2u);
  KF_ASSERT_OK_AND_ASSIGN(int64_t rows, store_->db().QueryInt64("SELECT count(*) FROM blobs"));
  EXPECT_EQ(rows, 2);
}

TEST_F(StorageBlobStoreTest, DetectsACorruptedFile) {
  KF_ASSERT_OK_AND_ASSIGN(std::string hash, store_->blobs().Put("precious bytes"));
  // Same length, different content: only the hash check can see it.
  std::ofstream(store_->blobs().PathOf(hash), std::ios::trunc) << "precious BYTES";
  KF_ASSERT_OK(store_->blobs().Get(hash, BlobCheck::kSize));
  auto verified = store_->blobs().Get(hash, BlobCheck::kSizeAndHash);
  ASSERT_FALSE(verified.ok());
  EXPECT_EQ(verified.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(verified.status().message().find("damaged"), std::string::npos);

  std::ofstream(store_->blobs().PathOf(hash), std::ios::trunc) << "precious";
  auto truncated = store_->blobs().Get(hash);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(truncated.status().message().find("holds 8 bytes but the store recorded 14"),
            std::string::npos)
      << truncated.status().ToString();

  // Storing the content again repairs the file.
  KF_ASSERT_OK(store_->blobs().Put("precious bytes"));
  KF_ASSERT_OK_AND_ASSIGN(std::string read, store_->blobs().Get(hash, BlobCheck::kSizeAndHash));
  EXPECT_EQ(read, "precious bytes");
}

TEST_F(StorageBlobStoreTest, UnknownAndMalformedHashes) {
  auto unknown = store_->blobs().Get(Sha256Hex("never stored"));
  EXPECT_EQ(unknown.status().code(), ErrorCode::kNotFound);
  KF_ASSERT_OK_AND_ASSIGN(bool contains, store_->blobs().Contains(Sha256Hex("never stored")));
  EXPECT_FALSE(contains);
  auto malformed = store_->blobs().Get("../../etc/passwd");
  EXPECT_EQ(malformed.status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::storage
