// The conductor runs model jobs through their phases: profiling (the baseline of the whole model
// on a worker) -> searching (an island search per kernel job: plan -> code -> test -> profile
// tasks) -> verifying (the model with the winners swapped in, on a worker) -> finished. Every
// decision is taken from the store inside the coordinator's batch, so a killed coordinator
// resumes where it was: nothing of the search lives only in memory.
//
// Per kernel job, a round is one plan task per island; the next round starts when the kernel
// job has no open task. The search of a kernel job stops when it reaches a share of its
// speed-of-light floor, when it made no gain above noise for some rounds, when its task-time
// budget (the job's budget split by expected saving) is spent, when the job's wall-clock budget
// has passed, or when its parameter space is exhausted.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/job_report.h"
#include "coordinator/llm_search.h"
#include "coordinator/scheduler.h"
#include "storage/store.h"

namespace kfleet::coordinator {

struct ConductorOptions {
  int islands = 2;
  int per_island = 4;      // proposals per island per round
  int migrate_every = 2;   // rounds between migrations of elites
  int plateau_rounds = 3;  // rounds without a gain above noise before a job stops
  double noise = 0.03;     // a gain below 3% is noise
  double stop_sol_fraction = 0.9;
  int max_candidates = 64;    // per kernel job
  double min_speedup = 1.02;  // a winner must beat the baseline by this to be swapped in
  int default_top = 5;        // kernel jobs searched when the submission says 0
  int64_t default_budget_ms = 600'000;
  int model_reps = 5;  // baseline profile and end-to-end timing runs
  uint64_t seed = 1;
  int64_t max_attempts = 2;
  int64_t timer_interval_ms = 1000;
  // The LLM agent (llm_search.h).
  int llm_per_island = 1;    // Designer sketches per island per round
  int llm_max_attempts = 4;  // candidates per failed lineage: the first and three fixes
  int llm_examples = 2;      // working kernels shown to the Coder
};

struct ModelSubmission {
  std::string name;
  std::string file_name;
  std::string bytes;  // ONNX
  storage::Backend target = storage::Backend::kCpu;
  std::string dtype;      // "fp32", "fp16", "bf16": the precision it runs in; empty = as exported
  int64_t budget_ms = 0;  // 0: default
  int64_t top = 0;        // 0: default
  double priority = 0;
  std::string agent;      // "template" (or empty), "llm", "hybrid"
  std::string llm_json;   // agents::LlmConfig as JSON; required for llm and hybrid
  double budget_usd = 0;  // the most the LLM may cost; 0: no limit
};

// One file of an export.
struct ExportedFile {
  std::string path;
  std::string data;
};

class Conductor final : public TaskEndObserver {
 public:
  Conductor(storage::Store& store, Scheduler& scheduler, Clock& clock,
            const ConductorOptions& options);

  // Checks the model imports, stores it, creates the job and its baseline profile task.
  [[nodiscard]] Result<int64_t> SubmitModel(const ModelSubmission& submission);
  // Scheduler: a task finished for good (done, or failed after its retries).
  void TaskEnded(int64_t task_id, int64_t job_id) override;
  // Applies the ended tasks and the timers; runs inside the turn's batch.
  [[nodiscard]] Status Advance();
  // After a start: every unfinished model job is looked at again on the next Advance.
  [[nodiscard]] Status Recover();
  // After a rolled-back batch: forgets what memory holds and reloads it from the store.
  [[nodiscard]] Status Resync();
  // Cancelled by an operator: forget it.
  void JobCancelled(int64_t job_id);

  [[nodiscard]] Result<JobReport> BuildReport(int64_t job_id);
  // report.md, the SVG plots, the winners' sources, the combined library and its header.
  [[nodiscard]] Result<std::vector<ExportedFile>> Export(int64_t job_id);

 private:
  Status OnModelProfiled(const storage::JobRow& job, const storage::TaskRow& task);
  Status OnPlanned(const storage::TaskRow& task);
  Status OnCoded(const storage::TaskRow& task);
  Status OnTested(const storage::TaskRow& task);
  Status OnCandidateProfiled(const storage::TaskRow& task);
  Status OnVerified(const storage::JobRow& job, const storage::TaskRow& task);
  // Starts the next round of a kernel job with no open task, or stops its search.
  Status NextRound(int64_t kernel_job_id);
  Status StopKernelJob(const storage::KernelJobRow& kernel_job, const std::string& note);
  // When no kernel job of the job is searching any more: verification, or the end.
  Status MaybeFinishSearch(int64_t job_id);
  Status FailJob(int64_t job_id, const std::string& error);
  Status FinishJob(int64_t job_id);
  Status CandidateFailed(int64_t candidate_id, std::string_view stage, std::string_view error,
                         std::string_view report = {});
  struct PlanTask {
    int island = 0;
    int64_t round = 0;
    bool migrate = false;
    bool llm = false;
    int count = 0;
    std::string advice;       // llm: the Conductor's, for a redesign
    int64_t redesign_of = 0;  // llm: the failed candidate
  };
  // `agent`: the job's (JobAgentOf its options), parsed once by the caller.
  Status EnqueuePlan(const storage::JobRow& job, const JobAgent& agent,
                     const storage::KernelJobRow& kernel_job,
                     const std::vector<storage::CandidateRow>& candidates, const PlanTask& plan);
  Status EnqueueLlmCode(const storage::JobRow& job, const JobAgent& agent,
                        const storage::KernelJobRow& kernel_job, int64_t candidate_id,
                        const std::string& sketch, const std::string& previous_source,
                        const std::string& feedback);
  // The Conductor role: a failed LLM candidate goes back to the Coder or the Designer.
  Status RouteLlmFailure(const storage::CandidateRow& failed, std::string_view stage,
                         std::string_view reason, std::string_view report);
  Status Enqueue(const storage::JobRow& job, storage::TaskKind kind,
                 std::optional<int64_t> kernel_job_id, std::optional<int64_t> candidate_id,
                 std::string payload, double priority_bonus, int64_t timeout_ms,
                 bool exclusive = false);
  Status Event(int64_t job_id, std::string_view kind, const std::string& data_json);
  Result<std::string> ModelBytes(const storage::JobRow& job);

  storage::Store& store_;
  Scheduler& scheduler_;
  Clock& clock_;
  ConductorOptions options_;
  std::vector<int64_t> ended_;             // task ids, in the order they ended
  std::set<int64_t> active_jobs_;          // unfinished model jobs
  std::set<int64_t> touched_kernel_jobs_;  // may need their next round
  std::set<int64_t> touched_jobs_;         // may have finished searching
  int64_t next_timer_us_ = 0;              // monotonic
};

}  // namespace kfleet::coordinator
