// Printing for the CLI: plain tables for people, JSON for scripts, errors on stderr.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace kfleet::cli {

// Left-aligned columns separated by two spaces; the first row is the header.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// Exit codes: 0 ok, 1 failure, 2 bad input, 3 coordinator unreachable or timed out.
int ExitCodeFor(const Status& status);
// A command the user stopped with Ctrl-C ends quietly with the shell's code for SIGINT.
inline constexpr int kExitInterrupted = 130;

// For command callbacks: when `status` is an error, prints "kfleet: <message>" on stderr and ends
// the command with ExitCodeFor(status) (thrown as CLI::RuntimeError, which main turns into the
// process exit code without printing anything more).
void ExitOnError(const Status& status);

}  // namespace kfleet::cli
