// Jobs: one submission (a model to optimize, or a diagnostic run) and its overall state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"
#include "storage/row_enums.h"

namespace kfleet::storage {

struct NewJob {
  JobKind kind = JobKind::kModel;
  std::string name;
  std::optional<int64_t> model_id;  // set for kModel jobs
  Backend target = Backend::kCpu;
  double priority = 0;
  int64_t budget_ms = 0;  // 0: no budget
  std::string options_json = "{}";
  std::string phase;  // model jobs: "importing" at first; empty for diagnostics
};

struct JobRow {
  int64_t id = 0;
  JobKind kind = JobKind::kModel;
  std::string name;
  std::optional<int64_t> model_id;
  Backend target = Backend::kCpu;
  JobState state = JobState::kQueued;
  double priority = 0;
  int64_t budget_ms = 0;
  std::string options_json;
  std::string error;
  int64_t created_us = 0;
  int64_t updated_us = 0;
  std::optional<int64_t> finished_us;
  // Model jobs: importing -> profiling -> searching -> verifying -> finished.
  std::string phase;
  std::string summary_json;  // what the phases found: baseline, plan, verification (JSON)
};

class JobRepo {
 public:
  JobRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  [[nodiscard]] Result<int64_t> Create(const NewJob& job);
  [[nodiscard]] Result<JobRow> Get(int64_t id);
  // Oldest first; with `state`, only the jobs in it.
  [[nodiscard]] Result<std::vector<JobRow>> List(std::optional<JobState> state = std::nullopt);
  // Moves a job to `state` (with `error` for kFailed). Finished states (done, failed, cancelled)
  // are final: returns false, changing nothing, when the job has already finished.
  [[nodiscard]] Result<bool> SetState(int64_t id, JobState state, std::string_view error = {});
  // Unfinished jobs only; false when the job has finished.
  [[nodiscard]] Result<bool> SetPhase(int64_t id, std::string_view phase);
  [[nodiscard]] Status SetSummary(int64_t id, std::string_view summary_json);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
