// Elementwise kernels of the CUDA baseline. One kernel per op, three shapes of loop:
//  - flat: every operand dense with the output's shape; 16-byte vector loads and stores when every
//    pointer is aligned, a scalar tail for the rest;
//  - rows: broadcast operands whose innermost dim is contiguous or broadcast (bias adds, scalars):
//    one index decomposition per vector of outputs, vector loads for the contiguous operands;
//  - general: one decomposition per element with multiply-high division (FastDivmod).
// Half types are loaded into f32, computed in f32 and rounded once on store; integers are i64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "cuda/kernels_pointwise.h"

namespace kfleet::cuda::pointwise {
namespace {

constexpr int kNoKernel = static_cast<int>(cudaErrorInvalidValue);
// Element counts and operand offsets of one launch of the broadcast loops stay below 2^31, so
// index arithmetic is 32-bit; larger tensors are cut into launches that each fit.
constexpr int64_t kIndexLimit = std::numeric_limits<int32_t>::max();

template <typename>
inline constexpr bool kAlwaysFalse = false;

// ---- Element access ----

template <typename T>
struct ComputeOf {
  using type = T;
};
template <>
struct ComputeOf<__half> {
  using type = float;
};
template <>
struct ComputeOf<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using Compute = typename ComputeOf<T>::type;

template <typename T>
__device__ __forceinline__ Compute<T> Load(const T& v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return v;
  }
}

template <typename O, typename C>
__device__ __forceinline__ O Convert(C v) {
  if constexpr (std::is_same_v<O, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<O, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<O>(v);
  }
}

// V consecutive elements moved as one aligned load or store.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ Pack<T, V> LoadPack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

// V elements of a row that is contiguous (inner_stride 1) or one element repeated (0).
template <int V, typename T>
__device__ __forceinline__ Pack<T, V> LoadRow(const T* p, int32_t inner_stride) {
  if (inner_stride != 0) return LoadPack<V>(p);
  Pack<T, V> pack;
  const T value = *p;
#pragma unroll
  for (int j = 0; j < V; ++j) pack.v[j] = value;
  return pack;
}

// f applied to element j of the packs of the first N operands, rounded to O.
template <int N, typename O, typename F, typename PA, typename PB, typename PC>
__device__ __forceinline__ O ApplyAt(const F& f, const PA& a, const PB& b, const PC& c, int j) {
  if constexpr (N == 1) {
    return Convert<O>(f(Load(a.v[j])));
  } else if constexpr (N == 2) {
    return Convert<O>(f(Load(a.v[j]), Load(b.v[j])));
  } else {
    return Convert<O>(f(Load(a.v[j]), Load(b.v[j]), Load(c.v[j])));
  }
}

template <int N, typename O, typename F, typename A, typename B, typename C>
__device__ __forceinline__ O ApplyOne(const F& f, const A* a, const B* b, const C* c, int64_t ia,
                                      int64_t ib, int64_t ic) {
  if constexpr (N == 1) {
    return Convert<O>(f(Load(a[ia])));
  } else if constexpr (N == 2) {
    return Convert<O>(f(Load(a[ia]), Load(b[ib])));
  } else {
    return Convert<O>(f(Load(a[ia]), Load(b[ib]), Load(c[ic])));
  }
}

// ---- Loops ----

template <int N, int V, typename F, typename O, typename A, typename B, typename C>
__global__ void __launch_bounds__(kThreads)
    FlatKernel(F f, int64_t n, int64_t groups, O* out, const A* a, const B* b, const C* c) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t g = first; g < groups; g += step) {
    Pack<A, V> pa = LoadPack<V>(a + g * V);
    Pack<B, V> pb;
    Pack<C, V> pc;
    if constexpr (N >= 2) pb = LoadPack<V>(b + g * V);
    if constexpr (N >= 3) pc = LoadPack<V>(c + g * V);
    Pack<O, V> po;
#pragma unroll
    for (int j = 0; j < V; ++j) po.v[j] = ApplyAt<N, O>(f, pa, pb, pc, j);
    *reinterpret_cast<Pack<O, V>*>(out + g * V) = po;
  }
  for (int64_t i = groups * V + first; i < n; i += step) {
    out[i] = ApplyOne<N, O>(f, a, b, c, i, i, i);
  }
}

// A launch's index: dims innermost first, as the decomposition walks them.
struct Index32 {
  int rank = 1;
  FastDivmod div[kMaxRank];
  int32_t strides[3][kMaxRank] = {};
};

// Output element `i`'s offset in each of the first N operands.
template <int N>
__device__ __forceinline__ void Offsets(const Index32& ix, uint32_t i, int32_t (&off)[3]) {
  off[0] = off[1] = off[2] = 0;
#pragma unroll
  for (int d = 0; d < kMaxRank; ++d) {
    if (d == ix.rank) break;
    const uint32_t q = Quotient(ix.div[d], i);
    const auto coord = static_cast<int32_t>(i - q * ix.div[d].divisor);
    i = q;
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += coord * ix.strides[k][d];
  }
}

// Outputs [g * V, g * V + V) for g < groups. With V > 1 the innermost dim is a multiple of V and
// every operand's innermost stride is 0 or 1, so a group stays in one row.
template <int N, int V, typename F, typename O, typename A, typename B, typename C>
__global__ void __launch_bounds__(kThreads)
    BroadcastKernel(F f, Index32 ix, uint32_t groups, O* out, const A* a, const B* b, const C* c) {
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += step) {
    const uint32_t i = g * V;
    int32_t off[3];
    Offsets<N>(ix, i, off);
    if constexpr (V == 1) {
      out[i] = ApplyOne<N, O>(f, a, b, c, off[0], off[1], off[2]);
    } else {
      Pack<A, V> pa = LoadRow<V>(a + off[0], ix.strides[0][0]);
      Pack<B, V> pb;
      Pack<C, V> pc;
      if constexpr (N >= 2) pb = LoadRow<V>(b + off[1], ix.strides[1][0]);
      if constexpr (N >= 3) pc = LoadRow<V>(c + off[2], ix.strides[2][0]);
      Pack<O, V> po;
#pragma unroll
      for (int j = 0; j < V; ++j) po.v[j] = ApplyAt<N, O>(f, pa, pb, pc, j);
      *reinterpret_cast<Pack<O, V>*>(out + i) = po;
    }
  }
}

// ---- Host side ----

bool Aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int64_t Span(const ElementIndex& index, int k, int from) {
  int64_t span = 0;
  for (int d = from; d < index.rank; ++d) {
    span += (index.dims[d] - 1) * std::llabs(index.strides[k][d]);
  }
  return span;
}

// Calls visit(chunk, out_offset, in_offsets) over pieces of `index` (cut along its outer dims)
// whose element count and operand offsets all fit the 32-bit loops; stops at the first error.
template <typename Visit>
int ForEachChunk(const ElementIndex& index, int operands, int64_t out_offset,
                 std::array<int64_t, 3> in_offsets, const Visit& visit) {
  int64_t inner = 1;
  for (int d = 1; d < index.rank; ++d) inner *= index.dims[d];
  bool inner_fits = inner <= kIndexLimit;
  for (int k = 0; k < operands; ++k) inner_fits = inner_fits && Span(index, k, 1) <= kIndexLimit;
  const int64_t rows = index.dims[0];
  if (!inner_fits) {
    // One row of the outermost dim is itself too large: walk the rows, cutting each further.
    ElementIndex rest;
    rest.rank = index.rank - 1;
    for (int d = 1; d < index.rank; ++d) {
      rest.dims[d - 1] = index.dims[d];
      for (int k = 0; k < 3; ++k) rest.strides[k][d - 1] = index.strides[k][d];
    }
    for (int64_t r = 0; r < rows; ++r) {
      std::array<int64_t, 3> offsets = in_offsets;
      for (int k = 0; k < operands; ++k) offsets[k] += r * index.strides[k][0];
      if (const int rc = ForEachChunk(rest, operands, out_offset + r * inner, offsets, visit)) {
        return rc;
      }
    }
    return 0;
  }
  int64_t per = kIndexLimit / inner;
  for (int k = 0; k < operands; ++k) {
    const int64_t stride = std::llabs(index.strides[k][0]);
    if (stride > 0) per = std::min(per, (kIndexLimit - Span(index, k, 1)) / stride + 1);
  }
  for (int64_t r0 = 0; r0 < rows; r0 += per) {
    ElementIndex chunk = index;
    chunk.dims[0] = std::min(per, rows - r0);
    std::array<int64_t, 3> offsets = in_offsets;
    for (int k = 0; k < operands; ++k) offsets[k] += r0 * index.strides[k][0];
    if (const int rc = visit(chunk, out_offset + r0 * inner, offsets)) return rc;
  }
  return 0;
}

Index32 MakeIndex32(const ElementIndex& index) {
  Index32 ix;
  ix.rank = index.rank;
  for (int d = 0; d < index.rank; ++d) {
    const int src = index.rank - 1 - d;
    ix.div[d] = MakeFastDivmod(static_cast<uint32_t>(index.dims[src]));
    for (int k = 0; k < 3; ++k) ix.strides[k][d] = static_cast<int32_t>(index.strides[k][src]);
  }
  return ix;
}

// Whether the rows kernel applies to `index` (one launch's chunk) with vectors of V elements.
bool RowsVectorize(const ElementIndex& index, int operands, int v, const void* out,
                   size_t out_bytes, const std::array<const void*, 3>& ins,
                   const std::array<size_t, 3>& in_bytes) {
  const int inner = index.rank - 1;
  if (index.dims[inner] % v != 0 || !Aligned(out, out_bytes * v)) return false;
  for (int k = 0; k < operands; ++k) {
    const int64_t inner_stride = index.strides[k][inner];
    if (inner_stride == 0) continue;
    if (inner_stride != 1 || !Aligned(ins[k], in_bytes[k] * v)) return false;
    for (int d = 0; d < inner; ++d) {
      if (index.strides[k][d] % v != 0) return false;
    }
  }
  return true;
}

constexpr size_t Widest(size_t o, size_t a, size_t b, size_t c) { return std::max({o, a, b, c}); }

// Runs f over the first N operands, all dense with `n` elements, into `out`.
template <int N, typename O, typename A, typename B = uint8_t, typename C = uint8_t, typename F>
int LaunchFlat(const F& f, void* out, const void* a, const void* b, const void* c, int64_t n) {
  if (n <= 0) return 0;
  constexpr int V = static_cast<int>(
      16 / Widest(sizeof(O), sizeof(A), N >= 2 ? sizeof(B) : 1, N >= 3 ? sizeof(C) : 1));
  auto* po = static_cast<O*>(out);
  const auto* pa = static_cast<const A*>(a);
  const auto* pb = static_cast<const B*>(b);
  const auto* pc = static_cast<const C*>(c);
  const bool aligned = Aligned(po, sizeof(O) * V) && Aligned(pa, sizeof(A) * V) &&
                       (N < 2 || Aligned(pb, sizeof(B) * V)) &&
                       (N < 3 || Aligned(pc, sizeof(C) * V));
  const int64_t groups = aligned ? n / V : 0;
  const int blocks = GridBlocks(std::max(groups, n - groups * V));
  FlatKernel<N, V><<<blocks, kThreads>>>(f, n, groups, po, pa, pb, pc);
  return static_cast<int>(cudaGetLastError());
}

// Runs f over the first N operands into `out` per `index`.
template <int N, typename O, typename A, typename B = uint8_t, typename C = uint8_t, typename F>
int Launch(const F& f, void* out, const void* a, const void* b, const void* c,
           const ElementIndex& index) {
  if (index.dense) return LaunchFlat<N, O, A, B, C>(f, out, a, b, c, index.elements());
  if (index.elements() <= 0) return 0;
  constexpr int V = static_cast<int>(
      16 / Widest(sizeof(O), sizeof(A), N >= 2 ? sizeof(B) : 1, N >= 3 ? sizeof(C) : 1));
  auto* po = static_cast<O*>(out);
  const auto* pa = static_cast<const A*>(a);
  const auto* pb = static_cast<const B*>(b);
  const auto* pc = static_cast<const C*>(c);
  return ForEachChunk(
      index, N, 0, {0, 0, 0},
      [&](const ElementIndex& chunk, int64_t out_offset, const std::array<int64_t, 3>& offsets) {
        O* o = po + out_offset;
        const A* ca = pa + offsets[0];
        const B* cb = N >= 2 ? pb + offsets[1] : pb;
        const C* cc = N >= 3 ? pc + offsets[2] : pc;
        const Index32 ix = MakeIndex32(chunk);
        const int64_t count = chunk.elements();
        if constexpr (V > 1) {
          if (RowsVectorize(chunk, N, V, o, sizeof(O), {ca, cb, cc},
                            {sizeof(A), sizeof(B), sizeof(C)})) {
            const int64_t groups = count / V;
            BroadcastKernel<N, V><<<GridBlocks(groups), kThreads>>>(
                f, ix, static_cast<uint32_t>(groups), o, ca, cb, cc);
            return static_cast<int>(cudaGetLastError());
          }
        }
        BroadcastKernel<N, 1>
            <<<GridBlocks(count), kThreads>>>(f, ix, static_cast<uint32_t>(count), o, ca, cb, cc);
        return static_cast<int>(cudaGetLastError());
      });
}

// ---- Functions ----

// std::max / std::min as the CPU baseline uses them: NaN handling follows the argument order.
template <typename T>
__device__ __forceinline__ T MaxOf(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
__device__ __forceinline__ T MinOf(T a, T b) {
  return b < a ? b : a;
}

template <UnaryOp kOp>
struct UnaryFn {
  UnaryParams p;

  template <typename T>
  __device__ __forceinline__ auto operator()(T v) const {
    if constexpr (kOp == UnaryOp::kNot) {
      return static_cast<uint8_t>(v == 0 ? 1 : 0);
    } else if constexpr (kOp == UnaryOp::kIsNaN) {
      return static_cast<uint8_t>(v != v ? 1 : 0);
    } else if constexpr (std::is_same_v<T, int64_t>) {
      if constexpr (kOp == UnaryOp::kIdentity) {
        return v;
      } else if constexpr (kOp == UnaryOp::kNeg) {
        return static_cast<int64_t>(0 - static_cast<uint64_t>(v));
      } else if constexpr (kOp == UnaryOp::kAbs) {
        return v < 0 ? static_cast<int64_t>(0 - static_cast<uint64_t>(v)) : v;
      } else if constexpr (kOp == UnaryOp::kRelu) {
        return v > 0 ? v : int64_t{0};
      } else {
        static_assert(kAlwaysFalse<T>, "no integer form of this op");
      }
    } else if constexpr (kOp == UnaryOp::kIdentity) {
      return v;
    } else if constexpr (kOp == UnaryOp::kNeg) {
      return -v;
    } else if constexpr (kOp == UnaryOp::kAbs) {
      return fabsf(v);
    } else if constexpr (kOp == UnaryOp::kRelu) {
      return v > 0.0f ? v : 0.0f;
    } else if constexpr (kOp == UnaryOp::kSqrt) {
      return sqrtf(v);
    } else if constexpr (kOp == UnaryOp::kReciprocal) {
      return 1.0f / v;
    } else if constexpr (kOp == UnaryOp::kExp) {
      return expf(v);
    } else if constexpr (kOp == UnaryOp::kLog) {
      return logf(v);
    } else if constexpr (kOp == UnaryOp::kErf) {
      return erff(v);
    } else if constexpr (kOp == UnaryOp::kTanh) {
      return tanhf(v);
    } else if constexpr (kOp == UnaryOp::kSigmoid) {
      return 1.0f / (1.0f + expf(-v));
    } else if constexpr (kOp == UnaryOp::kLeakyRelu) {
      return v >= 0.0f ? v : p.alpha * v;
    } else if constexpr (kOp == UnaryOp::kGelu) {
      return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
    } else if constexpr (kOp == UnaryOp::kGeluTanh) {
      return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    } else if constexpr (kOp == UnaryOp::kHardSigmoid) {
      return MinOf(1.0f, MaxOf(0.0f, p.alpha * v + p.beta));
    } else if constexpr (kOp == UnaryOp::kHardSwish) {
      return v * MinOf(1.0f, MaxOf(0.0f, v / 6.0f + 0.5f));
    } else if constexpr (kOp == UnaryOp::kSoftplus) {
      // log(1 + e^x) without overflow for large x.
      return MaxOf(v, 0.0f) + log1pf(expf(-fabsf(v)));
    } else if constexpr (kOp == UnaryOp::kCos) {
      return cosf(v);
    } else if constexpr (kOp == UnaryOp::kSin) {
      return sinf(v);
    } else if constexpr (kOp == UnaryOp::kSquare) {
      return v * v;
    } else if constexpr (kOp == UnaryOp::kCube) {
      return v * v * v;
    } else {
      static_assert(kAlwaysFalse<T>, "unhandled unary op");
    }
  }
};

__device__ __forceinline__ int64_t DivideInt(int64_t a, int64_t b) {
  // C++ leaves these undefined; ONNX does not define them either.
  if (b == 0 || (a == std::numeric_limits<int64_t>::min() && b == -1)) return 0;
  return a / b;
}

__device__ __forceinline__ int64_t PowInt(int64_t base, int64_t exponent) {
  if (exponent < 0) return base == 1 ? 1 : (base == -1 ? (exponent % 2 == 0 ? 1 : -1) : 0);
  uint64_t result = 1;
  auto b = static_cast<uint64_t>(base);
  while (exponent > 0) {
    if ((exponent & 1) != 0) result *= b;
    b *= b;
    exponent >>= 1;
  }
  return static_cast<int64_t>(result);
}

template <BinaryOp kOp>
struct BinaryFn {
  template <typename X, typename Y>
  __device__ __forceinline__ auto operator()(X a, Y b) const {
    if constexpr (kOp == BinaryOp::kAdd) {
      return a + b;
    } else if constexpr (kOp == BinaryOp::kSub) {
      return a - b;
    } else if constexpr (kOp == BinaryOp::kMul) {
      return a * b;
    } else if constexpr (kOp == BinaryOp::kDiv) {
      if constexpr (std::is_same_v<X, int64_t>) {
        return DivideInt(a, b);
      } else {
        return a / b;
      }
    } else if constexpr (kOp == BinaryOp::kPow) {
      if constexpr (std::is_same_v<X, float>) {
        return powf(a, static_cast<float>(b));
      } else if constexpr (std::is_same_v<Y, int64_t>) {
        return PowInt(a, b);
      } else {
        return static_cast<int64_t>(pow(static_cast<double>(a), static_cast<double>(b)));
      }
    } else if constexpr (kOp == BinaryOp::kMax) {
      return MaxOf(a, b);
    } else if constexpr (kOp == BinaryOp::kMin) {
      return MinOf(a, b);
    } else if constexpr (kOp == BinaryOp::kEqual) {
      return static_cast<uint8_t>(a == b ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kLess) {
      return static_cast<uint8_t>(a < b ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kGreater) {
      return static_cast<uint8_t>(a > b ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kLessOrEqual) {
      return static_cast<uint8_t>(a <= b ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kGreaterOrEqual) {
      return static_cast<uint8_t>(a >= b ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kAnd) {
      return static_cast<uint8_t>((a & b) != 0 ? 1 : 0);
    } else if constexpr (kOp == BinaryOp::kOr) {
      return static_cast<uint8_t>((a | b) != 0 ? 1 : 0);
    } else {
      static_assert(kAlwaysFalse<X>, "unhandled binary op");
    }
  }
};

struct WhereFn {
  template <typename T>
  __device__ __forceinline__ T operator()(uint8_t cond, T x, T y) const {
    return cond != 0 ? x : y;
  }
};

struct IdentityFn {
  template <typename T>
  __device__ __forceinline__ T operator()(T v) const {
    return v;
  }
};

__device__ __forceinline__ int64_t WrapInt(int64_t v, IntWrap wrap) {
  switch (wrap) {
    case IntWrap::kI32:
      return static_cast<int32_t>(v);
    case IntWrap::kI16:
      return static_cast<int16_t>(v);
    case IntWrap::kI8:
      return static_cast<int8_t>(v);
    case IntWrap::kU8:
      return static_cast<uint8_t>(v);
    case IntWrap::kNone:
      break;
  }
  return v;
}

__device__ __forceinline__ int64_t FloatToInt(float v) {
  if (v != v) return 0;
  if (v >= 9.2e18f) return std::numeric_limits<int64_t>::max();
  if (v <= -9.2e18f) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

// To is the output's storage type; the argument is the input's compute type.
template <typename To>
struct CastFn {
  IntWrap wrap;

  template <typename T>
  __device__ __forceinline__ auto operator()(T v) const {
    if constexpr (std::is_same_v<To, uint8_t>) {
      return static_cast<uint8_t>(v != T{0} ? 1 : 0);
    } else if constexpr (std::is_same_v<To, int64_t>) {
      if constexpr (std::is_same_v<T, float>) {
        return WrapInt(FloatToInt(v), wrap);
      } else if constexpr (std::is_same_v<T, uint8_t>) {
        return static_cast<int64_t>(v != 0 ? 1 : 0);
      } else {
        return WrapInt(v, wrap);
      }
    } else if constexpr (std::is_same_v<T, uint8_t>) {
      return v != 0 ? 1.0f : 0.0f;
    } else {
      return static_cast<float>(v);
    }
  }
};

template <typename T>
struct ClipFn {
  const T* lo;
  const T* hi;
  Compute<T> lo_default;
  Compute<T> hi_default;
  bool has_lo_default;
  bool has_hi_default;

  __device__ __forceinline__ Compute<T> operator()(Compute<T> v) const {
    // No bound at all is the type's lowest / highest value: the comparison never changes v.
    if (lo != nullptr) {
      v = MaxOf(v, Load(*lo));
    } else if (has_lo_default) {
      v = MaxOf(v, lo_default);
    }
    if (hi != nullptr) {
      v = MinOf(v, Load(*hi));
    } else if (has_hi_default) {
      v = MinOf(v, hi_default);
    }
    return v;
  }
};

// ---- Dispatch ----

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with T the storage type of `elem`.
template <typename F>
int WithElem(Elem elem, const F& f) {
  switch (elem) {
    case Elem::kF32:
      return f(Tag<float>{});
    case Elem::kF16:
      return f(Tag<__half>{});
    case Elem::kBF16:
      return f(Tag<__nv_bfloat16>{});
    case Elem::kI64:
      return f(Tag<int64_t>{});
    case Elem::kBool:
      return f(Tag<uint8_t>{});
  }
  return kNoKernel;
}

template <typename T>
constexpr bool kIsFloat =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

constexpr bool HasIntegerForm(UnaryOp op) {
  return op == UnaryOp::kIdentity || op == UnaryOp::kNeg || op == UnaryOp::kAbs ||
         op == UnaryOp::kRelu;
}

template <UnaryOp kOp>
int RunUnary(Elem in, Elem out, const void* x, void* y, int64_t n, UnaryParams params) {
  const UnaryFn<kOp> f{params};
  if constexpr (kOp == UnaryOp::kNot) {
    if (in != Elem::kBool || out != Elem::kBool) return kNoKernel;
    return LaunchFlat<1, uint8_t, uint8_t>(f, y, x, nullptr, nullptr, n);
  } else if constexpr (kOp == UnaryOp::kIsNaN) {
    if (out != Elem::kBool) return kNoKernel;
    return WithElem(in, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (kIsFloat<T>) {
        return LaunchFlat<1, uint8_t, T>(f, y, x, nullptr, nullptr, n);
      } else {
        return kNoKernel;
      }
    });
  } else {
    if (in != out) return kNoKernel;
    return WithElem(in, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (kIsFloat<T> || (std::is_same_v<T, int64_t> && HasIntegerForm(kOp))) {
        return LaunchFlat<1, T, T>(f, y, x, nullptr, nullptr, n);
      } else {
        return kNoKernel;
      }
    });
  }
}

template <BinaryOp kOp>
int RunBinary(Elem a, Elem b, Elem out, const void* x, const void* y, void* z,
              const ElementIndex& index) {
  const BinaryFn<kOp> f;
  constexpr bool kArithmetic = kOp == BinaryOp::kAdd || kOp == BinaryOp::kSub ||
                               kOp == BinaryOp::kMul || kOp == BinaryOp::kDiv ||
                               kOp == BinaryOp::kMax || kOp == BinaryOp::kMin;
  constexpr bool kLogic = kOp == BinaryOp::kAnd || kOp == BinaryOp::kOr;
  if constexpr (kOp == BinaryOp::kPow) {
    if (out != a) return kNoKernel;
    return WithElem(a, [&](auto base_tag) {
      using A = typename decltype(base_tag)::type;
      if constexpr (std::is_same_v<A, uint8_t>) {
        return kNoKernel;
      } else {
        return WithElem(b, [&](auto exponent_tag) {
          using B = typename decltype(exponent_tag)::type;
          if constexpr (std::is_same_v<B, uint8_t>) {
            return kNoKernel;
          } else {
            return Launch<2, A, A, B>(f, z, x, y, nullptr, index);
          }
        });
      }
    });
  } else if constexpr (kArithmetic) {
    if (a != b || out != a) return kNoKernel;
    return WithElem(a, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, uint8_t>) {
        return kNoKernel;
      } else {
        return Launch<2, T, T, T>(f, z, x, y, nullptr, index);
      }
    });
  } else if constexpr (kLogic) {
    if (a != Elem::kBool || b != Elem::kBool || out != Elem::kBool) return kNoKernel;
    return Launch<2, uint8_t, uint8_t, uint8_t>(f, z, x, y, nullptr, index);
  } else {
    if (a != b || out != Elem::kBool) return kNoKernel;
    return WithElem(a, [&](auto tag) {
      using T = typename decltype(tag)::type;
      return Launch<2, uint8_t, T, T>(f, z, x, y, nullptr, index);
    });
  }
}

}  // namespace

int GridBlocks(int64_t work) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> sms_by_device[kMaxDevices] = {};
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) == cudaSuccess && device >= 0 && device < kMaxDevices) {
    sms = sms_by_device[device].load(std::memory_order_relaxed);
    if (sms == 0 &&
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess) {
      sms_by_device[device].store(sms, std::memory_order_relaxed);
    }
  }
  // Eight blocks of 256 threads fill an SM's 2048 thread slots.
  const int64_t limit = sms > 0 ? int64_t{8} * sms : 1024;
  const int64_t needed = (std::max<int64_t>(work, 1) + kThreads - 1) / kThreads;
  return static_cast<int>(std::min(needed, limit));
}

int LaunchUnary(UnaryOp op, Elem in, Elem out, const void* x, void* y, int64_t n,
                UnaryParams params) {
  switch (op) {
    case UnaryOp::kIdentity:
      return RunUnary<UnaryOp::kIdentity>(in, out, x, y, n, params);
    case UnaryOp::kNeg:
      return RunUnary<UnaryOp::kNeg>(in, out, x, y, n, params);
    case UnaryOp::kAbs:
      return RunUnary<UnaryOp::kAbs>(in, out, x, y, n, params);
    case UnaryOp::kRelu:
      return RunUnary<UnaryOp::kRelu>(in, out, x, y, n, params);
    case UnaryOp::kSqrt:
      return RunUnary<UnaryOp::kSqrt>(in, out, x, y, n, params);
    case UnaryOp::kReciprocal:
      return RunUnary<UnaryOp::kReciprocal>(in, out, x, y, n, params);
    case UnaryOp::kExp:
      return RunUnary<UnaryOp::kExp>(in, out, x, y, n, params);
    case UnaryOp::kLog:
      return RunUnary<UnaryOp::kLog>(in, out, x, y, n, params);
    case UnaryOp::kErf:
      return RunUnary<UnaryOp::kErf>(in, out, x, y, n, params);
    case UnaryOp::kTanh:
      return RunUnary<UnaryOp::kTanh>(in, out, x, y, n, params);
    case UnaryOp::kSigmoid:
      return RunUnary<UnaryOp::kSigmoid>(in, out, x, y, n, params);
    case UnaryOp::kLeakyRelu:
      return RunUnary<UnaryOp::kLeakyRelu>(in, out, x, y, n, params);
    case UnaryOp::kGelu:
      return RunUnary<UnaryOp::kGelu>(in, out, x, y, n, params);
    case UnaryOp::kGeluTanh:
      return RunUnary<UnaryOp::kGeluTanh>(in, out, x, y, n, params);
    case UnaryOp::kHardSigmoid:
      return RunUnary<UnaryOp::kHardSigmoid>(in, out, x, y, n, params);
    case UnaryOp::kHardSwish:
      return RunUnary<UnaryOp::kHardSwish>(in, out, x, y, n, params);
    case UnaryOp::kSoftplus:
      return RunUnary<UnaryOp::kSoftplus>(in, out, x, y, n, params);
    case UnaryOp::kCos:
      return RunUnary<UnaryOp::kCos>(in, out, x, y, n, params);
    case UnaryOp::kSin:
      return RunUnary<UnaryOp::kSin>(in, out, x, y, n, params);
    case UnaryOp::kSquare:
      return RunUnary<UnaryOp::kSquare>(in, out, x, y, n, params);
    case UnaryOp::kCube:
      return RunUnary<UnaryOp::kCube>(in, out, x, y, n, params);
    case UnaryOp::kNot:
      return RunUnary<UnaryOp::kNot>(in, out, x, y, n, params);
    case UnaryOp::kIsNaN:
      return RunUnary<UnaryOp::kIsNaN>(in, out, x, y, n, params);
  }
  return kNoKernel;
}

int LaunchCast(Elem in, Elem out, IntWrap wrap, const void* x, void* y, int64_t n) {
  return WithElem(out, [&](auto out_tag) {
    using To = typename decltype(out_tag)::type;
    return WithElem(in, [&](auto in_tag) {
      using From = typename decltype(in_tag)::type;
      return LaunchFlat<1, To, From>(CastFn<To>{wrap}, y, x, nullptr, nullptr, n);
    });
  });
}

int LaunchClip(Elem type, const void* x, const void* lo, const void* hi, ClipDefaults defaults,
               void* y, int64_t n) {
  return WithElem(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, uint8_t>) {
      return kNoKernel;
    } else {
      const ClipFn<T> f{static_cast<const T*>(lo),
                        static_cast<const T*>(hi),
                        defaults.has_lo ? static_cast<Compute<T>>(defaults.lo) : Compute<T>{},
                        defaults.has_hi ? static_cast<Compute<T>>(defaults.hi) : Compute<T>{},
                        defaults.has_lo,
                        defaults.has_hi};
      return LaunchFlat<1, T, T>(f, y, x, nullptr, nullptr, n);
    }
  });
}

int LaunchBinary(BinaryOp op, Elem a, Elem b, Elem out, const void* x, const void* y, void* z,
                 const ElementIndex& index) {
  switch (op) {
    case BinaryOp::kAdd:
      return RunBinary<BinaryOp::kAdd>(a, b, out, x, y, z, index);
    case BinaryOp::kSub:
      return RunBinary<BinaryOp::kSub>(a, b, out, x, y, z, index);
    case BinaryOp::kMul:
      return RunBinary<BinaryOp::kMul>(a, b, out, x, y, z, index);
    case BinaryOp::kDiv:
      return RunBinary<BinaryOp::kDiv>(a, b, out, x, y, z, index);
    case BinaryOp::kPow:
      return RunBinary<BinaryOp::kPow>(a, b, out, x, y, z, index);
    case BinaryOp::kMax:
      return RunBinary<BinaryOp::kMax>(a, b, out, x, y, z, index);
    case BinaryOp::kMin:
      return RunBinary<BinaryOp::kMin>(a, b, out, x, y, z, index);
    case BinaryOp::kEqual:
      return RunBinary<BinaryOp::kEqual>(a, b, out, x, y, z, index);
    case BinaryOp::kLess:
      return RunBinary<BinaryOp::kLess>(a, b, out, x, y, z, index);
    case BinaryOp::kGreater:
      return RunBinary<BinaryOp::kGreater>(a, b, out, x, y, z, index);
    case BinaryOp::kLessOrEqual:
      return RunBinary<BinaryOp::kLessOrEqual>(a, b, out, x, y, z, index);
    case BinaryOp::kGreaterOrEqual:
      return RunBinary<BinaryOp::kGreaterOrEqual>(a, b, out, x, y, z, index);
    case BinaryOp::kAnd:
      return RunBinary<BinaryOp::kAnd>(a, b, out, x, y, z, index);
    case BinaryOp::kOr:
      return RunBinary<BinaryOp::kOr>(a, b, out, x, y, z, index);
  }
  return kNoKernel;
}

int LaunchWhere(int elem_bytes, const void* cond, const void* x, const void* y, void* out,
                const ElementIndex& index) {
  const WhereFn f;
  switch (elem_bytes) {
    case 1:
      return Launch<3, uint8_t, uint8_t, uint8_t, uint8_t>(f, out, cond, x, y, index);
    case 2:
      return Launch<3, uint16_t, uint8_t, uint16_t, uint16_t>(f, out, cond, x, y, index);
    case 4:
      return Launch<3, uint32_t, uint8_t, uint32_t, uint32_t>(f, out, cond, x, y, index);
    case 8:
      return Launch<3, uint64_t, uint8_t, uint64_t, uint64_t>(f, out, cond, x, y, index);
    default:
      return kNoKernel;
  }
}

int LaunchCopy(int elem_bytes, const void* x, void* out, const ElementIndex& index) {
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8) return kNoKernel;
  // Rows contiguous in x move in the widest unit (up to 16 bytes) that divides the rows, every
  // outer stride and both pointers.
  ElementIndex wide = index;
  int unit = elem_bytes;
  const int inner = index.rank - 1;
  for (int bytes = 16; bytes > elem_bytes; bytes /= 2) {
    const int factor = bytes / elem_bytes;
    bool fits = index.strides[0][inner] == 1 && index.dims[inner] % factor == 0 &&
                Aligned(x, bytes) && Aligned(out, bytes);
    for (int d = 0; d < inner && fits; ++d) fits = index.strides[0][d] % factor == 0;
    if (!fits) continue;
    wide.dims[inner] = index.dims[inner] / factor;
    for (int d = 0; d < inner; ++d) wide.strides[0][d] = index.strides[0][d] / factor;
    unit = bytes;
    break;
  }
  const IdentityFn f;
  switch (unit) {
    case 1:
      return Launch<1, uint8_t, uint8_t>(f, out, x, nullptr, nullptr, wide);
    case 2:
      return Launch<1, uint16_t, uint16_t>(f, out, x, nullptr, nullptr, wide);
    case 4:
      return Launch<1, uint32_t, uint32_t>(f, out, x, nullptr, nullptr, wide);
    case 8:
      return Launch<1, uint64_t, uint64_t>(f, out, x, nullptr, nullptr, wide);
    default:
      return Launch<1, uint4, uint4>(f, out, x, nullptr, nullptr, wide);
  }
}

}  // namespace kfleet::cuda::pointwise
