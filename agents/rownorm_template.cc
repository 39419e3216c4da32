// placeholder, being written
#include "agents/rownorm_template.h"

namespace kfleet::agents {
std::unique_ptr<TemplateFamily> MakeRowNormTemplate() { return nullptr; }
}  // namespace kfleet::agents
