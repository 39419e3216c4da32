// kfleet: the command-line interface.
#include <CLI/CLI.hpp>

#include <cstdlib>

#include "cli/commands.h"
#include "common/log.h"

int main(int argc, char** argv) {
  // Commands print their own results; library events matter only when something goes wrong.
  if (std::getenv("KFLEET_LOG_LEVEL") == nullptr) kfleet::log::SetLevel(kfleet::log::Level::kWarn);

  CLI::App app{"kfleet: generate faster kernels for whole models on a fleet of GPU and CPU nodes"};
  app.set_version_flag("--version", std::string("kfleet ") + KFLEET_VERSION);
  app.require_subcommand(1);
  // Global flags such as --coordinator may also follow the subcommand.
  app.fallthrough();
  auto client_flags = kfleet::cli::AddClientFlags(app);
  kfleet::cli::RegisterNodeCommands(app, client_flags);
  kfleet::cli::RegisterJobCommands(app, client_flags);
  kfleet::cli::RegisterDiagCommands(app, client_flags);
  kfleet::cli::RegisterSearchCommands(app, client_flags);
  kfleet::cli::RegisterPlanCommands(app);
  kfleet::cli::RegisterCalibrateCommands(app);
  kfleet::cli::RegisterProfileCommands(app);
  kfleet::cli::RegisterEvalCommands(app);
  kfleet::cli::RegisterBenchCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a command failed and has said why
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; usage errors exit 2 like other Unix tools.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
