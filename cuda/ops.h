// Kernels of the CUDA baseline executor (cuda/baseline.h), private to this module. As in the CPU
// baseline (runtime/baseline_ops.h), each node is prepared once on the host (attributes read,
// geometry and broadcast strides computed, library descriptors built) into a closure that
// queues its work on the default stream when the executor runs. Preparation code is plain C++
// (.cc, compiled by the host compiler); the device code lives in kernels_*.cu behind the
// launchers that kernels_*.h declare.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/baseline_ops.h"

namespace kfleet::cuda::ops {

using planner::DType;
using planner::Shape;
// Attribute and constant-input access for preparation, shared with the CPU baseline.
using runtime::baseline::NodeContext;

// One value during a run: device memory in the storage dtype (StorageDtype in cuda/baseline.h:
// f32 / f16 / bf16 for floats, i64 for integers, u8-sized kBool for bool).
struct View {
  void* data = nullptr;
  DType dtype = DType::kF32;        // storage dtype
  DType graph_dtype = DType::kF32;  // the graph's dtype (Cast rounds to it)
  Shape shape;
  int64_t elements = 0;

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// Library handles and the workspace the linear ops share, created on first use and owned by the
// executor (implemented in ops_linear.cc).
class Libraries {
 public:
  Libraries();
  ~Libraries();
  Libraries(const Libraries&) = delete;
  Libraries& operator=(const Libraries&) = delete;

  Result<void*> CublasLt();  // cublasLtHandle_t
  Result<void*> Cudnn();     // cudnnHandle_t, bound to the default stream
  // Device workspace of at least `bytes` (grown on demand between runs, never during one).
  Result<void*> Workspace(size_t bytes);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct OpArgs {
  std::vector<const View*> inputs;  // nullptr where an optional input is omitted
  std::vector<View*> outputs;       // nullptr where an optional output is omitted
  void* scratch = nullptr;          // PreparedOp::scratch_bytes of device memory, 256-byte aligned
  Libraries* libraries = nullptr;

  bool HasInput(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  bool HasOutput(size_t i) const { return i < outputs.size() && outputs[i] != nullptr; }
};

// Queues the op's work on the default stream; returns an error for a failed launch or library
// call (checked with cudaGetLastError after each launch), never waits for the device.
using Kernel = std::function<Status(const OpArgs&)>;

struct PreparedOp {
  Kernel run;  // may be empty for a pure view
  size_t scratch_bytes = 0;
  // Output 0 is input 0's memory under another shape (Reshape and friends): no copy.
  bool output_is_view = false;
};

// Per family; each returns InvalidArgument for an op it does not know.
// Elementwise arithmetic, comparisons, Where, Cast, unary math (ops_pointwise.cc).
Result<PreparedOp> PreparePointwiseOp(const NodeContext& c);
// Transpose, Expand, Concat, Split, Slice, Gather, views, ... (ops_layout.cc).
Result<PreparedOp> PrepareLayoutOp(const NodeContext& c);
// Softmax, LogSoftmax, LayerNormalization, ReduceMean / Sum / Max, BatchNormalization,
// InstanceNormalization, GlobalAveragePool (ops_reduce.cc).
Result<PreparedOp> PrepareReduceOp(const NodeContext& c);
// MatMul, Gemm (cuBLASLt); Conv, MaxPool, AveragePool (cuDNN) (ops_linear.cc).
Result<PreparedOp> PrepareLinearOp(const NodeContext& c);
bool IsPointwiseOp(std::string_view op);
bool IsLayoutOp(std::string_view op);
bool IsReduceOp(std::string_view op);
bool IsLinearOp(std::string_view op);

// Errors from the CUDA runtime as Status: Internal("<what>: cudaErrorX: text"). `code` is a
// cudaError_t. LastLaunchError() collects cudaGetLastError() after a launch.
Status CudaStatus(int code, std::string_view what);
Status LastLaunchError(std::string_view what);

}  // namespace kfleet::cuda::ops
