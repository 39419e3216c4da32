// The correctness oracle: a float64 interpreter for every op the planner supports. Simple loops,
// no fusion, no cleverness: it has to be obviously right, not fast. Heavy loops split independent
// output elements over OpenMP threads, each summed in a fixed order, so results are bitwise
// reproducible.
#pragma once

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/tensor.h"

namespace kfleet::runtime {

struct ReferenceOptions {
  // Also return every intermediate value (by value id), to find the first node that diverges.
  bool keep_intermediates = false;
};

// Runs `graph` (a kernel spec's subgraph or a whole model) node by node.
//  - `feeds` holds a tensor for every id in graph.inputs, of the value's dtype and shape (weights
//    with data in the graph may be fed too; fed tensors win). Weights not fed are loaded with
//    LoadValueTensor; constants come from Value::constant.
//  - Floating values are computed in double and returned as kF64 tensors, not rounded to the
//    graph's dtype; integer values as kI64; bool as kBool.
//  - Returns the graph outputs by value id (plus intermediates when asked).
// Errors name the node: "node 'n3' (Softmax): ...". An unsupported node is an error.
Result<TensorMap> RunReference(const planner::Graph& graph, const TensorMap& feeds,
                               const ReferenceOptions& options = {});

}  // namespace kfleet::runtime
