// `kfleet bench ...`: benchmarks of the parts of kfleet, printed as a table or JSON.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/dispatch_bench.h"
#include "cli/format.h"
#include "cli/output.h"
#include "storage/transition_bench.h"

namespace kfleet::cli {
namespace {

struct StoreBenchFlags {
  int64_t tasks = 2000;
  int64_t batch_size = 100;
  std::string dir;
  bool json = false;
};

nlohmann::json RateJson(const storage::TransitionRate& rate) {
  return {{"transitions", rate.transitions},
          {"transactions", rate.transactions},
          {"elapsed_us", rate.elapsed_us},
          {"transitions_per_s", rate.transitions_per_s}};
}

std::vector<std::string> RateRow(std::string synchronous, std::string batching,
                                 const storage::TransitionRate& rate) {
  char per_s[32];
  std::snprintf(per_s, sizeof(per_s), "%.0f", rate.transitions_per_s);
  return {std::move(synchronous), std::move(batching), std::to_string(rate.transitions),
          std::to_string(rate.transactions), std::to_string(rate.elapsed_us / 1000), per_s};
}

void RunStoreBench(const StoreBenchFlags& flags) {
  storage::TransitionBenchOptions options;
  options.tasks = flags.tasks;
  options.batch_size = flags.batch_size;
  options.state_dir = flags.dir;
  if (!flags.json) {
    std::cerr << "running " << flags.tasks << " tasks through queued -> leased -> done, four ways"
              << "...\n";
  }
  Result<storage::TransitionBenchReport> report = storage::RunTransitionBench(options);
  ExitOnError(report.status().WithContext("bench store"));
  if (flags.json) {
    nlohmann::json out = {{"tasks", report->tasks},
                          {"batch_size", report->batch_size},
                          {"full_unbatched", RateJson(report->full_unbatched)},
                          {"full_batched", RateJson(report->full_batched)},
                          {"normal_unbatched", RateJson(report->normal_unbatched)},
                          {"normal_batched", RateJson(report->normal_batched)}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  const std::string batched = std::to_string(report->batch_size) + " per transaction";
  std::cout << FormatTable({
      {"synchronous", "batching", "transitions", "transactions", "ms", "transitions/s"},
      RateRow("FULL", "1 per transaction", report->full_unbatched),
      RateRow("FULL", batched, report->full_batched),
      RateRow("NORMAL", "1 per transaction", report->normal_unbatched),
      RateRow("NORMAL", batched, report->normal_batched),
  });
}

struct DispatchBenchFlags {
  DispatchBenchOptions options;
  bool json = false;
};

std::string Milliseconds(int64_t us) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f ms", static_cast<double>(us) / 1000);
  return text;
}

void RunDispatchBenchCommand(const DispatchBenchFlags& flags) {
  const DispatchBenchOptions& options = flags.options;
  ExitOnError(CatchInterrupts());
  if (!flags.json) {
    std::cerr << "starting a coordinator (synchronous=FULL) and " << options.workers
              << " workers in this process, then running " << options.tasks << " echo tasks...\n";
  }
  Result<DispatchBenchReport> report = RunDispatchBench(options);
  if (!report.ok() && Interrupted()) {
    std::cerr << "kfleet: bench dispatch interrupted; everything it started has stopped\n";
    throw CLI::RuntimeError(kExitInterrupted);
  }
  ExitOnError(report.status().WithContext("bench dispatch"));
  const DispatchBenchReport& r = *report;
  if (flags.json) {
    nlohmann::json out = {{"workers", r.workers},
                          {"tasks", r.tasks},
                          {"slots_per_worker", r.slots},
                          {"delay_ms", r.delay_ms},
                          {"loop_threads", r.loop_threads},
                          {"synchronous", r.synchronous},
                          {"registration_us", r.registration_us},
                          {"job_us", r.job_us},
                          {"tasks_per_s", r.tasks_per_s},
                          {"assignment_latency_samples", r.assignment_latency.samples},
                          {"assignment_latency_p50_us", r.assignment_latency.p50_us},
                          {"assignment_latency_p99_us", r.assignment_latency.p99_us},
                          {"assignment_latency_max_us", r.assignment_latency.max_us},
                          {"tasks_done", r.done},
                          {"tasks_failed", r.failed},
                          {"retries", r.retries},
                          {"executions_ok", r.executions_ok},
                          {"distinct_tasks_ok", r.distinct_tasks_ok},
                          {"reconnects", r.reconnects},
                          {"coordinator_worker_messages", r.coordinator_worker_messages},
                          {"coordinator_client_messages", r.coordinator_client_messages},
                          {"coordinator_malformed_dropped", r.coordinator_malformed_dropped},
                          {"coordinator_send_failures", r.coordinator_send_failures},
                          {"coordinator_failed_batches", r.coordinator_failed_batches},
                          {"worker_send_failures", r.worker_send_failures}};
    std::cout << out.dump(2) << "\n";
    return;
  }
  char per_s[32];
  std::snprintf(per_s, sizeof(per_s), "%.0f", r.tasks_per_s);
  std::cout << r.workers << " workers x " << r.slots << " CPU slot" << (r.slots == 1 ? "" : "s")
            << " on " << r.loop_threads << " threads, " << r.tasks << " echo tasks of "
            << r.delay_ms << " ms; coordinator synchronous=FULL over loopback TCP\n";
  std::cout << FormatTable({
      {"measure", "value"},
      {"registration",
       FormatDuration(r.registration_us) + " for " + std::to_string(r.workers) + " workers"},
      {"job wall time", FormatDuration(r.job_us)},
      {"tasks/s", per_s},
      {"assignment latency p50", Milliseconds(r.assignment_latency.p50_us)},
      {"assignment latency p99", Milliseconds(r.assignment_latency.p99_us)},
      {"assignment latency max", Milliseconds(r.assignment_latency.max_us)},
      {"latency samples", std::to_string(r.assignment_latency.samples)},
      {"tasks done / failed", std::to_string(r.done) + " / " + std::to_string(r.failed)},
      {"retries", std::to_string(r.retries)},
      {"worker reconnects", std::to_string(r.reconnects)},
      {"coordinator messages", std::to_string(r.coordinator_worker_messages) + " from workers, " +
                                   std::to_string(r.coordinator_client_messages) + " from clients"},
      {"coordinator send failures", std::to_string(r.coordinator_send_failures)},
      {"coordinator failed batches", std::to_string(r.coordinator_failed_batches)},
      {"malformed dropped", std::to_string(r.coordinator_malformed_dropped)},
      {"worker send failures", std::to_string(r.worker_send_failures)},
  });
}

}  // namespace

void RegisterBenchCommands(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Measure parts of kfleet on this machine");
  bench->require_subcommand(1);

  auto flags = std::make_shared<StoreBenchFlags>();
  CLI::App* store = bench->add_subcommand(
      "store", "Durable task-state transitions per second in the SQLite store");
  store->add_option("--tasks", flags->tasks, "Tasks to push through queued -> leased -> done")
      ->check(CLI::Range(int64_t{1}, int64_t{10'000'000}));
  store->add_option("--batch", flags->batch_size, "Transitions per transaction when batched")
      ->check(CLI::Range(int64_t{1}, int64_t{100'000}));
  store->add_option("--dir", flags->dir, "Where to put the scratch databases (default: $TMPDIR)");
  store->add_flag("--json", flags->json, "Print JSON instead of a table");
  store->callback([flags] { RunStoreBench(*flags); });

  auto dispatch_flags = std::make_shared<DispatchBenchFlags>();
  DispatchBenchOptions& options = dispatch_flags->options;
  CLI::App* dispatch = bench->add_subcommand(
      "dispatch",
      "Tasks per second and assignment latency of a real coordinator (synchronous FULL) serving "
      "W in-process workers over loopback TCP");
  dispatch->add_option("--workers", options.workers, "Worker sessions to start")
      ->check(CLI::Range(int64_t{1}, int64_t{100'000}))
      ->capture_default_str();
  dispatch->add_option("--tasks", options.tasks, "Echo tasks in the job")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000}))
      ->capture_default_str();
  dispatch->add_option("--slots", options.slots, "CPU slots per worker")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}))
      ->capture_default_str();
  dispatch->add_option("--delay-ms", options.delay_ms, "Time each echo task sleeps")
      ->check(CLI::Range(int64_t{0}, int64_t{3'600'000}))
      ->capture_default_str();
  dispatch->add_flag("--json", dispatch_flags->json, "Print JSON instead of a table");
  dispatch->callback([dispatch_flags] { RunDispatchBenchCommand(*dispatch_flags); });

  RegisterBaselineBench(*bench);
}

}  // namespace kfleet::cli
