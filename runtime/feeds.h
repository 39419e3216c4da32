// Random inputs and weights for a graph: what the harness feeds kernels and what `kfleet profile`
// runs a model on. Seeded, so a trial can be replayed from its seed.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/tensor.h"

namespace kfleet::runtime {

enum class Distribution {
  kNormal,           // N(0, 1)
  kUniform,          // U(-1, 1)
  kUniformPositive,  // U(0.5, 1.5): logs, square roots and divisors stay defined
  kBimodal,          // ±U(0.5, 1.5): no values near zero
};
std::string_view DistributionName(Distribution distribution);

struct FeedOptions {
  uint64_t seed = 1;
  Distribution distribution = Distribution::kNormal;
  double scale = 1.0;   // multiplies every floating value
  double offset = 0.0;  // added after scaling: a large offset with a small spread is "mixed"
  // Also draw every weight (random weights instead of the model's). Without it only graph.inputs
  // are drawn, and weights that are graph inputs with no data in the graph.
  bool include_weights = true;
};

// A tensor for every id in graph.inputs (and every kWeight value with include_weights), of the
// value's dtype and shape.
//  - Floating values come from the distribution and are never exactly zero.
//  - Integer values used as indices (Gather / GatherElements indices) stay within the dimension
//    they index, so every index is valid; other integers are drawn from [0, 4).
//  - Bool values are random.
Result<TensorMap> MakeRandomFeeds(const planner::Graph& graph, const FeedOptions& options);

}  // namespace kfleet::runtime
