// Partition: every runtime node goes into exactly one fusion group; no group creates a cycle.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::planner {

struct FusionGroup {
  std::vector<int> nodes;  // node indices, topological order
  // Kernel family: the anchor ("gemm", "conv", "attention", "layernorm", "rmsnorm", "softmax",
  // "reduce", "pool", "elementwise", "gather", ...) and its fused epilogue in order
  // ("gemm+gelu_tanh", "conv+add+relu", "gemm+bias"). "opaque" for unsupported ops, "view" for
  // groups of views only.
  std::string family;
  std::vector<int> inputs;   // values read from outside the group, first use order (no constants)
  std::vector<int> outputs;  // values used after the group or graph outputs
  int anchor = -1;           // the node that names the group (the matmul, the softmax, ...)
  bool opaque = false;       // holds an unsupported op: reported, not optimized
  bool free = false;         // views only: no kernel runs
};

// Groups come back ordered by their first node. Fusion rules (patterns, epilogues, views) are
// described in partition.cc; the result always passes CheckPartition.
Result<std::vector<FusionGroup>> PartitionGraph(const Graph& graph);

// The invariants every partition keeps: each runtime node in exactly one group, each group's
// nodes in topological order, and a group graph without cycles (a group reading a value another
// group produces runs after it, so a cycle would make the groups impossible to schedule).
Status CheckPartition(const Graph& graph, const std::vector<FusionGroup>& groups);

}  // namespace kfleet::planner
