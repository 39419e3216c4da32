// Fused elementwise chains of any length with broadcasting, in one pass.
#pragma once

#include <memory>

#include "agents/template_family.h"

namespace kfleet::agents {

std::unique_ptr<TemplateFamily> MakeElementwiseTemplate();

}  // namespace kfleet::agents
