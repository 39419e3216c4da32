// The template agent's building block: a parameterized C++ kernel template for one family of
// kernel specs (fused elementwise chains, row normalizations, GEMM with epilogue, ...). The search
// picks a family and parameter values (`plan`), the family renders them into a single source file
// under the kernel ABI (`code`), and the harness judges it. Deterministic and offline.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::agents {

// A kernel spec as the templates see it: the imported standalone graph plus what the planner's
// partitioner says about it.
struct SpecView {
  const planner::Graph* graph = nullptr;  // spec inputs are graph.inputs (in0, in1, ...)
  std::string family;                     // "gemm+gelu_tanh", "layernorm", "elementwise", ...
  int anchor = -1;                        // node index of the anchor op, -1 for chains
};

// Partitions the spec graph (it must form one group) and fills a SpecView.
Result<SpecView> AnalyzeSpec(const planner::Graph& spec);

// One tunable parameter and the values the search may give it, most promising first.
struct ParamSpace {
  std::string name;
  std::vector<std::string> values;
};
using Params = std::map<std::string, std::string>;

struct RenderedKernel {
  std::string source;       // one C++17 file implementing kf_kernel_run (include "kfleet/kernel.h")
  std::string explanation;  // one or two lines: the strategy and the parameters, for people
};

class TemplateFamily {
 public:
  virtual ~TemplateFamily() = default;
  // Stable id stored with candidates: "elementwise", "rownorm", "gemm_blas", "gemm_tiled", ...
  virtual std::string_view name() const = 0;
  // Ok when this template can implement the spec; otherwise why not, for people.
  virtual Status Supports(const SpecView& spec) const = 0;
  // The parameter space for this spec (may depend on its shapes and dtypes).
  virtual std::vector<ParamSpace> Space(const SpecView& spec) const = 0;
  // Every parameter of Space() must be given, with one of its values; anything else is an error.
  virtual Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const = 0;
};

// The first value of every parameter.
Params DefaultParams(const std::vector<ParamSpace>& space);
// InvalidArgument naming the parameter when `params` misses one of `space` or has a value that
// is not listed, or has a parameter `space` does not know.
Status CheckParams(const std::vector<ParamSpace>& space, const Params& params);

// Every CPU template family, in a fixed order.
std::vector<std::unique_ptr<TemplateFamily>> CpuTemplateFamilies();
// Every CUDA template family (agents/cuda_templates.h), in a fixed order.
std::vector<std::unique_ptr<TemplateFamily>> CudaTemplateFamilies();
// The families of a backend: "cpu" (or empty) and "cuda"; InvalidArgument for another.
Result<std::vector<std::unique_ptr<TemplateFamily>>> TemplateFamiliesFor(std::string_view backend);

}  // namespace kfleet::agents
