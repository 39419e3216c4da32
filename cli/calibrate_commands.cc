#include "cli/commands.h"

namespace kfleet::cli {

void RegisterCalibrateCommands(CLI::App& app) { (void)app; }

}  // namespace kfleet::cli
