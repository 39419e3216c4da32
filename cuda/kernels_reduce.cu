#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/kernels_reduce.h"

namespace kfleet::cuda::reduce {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;
// Rows of up to this many elements go to a group of lanes (a warp, or kSmallGroup lanes for rows
// of at most kSmallGroup loads), several rows per block, cached in registers between passes;
// longer rows get a block each and are read twice.
constexpr int64_t kMaxGroupRow = 1024;
constexpr int kMaxCachedPerLane = 32;  // kMaxGroupRow / kWarpSize
constexpr int kRowThreads = 128;
// At most 128 registers for the register-cached kernels; left free, ptxas spilled a few bytes in
// the 32-slot variants.
constexpr int kMinRowBlocks = 4;
constexpr int kSmallGroup = 8;
constexpr int kBlockThreads = 512;
// Reductions over a middle axis: a block covers kColumnWidth adjacent columns (coalesced loads),
// its kColumnDepth thread rows split the reduced dim.
constexpr int kColumnWidth = 32;
constexpr int kColumnDepth = 8;
constexpr int kElementwiseThreads = 256;
// Fewer rows than this, each longer than kSplitMinRow, leave most SMs idle with a block per row:
// the rows are split into segments of about kSplitSegment elements, reduced in two stages.
constexpr int64_t kSplitFewerRows = 128;
constexpr int64_t kSplitMinRow = 32768;
constexpr int64_t kSplitSegment = 16384;
constexpr int64_t kMaxSplits = 1024;

int LaunchStatus() { return static_cast<int>(cudaGetLastError()); }
constexpr int kBadConfiguration = static_cast<int>(cudaErrorInvalidConfiguration);
constexpr int kBadValue = static_cast<int>(cudaErrorInvalidValue);

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- Loads, stores and accumulators ----

__device__ __forceinline__ float ToAcc(float v) { return v; }
__device__ __forceinline__ float ToAcc(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToAcc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ long long ToAcc(long long v) { return v; }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
struct Accumulator {
  using Type = float;
};
template <>
struct Accumulator<long long> {
  using Type = long long;
};

// 16 bytes (kVec = 16 / sizeof(T)) move as one vector load / store.
template <typename T>
constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <int kVec, typename T, typename A>
__device__ __forceinline__ void Load(const T* p, A (&out)[kVec]) {
  const Pack<T, kVec> pack = *reinterpret_cast<const Pack<T, kVec>*>(p);
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = ToAcc(pack.v[k]);
}

template <int kVec, typename T>
__device__ __forceinline__ void Store(T* p, const float (&in)[kVec]) {
  Pack<T, kVec> pack;
#pragma unroll
  for (int k = 0; k < kVec; ++k) pack.v[k] = FromFloat<T>(in[k]);
  *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
}

// Per-channel parameters come in any floating type.
__device__ __forceinline__ float LoadAny(const void* p, DataType type, int64_t i) {
  switch (type) {
    case DataType::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DataType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void StoreAny(void* p, DataType type, int64_t i, float v) {
  switch (type) {
    case DataType::kF16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case DataType::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
      break;
  }
}

// Max that propagates NaN, as eager frameworks' max reductions do.
__device__ __forceinline__ float MaxOf(float a, float b) { return (isnan(a) || a > b) ? a : b; }

template <bool kMax>
__device__ __forceinline__ float Combine(float a, float b) {
  return kMax ? MaxOf(a, b) : a + b;
}
template <bool kMax>
__device__ __forceinline__ long long Combine(long long a, long long b) {
  if (kMax) return a > b ? a : b;
  // Integer sums wrap, as the reference's do.
  return static_cast<long long>(static_cast<unsigned long long>(a) +
                                static_cast<unsigned long long>(b));
}

template <typename A>
struct Lowest;
template <>
struct Lowest<float> {
  static __device__ __forceinline__ float Value() { return -INFINITY; }
};
template <>
struct Lowest<long long> {
  static __device__ __forceinline__ long long Value() { return LLONG_MIN; }
};

template <bool kMax, typename A>
__device__ __forceinline__ A Identity() {
  return kMax ? Lowest<A>::Value() : A{0};
}

template <typename Out>
__device__ __forceinline__ Out Finish(float acc, int64_t count, bool mean) {
  return FromFloat<Out>(mean ? acc / static_cast<float>(count) : acc);
}
template <typename Out>
__device__ __forceinline__ Out Finish(long long acc, int64_t count, bool mean) {
  return mean ? (count == 0 ? 0 : acc / count) : acc;
}

// ---- Warp and block reductions ----

// Reduces over aligned groups of kGroup lanes; every lane of the warp must call it.
template <int kGroup, bool kMax, typename A>
__device__ __forceinline__ A GroupReduce(A v) {
#pragma unroll
  for (int offset = kGroup / 2; offset > 0; offset /= 2) {
    v = Combine<kMax>(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Every thread of the block gets the result; `shared` holds one value per warp.
template <bool kMax, typename A>
__device__ __forceinline__ A BlockReduce(A v, A* shared) {
  v = GroupReduce<kWarpSize, kMax>(v);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  __syncthreads();  // an earlier reduction may still be reading `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x) / kWarpSize ? shared[lane] : Identity<kMax, A>();
  return GroupReduce<kWarpSize, kMax>(v);
}

// Running max and sum of exp(x - max) (online softmax).
struct SoftmaxState {
  float max;
  float sum;
};

__device__ __forceinline__ void Merge(SoftmaxState& a, const SoftmaxState& b) {
  const float max = fmaxf(a.max, b.max);
  if (max == -INFINITY) return;  // both saw only -inf: nothing to add
  a.sum = a.sum * __expf(a.max - max) + b.sum * __expf(b.max - max);
  a.max = max;
}

template <int kVec>
__device__ __forceinline__ void Absorb(SoftmaxState& s, const float (&v)[kVec]) {
  float local = v[0];
#pragma unroll
  for (int k = 1; k < kVec; ++k) local = fmaxf(local, v[k]);
  if (local > s.max) {
    s.sum *= __expf(s.max - local);
    s.max = local;
  }
  if (s.max == -INFINITY) return;  // only -inf so far: each contributes exp(-inf) = 0
#pragma unroll
  for (int k = 0; k < kVec; ++k) s.sum += __expf(v[k] - s.max);
}

__device__ __forceinline__ SoftmaxState BlockMerge(SoftmaxState s, float* shared_max,
                                                   float* shared_sum) {
  // Merge is symmetric, so every lane ends with the same state.
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const SoftmaxState other{__shfl_xor_sync(kFullMask, s.max, offset),
                             __shfl_xor_sync(kFullMask, s.sum, offset)};
    Merge(s, other);
  }
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  __syncthreads();
  if (lane == 0) {
    shared_max[warp] = s.max;
    shared_sum[warp] = s.sum;
  }
  __syncthreads();
  const bool has = lane < static_cast<int>(blockDim.x) / kWarpSize;
  s = SoftmaxState{has ? shared_max[lane] : -INFINITY, has ? shared_sum[lane] : 0.0f};
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const SoftmaxState other{__shfl_xor_sync(kFullMask, s.max, offset),
                             __shfl_xor_sync(kFullMask, s.sum, offset)};
    Merge(s, other);
  }
  return s;
}

// Count, mean and sum of squared deviations (Welford / Chan), for rows read once before the
// normalizing pass.
struct Moments {
  float count;
  float mean;
  float m2;
};

__device__ __forceinline__ void Merge(Moments& a, const Moments& b) {
  const float count = a.count + b.count;
  if (count == 0.0f) return;
  const float delta = b.mean - a.mean;
  const float weight = b.count / count;
  a.mean += delta * weight;
  a.m2 += b.m2 + delta * delta * a.count * weight;
  a.count = count;
}

template <int kVec>
__device__ __forceinline__ Moments ChunkMoments(const float (&v)[kVec]) {
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) sum += v[k];
  const float mean = sum / static_cast<float>(kVec);
  float m2 = 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) m2 += (v[k] - mean) * (v[k] - mean);
  return Moments{static_cast<float>(kVec), mean, m2};
}

// Merge is not symmetric in rounding, so each stage takes lane 0's result: every thread of the
// block ends with the same moments.
__device__ __forceinline__ Moments WarpMoments(Moments m) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const Moments other{__shfl_xor_sync(kFullMask, m.count, offset),
                        __shfl_xor_sync(kFullMask, m.mean, offset),
                        __shfl_xor_sync(kFullMask, m.m2, offset)};
    Merge(m, other);
  }
  return Moments{__shfl_sync(kFullMask, m.count, 0), __shfl_sync(kFullMask, m.mean, 0),
                 __shfl_sync(kFullMask, m.m2, 0)};
}

__device__ __forceinline__ Moments BlockMoments(Moments m, Moments* shared) {
  m = WarpMoments(m);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  __syncthreads();
  if (lane == 0) shared[warp] = m;
  __syncthreads();
  m = lane < static_cast<int>(blockDim.x) / kWarpSize ? shared[lane] : Moments{0.0f, 0.0f, 0.0f};
  return WarpMoments(m);
}

// ---- Row layout for block-per-row kernels ----

// A row split into a head of elements before the first 16-byte boundary, aligned vectors of kVec,
// and a tail: rows of any length and offset get vector loads. Scalars (head and tail, fewer than
// 2 * kVec) are numbered 0 .. scalars.
struct RowSplit {
  int64_t head;
  int64_t vectors;
  int64_t body_end;
  int64_t scalars;

  __device__ __forceinline__ int64_t ScalarIndex(int64_t t) const {
    return t < head ? t : body_end + (t - head);
  }
};

template <int kVec, typename T>
__device__ __forceinline__ RowSplit SplitRow(const T* row, int64_t n) {
  const auto misaligned =
      static_cast<int64_t>((reinterpret_cast<uintptr_t>(row) / sizeof(T)) % kVec);
  RowSplit s;
  s.head = misaligned == 0 ? 0 : kVec - misaligned;
  if (s.head > n) s.head = n;
  s.vectors = (n - s.head) / kVec;
  s.body_end = s.head + s.vectors * kVec;
  s.scalars = s.head + (n - s.body_end);
  return s;
}

// ---- Softmax ----

// Lane l of a row's group holds elements [l * kVec, +kVec) + s * kStride, s < kSlots.
template <typename T, int kGroup, int kVec, int kSlots>
__global__ void __launch_bounds__(kRowThreads, kMinRowBlocks)
    SoftmaxRowsGroup(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int n,
                     bool log_softmax) {
  constexpr int kStride = kGroup * kVec;
  const int first = static_cast<int>(threadIdx.x) % kGroup * kVec;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kRowThreads / kGroup) +
                      static_cast<int64_t>(threadIdx.x) / kGroup;
  const bool active = row < rows;
  const int64_t offset = (active ? row : 0) * n + first;
  const T* xl = x + offset;
  float v[kSlots][kVec];
  float max = -INFINITY;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (active && first + s * kStride < n) {
      Load<kVec>(xl + s * kStride, v[s]);
#pragma unroll
      for (int k = 0; k < kVec; ++k) max = MaxOf(max, v[s][k]);
    }
  }
  max = GroupReduce<kGroup, true>(max);
  float sum = 0.0f;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (active && first + s * kStride < n) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        v[s][k] -= max;
        sum += __expf(v[s][k]);
      }
    }
  }
  sum = GroupReduce<kGroup, false>(sum);
  if (!active) return;
  const float scale = __fdividef(1.0f, sum);  // sum is in [1, n]: no IEEE slow path
  const float log_sum = logf(sum);
  T* yl = y + offset;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (first + s * kStride < n) {
      float out[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        // (x - max) first: x - (max + log sum) would cancel for large x.
        out[k] = log_softmax ? v[s][k] - log_sum : __expf(v[s][k]) * scale;
      }
      Store<kVec>(yl + s * kStride, out);
    }
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kBlockThreads)
    SoftmaxRowsBlock(const T* __restrict__ x, T* __restrict__ y, int64_t n, bool log_softmax) {
  __shared__ float shared_max[kWarpSize];
  __shared__ float shared_sum[kWarpSize];
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * n;
  const T* xr = x + offset;
  T* yr = y + offset;
  const RowSplit split = SplitRow<kVec>(xr, n);
  SoftmaxState state{-INFINITY, 0.0f};
  for (int64_t j = threadIdx.x; j < split.vectors; j += blockDim.x) {
    float v[kVec];
    Load<kVec>(xr + split.head + j * kVec, v);
    Absorb(state, v);
  }
  for (int64_t t = threadIdx.x; t < split.scalars; t += blockDim.x) {
    const float v[1] = {ToAcc(xr[split.ScalarIndex(t)])};
    Absorb(state, v);
  }
  state = BlockMerge(state, shared_max, shared_sum);
  const float scale = __fdividef(1.0f, state.sum);
  const float log_sum = logf(state.sum);
  for (int64_t j = threadIdx.x; j < split.vectors; j += blockDim.x) {
    const int64_t i = split.head + j * kVec;
    float v[kVec];
    Load<kVec>(xr + i, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      v[k] = log_softmax ? (v[k] - state.max) - log_sum : __expf(v[k] - state.max) * scale;
    }
    Store<kVec>(yr + i, v);
  }
  for (int64_t t = threadIdx.x; t < split.scalars; t += blockDim.x) {
    const int64_t i = split.ScalarIndex(t);
    const float v = ToAcc(xr[i]);
    yr[i] = FromFloat<T>(log_softmax ? (v - state.max) - log_sum : __expf(v - state.max) * scale);
  }
}

// Softmax over the middle dim of [outer, n, inner]; block b covers columns of one outer index.
template <typename T>
__global__ void __launch_bounds__(kColumnWidth* kColumnDepth)
    SoftmaxColumns(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t inner,
                   int64_t column_blocks, bool log_softmax) {
  __shared__ float shared_max[kColumnDepth][kColumnWidth];
  __shared__ float shared_sum[kColumnDepth][kColumnWidth];
  const int64_t o = blockIdx.x / column_blocks;
  const int64_t j = (blockIdx.x % column_blocks) * kColumnWidth + threadIdx.x;
  const bool active = j < inner;
  const int64_t base = o * n * inner + j;
  SoftmaxState state{-INFINITY, 0.0f};
  if (active) {
    for (int64_t i = threadIdx.y; i < n; i += kColumnDepth) {
      const float v[1] = {ToAcc(x[base + i * inner])};
      Absorb(state, v);
    }
  }
  shared_max[threadIdx.y][threadIdx.x] = state.max;
  shared_sum[threadIdx.y][threadIdx.x] = state.sum;
  __syncthreads();
  if (!active) return;
  // Every thread merges its column's partial states in the same order.
  SoftmaxState total{-INFINITY, 0.0f};
#pragma unroll
  for (int k = 0; k < kColumnDepth; ++k) {
    Merge(total, SoftmaxState{shared_max[k][threadIdx.x], shared_sum[k][threadIdx.x]});
  }
  const float scale = __fdividef(1.0f, total.sum);
  const float log_sum = logf(total.sum);
  for (int64_t i = threadIdx.y; i < n; i += kColumnDepth) {
    const float v = ToAcc(x[base + i * inner]);
    y[base + i * inner] =
        FromFloat<T>(log_softmax ? (v - total.max) - log_sum : __expf(v - total.max) * scale);
  }
}

// ---- Reductions ----

// A group of kGroup lanes per row. Also the second stage of split rows (In = the accumulator):
// `count` is the number of elements a mean divides by.
template <typename In, typename Out, bool kMax, int kGroup, int kVec>
__global__ void __launch_bounds__(kRowThreads)
    ReduceRowsGroup(const In* __restrict__ x, Out* __restrict__ y, int64_t rows, int64_t n,
                    int64_t count, bool mean) {
  using Acc = typename Accumulator<In>::Type;
  const int lane = static_cast<int>(threadIdx.x) % kGroup;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kRowThreads / kGroup) +
                      static_cast<int64_t>(threadIdx.x) / kGroup;
  Acc acc = Identity<kMax, Acc>();
  if (row < rows) {
    const In* xr = x + row * n;
    for (int64_t i = static_cast<int64_t>(lane) * kVec; i < n; i += kGroup * kVec) {
      Acc v[kVec];
      Load<kVec>(xr + i, v);
#pragma unroll
      for (int k = 0; k < kVec; ++k) acc = Combine<kMax>(acc, v[k]);
    }
  }
  acc = GroupReduce<kGroup, kMax>(acc);
  if (row < rows && lane == 0) y[row] = Finish<Out>(acc, count, mean);
}

// A block per row, or per segment of a row when splits > 1: then block b writes its partial
// accumulator to out[b] instead of the row's result.
template <typename T, bool kMax, int kVec>
__global__ void __launch_bounds__(kBlockThreads)
    ReduceRowsBlock(const T* __restrict__ x, void* __restrict__ out, int64_t n, int64_t segment,
                    int64_t splits, bool mean) {
  using Acc = typename Accumulator<T>::Type;
  __shared__ Acc shared[kWarpSize];
  const int64_t row = blockIdx.x / splits;
  const int64_t begin = (blockIdx.x % splits) * segment;
  const int64_t length = begin < n ? (n - begin < segment ? n - begin : segment) : 0;
  const T* xs = x + row * n + begin;
  const RowSplit split = SplitRow<kVec>(xs, length);
  Acc acc = Identity<kMax, Acc>();
  for (int64_t j = threadIdx.x; j < split.vectors; j += blockDim.x) {
    Acc v[kVec];
    Load<kVec>(xs + split.head + j * kVec, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) acc = Combine<kMax>(acc, v[k]);
  }
  for (int64_t t = threadIdx.x; t < split.scalars; t += blockDim.x) {
    acc = Combine<kMax>(acc, ToAcc(xs[split.ScalarIndex(t)]));
  }
  acc = BlockReduce<kMax>(acc, shared);
  if (threadIdx.x != 0) return;
  if (splits > 1) {
    static_cast<Acc*>(out)[blockIdx.x] = acc;
  } else {
    static_cast<T*>(out)[row] = Finish<T>(acc, n, mean);
  }
}

template <typename T, bool kMax>
__global__ void __launch_bounds__(kColumnWidth* kColumnDepth)
    ReduceColumns(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t inner,
                  int64_t column_blocks, bool mean) {
  using Acc = typename Accumulator<T>::Type;
  __shared__ Acc partial[kColumnDepth][kColumnWidth];
  const int64_t o = blockIdx.x / column_blocks;
  const int64_t j = (blockIdx.x % column_blocks) * kColumnWidth + threadIdx.x;
  Acc acc = Identity<kMax, Acc>();
  if (j < inner) {
    const T* column = x + o * n * inner + j;
    for (int64_t i = threadIdx.y; i < n; i += kColumnDepth) {
      acc = Combine<kMax>(acc, ToAcc(column[i * inner]));
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= inner) return;
#pragma unroll
  for (int k = 1; k < kColumnDepth; ++k) acc = Combine<kMax>(acc, partial[k][threadIdx.x]);
  y[o * inner + j] = Finish<T>(acc, n, mean);
}

// ---- Normalizations ----

// Scale and bias of elements [i, i + kVec) of a row: the row's channel values, or per element.
template <int kVec, typename T>
__device__ __forceinline__ void AffineParams(const NormArgs& a, int64_t i, bool vector_loads,
                                             float row_scale, float row_bias, float (&scale)[kVec],
                                             float (&bias)[kVec]) {
  if (a.channels > 0) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      scale[k] = row_scale;
      bias[k] = row_bias;
    }
    return;
  }
  const T* s = static_cast<const T*>(a.scale);
  const T* b = static_cast<const T*>(a.bias);
  if (vector_loads) {
    Load<kVec>(s + i, scale);
    if (b != nullptr) Load<kVec>(b + i, bias);
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k) scale[k] = ToAcc(s[i + k]);
    if (b != nullptr) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) bias[k] = ToAcc(b[i + k]);
    }
  }
  if (b == nullptr) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) bias[k] = 0.0f;
  }
}

__device__ __forceinline__ void RowChannelParams(const NormArgs& a, int64_t row, float& scale,
                                                 float& bias) {
  scale = 1.0f;
  bias = 0.0f;
  if (a.channels == 0) return;
  const int64_t c = row % a.channels;
  scale = LoadAny(a.scale, a.scale_type, c);
  bias = LoadAny(a.bias, a.bias_type, c);
}

__device__ __forceinline__ void StoreStats(const NormArgs& a, int64_t row, float mean,
                                           float inv_std_dev) {
  if (a.mean != nullptr) StoreAny(a.mean, a.stats_type, row, mean);
  if (a.inv_std_dev != nullptr) StoreAny(a.inv_std_dev, a.stats_type, row, inv_std_dev);
}

// Rows cached in registers (lanes as in SoftmaxRowsGroup): exact two-pass mean and variance,
// then the normalizing pass.
template <typename T, int kGroup, int kVec, int kSlots>
__global__ void __launch_bounds__(kRowThreads, kMinRowBlocks) NormRowsGroup(NormArgs a) {
  constexpr int kStride = kGroup * kVec;
  const int first = static_cast<int>(threadIdx.x) % kGroup * kVec;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kRowThreads / kGroup) +
                      static_cast<int64_t>(threadIdx.x) / kGroup;
  const bool active = row < a.rows;
  const int n = static_cast<int>(a.n);
  const int64_t offset = (active ? row : 0) * a.n + first;
  const T* xl = static_cast<const T*>(a.x) + offset;
  float v[kSlots][kVec];
  float sum = 0.0f;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (active && first + s * kStride < n) {
      Load<kVec>(xl + s * kStride, v[s]);
#pragma unroll
      for (int k = 0; k < kVec; ++k) sum += v[s][k];
    }
  }
  const float mean = GroupReduce<kGroup, false>(sum) / static_cast<float>(n);
  float squares = 0.0f;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (active && first + s * kStride < n) {
#pragma unroll
      for (int k = 0; k < kVec; ++k) squares += (v[s][k] - mean) * (v[s][k] - mean);
    }
  }
  const float var = GroupReduce<kGroup, false>(squares) / static_cast<float>(n);
  if (!active) return;
  const float inv_std_dev = rsqrtf(var + a.epsilon);
  float row_scale;
  float row_bias;
  RowChannelParams(a, row, row_scale, row_bias);
  T* yl = static_cast<T*>(a.y) + offset;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    if (first + s * kStride < n) {
      float scale[kVec];
      float bias[kVec];
      AffineParams<kVec, T>(a, first + s * kStride, kVec > 1, row_scale, row_bias, scale, bias);
      float out[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = (v[s][k] - mean) * inv_std_dev * scale[k] + bias[k];
      Store<kVec>(yl + s * kStride, out);
    }
  }
  if (first == 0) StoreStats(a, row, mean, inv_std_dev);
}

// A block per row: moments in one read, normalization in a second.
template <typename T, int kVec>
__global__ void __launch_bounds__(kBlockThreads) NormRowsBlock(NormArgs a) {
  __shared__ Moments shared[kWarpSize];
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(a.x) + row * a.n;
  T* y = static_cast<T*>(a.y) + row * a.n;
  const RowSplit split = SplitRow<kVec>(x, a.n);
  Moments m{0.0f, 0.0f, 0.0f};
  for (int64_t j = threadIdx.x; j < split.vectors; j += blockDim.x) {
    float v[kVec];
    Load<kVec>(x + split.head + j * kVec, v);
    Merge(m, ChunkMoments(v));
  }
  for (int64_t t = threadIdx.x; t < split.scalars; t += blockDim.x) {
    const float v[1] = {ToAcc(x[split.ScalarIndex(t)])};
    Merge(m, ChunkMoments(v));
  }
  m = BlockMoments(m, shared);
  const float mean = m.mean;
  const float inv_std_dev = rsqrtf(m.m2 / static_cast<float>(a.n) + a.epsilon);
  float row_scale;
  float row_bias;
  RowChannelParams(a, row, row_scale, row_bias);
  // Per-element parameters load as vectors when they share the row's 16-byte phase.
  const T* s = static_cast<const T*>(a.scale);
  const T* b = static_cast<const T*>(a.bias);
  const bool vector_params =
      kVec > 1 && a.channels == 0 && reinterpret_cast<uintptr_t>(s + split.head) % 16 == 0 &&
      (b == nullptr || reinterpret_cast<uintptr_t>(b + split.head) % 16 == 0);
  for (int64_t j = threadIdx.x; j < split.vectors; j += blockDim.x) {
    const int64_t i = split.head + j * kVec;
    float v[kVec];
    Load<kVec>(x + i, v);
    float scale[kVec];
    float bias[kVec];
    AffineParams<kVec, T>(a, i, vector_params, row_scale, row_bias, scale, bias);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = (v[k] - mean) * inv_std_dev * scale[k] + bias[k];
    Store<kVec>(y + i, v);
  }
  for (int64_t t = threadIdx.x; t < split.scalars; t += blockDim.x) {
    const int64_t i = split.ScalarIndex(t);
    float scale[1];
    float bias[1];
    AffineParams<1, T>(a, i, false, row_scale, row_bias, scale, bias);
    y[i] = FromFloat<T>((ToAcc(x[i]) - mean) * inv_std_dev * scale[0] + bias[0]);
  }
  if (threadIdx.x == 0) StoreStats(a, row, mean, inv_std_dev);
}

struct ChannelAffine {
  float mean;
  float mul;
  float bias;
};

__device__ __forceinline__ ChannelAffine LoadChannel(const BatchNormArgs& a, int64_t c) {
  const float inv_std_dev = rsqrtf(LoadAny(a.var, a.var_type, c) + a.epsilon);
  return ChannelAffine{LoadAny(a.mean, a.mean_type, c),
                       LoadAny(a.scale, a.scale_type, c) * inv_std_dev,
                       LoadAny(a.bias, a.bias_type, c)};
}

// Threads [0, vectors) take kVec elements each, the next `scalars` threads one element each.
// The channel is found once per thread and advanced when a vector crosses into the next plane.
template <typename T, typename Index, int kVec>
__global__ void __launch_bounds__(kElementwiseThreads)
    BatchNormKernel(BatchNormArgs a, Index vectors, Index scalars) {
  const Index t = static_cast<Index>(blockIdx.x) * static_cast<Index>(blockDim.x) +
                  static_cast<Index>(threadIdx.x);
  const auto inner = static_cast<Index>(a.inner);
  const auto channels = static_cast<Index>(a.channels);
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  if (t < vectors) {
    const Index i = t * kVec;
    const Index plane = i / inner;
    Index within = i - plane * inner;
    Index c = plane % channels;
    ChannelAffine p = LoadChannel(a, static_cast<int64_t>(c));
    float v[kVec];
    Load<kVec>(x + i, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      v[k] = (v[k] - p.mean) * p.mul + p.bias;
      if (k + 1 < kVec && ++within == inner) {
        within = 0;
        c = c + 1 == channels ? 0 : c + 1;
        p = LoadChannel(a, static_cast<int64_t>(c));
      }
    }
    Store<kVec>(y + i, v);
  } else if (t - vectors < scalars) {
    const Index i = vectors * kVec + (t - vectors);
    const ChannelAffine p = LoadChannel(a, static_cast<int64_t>((i / inner) % channels));
    y[i] = FromFloat<T>((ToAcc(x[i]) - p.mean) * p.mul + p.bias);
  }
}

template <typename E>
__global__ void __launch_bounds__(kElementwiseThreads)
    StridedCopyKernel(const E* __restrict__ x, E* __restrict__ y, int64_t total, StridedCopy g) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    int64_t rest = i;
    int64_t offset = 0;
    for (int d = g.rank - 1; d >= 0; --d) {
      const int64_t coordinate = rest % g.dims[d];
      rest /= g.dims[d];
      offset += coordinate * g.strides[d];
    }
    y[i] = x[offset];
  }
}

// ---- Host dispatch ----

// How rows of n elements map to groups of lanes: `group` lanes per row, `slots` loads of kVec
// per lane (a power of two, so few kernels are instantiated).
struct GroupShape {
  int group = kWarpSize;
  int slots = 1;
  int64_t blocks = 0;
};

GroupShape ShapeGroups(int64_t rows, int64_t n, int vec) {
  GroupShape s;
  const int64_t loads = CeilDiv(n, vec);
  s.group = loads <= kSmallGroup ? kSmallGroup : kWarpSize;
  const int64_t per_lane = CeilDiv(loads, s.group);
  while (s.slots < per_lane) s.slots *= 2;
  s.blocks = CeilDiv(rows, kRowThreads / s.group);
  return s;
}

// Launches Family::Launch<group, kVec, slots> for the shape; slots * kVec <= kMaxCachedPerLane.
template <typename Family, int kVec>
int LaunchGroups(const typename Family::Args& args, const GroupShape& s) {
  if (s.blocks > INT_MAX) return kBadConfiguration;
  const dim3 grid(static_cast<unsigned>(s.blocks));
  if (s.group == kSmallGroup) return Family::template Launch<kSmallGroup, kVec, 1>(grid, args);
  switch (s.slots) {
    case 1:
      return Family::template Launch<kWarpSize, kVec, 1>(grid, args);
    case 2:
      if constexpr (2 * kVec <= kMaxCachedPerLane) {
        return Family::template Launch<kWarpSize, kVec, 2>(grid, args);
      }
      break;
    case 4:
      if constexpr (4 * kVec <= kMaxCachedPerLane) {
        return Family::template Launch<kWarpSize, kVec, 4>(grid, args);
      }
      break;
    case 8:
      if constexpr (8 * kVec <= kMaxCachedPerLane) {
        return Family::template Launch<kWarpSize, kVec, 8>(grid, args);
      }
      break;
    case 16:
      if constexpr (16 * kVec <= kMaxCachedPerLane) {
        return Family::template Launch<kWarpSize, kVec, 16>(grid, args);
      }
      break;
    case 32:
      if constexpr (32 * kVec <= kMaxCachedPerLane) {
        return Family::template Launch<kWarpSize, kVec, 32>(grid, args);
      }
      break;
    default:
      break;
  }
  return kBadValue;
}

template <typename T>
struct SoftmaxGroups {
  struct Args {
    const T* x;
    T* y;
    int64_t rows;
    int n;
    bool log_softmax;
  };
  template <int kGroup, int kVec, int kSlots>
  static int Launch(dim3 grid, const Args& a) {
    SoftmaxRowsGroup<T, kGroup, kVec, kSlots>
        <<<grid, kRowThreads>>>(a.x, a.y, a.rows, a.n, a.log_softmax);
    return LaunchStatus();
  }
};

template <typename T>
struct NormGroups {
  using Args = NormArgs;
  template <int kGroup, int kVec, int kSlots>
  static int Launch(dim3 grid, const Args& a) {
    NormRowsGroup<T, kGroup, kVec, kSlots><<<grid, kRowThreads>>>(a);
    return LaunchStatus();
  }
};

// Blocks for [outer, n, inner] reduced over n with inner > 1.
int64_t ColumnBlocks(int64_t inner) { return CeilDiv(inner, kColumnWidth); }

template <typename T>
int SoftmaxTyped(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log_softmax) {
  if (outer == 0 || n == 0 || inner == 0) return 0;
  constexpr int kVec = kMaxVec<T>;
  if (inner > 1) {
    const int64_t column_blocks = ColumnBlocks(inner);
    if (outer > INT_MAX / column_blocks) return kBadConfiguration;
    SoftmaxColumns<T>
        <<<static_cast<unsigned>(outer * column_blocks), dim3(kColumnWidth, kColumnDepth)>>>(
            x, y, n, inner, column_blocks, log_softmax);
    return LaunchStatus();
  }
  const bool aligned = Aligned16(x) && Aligned16(y);
  if (n <= kMaxGroupRow) {
    const bool vector = aligned && n % kVec == 0;
    const typename SoftmaxGroups<T>::Args args{x, y, outer, static_cast<int>(n), log_softmax};
    return vector ? LaunchGroups<SoftmaxGroups<T>, kVec>(args, ShapeGroups(outer, n, kVec))
                  : LaunchGroups<SoftmaxGroups<T>, 1>(args, ShapeGroups(outer, n, 1));
  }
  if (outer > INT_MAX) return kBadConfiguration;
  // x and y rows share their 16-byte phase when both bases are aligned.
  if (aligned) {
    SoftmaxRowsBlock<T, kVec>
        <<<static_cast<unsigned>(outer), kBlockThreads>>>(x, y, n, log_softmax);
  } else {
    SoftmaxRowsBlock<T, 1><<<static_cast<unsigned>(outer), kBlockThreads>>>(x, y, n, log_softmax);
  }
  return LaunchStatus();
}

struct RowPlan {
  int64_t splits = 1;
  int64_t segment = 0;
};

RowPlan PlanRows(int64_t rows, int64_t n) {
  if (n <= kMaxGroupRow || rows >= kSplitFewerRows || n < kSplitMinRow) return {1, n};
  int64_t splits = CeilDiv(n, kSplitSegment);
  if (splits > kMaxSplits) splits = kMaxSplits;
  const int64_t segment = CeilDiv(n, splits);
  return {CeilDiv(n, segment), segment};
}

template <typename T, bool kMax>
int ReduceTyped(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, void* scratch,
                bool mean) {
  using Acc = typename Accumulator<T>::Type;
  if (outer == 0 || inner == 0) return 0;
  constexpr int kVec = kMaxVec<T>;
  if (inner > 1) {
    const int64_t column_blocks = ColumnBlocks(inner);
    if (outer > INT_MAX / column_blocks) return kBadConfiguration;
    ReduceColumns<T, kMax>
        <<<static_cast<unsigned>(outer * column_blocks), dim3(kColumnWidth, kColumnDepth)>>>(
            x, y, n, inner, column_blocks, mean);
    return LaunchStatus();
  }
  if (n <= kMaxGroupRow) {
    const bool vector = Aligned16(x) && n % kVec == 0;
    const GroupShape s = ShapeGroups(outer, n, vector ? kVec : 1);
    if (s.blocks > INT_MAX) return kBadConfiguration;
    const dim3 grid(static_cast<unsigned>(s.blocks));
    if (s.group == kSmallGroup) {
      if (vector) {
        ReduceRowsGroup<T, T, kMax, kSmallGroup, kVec>
            <<<grid, kRowThreads>>>(x, y, outer, n, n, mean);
      } else {
        ReduceRowsGroup<T, T, kMax, kSmallGroup, 1><<<grid, kRowThreads>>>(x, y, outer, n, n, mean);
      }
    } else if (vector) {
      ReduceRowsGroup<T, T, kMax, kWarpSize, kVec><<<grid, kRowThreads>>>(x, y, outer, n, n, mean);
    } else {
      ReduceRowsGroup<T, T, kMax, kWarpSize, 1><<<grid, kRowThreads>>>(x, y, outer, n, n, mean);
    }
    return LaunchStatus();
  }
  const RowPlan plan = PlanRows(outer, n);
  if (outer > INT_MAX / plan.splits) return kBadConfiguration;
  const auto blocks = static_cast<unsigned>(outer * plan.splits);
  void* out = plan.splits > 1 ? scratch : static_cast<void*>(y);
  if (plan.splits > 1 && scratch == nullptr) return kBadValue;
  ReduceRowsBlock<T, kMax, kVec>
      <<<blocks, kBlockThreads>>>(x, out, n, plan.segment, plan.splits, mean);
  if (const int rc = LaunchStatus(); rc != 0 || plan.splits == 1) return rc;
  // A warp per row sums its partials (outer < kSplitFewerRows here).
  const auto rows_blocks = static_cast<unsigned>(CeilDiv(outer, kRowThreads / kWarpSize));
  ReduceRowsGroup<Acc, T, kMax, kWarpSize, 1><<<rows_blocks, kRowThreads>>>(
      static_cast<const Acc*>(scratch), y, outer, plan.splits, n, mean);
  return LaunchStatus();
}

template <typename T>
int ReduceDispatch(ReduceKind kind, const void* x, void* y, int64_t outer, int64_t n, int64_t inner,
                   void* scratch) {
  const auto* in = static_cast<const T*>(x);
  auto* out = static_cast<T*>(y);
  if (kind == ReduceKind::kMax)
    return ReduceTyped<T, true>(in, out, outer, n, inner, scratch, false);
  return ReduceTyped<T, false>(in, out, outer, n, inner, scratch, kind == ReduceKind::kMean);
}

template <typename T>
int NormalizeTyped(const NormArgs& a) {
  if (a.rows == 0 || a.n == 0) return 0;
  constexpr int kVec = kMaxVec<T>;
  const bool aligned = Aligned16(a.x) && Aligned16(a.y);
  if (a.n <= kMaxGroupRow) {
    const bool params_aligned =
        a.channels > 0 || (Aligned16(a.scale) && (a.bias == nullptr || Aligned16(a.bias)));
    const bool vector = aligned && params_aligned && a.n % kVec == 0;
    return vector ? LaunchGroups<NormGroups<T>, kVec>(a, ShapeGroups(a.rows, a.n, kVec))
                  : LaunchGroups<NormGroups<T>, 1>(a, ShapeGroups(a.rows, a.n, 1));
  }
  if (a.rows > INT_MAX) return kBadConfiguration;
  if (aligned) {
    NormRowsBlock<T, kVec><<<static_cast<unsigned>(a.rows), kBlockThreads>>>(a);
  } else {
    NormRowsBlock<T, 1><<<static_cast<unsigned>(a.rows), kBlockThreads>>>(a);
  }
  return LaunchStatus();
}

template <typename T>
int BatchNormTyped(const BatchNormArgs& a) {
  if (a.elements == 0) return 0;
  if (a.channels <= 0 || a.inner <= 0) return kBadValue;
  constexpr int kVec = kMaxVec<T>;
  const bool vector = Aligned16(a.x) && Aligned16(a.y);
  const int64_t vectors = vector ? a.elements / kVec : 0;
  const int64_t scalars = a.elements - vectors * kVec;
  const int64_t blocks = CeilDiv(vectors + scalars, kElementwiseThreads);
  if (blocks > INT_MAX) return kBadConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks));
  // 32-bit index arithmetic (a division per thread) whenever the tensor allows it.
  if (a.elements < INT_MAX - kElementwiseThreads) {
    BatchNormKernel<T, uint32_t, kVec><<<grid, kElementwiseThreads>>>(
        a, static_cast<uint32_t>(vectors), static_cast<uint32_t>(scalars));
  } else {
    BatchNormKernel<T, uint64_t, kVec><<<grid, kElementwiseThreads>>>(
        a, static_cast<uint64_t>(vectors), static_cast<uint64_t>(scalars));
  }
  return LaunchStatus();
}

template <typename E>
int StridedCopyTyped(const void* x, void* y, int64_t total, const StridedCopy& g) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond
  int64_t blocks = CeilDiv(total, kElementwiseThreads);
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  StridedCopyKernel<E><<<static_cast<unsigned>(blocks), kElementwiseThreads>>>(
      static_cast<const E*>(x), static_cast<E*>(y), total, g);
  return LaunchStatus();
}

}  // namespace

int LaunchSoftmax(DataType type, bool log, const void* x, void* y, int64_t outer, int64_t n,
                  int64_t inner) {
  switch (type) {
    case DataType::kF32:
      return SoftmaxTyped(static_cast<const float*>(x), static_cast<float*>(y), outer, n, inner,
                          log);
    case DataType::kF16:
      return SoftmaxTyped(static_cast<const __half*>(x), static_cast<__half*>(y), outer, n, inner,
                          log);
    case DataType::kBF16:
      return SoftmaxTyped(static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y),
                          outer, n, inner, log);
    case DataType::kI64:
      break;
  }
  return kBadValue;
}

size_t ReduceScratchBytes(int64_t outer, int64_t n, int64_t inner) {
  if (inner != 1 || outer == 0) return 0;
  const RowPlan plan = PlanRows(outer, n);
  if (plan.splits == 1) return 0;
  return static_cast<size_t>(outer * plan.splits) * sizeof(long long);
}

int LaunchReduce(DataType type, ReduceKind kind, const void* x, void* y, int64_t outer, int64_t n,
                 int64_t inner, void* scratch) {
  switch (type) {
    case DataType::kF32:
      return ReduceDispatch<float>(kind, x, y, outer, n, inner, scratch);
    case DataType::kF16:
      return ReduceDispatch<__half>(kind, x, y, outer, n, inner, scratch);
    case DataType::kBF16:
      return ReduceDispatch<__nv_bfloat16>(kind, x, y, outer, n, inner, scratch);
    case DataType::kI64:
      return ReduceDispatch<long long>(kind, x, y, outer, n, inner, scratch);
  }
  return kBadValue;
}

int LaunchNormalize(const NormArgs& args) {
  switch (args.type) {
    case DataType::kF32:
      return NormalizeTyped<float>(args);
    case DataType::kF16:
      return NormalizeTyped<__half>(args);
    case DataType::kBF16:
      return NormalizeTyped<__nv_bfloat16>(args);
    case DataType::kI64:
      break;
  }
  return kBadValue;
}

int LaunchBatchNorm(const BatchNormArgs& args) {
  switch (args.type) {
    case DataType::kF32:
      return BatchNormTyped<float>(args);
    case DataType::kF16:
      return BatchNormTyped<__half>(args);
    case DataType::kBF16:
      return BatchNormTyped<__nv_bfloat16>(args);
    case DataType::kI64:
      break;
  }
  return kBadValue;
}

int LaunchStridedCopy(size_t element_bytes, const void* x, void* y, const StridedCopy& geometry) {
  if (geometry.rank < 0 || geometry.rank > kMaxStridedRank) return kBadValue;
  int64_t total = 1;
  for (int d = 0; d < geometry.rank; ++d) total *= geometry.dims[d];
  if (total == 0) return 0;
  switch (element_bytes) {
    case 1:
      return StridedCopyTyped<uint8_t>(x, y, total, geometry);
    case 2:
      return StridedCopyTyped<uint16_t>(x, y, total, geometry);
    case 4:
      return StridedCopyTyped<uint32_t>(x, y, total, geometry);
    case 8:
      return StridedCopyTyped<uint64_t>(x, y, total, geometry);
    default:
      break;
  }
  return kBadValue;
}

}  // namespace kfleet::cuda::reduce
