#include "eval/device.h"

#include <fmt/format.h>

#include <chrono>

#include "eval/harness.h"
#include "runtime/baseline.h"

namespace kfleet::eval {

Status TimedSubject::LastOutputs(runtime::TensorMap*, size_t*) {
  return FailedPrecondition("this timed subject keeps no outputs");
}

namespace {

using Clock = std::chrono::steady_clock;

// Evicts the kernel's data from every cache level before a timed call.
class CacheFlusher {
 public:
  explicit CacheFlusher(int64_t bytes) : buffer_(static_cast<size_t>(bytes), 1) {}
  void Flush() {
    auto* data = buffer_.data();
    const auto n = static_cast<int64_t>(buffer_.size());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 64) data[i] = static_cast<unsigned char>(data[i] + 1);
  }
  int64_t bytes() const { return static_cast<int64_t>(buffer_.size()); }

 private:
  std::vector<unsigned char> buffer_;
};

double TimeWall(CacheFlusher& flusher, const std::function<int()>& call, int* status) {
  flusher.Flush();
  const Clock::time_point start = Clock::now();
  *status = call();
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

class CpuKernelSubject final : public TimedSubject {
 public:
  CpuKernelSubject(const KernelLibrary& kernel, std::vector<std::vector<runtime::Tensor>> inputs,
                   std::vector<runtime::Tensor> outputs, CacheFlusher& flusher)
      : kernel_(kernel),
        inputs_(std::move(inputs)),
        outputs_(std::move(outputs)),
        flusher_(flusher) {
    for (runtime::Tensor& t : outputs_) out_ptrs_.push_back(&t);
    for (auto& set : inputs_) {
      std::vector<runtime::Tensor*>& ptrs = in_ptrs_.emplace_back();
      for (runtime::Tensor& t : set) ptrs.push_back(&t);
    }
  }
  Result<double> TimeOnce(int* status) override {
    const size_t set = next_++ % in_ptrs_.size();
    return TimeWall(
        flusher_, [&] { return kernel_.Run(in_ptrs_[set], out_ptrs_); }, status);
  }

 private:
  const KernelLibrary& kernel_;
  std::vector<std::vector<runtime::Tensor>> inputs_;
  std::vector<runtime::Tensor> outputs_;
  std::vector<std::vector<runtime::Tensor*>> in_ptrs_;
  std::vector<runtime::Tensor*> out_ptrs_;
  CacheFlusher& flusher_;
  size_t next_ = 0;
};

class CpuBaselineSubject final : public TimedSubject {
 public:
  CpuBaselineSubject(std::vector<std::unique_ptr<runtime::BaselineExecutor>> executors,
                     std::vector<runtime::TensorMap> feeds, CacheFlusher& flusher)
      : executors_(std::move(executors)), feeds_(std::move(feeds)), flusher_(flusher) {}
  Result<double> TimeOnce(int* status) override {
    const size_t set = next_++ % executors_.size();
    last_set_ = set;
    Status run = Status::Ok();
    const double us = TimeWall(
        flusher_,
        [&] {
          run = executors_[set]->Run(feeds_[set], &last_);
          return run.ok() ? 0 : 1;
        },
        status);
    if (!run.ok()) return run;
    return us;
  }
  Status LastOutputs(runtime::TensorMap* outputs, size_t* set) override {
    *outputs = last_;
    *set = last_set_;
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<runtime::BaselineExecutor>> executors_;
  std::vector<runtime::TensorMap> feeds_;
  CacheFlusher& flusher_;
  runtime::TensorMap last_;
  size_t next_ = 0;
  size_t last_set_ = 0;
};

class CpuDevice final : public EvalDevice {
 public:
  explicit CpuDevice(int64_t flush_bytes)
      : flusher_(flush_bytes > 0 ? flush_bytes : DefaultFlushBytes()) {}
  std::string_view backend() const override { return "cpu"; }
  std::string Describe() const override { return "cpu"; }

  Result<int> Call(const KernelLibrary& kernel, std::vector<runtime::Tensor>& inputs,
                   std::vector<runtime::Tensor>& outputs, bool* fatal) override {
    *fatal = false;
    std::vector<runtime::Tensor*> in;
    std::vector<runtime::Tensor*> out;
    for (runtime::Tensor& t : inputs) in.push_back(&t);
    for (runtime::Tensor& t : outputs) out.push_back(&t);
    return kernel.Run(in, out);
  }

  Result<std::unique_ptr<TimedSubject>> TimedKernel(
      const KernelLibrary& kernel, const std::vector<std::vector<runtime::Tensor>>& input_sets,
      const std::vector<runtime::Tensor>& outputs) override {
    return std::unique_ptr<TimedSubject>(
        std::make_unique<CpuKernelSubject>(kernel, input_sets, outputs, flusher_));
  }

  Result<std::unique_ptr<TimedSubject>> TimedBaseline(
      const planner::Graph& spec, const std::vector<runtime::TensorMap>& feed_sets) override {
    std::vector<std::unique_ptr<runtime::BaselineExecutor>> executors;
    for (size_t i = 0; i < feed_sets.size(); ++i) {
      Result<std::unique_ptr<runtime::BaselineExecutor>> executor =
          runtime::BaselineExecutor::Create(spec);
      if (!executor.ok()) return executor.status();
      executors.push_back(std::move(*executor));
    }
    return std::unique_ptr<TimedSubject>(
        std::make_unique<CpuBaselineSubject>(std::move(executors), feed_sets, flusher_));
  }

  int64_t flush_bytes() const override { return flusher_.bytes(); }

 private:
  CacheFlusher flusher_;
};

}  // namespace

std::unique_ptr<EvalDevice> MakeCpuDevice(int64_t flush_bytes) {
  return std::make_unique<CpuDevice>(flush_bytes);
}

#ifndef KFLEET_HAVE_CUDA
namespace {
Status NoCuda() {
  return Unavailable(
      "this build of kfleet has no CUDA support (nvcc was not found when it was built)");
}
}  // namespace

Status InitializeCuda(int) { return NoCuda(); }
Status CheckCudaDevice(int) { return NoCuda(); }
Result<CudaDeviceSummary> DescribeCudaDevice(int) { return NoCuda(); }
Result<std::unique_ptr<EvalDevice>> MakeCudaDevice(int, int64_t) { return NoCuda(); }
Result<std::unique_ptr<runtime::BaselineExecutor>> MakeCudaBaselineExecutor(
    const planner::Graph&, const runtime::BaselineOptions&, int) {
  return NoCuda();
}
// No CUDA executor can exist in this build to hold anything.
planner::DType CudaStorageDtype(planner::DType dtype) { return dtype; }
Result<std::unique_ptr<ModelRunTimer>> MakeCudaRunTimer(runtime::BaselineExecutor&,
                                                        const runtime::TensorMap&) {
  return NoCuda();
}
#endif

namespace {

Status UnknownBackend(std::string_view backend) {
  return InvalidArgument(fmt::format("unknown backend '{}': expected cpu or cuda", backend));
}

class CpuRunTimer final : public ModelRunTimer {
 public:
  CpuRunTimer(runtime::BaselineExecutor& executor, const runtime::TensorMap& feeds)
      : executor_(executor), feeds_(feeds) {}
  Result<double> TimeRunUs() override {
    const Clock::time_point start = Clock::now();
    KF_RETURN_IF_ERROR(executor_.Run(feeds_, &outputs_));
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  }

 private:
  runtime::BaselineExecutor& executor_;
  const runtime::TensorMap& feeds_;
  runtime::TensorMap outputs_;
};

}  // namespace

Result<std::unique_ptr<runtime::BaselineExecutor>> MakeBaselineExecutor(
    std::string_view backend, const planner::Graph& graph, const runtime::BaselineOptions& options,
    int device) {
  if (backend == "cpu") return runtime::BaselineExecutor::Create(graph, options);
  if (backend == "cuda") return MakeCudaBaselineExecutor(graph, options, device);
  return UnknownBackend(backend);
}

planner::DType BaselineStorageDtype(std::string_view backend, planner::DType dtype) {
  if (backend == "cuda") return CudaStorageDtype(dtype);
  if (planner::IsFloat(dtype)) return planner::DType::kF32;
  return dtype == planner::DType::kBool ? planner::DType::kBool : planner::DType::kI64;
}

Result<std::unique_ptr<ModelRunTimer>> MakeModelRunTimer(std::string_view backend,
                                                         runtime::BaselineExecutor& executor,
                                                         const runtime::TensorMap& feeds) {
  if (backend == "cpu") {
    return std::unique_ptr<ModelRunTimer>(std::make_unique<CpuRunTimer>(executor, feeds));
  }
  if (backend == "cuda") return MakeCudaRunTimer(executor, feeds);
  return UnknownBackend(backend);
}

Status CheckDevice(std::string_view backend, int index) {
  if (backend == "cuda") return CheckCudaDevice(index);
  return Status::Ok();
}

Status InitializeBackend(std::string_view backend, int index) {
  if (backend == "cuda") return InitializeCuda(index);
  return Status::Ok();
}

Result<std::unique_ptr<EvalDevice>> MakeEvalDevice(std::string_view backend, int index,
                                                   int64_t flush_bytes) {
  if (backend == "cpu") return MakeCpuDevice(flush_bytes);
  if (backend == "cuda") return MakeCudaDevice(index, flush_bytes);
  return UnknownBackend(backend);
}

}  // namespace kfleet::eval
