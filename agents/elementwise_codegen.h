// Compiles a fused elementwise chain (a kernel spec the planner labels "elementwise") into kernel
// source: what every op of the chain computes per element, and the checks kf_kernel_run makes
// of the tensors it is given, shared by the C++ renderer here (one loop over the output
// elements) and the CUDA one (cuda_elementwise_template.cc). Private to those templates.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::agents {

// Where a chain runs. Both compute in f32 (with bool and i64); the CUDA kernel also reads and
// writes f16 and bf16 tensors, converting on load and rounding once on store.
enum class ChainTarget { kCpu, kCuda };

struct ElementwiseOptions {
  bool multithreaded = true;       // OpenMP over tasks of `chunk_elements`, or one thread
  int64_t chunk_elements = 16384;  // output elements per task (whole rows on the strided path)
  bool poly_math = true;           // vectorizable polynomial exp / tanh / erf instead of libm
  int unroll = 1;                  // unroll factor of the (vectorized) per-element loop
};

// What the analysis found out about a chain, for the parameter space and the explanation.
struct ElementwiseTraits {
  bool transcendental = false;  // calls exp, tanh or erf (directly or through an activation)
  bool strided = false;  // some operand broadcasts along some dims only: row-wise strided path
  int ops = 0;           // computing ops (views excluded)
};

enum class ChainAccess {
  kFull,       // as many elements as the output: read at the output index
  kScalar,     // one element
  kBroadcast,  // broadcast along some output dims: strides st<k> from the run-time shapes
};

// A spec input or constant as one node of the chain reads it (through views). The kernel calls it
// a<k> (k: its position in ElementwiseChain::operands()).
struct ChainOperand {
  int root = -1;   // the spec input or constant value
  int input = -1;  // its position among the spec inputs; -1 for a constant
  planner::DType dtype = planner::DType::kF32;
  ChainAccess access = ChainAccess::kFull;
  planner::Shape shape;  // the shape the chain reads (after views), right-aligned to the output
  // kBroadcast inputs: per dim of `shape`, the root dim with its run-time size; -1 for size 1.
  std::vector<int> root_dim;
  bool inner_moves = false;  // kBroadcast: advances along the innermost output dim
};

// The math helpers the element code calls (kf_exp, kf_max, ...) as one target defines them.
struct ChainMath {
  std::string qualifier;  // of every helper: "static inline", "static __device__ ..."
  std::string exp;        // the definitions of kf_exp, kf_tanh and kf_erf
  std::string tanh;
  std::string erf;
};

// The per-element code of a chain (ElementwiseChain::Element).
struct ChainElementCode {
  std::vector<std::string> statements;  // "const float t7 = (a0[i] + s1);", in order
  std::vector<std::string> outputs;     // per spec output, the value it gets (bool for bool)
  std::set<std::string> helpers;        // math helpers the code calls (ChainHelperSource)
};

class ElementwiseChain {
 public:
  // Ok when every op, dtype and broadcast of the chain can be compiled for `target`; otherwise
  // why not. `spec` must outlive the chain.
  static Result<ElementwiseChain> Analyze(const planner::Graph& spec, ChainTarget target);

  const ElementwiseTraits& traits() const { return traits_; }
  const std::vector<ChainOperand>& operands() const { return operands_; }
  std::vector<planner::DType> output_dtypes() const;
  size_t rank() const { return iter_.size(); }  // of the output the chain iterates over

  // What the chain computes for one element, reading operand k as `read(k)` (scalar constants
  // are inlined as literals and never read).
  ChainElementCode Element(const std::function<std::string(size_t)>& read) const;

  // kf_kernel_run's checks of its tensors, then its locals: `n` (output elements), on the
  // strided path `dims` (the output shape) and `st<k>` (element strides of broadcast operands),
  // `a<k>` (input pointers; constant arrays too when `declare_constants`), `q<j>` (outputs).
  // Returns KF_OK early when n is 0. Calls the functions of HostHelpers().
  std::string HostChecks(bool declare_constants) const;
  // kf_elements and, on the strided path, kf_count and kf_broadcast_strides.
  std::string HostHelpers() const;
  // The values of a constant operand, as a braced initializer list of its dtype's literals.
  std::string ConstantValues(size_t k) const;

 private:
  ElementwiseChain(const planner::Graph& graph, ChainTarget target) : g_(&graph), target_(target) {}

  const planner::Value& V(int id) const { return g_->values[static_cast<size_t>(id)]; }
  const planner::Node* Producer(int id) const;
  int Root(int id) const;
  bool Computed(int id) const { return Producer(Root(id)) != nullptr; }
  bool IsScalarConstant(int id) const;
  double ScalarConstant(int id) const;
  // f32, and the half types on CUDA: what float math reads and writes.
  bool IsFloatData(planner::DType dtype) const;
  bool IsChainDType(planner::DType dtype) const;
  std::string FloatTypes() const;  // IsFloatData's types, for people: "f32", "f32, f16, bf16"

  Status Run();
  Status CheckNode(const planner::Node& node);
  Status AddOperand(int id, const planner::Node* reader);
  Status FindShapeSource();
  std::string Expr(int id, const std::function<std::string(size_t)>& read) const;
  std::string NodeExpr(const planner::Node& node, const std::function<std::string(size_t)>& read,
                       std::set<std::string>& helpers) const;

  const planner::Graph* g_;
  ChainTarget target_;
  planner::Shape iter_;  // the shape every computing op produces
  int64_t elements_ = 0;
  std::vector<const planner::Node*> steps_;  // computing nodes, topological order
  std::vector<ChainOperand> operands_;
  std::map<int, int> operand_of_;  // value a node or output reads -> operand
  // The strided path's run-time output shape: taken from this tensor's dims (-1: size 1).
  bool shape_from_output_ = true;
  int shape_tensor_ = -1;
  std::vector<int> shape_dims_;
  ElementwiseTraits traits_;
};

// The definitions of the math helpers in `used`, for the target `math` describes.
std::string ChainHelperSource(const std::set<std::string>& used, const ChainMath& math);

// The partitioner families a chain template renders: "elementwise", and the activation
// subgraphs it names on their own (a lone GELU or SiLU), which nothing else renders.
bool IsChainFamily(std::string_view family);

// Ok when every op, dtype and broadcast of the chain can be compiled for the CPU.
Result<ElementwiseTraits> AnalyzeElementwiseChain(const planner::Graph& spec);

// The CPU kernel source (C++17, kfleet/kernel.h ABI) for the chain.
Result<std::string> RenderElementwiseChain(const planner::Graph& spec,
                                           const ElementwiseOptions& options);

}  // namespace kfleet::agents
