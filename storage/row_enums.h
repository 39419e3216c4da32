// The closed sets of values the schema's CHECK constraints allow, as C++ enums, with the text
// stored for each. The order of kNames follows the enum; tests write every value through SQLite.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kfleet::storage {

enum class Backend { kCpu, kCuda, kHip };
enum class JobKind { kModel, kDiag };
enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled };
enum class KernelJobState { kPending, kSearching, kDone, kFailed };
enum class CandidateState { kProposed, kCoded, kCompiled, kPassed, kFailed, kProfiled };
enum class NodeState { kOnline, kDraining, kLost, kRemoved };
enum class TaskKind { kEcho, kPlan, kCode, kTest, kProfile };
enum class TaskState { kQueued, kLeased, kDone, kFailed, kCancelled };
enum class AttemptOutcome { kOk, kFailed, kCrashed, kTimedOut, kLost, kCancelled, kStale };

template <typename E>
struct ValueNames;

template <>
struct ValueNames<Backend> {
  static constexpr std::string_view kWhat = "backend";
  static constexpr std::array<std::string_view, 3> kNames = {"cpu", "cuda", "hip"};
};
template <>
struct ValueNames<JobKind> {
  static constexpr std::string_view kWhat = "job kind";
  static constexpr std::array<std::string_view, 2> kNames = {"model", "diag"};
};
template <>
struct ValueNames<JobState> {
  static constexpr std::string_view kWhat = "job state";
  static constexpr std::array<std::string_view, 5> kNames = {"queued", "running", "done", "failed",
                                                             "cancelled"};
};
template <>
struct ValueNames<KernelJobState> {
  static constexpr std::string_view kWhat = "kernel job state";
  static constexpr std::array<std::string_view, 4> kNames = {"pending", "searching", "done",
                                                             "failed"};
};
template <>
struct ValueNames<CandidateState> {
  static constexpr std::string_view kWhat = "candidate state";
  static constexpr std::array<std::string_view, 6> kNames = {"proposed", "coded",  "compiled",
                                                             "passed",   "failed", "profiled"};
};
template <>
struct ValueNames<NodeState> {
  static constexpr std::string_view kWhat = "node state";
  static constexpr std::array<std::string_view, 4> kNames = {"online", "draining", "lost",
                                                             "removed"};
};
template <>
struct ValueNames<TaskKind> {
  static constexpr std::string_view kWhat = "task kind";
  static constexpr std::array<std::string_view, 5> kNames = {"echo", "plan", "code", "test",
                                                             "profile"};
};
template <>
struct ValueNames<TaskState> {
  static constexpr std::string_view kWhat = "task state";
  static constexpr std::array<std::string_view, 5> kNames = {"queued", "leased", "done", "failed",
                                                             "cancelled"};
};
template <>
struct ValueNames<AttemptOutcome> {
  static constexpr std::string_view kWhat = "attempt outcome";
  static constexpr std::array<std::string_view, 7> kNames = {
      "ok", "failed", "crashed", "timed_out", "lost", "cancelled", "stale"};
};

// The stored text of `value`: Name(TaskState::kLeased) == "leased".
template <typename E>
constexpr std::string_view Name(E value) {
  return ValueNames<E>::kNames[static_cast<size_t>(value)];
}

// The enum value for stored or user-given text; InvalidArgument lists the allowed values.
template <typename E>
Result<E> Parse(std::string_view text) {
  const auto& names = ValueNames<E>::kNames;
  std::string allowed;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == text) return static_cast<E>(i);
    allowed += (i == 0 ? "" : ", ");
    allowed += names[i];
  }
  return InvalidArgument(std::string(ValueNames<E>::kWhat) + " '" + std::string(text) +
                         "' is not one of " + allowed);
}

}  // namespace kfleet::storage
