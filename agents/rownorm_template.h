// Row reductions and normalizations (softmax, LayerNorm, RMSNorm, ReduceMean / Sum / Max) with
// their prologue and epilogue fused, one-pass and two-pass.
#pragma once

#include <memory>

#include "agents/template_family.h"

namespace kfleet::agents {

std::unique_ptr<TemplateFamily> MakeRowNormTemplate();

}  // namespace kfleet::agents
