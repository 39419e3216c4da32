#include "agents/template_family.h"

#include <fmt/format.h>

#include <algorithm>

#include "agents/conv_template.h"
#include "agents/cuda_templates.h"
#include "agents/elementwise_template.h"
#include "agents/gemm_template.h"
#include "agents/rownorm_template.h"
#include "planner/partition.h"

namespace kfleet::agents {

Result<SpecView> AnalyzeSpec(const planner::Graph& spec) {
  KF_ASSIGN_OR_RETURN(std::vector<planner::FusionGroup> groups, planner::PartitionGraph(spec));
  std::vector<const planner::FusionGroup*> kernels;
  for (const planner::FusionGroup& g : groups) {
    if (!g.free) kernels.push_back(&g);
  }
  if (kernels.size() != 1) {
    return InvalidArgument(
        fmt::format("a kernel spec must be one fusion group; this one partitions into {} kernels",
                    kernels.size()));
  }
  if (kernels[0]->opaque) {
    return InvalidArgument("the spec holds an op kfleet does not support");
  }
  SpecView view;
  view.graph = &spec;
  view.family = kernels[0]->family;
  view.anchor = kernels[0]->anchor;
  return view;
}

Params DefaultParams(const std::vector<ParamSpace>& space) {
  Params params;
  for (const ParamSpace& p : space) {
    if (!p.values.empty()) params[p.name] = p.values.front();
  }
  return params;
}

Status CheckParams(const std::vector<ParamSpace>& space, const Params& params) {
  for (const ParamSpace& p : space) {
    auto it = params.find(p.name);
    if (it == params.end())
      return InvalidArgument(fmt::format("parameter '{}' is missing", p.name));
    if (std::find(p.values.begin(), p.values.end(), it->second) == p.values.end()) {
      return InvalidArgument(fmt::format("parameter '{}' cannot be '{}' (one of: {})", p.name,
                                         it->second, fmt::join(p.values, ", ")));
    }
  }
  for (const auto& [name, value] : params) {
    const bool known = std::any_of(space.begin(), space.end(),
                                   [&](const ParamSpace& p) { return p.name == name; });
    if (!known) return InvalidArgument(fmt::format("unknown parameter '{}'", name));
  }
  return Status::Ok();
}

std::vector<std::unique_ptr<TemplateFamily>> CpuTemplateFamilies() {
  std::vector<std::unique_ptr<TemplateFamily>> families;
  families.push_back(MakeElementwiseTemplate());
  families.push_back(MakeRowNormTemplate());
  families.push_back(MakeGemmBlasTemplate());
  families.push_back(MakeGemmTiledTemplate());
  families.push_back(MakeConvIm2colTemplate());
  families.push_back(MakeConvDirectTemplate());
  return families;
}

std::vector<std::unique_ptr<TemplateFamily>> CudaTemplateFamilies() {
  std::vector<std::unique_ptr<TemplateFamily>> families;
  families.push_back(MakeCudaElementwiseTemplate());
  families.push_back(MakeCudaRowNormTemplate());
  families.push_back(MakeCudaGemmLtTemplate());
  families.push_back(MakeCudaConvDnnTemplate());
  families.push_back(MakeCudaAttentionTemplate());
  return families;
}

Result<std::vector<std::unique_ptr<TemplateFamily>>> TemplateFamiliesFor(std::string_view backend) {
  if (backend.empty() || backend == "cpu") return CpuTemplateFamilies();
  if (backend == "cuda") return CudaTemplateFamilies();
  return InvalidArgument(fmt::format("no template families for backend '{}' (cpu, cuda)", backend));
}

}  // namespace kfleet::agents
