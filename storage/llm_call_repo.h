// One row per request to a language model: who asked, what it cost, whether it worked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "storage/db.h"

namespace kfleet::storage {

struct NewLlmCall {
  std::optional<int64_t> job_id;
  std::optional<int64_t> kernel_job_id;
  std::optional<int64_t> candidate_id;
  std::string role;   // "designer", "coder", "conductor", ...
  std::string model;  // the endpoint's model name
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double cost_usd = 0;
  int64_t latency_ms = 0;
  bool ok = true;
  std::string error;
  std::string outcome;  // one word: "ok", "replayed", "no_code", "truncated", "http_429", ...
};

struct LlmCallRow {
  int64_t id = 0;
  NewLlmCall call;
  int64_t ts_us = 0;
};

struct LlmSpend {
  int64_t calls = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double cost_usd = 0;
  int64_t failed_calls = 0;  // no answer came back
};

class LlmCallRepo {
 public:
  LlmCallRepo(Database& db, Clock& clock) : db_(db), clock_(clock) {}

  [[nodiscard]] Result<int64_t> Record(const NewLlmCall& call);
  [[nodiscard]] Result<std::vector<LlmCallRow>> ListByJob(int64_t job_id);
  // Totals for a job's budget checks and reports.
  [[nodiscard]] Result<LlmSpend> SpendByJob(int64_t job_id);

 private:
  Database& db_;
  Clock& clock_;
};

}  // namespace kfleet::storage
