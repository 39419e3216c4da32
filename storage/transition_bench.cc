#include "storage/transition_bench.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "storage/store.h"

namespace kfleet::storage {
namespace {

// One run in a fresh database: enqueue `tasks` (untimed), then time lease + complete of each,
// committing every `per_txn` transitions.
Result<TransitionRate> TimeTransitions(const std::filesystem::path& dir, SyncMode sync,
                                       int64_t tasks, int64_t per_txn) {
  StoreOptions options;
  options.database.synchronous = sync;
  KF_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(dir, options));
  NewJob job;
  job.kind = JobKind::kDiag;
  job.name = "bench store";
  KF_ASSIGN_OR_RETURN(int64_t job_id, store->jobs().Create(job));
  NodeRegistration node;
  node.name = "bench-node";
  KF_ASSIGN_OR_RETURN(int64_t node_id, store->nodes().Upsert(node));
  NewTask task;
  task.job_id = job_id;
  task.kind = TaskKind::kEcho;
  std::vector<NewTask> new_tasks(static_cast<size_t>(tasks), task);
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> ids, store->tasks().EnqueueMany(new_tasks));

  Clock& clock = SystemClock();
  const int64_t deadline_us = clock.NowUs() + 3'600'000'000;
  // Transition i is the lease (even i) or the completion (odd i) of task ids[i / 2].
  auto transition = [&](int64_t i) -> Status {
    int64_t task_id = ids[static_cast<size_t>(i / 2)];
    if (i % 2 == 0) {
      KF_ASSIGN_OR_RETURN(std::optional<uint32_t> attempt,
                          store->tasks().Lease(task_id, node_id, deadline_us));
      if (attempt != 1u) {
        return Internal("bench: lease of task " + std::to_string(task_id) + " did not apply");
      }
      return Status::Ok();
    }
    KF_ASSIGN_OR_RETURN(bool done, store->tasks().Complete(task_id, 1, "ok"));
    if (!done) {
      return Internal("bench: completion of task " + std::to_string(task_id) + " did not apply");
    }
    return Status::Ok();
  };

  TransitionRate rate;
  rate.transitions = 2 * tasks;
  const int64_t start_us = clock.MonotonicUs();
  for (int64_t first = 0; first < rate.transitions; first += per_txn) {
    const int64_t end = std::min(first + per_txn, rate.transitions);
    if (per_txn == 1) {
      KF_RETURN_IF_ERROR(transition(first));  // the repository's own transaction
    } else {
      Status batch = store->Batch([&]() -> Status {
        for (int64_t i = first; i < end; ++i) KF_RETURN_IF_ERROR(transition(i));
        return Status::Ok();
      });
      KF_RETURN_IF_ERROR(batch);
    }
    ++rate.transactions;
  }
  rate.elapsed_us = std::max<int64_t>(clock.MonotonicUs() - start_us, 1);
  rate.transitions_per_s =
      static_cast<double>(rate.transitions) * 1e6 / static_cast<double>(rate.elapsed_us);

  KF_ASSIGN_OR_RETURN(TaskCounts counts, store->tasks().CountsByState(job_id));
  if (counts.done != tasks) {
    return Internal("bench: " + std::to_string(counts.done) + " of " + std::to_string(tasks) +
                    " tasks done after the run");
  }
  return rate;
}

}  // namespace

Result<TransitionBenchReport> RunTransitionBench(const TransitionBenchOptions& options) {
  if (options.tasks < 1) {
    return InvalidArgument("bench store: tasks must be >= 1, got " + std::to_string(options.tasks));
  }
  if (options.batch_size < 1) {
    return InvalidArgument("bench store: batch size must be >= 1, got " +
                           std::to_string(options.batch_size));
  }
  KF_ASSIGN_OR_RETURN(TempDir scratch, TempDir::Create("kfleet-bench-store", options.state_dir));
  TransitionBenchReport report;
  report.tasks = options.tasks;
  report.batch_size = options.batch_size;
  report.scratch_dir = scratch.path();
  struct Run {
    const char* name;
    SyncMode sync;
    int64_t per_txn;
    TransitionRate* out;
  };
  const Run runs[] = {
      {"full-unbatched", SyncMode::kFull, 1, &report.full_unbatched},
      {"full-batched", SyncMode::kFull, options.batch_size, &report.full_batched},
      {"normal-unbatched", SyncMode::kNormal, 1, &report.normal_unbatched},
      {"normal-batched", SyncMode::kNormal, options.batch_size, &report.normal_batched},
  };
  for (const Run& run : runs) {
    Result<TransitionRate> rate =
        TimeTransitions(scratch.path() / run.name, run.sync, options.tasks, run.per_txn);
    if (!rate.ok()) return rate.status().WithContext(std::string("bench store ") + run.name);
    *run.out = *rate;
  }
  return report;
}

}  // namespace kfleet::storage
