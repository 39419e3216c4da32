#include "eval/model_verify.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <link.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <system_error>
#include <utility>

#include "common/subprocess.h"
#include "common/temp_dir.h"
#include "eval/compare.h"
#include "eval/device.h"
#include "eval/kernel_library.h"
#include "kfleet/kernel.h"
#include "planner/kernel_spec.h"
#include "planner/partition.h"
#include "runtime/baseline.h"
#include "runtime/feeds.h"
#include "runtime/tensor.h"

namespace kfleet::eval {
namespace {

namespace fs = std::filesystem;

using planner::DType;
using planner::FusionGroup;
using planner::Graph;
using planner::Node;
using runtime::CustomOpTensor;
using runtime::Tensor;
using runtime::TensorMap;

using EntryPoint = int (*)(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*);

constexpr const char* kLibraryName = "libkfleet_kernels.so";
// Links nvcc's host objects: nvcc takes no -r, and its default host compiler is this one.
constexpr const char* kCudaHostCompiler = "g++";
// A compiler's or linker's complaint is cut to this many lines in a verdict.
constexpr size_t kReasonLines = 5;
// Below this many elements a dtype conversion runs on one thread.
constexpr int64_t kParallelConvertElements = int64_t{1} << 15;

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

bool IsCIdentifier(const std::string& text) {
  if (text.empty() || std::isdigit(static_cast<unsigned char>(text[0])) != 0) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

// What a compiler or linker log says went wrong: its error lines when it has any, else its first
// lines.
std::string Summarize(const std::string& log) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin < log.size()) {
    size_t end = log.find('\n', begin);
    if (end == std::string::npos) end = log.size();
    if (end > begin) lines.push_back(log.substr(begin, end - begin));
    begin = end + 1;
  }
  std::vector<std::string> errors;
  for (const std::string& line : lines) {
    if (line.find("error") != std::string::npos) errors.push_back(line);
  }
  const std::vector<std::string>& picked = errors.empty() ? lines : errors;
  std::string summary;
  for (size_t i = 0; i < picked.size() && i < kReasonLines; ++i) {
    if (!summary.empty()) summary += '\n';
    summary += picked[i];
  }
  return summary.empty() ? "(no output)" : summary;
}

struct ToolRun {
  bool ok = false;
  std::string log;  // stdout + stderr, then how it ended when it failed
};

// An error Status only when the tool could not be started.
Result<ToolRun> RunTool(const std::vector<std::string>& argv, const fs::path& cwd,
                        int64_t timeout_ms) {
  ProcessSpec spec;
  spec.argv = argv;
  spec.cwd = cwd;
  spec.timeout_ms = timeout_ms;
  spec.env = {"LC_ALL=C"};
  Result<ProcessResult> run = SystemProcessRunner().Run(spec);
  if (!run.ok()) return run.status().WithContext("running " + argv[0]);
  ToolRun result;
  result.ok = run->Succeeded();
  result.log = run->stdout_bytes + run->stderr_bytes;
  if (!result.ok) result.log += argv[0] + " " + run->Describe() + "\n";
  return result;
}

bool IsLinkFlag(const std::string& flag) {
  return flag.starts_with("-l") || flag.starts_with("-L") || flag.starts_with("-Wl,");
}

bool IsCuda(const VerifyOptions& options) { return options.backend == "cuda"; }

// The flags that compile one kernel to an object whose entry point is `symbol`. nvcc objects
// carry their device code as an embedded fatbin registered by a constructor of their own
// (whole-program compilation, no -rdc), so they link like any host object.
std::vector<std::string> ObjectFlags(const std::vector<std::string>& flags,
                                     const std::string& symbol, bool cuda) {
  std::vector<std::string> object_flags;
  for (size_t i = 0; i < flags.size(); ++i) {
    // "-Xlinker ARG" (nvcc's -rpath): both words go.
    if (flags[i] == "-Xlinker") {
      ++i;
      continue;
    }
    if (flags[i] != "-shared" && !IsLinkFlag(flags[i])) object_flags.push_back(flags[i]);
  }
  if (std::find(object_flags.begin(), object_flags.end(), "-fPIC") == object_flags.end()) {
    if (cuda) object_flags.push_back("-Xcompiler");
    object_flags.push_back("-fPIC");
  }
  object_flags.push_back("-c");
  object_flags.push_back("-Dkf_kernel_run=" + symbol);
  return object_flags;
}

// Links `objects` into the shared library `output`. --no-undefined: a kernel calling a function
// nothing defines fails here, naming itself, instead of failing dlopen for every kernel.
Result<ToolRun> LinkLibrary(const VerifyOptions& options, const std::vector<fs::path>& objects,
                            const fs::path& output, const fs::path& cwd) {
  const CompileOptions& compile = options.compile;
  std::vector<std::string> argv = {compile.compiler, "-o", output.string()};
  for (const fs::path& object : objects) argv.push_back(object.string());
  // After the objects, so -l libraries still resolve when the linker defaults to --as-needed.
  argv.insert(argv.end(), compile.flags.begin(), compile.flags.end());
  if (std::find(compile.flags.begin(), compile.flags.end(), "-shared") == compile.flags.end()) {
    argv.push_back("-shared");
  }
  // nvcc passes linker flags with -Xlinker only.
  if (IsCuda(options)) {
    argv.insert(argv.end(), {"-Xlinker", "--no-undefined"});
  } else {
    argv.push_back("-Wl,--no-undefined");
  }
  return RunTool(argv, cwd, compile.timeout_ms);
}

struct DlClose {
  void operator()(void* handle) const { dlclose(handle); }
};
using LibraryHandle = std::unique_ptr<void, DlClose>;

// A kernel whose spec occurs in the model.
struct Candidate {
  size_t kernel = 0;        // index in the kernels given, and in the report's verdicts
  std::vector<int> groups;  // the fusion groups it replaces
  fs::path object;          // compiled; every symbol but its entry point made local
  EntryPoint entry = nullptr;
  double alone_error = 0;  // max error with only this kernel swapped in
};

// ---- Running a kernel in place of its group ----

void NarrowFromStorage(const CustomOpTensor& from, Tensor& to) {
  const int64_t n = to.elements();
  if (from.dtype == DType::kF32) {
    const auto* in = static_cast<const float*>(from.data);
    if (to.dtype() == DType::kF16 || to.dtype() == DType::kBF16) {
      const bool half = to.dtype() == DType::kF16;
      uint16_t* bits = to.as<uint16_t>();
#pragma omp parallel for schedule(static) if (n >= kParallelConvertElements)
      for (int64_t i = 0; i < n; ++i) {
        bits[i] = half ? runtime::FloatToHalf(in[i]) : runtime::FloatToBFloat16(in[i]);
      }
      return;
    }
    for (int64_t i = 0; i < n; ++i) to.SetDouble(i, in[i]);
    return;
  }
  const auto* in = static_cast<const int64_t*>(from.data);
  for (int64_t i = 0; i < n; ++i) to.SetDouble(i, static_cast<double>(in[i]));
}

void WidenToStorage(const Tensor& from, const CustomOpTensor& to) {
  const int64_t n = from.elements();
  if (to.dtype == DType::kF32) {
    auto* out = static_cast<float*>(to.data);
    if (from.dtype() == DType::kF16 || from.dtype() == DType::kBF16) {
      const bool half = from.dtype() == DType::kF16;
      const uint16_t* bits = from.as<uint16_t>();
#pragma omp parallel for schedule(static) if (n >= kParallelConvertElements)
      for (int64_t i = 0; i < n; ++i) {
        out[i] = half ? runtime::HalfToFloat(bits[i]) : runtime::BFloat16ToFloat(bits[i]);
      }
      return;
    }
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(from.GetDouble(i));
    return;
  }
  auto* out = static_cast<int64_t*>(to.data);
  for (int64_t i = 0; i < n; ++i) out[i] = from.GetInt(i);
}

// One collapsed group's call into its kernel: the executor's values as the spec's tensors, in the
// spec's order and dtypes. On the CPU, values the executor holds wider (f16 in f32, i32 in i64)
// are staged in the spec's dtype around the call; on a GPU the pointers are device memory and
// are passed as they are (kernels needing staging there are refused before: NeedsDeviceStaging).
class KernelCall {
 public:
  KernelCall(EntryPoint entry, std::string label, const Graph& graph, const FusionGroup& group,
             std::string_view backend)
      : entry_(entry), label_(std::move(label)), host_memory_(backend == "cpu") {
    for (int id : group.inputs) inputs_.push_back(MakeSlot(graph.values[id], backend));
    for (int id : group.outputs) outputs_.push_back(MakeSlot(graph.values[id], backend));
    in_views_.resize(inputs_.size());
    out_views_.resize(outputs_.size());
    for (size_t i = 0; i < inputs_.size(); ++i) in_views_[i] = inputs_[i].View();
    for (size_t i = 0; i < outputs_.size(); ++i) out_views_[i] = outputs_[i].View();
  }

  Status operator()(const std::vector<CustomOpTensor>& inputs,
                    const std::vector<CustomOpTensor>& outputs) {
    if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size()) {
      return Internal(fmt::format("{}: called with {} inputs and {} outputs, expected {} and {}",
                                  label_, inputs.size(), outputs.size(), inputs_.size(),
                                  outputs_.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      KF_RETURN_IF_ERROR(inputs_[i].Check(inputs[i], label_, host_memory_));
      if (inputs_[i].staged) {
        NarrowFromStorage(inputs[i], inputs_[i].staging);
        in_views_[i].data = inputs_[i].staging.data();
      } else {
        in_views_[i].data = inputs[i].data;
      }
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      KF_RETURN_IF_ERROR(outputs_[i].Check(outputs[i], label_, host_memory_));
      out_views_[i].data = outputs_[i].staged ? outputs_[i].staging.data() : outputs[i].data;
    }
    const int status = entry_(in_views_.data(), static_cast<int32_t>(in_views_.size()),
                              out_views_.data(), static_cast<int32_t>(out_views_.size()), nullptr);
    if (status != KF_OK) {
      return FailedPrecondition(fmt::format("{} returned {}", label_, KernelStatusName(status)));
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs_[i].staged) WidenToStorage(outputs_[i].staging, outputs[i]);
    }
    return Status::Ok();
  }

 private:
  struct Slot {
    DType dtype = DType::kF32;          // the spec's
    DType storage_dtype = DType::kF32;  // the executor's
    runtime::Shape shape;
    runtime::Shape strides;
    bool staged = false;
    Tensor staging;  // in `dtype`, when staged

    kf_tensor View() const {
      kf_tensor view{};
      view.dtype = static_cast<int32_t>(dtype);
      view.ndim = static_cast<int32_t>(shape.size());
      view.shape = shape.data();
      view.strides = strides.data();
      return view;
    }

    Status Check(const CustomOpTensor& tensor, const std::string& label, bool host_memory) const {
      if (tensor.data == nullptr || tensor.dtype != storage_dtype || tensor.shape == nullptr ||
          *tensor.shape != shape) {
        return Internal(fmt::format("{}: the executor passed a tensor that is not the spec's {}{}",
                                    label, planner::DTypeName(dtype),
                                    planner::ShapeToString(shape)));
      }
      if (staged && !host_memory) {
        return Internal(fmt::format("{}: its {} tensor is held as {} in device memory", label,
                                    planner::DTypeName(dtype), planner::DTypeName(storage_dtype)));
      }
      return Status::Ok();
    }
  };

  static Slot MakeSlot(const planner::Value& value, std::string_view backend) {
    Slot slot;
    slot.dtype = value.dtype;
    slot.storage_dtype = BaselineStorageDtype(backend, value.dtype);
    slot.shape = value.shape;
    slot.strides = runtime::ContiguousStrides(value.shape);
    slot.staged = slot.storage_dtype != value.dtype;
    if (slot.staged) slot.staging = Tensor(value.dtype, value.shape);
    return slot;
  }

  EntryPoint entry_;
  std::string label_;  // "kernel 'layernorm 128x768 f32' (kf_k0_run)"
  bool host_memory_;   // the executor's buffers are host memory (the CPU)
  std::vector<Slot> inputs_;
  std::vector<Slot> outputs_;
  // Shapes and strides point into the slots, which never move after construction.
  std::vector<kf_tensor> in_views_;
  std::vector<kf_tensor> out_views_;
};

// `graph` with each of `collapse` (group index -> custom op) replaced by one node, nodes in a
// topological order. Values keep their ids, so feeds and outputs are the original graph's.
Result<Graph> CollapseGroups(const Graph& graph, const std::vector<FusionGroup>& groups,
                             const std::map<int, std::string>& collapse,
                             std::map<int, int>* node_of_group) {
  // Units: each collapsed group, and every other node on its own.
  const int node_count = static_cast<int>(graph.nodes.size());
  std::vector<int> group_of_node(graph.nodes.size(), -1);
  for (const auto& [g, symbol] : collapse) {
    for (int n : groups[g].nodes) group_of_node[n] = g;
  }
  std::vector<int> unit_of_node(graph.nodes.size(), -1);
  std::vector<int> unit_group;  // -1 for a single node unit
  std::vector<int> unit_node;   // the unit's first node
  std::map<int, int> unit_of_group;
  for (int n = 0; n < node_count; ++n) {
    const int g = group_of_node[n];
    if (g >= 0 && unit_of_group.count(g) != 0) {
      unit_of_node[n] = unit_of_group[g];
      continue;
    }
    unit_of_node[n] = static_cast<int>(unit_group.size());
    if (g >= 0) unit_of_group[g] = unit_of_node[n];
    unit_group.push_back(g);
    unit_node.push_back(n);
  }
  // Kahn's sort over units; ties go to the earliest first node, so the order stays close to the
  // model's. The partition's group graph is acyclic, so every unit is placed.
  const size_t units = unit_group.size();
  std::vector<std::vector<int>> readers(units);
  std::vector<int> pending(units, 0);
  for (int n = 0; n < node_count; ++n) {
    for (int id : graph.nodes[n].inputs) {
      if (id < 0 || graph.values[id].producer < 0) continue;
      const int from = unit_of_node[graph.values[id].producer];
      const int to = unit_of_node[n];
      if (from == to) continue;
      readers[from].push_back(to);
      ++pending[to];
    }
  }
  std::priority_queue<int, std::vector<int>, std::greater<>> ready;
  for (size_t u = 0; u < units; ++u) {
    if (pending[u] == 0) ready.push(static_cast<int>(u));
  }
  Graph collapsed = graph;
  collapsed.nodes.clear();
  while (!ready.empty()) {
    const int u = ready.top();
    ready.pop();
    const int g = unit_group[u];
    if (g < 0) {
      collapsed.nodes.push_back(graph.nodes[unit_node[u]]);
    } else {
      Node node;
      node.name = fmt::format("kfleet/{}_{}", collapse.at(g), g);
      node.op_type = "KfleetKernel";
      node.domain = "kfleet";
      node.inputs = groups[g].inputs;
      node.outputs = groups[g].outputs;
      node.attributes["symbol"] = collapse.at(g);
      (*node_of_group)[g] = static_cast<int>(collapsed.nodes.size());
      collapsed.nodes.push_back(std::move(node));
    }
    for (int reader : readers[u]) {
      if (--pending[reader] == 0) ready.push(reader);
    }
  }
  if (collapsed.nodes.size() != units) {
    return Internal("the fusion groups of the model form a cycle; cannot swap kernels in");
  }
  collapsed.RebuildLinks();
  return collapsed;
}

// The model with some kernels swapped in, ready to run. Not movable: the executor holds the graph.
struct SwappedModel {
  Graph graph;
  std::unique_ptr<runtime::BaselineExecutor> executor;
};

std::string KernelLabel(const SwapKernel& kernel) {
  return fmt::format("kernel '{}' ({})", kernel.name, kernel.symbol);
}

Result<std::unique_ptr<SwappedModel>> BuildSwapped(const Graph& graph,
                                                   const std::vector<FusionGroup>& groups,
                                                   const std::vector<SwapKernel>& kernels,
                                                   const std::vector<const Candidate*>& active,
                                                   const VerifyOptions& verify) {
  std::map<int, std::string> collapse;
  std::map<int, const Candidate*> candidate_of_group;
  for (const Candidate* candidate : active) {
    for (int g : candidate->groups) {
      collapse[g] = kernels[candidate->kernel].symbol;
      candidate_of_group[g] = candidate;
    }
  }
  auto model = std::make_unique<SwappedModel>();
  std::map<int, int> node_of_group;
  KF_ASSIGN_OR_RETURN(model->graph, CollapseGroups(graph, groups, collapse, &node_of_group));
  runtime::BaselineOptions options;
  options.threads = verify.threads;
  for (const auto& [g, node] : node_of_group) {
    const Candidate& candidate = *candidate_of_group.at(g);
    auto call = std::make_shared<KernelCall>(
        candidate.entry, KernelLabel(kernels[candidate.kernel]), graph, groups[g], verify.backend);
    options.custom_ops[node] = [call](const std::vector<CustomOpTensor>& inputs,
                                      const std::vector<CustomOpTensor>& outputs) {
      return (*call)(inputs, outputs);
    };
  }
  Result<std::unique_ptr<runtime::BaselineExecutor>> executor =
      MakeBaselineExecutor(verify.backend, model->graph, options, verify.device);
  if (!executor.ok()) return executor.status().WithContext("the model with kernels swapped in");
  model->executor = std::move(executor).value();
  return model;
}

// ---- Comparing outputs ----

struct Comparison {
  double max_error = 0;  // |got - ref| / (|ref| + rms(ref)); infinite for a wrong NaN / Inf
  std::string worst;     // "y[3,17]: 0 instead of 1.27", empty when every element is exact
  // Within tolerance: every f32 element within rtol; f16 / bf16 outputs within half_rtol except
  // at most 1 - half_matched_ratio of their elements (never a wrong NaN / Inf).
  bool passed = true;
};

Comparison CompareOutputs(const Graph& graph, const TensorMap& reference, const TensorMap& got,
                          const VerifyOptions& options) {
  Comparison result;
  const double inf = std::numeric_limits<double>::infinity();
  for (int id : graph.outputs) {
    const std::string& name = graph.values[id].name;
    const auto ref_it = reference.find(id);
    const auto got_it = got.find(id);
    if (ref_it == reference.end() || got_it == got.end()) {
      result.max_error = inf;
      result.worst = name + ": missing";
      continue;
    }
    const Tensor& ref = ref_it->second;
    const Tensor& out = got_it->second;
    const bool exact = !planner::IsFloat(ref.dtype());
    double sum_squares = 0;
    int64_t finite = 0;
    for (int64_t i = 0; i < ref.elements(); ++i) {
      const double r = ref.GetDouble(i);
      if (std::isfinite(r)) {
        sum_squares += r * r;
        ++finite;
      }
    }
    const double rms = finite > 0 ? std::sqrt(sum_squares / static_cast<double>(finite)) : 0;
    const bool half = ref.dtype() == planner::DType::kF16 || ref.dtype() == planner::DType::kBF16;
    const double rtol = half ? options.half_rtol : options.rtol;
    const auto allowed = static_cast<int64_t>(
        half ? std::floor(static_cast<double>(ref.elements()) * (1 - options.half_matched_ratio))
             : 0.0);
    int64_t beyond = 0;
    for (int64_t i = 0; i < ref.elements(); ++i) {
      const double r = ref.GetDouble(i);
      const double a = out.GetDouble(i);
      double error = 0;
      if (std::isnan(r) || std::isnan(a)) {
        error = std::isnan(r) && std::isnan(a) ? 0 : inf;
      } else if (std::isinf(r) || std::isinf(a)) {
        error = r == a ? 0 : inf;
      } else if (a != r) {
        const double scale = std::abs(r) + rms;
        error = exact || scale == 0 ? inf : std::abs(a - r) / scale;
      }
      if (error > rtol) {
        ++beyond;
        if (std::isinf(error)) result.passed = false;
      }
      if (error > result.max_error) {
        result.max_error = error;
        result.worst =
            fmt::format("{}: {:g} instead of {:g}", ElementName(name, ref.shape(), i), a, r);
      }
    }
    if (beyond > allowed) result.passed = false;
  }
  return result;
}

// How the model ran with a set of kernels swapped in.
struct SwapOutcome {
  bool ran = false;
  std::string failure;  // why the run failed, when it did
  Comparison comparison;

  // The model with nothing swapped in: the baseline itself.
  static SwapOutcome Baseline() {
    SwapOutcome outcome;
    outcome.ran = true;
    return outcome;
  }
  bool Passed() const { return ran && comparison.passed; }
  std::string Describe() const {
    if (!ran) return failure;
    std::string text = fmt::format("max error {:.3g}", comparison.max_error);
    if (!comparison.worst.empty()) text += " (" + comparison.worst + ")";
    return text;
  }
};

// ---- The verification ----

class Verifier {
 public:
  Verifier(const Graph& graph, const std::vector<SwapKernel>& kernels, const VerifyOptions& options,
           ModelVerifyReport& report)
      : graph_(graph), kernels_(kernels), options_(options), report_(report) {}

  Status Run() {
    KF_ASSIGN_OR_RETURN(baseline_,
                        MakeBaselineExecutor(options_.backend, graph_,
                                             runtime::BaselineOptions{.threads = options_.threads},
                                             options_.device));
    KF_ASSIGN_OR_RETURN(groups_, planner::PartitionGraph(graph_));
    MatchKernels();
    KF_ASSIGN_OR_RETURN(TempDir build, TempDir::Create("verify", options_.work_dir));
    KF_RETURN_IF_ERROR(CompileKernels(build.path()));
    const fs::path linked = build.path() / kLibraryName;
    KF_RETURN_IF_ERROR(LinkKernels(build.path(), linked));
    KF_RETURN_IF_ERROR(LoadKernels(linked));

    runtime::FeedOptions feed_options;
    feed_options.seed = options_.seed;
    feed_options.scale = options_.feed_scale;
    feed_options.include_weights = true;
    KF_ASSIGN_OR_RETURN(feeds_, runtime::MakeRandomFeeds(graph_, feed_options));
    KF_RETURN_IF_ERROR(baseline_->Run(feeds_, &reference_).WithContext("baseline run"));

    const size_t linked_count = candidates_.size();
    KF_ASSIGN_OR_RETURN(SwapOutcome final_outcome, DropMismatches());
    report_.outputs_match = candidates_.empty() || final_outcome.Passed();
    report_.max_error = candidates_.empty() ? 0 : final_outcome.comparison.max_error;
    for (const Candidate& candidate : candidates_) report_.kernels[candidate.kernel].kept = true;

    KF_RETURN_IF_ERROR(Time());
    return Export(build.path(), linked, linked_count);
  }

 private:
  // A candidate's verdict gets a reason exactly when it is rejected; this lets it go.
  void RemoveRejected() {
    std::erase_if(candidates_,
                  [this](const Candidate& c) { return !report_.kernels[c.kernel].reason.empty(); });
  }

  void Reject(const Candidate& candidate, std::string reason) {
    report_.kernels[candidate.kernel].reason = std::move(reason);
  }

  // Every group a kernel could replace, by spec hash; specs that cannot be built match nothing.
  void MatchKernels() {
    std::map<std::string, std::vector<int>> groups_of_hash;
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (groups_[g].free || groups_[g].opaque) continue;
      Result<planner::KernelSpec> spec = planner::BuildKernelSpec(graph_, groups_[g]);
      if (spec.ok()) groups_of_hash[spec->hash].push_back(static_cast<int>(g));
    }
    std::map<std::string, size_t> kernel_of_hash;
    std::map<std::string, size_t> kernel_of_symbol;
    for (size_t k = 0; k < kernels_.size(); ++k) {
      const SwapKernel& kernel = kernels_[k];
      KernelVerdict& verdict = report_.kernels[k];
      const auto matched = groups_of_hash.find(kernel.spec_hash);
      if (matched != groups_of_hash.end()) {
        verdict.occurrences = static_cast<int>(matched->second.size());
      }
      if (matched == groups_of_hash.end()) {
        verdict.reason = "no fusion group of the model has this spec";
      } else if (!IsCIdentifier(kernel.symbol)) {
        verdict.reason = fmt::format("symbol '{}' is not a C identifier", kernel.symbol);
      } else if (kernel_of_symbol.count(kernel.symbol) != 0) {
        verdict.reason = fmt::format("symbol '{}' is already kernel '{}''s", kernel.symbol,
                                     kernels_[kernel_of_symbol[kernel.symbol]].name);
      } else if (kernel_of_hash.count(kernel.spec_hash) != 0) {
        verdict.reason = fmt::format("kernel '{}', earlier in the list, replaces this spec",
                                     kernels_[kernel_of_hash[kernel.spec_hash]].name);
      } else if (const std::optional<std::string> staged =
                     NeedsDeviceStaging(groups_[matched->second.front()])) {
        verdict.reason = *staged;
      } else {
        kernel_of_symbol[kernel.symbol] = k;
        kernel_of_hash[kernel.spec_hash] = k;
        Candidate candidate;
        candidate.kernel = k;
        candidate.groups = matched->second;
        candidates_.push_back(std::move(candidate));
      }
    }
  }

  // On a GPU the executor hands kernels its device buffers as they are: a spec value it holds in
  // another dtype (i32 as i64, f64 as f32) would need a conversion on the device around the call.
  std::optional<std::string> NeedsDeviceStaging(const FusionGroup& group) const {
    if (!IsCuda(options_)) return std::nullopt;
    for (const std::vector<int>* ids : {&group.inputs, &group.outputs}) {
      for (int id : *ids) {
        const DType dtype = graph_.values[id].dtype;
        const DType held = BaselineStorageDtype(options_.backend, dtype);
        if (held != dtype) {
          return fmt::format(
              "the CUDA baseline holds '{}' ({}) as {}; a kernel reading or writing it cannot be "
              "swapped in on the GPU",
              graph_.values[id].name, planner::DTypeName(dtype), planner::DTypeName(held));
        }
      }
    }
    return std::nullopt;
  }

  // Each kernel becomes an object whose only global definition is its entry point. Kernels are
  // written independently, so their helpers may share names: kept global, two strong ones would
  // not link, and two inline ones would silently become one.
  Status CompileKernels(const fs::path& dir) {
    const bool cuda = IsCuda(options_);
    for (Candidate& candidate : candidates_) {
      const SwapKernel& kernel = kernels_[candidate.kernel];
      CompileOptions compile = options_.compile;
      compile.flags = ObjectFlags(options_.compile.flags, kernel.symbol, cuda);
      KF_ASSIGN_OR_RETURN(std::unique_ptr<Toolchain> toolchain,
                          cuda ? MakeCudaToolchain(compile) : MakeCpuToolchain(compile));
      KF_ASSIGN_OR_RETURN(CompiledKernel compiled, toolchain->Compile(kernel.source));
      if (!compiled.ok) {
        Reject(candidate, "does not compile: " + Summarize(compiled.log));
        continue;
      }
      // The toolchain names its output kernel.so whatever it is; here it is an object file.
      const fs::path object = dir / (kernel.symbol + ".o");
      const std::string linker = cuda ? kCudaHostCompiler : options_.compile.compiler;
      KF_ASSIGN_OR_RETURN(ToolRun merged,
                          RunTool({linker, "-r", "-nostdlib", "-Wl,--force-group-allocation", "-o",
                                   object.string(), compiled.library.string()},
                                  dir, options_.compile.timeout_ms));
      if (merged.ok) {
        KF_ASSIGN_OR_RETURN(
            merged, RunTool({"objcopy", "--keep-global-symbol=" + kernel.symbol, object.string()},
                            dir, options_.compile.timeout_ms));
      }
      if (!merged.ok) {
        Reject(candidate, "does not link: " + Summarize(merged.log));
        continue;
      }
      candidate.object = object;
    }
    RemoveRejected();
    return Status::Ok();
  }

  std::vector<fs::path> Objects() const {
    std::vector<fs::path> objects;
    for (const Candidate& candidate : candidates_) objects.push_back(candidate.object);
    return objects;
  }

  // All objects into one library; when that fails, each alone finds the ones to blame.
  Status LinkKernels(const fs::path& dir, const fs::path& library) {
    if (candidates_.empty()) return Status::Ok();
    KF_ASSIGN_OR_RETURN(ToolRun all, LinkLibrary(options_, Objects(), library, dir));
    if (all.ok) return Status::Ok();
    const fs::path probe = dir / "probe.so";
    for (const Candidate& candidate : candidates_) {
      KF_ASSIGN_OR_RETURN(ToolRun alone, LinkLibrary(options_, {candidate.object}, probe, dir));
      if (!alone.ok) Reject(candidate, "does not link: " + Summarize(alone.log));
    }
    RemoveRejected();
    if (candidates_.empty()) return Status::Ok();
    KF_ASSIGN_OR_RETURN(all, LinkLibrary(options_, Objects(), library, dir));
    if (!all.ok) {
      return Internal("kernels that link alone do not link together: " + Summarize(all.log));
    }
    return Status::Ok();
  }

  Status LoadKernels(const fs::path& library) {
    if (candidates_.empty()) return Status::Ok();
    const auto dl_error = [] {
      const char* error = dlerror();
      return std::string(error != nullptr ? error : "unknown error");
    };
    // On the CPU not RTLD_NODELETE: libgomp is this process's already, so unloading the kernels
    // is safe. CUDA kernels bring the shared CUDA runtime, whose threads and exit handlers must
    // stay mapped.
    library_.reset(
        dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | (IsCuda(options_) ? RTLD_NODELETE : 0)));
    if (library_ == nullptr) {
      return FailedPrecondition(fmt::format("cannot load {}: {}", library.string(), dl_error()));
    }
    link_map* map = nullptr;
    if (dlinfo(library_.get(), RTLD_DI_LINKMAP, &map) != 0 || map == nullptr) {
      return Internal(fmt::format("dlinfo {}: {}", library.string(), dl_error()));
    }
    for (Candidate& candidate : candidates_) {
      const SwapKernel& kernel = kernels_[candidate.kernel];
      void* symbol = dlsym(library_.get(), kernel.symbol.c_str());
      // dlsym also searches the library's dependencies: the symbol must be the library's own.
      Dl_info info{};
      if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr ||
          std::strcmp(info.dli_fname, map->l_name) != 0) {
        Reject(candidate,
               "does not define kf_kernel_run (declare it extern \"C\" as in kfleet/kernel.h)");
        continue;
      }
      // dlsym returns an object pointer; POSIX guarantees it converts to a function pointer.
      static_assert(sizeof(candidate.entry) == sizeof(symbol));
      std::memcpy(&candidate.entry, &symbol, sizeof(candidate.entry));
    }
    RemoveRejected();
    return Status::Ok();
  }

  Result<SwapOutcome> RunSwapped(const std::vector<const Candidate*>& active) {
    KF_ASSIGN_OR_RETURN(std::unique_ptr<SwappedModel> model,
                        BuildSwapped(graph_, groups_, kernels_, active, options_));
    SwapOutcome outcome;
    TensorMap outputs;
    const Status ran = model->executor->Run(feeds_, &outputs);
    outcome.ran = ran.ok();
    if (!ran.ok()) {
      outcome.failure = ran.message();
      KF_RETURN_IF_ERROR(CheckDeviceAfter(active, ran));
      return outcome;
    }
    outcome.comparison = CompareOutputs(graph_, reference_, outputs, options_);
    return outcome;
  }

  // A kernel that faulted on a GPU (an illegal address) can leave the context unusable; then
  // nothing more can run in this process, and verification cannot go on.
  Status CheckDeviceAfter(const std::vector<const Candidate*>& active, const Status& failure) {
    const Status healthy = CheckDevice(options_.backend, options_.device);
    if (healthy.ok()) return Status::Ok();
    std::vector<std::string> labels;
    for (const Candidate* candidate : active) {
      labels.push_back(KernelLabel(kernels_[candidate->kernel]));
    }
    return Internal(
        fmt::format("the GPU is unusable after the model ran with {} swapped in ({}): {}",
                    fmt::join(labels, ", "), failure.message(), healthy.message()));
  }

  std::vector<const Candidate*> Active() const {
    std::vector<const Candidate*> active;
    for (const Candidate& candidate : candidates_) active.push_back(&candidate);
    return active;
  }

  // All kernels together; on a mismatch each alone, dropping those wrong on their own, then the
  // worst of the rest until the outputs match. Returns the outcome with the kernels left.
  Result<SwapOutcome> DropMismatches() {
    if (candidates_.empty()) return SwapOutcome::Baseline();
    KF_ASSIGN_OR_RETURN(SwapOutcome together, RunSwapped(Active()));
    if (together.Passed()) return together;
    for (Candidate& candidate : candidates_) {
      KF_ASSIGN_OR_RETURN(SwapOutcome alone, RunSwapped({&candidate}));
      candidate.alone_error =
          alone.ran ? alone.comparison.max_error : std::numeric_limits<double>::infinity();
      if (!alone.Passed()) {
        Reject(candidate, (alone.ran ? "output mismatch when swapped in alone: "
                                     : "fails when swapped in alone: ") +
                              alone.Describe());
      }
    }
    RemoveRejected();
    while (!candidates_.empty()) {
      KF_ASSIGN_OR_RETURN(together, RunSwapped(Active()));
      if (together.Passed()) return together;
      const auto worst = std::max_element(
          candidates_.begin(), candidates_.end(),
          [](const Candidate& a, const Candidate& b) { return a.alone_error < b.alone_error; });
      Reject(*worst,
             fmt::format("outputs out of tolerance together with the other kernels: {} with {} "
                         "swapped in, {:.3g} alone",
                         together.Describe(), candidates_.size(), worst->alone_error));
      RemoveRejected();
    }
    return SwapOutcome::Baseline();
  }

  // One warm-up each, then runs alternating so that load on the machine hits both alike. On the
  // CPU a run is the wall time of Run; on a GPU the event time of one launch (ModelRunTimer).
  Status Time() {
    report_.reps = options_.reps;
    std::unique_ptr<SwappedModel> swapped;
    std::unique_ptr<ModelRunTimer> swapped_timer;
    if (!candidates_.empty()) {
      KF_ASSIGN_OR_RETURN(swapped, BuildSwapped(graph_, groups_, kernels_, Active(), options_));
      KF_ASSIGN_OR_RETURN(swapped_timer,
                          MakeModelRunTimer(options_.backend, *swapped->executor, feeds_));
      KF_RETURN_IF_ERROR(swapped_timer->TimeRunUs().status());
    }
    KF_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunTimer> baseline_timer,
                        MakeModelRunTimer(options_.backend, *baseline_, feeds_));
    KF_RETURN_IF_ERROR(baseline_timer->TimeRunUs().status());
    std::vector<double> baseline_ms;
    std::vector<double> swapped_ms;
    for (int rep = 0; rep < options_.reps; ++rep) {
      KF_ASSIGN_OR_RETURN(double us, baseline_timer->TimeRunUs());
      baseline_ms.push_back(us / 1000);
      if (swapped_timer != nullptr) {
        KF_ASSIGN_OR_RETURN(us, swapped_timer->TimeRunUs());
        swapped_ms.push_back(us / 1000);
      }
    }
    report_.baseline_ms = Median(baseline_ms);
    // With nothing swapped in, the swapped model is the baseline.
    report_.swapped_ms = swapped != nullptr ? Median(swapped_ms) : report_.baseline_ms;
    report_.speedup = report_.swapped_ms > 0 ? report_.baseline_ms / report_.swapped_ms : 1;
    return Status::Ok();
  }

  // The library the user gets holds the kept kernels only; `linked` held every one that loaded.
  Status Export(const fs::path& dir, const fs::path& linked, size_t linked_count) {
    const fs::path library = options_.work_dir / kLibraryName;
    std::error_code error;
    if (candidates_.empty()) {
      // A library left by an earlier verification would contradict this report.
      fs::remove(library, error);
      if (error) return IoError(fmt::format("remove {}: {}", library.string(), error.message()));
      return Status::Ok();
    }
    fs::path built = linked;
    if (candidates_.size() != linked_count) {
      built = dir / "kept.so";
      KF_ASSIGN_OR_RETURN(ToolRun kept, LinkLibrary(options_, Objects(), built, dir));
      if (!kept.ok) return Internal("the kept kernels do not link: " + Summarize(kept.log));
    }
    fs::rename(built, library, error);
    if (error) {
      return IoError(
          fmt::format("move {} to {}: {}", built.string(), library.string(), error.message()));
    }
    report_.library = library;
    report_.header = Header();
    return Status::Ok();
  }

  std::string Header() const {
    std::string header = fmt::format(
        "/* Kernels kfleet verified on model '{}', exported by {}. Each has kf_kernel_run's\n"
        " * signature and contract (kfleet/kernel.h). */\n"
        "#ifndef KFLEET_KERNELS_H_\n#define KFLEET_KERNELS_H_\n\n#include \"kfleet/kernel.h\"\n\n"
        "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n",
        CommentText(graph_.name), kLibraryName);
    for (const Candidate& candidate : candidates_) {
      const SwapKernel& kernel = kernels_[candidate.kernel];
      header += fmt::format(
          "\n/* {}: replaces {} fusion group{} (spec {}). */\n"
          "__attribute__((visibility(\"default\"))) int {}(const kf_tensor* in, int32_t n_in,\n"
          "    kf_tensor* out, int32_t n_out, void* stream);\n",
          CommentText(kernel.name), candidate.groups.size(),
          candidate.groups.size() == 1 ? "" : "s", CommentText(kernel.spec_hash), kernel.symbol);
    }
    header += "\n#ifdef __cplusplus\n}\n#endif\n\n#endif /* KFLEET_KERNELS_H_ */\n";
    return header;
  }

  // Text safe inside a C comment.
  static std::string CommentText(std::string text) {
    for (size_t at = text.find("*/"); at != std::string::npos; at = text.find("*/", at)) {
      text.replace(at, 2, "* /");
    }
    std::replace(text.begin(), text.end(), '\n', ' ');
    return text;
  }

  const Graph& graph_;
  const std::vector<SwapKernel>& kernels_;
  const VerifyOptions& options_;
  ModelVerifyReport& report_;
  std::vector<FusionGroup> groups_;
  LibraryHandle library_;
  std::vector<Candidate> candidates_;  // still in the running, in the order given
  std::unique_ptr<runtime::BaselineExecutor> baseline_;
  TensorMap feeds_;
  TensorMap reference_;
};

}  // namespace

Result<ModelVerifyReport> VerifyModel(const planner::Graph& graph,
                                      const std::vector<SwapKernel>& kernels,
                                      const VerifyOptions& options) {
  if (options.reps < 1) {
    return InvalidArgument(fmt::format("verify: reps is {}; it must be 1 or more", options.reps));
  }
  if (!(options.rtol > 0)) {
    return InvalidArgument(fmt::format("verify: rtol is {}; it must be positive", options.rtol));
  }
  if (options.backend != "cpu" && options.backend != "cuda") {
    return InvalidArgument(
        fmt::format("verify: backend '{}' is not one of cpu, cuda", options.backend));
  }
  std::error_code error;
  if (options.work_dir.empty() || !fs::is_directory(options.work_dir, error)) {
    return InvalidArgument(
        fmt::format("verify: work_dir '{}' is not a directory", options.work_dir.string()));
  }
  ModelVerifyReport report;
  for (const SwapKernel& kernel : kernels) {
    KernelVerdict& verdict = report.kernels.emplace_back();
    verdict.spec_hash = kernel.spec_hash;
    verdict.name = kernel.name;
    verdict.symbol = kernel.symbol;
  }
  Verifier verifier(graph, kernels, options, report);
  KF_RETURN_IF_ERROR(verifier.Run());
  return report;
}

std::string ToJson(const ModelVerifyReport& report) {
  nlohmann::json kernels = nlohmann::json::array();
  for (const KernelVerdict& verdict : report.kernels) {
    kernels.push_back({{"spec_hash", verdict.spec_hash},
                       {"name", verdict.name},
                       {"symbol", verdict.symbol},
                       {"occurrences", verdict.occurrences},
                       {"kept", verdict.kept},
                       {"reason", verdict.reason}});
  }
  // JSON has no infinity: an error that is infinite (a wrong NaN or Inf) is written as null.
  const nlohmann::json max_error =
      std::isfinite(report.max_error) ? nlohmann::json(report.max_error) : nlohmann::json(nullptr);
  const nlohmann::json j = {{"outputs_match", report.outputs_match},
                            {"max_error", max_error},
                            {"baseline_ms", report.baseline_ms},
                            {"swapped_ms", report.swapped_ms},
                            {"speedup", report.speedup},
                            {"reps", report.reps},
                            {"kernels", kernels},
                            {"library", report.library.string()},
                            {"header", report.header}};
  return j.dump();
}

Result<ModelVerifyReport> ModelVerifyReportFromJson(std::string_view json) {
  try {
    const nlohmann::json j = nlohmann::json::parse(json);
    ModelVerifyReport report;
    report.outputs_match = j.at("outputs_match").get<bool>();
    const nlohmann::json& max_error = j.at("max_error");
    report.max_error =
        max_error.is_null() ? std::numeric_limits<double>::infinity() : max_error.get<double>();
    report.baseline_ms = j.at("baseline_ms").get<double>();
    report.swapped_ms = j.at("swapped_ms").get<double>();
    report.speedup = j.at("speedup").get<double>();
    report.reps = j.at("reps").get<int>();
    for (const nlohmann::json& k : j.at("kernels")) {
      KernelVerdict& verdict = report.kernels.emplace_back();
      verdict.spec_hash = k.at("spec_hash").get<std::string>();
      verdict.name = k.at("name").get<std::string>();
      verdict.symbol = k.at("symbol").get<std::string>();
      verdict.occurrences = k.at("occurrences").get<int>();
      verdict.kept = k.at("kept").get<bool>();
      verdict.reason = k.at("reason").get<std::string>();
    }
    report.library = j.at("library").get<std::string>();
    report.header = j.at("header").get<std::string>();
    return report;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(fmt::format("malformed model verification report: {}", e.what()));
  }
}

}  // namespace kfleet::eval
