// The NVIDIA device as the rest of kfleet sees it: whether a GPU is usable, what it is, device
// memory, health checks, cache flushing and event timing. Only this module includes the CUDA
// runtime's headers; everything here speaks Status, host tensors and plain pointers.
//
// Built only when CMake found nvcc (KFLEET_HAVE_CUDA); the CUDA runtime is linked statically and
// loads the driver (libcuda.so.1) at run time, so these binaries start on machines without a
// GPU and report Unavailable there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"
#include "runtime/tensor.h"

namespace kfleet::cuda {

// Ok when device `device` can run kernels; Unavailable with the CUDA runtime's reason otherwise
// ("no CUDA-capable device is detected", "CUDA driver version is insufficient").
Status Available(int device = 0);

// Makes `device` current for the calling thread (cudaSetDevice), with a clear error.
Status UseDevice(int device);

struct DeviceProperties {
  std::string name;  // "NVIDIA H200"
  int major = 0;     // compute capability
  int minor = 0;
  int sms = 0;
  int64_t memory_bytes = 0;
  int64_t l2_bytes = 0;
  int clock_mhz = 0;         // peak SM clock
  int memory_clock_mhz = 0;  // peak memory clock
  int memory_bus_bits = 0;
  std::string arch() const;  // "sm_90"
};
Result<DeviceProperties> Properties(int device = 0);

// "cudaErrorIllegalAddress: an illegal memory access was encountered"; `code` is a cudaError_t.
std::string ErrorText(int code);
// True for the errors that leave the context unusable until the process exits (illegal
// address, misaligned access, launch failure, assert, illegal instruction, ...).
bool IsStickyError(int code);

// Ok when the current device answers: pending errors are collected (cudaGetLastError and a
// device synchronize) and a one-thread kernel runs and returns the value it was given. A
// sticky error from an earlier kernel is reported here as Internal("the device is unusable:
// ...") so the caller stops using this process.
Status CheckHealthy();

// Device memory, freed on destruction. Moves only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Synchronous copies between host tensors and device memory (exactly tensor.bytes()).
Status CopyToDevice(const runtime::Tensor& tensor, void* device);
Status CopyToHost(const void* device, runtime::Tensor& tensor);
// A new buffer holding `tensor`'s bytes.
Result<DeviceBuffer> Upload(const runtime::Tensor& tensor);
// Blocks until the device finished everything queued; an error for a launch that failed
// (cudaGetLastError) or for a fault while the work ran.
Status Synchronize();

// Evicts the L2: writes a buffer of `bytes` (0: twice the current device's L2) with
// cudaMemsetAsync on the default stream before a timed call.
class L2Flusher {
 public:
  static Result<L2Flusher> Create(int64_t bytes = 0);
  Status Flush();
  int64_t bytes() const { return static_cast<int64_t>(buffer_.bytes()); }

 private:
  explicit L2Flusher(DeviceBuffer buffer) : buffer_(std::move(buffer)) {}
  DeviceBuffer buffer_;
  uint8_t value_ = 0;
};

// A pair of CUDA events on the default stream: Start(), the work, Stop(), then ElapsedUs()
// (which waits for the stop event).
class EventTimer {
 public:
  static Result<EventTimer> Create();
  ~EventTimer();
  EventTimer(EventTimer&& other) noexcept;
  EventTimer& operator=(EventTimer&& other) noexcept;
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  Status Start();
  Status Stop();
  Result<double> ElapsedUs();

 private:
  EventTimer(void* start, void* stop) : start_(start), stop_(stop) {}
  void* start_ = nullptr;  // cudaEvent_t
  void* stop_ = nullptr;
};

}  // namespace kfleet::cuda
