#include "cuda/device.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <utility>

#include "cuda/device_kernels.h"
#include "cuda/ops.h"

namespace kfleet::cuda {
namespace {

Status Fail(cudaError_t code, std::string_view what) {
  return Internal(fmt::format("{}: {}", what, ErrorText(static_cast<int>(code))));
}

#define KF_CUDA_RETURN(call, what)                                                        \
  do {                                                                                    \
    if (const cudaError_t kf_rc = (call); kf_rc != cudaSuccess) return Fail(kf_rc, what); \
  } while (false)

}  // namespace

std::string ErrorText(int code) {
  const auto error = static_cast<cudaError_t>(code);
  return fmt::format("{}: {}", cudaGetErrorName(error), cudaGetErrorString(error));
}

bool IsStickyError(int code) {
  switch (static_cast<cudaError_t>(code)) {
    case cudaErrorIllegalAddress:
    case cudaErrorMisalignedAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorIllegalInstruction:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

Status Available(int device) {
  int count = 0;
  if (const cudaError_t rc = cudaGetDeviceCount(&count); rc != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(ErrorText(static_cast<int>(rc)));
  }
  if (device < 0 || device >= count) {
    return Unavailable(fmt::format("CUDA device {} does not exist ({} found)", device, count));
  }
  return Status::Ok();
}

Status UseDevice(int device) {
  KF_RETURN_IF_ERROR(Available(device));
  KF_CUDA_RETURN(cudaSetDevice(device), fmt::format("select CUDA device {}", device));
  return Status::Ok();
}

std::string DeviceProperties::arch() const { return fmt::format("sm_{}{}", major, minor); }

Result<DeviceProperties> Properties(int device) {
  KF_RETURN_IF_ERROR(Available(device));
  cudaDeviceProp prop{};
  KF_CUDA_RETURN(cudaGetDeviceProperties(&prop, device), "read the device's properties");
  DeviceProperties p;
  p.name = prop.name;
  p.major = prop.major;
  p.minor = prop.minor;
  p.sms = prop.multiProcessorCount;
  p.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  p.l2_bytes = prop.l2CacheSize;
  p.memory_bus_bits = prop.memoryBusWidth;
  // CUDA 13 dropped the clock fields from cudaDeviceProp; the attributes remain (kHz).
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) == cudaSuccess) {
    p.clock_mhz = khz / 1000;
  }
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess) {
    p.memory_clock_mhz = khz / 1000;
  }
  cudaGetLastError();
  return p;
}

Status CheckHealthy() {
  if (const cudaError_t rc = cudaGetLastError(); rc != cudaSuccess) {
    if (IsStickyError(rc)) return Fail(rc, "the device is unusable");
  }
  if (const cudaError_t rc = cudaDeviceSynchronize(); rc != cudaSuccess) {
    return Fail(rc, "the device is unusable");
  }
  KF_ASSIGN_OR_RETURN(DeviceBuffer cell, DeviceBuffer::Allocate(sizeof(int32_t)));
  constexpr int32_t kProbe = 0x6b666c74;
  if (const int rc = detail::LaunchEcho(static_cast<int32_t*>(cell.data()), kProbe); rc != 0) {
    return Fail(static_cast<cudaError_t>(rc), "the device is unusable: a probe kernel");
  }
  int32_t back = 0;
  KF_CUDA_RETURN(cudaMemcpy(&back, cell.data(), sizeof back, cudaMemcpyDeviceToHost),
                 "the device is unusable: reading a probe kernel's result");
  if (back != kProbe) {
    return Internal(
        fmt::format("the device is unusable: a probe kernel wrote {:#x}, not {:#x}", back, kProbe));
  }
  return Status::Ok();
}

Result<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  if (const cudaError_t rc = cudaMalloc(&buffer.data_, bytes); rc != cudaSuccess) {
    cudaGetLastError();
    return ResourceExhausted(
        fmt::format("cudaMalloc of {} bytes: {}", bytes, ErrorText(static_cast<int>(rc))));
  }
  buffer.bytes_ = bytes;
  return buffer;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Status CopyToDevice(const runtime::Tensor& tensor, void* device) {
  if (tensor.bytes() == 0) return Status::Ok();
  KF_CUDA_RETURN(cudaMemcpy(device, tensor.data(), tensor.bytes(), cudaMemcpyHostToDevice),
                 "copy to the device");
  return Status::Ok();
}

Status CopyToHost(const void* device, runtime::Tensor& tensor) {
  if (tensor.bytes() == 0) return Status::Ok();
  KF_CUDA_RETURN(cudaMemcpy(tensor.data(), device, tensor.bytes(), cudaMemcpyDeviceToHost),
                 "copy from the device");
  return Status::Ok();
}

Result<DeviceBuffer> Upload(const runtime::Tensor& tensor) {
  KF_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(tensor.bytes()));
  KF_RETURN_IF_ERROR(CopyToDevice(tensor, buffer.data()));
  return buffer;
}

Status Synchronize() {
  if (const cudaError_t launch = cudaGetLastError(); launch != cudaSuccess) {
    return Fail(launch, "a kernel launch failed");
  }
  KF_CUDA_RETURN(cudaDeviceSynchronize(), "wait for the device");
  return Status::Ok();
}

Result<L2Flusher> L2Flusher::Create(int64_t bytes) {
  if (bytes <= 0) {
    int device = 0;
    KF_CUDA_RETURN(cudaGetDevice(&device), "find the current device");
    int l2 = 0;
    KF_CUDA_RETURN(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device), "read the L2 size");
    bytes = std::max<int64_t>(2 * int64_t{l2}, int64_t{8} << 20);
  }
  KF_ASSIGN_OR_RETURN(DeviceBuffer buffer, DeviceBuffer::Allocate(static_cast<size_t>(bytes)));
  return L2Flusher(std::move(buffer));
}

Status L2Flusher::Flush() {
  ++value_;
  KF_CUDA_RETURN(cudaMemsetAsync(buffer_.data(), value_, buffer_.bytes(), nullptr), "flush the L2");
  return Status::Ok();
}

Result<EventTimer> EventTimer::Create() {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  KF_CUDA_RETURN(cudaEventCreate(&start), "create a CUDA event");
  if (const cudaError_t rc = cudaEventCreate(&stop); rc != cudaSuccess) {
    cudaEventDestroy(start);
    return Fail(rc, "create a CUDA event");
  }
  return EventTimer(start, stop);
}

EventTimer::~EventTimer() {
  if (start_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  if (stop_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

EventTimer::EventTimer(EventTimer&& other) noexcept
    : start_(std::exchange(other.start_, nullptr)), stop_(std::exchange(other.stop_, nullptr)) {}

EventTimer& EventTimer::operator=(EventTimer&& other) noexcept {
  if (this != &other) {
    this->~EventTimer();
    start_ = std::exchange(other.start_, nullptr);
    stop_ = std::exchange(other.stop_, nullptr);
  }
  return *this;
}

Status EventTimer::Start() {
  KF_CUDA_RETURN(cudaEventRecord(static_cast<cudaEvent_t>(start_), nullptr), "record an event");
  return Status::Ok();
}

Status EventTimer::Stop() {
  KF_CUDA_RETURN(cudaEventRecord(static_cast<cudaEvent_t>(stop_), nullptr), "record an event");
  return Status::Ok();
}

Result<double> EventTimer::ElapsedUs() {
  KF_CUDA_RETURN(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)), "wait for an event");
  float ms = 0;
  KF_CUDA_RETURN(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)),
      "read an event timer");
  return static_cast<double>(ms) * 1000.0;
}

namespace ops {

Status CudaStatus(int code, std::string_view what) {
  if (code == 0) return Status::Ok();
  return Internal(fmt::format("{}: {}", what, ErrorText(code)));
}

Status LastLaunchError(std::string_view what) {
  return CudaStatus(static_cast<int>(cudaGetLastError()), what);
}

}  // namespace ops
}  // namespace kfleet::cuda
