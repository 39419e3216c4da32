// Preparation of the ops that move data rather than compute on it (kernels in
// kernels_layout.cu and pointwise::LaunchCopy), with the CPU baseline's semantics
// (runtime/baseline_layout.cc): views copy nothing; Transpose, Expand, Slice and Tile become one
// strided copy over merged dims; Concat and Split one kernel per eight parts.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/device.h"
#include "cuda/kernels_layout.h"
#include "cuda/kernels_pointwise.h"
#include "cuda/ops.h"
#include "planner/import_internal.h"
#include "runtime/tensor.h"

namespace kfleet::cuda::ops {
namespace {

namespace pw = pointwise;
namespace ly = layout;
using planner::NumElements;
using planner::ShapeToString;

int ElemBytes(DType graph_dtype) {
  return static_cast<int>(planner::DTypeBytes(StorageDtype(graph_dtype)));
}

Status Launched(int rc, std::string_view op) {
  return CudaStatus(rc, fmt::format("launching the {} kernel", op));
}

Shape Strides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

// A dense output of `dims` reading x at sum(i_d * strides[d]): size-1 dims dropped, neighbours
// that x walks as one merged.
Result<pw::ElementIndex> CopyIndex(const std::vector<int64_t>& dims,
                                   const std::vector<int64_t>& strides) {
  std::vector<int64_t> merged_dims;
  std::vector<int64_t> merged_strides;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 1) continue;
    if (!merged_dims.empty() && merged_strides.back() == strides[d] * dims[d]) {
      merged_dims.back() *= dims[d];
      merged_strides.back() = strides[d];
    } else {
      merged_dims.push_back(dims[d]);
      merged_strides.push_back(strides[d]);
    }
  }
  if (merged_dims.empty()) {
    merged_dims.push_back(1);
    merged_strides.push_back(1);
  }
  if (merged_dims.size() > static_cast<size_t>(pw::kMaxRank)) {
    return InvalidArgument(
        fmt::format("the copy keeps {} dims after merging; the CUDA kernels "
                    "take at most {}",
                    merged_dims.size(), pw::kMaxRank));
  }
  pw::ElementIndex index;
  index.rank = static_cast<int>(merged_dims.size());
  for (size_t d = 0; d < merged_dims.size(); ++d) {
    index.dims[d] = merged_dims[d];
    index.strides[0][d] = merged_strides[d];
  }
  index.dense = index.rank == 1 && merged_strides[0] == 1;
  return index;
}

// A strided copy of input 0 (advanced by `base` elements) into output 0.
PreparedOp CopyOp(const NodeContext& c, const pw::ElementIndex& index, int64_t base = 0) {
  const int bytes = ElemBytes(c.Input(0).dtype);
  Kernel run = [bytes, index, base, name = c.node().op_type](const OpArgs& a) {
    const auto* x = static_cast<const std::byte*>(a.inputs[0]->data) + base * bytes;
    return Launched(pw::LaunchCopy(bytes, x, a.outputs[0]->data, index), name);
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Views and Dropout ----

Result<PreparedOp> PrepareDropout(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  // Inference (training_mode absent or false) returns the input and an all-true mask.
  bool training_known_false = !c.HasInput(2);
  if (c.IsConstant(2)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> training, c.ConstInts(2, "training_mode"));
    training_known_false = training.empty() || training[0] == 0;
  }
  if (!training_known_false) {
    return InvalidArgument("Dropout in training mode has no CUDA baseline kernel");
  }
  if (!c.HasOutput(1)) return PreparedOp{{}, 0, true};
  Kernel fill_mask = [](const OpArgs& a) {
    return Launched(ly::LaunchFill(1, a.outputs[1]->data, a.outputs[1]->elements, 1),
                    "Dropout mask");
  };
  return PreparedOp{std::move(fill_mask), 0, true};
}

// ---- Transpose ----

// Tiles pay off once both the contiguous input dim and the output's rows are this long.
constexpr int64_t kTiledTransposeMinDim = 16;

Result<PreparedOp> PrepareTranspose(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape x = c.InShape(0);
  std::vector<int64_t> perm = c.node().IntsAttr("perm");
  if (perm.empty()) {
    perm.resize(x.size());
    std::iota(perm.rbegin(), perm.rend(), 0);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] != static_cast<int64_t>(i) || sorted.size() != x.size()) {
      return InvalidArgument(fmt::format("perm [{}] is not a permutation of the dims of {}",
                                         fmt::join(perm, ","), ShapeToString(x)));
    }
  }
  const Shape in_strides = Strides(x);
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  for (int64_t p : perm) {
    dims.push_back(x[static_cast<size_t>(p)]);
    strides.push_back(in_strides[static_cast<size_t>(p)]);
  }
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index, CopyIndex(dims, strides));
  const int inner = index.rank - 1;
  if (index.rank >= 2 && index.strides[0][inner] != 1 &&
      index.dims[inner] >= kTiledTransposeMinDim) {
    // The output's rows are strided in x: tile through shared memory along the dim x holds
    // contiguously, so both sides coalesce.
    for (int a = 0; a < inner; ++a) {
      if (index.strides[0][a] != 1 || index.dims[a] < kTiledTransposeMinDim) continue;
      ly::TransposeIndex tiled;
      tiled.rank = index.rank;
      tiled.contiguous_dim = a;
      for (int d = 0; d < index.rank; ++d) {
        tiled.dims[d] = index.dims[d];
        tiled.strides[d] = index.strides[0][d];
      }
      const int bytes = ElemBytes(c.Input(0).dtype);
      Kernel run = [bytes, tiled](const OpArgs& args) {
        return Launched(
            ly::LaunchTransposeTiled(bytes, args.inputs[0]->data, args.outputs[0]->data, tiled),
            "Transpose");
      };
      return PreparedOp{std::move(run), 0, false};
    }
  }
  return CopyOp(c, index);
}

// ---- Expand, Concat, Split, Slice, Tile ----

Result<PreparedOp> PrepareExpand(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& in = c.InShape(0);
  const Shape& out = c.OutShape(0);
  if (in.size() > out.size()) {
    return InvalidArgument(
        fmt::format("cannot expand {} to {}", ShapeToString(in), ShapeToString(out)));
  }
  // x's stride along each output dim; 0 where x is broadcast (size 1 or missing).
  std::vector<int64_t> strides(out.size(), 0);
  const Shape in_strides = Strides(in);
  for (size_t i = 0; i < in.size(); ++i) {
    const size_t d_in = in.size() - 1 - i;
    const size_t d_out = out.size() - 1 - i;
    if (in[d_in] != 1 && in[d_in] != out[d_out]) {
      return InvalidArgument(
          fmt::format("cannot expand {} to {}", ShapeToString(in), ShapeToString(out)));
    }
    strides[d_out] = in[d_in] == 1 ? 0 : in_strides[d_in];
  }
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index,
                      CopyIndex(std::vector<int64_t>(out.begin(), out.end()), strides));
  return CopyOp(c, index);
}

// Rows of `outer`, each the concatenation of one chunk per part (Concat) or the reverse (Split).
struct Chunks {
  int64_t outer = 1;
  int64_t row_bytes = 0;
  std::vector<int64_t> chunk_bytes;  // per part; 0 for an omitted part
};

Chunks AxisChunks(const Shape& whole, int64_t axis, const std::vector<int64_t>& sizes,
                  int64_t elem_bytes) {
  Chunks chunks;
  chunks.outer = NumElements(Shape(whole.begin(), whole.begin() + axis));
  const int64_t inner = NumElements(Shape(whole.begin() + axis + 1, whole.end()));
  for (int64_t size : sizes) chunks.chunk_bytes.push_back(size * inner * elem_bytes);
  chunks.row_bytes = whole[static_cast<size_t>(axis)] * inner * elem_bytes;
  return chunks;
}

Result<PreparedOp> PrepareConcat(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& out = c.OutShape(0);
  KF_ASSIGN_OR_RETURN(
      int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), static_cast<int64_t>(out.size())));
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    if (c.HasInput(i) && c.InShape(i).size() != out.size()) {
      return InvalidArgument(fmt::format("input '{}' is {}, the output {}", c.Input(i).name,
                                         ShapeToString(c.InShape(i)), ShapeToString(out)));
    }
    sizes.push_back(c.HasInput(i) ? c.InShape(i)[static_cast<size_t>(axis)] : 0);
  }
  if (std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != out[static_cast<size_t>(axis)]) {
    return InvalidArgument(fmt::format("inputs of [{}] along axis {} do not make {}",
                                       fmt::join(sizes, ","), axis, ShapeToString(out)));
  }
  const Chunks chunks = AxisChunks(out, axis, sizes, ElemBytes(c.Output(0).dtype));
  Kernel run = [chunks, parts = std::vector<const void*>(sizes.size())](const OpArgs& a) mutable {
    for (size_t i = 0; i < parts.size(); ++i)
      parts[i] = a.HasInput(i) ? a.inputs[i]->data : nullptr;
    return Launched(
        ly::LaunchConcat(a.outputs[0]->data, chunks.outer, chunks.row_bytes, parts.data(),
                         chunks.chunk_bytes.data(), static_cast<int>(parts.size())),
        "Concat");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareSplit(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  const int64_t dim = x[static_cast<size_t>(axis)];
  const auto parts = static_cast<int64_t>(c.node().outputs.size());
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "split"));
  std::vector<int64_t> sizes = given.value_or(std::vector<int64_t>{});
  if (sizes.empty()) {
    // Opset 18: an even split where the last part may be smaller.
    const int64_t chunk = parts > 0 ? (dim + parts - 1) / parts : 0;
    for (int64_t i = 0; i < parts; ++i) {
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
  }
  if (static_cast<int64_t>(sizes.size()) != parts ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != dim ||
      std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s < 0; })) {
    return InvalidArgument(fmt::format("split [{}] does not cut dim {} of {} into {} outputs",
                                       fmt::join(sizes, ","), axis, ShapeToString(x), parts));
  }
  const Chunks chunks = AxisChunks(x, axis, sizes, ElemBytes(c.Input(0).dtype));
  Kernel run = [chunks, outs = std::vector<void*>(sizes.size())](const OpArgs& a) mutable {
    for (size_t i = 0; i < outs.size(); ++i)
      outs[i] = a.HasOutput(i) ? a.outputs[i]->data : nullptr;
    return Launched(ly::LaunchSplit(a.inputs[0]->data, chunks.outer, chunks.row_bytes, outs.data(),
                                    chunks.chunk_bytes.data(), static_cast<int>(outs.size())),
                    "Split");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareSlice(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> starts, c.ConstInts(1, "starts"));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> ends, c.ConstInts(2, "ends"));
  std::vector<int64_t> axes;
  std::vector<int64_t> steps;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(axes, c.ConstInts(3, "axes"));
  }
  if (c.HasInput(4)) {
    KF_ASSIGN_OR_RETURN(steps, c.ConstInts(4, "steps"));
  }
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(
      std::vector<planner::import_internal::SliceAxis> ranges,
      planner::import_internal::ResolveSlice(x, starts, ends, std::move(axes), std::move(steps)));
  const Shape in_strides = Strides(x);
  int64_t base = 0;
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  for (size_t d = 0; d < ranges.size(); ++d) {
    base += ranges[d].count > 0 ? ranges[d].start * in_strides[d] : 0;
    dims.push_back(ranges[d].count);
    // A step longer than the dim takes one element; its stride is never used (and may overflow).
    strides.push_back(ranges[d].count > 1 ? ranges[d].step * in_strides[d] : 0);
  }
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index, CopyIndex(dims, strides));
  return CopyOp(c, index, base);
}

Result<PreparedOp> PrepareTile(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& in = c.InShape(0);
  const Shape& out = c.OutShape(0);
  if (in.size() != out.size()) {
    return InvalidArgument(
        fmt::format("cannot tile {} into {}", ShapeToString(in), ShapeToString(out)));
  }
  // Each tiled dim becomes (repeats, dim): the repeats walk x with stride 0.
  const Shape in_strides = Strides(in);
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] == 0 || out[d] % in[d] != 0) {
      if (out[d] == 0) {
        dims.push_back(0);
        strides.push_back(0);
        continue;
      }
      return InvalidArgument(
          fmt::format("cannot tile {} into {}", ShapeToString(in), ShapeToString(out)));
    }
    dims.push_back(out[d] / in[d]);
    strides.push_back(0);
    dims.push_back(in[d]);
    strides.push_back(in_strides[d]);
  }
  KF_ASSIGN_OR_RETURN(pw::ElementIndex index, CopyIndex(dims, strides));
  return CopyOp(c, index);
}

// ---- Pad ----

Result<PreparedOp> PreparePad(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape x = c.InShape(0);
  const Shape out = c.OutShape(0);
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "pads"));
  if (!given) return InvalidArgument("has no pads");
  const std::vector<int64_t>& pads = *given;
  std::vector<int64_t> axes;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> listed, c.ConstInts(3, "axes"));
    for (int64_t axis : listed) {
      KF_ASSIGN_OR_RETURN(int64_t normalized, c.NormalizeAxis(axis, c.Rank(0)));
      axes.push_back(normalized);
    }
  } else {
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  if (pads.size() != 2 * axes.size()) {
    return InvalidArgument(fmt::format("pads [{}] need 2 entries for each of {} axes",
                                       fmt::join(pads, ","), axes.size()));
  }
  const std::string mode = c.node().StringAttr("mode", "constant");
  ly::PadIndex index;
  if (mode == "constant") {
    index.mode = ly::PadMode::kConstant;
  } else if (mode == "reflect") {
    index.mode = ly::PadMode::kReflect;
  } else if (mode == "edge") {
    index.mode = ly::PadMode::kEdge;
  } else if (mode == "wrap") {
    index.mode = ly::PadMode::kWrap;
  } else {
    return InvalidArgument(fmt::format("unknown mode '{}'", mode));
  }
  if (x.size() > static_cast<size_t>(ly::kMaxRank) || out.size() != x.size()) {
    return InvalidArgument(fmt::format("cannot pad {} into {} (the CUDA kernel takes rank <= {})",
                                       ShapeToString(x), ShapeToString(out), ly::kMaxRank));
  }
  const Shape in_strides = Strides(x);
  index.rank = static_cast<int>(x.size());
  for (size_t d = 0; d < x.size(); ++d) {
    index.out_dims[d] = out[d];
    index.in_dims[d] = x[d];
    index.in_strides[d] = in_strides[d];
  }
  for (size_t i = 0; i < axes.size(); ++i) index.pad_begin[axes[i]] = pads[i];
  // The fill in the element's own bit pattern, from the `value` attribute (before opset 11) or
  // the constant_value input, read on the device.
  const DType storage = StorageDtype(c.Input(0).dtype);
  const double value = c.node().FloatAttr("value", 0.0);
  uint64_t fill_bits = 0;
  switch (storage) {
    case DType::kF16:
      fill_bits = runtime::FloatToHalf(static_cast<float>(value));
      break;
    case DType::kBF16:
      fill_bits = runtime::FloatToBFloat16(static_cast<float>(value));
      break;
    case DType::kI64:
      fill_bits = std::bit_cast<uint64_t>(static_cast<int64_t>(value));
      break;
    case DType::kBool:
      fill_bits = value != 0 ? 1 : 0;
      break;
    default:
      fill_bits = std::bit_cast<uint32_t>(static_cast<float>(value));
      break;
  }
  const bool fed = c.HasInput(2) && NumElements(c.InShape(2)) > 0;
  if (fed && StorageDtype(c.Input(2).dtype) != storage) {
    return InvalidArgument(fmt::format("constant_value is {}, the input {}",
                                       planner::DTypeName(c.Input(2).dtype),
                                       planner::DTypeName(c.Input(0).dtype)));
  }
  const int bytes = ElemBytes(c.Input(0).dtype);
  Kernel run = [bytes, index, fed, fill_bits](const OpArgs& a) {
    return Launched(ly::LaunchPad(bytes, a.inputs[0]->data, a.outputs[0]->data, index,
                                  fed ? a.inputs[2]->data : nullptr, fill_bits),
                    "Pad");
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Gather ----

// Plan-time indices are checked here, with the CPU baseline's message; the device cannot fail a
// run, so indices computed at run time that are out of range give zeros.
Status CheckConstantIndices(const NodeContext& c, int64_t axis, int64_t dim) {
  if (!c.IsConstant(1)) return Status::Ok();
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> indices, c.ConstInts(1, "indices"));
  for (int64_t index : indices) {
    if (index < -dim || index >= dim) {
      return InvalidArgument(
          fmt::format("index {} is out of range for dim {} of size {}", index, axis, dim));
    }
  }
  return Status::Ok();
}

Result<PreparedOp> PrepareGather(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& data = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  if (StorageDtype(c.Input(1).dtype) != DType::kI64) {
    return InvalidArgument("indices must be integers");
  }
  const int64_t outer = NumElements(Shape(data.begin(), data.begin() + axis));
  const int64_t dim = data[static_cast<size_t>(axis)];
  const int64_t inner_bytes =
      NumElements(Shape(data.begin() + axis + 1, data.end())) * ElemBytes(c.Input(0).dtype);
  const int64_t count = NumElements(c.InShape(1));
  KF_RETURN_IF_ERROR(CheckConstantIndices(c, axis, dim));
  Kernel run = [=](const OpArgs& a) {
    return Launched(ly::LaunchGather(a.inputs[0]->data, a.inputs[1]->as<const int64_t>(),
                                     a.outputs[0]->data, outer, dim, inner_bytes, count),
                    "Gather");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareGatherElements(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape data = c.InShape(0);
  const Shape indices_shape = c.InShape(1);
  if (data.size() != indices_shape.size() || data.empty()) {
    return InvalidArgument("data and indices need the same rank >= 1");
  }
  if (data.size() > static_cast<size_t>(ly::kMaxRank)) {
    return InvalidArgument(
        fmt::format("rank {} is above the CUDA kernel's {}", data.size(), ly::kMaxRank));
  }
  if (StorageDtype(c.Input(1).dtype) != DType::kI64) {
    return InvalidArgument("indices must be integers");
  }
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  ly::GatherElementsIndex index;
  const Shape walk = Strides(data);
  index.rank = static_cast<int>(data.size());
  for (size_t d = 0; d < data.size(); ++d) {
    index.dims[d] = indices_shape[d];
    // The index supplies the position along the axis.
    index.walk[d] = static_cast<int64_t>(d) == axis ? 0 : walk[d];
  }
  index.axis_stride = walk[static_cast<size_t>(axis)];
  index.axis_dim = data[static_cast<size_t>(axis)];
  KF_RETURN_IF_ERROR(CheckConstantIndices(c, axis, index.axis_dim));
  const int bytes = ElemBytes(c.Input(0).dtype);
  Kernel run = [bytes, index](const OpArgs& a) {
    return Launched(
        ly::LaunchGatherElements(bytes, a.inputs[0]->data, a.inputs[1]->as<const int64_t>(),
                                 a.outputs[0]->data, index),
        "GatherElements");
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Generators ----

Result<PreparedOp> PrepareShape(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  const int64_t rank = c.Rank(0);
  int64_t start = c.node().IntAttr("start", 0);
  int64_t end = c.node().IntAttr("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  const std::vector<int64_t> dims(x.begin() + start, x.begin() + std::max(start, end));
  if (StorageDtype(c.Output(0).dtype) != DType::kI64 ||
      NumElements(c.OutShape(0)) != static_cast<int64_t>(dims.size())) {
    return InvalidArgument(fmt::format("output is {}{}, expected i64[{}]",
                                       planner::DTypeName(c.Output(0).dtype),
                                       ShapeToString(c.OutShape(0)), dims.size()));
  }
  // The dims are known now: uploaded once, copied into the output on every run.
  runtime::Tensor values(DType::kI64, {static_cast<int64_t>(dims.size())});
  std::copy(dims.begin(), dims.end(), values.as<int64_t>());
  KF_ASSIGN_OR_RETURN(DeviceBuffer uploaded, Upload(values));
  auto buffer = std::make_shared<DeviceBuffer>(std::move(uploaded));
  Kernel run = [buffer](const OpArgs& a) {
    return Launched(ly::LaunchDeviceCopy(a.outputs[0]->data, buffer->data(),
                                         static_cast<int64_t>(buffer->bytes())),
                    "Shape");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareConstantOfShape(const NodeContext& c) {
  const DType storage = StorageDtype(c.Output(0).dtype);
  const double value = c.node().FloatAttr("value", 0.0);
  const int64_t int_value = c.node().IntAttr("value", static_cast<int64_t>(value));
  uint64_t bits = 0;
  switch (storage) {
    case DType::kF16:
      bits = runtime::FloatToHalf(static_cast<float>(value));
      break;
    case DType::kBF16:
      bits = runtime::FloatToBFloat16(static_cast<float>(value));
      break;
    case DType::kI64:
      bits = std::bit_cast<uint64_t>(int_value);
      break;
    case DType::kBool:
      bits = value != 0 || int_value != 0 ? 1 : 0;
      break;
    default:
      bits = std::bit_cast<uint32_t>(static_cast<float>(value));
      break;
  }
  const int bytes = ElemBytes(c.Output(0).dtype);
  Kernel run = [bytes, bits](const OpArgs& a) {
    return Launched(ly::LaunchFill(bytes, a.outputs[0]->data, a.outputs[0]->elements, bits),
                    "ConstantOfShape");
  };
  return PreparedOp{std::move(run), 0, false};
}

pw::Elem ElemOf(DType graph_dtype) {
  switch (StorageDtype(graph_dtype)) {
    case DType::kF16:
      return pw::Elem::kF16;
    case DType::kBF16:
      return pw::Elem::kBF16;
    case DType::kI64:
      return pw::Elem::kI64;
    case DType::kBool:
      return pw::Elem::kBool;
    default:
      return pw::Elem::kF32;
  }
}

Result<PreparedOp> PrepareRange(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  const pw::Elem elem = ElemOf(c.Output(0).dtype);
  if (elem == pw::Elem::kBool) return InvalidArgument("Range of bool is not supported");
  for (size_t i = 0; i < 3; ++i) {
    if (ElemOf(c.Input(i).dtype) != elem || NumElements(c.InShape(i)) != 1) {
      return InvalidArgument(fmt::format("input '{}' is {}{}, expected one {}", c.Input(i).name,
                                         planner::DTypeName(c.Input(i).dtype),
                                         ShapeToString(c.InShape(i)),
                                         planner::DTypeName(c.Output(0).dtype)));
    }
  }
  Kernel run = [elem](const OpArgs& a) {
    return Launched(ly::LaunchRange(elem, a.outputs[0]->data, a.outputs[0]->elements,
                                    a.inputs[0]->data, a.inputs[2]->data),
                    "Range");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareTrilu(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  if (x.size() < 2) return InvalidArgument("needs rank >= 2");
  const int64_t rows = x[x.size() - 2];
  const int64_t cols = x.back();
  const int64_t planes = NumElements(Shape(x.begin(), x.end() - 2));
  const bool upper = c.node().IntAttr("upper", 1) != 0;
  const bool has_k = c.HasInput(1);
  if (has_k && (StorageDtype(c.Input(1).dtype) != DType::kI64 || NumElements(c.InShape(1)) != 1)) {
    return InvalidArgument("k must be one integer");
  }
  const int bytes = ElemBytes(c.Input(0).dtype);
  Kernel run = [=](const OpArgs& a) {
    return Launched(
        ly::LaunchTrilu(bytes, a.inputs[0]->data, a.outputs[0]->data, planes, rows, cols, upper,
                        has_k ? a.inputs[1]->as<const int64_t>() : nullptr, 0),
        "Trilu");
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

bool IsLayoutOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {
      "Reshape",        "Squeeze", "Unsqueeze",       "Flatten", "Identity", "Dropout",
      "Transpose",      "Expand",  "Concat",          "Split",   "Slice",    "Gather",
      "GatherElements", "Shape",   "ConstantOfShape", "Range",   "Tile",     "Pad",
      "Resize",         "Trilu"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PrepareLayoutOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (!c.HasOutput(0)) return InvalidArgument("has no first output");
  if (op == "Reshape" || op == "Squeeze" || op == "Unsqueeze" || op == "Flatten" ||
      op == "Identity") {
    KF_RETURN_IF_ERROR(c.RequireInputs(1));
    return PreparedOp{{}, 0, true};
  }
  if (op == "Dropout") return PrepareDropout(c);
  if (op == "Transpose") return PrepareTranspose(c);
  if (op == "Expand") return PrepareExpand(c);
  if (op == "Concat") return PrepareConcat(c);
  if (op == "Split") return PrepareSplit(c);
  if (op == "Slice") return PrepareSlice(c);
  if (op == "Gather") return PrepareGather(c);
  if (op == "GatherElements") return PrepareGatherElements(c);
  if (op == "Shape") return PrepareShape(c);
  if (op == "ConstantOfShape") return PrepareConstantOfShape(c);
  if (op == "Range") return PrepareRange(c);
  if (op == "Tile") return PrepareTile(c);
  if (op == "Pad") return PreparePad(c);
  if (op == "Trilu") return PrepareTrilu(c);
  return InvalidArgument(fmt::format("no CUDA baseline kernel for {}", op));
}

}  // namespace kfleet::cuda::ops
