#include <algorithm>
#include <system_error>
#include <utility>

#include "common/log.h"
#include "worker/echo_task.h"
#include "worker/task_runner.h"

namespace kfleet::worker {

Result<std::unique_ptr<InProcessTaskPool>> InProcessTaskPool::Create(size_t threads) {
  std::unique_ptr<InProcessTaskPool> pool(new InProcessTaskPool());
  try {
    for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) {
      pool->threads_.emplace_back(&InProcessTaskPool::Serve, pool.get());
    }
  } catch (const std::system_error& e) {
    return ResourceExhausted(std::string("cannot start the in-process task threads: ") + e.what());
  }
  return pool;
}

InProcessTaskPool::~InProcessTaskPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void InProcessTaskPool::Schedule(std::chrono::steady_clock::time_point due,
                                 std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    heap_.push_back(Item{due, sequence_++, std::move(work)});
    std::push_heap(heap_.begin(), heap_.end(), Later());
  }
  changed_.notify_one();
}

void InProcessTaskPool::Serve() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (heap_.empty()) {
      changed_.wait(lock);
      continue;
    }
    if (std::chrono::steady_clock::now() < heap_.front().due) {
      // A newer, earlier item notifies changed_, so this wait never oversleeps it.
      changed_.wait_until(lock, heap_.front().due);
      continue;
    }
    std::pop_heap(heap_.begin(), heap_.end(), Later());
    std::function<void()> work = std::move(heap_.back().work);
    heap_.pop_back();
    lock.unlock();
    work();
    lock.lock();
  }
}

InProcessTaskExecutor::InProcessTaskExecutor(InProcessTaskPool& pool,
                                             std::shared_ptr<WakeupFd> wakeup, Clock& clock)
    : pool_(pool), clock_(clock), state_(std::make_shared<State>(std::move(wakeup))) {}

InProcessTaskExecutor::~InProcessTaskExecutor() { CancelAll(); }

Status InProcessTaskExecutor::Start(const AssignedTask& task) {
  if (!Runs(task.kind)) return UnknownKindError(task.kind);
  Result<EchoPayloadMessage> decoded = DecodeEchoPayload(task.payload);
  if (!decoded.ok()) return decoded.status();
  auto payload = std::make_shared<EchoPayloadMessage>(std::move(decoded).value());
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (!state_->pending.emplace(task.key, clock_.NowUs()).second) {
      return AlreadyExists("task " + std::to_string(task.key.task_id) + " attempt " +
                           std::to_string(task.key.attempt) + " is running already");
    }
  }
  const uint32_t delay_ms = payload->root().getDelayMs();
  const bool times_out = task.timeout_ms > 0 && delay_ms > task.timeout_ms;
  const auto wait = std::chrono::milliseconds(times_out ? task.timeout_ms : delay_ms);
  const TaskKey key = task.key;
  const uint32_t timeout_ms = task.timeout_ms;
  pool_.Schedule(std::chrono::steady_clock::now() + wait, [state = state_, payload, key, times_out,
                                                           timeout_ms, &clock = clock_] {
    FinishedTask finished;
    finished.key = key;
    if (times_out) {
      finished.outcome = msg::Outcome::TIMED_OUT;
      finished.error = "timed out after " + std::to_string(timeout_ms) + " ms";
    } else {
      Result<std::string> answer = AnswerEchoInProcess(payload->root(), key.task_id, key.attempt);
      if (answer.ok()) {
        finished.outcome = msg::Outcome::OK;
        finished.output = std::move(answer).value();
      } else {
        finished.outcome = msg::Outcome::FAILED;
        finished.error = answer.status().message();
      }
    }
    std::lock_guard<std::mutex> lock(state->mutex);
    auto it = state->pending.find(key);
    if (it == state->pending.end()) return;  // cancelled meanwhile, and reported as such
    finished.started_us = it->second;
    finished.finished_us = clock.NowUs();
    state->pending.erase(it);
    state->queue.Push(std::move(finished));
  });
  return Status::Ok();
}

void InProcessTaskExecutor::Cancel(const TaskKey& key) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto it = state_->pending.find(key);
  if (it == state_->pending.end()) return;
  FinishedTask finished;
  finished.key = key;
  finished.outcome = msg::Outcome::CANCELLED;
  finished.error = "cancelled";
  finished.started_us = it->second;
  finished.finished_us = clock_.NowUs();
  state_->pending.erase(it);
  state_->queue.Push(std::move(finished));
}

void InProcessTaskExecutor::CancelAll() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->pending.clear();
}

std::vector<FinishedTask> InProcessTaskExecutor::TakeFinished() { return state_->queue.TakeAll(); }

}  // namespace kfleet::worker
