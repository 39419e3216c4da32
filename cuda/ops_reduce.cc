// Softmax, reductions and normalizations of the CUDA baseline. Each op is viewed on the host as
// [outer, n, inner] over its row-major layout, following the CPU baseline's ONNX semantics
// (runtime/baseline_ops.cc); the kernels are in kernels_reduce.cu.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/kernels_reduce.h"
#include "cuda/ops.h"

namespace kfleet::cuda::ops {
namespace {

using reduce::DataType;

// How the kernels name the device storage of graph dtype `dtype`.
Result<DataType> KernelType(DType dtype) {
  switch (StorageDtype(dtype)) {
    case DType::kF32:
      return DataType::kF32;
    case DType::kF16:
      return DataType::kF16;
    case DType::kBF16:
      return DataType::kBF16;
    case DType::kI64:
      return DataType::kI64;
    default:
      break;
  }
  return InvalidArgument(fmt::format("{} values are not supported", planner::DTypeName(dtype)));
}

Result<DataType> FloatType(const planner::Value& value, std::string_view role) {
  if (!planner::IsFloat(value.dtype)) {
    return InvalidArgument(fmt::format("{} '{}' must be floating, got {}", role, value.name,
                                       planner::DTypeName(value.dtype)));
  }
  return KernelType(value.dtype);
}

int64_t Product(const Shape& shape, size_t begin, size_t end) {
  int64_t product = 1;
  for (size_t d = begin; d < end; ++d) product *= shape[d];
  return product;
}

// Scratch regions start 256-byte aligned, as OpArgs::scratch does.
size_t AlignScratch(size_t bytes) { return (bytes + 255) / 256 * 256; }

Status Launched(int code, std::string_view op) {
  return CudaStatus(code, fmt::format("{} kernel", op));
}

// ---- Softmax ----

Result<PreparedOp> PrepareSoftmax(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(DataType type, FloatType(c.Input(0), "input"));
  const std::string op = c.node().op_type;
  const bool log = op == "LogSoftmax";
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", -1), c.Rank(0)));
  const auto a = static_cast<size_t>(axis);
  const int64_t outer = Product(x, 0, a);
  const int64_t n = x[a];
  const int64_t inner = Product(x, a + 1, x.size());
  Kernel run = [=](const OpArgs& args) {
    return Launched(reduce::LaunchSoftmax(type, log, args.inputs[0]->data, args.outputs[0]->data,
                                          outer, n, inner),
                    op);
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Reductions ----

// The input viewed as [outer, n, inner], reduced over n. Reduced axes that are not adjacent
// (ignoring dims of size 1) are first gathered behind the kept ones into scratch: `gather`.
struct ReduceGeometry {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
  std::optional<reduce::StridedCopy> gather;
};

Result<ReduceGeometry> PlanReduce(const Shape& x, const std::vector<bool>& reduced) {
  struct Run {
    int64_t extent;
    bool reduced;
  };
  std::vector<Run> runs;
  for (size_t d = 0; d < x.size(); ++d) {
    if (x[d] == 1) continue;
    if (!runs.empty() && runs.back().reduced == reduced[d]) {
      runs.back().extent *= x[d];
    } else {
      runs.push_back({x[d], reduced[d]});
    }
  }
  ReduceGeometry g;
  const auto reduced_runs =
      std::count_if(runs.begin(), runs.end(), [](const Run& r) { return r.reduced; });
  if (reduced_runs == 0) {  // only dims of size 1 are reduced: a copy
    g.outer = planner::NumElements(x);
    return g;
  }
  if (reduced_runs == 1) {  // runs are [kept] reduced [kept]
    size_t r = 0;
    while (!runs[r].reduced) ++r;
    g.outer = r > 0 ? runs[0].extent : 1;
    g.n = runs[r].extent;
    g.inner = r + 1 < runs.size() ? runs[r + 1].extent : 1;
    return g;
  }
  if (runs.size() > static_cast<size_t>(reduce::kMaxStridedRank)) {
    return InvalidArgument(
        fmt::format("reduces over {} separate groups of axes of shape {}; at most {} groups of "
                    "kept and reduced axes are supported",
                    reduced_runs, planner::ShapeToString(x), reduce::kMaxStridedRank));
  }
  std::vector<int64_t> strides(runs.size());
  int64_t stride = 1;
  for (size_t r = runs.size(); r-- > 0;) {
    strides[r] = stride;
    stride *= runs[r].extent;
  }
  reduce::StridedCopy gather;
  g.outer = 1;
  g.n = 1;
  for (const bool take_reduced : {false, true}) {
    for (size_t r = 0; r < runs.size(); ++r) {
      if (runs[r].reduced != take_reduced) continue;
      gather.dims[gather.rank] = runs[r].extent;
      gather.strides[gather.rank] = strides[r];
      ++gather.rank;
      (take_reduced ? g.n : g.outer) *= runs[r].extent;
    }
  }
  g.gather = gather;
  return g;
}

Result<PreparedOp> PrepareReduce(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const std::string op = c.node().op_type;
  const reduce::ReduceKind kind = op == "ReduceSum"    ? reduce::ReduceKind::kSum
                                  : op == "ReduceMean" ? reduce::ReduceKind::kMean
                                                       : reduce::ReduceKind::kMax;
  const planner::Value& input = c.Input(0);
  if (input.dtype == DType::kBool) {
    return InvalidArgument(fmt::format("{} of bool is not supported", op));
  }
  KF_ASSIGN_OR_RETURN(DataType type, KernelType(input.dtype));
  // Axes are an input from opset 18 (ReduceSum: 13), an attribute before.
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "axes"));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes = given.value_or(std::vector<int64_t>{});
  if (axes.empty() && c.node().IntAttr("noop_with_empty_axes", 0) != 0) {
    return PreparedOp{{}, 0, true};
  }
  std::vector<bool> reduced(x.size(), axes.empty());
  for (int64_t axis : axes) {
    KF_ASSIGN_OR_RETURN(int64_t a, c.NormalizeAxis(axis, c.Rank(0)));
    reduced[static_cast<size_t>(a)] = true;
  }
  ReduceGeometry g;
  if (planner::NumElements(x) == 0) {
    // Every output element reduces nothing: the kernels write the identity (NaN for a mean).
    g.outer = planner::NumElements(c.OutShape(0));
    g.n = 0;
  } else {
    KF_ASSIGN_OR_RETURN(g, PlanReduce(x, reduced));
  }
  const auto element_bytes = static_cast<size_t>(planner::DTypeBytes(StorageDtype(input.dtype)));
  const size_t gathered_bytes =
      g.gather ? AlignScratch(static_cast<size_t>(planner::NumElements(x)) * element_bytes) : 0;
  const size_t scratch_bytes = gathered_bytes + reduce::ReduceScratchBytes(g.outer, g.n, g.inner);
  Kernel run = [=](const OpArgs& a) {
    const void* in = a.inputs[0]->data;
    auto* scratch = static_cast<std::byte*>(a.scratch);
    if (g.gather) {
      KF_RETURN_IF_ERROR(
          Launched(reduce::LaunchStridedCopy(element_bytes, in, scratch, *g.gather), op));
      in = scratch;
    }
    void* partials = gathered_bytes > 0 ? scratch + gathered_bytes : a.scratch;
    return Launched(
        reduce::LaunchReduce(type, kind, in, a.outputs[0]->data, g.outer, g.n, g.inner, partials),
        op);
  };
  return PreparedOp{std::move(run), scratch_bytes, false};
}

Result<PreparedOp> PrepareGlobalAveragePool(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  KF_ASSIGN_OR_RETURN(DataType type, FloatType(c.Input(0), "input"));
  const Shape& x = c.InShape(0);
  if (x.size() < 3) {
    return InvalidArgument(
        fmt::format("needs input [N,C,spatial...], got {}", planner::ShapeToString(x)));
  }
  const int64_t planes = x[0] * x[1];
  const int64_t spatial = Product(x, 2, x.size());
  Kernel run = [=](const OpArgs& a) {
    return Launched(reduce::LaunchReduce(type, reduce::ReduceKind::kMean, a.inputs[0]->data,
                                         a.outputs[0]->data, planes, spatial, 1, a.scratch),
                    "GlobalAveragePool");
  };
  return PreparedOp{std::move(run), reduce::ReduceScratchBytes(planes, spatial, 1), false};
}

// ---- Normalizations ----

// The gather that broadcasts a value of shape `from` to `to` (numpy rules, aligned right).
Result<reduce::StridedCopy> BroadcastGeometry(const Shape& from, const Shape& to) {
  if (from.size() > to.size() || to.size() > static_cast<size_t>(reduce::kMaxStridedRank)) {
    return InvalidArgument(fmt::format("cannot broadcast {} to {}", planner::ShapeToString(from),
                                       planner::ShapeToString(to)));
  }
  reduce::StridedCopy g;
  g.rank = static_cast<int>(to.size());
  int64_t stride = 1;
  for (size_t k = 0; k < to.size(); ++k) {
    const size_t d = to.size() - 1 - k;
    const int64_t extent = k < from.size() ? from[from.size() - 1 - k] : 1;
    if (extent != 1 && extent != to[d]) {
      return InvalidArgument(fmt::format("shape {} does not broadcast to {}",
                                         planner::ShapeToString(from), planner::ShapeToString(to)));
    }
    g.dims[d] = to[d];
    g.strides[d] = extent == 1 ? 0 : stride;
    stride *= extent;
  }
  return g;
}

Result<PreparedOp> PrepareLayerNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(DataType type, FloatType(c.Input(0), "X"));
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", -1), c.Rank(0)));
  const Shape normalized(x.begin() + axis, x.end());
  const int64_t n = planner::NumElements(normalized);
  const int64_t rows = Product(x, 0, static_cast<size_t>(axis));
  const auto epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  const DType storage = StorageDtype(c.Input(0).dtype);
  const auto element_bytes = static_cast<size_t>(planner::DTypeBytes(storage));
  // Scale and B share X's type; given with fewer elements than a row they are broadcast into
  // scratch before the kernel runs.
  std::array<std::optional<reduce::StridedCopy>, 2> expand;
  std::array<size_t, 2> expand_offset = {0, 0};
  size_t scratch_bytes = 0;
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.HasInput(i)) continue;
    if (StorageDtype(c.Input(i).dtype) != storage) {
      return InvalidArgument(fmt::format("input {} '{}' is {} but X is {}; they must match", i,
                                         c.Input(i).name, planner::DTypeName(c.Input(i).dtype),
                                         planner::DTypeName(c.Input(0).dtype)));
    }
    if (planner::NumElements(c.InShape(i)) == n) continue;
    KF_ASSIGN_OR_RETURN(expand[i - 1], BroadcastGeometry(c.InShape(i), normalized));
    expand_offset[i - 1] = scratch_bytes;
    scratch_bytes += AlignScratch(static_cast<size_t>(n) * element_bytes);
  }
  // Mean and InvStdDev are of stash_type (f32 unless the model says otherwise); computed in f32.
  DataType stats_type = DataType::kF32;
  for (size_t i = 1; i <= 2; ++i) {
    if (!c.HasOutput(i)) continue;
    KF_ASSIGN_OR_RETURN(DataType t, FloatType(c.Output(i), i == 1 ? "Mean" : "InvStdDev"));
    if (c.HasOutput(1) && c.HasOutput(2) && c.Output(1).dtype != c.Output(2).dtype) {
      return InvalidArgument("Mean and InvStdDev must have the same dtype");
    }
    stats_type = t;
  }
  Kernel run = [=](const OpArgs& a) {
    std::array<const void*, 2> params = {a.inputs[1]->data,
                                         a.HasInput(2) ? a.inputs[2]->data : nullptr};
    for (size_t k = 0; k < 2; ++k) {
      if (!expand[k] || params[k] == nullptr) continue;
      void* full = static_cast<std::byte*>(a.scratch) + expand_offset[k];
      KF_RETURN_IF_ERROR(
          Launched(reduce::LaunchStridedCopy(element_bytes, params[k], full, *expand[k]),
                   "LayerNormalization"));
      params[k] = full;
    }
    reduce::NormArgs args;
    args.type = type;
    args.x = a.inputs[0]->data;
    args.y = a.outputs[0]->data;
    args.rows = rows;
    args.n = n;
    args.scale = params[0];
    args.bias = params[1];
    args.epsilon = epsilon;
    args.mean = a.HasOutput(1) ? a.outputs[1]->data : nullptr;
    args.inv_std_dev = a.HasOutput(2) ? a.outputs[2]->data : nullptr;
    args.stats_type = stats_type;
    return Launched(reduce::LaunchNormalize(args), "LayerNormalization");
  };
  return PreparedOp{std::move(run), scratch_bytes, false};
}

// X is [N, C, ...]; inputs 1 .. count-1 are per-channel vectors of any floating type.
Status CheckChannelInputs(const NodeContext& c, size_t count) {
  const Shape& x = c.InShape(0);
  if (x.size() < 2) {
    return InvalidArgument(fmt::format("needs input [N,C,...], got {}", planner::ShapeToString(x)));
  }
  for (size_t i = 1; i < count; ++i) {
    if (!planner::IsFloat(c.Input(i).dtype) || planner::NumElements(c.InShape(i)) != x[1]) {
      return InvalidArgument(fmt::format(
          "input {} '{}' must be {} floating values, got {} {}", i, c.Input(i).name, x[1],
          planner::DTypeName(c.Input(i).dtype), planner::ShapeToString(c.InShape(i))));
    }
  }
  return Status::Ok();
}

Result<PreparedOp> PrepareBatchNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(5));
  if (c.node().IntAttr("training_mode", 0) != 0 || c.HasOutput(1) || c.HasOutput(2)) {
    return InvalidArgument("training mode is not supported: the CUDA baseline runs inference");
  }
  reduce::BatchNormArgs geometry;
  KF_ASSIGN_OR_RETURN(geometry.type, FloatType(c.Input(0), "X"));
  KF_RETURN_IF_ERROR(CheckChannelInputs(c, 5));
  const Shape& x = c.InShape(0);
  geometry.elements = planner::NumElements(x);
  geometry.channels = x[1];
  geometry.inner = Product(x, 2, x.size());
  KF_ASSIGN_OR_RETURN(geometry.scale_type, KernelType(c.Input(1).dtype));
  KF_ASSIGN_OR_RETURN(geometry.bias_type, KernelType(c.Input(2).dtype));
  KF_ASSIGN_OR_RETURN(geometry.mean_type, KernelType(c.Input(3).dtype));
  KF_ASSIGN_OR_RETURN(geometry.var_type, KernelType(c.Input(4).dtype));
  geometry.epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  Kernel run = [geometry](const OpArgs& a) {
    reduce::BatchNormArgs args = geometry;
    args.x = a.inputs[0]->data;
    args.y = a.outputs[0]->data;
    args.scale = a.inputs[1]->data;
    args.bias = a.inputs[2]->data;
    args.mean = a.inputs[3]->data;
    args.var = a.inputs[4]->data;
    return Launched(reduce::LaunchBatchNorm(args), "BatchNormalization");
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareInstanceNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  reduce::NormArgs geometry;
  KF_ASSIGN_OR_RETURN(geometry.type, FloatType(c.Input(0), "input"));
  KF_RETURN_IF_ERROR(CheckChannelInputs(c, 3));
  const Shape& x = c.InShape(0);
  geometry.rows = x[0] * x[1];
  geometry.n = Product(x, 2, x.size());
  geometry.channels = x[1];
  KF_ASSIGN_OR_RETURN(geometry.scale_type, KernelType(c.Input(1).dtype));
  KF_ASSIGN_OR_RETURN(geometry.bias_type, KernelType(c.Input(2).dtype));
  geometry.epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  Kernel run = [geometry](const OpArgs& a) {
    reduce::NormArgs args = geometry;
    args.x = a.inputs[0]->data;
    args.y = a.outputs[0]->data;
    args.scale = a.inputs[1]->data;
    args.bias = a.inputs[2]->data;
    return Launched(reduce::LaunchNormalize(args), "InstanceNormalization");
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

bool IsReduceOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {
      "Softmax",   "LogSoftmax",         "LayerNormalization",    "ReduceMean",       "ReduceSum",
      "ReduceMax", "BatchNormalization", "InstanceNormalization", "GlobalAveragePool"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PrepareReduceOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "Softmax" || op == "LogSoftmax") return PrepareSoftmax(c);
  if (op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") return PrepareReduce(c);
  if (op == "LayerNormalization") return PrepareLayerNormalization(c);
  if (op == "BatchNormalization") return PrepareBatchNormalization(c);
  if (op == "InstanceNormalization") return PrepareInstanceNormalization(c);
  if (op == "GlobalAveragePool") return PrepareGlobalAveragePool(c);
  return InvalidArgument(fmt::format("no CUDA reduction kernel for {}", op));
}

}  // namespace kfleet::cuda::ops
