// Where an executor keeps its activations: a pool of buffers, each reused once the last reader of
// its value has run (in order on one thread or one stream), the way an eager framework's caching
// allocator recycles freed tensors. Shared by the CPU and CUDA baseline executors, which allocate
// the buffers in their own memory.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "planner/graph.h"

namespace kfleet::runtime {

struct ActivationPlan {
  std::vector<int> buffer_of;  // by value id: the pool buffer, -1 for none
  std::vector<bool> is_view;   // by value id: output 0 of a view node, sharing its input's buffer
  std::vector<int64_t> capacity;  // bytes per pool buffer
};

// `view_node[i]`: output 0 of node i is input 0's memory under another shape (it keeps that
// buffer alive). `bytes_of(value)`: the bytes a computed value needs. Graph outputs are never
// released; outputs nobody reads are free again at once.
ActivationPlan PlanActivations(const planner::Graph& graph, const std::vector<bool>& view_node,
                               const std::function<int64_t(int)>& bytes_of);

}  // namespace kfleet::runtime
