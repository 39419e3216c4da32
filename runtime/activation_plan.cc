#include "runtime/activation_plan.h"

#include <algorithm>
#include <limits>

namespace kfleet::runtime {

ActivationPlan PlanActivations(const planner::Graph& graph, const std::vector<bool>& view_node,
                               const std::function<int64_t(int)>& bytes_of) {
  const size_t n = graph.nodes.size();
  std::vector<size_t> last_use(graph.values.size(), 0);
  std::vector<bool> read(graph.values.size(), false);
  for (size_t i = 0; i < n; ++i) {
    for (int id : graph.nodes[i].inputs) {
      if (id < 0) continue;
      last_use[id] = std::max(last_use[id], i);
      read[id] = true;
    }
  }
  for (int id : graph.outputs) last_use[id] = std::numeric_limits<size_t>::max();
  ActivationPlan plan;
  plan.buffer_of.assign(graph.values.size(), -1);
  plan.is_view.assign(graph.values.size(), false);
  std::vector<int64_t>& capacity = plan.capacity;
  std::vector<int> refs;  // live values per pool buffer
  std::vector<int> free_buffers;
  auto release = [&](int id) {
    const int b = plan.buffer_of[id];
    if (b >= 0 && --refs[b] == 0) free_buffers.push_back(b);
  };
  for (size_t i = 0; i < n; ++i) {
    const planner::Node& node = graph.nodes[i];
    for (size_t slot = 0; slot < node.outputs.size(); ++slot) {
      const int id = node.outputs[slot];
      if (id < 0) continue;
      if (slot == 0 && view_node[i]) {
        plan.is_view[id] = true;
        plan.buffer_of[id] = plan.buffer_of[node.inputs[0]];
        if (plan.buffer_of[id] >= 0) ++refs[plan.buffer_of[id]];
        continue;
      }
      const int64_t bytes = bytes_of(id);
      // Best fit among free buffers; else grow the largest free one; else a new buffer.
      int pick = -1;
      for (int b : free_buffers) {
        if (capacity[b] >= bytes && (pick < 0 || capacity[b] < capacity[pick])) pick = b;
      }
      if (pick < 0) {
        for (int b : free_buffers) {
          if (pick < 0 || capacity[b] > capacity[pick]) pick = b;
        }
      }
      if (pick < 0) {
        pick = static_cast<int>(capacity.size());
        capacity.push_back(0);
        refs.push_back(0);
      } else {
        free_buffers.erase(std::find(free_buffers.begin(), free_buffers.end(), pick));
      }
      capacity[pick] = std::max(capacity[pick], bytes);
      refs[pick] = 1;
      plan.buffer_of[id] = pick;
    }
    for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
      const int id = node.inputs[slot];
      // Released once per value, at its last reader (a value read twice by one node too).
      if (id >= 0 && last_use[id] == i &&
          std::find(node.inputs.begin(), node.inputs.begin() + slot, id) ==
              node.inputs.begin() + slot) {
        release(id);
      }
    }
    // Outputs nobody reads (LayerNormalization's statistics) are free again at once.
    for (int id : node.outputs) {
      if (id >= 0 && !read[id] && last_use[id] != std::numeric_limits<size_t>::max()) {
        release(id);
      }
    }
  }
  return plan;
}

}  // namespace kfleet::runtime
