// The CUDA baseline: what speedups on NVIDIA GPUs are measured against. It runs a graph the way
// an eager framework (PyTorch eager) does on the GPU: one kernel or library call per op, in
// graph order, on the legacy default stream; cuBLASLt for MatMul / Gemm, cuDNN for Conv and
// pooling, vectorized elementwise kernels, warp / block reductions for Softmax, LayerNorm and
// reductions, gather / copy kernels for layout ops; views (Reshape and friends) copy nothing.
//
// Values are stored in the graph's dtype (f32, f16, bf16; f64 is held as f32), integers as i64
// and bool as one byte, and arithmetic on half types is done in f32 with one rounding per op,
// as eager frameworks do. Custom ops (BaselineOptions::custom_ops) receive device pointers and
// run on the default stream, in order with the rest.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"
#include "runtime/baseline.h"
#include "runtime/tensor.h"

namespace kfleet::cuda {

// The dtype a value of `dtype` is held in on the device.
planner::DType StorageDtype(planner::DType dtype);

class CudaBaseline : public runtime::BaselineExecutor {
 public:
  // Checks every node has a CUDA kernel, uploads constants and weights that carry data and
  // allocates every activation once (a pool reused as values die, as a caching allocator
  // does). Uses the current device (UseDevice). `graph` must outlive the executor.
  static Result<std::unique_ptr<CudaBaseline>> Create(const planner::Graph& graph,
                                                      const runtime::BaselineOptions& options = {});

  // BaselineExecutor: Run uploads `feeds`, runs every node and downloads the outputs in their
  // graph dtypes; RunTimed also times every node with CUDA events (node_seconds[i]).
  //
  // For timing whole runs without host traffic: SetFeeds uploads once, Launch queues one run
  // on the default stream and returns without waiting, FetchOutputs synchronizes and downloads.
  virtual Status SetFeeds(const runtime::TensorMap& feeds) = 0;
  virtual Status Launch() = 0;
  virtual Status FetchOutputs(runtime::TensorMap* outputs) = 0;

  // Bytes of device memory the executor holds (weights, activations, workspaces).
  virtual int64_t DeviceBytes() const = 0;
};

}  // namespace kfleet::cuda
