#include "storage/node_repo.h"

#include <gtest/gtest.h>

#include "tests/unit/storage/store_fixture.h"

namespace kfleet::storage {
namespace {

using StorageNodeRepoTest = testing::StoreTest;

NewDevice Device(Backend backend, int64_t idx, const std::string& arch) {
  NewDevice d;
  d.idx = idx;
  d.backend = backend;
  d.name = "dev" + std::to_string(idx);
  d.arch = arch;
  d.memory_bytes = int64_t{80} << 30;
  d.compute_units = 132;
  return d;
}

NodeRegistration Registration() {
  NodeRegistration node;
  node.name = "gpu-7";
  node.public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  node.hostname = "gpu-7.lab";
  node.capabilities = std::string(
      "\x00\x01"
      "capnp",
      7);
  node.devices = {Device(Backend::kCuda, 0, "sm_90"), Device(Backend::kCuda, 1, "sm_90"),
                  Device(Backend::kCpu, 0, "x86-64-v3")};
  return node;
}

TEST_F(StorageNodeRepoTest, RegisterAndRead) {
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->nodes().Upsert(Registration()));
  KF_ASSERT_OK_AND_ASSIGN(NodeRow row, store_->nodes().GetByName("gpu-7"));
  EXPECT_EQ(row.id, id);
  EXPECT_EQ(row.state, NodeState::kOnline);
  EXPECT_EQ(row.hostname, "gpu-7.lab");
  EXPECT_EQ(row.capabilities, std::string("\x00\x01"
                                          "capnp",
                                          7));
  EXPECT_EQ(row.registered_us, clock_.NowUs());
  EXPECT_EQ(row.last_heartbeat_us, clock_.NowUs());

  KF_ASSERT_OK_AND_ASSIGN(std::vector<DeviceRow> devices, store_->nodes().Devices(id));
  ASSERT_EQ(devices.size(), 3u);
  EXPECT_EQ(devices[0].backend, Backend::kCpu);
  EXPECT_EQ(devices[1].backend, Backend::kCuda);
  EXPECT_EQ(devices[1].idx, 0);
  EXPECT_EQ(devices[2].idx, 1);
  EXPECT_EQ(devices[2].memory_bytes, int64_t{80} << 30);

  EXPECT_EQ(store_->nodes().GetByName("nobody").status().code(), ErrorCode::kNotFound);
}

TEST_F(StorageNodeRepoTest, ReRegisterUpdatesInPlace) {
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->nodes().Upsert(Registration()));
  KF_ASSERT_OK_AND_ASSIGN(std::vector<DeviceRow> before, store_->nodes().Devices(id));
  KF_ASSERT_OK(store_->nodes().SetState(id, NodeState::kLost));
  const int64_t registered_us = clock_.NowUs();
  clock_.AdvanceMs(1000);

  NodeRegistration again = Registration();
  again.hostname = "gpu-7.new";
  again.devices = {Device(Backend::kCuda, 0, "sm_90a"), Device(Backend::kHip, 0, "gfx942")};
  KF_ASSERT_OK_AND_ASSIGN(int64_t same_id, store_->nodes().Upsert(again));
  EXPECT_EQ(same_id, id);

  KF_ASSERT_OK_AND_ASSIGN(NodeRow row, store_->nodes().Get(id));
  EXPECT_EQ(row.state, NodeState::kOnline);
  EXPECT_EQ(row.hostname, "gpu-7.new");
  EXPECT_EQ(row.registered_us, registered_us);
  EXPECT_EQ(row.last_heartbeat_us, clock_.NowUs());

  KF_ASSERT_OK_AND_ASSIGN(std::vector<DeviceRow> after, store_->nodes().Devices(id));
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].backend, Backend::kCuda);
  EXPECT_EQ(after[0].arch, "sm_90a");
  EXPECT_EQ(after[0].id, before[1].id) << "cuda:0 keeps its id";
  EXPECT_EQ(after[1].backend, Backend::kHip);
}

TEST_F(StorageNodeRepoTest, TouchSetStateList) {
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->nodes().Upsert(Registration()));
  int64_t other = MakeNode("cpu-1");
  clock_.AdvanceMs(1500);
  KF_ASSERT_OK_AND_ASSIGN(bool touched, store_->nodes().Touch(id));
  EXPECT_TRUE(touched);
  KF_ASSERT_OK_AND_ASSIGN(bool unknown, store_->nodes().Touch(4242));
  EXPECT_FALSE(unknown);
  KF_ASSERT_OK_AND_ASSIGN(bool drained, store_->nodes().SetState(other, NodeState::kDraining));
  EXPECT_TRUE(drained);

  KF_ASSERT_OK_AND_ASSIGN(std::vector<NodeRow> nodes, store_->nodes().List());
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].name, "cpu-1");
  EXPECT_EQ(nodes[0].state, NodeState::kDraining);
  EXPECT_EQ(nodes[1].name, "gpu-7");
  EXPECT_EQ(nodes[1].last_heartbeat_us, clock_.NowUs());
}

TEST_F(StorageNodeRepoTest, DeletingANodeCascadesToDevices) {
  KF_ASSERT_OK_AND_ASSIGN(int64_t id, store_->nodes().Upsert(Registration()));
  KF_ASSERT_OK(store_->db().Exec("DELETE FROM nodes WHERE id = " + std::to_string(id)));
  KF_ASSERT_OK_AND_ASSIGN(int64_t devices, store_->db().QueryInt64("SELECT count(*) FROM devices"));
  EXPECT_EQ(devices, 0);
}

TEST_F(StorageNodeRepoTest, ANodeNamedByTasksCannotBeDeleted) {
  int64_t node = MakeNode("busy");
  NewTask task;
  task.job_id = MakeJob();
  KF_ASSERT_OK_AND_ASSIGN(int64_t task_id, store_->tasks().Enqueue(task));
  KF_ASSERT_OK(store_->tasks().Lease(task_id, node, clock_.NowUs() + 1000));
  Status status = store_->db().Exec("DELETE FROM nodes WHERE id = " + std::to_string(node));
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("FOREIGN KEY constraint failed"), std::string::npos);
}

}  // namespace
}  // namespace kfleet::storage
