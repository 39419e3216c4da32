#include "storage/node_repo.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSelectNode = R"sql(
  SELECT id, name, state, public_key, hostname, capabilities, registered_us, last_heartbeat_us
  FROM nodes
)sql";

Result<NodeRow> ReadNode(const Statement& stmt) {
  NodeRow row;
  row.id = stmt.ColumnInt64(0);
  row.name = stmt.ColumnText(1);
  KF_ASSIGN_OR_RETURN(row.state, Parse<NodeState>(stmt.ColumnText(2)));
  row.public_key = stmt.ColumnText(3);
  row.hostname = stmt.ColumnText(4);
  row.capabilities = stmt.ColumnBlob(5);
  row.registered_us = stmt.ColumnInt64(6);
  row.last_heartbeat_us = stmt.ColumnInt64(7);
  return row;
}

Result<DeviceRow> ReadDevice(const Statement& stmt) {
  DeviceRow row;
  row.id = stmt.ColumnInt64(0);
  row.node_id = stmt.ColumnInt64(1);
  row.idx = stmt.ColumnInt64(2);
  KF_ASSIGN_OR_RETURN(row.backend, Parse<Backend>(stmt.ColumnText(3)));
  row.name = stmt.ColumnText(4);
  row.arch = stmt.ColumnText(5);
  row.memory_bytes = stmt.ColumnInt64(6);
  row.compute_units = stmt.ColumnInt64(7);
  return row;
}

}  // namespace

Result<int64_t> NodeRepo::Upsert(const NodeRegistration& node) {
  int64_t node_id = 0;
  const int64_t now_us = clock_.NowUs();
  Status status = db_.InTransaction([&]() -> Status {
    KF_ASSIGN_OR_RETURN(Statement upsert, db_.Prepare(R"sql(
      INSERT INTO nodes (name, state, public_key, hostname, capabilities, registered_us,
                         last_heartbeat_us)
      VALUES (?1, 'online', ?2, ?3, ?4, ?5, ?5)
      ON CONFLICT (name) DO UPDATE SET
        state = 'online', public_key = excluded.public_key, hostname = excluded.hostname,
        capabilities = excluded.capabilities, last_heartbeat_us = excluded.last_heartbeat_us
      RETURNING id
    )sql"));
    KF_RETURN_IF_ERROR(
        upsert.BindAll(node.name, node.public_key, node.hostname, Blob{node.capabilities}, now_us));
    KF_ASSIGN_OR_RETURN(std::optional<int64_t> id, upsert.RunReturningInt64());
    if (!id.has_value()) return Internal("upsert node returned no id");
    node_id = *id;

    std::string kept_ids_json = "[";
    KF_ASSIGN_OR_RETURN(Statement device, db_.Prepare(R"sql(
      INSERT INTO devices (node_id, idx, backend, name, arch, memory_bytes, compute_units)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
      ON CONFLICT (node_id, backend, idx) DO UPDATE SET
        name = excluded.name, arch = excluded.arch, memory_bytes = excluded.memory_bytes,
        compute_units = excluded.compute_units
      RETURNING id
    )sql"));
    for (const NewDevice& d : node.devices) {
      device.Reset();
      KF_RETURN_IF_ERROR(device.BindAll(node_id, d.idx, Name(d.backend), d.name, d.arch,
                                        d.memory_bytes, d.compute_units));
      KF_ASSIGN_OR_RETURN(std::optional<int64_t> device_id, device.RunReturningInt64());
      if (!device_id.has_value()) return Internal("upsert device returned no id");
      if (kept_ids_json.size() > 1) kept_ids_json += ',';
      kept_ids_json += std::to_string(*device_id);
    }
    // Devices the node no longer reports are gone.
    KF_ASSIGN_OR_RETURN(Statement prune, db_.Prepare(R"sql(
      DELETE FROM devices
      WHERE node_id = ?1 AND id NOT IN (SELECT value FROM json_each(?2))
    )sql"));
    kept_ids_json += ']';
    KF_RETURN_IF_ERROR(prune.BindAll(node_id, kept_ids_json));
    return prune.Run().status();
  });
  KF_RETURN_IF_ERROR(status.WithContext("register node '" + node.name + "'"));
  return node_id;
}

Result<bool> NodeRepo::SetState(int64_t node_id, NodeState state) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE nodes SET state = ?2 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(node_id, Name(state)));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

Result<bool> NodeRepo::Touch(int64_t node_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE nodes SET last_heartbeat_us = ?2 WHERE id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(node_id, clock_.NowUs()));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  return changed == 1;
}

Result<NodeRow> NodeRepo::Get(int64_t node_id) {
  static const std::string sql = std::string(kSelectNode) + " WHERE id = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(node_id));
  return ReadOneRow(stmt, ReadNode, "no node " + std::to_string(node_id));
}

Result<NodeRow> NodeRepo::GetByName(std::string_view name) {
  static const std::string sql = std::string(kSelectNode) + " WHERE name = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(name));
  return ReadOneRow(stmt, ReadNode, "no node named '" + std::string(name) + "'");
}

Result<std::vector<NodeRow>> NodeRepo::List() {
  static const std::string sql = std::string(kSelectNode) + " ORDER BY name";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  return ReadAllRows(stmt, ReadNode);
}

Result<std::vector<DeviceRow>> NodeRepo::Devices(int64_t node_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, node_id, idx, backend, name, arch, memory_bytes, compute_units
    FROM devices WHERE node_id = ?1 ORDER BY backend, idx
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(node_id));
  return ReadAllRows(stmt, ReadDevice);
}

}  // namespace kfleet::storage
