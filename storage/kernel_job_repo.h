// Kernel jobs: one distinct kernel (a fusion group's spec) of a job, ranked by expected saving.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/db.h"
#include "storage/row_enums.h"

namespace kfleet::storage {

struct NewKernelJob {
  int64_t job_id = 0;
  std::string name;
  std::string spec_hash;  // unique within the job
  std::string spec;       // a serialized KernelSpec, opaque here
  int64_t count = 1;      // how often the model runs this kernel
  double baseline_us = 0;
  double sol_us = 0;  // speed-of-light time from the roofline model
  double expected_saving_us = 0;
  int64_t rank = 0;       // 0 = searched first
  std::string family;     // the planner's family label ("gemm+gelu_tanh")
  double share = 0;       // of the baseline model time, 0..1
  int64_t budget_ms = 0;  // task time the search may spend on it; 0 = not searched
  KernelJobState state = KernelJobState::kPending;
  std::string note;  // why it is not searched, when created done or failed
};

struct KernelJobRow {
  int64_t id = 0;
  int64_t job_id = 0;
  std::string name;
  std::string spec_hash;
  std::string spec;
  int64_t count = 1;
  double baseline_us = 0;
  double sol_us = 0;
  double expected_saving_us = 0;
  int64_t rank = 0;
  KernelJobState state = KernelJobState::kPending;
  std::optional<int64_t> best_candidate_id;
  std::string family;
  double share = 0;
  int64_t budget_ms = 0;
  std::string note;    // why the search stopped or never started
  int64_t rounds = 0;  // search rounds started
};

class KernelJobRepo {
 public:
  explicit KernelJobRepo(Database& db) : db_(db) {}

  // AlreadyExists when the job already has a kernel job with this spec_hash.
  [[nodiscard]] Result<int64_t> Create(const NewKernelJob& kernel_job);
  [[nodiscard]] Result<KernelJobRow> Get(int64_t id);
  // By rank, then id.
  [[nodiscard]] Result<std::vector<KernelJobRow>> ListByJob(int64_t job_id);
  [[nodiscard]] Result<bool> SetState(int64_t id, KernelJobState state);
  // Counts a started round; returns the round number it started (0 first).
  [[nodiscard]] Result<int64_t> StartRound(int64_t id);
  // Moves to `state` and says why.
  [[nodiscard]] Result<bool> Finish(int64_t id, KernelJobState state, std::string_view note);
  // Applies only when the candidate belongs to this kernel job.
  [[nodiscard]] Result<bool> SetBest(int64_t id, int64_t candidate_id);

 private:
  Database& db_;
};

}  // namespace kfleet::storage
