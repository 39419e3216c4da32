// The static check every agent-written source passes before it is compiled: a kernel computes its
// outputs from its inputs, so a source that calls into kfleet or loads other code (the reference,
// the harness's expected outputs), reads or writes files, spawns processes, opens sockets, or
// reads clocks and sleeps (gaming the timing) is rejected, each finding with its line. The
// sandbox stops much of this at run time as well; the check says why early and in words.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kfleet::agents {

struct SourceFinding {
  int line = 0;          // 1-based
  std::string category;  // "processes", "sockets", "timing", "files", "reference"
  std::string what;      // the offending call or header
};

// Findings in `source`, comments and string literals aside (an #include's header name counts).
std::vector<SourceFinding> ScanSource(std::string_view source);

// Ok, or InvalidArgument listing the findings ("line 12: spawns processes: popen").
Status CheckAgentSource(std::string_view source);

}  // namespace kfleet::agents
