// Each command group registers its subcommands on the root app.
#pragma once

#include <CLI/CLI.hpp>

namespace kfleet::cli {

void RegisterBenchCommands(CLI::App& app);

}  // namespace kfleet::cli
