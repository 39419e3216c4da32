// Data-movement kernels of the CUDA baseline: grid-stride loops over output elements (or wider
// units where rows allow), index arithmetic in 32 bits with multiply-high division whenever the
// element count fits, 64-bit division otherwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "cuda/kernels_layout.h"

namespace kfleet::cuda::layout {
namespace {

using pointwise::FastDivmod;
using pointwise::GridBlocks;
using pointwise::kThreads;
using pointwise::MakeFastDivmod;
using pointwise::Quotient;

constexpr int kNoKernel = static_cast<int>(cudaErrorInvalidValue);
constexpr int64_t kFastLimit = std::numeric_limits<int32_t>::max();

// A divisor for numerators below 2^31 (multiply-high) or of any size (hardware division).
struct Divisor {
  FastDivmod fast;
  int64_t value = 1;
};

Divisor MakeDivisor(int64_t value) {
  Divisor d;
  d.value = value;
  if (value >= 1 && value <= kFastLimit) d.fast = MakeFastDivmod(static_cast<uint32_t>(value));
  return d;
}

// kFast when every numerator of the launch is below 2^31.
template <bool kFast>
__device__ __forceinline__ int64_t Div(const Divisor& d, int64_t n) {
  if constexpr (kFast) {
    return Quotient(d.fast, static_cast<uint32_t>(n));
  } else {
    return n / d.value;
  }
}

__device__ __forceinline__ int64_t FirstThread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

bool Aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// The widest unit (16, 8, 4, 2 or 1 bytes) that divides every size and aligns every pointer.
int UnitBytes(std::initializer_list<int64_t> sizes, std::initializer_list<const void*> pointers) {
  for (int unit = 16; unit > 1; unit /= 2) {
    bool fits = true;
    for (int64_t size : sizes) fits = fits && size % unit == 0;
    for (const void* p : pointers) fits = fits && (p == nullptr || Aligned(p, unit));
    if (fits) return unit;
  }
  return 1;
}

template <typename T>
struct Tag {
  using type = T;
};

// f(Tag<U>{}) with U an unsigned type of `bytes` (uint4 for 16).
template <typename F>
int WithUnit(int bytes, const F& f) {
  switch (bytes) {
    case 1:
      return f(Tag<uint8_t>{});
    case 2:
      return f(Tag<uint16_t>{});
    case 4:
      return f(Tag<uint32_t>{});
    case 8:
      return f(Tag<uint64_t>{});
    case 16:
      return f(Tag<uint4>{});
    default:
      return kNoKernel;
  }
}

// f(Tag<T>{}) with T an unsigned type of an element's `bytes` (1, 2, 4, 8).
template <typename F>
int WithElement(int bytes, const F& f) {
  switch (bytes) {
    case 1:
      return f(Tag<uint8_t>{});
    case 2:
      return f(Tag<uint16_t>{});
    case 4:
      return f(Tag<uint32_t>{});
    case 8:
      return f(Tag<uint64_t>{});
    default:
      return kNoKernel;
  }
}

// f(std::bool_constant<fast>{}) with fast when `numerators` (the largest numerator + 1) fit.
template <typename F>
int WithIndexWidth(int64_t numerators, const F& f) {
  if (numerators <= kFastLimit) return f(std::true_type{});
  return f(std::false_type{});
}

int LastError() { return static_cast<int>(cudaGetLastError()); }

// ---- Transpose ----

constexpr int kTile = 32;
constexpr int kTileRows = 8;

struct TileParams {
  int64_t a_dim = 0;  // the output dim contiguous in x
  int64_t b_dim = 0;  // the output's innermost dim
  int64_t x_stride_b = 0;
  int64_t out_stride_a = 0;
  int batch_rank = 0;  // the other dims, innermost first
  int64_t batch_dims[kMaxRank] = {};
  int64_t batch_x_strides[kMaxRank] = {};
  int64_t batch_out_strides[kMaxRank] = {};
  int64_t tiles_a = 0;
  int64_t tiles_b = 0;
  int64_t tiles = 0;
};

// One 32 x 32 tile per block iteration: read along a (contiguous in x), write along b
// (contiguous in out), through shared memory padded against bank conflicts.
template <typename T>
__global__ void __launch_bounds__(kTile* kTileRows)
    TransposeKernel(TileParams p, const T* x, T* out) {
  __shared__ T tile[kTile][kTile + 1];
  for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    const int64_t tb = t % p.tiles_b;
    int64_t rest = t / p.tiles_b;
    const int64_t ta = rest % p.tiles_a;
    rest /= p.tiles_a;
    int64_t x_base = 0;
    int64_t out_base = 0;
    for (int d = 0; d < p.batch_rank; ++d) {
      const int64_t coord = rest % p.batch_dims[d];
      rest /= p.batch_dims[d];
      x_base += coord * p.batch_x_strides[d];
      out_base += coord * p.batch_out_strides[d];
    }
    const int64_t a0 = ta * kTile;
    const int64_t b0 = tb * kTile;
    for (int y = threadIdx.y; y < kTile; y += kTileRows) {
      const int64_t a = a0 + threadIdx.x;
      const int64_t b = b0 + y;
      if (a < p.a_dim && b < p.b_dim) tile[y][threadIdx.x] = x[x_base + a + b * p.x_stride_b];
    }
    __syncthreads();
    for (int y = threadIdx.y; y < kTile; y += kTileRows) {
      const int64_t a = a0 + y;
      const int64_t b = b0 + threadIdx.x;
      if (a < p.a_dim && b < p.b_dim) out[out_base + a * p.out_stride_a + b] = tile[threadIdx.x][y];
    }
    __syncthreads();
  }
}

// ---- Concat / Split ----

constexpr int kMaxParts = 8;

// Up to kMaxParts neighbouring parts: columns [col0, col0 + width) of every row of the whole.
struct PartsParams {
  int count = 0;
  int64_t begin[kMaxParts + 1] = {};  // each part's first column, relative to col0
  void* parts[kMaxParts] = {};
  int64_t row_units = 0;
  int64_t col0 = 0;
  Divisor width;
  int64_t total = 0;  // rows * width
};

template <typename U, bool kConcat, bool kFast>
__global__ void __launch_bounds__(kThreads) PartsKernel(PartsParams p, U* whole) {
  for (int64_t i = FirstThread(); i < p.total; i += GridStride()) {
    const int64_t row = Div<kFast>(p.width, i);
    const int64_t col = i - row * p.width.value;
    int s = 0;
    while (s + 1 < p.count && col >= p.begin[s + 1]) ++s;
    const int64_t part_width = p.begin[s + 1] - p.begin[s];
    U* part = static_cast<U*>(p.parts[s]);
    U* w = whole + row * p.row_units + p.col0 + col;
    const int64_t at = row * part_width + (col - p.begin[s]);
    if constexpr (kConcat) {
      *w = part[at];
    } else {
      if (part != nullptr) part[at] = *w;
    }
  }
}

template <bool kConcat>
int LaunchParts(void* whole, int64_t rows, int64_t row_bytes, const void* const* parts,
                const int64_t* part_bytes, int count) {
  if (rows <= 0 || row_bytes <= 0) return 0;
  int unit = UnitBytes({row_bytes}, {whole});
  for (int i = 0; i < count; ++i) {
    if (part_bytes[i] > 0) unit = std::min(unit, UnitBytes({part_bytes[i]}, {parts[i]}));
  }
  int64_t col = 0;  // bytes into the row
  int i = 0;
  while (i < count) {
    PartsParams p;
    p.row_units = row_bytes / unit;
    p.col0 = col / unit;
    int64_t width = 0;
    for (; i < count && p.count < kMaxParts; ++i) {
      if (part_bytes[i] <= 0) continue;
      p.begin[p.count] = width;
      // Concat only reads the parts; Split writes them (their pointers came in mutable).
      p.parts[p.count] = const_cast<void*>(parts[i]);
      ++p.count;
      width += part_bytes[i] / unit;
    }
    col += width * unit;
    if (p.count == 0) break;
    p.begin[p.count] = width;
    p.width = MakeDivisor(width);
    p.total = rows * width;
    const int rc = WithUnit(unit, [&](auto tag) {
      using U = typename decltype(tag)::type;
      return WithIndexWidth(p.total, [&](auto fast) {
        PartsKernel<U, kConcat, decltype(fast)::value>
            <<<GridBlocks(p.total), kThreads>>>(p, static_cast<U*>(whole));
        return LastError();
      });
    });
    if (rc != 0) return rc;
  }
  return 0;
}

// ---- Gather ----

struct GatherParams {
  Divisor inner_units;
  Divisor count;
  int64_t dim = 0;
  int64_t total = 0;
};

template <typename U, bool kFast>
__global__ void __launch_bounds__(kThreads)
    GatherKernel(GatherParams p, const U* data, const int64_t* indices, U* out) {
  for (int64_t i = FirstThread(); i < p.total; i += GridStride()) {
    const int64_t pair = Div<kFast>(p.inner_units, i);
    const int64_t within = i - pair * p.inner_units.value;
    const int64_t o = Div<kFast>(p.count, pair);
    const int64_t j = pair - o * p.count.value;
    int64_t index = indices[j];
    if (index < 0) index += p.dim;
    out[i] = index >= 0 && index < p.dim ? data[(o * p.dim + index) * p.inner_units.value + within]
                                         : U{};
  }
}

// ---- GatherElements ----

struct GatherElementsParams {
  int rank = 0;
  Divisor dims[kMaxRank];  // innermost first
  int64_t walk[kMaxRank] = {};
  int64_t axis_stride = 0;
  int64_t axis_dim = 0;
  int64_t total = 0;
};

template <typename T, bool kFast>
__global__ void __launch_bounds__(kThreads)
    GatherElementsKernel(GatherElementsParams p, const T* data, const int64_t* indices, T* out) {
  for (int64_t i = FirstThread(); i < p.total; i += GridStride()) {
    int64_t rest = i;
    int64_t offset = 0;
    for (int d = 0; d < p.rank; ++d) {
      const int64_t q = Div<kFast>(p.dims[d], rest);
      offset += (rest - q * p.dims[d].value) * p.walk[d];
      rest = q;
    }
    int64_t index = indices[i];
    if (index < 0) index += p.axis_dim;
    out[i] = index >= 0 && index < p.axis_dim ? data[offset + index * p.axis_stride] : T{};
  }
}

// ---- Pad ----

struct PadParams {
  int rank = 0;  // innermost first
  Divisor out_dims[kMaxRank];
  int64_t in_dims[kMaxRank] = {};
  int64_t pad_begin[kMaxRank] = {};
  int64_t in_strides[kMaxRank] = {};
  PadMode mode = PadMode::kConstant;
  int64_t total = 0;
};

// Input index for output index `o` of one dim (-1: the constant), per Pad's mode.
__device__ __forceinline__ int64_t PadSource(int64_t o, int64_t pad_begin, int64_t in,
                                             PadMode mode) {
  int64_t i = o - pad_begin;
  if (i >= 0 && i < in) return i;
  if (mode == PadMode::kConstant || in == 0) return -1;
  if (mode == PadMode::kEdge) return i < 0 ? 0 : in - 1;
  if (mode == PadMode::kWrap) return ((i % in) + in) % in;
  // reflect: mirror about the edge elements, as often as the padding needs.
  if (in == 1) return 0;
  const int64_t period = 2 * (in - 1);
  i = ((i % period) + period) % period;
  return i < in ? i : period - i;
}

template <typename T, bool kFast>
__global__ void __launch_bounds__(kThreads)
    PadKernel(PadParams p, const T* x, T* out, const T* fill, T fill_value) {
  const T constant = fill != nullptr ? *fill : fill_value;
  for (int64_t i = FirstThread(); i < p.total; i += GridStride()) {
    int64_t rest = i;
    int64_t offset = 0;
    bool outside = false;
    for (int d = 0; d < p.rank; ++d) {
      const int64_t q = Div<kFast>(p.out_dims[d], rest);
      const int64_t src =
          PadSource(rest - q * p.out_dims[d].value, p.pad_begin[d], p.in_dims[d], p.mode);
      rest = q;
      outside = outside || src < 0;
      offset += src * p.in_strides[d];
    }
    out[i] = outside ? constant : x[offset];
  }
}

// ---- Trilu ----

struct TriluParams {
  Divisor cols;
  Divisor rows;
  bool upper = true;
  int64_t k = 0;
  int64_t total = 0;
};

template <typename T, bool kFast>
__global__ void __launch_bounds__(kThreads)
    TriluKernel(TriluParams p, const T* x, T* out, const int64_t* k_device) {
  const int64_t k = k_device != nullptr ? *k_device : p.k;
  for (int64_t i = FirstThread(); i < p.total; i += GridStride()) {
    const int64_t row_index = Div<kFast>(p.cols, i);
    const int64_t j = i - row_index * p.cols.value;
    const int64_t r = row_index - Div<kFast>(p.rows, row_index) * p.rows.value;
    const bool keep = p.upper ? j - r >= k : j - r <= k;
    out[i] = keep ? x[i] : T{};
  }
}

// ---- Generators ----

template <typename T>
struct alignas(16) Vec16 {
  T v[16 / sizeof(T)];
};

template <typename T>
__global__ void __launch_bounds__(kThreads) FillKernel(T* out, int64_t n, int64_t groups, T value) {
  Vec16<T> vec;
#pragma unroll
  for (int j = 0; j < static_cast<int>(16 / sizeof(T)); ++j) vec.v[j] = value;
  for (int64_t g = FirstThread(); g < groups; g += GridStride()) {
    reinterpret_cast<Vec16<T>*>(out)[g] = vec;
  }
  for (int64_t i = groups * static_cast<int64_t>(16 / sizeof(T)) + FirstThread(); i < n;
       i += GridStride()) {
    out[i] = value;
  }
}

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return v;
  }
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    RangeKernel(T* out, int64_t n, const T* start, const T* delta) {
  if constexpr (std::is_same_v<T, int64_t>) {
    const int64_t s = *start;
    const int64_t d = *delta;
    for (int64_t k = FirstThread(); k < n; k += GridStride()) out[k] = s + k * d;
  } else {
    const float s = ToFloat(*start);
    const float d = ToFloat(*delta);
    for (int64_t k = FirstThread(); k < n; k += GridStride()) {
      out[k] = FromFloat<T>(s + static_cast<float>(k) * d);
    }
  }
}

}  // namespace

int LaunchTransposeTiled(int elem_bytes, const void* x, void* out, const TransposeIndex& index) {
  const int rank = index.rank;
  const int a = index.contiguous_dim;
  if (rank < 2 || rank > kMaxRank || a < 0 || a >= rank - 1 || index.strides[a] != 1) {
    return kNoKernel;
  }
  int64_t out_strides[kMaxRank] = {};
  int64_t elements = 1;
  for (int d = rank - 1; d >= 0; --d) {
    out_strides[d] = elements;
    elements *= index.dims[d];
  }
  if (elements == 0) return 0;
  TileParams p;
  p.a_dim = index.dims[a];
  p.b_dim = index.dims[rank - 1];
  p.x_stride_b = index.strides[rank - 1];
  p.out_stride_a = out_strides[a];
  int64_t batches = 1;
  for (int d = rank - 2; d >= 0; --d) {
    if (d == a) continue;
    p.batch_dims[p.batch_rank] = index.dims[d];
    p.batch_x_strides[p.batch_rank] = index.strides[d];
    p.batch_out_strides[p.batch_rank] = out_strides[d];
    ++p.batch_rank;
    batches *= index.dims[d];
  }
  p.tiles_a = (p.a_dim + kTile - 1) / kTile;
  p.tiles_b = (p.b_dim + kTile - 1) / kTile;
  p.tiles = batches * p.tiles_a * p.tiles_b;
  // GridBlocks counts 256-thread blocks: one per tile, capped at a few per SM.
  const int blocks = GridBlocks(p.tiles * kTile * kTileRows);
  return WithElement(elem_bytes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    TransposeKernel<T>
        <<<blocks, dim3(kTile, kTileRows)>>>(p, static_cast<const T*>(x), static_cast<T*>(out));
    return LastError();
  });
}

int LaunchConcat(void* out, int64_t rows, int64_t row_bytes, const void* const* parts,
                 const int64_t* part_bytes, int count) {
  return LaunchParts<true>(out, rows, row_bytes, parts, part_bytes, count);
}

int LaunchSplit(const void* x, int64_t rows, int64_t row_bytes, void* const* parts,
                const int64_t* part_bytes, int count) {
  // Split only reads the whole.
  return LaunchParts<false>(const_cast<void*>(x), rows, row_bytes, parts, part_bytes, count);
}

int LaunchGather(const void* data, const int64_t* indices, void* out, int64_t outer, int64_t dim,
                 int64_t inner_bytes, int64_t count) {
  const int64_t total_bytes = outer * count * inner_bytes;
  if (total_bytes <= 0) return 0;
  const int unit = UnitBytes({inner_bytes}, {data, out});
  GatherParams p;
  p.inner_units = MakeDivisor(inner_bytes / unit);
  p.count = MakeDivisor(count);
  p.dim = dim;
  p.total = total_bytes / unit;
  return WithUnit(unit, [&](auto tag) {
    using U = typename decltype(tag)::type;
    return WithIndexWidth(p.total, [&](auto fast) {
      GatherKernel<U, decltype(fast)::value><<<GridBlocks(p.total), kThreads>>>(
          p, static_cast<const U*>(data), indices, static_cast<U*>(out));
      return LastError();
    });
  });
}

int LaunchGatherElements(int elem_bytes, const void* data, const int64_t* indices, void* out,
                         const GatherElementsIndex& index) {
  if (index.rank < 0 || index.rank > kMaxRank) return kNoKernel;
  GatherElementsParams p;
  p.rank = index.rank;
  p.total = 1;
  for (int d = 0; d < index.rank; ++d) {
    const int src = index.rank - 1 - d;
    p.dims[d] = MakeDivisor(index.dims[src]);
    p.walk[d] = index.walk[src];
    p.total *= index.dims[src];
  }
  if (p.total <= 0) return 0;
  p.axis_stride = index.axis_stride;
  p.axis_dim = index.axis_dim;
  return WithElement(elem_bytes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return WithIndexWidth(p.total, [&](auto fast) {
      GatherElementsKernel<T, decltype(fast)::value><<<GridBlocks(p.total), kThreads>>>(
          p, static_cast<const T*>(data), indices, static_cast<T*>(out));
      return LastError();
    });
  });
}

int LaunchPad(int elem_bytes, const void* x, void* out, const PadIndex& index, const void* fill,
              uint64_t fill_bits) {
  if (index.rank < 0 || index.rank > kMaxRank) return kNoKernel;
  PadParams p;
  p.rank = index.rank;
  p.mode = index.mode;
  p.total = 1;
  for (int d = 0; d < index.rank; ++d) {
    const int src = index.rank - 1 - d;
    p.out_dims[d] = MakeDivisor(index.out_dims[src]);
    p.in_dims[d] = index.in_dims[src];
    p.pad_begin[d] = index.pad_begin[src];
    p.in_strides[d] = index.in_strides[src];
    p.total *= index.out_dims[src];
  }
  if (p.total <= 0) return 0;
  return WithElement(elem_bytes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return WithIndexWidth(p.total, [&](auto fast) {
      PadKernel<T, decltype(fast)::value><<<GridBlocks(p.total), kThreads>>>(
          p, static_cast<const T*>(x), static_cast<T*>(out), static_cast<const T*>(fill),
          static_cast<T>(fill_bits));
      return LastError();
    });
  });
}

int LaunchTrilu(int elem_bytes, const void* x, void* out, int64_t planes, int64_t rows,
                int64_t cols, bool upper, const int64_t* k_device, int64_t k) {
  TriluParams p;
  p.total = planes * rows * cols;
  if (p.total <= 0) return 0;
  p.cols = MakeDivisor(cols);
  p.rows = MakeDivisor(rows);
  p.upper = upper;
  p.k = k;
  return WithElement(elem_bytes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return WithIndexWidth(p.total, [&](auto fast) {
      TriluKernel<T, decltype(fast)::value><<<GridBlocks(p.total), kThreads>>>(
          p, static_cast<const T*>(x), static_cast<T*>(out), k_device);
      return LastError();
    });
  });
}

int LaunchFill(int elem_bytes, void* out, int64_t n, uint64_t bits) {
  if (n <= 0) return 0;
  return WithElement(elem_bytes, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t kPerVector = 16 / sizeof(T);
    const int64_t groups = Aligned(out, 16) ? n / kPerVector : 0;
    FillKernel<T><<<GridBlocks(std::max(groups, n - groups * kPerVector)), kThreads>>>(
        static_cast<T*>(out), n, groups, static_cast<T>(bits));
    return LastError();
  });
}

int LaunchRange(pointwise::Elem elem, void* out, int64_t n, const void* start, const void* delta) {
  if (n <= 0) return 0;
  auto launch = [&](auto tag) {
    using T = typename decltype(tag)::type;
    RangeKernel<T><<<GridBlocks(n), kThreads>>>(
        static_cast<T*>(out), n, static_cast<const T*>(start), static_cast<const T*>(delta));
    return LastError();
  };
  switch (elem) {
    case pointwise::Elem::kF32:
      return launch(Tag<float>{});
    case pointwise::Elem::kF16:
      return launch(Tag<__half>{});
    case pointwise::Elem::kBF16:
      return launch(Tag<__nv_bfloat16>{});
    case pointwise::Elem::kI64:
      return launch(Tag<int64_t>{});
    case pointwise::Elem::kBool:
      break;
  }
  return kNoKernel;
}

int LaunchDeviceCopy(void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0) return 0;
  return static_cast<int>(
      cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, nullptr));
}

}  // namespace kfleet::cuda::layout
