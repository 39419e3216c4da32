// The harness on an NVIDIA GPU: candidates and the CUDA baseline run on device memory, timed
// with CUDA events after an L2 flush, on the default stream.
#include <fmt/format.h>

#include "cuda/baseline.h"
#include "cuda/device.h"
#include "eval/device.h"

namespace kfleet::eval {
namespace {

std::string Description(int index, const cuda::DeviceProperties& p) {
  return fmt::format("cuda:{} {} ({}, {} SMs, {} MiB L2)", index, p.name, p.arch(), p.sms,
                     p.l2_bytes >> 20);
}

// Device copies of host tensors, and the kernel's view of them.
struct DeviceTensors {
  std::vector<cuda::DeviceBuffer> buffers;
  std::vector<KernelArg> args;

  static Result<DeviceTensors> Upload(const std::vector<runtime::Tensor>& tensors) {
    DeviceTensors d;
    for (const runtime::Tensor& t : tensors) {
      KF_ASSIGN_OR_RETURN(cuda::DeviceBuffer buffer, cuda::Upload(t));
      d.args.push_back(KernelArg{buffer.data(), t.dtype(), &t.shape()});
      d.buffers.push_back(std::move(buffer));
    }
    return d;
  }
  Status Download(std::vector<runtime::Tensor>& tensors) const {
    for (size_t i = 0; i < tensors.size(); ++i) {
      KF_RETURN_IF_ERROR(cuda::CopyToHost(buffers[i].data(), tensors[i]));
    }
    return Status::Ok();
  }
};

// A CUDA error after a call to the candidate, and whether the context survived it.
Status KernelFault(const Status& error, bool* fatal) {
  const Status healthy = cuda::CheckHealthy();
  *fatal = !healthy.ok();
  return Internal(fmt::format("the kernel raised a CUDA error: {}{}", error.message(),
                              *fatal ? " (the device context is lost)" : ""));
}

class CudaKernelSubject final : public TimedSubject {
 public:
  CudaKernelSubject(const KernelLibrary& kernel, std::vector<std::vector<runtime::Tensor>> inputs,
                    std::vector<runtime::Tensor> outputs, cuda::L2Flusher& flusher,
                    cuda::EventTimer timer)
      : kernel_(kernel),
        host_inputs_(std::move(inputs)),
        host_outputs_(std::move(outputs)),
        flusher_(flusher),
        timer_(std::move(timer)) {}

  Status Prepare() {
    for (const auto& set : host_inputs_) {
      KF_ASSIGN_OR_RETURN(DeviceTensors d, DeviceTensors::Upload(set));
      inputs_.push_back(std::move(d));
    }
    KF_ASSIGN_OR_RETURN(outputs_, DeviceTensors::Upload(host_outputs_));
    return Status::Ok();
  }

  Result<double> TimeOnce(int* status) override {
    const DeviceTensors& in = inputs_[next_++ % inputs_.size()];
    KF_RETURN_IF_ERROR(flusher_.Flush());
    KF_RETURN_IF_ERROR(timer_.Start());
    *status = kernel_.Run(in.args, outputs_.args, nullptr);
    KF_RETURN_IF_ERROR(timer_.Stop());
    Result<double> us = timer_.ElapsedUs();
    const Status done = cuda::Synchronize();
    if (!done.ok()) {
      bool fatal = false;
      return KernelFault(done, &fatal);
    }
    return us;
  }

 private:
  const KernelLibrary& kernel_;
  std::vector<std::vector<runtime::Tensor>> host_inputs_;
  std::vector<runtime::Tensor> host_outputs_;
  cuda::L2Flusher& flusher_;
  cuda::EventTimer timer_;
  std::vector<DeviceTensors> inputs_;
  DeviceTensors outputs_;
  size_t next_ = 0;
};

class CudaBaselineSubject final : public TimedSubject {
 public:
  CudaBaselineSubject(std::vector<std::unique_ptr<cuda::CudaBaseline>> executors,
                      cuda::L2Flusher& flusher, cuda::EventTimer timer)
      : executors_(std::move(executors)), flusher_(flusher), timer_(std::move(timer)) {}

  Result<double> TimeOnce(int* status) override {
    last_ = next_++ % executors_.size();
    KF_RETURN_IF_ERROR(flusher_.Flush());
    KF_RETURN_IF_ERROR(timer_.Start());
    const Status run = executors_[last_]->Launch();
    KF_RETURN_IF_ERROR(timer_.Stop());
    *status = run.ok() ? 0 : 1;
    if (!run.ok()) return run;
    KF_RETURN_IF_ERROR(cuda::Synchronize());
    return timer_.ElapsedUs();
  }
  Status LastOutputs(runtime::TensorMap* outputs, size_t* set) override {
    *set = last_;
    return executors_[last_]->FetchOutputs(outputs);
  }

 private:
  std::vector<std::unique_ptr<cuda::CudaBaseline>> executors_;
  cuda::L2Flusher& flusher_;
  cuda::EventTimer timer_;
  size_t next_ = 0;
  size_t last_ = 0;
};

class CudaDevice final : public EvalDevice {
 public:
  CudaDevice(int index, cuda::DeviceProperties properties, cuda::L2Flusher flusher)
      : index_(index), properties_(std::move(properties)), flusher_(std::move(flusher)) {}

  std::string_view backend() const override { return "cuda"; }
  std::string Describe() const override { return Description(index_, properties_); }

  Result<int> Call(const KernelLibrary& kernel, std::vector<runtime::Tensor>& inputs,
                   std::vector<runtime::Tensor>& outputs, bool* fatal) override {
    *fatal = false;
    KF_ASSIGN_OR_RETURN(DeviceTensors in, DeviceTensors::Upload(inputs));
    KF_ASSIGN_OR_RETURN(DeviceTensors out, DeviceTensors::Upload(outputs));
    const int status = kernel.Run(in.args, out.args, nullptr);
    if (const Status done = cuda::Synchronize(); !done.ok()) return KernelFault(done, fatal);
    KF_RETURN_IF_ERROR(out.Download(outputs));
    KF_RETURN_IF_ERROR(in.Download(inputs));
    return status;
  }

  Result<std::unique_ptr<TimedSubject>> TimedKernel(
      const KernelLibrary& kernel, const std::vector<std::vector<runtime::Tensor>>& input_sets,
      const std::vector<runtime::Tensor>& outputs) override {
    KF_ASSIGN_OR_RETURN(cuda::EventTimer timer, cuda::EventTimer::Create());
    auto subject = std::make_unique<CudaKernelSubject>(kernel, input_sets, outputs, flusher_,
                                                       std::move(timer));
    KF_RETURN_IF_ERROR(subject->Prepare());
    return std::unique_ptr<TimedSubject>(std::move(subject));
  }

  Result<std::unique_ptr<TimedSubject>> TimedBaseline(
      const planner::Graph& spec, const std::vector<runtime::TensorMap>& feed_sets) override {
    std::vector<std::unique_ptr<cuda::CudaBaseline>> executors;
    for (const runtime::TensorMap& feeds : feed_sets) {
      KF_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBaseline> executor,
                          cuda::CudaBaseline::Create(spec));
      KF_RETURN_IF_ERROR(executor->SetFeeds(feeds));
      executors.push_back(std::move(executor));
    }
    KF_ASSIGN_OR_RETURN(cuda::EventTimer timer, cuda::EventTimer::Create());
    return std::unique_ptr<TimedSubject>(
        std::make_unique<CudaBaselineSubject>(std::move(executors), flusher_, std::move(timer)));
  }

  int64_t flush_bytes() const override { return flusher_.bytes(); }

 private:
  int index_;
  cuda::DeviceProperties properties_;
  cuda::L2Flusher flusher_;
};

// Whole runs of a CUDA baseline: feeds uploaded once, then each run is one Launch between two
// events. Outputs stay on the device.
class CudaRunTimer final : public ModelRunTimer {
 public:
  CudaRunTimer(cuda::CudaBaseline& executor, cuda::EventTimer timer)
      : executor_(executor), timer_(std::move(timer)) {}

  Result<double> TimeRunUs() override {
    KF_RETURN_IF_ERROR(timer_.Start());
    const Status launched = executor_.Launch();
    // Stopped whatever Launch said, so no event is left pending on the stream.
    const Status stopped = timer_.Stop();
    KF_RETURN_IF_ERROR(launched);
    KF_RETURN_IF_ERROR(stopped);
    KF_RETURN_IF_ERROR(cuda::Synchronize());
    return timer_.ElapsedUs();
  }

 private:
  cuda::CudaBaseline& executor_;
  cuda::EventTimer timer_;
};

}  // namespace

Result<std::unique_ptr<runtime::BaselineExecutor>> MakeCudaBaselineExecutor(
    const planner::Graph& graph, const runtime::BaselineOptions& options, int device) {
  KF_RETURN_IF_ERROR(cuda::UseDevice(device));
  KF_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBaseline> executor,
                      cuda::CudaBaseline::Create(graph, options));
  return std::unique_ptr<runtime::BaselineExecutor>(std::move(executor));
}

planner::DType CudaStorageDtype(planner::DType dtype) { return cuda::StorageDtype(dtype); }

Result<std::unique_ptr<ModelRunTimer>> MakeCudaRunTimer(runtime::BaselineExecutor& executor,
                                                        const runtime::TensorMap& feeds) {
  auto* gpu = dynamic_cast<cuda::CudaBaseline*>(&executor);
  if (gpu == nullptr) {
    return InvalidArgument(
        "a CUDA run timer needs an executor from MakeBaselineExecutor(\"cuda\")");
  }
  KF_RETURN_IF_ERROR(gpu->SetFeeds(feeds));
  KF_ASSIGN_OR_RETURN(cuda::EventTimer timer, cuda::EventTimer::Create());
  return std::unique_ptr<ModelRunTimer>(std::make_unique<CudaRunTimer>(*gpu, std::move(timer)));
}

Status InitializeCuda(int index) { return cuda::UseDevice(index); }

Result<CudaDeviceSummary> DescribeCudaDevice(int index) {
  KF_ASSIGN_OR_RETURN(cuda::DeviceProperties properties, cuda::Properties(index));
  return CudaDeviceSummary{properties.arch(), Description(index, properties)};
}

Status CheckCudaDevice(int index) {
  KF_RETURN_IF_ERROR(cuda::UseDevice(index));
  return cuda::CheckHealthy();
}

Result<std::unique_ptr<EvalDevice>> MakeCudaDevice(int index, int64_t flush_bytes) {
  KF_RETURN_IF_ERROR(cuda::UseDevice(index));
  KF_ASSIGN_OR_RETURN(cuda::DeviceProperties properties, cuda::Properties(index));
  KF_ASSIGN_OR_RETURN(cuda::L2Flusher flusher, cuda::L2Flusher::Create(flush_bytes));
  return std::unique_ptr<EvalDevice>(
      std::make_unique<CudaDevice>(index, std::move(properties), std::move(flusher)));
}

}  // namespace kfleet::eval
