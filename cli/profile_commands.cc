// placeholder, being written
#include "cli/commands.h"

namespace kfleet::cli {

void RegisterProfileCommands(CLI::App&) {}

}  // namespace kfleet::cli
