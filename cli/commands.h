// Each command group registers its subcommands on the root app.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>

#include "cli/client.h"

namespace kfleet::cli {

// --coordinator, --credentials, --cli-config and --timeout-ms on the root app; the commands that
// talk to kfleetd read them when they run.
std::shared_ptr<const ClientFlags> AddClientFlags(CLI::App& app);
// A client for the coordinator the flags resolve to; a bad setting ends the command.
Client ConnectOrExit(const ClientFlags& flags);

void RegisterBenchCommands(CLI::App& app);
// `kfleet bench baseline` (baseline_bench_commands.cc), under `bench`.
void RegisterBaselineBench(CLI::App& bench);
// kfleet nodes [invite|drain|remove|revoke NAME]
void RegisterNodeCommands(CLI::App& app, std::shared_ptr<const ClientFlags> flags);
// kfleet status | show JOB | cancel JOB | watch JOB
void RegisterJobCommands(CLI::App& app, std::shared_ptr<const ClientFlags> flags);
// kfleet diag echo
void RegisterDiagCommands(CLI::App& app, std::shared_ptr<const ClientFlags> flags);

// kfleet submit MODEL | export JOB DIR (a running coordinator) and kfleet run MODEL (embedded)
void RegisterSearchCommands(CLI::App& app, std::shared_ptr<const ClientFlags> flags);
// kfleet plan MODEL (no daemon needed)
void RegisterPlanCommands(CLI::App& app);
// kfleet calibrate cpu
void RegisterCalibrateCommands(CLI::App& app);
// kfleet profile MODEL (no daemon needed)
void RegisterProfileCommands(CLI::App& app);
// kfleet eval --spec SPEC --source KERNEL (no daemon needed)
void RegisterEvalCommands(CLI::App& app);

}  // namespace kfleet::cli
