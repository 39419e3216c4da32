// The `echo` task: a diagnostic and benchmark workload with no dependencies. It sleeps delayMs,
// then, by a draw that depends only on (seed, task id, attempt), fails, crashes, hangs or answers
// the lowercase hex SHA-256 of its data. A retry (next attempt) draws again, so a task with
// failRate 0.5 usually succeeds within a few attempts, the same way on every run.
#pragma once

#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "messages/protocol.capnp.h"

namespace kfleet::worker {

// What the draw decided. The rates are cumulative bands of [0, 1): u < fail -> kFail,
// u < fail + crash -> kCrash, u < fail + crash + hang -> kHang, else kAnswer.
enum class EchoAction { kAnswer, kFail, kCrash, kHang };

struct EchoDraw {
  double u = 0;  // uniform in [0, 1)
  EchoAction action = EchoAction::kAnswer;
};

// Deterministic: splitmix64 over (seed, task_id, attempt).
EchoDraw DrawEcho(const msg::EchoPayload::Reader& payload, uint64_t task_id, uint32_t attempt);

// For the child process (`kfleet-worker run-task`): sleeps delayMs, then returns the answer or the
// failure's error, raises SIGSEGV (crash) or sleeps until killed (hang). Crash and hang never
// return, so call this only in a process that exists to run the task.
Result<std::string> RunEcho(const msg::EchoPayload::Reader& payload, uint64_t task_id,
                            uint32_t attempt);

// For InProcessTaskExecutor: does not sleep (the executor schedules delayMs on a timer) and turns
// crash and hang into errors, since neither may happen inside a process that serves other tasks.
Result<std::string> AnswerEchoInProcess(const msg::EchoPayload::Reader& payload, uint64_t task_id,
                                        uint32_t attempt);

// The input of an echo task, for those who build one (coordinator, `kfleet bench dispatch`).
struct EchoSpec {
  uint32_t delay_ms = 0;
  float fail_rate = 0;
  float crash_rate = 0;
  float hang_rate = 0;
  uint64_t seed = 0;
  std::string data;
};

// Assign.payload of an echo task: one unpacked (flat-array) Cap'n Proto EchoPayload message.
std::string BuildEchoPayload(const EchoSpec& spec);

// A validated EchoPayload decoded from Assign.payload bytes. Owns its (aligned) copy.
class EchoPayloadMessage {
 public:
  msg::EchoPayload::Reader root() const;

 private:
  friend Result<EchoPayloadMessage> DecodeEchoPayload(std::string_view bytes);
  EchoPayloadMessage() = default;

  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;  // reads words_
};

// Corruption (never an exception) when `bytes` is not a whole, valid EchoPayload message.
Result<EchoPayloadMessage> DecodeEchoPayload(std::string_view bytes);

}  // namespace kfleet::worker
