// A Store in a temporary state directory with a FakeClock, for the repository tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "common/clock.h"
#include "storage/store.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::storage::testing {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KF_ASSERT_OK_AND_ASSIGN(store_, Store::Open(dir_.path() / "state", {}, clock_));
  }

  // A job to hang kernel jobs and tasks on.
  int64_t MakeJob(const std::string& name = "job") {
    NewJob job;
    job.kind = JobKind::kDiag;
    job.name = name;
    auto id = store_->jobs().Create(job);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.value_or(0);
  }

  int64_t MakeNode(const std::string& name) {
    NodeRegistration node;
    node.name = name;
    auto id = store_->nodes().Upsert(node);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.value_or(0);
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
};

}  // namespace kfleet::storage::testing
