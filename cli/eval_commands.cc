// placeholder, being written
#include "cli/commands.h"

namespace kfleet::cli {

void RegisterEvalCommands(CLI::App&) {}

}  // namespace kfleet::cli
