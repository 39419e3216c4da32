#include "storage/task_repo.h"

namespace kfleet::storage {
namespace {

constexpr std::string_view kSelectTask = R"sql(
  SELECT id, job_id, kernel_job_id, candidate_id, kind, state, priority, backend, arch,
         exclusive_device, min_memory_bytes, payload, timeout_ms, attempt, max_attempts, node_id,
         lease_deadline_us, result, error, created_us, updated_us, finished_us
  FROM tasks
)sql";

Result<TaskRow> ReadTask(const Statement& stmt) {
  TaskRow row;
  row.id = stmt.ColumnInt64(0);
  row.job_id = stmt.ColumnInt64(1);
  row.kernel_job_id = stmt.ColumnOptionalInt64(2);
  row.candidate_id = stmt.ColumnOptionalInt64(3);
  KF_ASSIGN_OR_RETURN(row.kind, Parse<TaskKind>(stmt.ColumnText(4)));
  KF_ASSIGN_OR_RETURN(row.state, Parse<TaskState>(stmt.ColumnText(5)));
  row.priority = stmt.ColumnDouble(6);
  if (!stmt.IsNull(7)) {
    KF_ASSIGN_OR_RETURN(row.backend, Parse<Backend>(stmt.ColumnText(7)));
  }
  row.arch = stmt.ColumnText(8);
  row.exclusive_device = stmt.ColumnInt64(9) != 0;
  row.min_memory_bytes = stmt.ColumnInt64(10);
  row.payload = stmt.ColumnBlob(11);
  row.timeout_ms = stmt.ColumnInt64(12);
  row.attempt = static_cast<uint32_t>(stmt.ColumnInt64(13));
  row.max_attempts = stmt.ColumnInt64(14);
  row.node_id = stmt.ColumnOptionalInt64(15);
  row.lease_deadline_us = stmt.ColumnOptionalInt64(16);
  row.result = stmt.ColumnBlob(17);
  row.error = stmt.ColumnText(18);
  row.created_us = stmt.ColumnInt64(19);
  row.updated_us = stmt.ColumnInt64(20);
  row.finished_us = stmt.ColumnOptionalInt64(21);
  return row;
}

Result<TaskAttemptRow> ReadAttempt(const Statement& stmt) {
  TaskAttemptRow row;
  row.task_id = stmt.ColumnInt64(0);
  row.attempt = static_cast<uint32_t>(stmt.ColumnInt64(1));
  row.node_id = stmt.ColumnInt64(2);
  row.started_us = stmt.ColumnInt64(3);
  row.ended_us = stmt.ColumnOptionalInt64(4);
  if (!stmt.IsNull(5)) {
    KF_ASSIGN_OR_RETURN(row.outcome, Parse<AttemptOutcome>(stmt.ColumnText(5)));
  }
  row.reason = stmt.ColumnText(6);
  return row;
}

constexpr std::string_view kSelectAttempts = R"sql(
  SELECT task_id, attempt, node_id, started_us, ended_us, outcome, reason
  FROM task_attempts WHERE task_id = ?1 ORDER BY attempt
)sql";

Result<LeasedTask> ReadLease(const Statement& stmt) {
  LeasedTask lease;
  lease.task_id = stmt.ColumnInt64(0);
  lease.attempt = static_cast<uint32_t>(stmt.ColumnInt64(1));
  lease.node_id = stmt.ColumnInt64(2);
  lease.lease_deadline_us = stmt.ColumnInt64(3);
  return lease;
}

std::string TaskName(int64_t task_id, uint32_t attempt) {
  return "task " + std::to_string(task_id) + " attempt " + std::to_string(attempt);
}

// Closes an attempt row; the task's own conditional UPDATE has already decided it applies.
Status CloseAttempt(Database& db, int64_t task_id, uint32_t attempt, int64_t now_us,
                    AttemptOutcome outcome, std::string_view reason) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(R"sql(
    UPDATE task_attempts SET ended_us = ?3, outcome = ?4, reason = ?5
    WHERE task_id = ?1 AND attempt = ?2 AND outcome IS NULL
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(task_id, attempt, now_us, Name(outcome), reason));
  KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
  if (changed != 1) {
    return Internal(TaskName(task_id, attempt) + ": the lease was held but no open attempt row");
  }
  return Status::Ok();
}

// "attempt 1 on node 3 (crashed): SIGSEGV; attempt 2 on node 5 (timed_out): ..."
Result<std::string> JoinedReasons(Database& db, int64_t task_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(kSelectAttempts));
  KF_RETURN_IF_ERROR(stmt.BindAll(task_id));
  KF_ASSIGN_OR_RETURN(std::vector<TaskAttemptRow> attempts, ReadAllRows(stmt, ReadAttempt));
  std::string joined;
  for (const TaskAttemptRow& a : attempts) {
    if (!joined.empty()) joined += "; ";
    joined += "attempt " + std::to_string(a.attempt) + " on node " + std::to_string(a.node_id) +
              " (" + std::string(a.outcome ? Name(*a.outcome) : "running") + "): " + a.reason;
  }
  return joined;
}

}  // namespace

Result<int64_t> TaskRepo::Enqueue(const NewTask& t) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    INSERT INTO tasks (job_id, kernel_job_id, candidate_id, kind, priority, backend, arch,
                       exclusive_device, min_memory_bytes, payload, timeout_ms, max_attempts,
                       created_us, updated_us)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
    RETURNING id
  )sql"));
  std::optional<std::string_view> backend;
  if (t.backend.has_value()) backend = Name(*t.backend);
  KF_RETURN_IF_ERROR(stmt.BindAll(t.job_id, t.kernel_job_id, t.candidate_id, Name(t.kind),
                                  t.priority, backend, t.arch, t.exclusive_device,
                                  t.min_memory_bytes, Blob{t.payload}, t.timeout_ms, t.max_attempts,
                                  clock_.NowUs()));
  Result<std::optional<int64_t>> id = stmt.RunReturningInt64();
  if (!id.ok()) {
    return id.status().WithContext("job " + std::to_string(t.job_id) + ": enqueue " +
                                   std::string(Name(t.kind)) + " task");
  }
  if (!id->has_value()) return Internal("insert task returned no id");
  return **id;
}

Result<std::vector<int64_t>> TaskRepo::EnqueueMany(const std::vector<NewTask>& tasks) {
  std::vector<int64_t> ids;
  ids.reserve(tasks.size());
  KF_RETURN_IF_ERROR(db_.InTransaction([&]() -> Status {
    for (const NewTask& task : tasks) {
      KF_ASSIGN_OR_RETURN(int64_t id, Enqueue(task));
      ids.push_back(id);
    }
    return Status::Ok();
  }));
  return ids;
}

Result<std::vector<TaskRow>> TaskRepo::NextQueued(int limit) {
  static const std::string sql =
      std::string(kSelectTask) + " WHERE state = 'queued' ORDER BY priority DESC, id LIMIT ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(limit));
  return ReadAllRows(stmt, ReadTask);
}

Result<std::vector<TaskRow>> TaskRepo::OldestQueued(int limit) {
  static const std::string sql =
      std::string(kSelectTask) + " WHERE state = 'queued' ORDER BY id LIMIT ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(limit));
  return ReadAllRows(stmt, ReadTask);
}

Result<std::optional<uint32_t>> TaskRepo::Lease(int64_t task_id, int64_t node_id,
                                                int64_t lease_deadline_us) {
  std::optional<uint32_t> attempt;
  const int64_t now_us = clock_.NowUs();
  Status status = db_.InTransaction([&]() -> Status {
    KF_ASSIGN_OR_RETURN(Statement lease, db_.Prepare(R"sql(
      UPDATE tasks
      SET state = 'leased', attempt = attempt + 1, node_id = ?2, lease_deadline_us = ?3,
          updated_us = ?4
      WHERE id = ?1 AND state = 'queued'
      RETURNING attempt
    )sql"));
    KF_RETURN_IF_ERROR(lease.BindAll(task_id, node_id, lease_deadline_us, now_us));
    KF_ASSIGN_OR_RETURN(std::optional<int64_t> leased_attempt, lease.RunReturningInt64());
    if (!leased_attempt.has_value()) return Status::Ok();
    attempt = static_cast<uint32_t>(*leased_attempt);

    KF_ASSIGN_OR_RETURN(Statement record, db_.Prepare(R"sql(
      INSERT INTO task_attempts (task_id, attempt, node_id, started_us) VALUES (?1, ?2, ?3, ?4)
    )sql"));
    KF_RETURN_IF_ERROR(record.BindAll(task_id, *attempt, node_id, now_us));
    return record.Run().status();
  });
  if (!status.ok()) {
    return status.WithContext("lease task " + std::to_string(task_id) + " to node " +
                              std::to_string(node_id));
  }
  return attempt;
}

Result<int64_t> TaskRepo::ExtendLeases(int64_t node_id, int64_t new_deadline_us) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE tasks SET lease_deadline_us = max(lease_deadline_us, ?2), updated_us = ?3
    WHERE node_id = ?1 AND state = 'leased'
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(node_id, new_deadline_us, clock_.NowUs()));
  return stmt.Run();
}

Result<bool> TaskRepo::Complete(int64_t task_id, uint32_t attempt, std::string_view result) {
  bool applied = false;
  const int64_t now_us = clock_.NowUs();
  Status status = db_.InTransaction([&]() -> Status {
    KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
      UPDATE tasks
      SET state = 'done', result = ?3, lease_deadline_us = NULL, finished_us = ?4, updated_us = ?4
      WHERE id = ?1 AND state = 'leased' AND attempt = ?2
    )sql"));
    KF_RETURN_IF_ERROR(stmt.BindAll(task_id, attempt, Blob{result}, now_us));
    KF_ASSIGN_OR_RETURN(int64_t changed, stmt.Run());
    applied = changed == 1;
    if (!applied) return Status::Ok();
    return CloseAttempt(db_, task_id, attempt, now_us, AttemptOutcome::kOk, "");
  });
  KF_RETURN_IF_ERROR(status.WithContext("complete " + TaskName(task_id, attempt)));
  return applied;
}

Result<std::optional<TaskState>> TaskRepo::Fail(int64_t task_id, uint32_t attempt,
                                                AttemptOutcome outcome, std::string_view reason) {
  if (outcome == AttemptOutcome::kOk) {
    return InvalidArgument("fail " + TaskName(task_id, attempt) +
                           ": outcome 'ok' is not a failure");
  }
  std::optional<TaskState> new_state;
  const int64_t now_us = clock_.NowUs();
  Status status = db_.InTransaction([&]() -> Status {
    KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
      UPDATE tasks
      SET state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
          node_id = CASE WHEN attempt < max_attempts THEN NULL ELSE node_id END,
          lease_deadline_us = NULL,
          finished_us = CASE WHEN attempt < max_attempts THEN NULL ELSE ?3 END,
          updated_us = ?3
      WHERE id = ?1 AND state = 'leased' AND attempt = ?2
      RETURNING state
    )sql"));
    KF_RETURN_IF_ERROR(stmt.BindAll(task_id, attempt, now_us));
    KF_ASSIGN_OR_RETURN(std::optional<std::string> state, stmt.RunReturningText());
    if (!state.has_value()) return Status::Ok();
    KF_ASSIGN_OR_RETURN(new_state, Parse<TaskState>(*state));
    KF_RETURN_IF_ERROR(CloseAttempt(db_, task_id, attempt, now_us, outcome, reason));
    if (*new_state != TaskState::kFailed) return Status::Ok();

    KF_ASSIGN_OR_RETURN(std::string error, JoinedReasons(db_, task_id));
    KF_ASSIGN_OR_RETURN(Statement set_error, db_.Prepare(R"sql(
      UPDATE tasks SET error = ?2 WHERE id = ?1
    )sql"));
    KF_RETURN_IF_ERROR(set_error.BindAll(task_id, error));
    return set_error.Run().status();
  });
  KF_RETURN_IF_ERROR(status.WithContext("fail " + TaskName(task_id, attempt)));
  return new_state;
}

Result<std::vector<LeasedTask>> TaskRepo::ExpiredLeases(int64_t now_us) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT id, attempt, node_id, lease_deadline_us FROM tasks
    WHERE state = 'leased' AND lease_deadline_us < ?1
    ORDER BY lease_deadline_us, id
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(now_us));
  return ReadAllRows(stmt, ReadLease);
}

Result<std::vector<TaskTransition>> TaskRepo::RequeueNode(int64_t node_id, AttemptOutcome outcome,
                                                          std::string_view reason) {
  std::vector<TaskTransition> transitions;
  Status status = db_.InTransaction([&]() -> Status {
    std::vector<LeasedTask> leases;
    {
      KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
        SELECT id, attempt, node_id, lease_deadline_us FROM tasks
        WHERE node_id = ?1 AND state = 'leased'
        ORDER BY id
      )sql"));
      KF_RETURN_IF_ERROR(stmt.BindAll(node_id));
      KF_ASSIGN_OR_RETURN(leases, ReadAllRows(stmt, ReadLease));
    }
    for (const LeasedTask& lease : leases) {
      KF_ASSIGN_OR_RETURN(std::optional<TaskState> state,
                          Fail(lease.task_id, lease.attempt, outcome, reason));
      if (state.has_value()) transitions.push_back({lease.task_id, lease.attempt, *state});
    }
    return Status::Ok();
  });
  KF_RETURN_IF_ERROR(status.WithContext("requeue the tasks of node " + std::to_string(node_id)));
  return transitions;
}

Result<int64_t> TaskRepo::Cancel(int64_t job_id) {
  int64_t cancelled = 0;
  const int64_t now_us = clock_.NowUs();
  Status status = db_.InTransaction([&]() -> Status {
    KF_ASSIGN_OR_RETURN(Statement close, db_.Prepare(R"sql(
      UPDATE task_attempts SET ended_us = ?2, outcome = 'cancelled', reason = 'job cancelled'
      WHERE outcome IS NULL
        AND task_id IN (SELECT id FROM tasks WHERE job_id = ?1 AND state = 'leased')
    )sql"));
    KF_RETURN_IF_ERROR(close.BindAll(job_id, now_us));
    KF_RETURN_IF_ERROR(close.Run().status());

    KF_ASSIGN_OR_RETURN(Statement cancel, db_.Prepare(R"sql(
      UPDATE tasks
      SET state = 'cancelled', lease_deadline_us = NULL, finished_us = ?2, updated_us = ?2
      WHERE job_id = ?1 AND state IN ('queued', 'leased')
    )sql"));
    KF_RETURN_IF_ERROR(cancel.BindAll(job_id, now_us));
    KF_ASSIGN_OR_RETURN(cancelled, cancel.Run());
    return Status::Ok();
  });
  KF_RETURN_IF_ERROR(status.WithContext("cancel the tasks of job " + std::to_string(job_id)));
  return cancelled;
}

Result<TaskRow> TaskRepo::Get(int64_t task_id) {
  static const std::string sql = std::string(kSelectTask) + " WHERE id = ?1";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(task_id));
  return ReadOneRow(stmt, ReadTask, "no task " + std::to_string(task_id));
}

Result<std::vector<TaskRow>> TaskRepo::ListByJob(int64_t job_id) {
  static const std::string sql = std::string(kSelectTask) + " WHERE job_id = ?1 ORDER BY id";
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(sql));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  return ReadAllRows(stmt, ReadTask);
}

Result<TaskCounts> TaskRepo::CountsByState(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT state, count(*) FROM tasks WHERE job_id = ?1 GROUP BY state
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  TaskCounts counts;
  while (true) {
    KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return counts;
    KF_ASSIGN_OR_RETURN(TaskState state, Parse<TaskState>(stmt.ColumnText(0)));
    int64_t n = stmt.ColumnInt64(1);
    switch (state) {
      case TaskState::kQueued:
        counts.queued = n;
        break;
      case TaskState::kLeased:
        counts.leased = n;
        break;
      case TaskState::kDone:
        counts.done = n;
        break;
      case TaskState::kFailed:
        counts.failed = n;
        break;
      case TaskState::kCancelled:
        counts.cancelled = n;
        break;
    }
  }
}

Result<bool> TaskRepo::HasOpenTasks(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT 1 FROM tasks WHERE job_id = ?1 AND state IN ('queued', 'leased') LIMIT 1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  return stmt.Step();
}

Result<bool> TaskRepo::HasOpenKernelJobTasks(int64_t kernel_job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT 1 FROM tasks WHERE kernel_job_id = ?1 AND state IN ('queued', 'leased') LIMIT 1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(kernel_job_id));
  return stmt.Step();
}

Result<int64_t> TaskRepo::CancelQueuedOfKernelJob(int64_t kernel_job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    UPDATE tasks SET state = 'cancelled', updated_us = ?2, finished_us = ?2,
                     error = 'the search time of its job ran out'
    WHERE kernel_job_id = ?1 AND state = 'queued'
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(kernel_job_id, clock_.NowUs()));
  return stmt.Run();
}

Result<int64_t> TaskRepo::KernelJobAttemptMicros(int64_t kernel_job_id, int64_t now_us) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT coalesce(sum(max(coalesce(a.ended_us, ?2) - a.started_us, 0)), 0)
    FROM task_attempts a JOIN tasks t ON t.id = a.task_id
    WHERE t.kernel_job_id = ?1
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(kernel_job_id, now_us));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return int64_t{0};
  return stmt.ColumnInt64(0);
}

Result<int64_t> TaskRepo::RetryCount(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(R"sql(
    SELECT count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id
    WHERE t.job_id = ?1 AND a.attempt < t.attempt
  )sql"));
  KF_RETURN_IF_ERROR(stmt.BindAll(job_id));
  KF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  return row ? stmt.ColumnInt64(0) : 0;
}

Result<std::vector<TaskAttemptRow>> TaskRepo::Attempts(int64_t task_id) {
  KF_ASSIGN_OR_RETURN(Statement stmt, db_.Prepare(kSelectAttempts));
  KF_RETURN_IF_ERROR(stmt.BindAll(task_id));
  return ReadAllRows(stmt, ReadAttempt);
}

}  // namespace kfleet::storage
