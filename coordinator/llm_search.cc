#include "coordinator/llm_search.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "agents/llm_config.h"
#include "agents/llm_prompts.h"

namespace kfleet::coordinator {
namespace {

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// How many of the newest jobs RetrieveExamples looks through.
constexpr size_t kExampleJobsScanned = 200;

}  // namespace

Result<SearchAgent> ParseSearchAgent(std::string_view name) {
  if (name.empty() || name == "template") return SearchAgent::kTemplate;
  if (name == "llm") return SearchAgent::kLlm;
  if (name == "hybrid") return SearchAgent::kHybrid;
  return InvalidArgument(fmt::format("agent '{}' is not one of template, llm, hybrid", name));
}

std::string_view SearchAgentName(SearchAgent agent) {
  switch (agent) {
    case SearchAgent::kTemplate:
      return "template";
    case SearchAgent::kLlm:
      return "llm";
    case SearchAgent::kHybrid:
      return "hybrid";
  }
  return "template";
}

JobAgent JobAgentOf(const nlohmann::json& options) {
  JobAgent out;
  const Result<SearchAgent> agent = ParseSearchAgent(options.value("agent", std::string()));
  out.agent = agent.ok() ? *agent : SearchAgent::kTemplate;
  out.llm_json = options.value("llm", std::string());
  out.budget_usd = options.value("budget_usd", 0.0);
  const nlohmann::json llm =
      nlohmann::json::parse(out.llm_json, nullptr, /*allow_exceptions=*/false);
  if (llm.is_object()) out.model = llm.value("model", std::string());
  return out;
}

std::string LlmCandidateAgent(const JobAgent& agent) { return "llm:" + agent.model; }

bool IsLlmCandidate(const storage::CandidateRow& candidate) {
  return candidate.agent.starts_with("llm:");
}

Result<std::vector<std::string>> RetrieveExamples(storage::Store& store,
                                                  const storage::KernelJobRow& kernel_job,
                                                  storage::Backend target, size_t limit,
                                                  size_t max_chars) {
  std::vector<std::string> examples;
  if (limit == 0) return examples;
  const auto source_of = [&](int64_t candidate_id) -> Result<std::optional<std::string>> {
    KF_ASSIGN_OR_RETURN(storage::CandidateRow best, store.candidates().Get(candidate_id));
    if (!best.source_hash.has_value()) return std::optional<std::string>();
    KF_ASSIGN_OR_RETURN(std::string source, store.blobs().Get(*best.source_hash));
    if (source.size() > max_chars) return std::optional<std::string>();
    return std::optional<std::string>(std::move(source));
  };
  if (kernel_job.best_candidate_id.has_value()) {
    KF_ASSIGN_OR_RETURN(std::optional<std::string> own, source_of(*kernel_job.best_candidate_id));
    if (own.has_value()) examples.push_back(std::move(*own));
  }
  // Other kernel jobs of the same family class with a winner, ranked.
  struct Other {
    bool same_target = false;
    bool same_family = false;
    double distance = 0;  // |log(sol ratio)|
    int64_t candidate_id = 0;
  };
  std::vector<Other> others;
  const std::string family_class = agents::FamilyClass(kernel_job.family);
  KF_ASSIGN_OR_RETURN(std::vector<storage::JobRow> jobs, store.jobs().List());
  // The newest jobs first, and not all of a long-lived store's: this runs per LLM code task.
  std::sort(jobs.begin(), jobs.end(),
            [](const storage::JobRow& a, const storage::JobRow& b) { return a.id > b.id; });
  if (jobs.size() > kExampleJobsScanned) jobs.resize(kExampleJobsScanned);
  for (const storage::JobRow& job : jobs) {
    if (job.kind != storage::JobKind::kModel) continue;
    KF_ASSIGN_OR_RETURN(std::vector<storage::KernelJobRow> kernels,
                        store.kernel_jobs().ListByJob(job.id));
    for (const storage::KernelJobRow& k : kernels) {
      if (k.id == kernel_job.id || !k.best_candidate_id.has_value()) continue;
      if (agents::FamilyClass(k.family) != family_class) continue;
      Other other;
      other.same_target = job.target == target;
      other.same_family = k.family == kernel_job.family;
      other.distance = k.sol_us > 0 && kernel_job.sol_us > 0
                           ? std::abs(std::log(k.sol_us / kernel_job.sol_us))
                           : 1e9;
      other.candidate_id = *k.best_candidate_id;
      others.push_back(other);
    }
  }
  std::stable_sort(others.begin(), others.end(), [](const Other& a, const Other& b) {
    if (a.same_target != b.same_target) return a.same_target;
    if (a.same_family != b.same_family) return a.same_family;
    return a.distance < b.distance;
  });
  for (const Other& other : others) {
    if (examples.size() >= limit) break;
    KF_ASSIGN_OR_RETURN(std::optional<std::string> source, source_of(other.candidate_id));
    if (!source.has_value()) continue;
    if (std::find(examples.begin(), examples.end(), *source) != examples.end()) continue;
    examples.push_back(std::move(*source));
  }
  if (examples.size() > limit) examples.resize(limit);
  return examples;
}

int LineageAttempts(const std::vector<storage::CandidateRow>& candidates,
                    const storage::CandidateRow& candidate) {
  std::map<int64_t, const storage::CandidateRow*> by_id;
  for (const storage::CandidateRow& c : candidates) by_id[c.id] = &c;
  int attempts = 1;
  const storage::CandidateRow* current = &candidate;
  // Bounded by the candidates there are: parents always have smaller ids, but a damaged row
  // must not loop.
  for (size_t step = 0; step < candidates.size(); ++step) {
    const nlohmann::json parents =
        nlohmann::json::parse(current->parents_json, nullptr, /*allow_exceptions=*/false);
    if (!parents.is_array() || parents.empty() || !parents[0].is_number_integer()) break;
    const auto it = by_id.find(parents[0].get<int64_t>());
    if (it == by_id.end() || it->second->id >= current->id) break;
    const storage::CandidateRow& parent = *it->second;
    if (!IsLlmCandidate(parent) || parent.state != storage::CandidateState::kFailed) break;
    ++attempts;
    current = &parent;
  }
  return attempts;
}

int64_t LlmTaskTimeoutMs(const std::string& llm_json, int calls, int64_t fallback_ms) {
  Result<agents::LlmConfig> config = agents::LlmConfigFromJson(llm_json);
  if (!config.ok()) return fallback_ms;
  // The client waits at most two minutes between attempts (a Retry-After is capped there).
  constexpr int64_t kMaxWaitMs = 120'000;
  constexpr int64_t kMarginMs = 60'000;
  int64_t per_call = 0;
  int64_t wait = config->backoff_ms;
  for (int64_t attempt = 0; attempt <= config->retries; ++attempt) {
    per_call += config->timeout_ms;
    if (attempt < config->retries) {
      per_call += std::min(wait, kMaxWaitMs);
      wait = std::min(wait * 2, kMaxWaitMs);
    }
  }
  return std::max<int64_t>(1, calls) * per_call + kMarginMs;
}

Status RecordLlmCalls(storage::Store& store, int64_t job_id, int64_t kernel_job_id,
                      std::optional<int64_t> candidate_id,
                      capnp::List<msg::LlmCallRecord>::Reader calls) {
  for (msg::LlmCallRecord::Reader call : calls) {
    storage::NewLlmCall row;
    row.job_id = job_id;
    row.kernel_job_id = kernel_job_id;
    row.candidate_id = candidate_id;
    row.role = Text(call.getRole());
    row.model = Text(call.getModel());
    row.prompt_tokens = std::max<int64_t>(call.getPromptTokens(), 0);
    row.completion_tokens = std::max<int64_t>(call.getCompletionTokens(), 0);
    row.cost_usd = std::max(call.getCostUsd(), 0.0);
    row.latency_ms = std::max<int64_t>(call.getLatencyMs(), 0);
    row.ok = call.getOk();
    row.outcome = Text(call.getOutcome());
    row.error = Text(call.getError());
    KF_RETURN_IF_ERROR(store.llm_calls().Record(row).status());
  }
  return Status::Ok();
}

}  // namespace kfleet::coordinator
