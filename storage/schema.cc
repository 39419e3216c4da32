// The SQL of every schema version. Conventions: INTEGER PRIMARY KEY ids, *_us columns are Unix
// microseconds, state columns carry CHECK constraints matching row_enums.h, JSON columns are
// checked with json_valid, and every foreign key has an index so cascades do not scan.
#include <array>

#include "storage/migrations.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSchemaV1 = R"sql(
-- Content-addressed files: bytes live in blobs/<first 2 hex>/<hash>, written before the row.
CREATE TABLE blobs (
  hash        TEXT PRIMARY KEY CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
  size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
  created_us  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE models (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  blob_hash   TEXT NOT NULL REFERENCES blobs(hash),
  format      TEXT NOT NULL CHECK (format IN ('onnx')),
  size_bytes  INTEGER NOT NULL CHECK (size_bytes >= 0),
  created_us  INTEGER NOT NULL
);
CREATE INDEX models_by_blob ON models(blob_hash);

CREATE TABLE jobs (
  id           INTEGER PRIMARY KEY,
  kind         TEXT NOT NULL CHECK (kind IN ('model', 'diag')),
  name         TEXT NOT NULL,
  model_id     INTEGER REFERENCES models(id),
  target       TEXT NOT NULL CHECK (target IN ('cpu', 'cuda', 'hip')),
  state        TEXT NOT NULL DEFAULT 'queued'
               CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
  priority     REAL NOT NULL DEFAULT 0,
  budget_ms    INTEGER NOT NULL DEFAULT 0 CHECK (budget_ms >= 0),  -- 0: no budget
  options      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
  error        TEXT NOT NULL DEFAULT '',
  created_us   INTEGER NOT NULL,
  updated_us   INTEGER NOT NULL,
  finished_us  INTEGER,
  CHECK ((finished_us IS NOT NULL) = (state IN ('done', 'failed', 'cancelled')))
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_model ON jobs(model_id);

CREATE TABLE kernel_jobs (
  id                  INTEGER PRIMARY KEY,
  job_id              INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  name                TEXT NOT NULL,
  spec_hash           TEXT NOT NULL,
  spec                BLOB NOT NULL,
  count               INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
  baseline_us         REAL NOT NULL CHECK (baseline_us >= 0),
  sol_us              REAL NOT NULL CHECK (sol_us >= 0),
  expected_saving_us  REAL NOT NULL,
  rank                INTEGER NOT NULL,
  state               TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'searching', 'done', 'failed')),
  best_candidate_id   INTEGER REFERENCES candidates(id) ON DELETE SET NULL,
  UNIQUE (job_id, spec_hash)
);
CREATE INDEX kernel_jobs_by_rank ON kernel_jobs(job_id, rank);
CREATE INDEX kernel_jobs_by_best ON kernel_jobs(best_candidate_id);

CREATE TABLE candidates (
  id              INTEGER PRIMARY KEY,
  kernel_job_id   INTEGER NOT NULL REFERENCES kernel_jobs(id) ON DELETE CASCADE,
  island          INTEGER NOT NULL,
  parents         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(parents)),
  agent           TEXT NOT NULL,
  plan            TEXT NOT NULL DEFAULT '',
  params          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params)),
  source_hash     TEXT REFERENCES blobs(hash),
  state           TEXT NOT NULL DEFAULT 'proposed'
                  CHECK (state IN ('proposed', 'coded', 'compiled', 'passed', 'failed',
                                   'profiled')),
  test_report     BLOB,
  profile_report  BLOB,
  median_us       REAL,
  speedup         REAL,
  created_us      INTEGER NOT NULL,
  updated_us      INTEGER NOT NULL
);
-- Serves "candidates of a kernel job", "... in a state" and "fastest profiled first".
CREATE INDEX candidates_by_kernel_job ON candidates(kernel_job_id, state, speedup DESC);
CREATE INDEX candidates_by_source ON candidates(source_hash);

CREATE TABLE nodes (
  id                 INTEGER PRIMARY KEY,
  name               TEXT NOT NULL UNIQUE,
  state              TEXT NOT NULL DEFAULT 'online'
                     CHECK (state IN ('online', 'draining', 'lost', 'removed')),
  public_key         TEXT NOT NULL DEFAULT '',
  hostname           TEXT NOT NULL DEFAULT '',
  capabilities       BLOB NOT NULL DEFAULT x'',  -- a Cap'n Proto Capabilities message
  registered_us      INTEGER NOT NULL,
  last_heartbeat_us  INTEGER NOT NULL
);

CREATE TABLE devices (
  id             INTEGER PRIMARY KEY,
  node_id        INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  idx            INTEGER NOT NULL CHECK (idx >= 0),
  backend        TEXT NOT NULL CHECK (backend IN ('cpu', 'cuda', 'hip')),
  name           TEXT NOT NULL,
  arch           TEXT NOT NULL,
  memory_bytes   INTEGER NOT NULL CHECK (memory_bytes >= 0),
  compute_units  INTEGER NOT NULL CHECK (compute_units >= 0),
  UNIQUE (node_id, backend, idx)
);

-- Nodes are never deleted while tasks name them (no cascade); they move to 'removed'.
CREATE TABLE tasks (
  id                 INTEGER PRIMARY KEY,
  job_id             INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  kernel_job_id      INTEGER REFERENCES kernel_jobs(id) ON DELETE CASCADE,
  candidate_id       INTEGER REFERENCES candidates(id) ON DELETE CASCADE,
  kind               TEXT NOT NULL CHECK (kind IN ('echo', 'plan', 'code', 'test', 'profile')),
  state              TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'leased', 'done', 'failed', 'cancelled')),
  priority           REAL NOT NULL DEFAULT 0,
  backend            TEXT CHECK (backend IN ('cpu', 'cuda', 'hip')),  -- NULL: any
  arch               TEXT NOT NULL DEFAULT '',                        -- '': any
  exclusive_device   INTEGER NOT NULL DEFAULT 0 CHECK (exclusive_device IN (0, 1)),
  min_memory_bytes   INTEGER NOT NULL DEFAULT 0 CHECK (min_memory_bytes >= 0),
  payload            BLOB NOT NULL DEFAULT x'',
  timeout_ms         INTEGER NOT NULL CHECK (timeout_ms > 0),
  attempt            INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts       INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  node_id            INTEGER REFERENCES nodes(id),
  lease_deadline_us  INTEGER,
  result             BLOB,
  error              TEXT NOT NULL DEFAULT '',
  created_us         INTEGER NOT NULL,
  updated_us         INTEGER NOT NULL,
  finished_us        INTEGER,
  CHECK (attempt <= max_attempts),
  CHECK (state <> 'leased' OR (node_id IS NOT NULL AND lease_deadline_us IS NOT NULL)),
  CHECK (state = 'leased' OR lease_deadline_us IS NULL),
  CHECK ((finished_us IS NOT NULL) = (state IN ('done', 'failed', 'cancelled')))
);
-- The scheduler's queue: highest priority first, FIFO (id) within a priority.
CREATE INDEX tasks_queue ON tasks(priority DESC, id) WHERE state = 'queued';
CREATE INDEX tasks_by_node ON tasks(node_id, state);
CREATE INDEX tasks_lease_deadline ON tasks(lease_deadline_us) WHERE state = 'leased';
CREATE INDEX tasks_by_job ON tasks(job_id, state);
CREATE INDEX tasks_by_kernel_job ON tasks(kernel_job_id);
CREATE INDEX tasks_by_candidate ON tasks(candidate_id);

CREATE TABLE task_attempts (
  task_id     INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt     INTEGER NOT NULL CHECK (attempt >= 1),
  node_id     INTEGER NOT NULL REFERENCES nodes(id),
  started_us  INTEGER NOT NULL,
  ended_us    INTEGER,
  outcome     TEXT CHECK (outcome IN ('ok', 'failed', 'crashed', 'timed_out', 'lost',
                                      'cancelled', 'stale')),  -- NULL while running
  reason      TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (task_id, attempt),
  CHECK ((outcome IS NULL) = (ended_us IS NULL))
) WITHOUT ROWID;
CREATE INDEX task_attempts_by_node ON task_attempts(node_id);

-- The audit log. Append-only: no foreign key (events outlive the jobs they describe) and
-- triggers refuse UPDATE and DELETE. AUTOINCREMENT keeps ids increasing for ListAfter cursors.
CREATE TABLE events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id  INTEGER,
  ts_us   INTEGER NOT NULL,
  kind    TEXT NOT NULL,
  data    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data))
);
CREATE INDEX events_by_job ON events(job_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only');
END;

-- Spend records outlive deleted jobs (SET NULL) so cost totals stay true.
CREATE TABLE llm_calls (
  id                 INTEGER PRIMARY KEY,
  job_id             INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
  kernel_job_id      INTEGER REFERENCES kernel_jobs(id) ON DELETE SET NULL,
  role               TEXT NOT NULL,
  model              TEXT NOT NULL,
  prompt_tokens      INTEGER NOT NULL CHECK (prompt_tokens >= 0),
  completion_tokens  INTEGER NOT NULL CHECK (completion_tokens >= 0),
  cost_usd           REAL NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
  latency_ms         INTEGER NOT NULL CHECK (latency_ms >= 0),
  ok                 INTEGER NOT NULL CHECK (ok IN (0, 1)),
  error              TEXT NOT NULL DEFAULT '',
  ts_us              INTEGER NOT NULL
);
CREATE INDEX llm_calls_by_job ON llm_calls(job_id, ts_us);
CREATE INDEX llm_calls_by_kernel_job ON llm_calls(kernel_job_id);
)sql";

// The scheduler ages queued tasks so no job starves behind higher priorities; it reads the oldest
// queued tasks, which without this index means scanning every finished task before them.
constexpr std::string_view kSchemaV2 = R"sql(
CREATE INDEX tasks_queue_age ON tasks(id) WHERE state = 'queued';
)sql";

// The kernel search keeps all of its state here, so a restarted coordinator resumes it: the phase
// of a model job and its results, each kernel job's family, budget and why it stopped, and each
// candidate's round, template and failure.
constexpr std::string_view kSchemaV3 = R"sql(
ALTER TABLE jobs ADD COLUMN phase TEXT NOT NULL DEFAULT ''
  CHECK (phase IN ('', 'importing', 'profiling', 'searching', 'verifying', 'finished'));
ALTER TABLE jobs ADD COLUMN summary TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(summary));
ALTER TABLE kernel_jobs ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE kernel_jobs ADD COLUMN share REAL NOT NULL DEFAULT 0;
ALTER TABLE kernel_jobs ADD COLUMN budget_ms INTEGER NOT NULL DEFAULT 0 CHECK (budget_ms >= 0);
ALTER TABLE kernel_jobs ADD COLUMN note TEXT NOT NULL DEFAULT '';
ALTER TABLE kernel_jobs ADD COLUMN rounds INTEGER NOT NULL DEFAULT 0 CHECK (rounds >= 0);
ALTER TABLE candidates ADD COLUMN round INTEGER NOT NULL DEFAULT 0 CHECK (round >= 0);
ALTER TABLE candidates ADD COLUMN template TEXT NOT NULL DEFAULT '';
ALTER TABLE candidates ADD COLUMN failed_stage TEXT NOT NULL DEFAULT '';
ALTER TABLE candidates ADD COLUMN error TEXT NOT NULL DEFAULT '';
)sql";

// The LLM agent records which candidate a call was for and how it ended in a word ("ok",
// "no_code", "truncated", "http_429", ...) beside the error text.
constexpr std::string_view kSchemaV4 = R"sql(
ALTER TABLE llm_calls ADD COLUMN candidate_id INTEGER REFERENCES candidates(id) ON DELETE SET NULL;
ALTER TABLE llm_calls ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
)sql";

constexpr std::array<Migration, 4> kMigrations = {{
    {1, "initial schema", kSchemaV1},
    {2, "index of queued tasks by age", kSchemaV2},
    {3, "kernel search state", kSchemaV3},
    {4, "llm calls by candidate, with their outcome", kSchemaV4},
}};

}  // namespace

std::span<const Migration> SchemaMigrations() { return kMigrations; }

}  // namespace kfleet::storage
