// `kfleet bench store`: how many durable task-state transitions per second the store sustains,
// one transaction per transition versus many per transaction, at synchronous FULL and NORMAL.
#pragma once

#include <cstdint>
#include <filesystem>

#include "common/status.h"

namespace kfleet::storage {

struct TransitionBenchOptions {
  int64_t tasks = 2000;             // each goes queued -> leased -> done: two transitions
  int64_t batch_size = 100;         // transitions per transaction in the batched runs
  std::filesystem::path state_dir;  // parent of the scratch databases; empty: $TMPDIR or /tmp
};

struct TransitionRate {
  int64_t transitions = 0;
  int64_t transactions = 0;
  int64_t elapsed_us = 0;
  double transitions_per_s = 0;
};

struct TransitionBenchReport {
  int64_t tasks = 0;
  int64_t batch_size = 0;
  std::filesystem::path scratch_dir;  // where the runs happened; removed before returning
  TransitionRate full_unbatched;
  TransitionRate full_batched;
  TransitionRate normal_unbatched;
  TransitionRate normal_batched;
};

[[nodiscard]] Result<TransitionBenchReport> RunTransitionBench(
    const TransitionBenchOptions& options = {});

}  // namespace kfleet::storage
