#include "runtime/feeds.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kfleet::runtime {
namespace {

using planner::Graph;
using planner::Node;
using planner::Value;
using planner::ValueKind;

// A float draw can round to zero in f16 / bf16 (or be zero from scale and offset); a redraw fixes
// it unless every draw is zero, which this many attempts rules out in practice.
constexpr int kMaxZeroRedraws = 64;

// Integers that index nothing are drawn from [0, kSmallIntRange): small enough to be valid as
// axes, counts or repeat factors in most places an integer input appears.
constexpr int64_t kSmallIntRange = 4;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Seed of one value from the run's seed and the value's name (FNV-1a), so adding or reordering
// inputs leaves every other value's tensor unchanged.
uint64_t ValueSeed(uint64_t seed, const std::string& name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) {
    hash ^= ch;
    hash *= 0x100000001b3ull;
  }
  return SplitMix64(SplitMix64(seed) ^ hash);
}

// The dimension a node indexes with input `slot`, or -1 when that slot is not an index.
int64_t IndexedDimension(const Graph& graph, const Node& node, size_t slot) {
  if (!node.domain.empty() || slot != 1) return -1;
  if (node.op_type != "Gather" && node.op_type != "GatherElements") return -1;
  if (node.inputs.empty() || node.inputs[0] < 0) return -1;
  const Value& data = graph.values[static_cast<size_t>(node.inputs[0])];
  if (!data.has_shape || data.shape.empty()) return -1;
  const auto rank = static_cast<int64_t>(data.shape.size());
  int64_t axis = node.IntAttr("axis", 0);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return -1;
  return data.shape[static_cast<size_t>(axis)];
}

// Ops whose output holds the input's elements rearranged: an index that goes through them (token
// ids reshaped before the embedding Gather) is still an index.
bool PassesIndicesThrough(const Node& node, size_t slot) {
  static const std::set<std::string_view> kLayout = {
      "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose", "Expand", "Tile"};
  return node.domain.empty() && slot == 0 && kLayout.count(node.op_type) != 0;
}

// The smallest dimension `value_id` (or a rearrangement of it) indexes; int64 max when none.
int64_t IndexedLimit(const Graph& graph, int value_id, std::set<int>& visited) {
  int64_t limit = std::numeric_limits<int64_t>::max();
  if (!visited.insert(value_id).second) return limit;
  for (int user : graph.values[static_cast<size_t>(value_id)].consumers) {
    const Node& node = graph.nodes[static_cast<size_t>(user)];
    for (size_t slot = 0; slot < node.inputs.size(); ++slot) {
      if (node.inputs[slot] != value_id) continue;
      int64_t dim = IndexedDimension(graph, node, slot);
      if (dim >= 0) limit = std::min(limit, dim);
      if (PassesIndicesThrough(node, slot) && !node.outputs.empty() && node.outputs[0] >= 0) {
        limit = std::min(limit, IndexedLimit(graph, node.outputs[0], visited));
      }
    }
  }
  return limit;
}

// [0, limit) for an integer value: the smallest dimension it indexes, else kSmallIntRange.
int64_t IntegerLimit(const Graph& graph, int value_id) {
  std::set<int> visited;
  int64_t limit = IndexedLimit(graph, value_id, visited);
  if (limit == std::numeric_limits<int64_t>::max()) return kSmallIntRange;
  return std::max<int64_t>(limit, 1);
}

class FloatSampler {
 public:
  explicit FloatSampler(const FeedOptions& options) : options_(options) {}

  double Draw(std::mt19937_64& rng) {
    double x = 0;
    switch (options_.distribution) {
      case Distribution::kNormal:
        x = normal_(rng);
        break;
      case Distribution::kUniform:
        x = uniform_(rng) * 2.0 - 1.0;
        break;
      case Distribution::kUniformPositive:
        x = 0.5 + uniform_(rng);
        break;
      case Distribution::kBimodal: {
        double magnitude = 0.5 + uniform_(rng);
        x = (rng() & 1u) != 0 ? magnitude : -magnitude;
        break;
      }
    }
    return x * options_.scale + options_.offset;
  }

 private:
  const FeedOptions& options_;
  std::normal_distribution<double> normal_{0.0, 1.0};
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
};

// Fills `out` with nonzero draws; `store` writes one draw and returns whether it stored zero.
template <typename Store>
Status FillFloats(const Value& value, const FeedOptions& options, std::mt19937_64& rng,
                  int64_t elements, Store store) {
  FloatSampler sampler(options);
  for (int64_t i = 0; i < elements; ++i) {
    int attempts = 0;
    while (store(i, sampler.Draw(rng))) {
      if (++attempts == kMaxZeroRedraws) {
        return InvalidArgument(
            fmt::format("value '{}': every draw of {} (scale {}, offset {}) is zero in {}",
                        value.name, DistributionName(options.distribution), options.scale,
                        options.offset, planner::DTypeName(value.dtype)));
      }
    }
  }
  return Status::Ok();
}

Result<Tensor> DrawValue(const Graph& graph, int value_id, const FeedOptions& options) {
  const Value& value = graph.values[static_cast<size_t>(value_id)];
  if (!value.has_shape) {
    return FailedPrecondition(fmt::format("value '{}' has no known shape", value.name));
  }
  Tensor out(value.dtype, value.shape);
  std::mt19937_64 rng(ValueSeed(options.seed, value.name));
  const int64_t n = out.elements();
  switch (value.dtype) {
    case DType::kF32: {
      float* p = out.as<float>();
      KF_RETURN_IF_ERROR(FillFloats(value, options, rng, n, [p](int64_t i, double x) {
        p[i] = static_cast<float>(x);
        return p[i] == 0.0f;
      }));
      break;
    }
    case DType::kF64: {
      double* p = out.as<double>();
      KF_RETURN_IF_ERROR(FillFloats(value, options, rng, n, [p](int64_t i, double x) {
        p[i] = x;
        return x == 0.0;
      }));
      break;
    }
    case DType::kF16: {
      uint16_t* p = out.as<uint16_t>();
      KF_RETURN_IF_ERROR(FillFloats(value, options, rng, n, [p](int64_t i, double x) {
        p[i] = FloatToHalf(static_cast<float>(x));
        return (p[i] & 0x7fffu) == 0;
      }));
      break;
    }
    case DType::kBF16: {
      uint16_t* p = out.as<uint16_t>();
      KF_RETURN_IF_ERROR(FillFloats(value, options, rng, n, [p](int64_t i, double x) {
        p[i] = FloatToBFloat16(static_cast<float>(x));
        return (p[i] & 0x7fffu) == 0;
      }));
      break;
    }
    case DType::kBool: {
      uint8_t* p = out.as<uint8_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng() & 1u);
      break;
    }
    case DType::kI64:
    case DType::kI32:
    case DType::kI16:
    case DType::kI8:
    case DType::kU8: {
      std::uniform_int_distribution<int64_t> ints(0, IntegerLimit(graph, value_id) - 1);
      for (int64_t i = 0; i < n; ++i) out.SetDouble(i, static_cast<double>(ints(rng)));
      break;
    }
  }
  return out;
}

}  // namespace

std::string_view DistributionName(Distribution distribution) {
  switch (distribution) {
    case Distribution::kNormal:
      return "normal";
    case Distribution::kUniform:
      return "uniform";
    case Distribution::kUniformPositive:
      return "uniform_positive";
    case Distribution::kBimodal:
      return "bimodal";
  }
  return "unknown";
}

Result<TensorMap> MakeRandomFeeds(const planner::Graph& graph, const FeedOptions& options) {
  if (!std::isfinite(options.scale) || !std::isfinite(options.offset)) {
    return InvalidArgument(
        fmt::format("feed scale {} and offset {} must be finite", options.scale, options.offset));
  }
  std::vector<int> ids = graph.inputs;
  if (options.include_weights) {
    for (size_t id = 0; id < graph.values.size(); ++id) {
      if (graph.values[id].kind == ValueKind::kWeight) ids.push_back(static_cast<int>(id));
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());

  // Each value has its own generator, so values are drawn in parallel (a model's weights are
  // hundreds of millions of draws) with the same result as a serial run.
  std::vector<Result<Tensor>> drawn(ids.size(), Result<Tensor>(Internal("not drawn")));
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t k = 0; k < ids.size(); ++k) drawn[k] = DrawValue(graph, ids[k], options);

  TensorMap feeds;
  for (size_t k = 0; k < ids.size(); ++k) {
    if (!drawn[k].ok()) return drawn[k].status();
    feeds.emplace(ids[k], std::move(drawn[k]).value());
  }
  return feeds;
}

}  // namespace kfleet::runtime
