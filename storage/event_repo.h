// The append-only event log behind `kfleet watch`: what happened to a job, in order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"

namespace kfleet::storage {

struct EventRow {
  int64_t id = 0;  // increases with every append; a reader's cursor
  std::optional<int64_t> job_id;
  int64_t ts_us = 0;
  std::string kind;  // "task.leased", "kernel.improved", ...
  std::string data_json;
};

class EventRepo {
 public:
  EventRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  // InvalidArgument when `data_json` is not valid JSON.
  [[nodiscard]] Result<int64_t> Append(std::optional<int64_t> job_id, std::string_view kind,
                                       std::string_view data_json = "{}");
  // Events with id > `after_id`, oldest first; of one job, or of all when `job_id` is nullopt.
  [[nodiscard]] Result<std::vector<EventRow>> ListAfter(std::optional<int64_t> job_id,
                                                        int64_t after_id, int limit);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
