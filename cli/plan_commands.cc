#include "cli/commands.h"

namespace kfleet::cli {

void RegisterPlanCommands(CLI::App& app) { (void)app; }

}  // namespace kfleet::cli
