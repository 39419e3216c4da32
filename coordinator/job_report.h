// What `kfleet export` writes for a model job: report.md (ranked table, winning parameters as the
// explanation, projected vs measured end-to-end speedup), and two SVG plots (speedup per kernel;
// search progress over time). Pure functions of a JobReport the API service fills from the store,
// so they are tested without a coordinator.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kfleet::coordinator {

// The best speedup of one kernel job known `t_s` seconds after the search began.
struct ProgressPoint {
  double t_s = 0;
  double best_speedup = 1;
};

struct ReportKernel {
  int64_t rank = 0;           // 1 = largest expected saving
  std::string name;           // "gemm+gelu_tanh 128x768x3072 f32"
  std::string family;         // planner family ("gemm+gelu_tanh")
  std::string template_name;  // winning template ("gemm_blas"); empty when none won
  std::string agent;          // who wrote the winner: "template", "llm:<model>"
  int64_t count = 1;          // occurrences in the model
  double share = 0;           // of the baseline model time, 0..1
  double baseline_us = 0;     // one occurrence
  double best_us = 0;         // one occurrence, best candidate; 0 when none
  double speedup = 0;         // baseline / best as profiled; 0 when none
  double sol_us = 0;          // speed-of-light floor of one occurrence
  int64_t candidates = 0;     // tried (proposed, whatever became of them)
  int64_t failed = 0;         // of those, rejected by compile or a test stage
  int64_t spent_ms = 0;       // task time spent so far
  std::string state;          // "searching", "done", "failed"
  std::string note;           // why it stopped ("reached 92% of speed-of-light", "plateau", ...)
  std::map<std::string, std::string> params;  // of the winner
  std::string explanation;                    // of the winner, from its template
  std::string source_path;  // where the export puts the winner's source ("kernels/03-....cpp")
  bool verified = false;    // kept by the end-to-end check
  std::string verify_note;  // why the end-to-end check dropped it
  std::vector<ProgressPoint> progress;
};

struct JobReport {
  int64_t job_id = 0;
  std::string name;
  std::string target;  // "cpu"
  std::string device;  // "cpu: AMD EPYC 7B13, 2 cores"
  std::string state;   // "done", ...
  std::string phase;   // "verifying", ...
  std::string error;
  double budget_s = 0;
  double elapsed_s = 0;
  double baseline_model_ms = 0;  // measured, whole model
  double projected_speedup = 1;  // Amdahl with each kernel's profiled speedup
  double measured_speedup = 0;   // end-to-end check; 0 when it has not run
  double swapped_model_ms = 0;
  std::string verify_note;         // "outputs match (max error 2.1e-5)", or why the check failed
  std::string agent = "template";  // "template", "llm", "hybrid"
  std::string llm_model;           // the LLM agent's model
  int64_t llm_calls = 0;
  int64_t llm_failed_calls = 0;
  int64_t llm_prompt_tokens = 0;
  int64_t llm_completion_tokens = 0;
  double llm_cost_usd = 0;
  double llm_budget_usd = 0;          // 0: no limit
  std::vector<ReportKernel> kernels;  // by rank
};

std::string RenderReportMarkdown(const JobReport& report);
// Horizontal bars, one per kernel job with a winner, log-scaled when speedups span > 10x.
std::string RenderSpeedupSvg(const JobReport& report);
// One step line per kernel job: best speedup against search time.
std::string RenderProgressSvg(const JobReport& report);

}  // namespace kfleet::coordinator
