// Worker nodes and their devices, as registered and kept alive by heartbeats.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"
#include "storage/row_enums.h"

namespace kfleet::storage {

struct NewDevice {
  int64_t idx = 0;  // the backend's device index on the node
  Backend backend = Backend::kCpu;
  std::string name;
  std::string arch;  // "sm_90", "gfx942", "x86-64-v3"
  int64_t memory_bytes = 0;
  int64_t compute_units = 0;
};

struct NodeRegistration {
  std::string name;        // unique across the fleet
  std::string public_key;  // CurveZMQ key; empty for in-process workers
  std::string hostname;
  std::string capabilities;  // a Cap'n Proto Capabilities message, opaque here
  std::vector<NewDevice> devices;
};

struct NodeRow {
  int64_t id = 0;
  std::string name;
  NodeState state = NodeState::kOnline;
  std::string public_key;
  std::string hostname;
  std::string capabilities;
  int64_t registered_us = 0;  // the first registration
  int64_t last_heartbeat_us = 0;
};

struct DeviceRow {
  int64_t id = 0;
  int64_t node_id = 0;
  int64_t idx = 0;
  Backend backend = Backend::kCpu;
  std::string name;
  std::string arch;
  int64_t memory_bytes = 0;
  int64_t compute_units = 0;
};

class NodeRepo {
 public:
  NodeRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  // Registers a node, or re-registers one by name: back online, details and devices replaced
  // (a device keeps its id while its backend and index stay). Returns the node id.
  [[nodiscard]] Result<int64_t> Upsert(const NodeRegistration& node);
  [[nodiscard]] Result<bool> SetState(int64_t node_id, NodeState state);
  // Records a heartbeat now; false for an unknown node.
  [[nodiscard]] Result<bool> Touch(int64_t node_id);
  [[nodiscard]] Result<NodeRow> Get(int64_t node_id);
  [[nodiscard]] Result<NodeRow> GetByName(std::string_view name);
  [[nodiscard]] Result<std::vector<NodeRow>> List();
  // Ordered by backend, then index.
  [[nodiscard]] Result<std::vector<DeviceRow>> Devices(int64_t node_id);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
