// placeholder, being written
#include "agents/elementwise_template.h"

namespace kfleet::agents {
std::unique_ptr<TemplateFamily> MakeElementwiseTemplate() { return nullptr; }
}  // namespace kfleet::agents
