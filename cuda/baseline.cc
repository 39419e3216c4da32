#include "cuda/baseline.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "cuda/device.h"
#include "cuda/ops.h"
#include "runtime/activation_plan.h"

namespace kfleet::cuda {
namespace {

using planner::DescribeNode;
using planner::Graph;
using planner::Node;
using planner::Value;
using planner::ValueKind;
using runtime::CustomOp;
using runtime::CustomOpTensor;
using runtime::Tensor;
using runtime::TensorMap;

int64_t StorageBytes(const ops::View& view) {
  return view.elements * planner::DTypeBytes(view.dtype);
}

// Uploads `tensor` into `device` in `dtype`, converting on the host only when the dtypes differ.
Status UploadAs(const Tensor& tensor, planner::DType dtype, void* device) {
  if (tensor.dtype() == dtype) return CopyToDevice(tensor, device);
  return CopyToDevice(runtime::ConvertTensor(tensor, dtype), device);
}

class CudaBaselineImpl final : public CudaBaseline {
 public:
  CudaBaselineImpl(const Graph& graph, const runtime::BaselineOptions& options)
      : graph_(graph), options_(options) {}

  Status Prepare() {
    views_.resize(graph_.values.size());
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      const Value& v = graph_.values[id];
      ops::View& view = views_[id];
      view.dtype = StorageDtype(v.dtype);
      view.graph_dtype = v.dtype;
      view.shape = v.shape;
      view.elements = v.has_shape ? planner::NumElements(v.shape) : 0;
    }
    ops_.reserve(graph_.nodes.size());
    size_t scratch_bytes = 0;
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      KF_ASSIGN_OR_RETURN(ops::PreparedOp op, PrepareNode(static_cast<int>(i), graph_.nodes[i]));
      scratch_bytes = std::max(scratch_bytes, op.scratch_bytes);
      ops_.push_back(std::move(op));
    }
    KF_ASSIGN_OR_RETURN(scratch_, DeviceBuffer::Allocate(scratch_bytes));
    KF_RETURN_IF_ERROR(LoadConstants());
    return PlanActivations();
  }

  Status Run(const TensorMap& feeds, TensorMap* outputs) override {
    KF_RETURN_IF_ERROR(SetFeeds(feeds));
    KF_RETURN_IF_ERROR(Launch());
    return FetchOutputs(outputs);
  }

  Status RunTimed(const TensorMap& feeds, TensorMap* outputs,
                  std::vector<double>* node_seconds) override {
    KF_RETURN_IF_ERROR(SetFeeds(feeds));
    // One pair of events per node, created on the first timed run and kept.
    while (timers_.size() < graph_.nodes.size()) {
      KF_ASSIGN_OR_RETURN(EventTimer timer, EventTimer::Create());
      timers_.push_back(std::move(timer));
    }
    KF_RETURN_IF_ERROR(Execute(&timers_));
    KF_RETURN_IF_ERROR(FetchOutputs(outputs));
    node_seconds->assign(graph_.nodes.size(), 0.0);
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      KF_ASSIGN_OR_RETURN(double us, timers_[i].ElapsedUs());
      (*node_seconds)[i] = std::max(0.0, us) * 1e-6;
    }
    return Status::Ok();
  }

  // Validates and uploads the feeds (converted to their storage dtypes on the host where those
  // differ) into device buffers the executor keeps, reused while their sizes stay the same.
  Status SetFeeds(const TensorMap& feeds) override {
    bound_ = false;
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
        return InvalidArgument(fmt::format(
            "feed for '{}' is {}, expected {}{}", v.name, runtime::DescribeTensor(tensor),
            planner::DTypeName(v.dtype), planner::ShapeToString(v.shape)));
      }
    }
    for (int id : graph_.inputs) {
      if (feeds.count(id) == 0) {
        return InvalidArgument(fmt::format("input '{}' is not fed", graph_.values[id].name));
      }
    }
    for (const auto& [id, tensor] : feeds) {
      ops::View& view = views_[id];
      DeviceBuffer& buffer = feed_buffers_[id];
      // At least one byte, so a fed value never has a null pointer.
      const auto bytes = static_cast<size_t>(std::max<int64_t>(StorageBytes(view), 1));
      if (buffer.bytes() != bytes) {
        KF_ASSIGN_OR_RETURN(buffer, DeviceBuffer::Allocate(bytes));
      }
      KF_RETURN_IF_ERROR(UploadAs(tensor, view.dtype, buffer.data()));
      view.data = buffer.data();
    }
    for (const auto& [id, buffer] : resident_) {
      if (feeds.count(id) == 0) views_[id].data = buffer.data();
    }
    // A weight without data in the graph has to be fed: a kernel would read a null pointer.
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      const Value& v = graph_.values[id];
      const int value_id = static_cast<int>(id);
      if (v.kind == ValueKind::kWeight && !v.consumers.empty() && resident_.count(value_id) == 0 &&
          feeds.count(value_id) == 0) {
        return InvalidArgument(
            fmt::format("weight '{}' has no data in the graph and is not fed", v.name));
      }
    }
    bound_ = true;
    return Status::Ok();
  }

  Status Launch() override {
    if (!bound_) return FailedPrecondition("Launch before a successful SetFeeds");
    return Execute(nullptr);
  }

  Status FetchOutputs(TensorMap* outputs) override {
    KF_RETURN_IF_ERROR(Synchronize());
    outputs->clear();
    for (int id : graph_.outputs) {
      const Value& v = graph_.values[id];
      const ops::View& view = views_[id];
      if (view.data == nullptr) {
        return Internal(fmt::format("output '{}' was never computed", v.name));
      }
      Tensor stored(view.dtype, v.shape);
      KF_RETURN_IF_ERROR(CopyToHost(view.data, stored));
      outputs->insert_or_assign(id, stored.dtype() == v.dtype
                                        ? std::move(stored)
                                        : runtime::ConvertTensor(stored, v.dtype));
    }
    return Status::Ok();
  }

  int64_t DeviceBytes() const override {
    size_t bytes = scratch_.bytes();
    for (const auto& entry : resident_) bytes += entry.second.bytes();
    for (const DeviceBuffer& buffer : arena_) bytes += buffer.bytes();
    for (const auto& entry : feed_buffers_) bytes += entry.second.bytes();
    return static_cast<int64_t>(bytes);
  }

 private:
  Result<ops::PreparedOp> PrepareNode(int index, const Node& node) const {
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
    const ops::NodeContext context(graph_, node, 1);
    Result<ops::PreparedOp> op = InvalidArgument(
        fmt::format("{}: no CUDA baseline kernel for {}", DescribeNode(node), node.op_type));
    if (ops::IsPointwiseOp(node.op_type)) {
      op = ops::PreparePointwiseOp(context);
    } else if (ops::IsReduceOp(node.op_type)) {
      op = ops::PrepareReduceOp(context);
    } else if (ops::IsLayoutOp(node.op_type)) {
      op = ops::PrepareLayoutOp(context);
    } else if (ops::IsLinearOp(node.op_type)) {
      op = ops::PrepareLinearOp(context);
    } else {
      return op;
    }
    if (!op.ok()) return op.status().WithContext(DescribeNode(node));
    // A view shares input 0's memory: it needs one.
    if (op->output_is_view && (node.inputs.empty() || node.inputs[0] < 0 || node.outputs.empty() ||
                               node.outputs[0] < 0)) {
      return Internal(fmt::format("{}: a view without an input 0 or output 0", DescribeNode(node)));
    }
    return op;
  }

  // `callback` lives in options_, as long as the executor. The tensor lists are kept between runs
  // so a run allocates nothing; the callback gets device pointers and queues its work on the
  // default stream.
  static ops::PreparedOp PrepareCustomOp(const CustomOp& callback) {
    ops::PreparedOp op;
    op.run = [&callback, inputs = std::vector<CustomOpTensor>(),
              outputs = std::vector<CustomOpTensor>()](const ops::OpArgs& args) mutable {
      const auto fill = [](const auto& views, std::vector<CustomOpTensor>& tensors) {
        tensors.clear();
        for (const ops::View* view : views) {
          CustomOpTensor& tensor = tensors.emplace_back();
          if (view == nullptr) continue;
          tensor.data = view->data;
          tensor.dtype = view->dtype;
          tensor.shape = &view->shape;
        }
      };
      fill(args.inputs, inputs);
      fill(args.outputs, outputs);
      return callback(inputs, outputs);
    };
    return op;
  }

  // Constants, and weights that carry data, are converted to their storage dtypes once and stay
  // resident on the device.
  Status LoadConstants() {
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      const Value& v = graph_.values[id];
      const bool has_data = v.constant.has_value() || v.raw_data || v.external;
      if (!(v.kind == ValueKind::kConstant || (v.kind == ValueKind::kWeight && has_data))) continue;
      Result<Tensor> loaded = runtime::LoadValueTensor(v);
      if (!loaded.ok()) return loaded.status().WithContext(fmt::format("loading '{}'", v.name));
      if (loaded->elements() != views_[id].elements) {
        return Internal(fmt::format("'{}' holds {}, the graph says {}", v.name,
                                    runtime::DescribeTensor(*loaded),
                                    planner::ShapeToString(v.shape)));
      }
      const auto bytes = static_cast<size_t>(std::max<int64_t>(StorageBytes(views_[id]), 1));
      KF_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(bytes));
      KF_RETURN_IF_ERROR(UploadAs(*loaded, views_[id].dtype, buffer.data())
                             .WithContext(fmt::format("uploading '{}'", v.name)));
      views_[id].data = buffer.data();
      resident_.emplace(static_cast<int>(id), std::move(buffer));
    }
    return Status::Ok();
  }

  // Every activation gets a buffer from a pool (runtime/activation_plan.h; work is queued in
  // order on one stream, so a buffer is free for the next writer once its last reader is
  // queued), sized here and allocated once. A view output shares its input's buffer.
  Status PlanActivations() {
    std::vector<bool> view_node(ops_.size());
    for (size_t i = 0; i < ops_.size(); ++i) view_node[i] = ops_[i].output_is_view;
    const runtime::ActivationPlan plan = runtime::PlanActivations(
        graph_, view_node, [this](int id) { return StorageBytes(views_[id]); });
    arena_.reserve(plan.capacity.size());
    for (int64_t bytes : plan.capacity) {
      // At least one byte, so a computed value never has a null pointer.
      KF_ASSIGN_OR_RETURN(DeviceBuffer buffer,
                          DeviceBuffer::Allocate(static_cast<size_t>(std::max<int64_t>(bytes, 1))));
      arena_.push_back(std::move(buffer));
    }
    for (size_t id = 0; id < graph_.values.size(); ++id) {
      if (plan.buffer_of[id] >= 0 && !plan.is_view[id]) {
        views_[id].data = arena_[plan.buffer_of[id]].data();
      }
    }
    return Status::Ok();
  }

  // Queues every node on the default stream, between each node's events when `timers` is set.
  Status Execute(std::vector<EventTimer>* timers) {
    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      const Node& node = graph_.nodes[i];
      const ops::PreparedOp& op = ops_[i];
      if (timers != nullptr) KF_RETURN_IF_ERROR((*timers)[i].Start());
      if (op.output_is_view) views_[node.outputs[0]].data = views_[node.inputs[0]].data;
      if (op.run) {
        args_.inputs.clear();
        args_.outputs.clear();
        for (int id : node.inputs) args_.inputs.push_back(id >= 0 ? &views_[id] : nullptr);
        for (int id : node.outputs) args_.outputs.push_back(id >= 0 ? &views_[id] : nullptr);
        args_.scratch = scratch_.data();
        args_.libraries = &libraries_;
        Status status = op.run(args_);
        if (!status.ok()) return status.WithContext(DescribeNode(node));
      }
      if (timers != nullptr) KF_RETURN_IF_ERROR((*timers)[i].Stop());
    }
    return Status::Ok();
  }

  const Graph& graph_;
  const runtime::BaselineOptions options_;
  std::vector<ops::View> views_;              // by value id
  std::vector<ops::PreparedOp> ops_;          // by node index
  std::vector<DeviceBuffer> arena_;           // the activation pool
  std::map<int, DeviceBuffer> resident_;      // constants and weights with data, stored
  std::map<int, DeviceBuffer> feed_buffers_;  // the last feeds, stored
  DeviceBuffer scratch_;
  ops::Libraries libraries_;
  ops::OpArgs args_;                // reused by every node, so a run allocates nothing
  std::vector<EventTimer> timers_;  // by node index, for RunTimed
  bool bound_ = false;              // a SetFeeds succeeded since the last change
};

}  // namespace

planner::DType StorageDtype(planner::DType dtype) {
  switch (dtype) {
    case planner::DType::kF32:
    case planner::DType::kF16:
    case planner::DType::kBF16:
      return dtype;
    case planner::DType::kF64:
      return planner::DType::kF32;
    case planner::DType::kBool:
      return planner::DType::kBool;
    case planner::DType::kI64:
    case planner::DType::kI32:
    case planner::DType::kI16:
    case planner::DType::kI8:
    case planner::DType::kU8:
      return planner::DType::kI64;
  }
  return planner::DType::kI64;
}

Result<std::unique_ptr<CudaBaseline>> CudaBaseline::Create(
    const planner::Graph& graph, const runtime::BaselineOptions& options) {
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
  auto executor = std::make_unique<CudaBaselineImpl>(graph, options);
  KF_RETURN_IF_ERROR(executor->Prepare());
  return std::unique_ptr<CudaBaseline>(std::move(executor));
}

}  // namespace kfleet::cuda
