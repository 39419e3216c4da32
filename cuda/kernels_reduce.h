// Device code behind cuda/ops_reduce.cc (kernels_reduce.cu): softmax, reductions and
// normalizations over a row-major tensor viewed as [outer, n, inner], reducing over n. Values are
// loaded in their storage type, combined in f32 (i64 for integer reductions) and rounded once on
// store. Every launcher queues its kernels on the default stream, checks cudaGetLastError after
// each launch and returns the first cudaError_t (0 when everything was queued); none waits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kfleet::cuda::reduce {

// How an operand is stored on the device.
enum class DataType : int32_t { kF32, kF16, kBF16, kI64 };

enum class ReduceKind : int32_t { kSum, kMean, kMax };

// Softmax (or LogSoftmax) over n of [outer, n, inner]; f32 / f16 / bf16.
int LaunchSoftmax(DataType type, bool log, const void* x, void* y, int64_t outer, int64_t n,
                  int64_t inner);

// Device scratch LaunchReduce needs for [outer, n, inner]: partial results when a few long rows
// are split across blocks, 0 otherwise.
size_t ReduceScratchBytes(int64_t outer, int64_t n, int64_t inner);

// y[o, i] = sum / mean / max over n of x[o, :, i]; any DataType. A mean of nothing is NaN (0 for
// integers), a max of nothing the lowest value.
int LaunchReduce(DataType type, ReduceKind kind, const void* x, void* y, int64_t outer, int64_t n,
                 int64_t inner, void* scratch);

// Normalizes each row of x viewed as [rows, n]: y = (x - mean) / sqrt(var + epsilon) * scale +
// bias.
struct NormArgs {
  DataType type = DataType::kF32;  // x, y, and per-element scale / bias
  const void* x = nullptr;
  void* y = nullptr;
  int64_t rows = 0;
  int64_t n = 0;
  // channels == 0 (LayerNormalization): n elements each, of `type`, bias optional (nullptr).
  // channels > 0 (InstanceNormalization): row r uses element r % channels, of the types below.
  const void* scale = nullptr;
  const void* bias = nullptr;
  int64_t channels = 0;
  DataType scale_type = DataType::kF32;
  DataType bias_type = DataType::kF32;
  float epsilon = 1e-5f;
  // Optional per-row outputs (LayerNormalization's Mean and InvStdDev), of `stats_type`.
  void* mean = nullptr;
  void* inv_std_dev = nullptr;
  DataType stats_type = DataType::kF32;
};
int LaunchNormalize(const NormArgs& args);

// Inference-mode BatchNormalization of x [N, C, inner...] with per-channel scale, bias, mean and
// var (each C elements of its own floating type).
struct BatchNormArgs {
  DataType type = DataType::kF32;  // x and y
  const void* x = nullptr;
  void* y = nullptr;
  int64_t elements = 0;
  int64_t channels = 0;
  int64_t inner = 0;  // elements per (n, c) plane
  const void* scale = nullptr;
  const void* bias = nullptr;
  const void* mean = nullptr;
  const void* var = nullptr;
  DataType scale_type = DataType::kF32;
  DataType bias_type = DataType::kF32;
  DataType mean_type = DataType::kF32;
  DataType var_type = DataType::kF32;
  float epsilon = 1e-5f;
};
int LaunchBatchNorm(const BatchNormArgs& args);

// A gather into a dense tensor of shape dims[0 .. rank): the element at coordinates c is read from
// x at sum(c[d] * strides[d]). Reorders dims (reductions over axes that are not adjacent) or
// broadcasts (stride 0: LayerNormalization's scale given with fewer elements).
inline constexpr int kMaxStridedRank = 8;
struct StridedCopy {
  int rank = 0;
  int64_t dims[kMaxStridedRank] = {};
  int64_t strides[kMaxStridedRank] = {};
};
// element_bytes is 1, 2, 4 or 8.
int LaunchStridedCopy(size_t element_bytes, const void* x, void* y, const StridedCopy& geometry);

}  // namespace kfleet::cuda::reduce
