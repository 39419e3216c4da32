#include "runtime/baseline.h"

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <utility>

#include "runtime/activation_plan.h"
#include "runtime/baseline_ops.h"

namespace kfleet::runtime {
namespace {

using baseline::Storage;
using baseline::View;
using planner::DescribeNode;
using planner::Graph;
using planner::Node;
using planner::Value;
using planner::ValueKind;

DType StorageDtype(Storage storage) {
  switch (storage) {
    case Storage::kFloat:
      return DType::kF32;
    case Storage::kInt:
      return DType::kI64;
    case Storage::kBool:
      return DType::kBool;
  }
  return DType::kF32;
}

// `tensor` (any dtype) widened into storage-typed memory at `dst`.
void WidenInto(const Tensor& tensor, Storage storage, void* dst) {
  const int64_t n = tensor.elements();
  switch (storage) {
    case Storage::kFloat: {
      auto* out = static_cast<float*>(dst);
      // Half-precision feeds are whole models' weights: widened on every thread.
      if (tensor.dtype() == DType::kF16) {
        const uint16_t* in = tensor.as<uint16_t>();
        baseline::ParallelFor(n, baseline::kParallelGrainElements, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) out[i] = HalfToFloat(in[i]);
        });
      } else if (tensor.dtype() == DType::kBF16) {
        const uint16_t* in = tensor.as<uint16_t>();
        baseline::ParallelFor(n, baseline::kParallelGrainElements, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) out[i] = BFloat16ToFloat(in[i]);
        });
      } else {
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(tensor.GetDouble(i));
      }
      return;
    }
    case Storage::kInt: {
      auto* out = static_cast<int64_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = tensor.GetInt(i);
      return;
    }
    case Storage::kBool: {
      auto* out = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = tensor.GetInt(i) != 0 ? 1 : 0;
      return;
    }
  }
}

// Storage-typed memory narrowed into a tensor of the graph's dtype.
void NarrowInto(const View& view, Tensor& out) {
  const int64_t n = view.elements;
  switch (view.storage) {
    case Storage::kFloat: {
      const float* in = view.as<const float>();
      if (out.dtype() == DType::kF32) {
        std::memcpy(out.data(), in, out.bytes());
      } else if (out.dtype() == DType::kF16) {
        uint16_t* bits = out.as<uint16_t>();
        baseline::ParallelFor(n, baseline::kParallelGrainElements, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) bits[i] = FloatToHalf(in[i]);
        });
      } else if (out.dtype() == DType::kBF16) {
        uint16_t* bits = out.as<uint16_t>();
        baseline::ParallelFor(n, baseline::kParallelGrainElements, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) bits[i] = FloatToBFloat16(in[i]);
        });
      } else {
        for (int64_t i = 0; i < n; ++i) out.SetDouble(i, in[i]);
      }
      return;
    }
    case Storage::kInt: {
      const int64_t* in = view.as<const int64_t>();
      if (out.dtype() == DType::kI64) {
        std::memcpy(out.data(), in, out.bytes());
      } else {
        for (int64_t i = 0; i < n; ++i) out.SetDouble(i, static_cast<double>(in[i]));
      }
      return;
    }
    case Storage::kBool:
      std::memcpy(out.data(), view.data, out.bytes());
      return;
  }
}

// Raw 64-byte aligned bytes: the activation arena's buffers and the scratch space.
Tensor Bytes(int64_t count) { return Tensor(DType::kU8, Shape{std::max<int64_t>(count, 1)}); }

class BaselineExecutorImpl final : public BaselineExecutor {
 public:
  explicit BaselineExecutorImpl(const Graph& graph, const BaselineOptions& options)
      : graph_(graph), options_(options) {}

  Status Prepare() {
    ApplyThreads();
    views_.resize(graph_.values.size());
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      const Value& v = graph_.values[id];
      View& view = views_[id];
      view.storage = baseline::StorageOf(v.dtype);
      view.dtype = v.dtype;
      view.shape = v.shape;
      view.elements = v.has_shape ? planner::NumElements(v.shape) : 0;
    }
    ops_.reserve(graph_.nodes.size());
    size_t scratch_bytes = 0;
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      KF_ASSIGN_OR_RETURN(baseline::PreparedOp op,
                          PrepareNode(static_cast<int>(i), graph_.nodes[i]));
      scratch_bytes = std::max(scratch_bytes, op.scratch_bytes);
      ops_.push_back(std::move(op));
    }
    scratch_ = Bytes(static_cast<int64_t>(scratch_bytes));
    KF_RETURN_IF_ERROR(LoadConstants());
    PlanActivations();
    return Status::Ok();
  }

  Status Run(const TensorMap& feeds, TensorMap* outputs) override {
    return Execute(feeds, outputs, nullptr);
  }

  Status RunTimed(const TensorMap& feeds, TensorMap* outputs,
                  std::vector<double>* node_seconds) override {
    return Execute(feeds, outputs, node_seconds);
  }

 private:
  int Threads() const { return options_.threads > 0 ? options_.threads : omp_get_num_procs(); }

  // One pool of threads for everything: OpenMP. OpenBLAS runs single-threaded inside it, each
  // thread multiplying its own block (baseline_linear.cc). OpenBLAS's own pthread pool would
  // spin for a while after every call and starve the OpenMP team of cores: on a 2-core machine
  // that made every elementwise op after a GEMM cost a whole scheduler slice (~8 ms).
  void ApplyThreads() const {
    omp_set_num_threads(Threads());
    openblas_set_num_threads(1);
  }

  Result<baseline::PreparedOp> PrepareNode(int index, const Node& node) const {
    const auto custom = options_.custom_ops.find(index);
    const bool is_custom = custom != options_.custom_ops.end();
    if (!is_custom && !node.supported) {
      return InvalidArgument(
          fmt::format("{}: not supported: {}", DescribeNode(node), node.unsupported_reason));
    }
    if (!is_custom && !node.domain.empty() && node.domain != "ai.onnx") {
      return InvalidArgument(fmt::format("{}: ops of domain '{}' have no baseline kernel",
                                         DescribeNode(node), node.domain));
    }
    for (int id : node.inputs) {
      if (id >= 0 && !graph_.values[id].has_shape) {
        return FailedPrecondition(fmt::format("{}: input '{}' has no known shape",
                                              DescribeNode(node), graph_.values[id].name));
      }
    }
    for (int id : node.outputs) {
      if (id >= 0 && !graph_.values[id].has_shape) {
        return FailedPrecondition(fmt::format("{}: output '{}' has no known shape",
                                              DescribeNode(node), graph_.values[id].name));
      }
    }
    if (is_custom) return PrepareCustomOp(custom->second);
    baseline::NodeContext context(graph_, node, Threads());
    Result<baseline::PreparedOp> op = InvalidArgument("no baseline kernel for this op");
    if (baseline::IsElementwiseOp(node.op_type)) {
      op = baseline::PrepareElementwiseOp(context);
    } else if (baseline::IsLinearOp(node.op_type)) {
      op = baseline::PrepareLinearOp(context);
    } else if (baseline::IsLayoutOp(node.op_type)) {
      op = baseline::PrepareLayoutOp(context);
    }
    if (!op.ok()) return op.status().WithContext(DescribeNode(node));
    return op;
  }

  // `callback` lives in options_, as long as the executor. The tensor lists are kept between runs
  // so a run allocates nothing.
  static baseline::PreparedOp PrepareCustomOp(const CustomOp& callback) {
    baseline::PreparedOp op;
    op.run = [&callback, inputs = std::vector<CustomOpTensor>(),
              outputs = std::vector<CustomOpTensor>()](const baseline::OpArgs& args) mutable {
      const auto fill = [](const auto& views, std::vector<CustomOpTensor>& tensors) {
        tensors.clear();
        for (const View* view : views) {
          CustomOpTensor& tensor = tensors.emplace_back();
          if (view == nullptr) continue;
          tensor.data = view->data;
          tensor.dtype = StorageDtype(view->storage);
          tensor.shape = &view->shape;
        }
      };
      fill(args.inputs, inputs);
      fill(args.outputs, outputs);
      return callback(inputs, outputs);
    };
    return op;
  }

  // Constants, and weights that carry data, are converted once and stay resident.
  Status LoadConstants() {
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      const Value& v = graph_.values[id];
      const bool has_data = v.constant.has_value() || v.raw_data || v.external;
      if (!(v.kind == ValueKind::kConstant || (v.kind == ValueKind::kWeight && has_data))) continue;
      Result<Tensor> loaded = LoadValueTensor(v);
      if (!loaded.ok()) return loaded.status().WithContext(fmt::format("loading '{}'", v.name));
      Tensor stored(StorageDtype(views_[id].storage), v.shape);
      WidenInto(*loaded, views_[id].storage, stored.data());
      views_[id].data = stored.data();
      resident_.emplace(static_cast<int>(id), std::move(stored));
    }
    return Status::Ok();
  }

  // Every activation gets a buffer from a pool (runtime/activation_plan.h), sized here and
  // allocated once. A view output shares its input's buffer.
  void PlanActivations() {
    std::vector<bool> view_node(ops_.size());
    for (size_t i = 0; i < ops_.size(); ++i) view_node[i] = ops_[i].output_is_view;
    const ActivationPlan plan = runtime::PlanActivations(graph_, view_node, [this](int id) {
      return views_[id].elements * baseline::StorageBytes(views_[id].storage);
    });
    for (int64_t bytes : plan.capacity) arena_.push_back(Bytes(bytes));
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      if (plan.buffer_of[id] >= 0 && !plan.is_view[id]) {
        views_[id].data = arena_[plan.buffer_of[id]].data();
      }
    }
  }

  // Points every graph input (and fed weight) at its feed, widening f16 / bf16 and narrow integer
  // feeds into a buffer of their own.
  Status BindFeeds(const TensorMap& feeds) {
    for (const auto& [id, tensor] : feeds) {
      if (id < 0 || static_cast<size_t>(id) >= graph_.values.size()) {
        return InvalidArgument(
            fmt::format("feed for value id {}, which the graph does not have", id));
      }
      const Value& v = graph_.values[id];
      if (v.kind != ValueKind::kInput && v.kind != ValueKind::kWeight) {
        return InvalidArgument(
            fmt::format("feed for '{}', which is not an input or weight", v.name));
      }
      if (tensor.dtype() != v.dtype || tensor.shape() != v.shape) {
        return InvalidArgument(fmt::format("feed for '{}' is {}, expected {}{}", v.name,
                                           DescribeTensor(tensor), planner::DTypeName(v.dtype),
                                           planner::ShapeToString(v.shape)));
      }
      View& view = views_[id];
      if (tensor.dtype() == StorageDtype(view.storage)) {
        // Kernels never write their inputs, so the feed is read in place.
        view.data = const_cast<void*>(tensor.data());
        continue;
      }
      Tensor& widened = widened_[id];
      if (widened.elements() != tensor.elements()) {
        widened = Tensor(StorageDtype(view.storage), v.shape);
      }
      WidenInto(tensor, view.storage, widened.data());
      view.data = widened.data();
    }
    for (int id : graph_.inputs) {
      if (feeds.count(id) == 0) {
        return InvalidArgument(fmt::format("input '{}' is not fed", graph_.values[id].name));
      }
    }
    for (const auto& [id, tensor] : resident_) {
      if (feeds.count(id) == 0) views_[id].data = const_cast<void*>(tensor.data());
    }
    return Status::Ok();
  }

  Status Execute(const TensorMap& feeds, TensorMap* outputs, std::vector<double>* node_seconds) {
    ApplyThreads();
    KF_RETURN_IF_ERROR(BindFeeds(feeds));
    if (node_seconds != nullptr) node_seconds->assign(graph_.nodes.size(), 0.0);
    baseline::OpArgs args;
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      const Node& node = graph_.nodes[i];
      const baseline::PreparedOp& op = ops_[i];
      const auto start = std::chrono::steady_clock::now();
      if (op.output_is_view) views_[node.outputs[0]].data = views_[node.inputs[0]].data;
      if (op.run) {
        args.inputs.clear();
        args.outputs.clear();
        for (int id : node.inputs) args.inputs.push_back(id >= 0 ? &views_[id] : nullptr);
        for (int id : node.outputs) args.outputs.push_back(id >= 0 ? &views_[id] : nullptr);
        args.scratch = static_cast<std::byte*>(scratch_.data());
        Status status = op.run(args);
        if (!status.ok()) return status.WithContext(DescribeNode(node));
      }
      if (node_seconds != nullptr) {
        (*node_seconds)[i] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    }
    outputs->clear();
    for (int id : graph_.outputs) {
      const Value& v = graph_.values[id];
      if (views_[id].data == nullptr) {
        return Internal(fmt::format("output '{}' was never computed", v.name));
      }
      Tensor out(v.dtype, v.shape);
      NarrowInto(views_[id], out);
      outputs->insert_or_assign(id, std::move(out));
    }
    return Status::Ok();
  }

  const Graph& graph_;
  const BaselineOptions options_;
  std::vector<View> views_;                // by value id
  std::vector<baseline::PreparedOp> ops_;  // by node index
  std::vector<Tensor> arena_;
  std::map<int, Tensor> resident_;  // constants and weights with data, in storage dtypes
  std::map<int, Tensor> widened_;   // feeds whose dtype is not their storage dtype
  Tensor scratch_;
};

}  // namespace

Result<std::unique_ptr<BaselineExecutor>> BaselineExecutor::Create(const planner::Graph& graph,
                                                                   const BaselineOptions& options) {
  if (options.threads < 0) {
    return InvalidArgument(
        fmt::format("threads is {}; it must be 0 (every core) or more", options.threads));
  }
  for (const auto& [index, op] : options.custom_ops) {
    if (index < 0 || static_cast<size_t>(index) >= graph.nodes.size()) {
      return InvalidArgument(
          fmt::format("custom op for node {}, which the graph does not have ({} nodes)", index,
                      graph.nodes.size()));
    }
    if (!op) return InvalidArgument(fmt::format("custom op for node {} is empty", index));
  }
  auto executor = std::make_unique<BaselineExecutorImpl>(graph, options);
  KF_RETURN_IF_ERROR(executor->Prepare());
  return std::unique_ptr<BaselineExecutor>(std::move(executor));
}

}  // namespace kfleet::runtime
