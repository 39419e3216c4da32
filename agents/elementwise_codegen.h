// Compiles a fused elementwise chain (a kernel spec the planner labels "elementwise") into one
// C++ kernel: a single loop over the output elements that computes every op of the chain per
// element and writes every output in the same pass. Private to the elementwise template.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::agents {

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

// Ok when every op, dtype and broadcast of the chain can be compiled; otherwise why not.
Result<ElementwiseTraits> AnalyzeElementwiseChain(const planner::Graph& spec);

// The kernel source (C++17, kfleet/kernel.h ABI) for the chain.
Result<std::string> RenderElementwiseChain(const planner::Graph& spec,
                                           const ElementwiseOptions& options);

}  // namespace kfleet::agents
