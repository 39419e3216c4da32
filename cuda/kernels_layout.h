// Launchers of the data-movement kernels (kernels_layout.cu): tiled transpose, Concat / Split,
// Gather, GatherElements, Pad, Trilu and the small generators. Strided copies (Expand, Slice,
// Tile, row-preserving Transposes) use pointwise::LaunchCopy. Plain types only (see
// kernels_pointwise.h); every launcher queues its work on the default stream and returns the
// launch's cudaError_t. Elements are moved by width only: `elem_bytes` is 1, 2, 4 or 8.
#pragma once

#include <cstdint>

#include "cuda/kernels_pointwise.h"

namespace kfleet::cuda::layout {

using pointwise::kMaxRank;

// A permutation whose innermost output dim is strided in x: out (dense, `dims` outermost first)
// reads x at sum(i_d * strides[d]). strides[contiguous_dim] is 1 and contiguous_dim is not the
// innermost dim; tiles of 32 x 32 go through shared memory so reads and writes both coalesce.
struct TransposeIndex {
  int rank = 2;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
  int contiguous_dim = 0;
};
int LaunchTransposeTiled(int elem_bytes, const void* x, void* out, const TransposeIndex& index);

// Concat: each of `rows` rows of `out` (row_bytes) is the parts' rows side by side, part i
// contributing part_bytes[i] per row. Parts with no bytes are skipped.
int LaunchConcat(void* out, int64_t rows, int64_t row_bytes, const void* const* parts,
                 const int64_t* part_bytes, int count);
// Split, the reverse: a null part (an omitted output) is not written.
int LaunchSplit(const void* x, int64_t rows, int64_t row_bytes, void* const* parts,
                const int64_t* part_bytes, int count);

// Gather along one axis of data viewed as [outer, dim, inner_bytes]: out[o, j, :] =
// data[o, indices[j], :] for j < count. Negative indices count from the end; an index still out
// of range gives zeros (the device cannot fail a run).
int LaunchGather(const void* data, const int64_t* indices, void* out, int64_t outer, int64_t dim,
                 int64_t inner_bytes, int64_t count);

// GatherElements: out[p] (p over the indices' dims) = data[sum(i_d * walk[d]) + index *
// axis_stride] with index = indices[p], wrapped like Gather's and zero when out of range.
struct GatherElementsIndex {
  int rank = 1;
  int64_t dims[kMaxRank] = {};  // the indices' (and output's) dims, outermost first
  int64_t walk[kMaxRank] = {};  // data's strides, 0 on the axis
  int64_t axis_stride = 0;
  int64_t axis_dim = 0;
};
int LaunchGatherElements(int elem_bytes, const void* data, const int64_t* indices, void* out,
                         const GatherElementsIndex& index);

enum class PadMode : int8_t { kConstant, kReflect, kEdge, kWrap };

struct PadIndex {
  int rank = 1;
  int64_t out_dims[kMaxRank] = {};
  int64_t in_dims[kMaxRank] = {};
  int64_t pad_begin[kMaxRank] = {};  // may be negative (cropping)
  int64_t in_strides[kMaxRank] = {};
  PadMode mode = PadMode::kConstant;
};
// Pad's output; constant positions take *fill (one device element of elem_bytes) when `fill` is
// not null, else the low elem_bytes of `fill_bits`.
int LaunchPad(int elem_bytes, const void* x, void* out, const PadIndex& index, const void* fill,
              uint64_t fill_bits);

// Trilu over `planes` matrices of rows x cols: keeps j - i >= k (upper) or j - i <= k (lower),
// zeroes the rest; k is *k_device when not null, else `k`.
int LaunchTrilu(int elem_bytes, const void* x, void* out, int64_t planes, int64_t rows,
                int64_t cols, bool upper, const int64_t* k_device, int64_t k);

// Every one of `n` elements set to the low elem_bytes of `bits`.
int LaunchFill(int elem_bytes, void* out, int64_t n, uint64_t bits);

// out[k] = start + k * delta for k < n, `start` / `delta` one device element each of `elem`
// (f32, f16, bf16: computed in f32; i64).
int LaunchRange(pointwise::Elem elem, void* out, int64_t n, const void* start, const void* delta);

// `bytes` from device memory to device memory, queued on the default stream.
int LaunchDeviceCopy(void* dst, const void* src, int64_t bytes);

}  // namespace kfleet::cuda::layout
