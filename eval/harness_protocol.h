// How kfleet-harness talks to the process that started it: the report as JSON on stdout, progress
// lines on stderr, and exit codes for the ways a kernel can take the process down with it.
#pragma once

#include <string_view>

namespace kfleet::eval {

// stderr lines starting with these say where the harness is, so a crash can be placed.
inline constexpr std::string_view kStageLine = "@stage ";  // "@stage smoke"
inline constexpr std::string_view kTrialLine = "@trial ";  // "@trial seed 1002, uniform"
// One kernel call ran past --call-timeout-ms.
inline constexpr std::string_view kHungLine = "@hung ";
// An allocation failed (the address-space limit).
inline constexpr std::string_view kOutOfMemoryLine = "@oom ";

inline constexpr int kHarnessPassedExitCode = 0;
inline constexpr int kHarnessFailedExitCode = 1;  // the report says which stage failed
inline constexpr int kHarnessUsageExitCode = 2;   // bad arguments or an unreadable spec
// kSandboxViolationExitCode (eval/sandbox.h) is 86.
inline constexpr int kHarnessHungExitCode = 87;
inline constexpr int kHarnessOutOfMemoryExitCode = 88;

}  // namespace kfleet::eval
