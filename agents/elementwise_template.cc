#include "agents/elementwise_template.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "agents/elementwise_codegen.h"

namespace kfleet::agents {
namespace {

class ElementwiseTemplate : public TemplateFamily {
 public:
  std::string_view name() const override { return "elementwise"; }

  Status Supports(const SpecView& spec) const override {
    if (spec.graph == nullptr) return InvalidArgument("the spec has no graph");
    if (!IsChainFamily(spec.family)) {
      return InvalidArgument(fmt::format("family '{}' is not an elementwise chain", spec.family));
    }
    return AnalyzeElementwiseChain(*spec.graph).status();
  }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    std::vector<ParamSpace> space = {{"threads", {"all", "1"}},
                                     {"chunk", {"16384", "4096", "65536"}}};
    Result<ElementwiseTraits> traits = AnalyzeElementwiseChain(*spec.graph);
    if (traits.ok() && traits->transcendental) space.push_back({"math", {"poly", "libm"}});
    space.push_back({"unroll", {"1", "4"}});
    return space;
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(Supports(spec));
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(ElementwiseTraits traits, AnalyzeElementwiseChain(*spec.graph));
    ElementwiseOptions options;
    options.multithreaded = params.at("threads") == "all";
    options.chunk_elements = std::stoll(params.at("chunk"));
    options.poly_math = !traits.transcendental || params.at("math") == "poly";
    options.unroll = std::stoi(params.at("unroll"));
    RenderedKernel kernel;
    KF_ASSIGN_OR_RETURN(kernel.source, RenderElementwiseChain(*spec.graph, options));
    kernel.explanation = fmt::format(
        "{} ops fused into one pass over the output ({}), {} in tasks of {} elements, inner loop "
        "unrolled x{}{}.",
        traits.ops,
        traits.strided ? "rows with per-operand broadcast strides" : "contiguous, vectorized",
        options.multithreaded ? "all threads" : "one thread", options.chunk_elements,
        options.unroll,
        traits.transcendental
            ? (options.poly_math ? ", polynomial exp/tanh/erf" : ", libm exp/tanh/erf")
            : "");
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeElementwiseTemplate() {
  return std::make_unique<ElementwiseTemplate>();
}

}  // namespace kfleet::agents
