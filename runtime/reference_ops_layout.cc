// The float64 reference's data movement and shape ops. Most compute, for every output element,
// the offset of the input element it copies, and hand that to GatherByOffsets; the copy itself
// is dtype-agnostic.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <variant>

#include "runtime/reference_ops.h"

namespace kfleet::runtime::reference_internal {
namespace {

// The listed (present) inputs share one held dtype.
Status RequireSameDType(const NodeRun& run, const std::vector<size_t>& inputs) {
  for (size_t i : inputs) {
    if (run.In(i).dtype() != run.In(inputs[0]).dtype()) {
      return run.Error(fmt::format("input {} is {} but input {} is {}", i,
                                   planner::DTypeName(run.In(i).dtype()), inputs[0],
                                   planner::DTypeName(run.In(inputs[0]).dtype())));
    }
  }
  return Status::Ok();
}

// Copies `count` elements between tensors of one dtype.
void CopyElements(const Tensor& from, int64_t from_at, Tensor& to, int64_t to_at, int64_t count) {
  const auto size = static_cast<size_t>(planner::DTypeBytes(from.dtype()));
  if (count <= 0) return;
  std::memcpy(static_cast<std::byte*>(to.data()) + static_cast<size_t>(to_at) * size,
              static_cast<const std::byte*>(from.data()) + static_cast<size_t>(from_at) * size,
              static_cast<size_t>(count) * size);
}

int64_t Product(const Shape& shape, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t d = from; d < to; ++d) p *= shape[d];
  return p;
}

// The source coordinate of a padded coordinate `c` that falls outside [0, dim) under a
// non-constant Pad mode.
int64_t PadSource(const std::string& mode, int64_t c, int64_t dim) {
  if (mode == "edge") return std::clamp<int64_t>(c, 0, dim - 1);
  if (mode == "wrap") return ((c % dim) + dim) % dim;
  // reflect: mirror about the edges without repeating them, period 2 * (dim - 1).
  if (dim == 1) return 0;
  const int64_t period = 2 * (dim - 1);
  const int64_t r = ((c % period) + period) % period;
  return r < dim ? r : period - r;
}

}  // namespace

Status Reshape(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& x = run.In(0);
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> target, run.Ints(1, "shape"));
  const bool allowzero = run.node().IntAttr("allowzero", 0) != 0;
  Shape out;
  int64_t infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t d = target[i];
    if (d == 0 && !allowzero) {
      if (i >= x.shape().size()) {
        return run.Error(fmt::format("shape [{}] copies dim {} from input {}, which has none",
                                     fmt::join(target, ","), i, planner::ShapeToString(x.shape())));
      }
      d = x.shape()[i];
    } else if (d == -1 && infer_at < 0) {
      infer_at = static_cast<int64_t>(i);
      out.push_back(-1);
      continue;
    } else if (d < 0) {
      return run.Error(
          fmt::format("shape [{}] has a negative dim or a second -1", fmt::join(target, ",")));
    }
    if (__builtin_mul_overflow(known, d, &known)) {
      return run.Error(fmt::format("shape [{}] has too many elements", fmt::join(target, ",")));
    }
    out.push_back(d);
  }
  if (infer_at >= 0) {
    if (known == 0 || x.elements() % known != 0) {
      return run.Error(fmt::format("cannot reshape {} to [{}]", planner::ShapeToString(x.shape()),
                                   fmt::join(target, ",")));
    }
    out[static_cast<size_t>(infer_at)] = x.elements() / known;
  } else if (known != x.elements()) {
    return run.Error(fmt::format("cannot reshape {} to [{}]", planner::ShapeToString(x.shape()),
                                 fmt::join(target, ",")));
  }
  run.SetOutput(0, Reshaped(x, out));
  return Status::Ok();
}

Status Transpose(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  std::vector<int64_t> perm = run.node().IntsAttr("perm");
  if (perm.empty()) {
    perm.resize(shape.size());
    std::iota(perm.rbegin(), perm.rend(), 0);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(shape.size());
  std::iota(identity.begin(), identity.end(), 0);
  if (sorted != identity) {
    return run.Error(fmt::format("perm [{}] is not a permutation of the dims of {}",
                                 fmt::join(perm, ","), planner::ShapeToString(shape)));
  }
  const Shape in_strides = ContiguousStrides(shape);
  Shape out_shape;
  for (int64_t p : perm) out_shape.push_back(shape[p]);
  std::vector<int64_t> offsets(static_cast<size_t>(x.elements()));
  ForEachIndex(out_shape, [&](int64_t n, const std::vector<int64_t>& index) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * in_strides[perm[d]];
    offsets[static_cast<size_t>(n)] = offset;
  });
  run.SetOutput(0, GatherByOffsets(x, out_shape, offsets));
  return Status::Ok();
}

Status Squeeze(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      run.IntsFromInputOrAttr(1, "axes"));
  std::vector<bool> squeezed(shape.size(), false);
  if (given && !given->empty()) {
    for (int64_t a : *given) {
      KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(a, rank));
      if (shape[axis] != 1) {
        return run.Error(fmt::format("cannot squeeze dim {} of {}: it is not 1", axis,
                                     planner::ShapeToString(shape)));
      }
      squeezed[axis] = true;
    }
  } else {
    for (size_t d = 0; d < shape.size(); ++d) squeezed[d] = shape[d] == 1;
  }
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!squeezed[d]) out.push_back(shape[d]);
  }
  run.SetOutput(0, Reshaped(x, out));
  return Status::Ok();
}

Status Unsqueeze(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      run.IntsFromInputOrAttr(1, "axes"));
  if (!given || given->empty()) return run.Error("has no axes");
  const auto rank = static_cast<int64_t>(x.shape().size() + given->size());
  std::vector<bool> inserted(static_cast<size_t>(rank), false);
  for (int64_t a : *given) {
    KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(a, rank));
    if (inserted[axis]) return run.Error(fmt::format("axis {} is repeated", a));
    inserted[axis] = true;
  }
  Shape out;
  size_t next = 0;
  for (int64_t d = 0; d < rank; ++d) out.push_back(inserted[d] ? 1 : x.shape()[next++]);
  run.SetOutput(0, Reshaped(x, out));
  return Status::Ok();
}

Status Flatten(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const auto rank = static_cast<int64_t>(x.shape().size());
  int64_t axis = run.node().IntAttr("axis", 1);
  if (axis < -rank || axis > rank) {
    return run.Error(fmt::format("axis {} is out of range for rank {}", axis, rank));
  }
  if (axis < 0) axis += rank;
  const auto split = static_cast<size_t>(axis);
  run.SetOutput(
      0, Reshaped(x, {Product(x.shape(), 0, split), Product(x.shape(), split, x.shape().size())}));
  return Status::Ok();
}

Status Expand(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& x = run.In(0);
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> target, run.Ints(1, "shape"));
  std::optional<Shape> out = BroadcastShapes(x.shape(), target);
  const bool negative = std::any_of(target.begin(), target.end(), [](int64_t d) { return d < 0; });
  if (!out || negative) {
    return run.Error(fmt::format("cannot expand {} to [{}]", planner::ShapeToString(x.shape()),
                                 fmt::join(target, ",")));
  }
  run.SetOutput(0, GatherByOffsets(x, *out, BroadcastOffsets(x.shape(), *out)));
  return Status::Ok();
}

Status Concat(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  if (!run.node().HasAttr("axis")) return run.Error("has no 'axis' attribute");
  std::vector<size_t> present;
  for (size_t i = 0; i < run.NumInputs(); ++i) {
    if (run.Has(i)) present.push_back(i);
  }
  KF_RETURN_IF_ERROR(RequireSameDType(run, present));
  Shape out = run.In(0).shape();
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", 0),
                                                      static_cast<int64_t>(out.size())));
  out[axis] = 0;
  for (size_t i : present) {
    const Shape& s = run.In(i).shape();
    bool fits = s.size() == out.size();
    for (size_t d = 0; fits && d < s.size(); ++d) {
      fits = static_cast<int64_t>(d) == axis || s[d] == out[d];
    }
    if (!fits) {
      return run.Error(fmt::format("cannot concatenate {} and {} on axis {}",
                                   planner::ShapeToString(run.In(0).shape()),
                                   planner::ShapeToString(s), axis));
    }
    out[axis] += s[axis];
  }
  const auto a = static_cast<size_t>(axis);
  const int64_t outer = Product(out, 0, a);
  const int64_t inner = Product(out, a + 1, out.size());
  Tensor y(run.In(0).dtype(), out);
  int64_t at = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t i : present) {
      const int64_t chunk = run.In(i).shape()[a] * inner;
      CopyElements(run.In(i), o * chunk, y, at, chunk);
      at += chunk;
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Split(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", 0),
                                                      static_cast<int64_t>(shape.size())));
  const int64_t dim = shape[axis];
  const auto parts = static_cast<int64_t>(run.NumOutputs());
  // Sizes from the split input (opset >= 13) or attribute (older), else an even split into
  // num_outputs (opset >= 18) or the node's outputs, the last part smaller when uneven.
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given,
                      run.IntsFromInputOrAttr(1, "split"));
  std::vector<int64_t> sizes = given.value_or(std::vector<int64_t>{});
  if (sizes.empty()) {
    if (run.node().IntAttr("num_outputs", parts) != parts || parts < 1) {
      return run.Error(fmt::format("num_outputs does not match its {} outputs", parts));
    }
    const int64_t chunk = CeilDiv(dim, parts);
    for (int64_t i = 0; i < parts; ++i) {
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
  }
  const bool in_range =
      std::all_of(sizes.begin(), sizes.end(), [&](int64_t s) { return s >= 0 && s <= dim; });
  if (!in_range || static_cast<int64_t>(sizes.size()) != parts ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != dim) {
    return run.Error(fmt::format("split [{}] does not cut dim {} ({}) of {} into {} outputs",
                                 fmt::join(sizes, ","), axis, dim, planner::ShapeToString(shape),
                                 parts));
  }
  const auto a = static_cast<size_t>(axis);
  const int64_t outer = Product(shape, 0, a);
  const int64_t inner = Product(shape, a + 1, shape.size());
  int64_t start = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Shape part = shape;
    part[a] = sizes[i];
    Tensor y(x.dtype(), part);
    for (int64_t o = 0; o < outer; ++o) {
      CopyElements(x, (o * dim + start) * inner, y, o * sizes[i] * inner, sizes[i] * inner);
    }
    start += sizes[i];
    run.SetOutput(i, std::move(y));
  }
  return Status::Ok();
}

Status Slice(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(3));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> starts, run.Ints(1, "starts"));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> ends, run.Ints(2, "ends"));
  std::vector<int64_t> axes(starts.size());
  std::iota(axes.begin(), axes.end(), 0);
  std::vector<int64_t> steps(starts.size(), 1);
  if (run.Has(3)) {
    KF_ASSIGN_OR_RETURN(axes, run.Ints(3, "axes"));
  }
  if (run.Has(4)) {
    KF_ASSIGN_OR_RETURN(steps, run.Ints(4, "steps"));
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return run.Error("starts, ends, axes and steps differ in length");
  }
  // Per dim: first element, step and count; dims not sliced take everything.
  std::vector<int64_t> first(shape.size(), 0);
  std::vector<int64_t> step(shape.size(), 1);
  Shape out = shape;
  std::vector<bool> seen(shape.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(axes[i], rank));
    if (seen[axis]) return run.Error(fmt::format("axis {} is sliced twice", axis));
    seen[axis] = true;
    const int64_t s = steps[i];
    if (s == 0) return run.Error("a step is 0");
    const int64_t dim = shape[axis];
    // Negative starts and ends count from the end; then ONNX clamps them into range. Exporters
    // write INT64_MAX / INT64_MIN for "to the end", which the clamps absorb.
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count = 0;
    if (dim == 0) {
      start = 0;
    } else if (s > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      count = end > start ? (end - start - 1) / s + 1 : 0;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      const int64_t stride =
          s == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max() : -s;
      count = start > end ? (start - end - 1) / stride + 1 : 0;
    }
    first[axis] = start;
    step[axis] = s;
    out[axis] = count;
  }
  const Shape strides = ContiguousStrides(shape);
  std::vector<int64_t> offsets(static_cast<size_t>(planner::NumElements(out)));
  ForEachIndex(out, [&](int64_t n, const std::vector<int64_t>& index) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) {
      offset += (first[d] + index[d] * step[d]) * strides[d];
    }
    offsets[static_cast<size_t>(n)] = offset;
  });
  run.SetOutput(0, GatherByOffsets(x, out, offsets));
  return Status::Ok();
}

Status Gather(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& data = run.In(0);
  const Shape& shape = data.shape();
  if (shape.empty()) return run.Error("needs data of rank >= 1, got a scalar");
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", 0),
                                                      static_cast<int64_t>(shape.size())));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> indices, run.Ints(1, "indices"));
  const auto a = static_cast<size_t>(axis);
  const int64_t outer = Product(shape, 0, a);
  const int64_t dim = shape[a];
  const int64_t inner = Product(shape, a + 1, shape.size());
  Shape out(shape.begin(), shape.begin() + axis);
  out.insert(out.end(), run.In(1).shape().begin(), run.In(1).shape().end());
  out.insert(out.end(), shape.begin() + axis + 1, shape.end());
  for (int64_t& index : indices) {
    if (index < -dim || index >= dim) {
      return run.Error(
          fmt::format("index {} is out of range for axis {} of size {}", index, axis, dim));
    }
    if (index < 0) index += dim;
  }
  std::vector<int64_t> offsets;
  offsets.reserve(static_cast<size_t>(planner::NumElements(out)));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t index : indices) {
      for (int64_t k = 0; k < inner; ++k) offsets.push_back((o * dim + index) * inner + k);
    }
  }
  run.SetOutput(0, GatherByOffsets(data, out, offsets));
  return Status::Ok();
}

Status GatherElements(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& data = run.In(0);
  const Shape& shape = data.shape();
  const Shape& index_shape = run.In(1).shape();
  if (shape.size() != index_shape.size() || shape.empty()) {
    return run.Error(fmt::format("data {} and indices {} need the same rank >= 1",
                                 planner::ShapeToString(shape),
                                 planner::ShapeToString(index_shape)));
  }
  KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(run.node().IntAttr("axis", 0),
                                                      static_cast<int64_t>(shape.size())));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> indices, run.Ints(1, "indices"));
  for (size_t d = 0; d < shape.size(); ++d) {
    if (static_cast<int64_t>(d) != axis && index_shape[d] > shape[d]) {
      return run.Error(fmt::format("indices {} exceed data {} on axis {}",
                                   planner::ShapeToString(index_shape),
                                   planner::ShapeToString(shape), d));
    }
  }
  const Shape strides = ContiguousStrides(shape);
  const int64_t dim = shape[static_cast<size_t>(axis)];
  std::vector<int64_t> offsets(indices.size());
  Status bad = Status::Ok();
  ForEachIndex(index_shape, [&](int64_t n, const std::vector<int64_t>& at) {
    int64_t index = indices[static_cast<size_t>(n)];
    if (index < -dim || index >= dim) {
      if (bad.ok()) {
        bad = run.Error(
            fmt::format("index {} is out of range for axis {} of size {}", index, axis, dim));
      }
      return;
    }
    if (index < 0) index += dim;
    int64_t offset = 0;
    for (size_t d = 0; d < at.size(); ++d) {
      offset += (static_cast<int64_t>(d) == axis ? index : at[d]) * strides[d];
    }
    offsets[static_cast<size_t>(n)] = offset;
  });
  KF_RETURN_IF_ERROR(bad);
  run.SetOutput(0, GatherByOffsets(data, index_shape, offsets));
  return Status::Ok();
}

Status ShapeOf(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  const Shape& shape = run.In(0).shape();
  const auto rank = static_cast<int64_t>(shape.size());
  // Opset 15 start / end, clamped like Python slicing.
  int64_t start = run.node().IntAttr("start", 0);
  int64_t end = run.node().IntAttr("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  Tensor y(DType::kI64, {std::max<int64_t>(0, end - start)});
  for (int64_t d = start; d < end; ++d) y.as<int64_t>()[d - start] = shape[d];
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status ConstantOfShape(NodeRun& run) {
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> dims, run.Ints(0, "shape"));
  for (int64_t d : dims) {
    if (d < 0) return run.Error(fmt::format("shape [{}] has a negative dim", fmt::join(dims, ",")));
  }
  Tensor y(run.OutDType(0), Shape(dims.begin(), dims.end()));
  // The importer keeps `value` as an int64 for integer tensors and a double for floating ones.
  const auto it = run.node().attributes.find("value");
  if (it != run.node().attributes.end() && std::holds_alternative<int64_t>(it->second) &&
      y.dtype() == DType::kI64) {
    std::fill_n(y.as<int64_t>(), y.elements(), std::get<int64_t>(it->second));
  } else {
    const double fill = run.node().FloatAttr("value", 0.0);
    for (int64_t i = 0; i < y.elements(); ++i) y.SetDouble(i, fill);
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Range(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(3));
  KF_ASSIGN_OR_RETURN(double start, run.ScalarDouble(0, "start"));
  KF_ASSIGN_OR_RETURN(double limit, run.ScalarDouble(1, "limit"));
  KF_ASSIGN_OR_RETURN(double delta, run.ScalarDouble(2, "delta"));
  if (delta == 0) return run.Error("delta is 0");
  // The element count as ONNX defines it (and the shape rule computes it).
  const double count = std::ceil((limit - start) / delta);
  if (!std::isfinite(count) || count > static_cast<double>(int64_t{1} << 40)) {
    return run.Error("start, limit and delta give an unbounded range");
  }
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(count));
  Tensor y(run.OutDType(0), {n});
  for (int64_t k = 0; k < n; ++k) {
    if (y.dtype() == DType::kF64) {
      y.as<double>()[k] = start + static_cast<double>(k) * delta;
    } else {
      // Integer ranges stay exact: start + k * delta in int64.
      y.as<int64_t>()[k] = run.In(0).GetInt(0) + k * run.In(2).GetInt(0);
    }
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Tile(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, run.Ints(1, "repeats"));
  if (repeats.size() != shape.size()) {
    return run.Error(
        fmt::format("repeats [{}] do not match rank {}", fmt::join(repeats, ","), shape.size()));
  }
  Shape out = shape;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (repeats[d] < 0) return run.Error("repeats must not be negative");
    out[d] *= repeats[d];
  }
  const Shape strides = ContiguousStrides(shape);
  std::vector<int64_t> offsets(static_cast<size_t>(planner::NumElements(out)));
  ForEachIndex(out, [&](int64_t n, const std::vector<int64_t>& index) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += (index[d] % shape[d]) * strides[d];
    offsets[static_cast<size_t>(n)] = offset;
  });
  run.SetOutput(0, GatherByOffsets(x, out, offsets));
  return Status::Ok();
}

Status Pad(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> pads, run.Ints(1, "pads"));
  std::vector<int64_t> axes;
  if (run.Has(3)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> given, run.Ints(3, "axes"));
    for (int64_t a : given) {
      KF_ASSIGN_OR_RETURN(int64_t axis, run.NormalizeAxis(a, rank));
      axes.push_back(axis);
    }
  } else {
    axes.resize(shape.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  if (pads.size() != 2 * axes.size()) {
    return run.Error(fmt::format("pads [{}] need 2 entries for each of {} axes",
                                 fmt::join(pads, ","), axes.size()));
  }
  const std::string mode = run.node().StringAttr("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap") {
    return run.Error(fmt::format("unknown mode '{}'", mode));
  }
  // An omitted or empty constant_value pads with 0.
  const double fill = run.Has(2) && run.In(2).elements() > 0 ? run.In(2).GetDouble(0) : 0.0;
  std::vector<int64_t> begin(shape.size(), 0);
  Shape out = shape;
  for (size_t i = 0; i < axes.size(); ++i) {
    begin[axes[i]] = pads[i];
    out[axes[i]] += pads[i] + pads[i + axes.size()];
    if (out[axes[i]] < 0) {
      return run.Error(fmt::format("pads [{}] remove more than all of {}", fmt::join(pads, ","),
                                   planner::ShapeToString(shape)));
    }
    if (mode != "constant" && shape[axes[i]] == 0 && out[axes[i]] > 0) {
      return run.Error(fmt::format("cannot pad an empty dim in mode '{}'", mode));
    }
  }
  const Shape strides = ContiguousStrides(shape);
  std::vector<int64_t> offsets(static_cast<size_t>(planner::NumElements(out)));
  ForEachIndex(out, [&](int64_t n, const std::vector<int64_t>& index) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) {
      int64_t c = index[d] - begin[d];
      if (c < 0 || c >= shape[d]) {
        if (mode == "constant") {
          offset = -1;
          break;
        }
        c = PadSource(mode, c, shape[d]);
      }
      offset += c * strides[d];
    }
    offsets[static_cast<size_t>(n)] = offset;
  });
  run.SetOutput(0, GatherByOffsets(x, out, offsets, fill));
  return Status::Ok();
}

}  // namespace kfleet::runtime::reference_internal
