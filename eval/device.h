// Where the harness runs a candidate: host memory and the CPU baseline ("cpu"), or a GPU's
// memory and the CUDA baseline ("cuda"). The test stages work on host tensors either way; a
// device copies them in and out around each call, so the same checks (unwritten outputs,
// written inputs, comparison with the float64 reference) hold on every backend.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "eval/kernel_library.h"
#include "planner/graph.h"
#include "runtime/baseline.h"
#include "runtime/tensor.h"

namespace kfleet::eval {

// One thing the profile stage times (the candidate on one input set, or the baseline).
class TimedSubject {
 public:
  virtual ~TimedSubject() = default;
  // One call, after the caches were flushed: microseconds of device (or wall) time, and the
  // call's status (0 = success, else a kf_status) in *status. An error Status when the device
  // itself failed.
  virtual Result<double> TimeOnce(int* status) = 0;
  // The outputs of the last call by value id, and which input set it ran on (the baseline's,
  // for its check against the reference). Only baselines have them.
  virtual Status LastOutputs(runtime::TensorMap* outputs, size_t* set);
};

class EvalDevice {
 public:
  virtual ~EvalDevice() = default;
  virtual std::string_view backend() const = 0;  // "cpu", "cuda"
  // "cuda:0 NVIDIA H200 (sm_90, 132 SMs, 50 MiB L2)", for reports.
  virtual std::string Describe() const = 0;

  // Runs the kernel once on `inputs` and `outputs` (host tensors of the spec's dtypes and
  // shapes). On a GPU both are copied to device memory first and back afterwards, so an output
  // element the kernel did not write keeps its poison and an input it wrote shows the change.
  // Returns the kernel's kf_status, or an error Status when the device failed (a CUDA error
  // raised by the kernel: an illegal address, a launch failure); `fatal` is then set when the
  // device is unusable for the rest of this process.
  virtual Result<int> Call(const KernelLibrary& kernel, std::vector<runtime::Tensor>& inputs,
                           std::vector<runtime::Tensor>& outputs, bool* fatal) = 0;

  // The candidate, ready to be timed over `input_sets` (rotated call by call; each set one
  // tensor per spec input) with outputs of the spec's shapes.
  virtual Result<std::unique_ptr<TimedSubject>> TimedKernel(
      const KernelLibrary& kernel, const std::vector<std::vector<runtime::Tensor>>& input_sets,
      const std::vector<runtime::Tensor>& outputs) = 0;
  // The backend's baseline executor on the spec, one instance per input set (feeds by value id),
  // rotated the same way.
  virtual Result<std::unique_ptr<TimedSubject>> TimedBaseline(
      const planner::Graph& spec, const std::vector<runtime::TensorMap>& feed_sets) = 0;

  // Bytes written to evict the caches before each timed call.
  virtual int64_t flush_bytes() const = 0;
};

// The CPU: host tensors as they are, wall-clock timing after a flush of `flush_bytes` (0: twice
// the last-level cache).
std::unique_ptr<EvalDevice> MakeCpuDevice(int64_t flush_bytes = 0);

// Starts the backend's runtime on device `index` (the CUDA context) so it is up before the
// harness enters its sandbox; nothing for "cpu".
Status InitializeBackend(std::string_view backend, int index);

// Ok when device `index` of the backend runs a probe kernel correctly (after a kernel faulted,
// before the next task uses the card); nothing to check for "cpu".
Status CheckDevice(std::string_view backend, int index);

// A CUDA device (device_cuda.cc); Unavailable in a build without CUDA.
Result<std::unique_ptr<EvalDevice>> MakeCudaDevice(int index, int64_t flush_bytes = 0);
Status InitializeCuda(int index);
Status CheckCudaDevice(int index);

// What a CUDA device is, for compiling for it and for reports.
struct CudaDeviceSummary {
  std::string arch;         // "sm_90"
  std::string description;  // as EvalDevice::Describe
};
Result<CudaDeviceSummary> DescribeCudaDevice(int index);

// "cpu" or "cuda" (device `index`). Unavailable when this build has no CUDA support or the
// device cannot be used, with the reason.
Result<std::unique_ptr<EvalDevice>> MakeEvalDevice(std::string_view backend, int index,
                                                   int64_t flush_bytes = 0);

// The backend's baseline executor on `graph`, for whole-model runs (model profiles, end-to-end
// verification): "cpu" runtime::BaselineExecutor; "cuda" cuda::CudaBaseline on GPU `device`,
// which becomes the calling thread's current device, so custom ops get that device's pointers
// and run on its default stream. Unavailable without CUDA support; InvalidArgument for another
// backend. `graph` must outlive the executor.
Result<std::unique_ptr<runtime::BaselineExecutor>> MakeBaselineExecutor(
    std::string_view backend, const planner::Graph& graph, const runtime::BaselineOptions& options,
    int device = 0);

// The dtype the backend's baseline executor holds a value of `dtype` in, which is what its custom
// ops receive: the CPU holds every floating dtype in f32 and integers in i64; CUDA keeps f32, f16
// and bf16 as they are (f64 in f32, integers in i64). bool stays bool on both.
planner::DType BaselineStorageDtype(std::string_view backend, planner::DType dtype);

// Times whole runs of an executor from MakeBaselineExecutor on fixed feeds.
class ModelRunTimer {
 public:
  virtual ~ModelRunTimer() = default;
  // One run, in microseconds: on the CPU the wall time of Run; on a GPU the CUDA-event time of
  // one Launch on the default stream (the feeds were uploaded once and no outputs are copied
  // back, so host traffic is not counted; host-side launch gaps between ops are, as in eager).
  virtual Result<double> TimeRunUs() = 0;
};
// `executor` (from MakeBaselineExecutor(backend, ...)) and `feeds` must outlive the timer.
Result<std::unique_ptr<ModelRunTimer>> MakeModelRunTimer(std::string_view backend,
                                                         runtime::BaselineExecutor& executor,
                                                         const runtime::TensorMap& feeds);

// The CUDA halves of the three above (device_cuda.cc); Unavailable without CUDA support.
Result<std::unique_ptr<runtime::BaselineExecutor>> MakeCudaBaselineExecutor(
    const planner::Graph& graph, const runtime::BaselineOptions& options, int device);
planner::DType CudaStorageDtype(planner::DType dtype);
Result<std::unique_ptr<ModelRunTimer>> MakeCudaRunTimer(runtime::BaselineExecutor& executor,
                                                        const runtime::TensorMap& feeds);

}  // namespace kfleet::eval
