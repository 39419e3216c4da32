// The coordinator's durable state: one SQLite database (STATE_DIR/kfleet.db, migrated on open)
// plus the content-addressed blob files (STATE_DIR/blobs/), behind one typed repository per
// table. Like Database, a Store is used from one thread at a time.
#pragma once

#include <filesystem>
#include <memory>
#include <utility>

#include "common/clock.h"
#include "common/status.h"
#include "storage/blob_store.h"
#include "storage/candidate_repo.h"
#include "storage/db.h"
#include "storage/event_repo.h"
#include "storage/job_repo.h"
#include "storage/kernel_job_repo.h"
#include "storage/llm_call_repo.h"
#include "storage/model_repo.h"
#include "storage/node_repo.h"
#include "storage/task_repo.h"

namespace kfleet::storage {

struct StoreOptions {
  DatabaseOptions database;
};

class Store {
 public:
  // Creates `state_dir` (mode 0700) and its blobs/ directory if missing, opens the database and
  // brings its schema to the latest version.
  [[nodiscard]] static Result<std::unique_ptr<Store>> Open(const std::filesystem::path& state_dir,
                                                           const StoreOptions& options = {},
                                                           Clock& clock = SystemClock());

  // Runs `fn` inside one BEGIN IMMEDIATE transaction so a burst of state changes commits (and
  // fsyncs) once; an error from `fn` rolls all of them back.
  template <typename Fn>
  [[nodiscard]] Status Batch(Fn&& fn) {
    return db_->InTransaction(std::forward<Fn>(fn));
  }

  Database& db() { return *db_; }
  BlobStore& blobs() { return blobs_; }
  ModelRepo& models() { return models_; }
  JobRepo& jobs() { return jobs_; }
  KernelJobRepo& kernel_jobs() { return kernel_jobs_; }
  CandidateRepo& candidates() { return candidates_; }
  NodeRepo& nodes() { return nodes_; }
  TaskRepo& tasks() { return tasks_; }
  EventRepo& events() { return events_; }
  LlmCallRepo& llm_calls() { return llm_calls_; }
  const std::filesystem::path& state_dir() const { return state_dir_; }

 private:
  Store(std::filesystem::path state_dir, std::unique_ptr<Database> db, Clock& clock);

  std::filesystem::path state_dir_;
  std::unique_ptr<Database> db_;
  BlobStore blobs_;
  ModelRepo models_;
  JobRepo jobs_;
  KernelJobRepo kernel_jobs_;
  CandidateRepo candidates_;
  NodeRepo nodes_;
  TaskRepo tasks_;
  EventRepo events_;
  LlmCallRepo llm_calls_;
};

}  // namespace kfleet::storage
