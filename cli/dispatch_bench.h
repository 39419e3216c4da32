// `kfleet bench dispatch`: a real coordinator (synchronous FULL, TCP on loopback) and W real worker
// sessions in one process run one echo job, measuring how fast the coordinator hands out work:
// registration time, tasks/s, and how long a worker waits between finishing a task and its next.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace kfleet::cli {

struct DispatchBenchOptions {
  int64_t workers = 10;
  int64_t tasks = 1000;
  int64_t slots = 1;     // CPU slots per worker
  int64_t delay_ms = 0;  // how long each echo task sleeps
  // Parent of the scratch state directory; empty: $TMPDIR, else /tmp.
  std::filesystem::path scratch_parent;
};

struct LatencySummary {
  int64_t samples = 0;
  int64_t p50_us = 0;
  int64_t p99_us = 0;
  int64_t max_us = 0;
};

struct DispatchBenchReport {
  int64_t workers = 0;
  int64_t tasks = 0;
  int64_t slots = 0;
  int64_t delay_ms = 0;
  int64_t loop_threads = 0;           // threads driving the worker sessions
  std::string synchronous;            // the coordinator's SQLite setting: "FULL"
  std::filesystem::path scratch_dir;  // removed before the report is returned

  int64_t registration_us = 0;  // workers started until the coordinator counted all of them
  int64_t job_us = 0;           // job created until job done, by the coordinator's clock
  double tasks_per_s = 0;
  // Per worker, from handing a finished task's result to the session to the Start of its next
  // task: the coordinator's round trip (receive, commit, assign, send). With several slots each
  // Start pairs with the oldest finish not yet followed by one.
  LatencySummary assignment_latency;

  // The job as the coordinator reports it.
  uint32_t done = 0;
  uint32_t failed = 0;
  uint32_t retries = 0;
  // What the workers ran: successful executions and distinct tasks among them.
  int64_t executions_ok = 0;
  int64_t distinct_tasks_ok = 0;
  int64_t reconnects = 0;  // registrations beyond one per worker: a worker was lost

  uint64_t coordinator_worker_messages = 0;
  uint64_t coordinator_client_messages = 0;
  uint64_t coordinator_malformed_dropped = 0;
  uint64_t coordinator_send_failures = 0;
  uint64_t coordinator_failed_batches = 0;
  uint64_t worker_send_failures = 0;  // summed over the sessions
};

// Runs the benchmark and tears everything down, also on error. Fails when a task is missing,
// failed, or ran twice without the coordinator having retried it. Ctrl-C (cli::Interrupted) ends
// it with Cancelled.
[[nodiscard]] Result<DispatchBenchReport> RunDispatchBench(const DispatchBenchOptions& options);

// p50 / p99 by nearest rank, and the maximum.
LatencySummary SummarizeLatencies(std::vector<int64_t> samples_us);

}  // namespace kfleet::cli
