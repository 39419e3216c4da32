// Candidates: one proposed kernel implementation for a kernel job, through code, test, profile.
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

struct NewCandidate {
  int64_t kernel_job_id = 0;
  int64_t island = 0;
  std::string parents_json = "[]";  // candidate ids this one was bred from
  std::string agent;                // "template", "llm:<model>"
  std::string plan;
  std::string params_json = "{}";
  int64_t round = 0;
  std::string template_name;  // the template family that renders it
};

struct CandidateRow {
  int64_t id = 0;
  int64_t kernel_job_id = 0;
  int64_t island = 0;
  std::string parents_json;
  std::string agent;
  std::string plan;
  std::string params_json;
  std::optional<std::string> source_hash;
  CandidateState state = CandidateState::kProposed;
  std::string test_report;     // empty until tested
  std::string profile_report;  // empty until profiled
  std::optional<double> median_us;
  std::optional<double> speedup;
  int64_t created_us = 0;
  int64_t updated_us = 0;
  int64_t round = 0;
  std::string template_name;
  std::string failed_stage;  // when failed: "code", "compile", "smoke", ..., "duplicate"
  std::string error;         // when failed: what went wrong, for people and the next plan
};

// Each update returns whether it applied (the candidate exists and was in a state allowing it).
class CandidateRepo {
 public:
  CandidateRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  [[nodiscard]] Result<int64_t> Create(const NewCandidate& candidate);
  [[nodiscard]] Result<CandidateRow> Get(int64_t id);
  [[nodiscard]] Result<std::vector<CandidateRow>> ListByKernelJob(int64_t kernel_job_id);
  // Profiled candidates of a kernel job, the highest speedup first.
  [[nodiscard]] Result<std::vector<CandidateRow>> Fastest(int64_t kernel_job_id, int limit);

  // The strategy text shown for the candidate (its template's explanation).
  [[nodiscard]] Result<bool> SetPlan(int64_t id, std::string_view plan);
  // proposed -> coded, with the source already in the BlobStore.
  [[nodiscard]] Result<bool> SetSource(int64_t id, std::string_view source_hash);
  [[nodiscard]] Result<bool> SetState(int64_t id, CandidateState state);
  // coded or compiled -> passed / failed, keeping the harness's report.
  [[nodiscard]] Result<bool> RecordTest(int64_t id, bool passed, std::string_view report);
  // Any unfinished state -> failed, with the stage and the reason.
  [[nodiscard]] Result<bool> RecordFailure(int64_t id, std::string_view stage,
                                           std::string_view error, std::string_view report = {});
  // passed -> profiled.
  [[nodiscard]] Result<bool> RecordProfile(int64_t id, std::string_view report, double median_us,
                                           double speedup);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
