// `kfleet bench ...`: benchmarks of the parts of kfleet, printed as a table or JSON.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
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
}

}  // namespace kfleet::cli
