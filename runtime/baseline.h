// The CPU baseline: what speedups are measured against. It runs a graph the way an eager
// framework does: one kernel per op, multithreaded (OpenMP), OpenBLAS for MatMul / Gemm,
// im2col + GEMM for Conv, plain loops elsewhere. Floating values are held in f32 whatever the
// graph's dtype (f16 / bf16 inputs are widened on entry and outputs narrowed on exit), the way
// eager CPU frameworks compute half precision.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/tensor.h"

namespace kfleet::runtime {

// A value as a custom op sees it: the executor's buffer, dense row-major, in the executor's
// storage dtype (kF32 for every floating dtype, kI64 for every integer dtype, kBool for bool).
struct CustomOpTensor {
  void* data = nullptr;  // null where an optional input or output is omitted
  DType dtype = DType::kF32;
  const Shape* shape = nullptr;  // the value's shape; null where omitted
};

// Runs one node in place of a baseline kernel: reads `inputs`, writes every element of
// `outputs`, never writes an input. Called once per run, on the thread that calls Run.
using CustomOp = std::function<Status(const std::vector<CustomOpTensor>& inputs,
                                      const std::vector<CustomOpTensor>& outputs)>;

struct BaselineOptions {
  int threads = 0;  // OpenMP and OpenBLAS threads; 0 = every core
  // Nodes, by index in graph.nodes, that run a callback instead of a baseline kernel, whatever
  // their op, domain or `supported` flag: how generated kernels run inside a whole model.
  // Initialized so that BaselineOptions{threads} stays warning-free.
  std::map<int, CustomOp> custom_ops = {};
};

class BaselineExecutor {
 public:
  // Checks every node is supported and prepares the run: constants and weights that have data
  // in the graph are loaded, buffers for every value are allocated once. `graph` must outlive
  // the executor.
  static Result<std::unique_ptr<BaselineExecutor>> Create(const planner::Graph& graph,
                                                          const BaselineOptions& options = {});
  virtual ~BaselineExecutor() = default;

  // Runs once. `feeds` as for RunReference (every id in graph.inputs, in the value's dtype and
  // shape; weights may be fed). `outputs` gets the graph outputs by value id, in their dtypes.
  virtual Status Run(const TensorMap& feeds, TensorMap* outputs) = 0;

  // Runs once and times every node: node_seconds[i] is graph.nodes[i]'s wall time.
  virtual Status RunTimed(const TensorMap& feeds, TensorMap* outputs,
                          std::vector<double>* node_seconds) = 0;
};

}  // namespace kfleet::runtime
