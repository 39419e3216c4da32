// placeholder, being written
#include "agents/gemm_template.h"

namespace kfleet::agents {
std::unique_ptr<TemplateFamily> MakeGemmBlasTemplate() { return nullptr; }
std::unique_ptr<TemplateFamily> MakeGemmTiledTemplate() { return nullptr; }
}  // namespace kfleet::agents
