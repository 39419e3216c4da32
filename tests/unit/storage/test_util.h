// Shared helpers for the storage tests: a temporary directory and status assertions.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

#include "common/status.h"
#include "common/temp_dir.h"

namespace kfleet::storage::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    Result<kfleet::TempDir> dir = kfleet::TempDir::Create("kfleet-test");
    EXPECT_TRUE(dir.ok()) << dir.status().ToString();
    if (dir.ok()) dir_.emplace(std::move(dir).value());
  }
  const std::filesystem::path& path() const {
    static const std::filesystem::path kNone;
    return dir_.has_value() ? dir_->path() : kNone;
  }

 private:
  std::optional<kfleet::TempDir> dir_;
};

inline const Status& StatusOf(const Status& status) { return status; }
template <typename T>
const Status& StatusOf(const Result<T>& result) {
  return result.status();
}

}  // namespace kfleet::storage::testing

#define KF_ASSERT_OK(expr)                                                                 \
  do {                                                                                     \
    const ::kfleet::Status kf_assert_status_ = ::kfleet::storage::testing::StatusOf(expr); \
    ASSERT_TRUE(kf_assert_status_.ok()) << kf_assert_status_.ToString();                   \
  } while (false)

#define KF_EXPECT_OK(expr)                                                                 \
  do {                                                                                     \
    const ::kfleet::Status kf_expect_status_ = ::kfleet::storage::testing::StatusOf(expr); \
    EXPECT_TRUE(kf_expect_status_.ok()) << kf_expect_status_.ToString();                   \
  } while (false)

// `KF_ASSERT_OK_AND_ASSIGN(auto id, repo.Create(...));` binds the value or fails the test.
#define KF_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  KF_ASSERT_OK_AND_ASSIGN_IMPL_(KF_CONCAT_(kf_assert_result_, __LINE__), lhs, expr)
#define KF_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();   \
  lhs = std::move(tmp).value()
