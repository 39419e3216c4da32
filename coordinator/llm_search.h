// The LLM agent's side of the coordinator's search: which agent a model job uses and with which
// settings (kept in the job's options), the working kernels a Coder is shown, how far a failed
// lineage has gone, and the llm_calls rows a plan or code task reports. The Conductor
// (conductor.h) decides when these run; this file says how.
//
// Agents: "template" (parameterized templates only), "llm" (the Designer writes a sketch per
// island per round, the Coder writes its file, the Conductor routes each failure back to one of
// them within a fixed number of attempts) and "hybrid" (templates seed every island in round 0;
// from round 1 each island also gets an LLM candidate that sees the island's best, templates
// included, as parents and examples).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "messages/kernel.capnp.h"
#include "storage/store.h"

namespace kfleet::coordinator {

enum class SearchAgent { kTemplate, kLlm, kHybrid };

// "template" (also empty), "llm", "hybrid"; InvalidArgument for another.
Result<SearchAgent> ParseSearchAgent(std::string_view name);
std::string_view SearchAgentName(SearchAgent agent);

// A model job's agent and LLM settings, as its options_json holds them.
struct JobAgent {
  SearchAgent agent = SearchAgent::kTemplate;
  std::string llm_json;   // agents::LlmConfig as JSON; empty for the template agent
  std::string model;      // the LLM's model name
  double budget_usd = 0;  // 0: no limit
};
JobAgent JobAgentOf(const nlohmann::json& options);
// The candidate's `agent` column for the LLM's candidates: "llm:<model>".
std::string LlmCandidateAgent(const JobAgent& agent);
bool IsLlmCandidate(const storage::CandidateRow& candidate);

// Up to `limit` working kernels for the Coder: the kernel job's current best, then the best of
// other kernel jobs of the same family class among the store's newest 200 jobs (the same target
// first, then the nearest speed-of-light time, i.e. the nearest size). Sources longer than
// `max_chars` are left out: an example must not crowd out the prompt.
Result<std::vector<std::string>> RetrieveExamples(storage::Store& store,
                                                  const storage::KernelJobRow& kernel_job,
                                                  storage::Backend target, size_t limit,
                                                  size_t max_chars = 16'000);

// Attempts so far in `candidate`'s lineage: 1 plus the failed LLM candidates before it along
// first parents.
int LineageAttempts(const std::vector<storage::CandidateRow>& candidates,
                    const storage::CandidateRow& candidate);

// The time limit of an LLM task making `calls` requests with these settings: every attempt's
// timeout and the waits between retries, plus a margin; the templates' limit when the settings
// do not parse.
int64_t LlmTaskTimeoutMs(const std::string& llm_json, int calls, int64_t fallback_ms);

// Stores a task's LLM calls (llm_calls rows) for the job, kernel job and candidate.
Status RecordLlmCalls(storage::Store& store, int64_t job_id, int64_t kernel_job_id,
                      std::optional<int64_t> candidate_id,
                      capnp::List<msg::LlmCallRecord>::Reader calls);

}  // namespace kfleet::coordinator
