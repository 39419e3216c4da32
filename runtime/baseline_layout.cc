// Baseline kernels that move data rather than compute on it: views (Reshape and friends, which
// copy nothing), Transpose, Concat / Split / Slice, Gather, Expand / Tile / Pad, Resize, and the
// small generators (Shape, ConstantOfShape, Range, Trilu).
#include <fmt/format.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <utility>

#include "planner/import_internal.h"
#include "runtime/baseline_ops.h"

namespace kfleet::runtime::baseline {
namespace {

using planner::NumElements;
using planner::ShapeToString;

// Data movement only needs the element width: f32 moves as uint32_t, i64 as uint64_t.
template <typename F>
auto WithElementType(Storage storage, F f) {
  switch (storage) {
    case Storage::kFloat:
      return f(uint32_t{});
    case Storage::kInt:
      return f(uint64_t{});
    case Storage::kBool:
      break;
  }
  return f(uint8_t{});
}

Shape Strides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

// dst[r * dst_stride + c] = src[c * src_stride + r] over one rows x cols tile of 32-bit
// elements: 4x4 register transposes where SSE2 has them, so both sides move whole vectors.
void TransposeTile32(const uint32_t* src, int64_t src_stride, uint32_t* dst, int64_t dst_stride,
                     int64_t rows, int64_t cols) {
  int64_t r0 = 0;
#if defined(__SSE2__)
  for (; r0 + 4 <= rows; r0 += 4) {
    int64_t c0 = 0;
    for (; c0 + 4 <= cols; c0 += 4) {
      const uint32_t* s = src + c0 * src_stride + r0;
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + src_stride));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * src_stride));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 3 * src_stride));
      const __m128i ab_lo = _mm_unpacklo_epi32(a, b);
      const __m128i cd_lo = _mm_unpacklo_epi32(c, d);
      const __m128i ab_hi = _mm_unpackhi_epi32(a, b);
      const __m128i cd_hi = _mm_unpackhi_epi32(c, d);
      uint32_t* o = dst + r0 * dst_stride + c0;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_unpacklo_epi64(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + dst_stride),
                       _mm_unpackhi_epi64(ab_lo, cd_lo));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * dst_stride),
                       _mm_unpacklo_epi64(ab_hi, cd_hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 3 * dst_stride),
                       _mm_unpackhi_epi64(ab_hi, cd_hi));
    }
    for (int64_t r = r0; r < r0 + 4; ++r) {
      for (int64_t c = c0; c < cols; ++c) dst[r * dst_stride + c] = src[c * src_stride + r];
    }
  }
#endif
  for (int64_t r = r0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[r * dst_stride + c] = src[c * src_stride + r];
  }
}

// out (dense, `total` elements) = the elements of `in` walked by `dims` / `strides`, one output row
// (the innermost dim) at a time: memcpy when the row is contiguous in the input, a strided loop
// otherwise. Rows are split over the OpenMP team.
template <typename T>
void CopyStridedRows(const T* in, T* out, const std::vector<int64_t>& dims,
                     const std::vector<int64_t>& strides, int64_t total) {
  const int64_t inner = dims.back();
  const int64_t inner_stride = strides.back();
  const std::vector<int64_t> outer(dims.begin(), dims.end() - 1);
  const std::vector<int64_t> outer_strides(strides.begin(), strides.end() - 1);
  ParallelFor(total / inner, std::max<int64_t>(1, kParallelGrainElements / inner),
              [&](int64_t begin, int64_t end) {
                Odometer<1> it{&outer, {&outer_strides}, {}, {}};
                it.Seek(begin);
                for (int64_t r = begin; r < end; ++r) {
                  const T* src = in + it.offset[0];
                  T* dst = out + r * inner;
                  if (inner_stride == 1) {
                    std::memcpy(dst, src, static_cast<size_t>(inner) * sizeof(T));
                  } else {
                    for (int64_t i = 0; i < inner; ++i) dst[i] = src[i * inner_stride];
                  }
                  it.Next();
                }
              });
}

template <typename T>
void PermuteTyped(const T* in, T* out, const Shape& in_shape, const std::vector<int64_t>& perm) {
  const Shape in_strides = Strides(in_shape);
  // Output dims with the input stride each walks; size-1 dims dropped, dims that stay neighbours
  // in the input merged.
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  for (int64_t p : perm) {
    const int64_t size = in_shape[static_cast<size_t>(p)];
    const int64_t stride = in_strides[static_cast<size_t>(p)];
    if (size == 1) continue;
    if (!dims.empty() && strides.back() == stride * size) {
      dims.back() *= size;
      strides.back() = stride;
    } else {
      dims.push_back(size);
      strides.push_back(stride);
    }
  }
  const int64_t total = NumElements(in_shape);
  if (total == 0) return;
  if (dims.empty() || (dims.size() == 1 && strides[0] == 1)) {
    std::memcpy(out, in, static_cast<size_t>(total) * sizeof(T));
    return;
  }
  if (strides.back() == 1 || dims.size() == 1) {
    // Rows the input holds contiguously: copy them whole.
    CopyStridedRows(in, out, dims, strides, total);
    return;
  }
  // The innermost output dim is strided in the input: copy in square tiles so both sides stay in
  // cache.
  constexpr int64_t kTile = 32;
  const int64_t rows = dims[dims.size() - 2];
  const int64_t cols = dims.back();
  const int64_t row_stride = strides[strides.size() - 2];
  const int64_t col_stride = strides.back();
  const std::vector<int64_t> outer(dims.begin(), dims.end() - 2);
  const std::vector<int64_t> outer_strides(strides.begin(), strides.end() - 2);
  const int64_t planes = NumElements(outer);
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  ParallelFor(planes * row_tiles, std::max<int64_t>(1, kParallelGrainElements / (kTile * cols)),
              [&](int64_t begin, int64_t end) {
                Odometer<1> it{&outer, {&outer_strides}, {}, {}};
                int64_t plane = begin / row_tiles;
                it.Seek(plane);
                for (int64_t t = begin; t < end; ++t) {
                  if (t / row_tiles != plane) {
                    plane = t / row_tiles;
                    it.Next();
                  }
                  const T* src = in + it.offset[0];
                  T* dst = out + plane * rows * cols;
                  const int64_t r0 = (t % row_tiles) * kTile;
                  const int64_t r1 = std::min(rows, r0 + kTile);
                  for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
                    const int64_t c1 = std::min(cols, c0 + kTile);
                    if constexpr (sizeof(T) == 4) {
                      if (row_stride == 1) {
                        TransposeTile32(src + c0 * col_stride + r0, col_stride,
                                        dst + r0 * cols + c0, cols, r1 - r0, c1 - c0);
                        continue;
                      }
                    }
                    for (int64_t r = r0; r < r1; ++r) {
                      for (int64_t col = c0; col < c1; ++col) {
                        dst[r * cols + col] = src[r * row_stride + col * col_stride];
                      }
                    }
                  }
                }
              });
}

// ---- Views and Dropout ----

Result<PreparedOp> PrepareDropout(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  // Inference (training_mode absent or false) returns the input and an all-true mask.
  bool training_known_false = !c.HasInput(2);
  if (c.IsConstant(2)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> training, c.ConstInts(2, "training_mode"));
    training_known_false = training.empty() || training[0] == 0;
  }
  const bool has_mask = c.HasOutput(1);
  if (training_known_false) {
    if (!has_mask) return PreparedOp{{}, 0, true};
    Kernel fill_mask = [](const OpArgs& a) {
      std::fill(a.outputs[1]->as<uint8_t>(), a.outputs[1]->as<uint8_t>() + a.outputs[1]->elements,
                uint8_t{1});
      return Status::Ok();
    };
    return PreparedOp{std::move(fill_mask), 0, true};
  }
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const double default_ratio = c.node().FloatAttr("ratio", 0.5);
  const auto seed = static_cast<uint64_t>(c.node().IntAttr("seed", 0));
  Kernel run = [=](const OpArgs& a) {
    const bool training = a.inputs[2]->as<const uint8_t>()[0] != 0;
    double ratio = default_ratio;
    if (a.HasInput(1)) ratio = a.inputs[1]->as<const float>()[0];
    const float* x = a.inputs[0]->as<const float>();
    float* y = a.outputs[0]->as<float>();
    uint8_t* mask = a.HasOutput(1) ? a.outputs[1]->as<uint8_t>() : nullptr;
    const int64_t n = a.outputs[0]->elements;
    if (!training || ratio == 0) {
      std::copy(x, x + n, y);
      if (mask != nullptr) std::fill(mask, mask + n, uint8_t{1});
      return Status::Ok();
    }
    if (!(ratio >= 0 && ratio < 1)) {
      return InvalidArgument(fmt::format("ratio {} is outside [0, 1)", ratio));
    }
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution keep(1.0 - ratio);
    const auto scale = static_cast<float>(1.0 / (1.0 - ratio));
    for (int64_t i = 0; i < n; ++i) {
      const bool kept = keep(rng);
      y[i] = kept ? x[i] * scale : 0.0f;
      if (mask != nullptr) mask[i] = kept ? 1 : 0;
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Transpose ----

Result<PreparedOp> PrepareTranspose(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape x = c.InShape(0);
  std::vector<int64_t> perm = c.node().IntsAttr("perm");
  if (perm.empty()) {
    perm.resize(x.size());
    std::iota(perm.rbegin(), perm.rend(), 0);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] != static_cast<int64_t>(i) || sorted.size() != x.size()) {
      return InvalidArgument(fmt::format("perm [{}] is not a permutation of the dims of {}",
                                         fmt::join(perm, ","), ShapeToString(x)));
    }
  }
  const int64_t bytes = StorageBytes(c.InStorage(0));
  Kernel run = [x, perm, bytes](const OpArgs& a) {
    PermuteCopy(a.inputs[0]->data, a.outputs[0]->data, bytes, x, perm);
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Expand, Concat, Split, Slice, Tile ----

Result<PreparedOp> PrepareExpand(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape in = c.InShape(0);
  const Shape out = c.OutShape(0);
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [in, out](const OpArgs& a) {
      BroadcastCopy(a.inputs[0]->as<const T>(), in, a.outputs[0]->as<T>(), out);
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

// Rows of `outer`, each the concatenation of one chunk per part (Concat) or the reverse (Split).
struct Chunks {
  int64_t outer = 1;
  int64_t row_bytes = 0;
  std::vector<int64_t> chunk_bytes;  // per part; 0 for an omitted part
};

Chunks AxisChunks(const Shape& whole, int64_t axis, const std::vector<int64_t>& sizes,
                  int64_t elem_bytes) {
  Chunks chunks;
  chunks.outer = NumElements(Shape(whole.begin(), whole.begin() + axis));
  const int64_t inner = NumElements(Shape(whole.begin() + axis + 1, whole.end()));
  for (int64_t size : sizes) chunks.chunk_bytes.push_back(size * inner * elem_bytes);
  chunks.row_bytes = whole[static_cast<size_t>(axis)] * inner * elem_bytes;
  return chunks;
}

Result<PreparedOp> PrepareConcat(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& out = c.OutShape(0);
  KF_ASSIGN_OR_RETURN(
      int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), static_cast<int64_t>(out.size())));
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    sizes.push_back(c.HasInput(i) ? c.InShape(i)[static_cast<size_t>(axis)] : 0);
  }
  const Chunks chunks = AxisChunks(out, axis, sizes, StorageBytes(c.OutStorage(0)));
  Kernel run = [chunks](const OpArgs& a) {
    auto* dst = static_cast<std::byte*>(a.outputs[0]->data);
    const int64_t grain =
        std::max<int64_t>(1, 4 * kParallelGrainElements / std::max<int64_t>(chunks.row_bytes, 1));
    ParallelFor(chunks.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        std::byte* row = dst + o * chunks.row_bytes;
        for (size_t i = 0; i < chunks.chunk_bytes.size(); ++i) {
          const int64_t bytes = chunks.chunk_bytes[i];
          if (bytes == 0) continue;
          std::memcpy(row, static_cast<const std::byte*>(a.inputs[i]->data) + o * bytes,
                      static_cast<size_t>(bytes));
          row += bytes;
        }
      }
    });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareSplit(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  const int64_t dim = x[static_cast<size_t>(axis)];
  const auto parts = static_cast<int64_t>(c.node().outputs.size());
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "split"));
  std::vector<int64_t> sizes = given.value_or(std::vector<int64_t>{});
  if (sizes.empty()) {
    // Opset 18: an even split where the last part may be smaller.
    const int64_t chunk = parts > 0 ? (dim + parts - 1) / parts : 0;
    for (int64_t i = 0; i < parts; ++i) {
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
  }
  if (static_cast<int64_t>(sizes.size()) != parts ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != dim) {
    return InvalidArgument(fmt::format("split [{}] does not cut dim {} of {} into {} outputs",
                                       fmt::join(sizes, ","), axis, ShapeToString(x), parts));
  }
  const Chunks chunks = AxisChunks(x, axis, sizes, StorageBytes(c.InStorage(0)));
  Kernel run = [chunks](const OpArgs& a) {
    const auto* src = static_cast<const std::byte*>(a.inputs[0]->data);
    const int64_t grain =
        std::max<int64_t>(1, 4 * kParallelGrainElements / std::max<int64_t>(chunks.row_bytes, 1));
    ParallelFor(chunks.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const std::byte* row = src + o * chunks.row_bytes;
        for (size_t i = 0; i < chunks.chunk_bytes.size(); ++i) {
          const int64_t bytes = chunks.chunk_bytes[i];
          if (a.HasOutput(i) && bytes > 0) {
            std::memcpy(static_cast<std::byte*>(a.outputs[i]->data) + o * bytes, row,
                        static_cast<size_t>(bytes));
          }
          row += bytes;
        }
      }
    });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareSlice(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> starts, c.ConstInts(1, "starts"));
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> ends, c.ConstInts(2, "ends"));
  std::vector<int64_t> axes;
  std::vector<int64_t> steps;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(axes, c.ConstInts(3, "axes"));
  }
  if (c.HasInput(4)) {
    KF_ASSIGN_OR_RETURN(steps, c.ConstInts(4, "steps"));
  }
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(
      std::vector<planner::import_internal::SliceAxis> ranges,
      planner::import_internal::ResolveSlice(x, starts, ends, std::move(axes), std::move(steps)));
  const Shape in_strides = Strides(x);
  int64_t base = 0;
  std::vector<int64_t> dims;
  std::vector<int64_t> strides;
  for (size_t d = 0; d < ranges.size(); ++d) {
    base += ranges[d].start * in_strides[d];
    dims.push_back(ranges[d].count);
    strides.push_back(ranges[d].step * in_strides[d]);
  }
  if (dims.empty()) {
    dims.push_back(1);
    strides.push_back(0);
  }
  const int64_t total = NumElements(dims);
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const OpArgs& a) {
      if (total == 0) return Status::Ok();
      const T* in = a.inputs[0]->as<const T>() + base;
      T* out = a.outputs[0]->as<T>();
      CopyStridedRows(in, out, dims, strides, total);
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareTile(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape in = c.InShape(0);
  const Shape out = c.OutShape(0);
  if (in.empty()) {
    return PreparedOp{WithElementType(c.InStorage(0),
                                      [](auto tag) -> Kernel {
                                        using T = decltype(tag);
                                        return [](const OpArgs& a) {
                                          *a.outputs[0]->as<T>() = *a.inputs[0]->as<const T>();
                                          return Status::Ok();
                                        };
                                      }),
                      0, false};
  }
  const Shape in_strides = Strides(in);
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const OpArgs& a) {
      const int64_t total = NumElements(out);
      if (total == 0) return Status::Ok();
      const T* src = a.inputs[0]->as<const T>();
      T* dst = a.outputs[0]->as<T>();
      const int64_t inner_out = out.back();
      const int64_t inner_in = in.back();
      ParallelFor(total / inner_out, std::max<int64_t>(1, kParallelGrainElements / inner_out),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t r = begin; r < end; ++r) {
                      // Input row of output row r: each outer index modulo the input's dim.
                      int64_t rest = r;
                      int64_t offset = 0;
                      for (size_t d = out.size() - 1; d-- > 0;) {
                        offset += (rest % out[d]) % in[d] * in_strides[d];
                        rest /= out[d];
                      }
                      T* row = dst + r * inner_out;
                      for (int64_t j = 0; j < inner_out; j += inner_in) {
                        std::memcpy(
                            row + j, src + offset,
                            static_cast<size_t>(std::min(inner_in, inner_out - j)) * sizeof(T));
                      }
                    }
                  });
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

// ---- Pad ----

// Input index for output index `o` of one dim (-1: the constant), per Pad's mode.
int64_t PadSource(int64_t o, int64_t pad_begin, int64_t in, const std::string& mode) {
  int64_t i = o - pad_begin;
  if (i >= 0 && i < in) return i;
  if (mode == "constant" || in == 0) return -1;
  if (mode == "edge") return std::clamp<int64_t>(i, 0, in - 1);
  if (mode == "wrap") return ((i % in) + in) % in;
  // reflect: mirror about the edge elements, as often as the padding needs.
  if (in == 1) return 0;
  const int64_t period = 2 * (in - 1);
  i = ((i % period) + period) % period;
  return i < in ? i : period - i;
}

Result<PreparedOp> PreparePad(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape x = c.InShape(0);
  const Shape out = c.OutShape(0);
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "pads"));
  if (!given) return InvalidArgument("has no pads");
  const std::vector<int64_t>& pads = *given;
  std::vector<int64_t> axes;
  if (c.HasInput(3)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> listed, c.ConstInts(3, "axes"));
    for (int64_t axis : listed) {
      KF_ASSIGN_OR_RETURN(int64_t normalized, c.NormalizeAxis(axis, c.Rank(0)));
      axes.push_back(normalized);
    }
  } else {
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  if (pads.size() != 2 * axes.size()) {
    return InvalidArgument(fmt::format("pads [{}] need 2 entries for each of {} axes",
                                       fmt::join(pads, ","), axes.size()));
  }
  const std::string mode = c.node().StringAttr("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap") {
    return InvalidArgument(fmt::format("unknown mode '{}'", mode));
  }
  std::vector<int64_t> pad_begin(x.size(), 0);
  for (size_t i = 0; i < axes.size(); ++i) pad_begin[static_cast<size_t>(axes[i])] = pads[i];
  // Per dim, the input index of every output index.
  std::vector<std::vector<int64_t>> source(x.size());
  for (size_t d = 0; d < x.size(); ++d) {
    for (int64_t o = 0; o < out[d]; ++o)
      source[d].push_back(PadSource(o, pad_begin[d], x[d], mode));
  }
  const Shape in_strides = Strides(x);
  const bool has_value_input = c.HasInput(2);
  const double value_attr = c.node().FloatAttr("value", 0.0);
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const OpArgs& a) {
      const int64_t total = NumElements(out);
      if (total == 0) return Status::Ok();
      // The fill in the element's own bit pattern.
      const bool fed = has_value_input && a.inputs[2]->elements > 0;
      T fill{};
      if constexpr (sizeof(T) == sizeof(float)) {
        const float f = fed ? a.inputs[2]->as<const float>()[0] : static_cast<float>(value_attr);
        std::memcpy(&fill, &f, sizeof(T));
      } else if constexpr (sizeof(T) == sizeof(int64_t)) {
        const int64_t v =
            fed ? a.inputs[2]->as<const int64_t>()[0] : static_cast<int64_t>(value_attr);
        std::memcpy(&fill, &v, sizeof(T));
      } else {
        fill = static_cast<T>(fed ? a.inputs[2]->as<const uint8_t>()[0] != 0 : value_attr != 0);
      }
      const T* src = a.inputs[0]->as<const T>();
      T* dst = a.outputs[0]->as<T>();
      if (out.empty()) {
        *dst = *src;
        return Status::Ok();
      }
      const int64_t inner = out.back();
      const std::vector<int64_t>& last = source.back();
      ParallelFor(total / inner, std::max<int64_t>(1, kParallelGrainElements / inner),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t r = begin; r < end; ++r) {
                      int64_t rest = r;
                      int64_t offset = 0;
                      bool constant_row = false;
                      for (size_t d = out.size() - 1; d-- > 0;) {
                        const int64_t i = source[d][static_cast<size_t>(rest % out[d])];
                        rest /= out[d];
                        if (i < 0) constant_row = true;
                        offset += i * in_strides[d];
                      }
                      T* row = dst + r * inner;
                      if (constant_row) {
                        std::fill(row, row + inner, fill);
                        continue;
                      }
                      for (int64_t j = 0; j < inner; ++j) {
                        const int64_t i = last[static_cast<size_t>(j)];
                        row[j] = i < 0 ? fill : src[offset + i];
                      }
                    }
                  });
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

// ---- Gather ----

Result<PreparedOp> PrepareGather(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape& data = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  if (c.InStorage(1) != Storage::kInt) return InvalidArgument("indices must be integers");
  const int64_t outer = NumElements(Shape(data.begin(), data.begin() + axis));
  const int64_t dim = data[static_cast<size_t>(axis)];
  const int64_t inner_bytes =
      NumElements(Shape(data.begin() + axis + 1, data.end())) * StorageBytes(c.InStorage(0));
  const int64_t count = NumElements(c.InShape(1));
  Kernel run = [=](const OpArgs& a) {
    const int64_t* indices = a.inputs[1]->as<const int64_t>();
    for (int64_t j = 0; j < count; ++j) {
      if (indices[j] < -dim || indices[j] >= dim) {
        return InvalidArgument(
            fmt::format("index {} is out of range for dim {} of size {}", indices[j], axis, dim));
      }
    }
    const auto* src = static_cast<const std::byte*>(a.inputs[0]->data);
    auto* dst = static_cast<std::byte*>(a.outputs[0]->data);
    ParallelFor(
        outer * count,
        std::max<int64_t>(1, 4 * kParallelGrainElements / std::max<int64_t>(inner_bytes, 1)),
        [&](int64_t begin, int64_t end) {
          for (int64_t p = begin; p < end; ++p) {
            const int64_t o = p / count;
            int64_t index = indices[p % count];
            if (index < 0) index += dim;
            std::memcpy(dst + p * inner_bytes, src + (o * dim + index) * inner_bytes,
                        static_cast<size_t>(inner_bytes));
          }
        });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareGatherElements(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  const Shape data = c.InShape(0);
  const Shape indices_shape = c.InShape(1);
  if (data.size() != indices_shape.size() || data.empty()) {
    return InvalidArgument("data and indices need the same rank >= 1");
  }
  if (c.InStorage(1) != Storage::kInt) return InvalidArgument("indices must be integers");
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", 0), c.Rank(0)));
  std::vector<int64_t> walk = Strides(data);
  const int64_t axis_stride = walk[static_cast<size_t>(axis)];
  const int64_t dim = data[static_cast<size_t>(axis)];
  walk[static_cast<size_t>(axis)] = 0;  // the index supplies the position along the axis
  const std::vector<int64_t> dims(indices_shape.begin(), indices_shape.end());
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const OpArgs& a) {
      const int64_t* indices = a.inputs[1]->as<const int64_t>();
      const int64_t count = a.inputs[1]->elements;
      for (int64_t j = 0; j < count; ++j) {
        if (indices[j] < -dim || indices[j] >= dim) {
          return InvalidArgument(
              fmt::format("index {} is out of range for dim {} of size {}", indices[j], axis, dim));
        }
      }
      const T* src = a.inputs[0]->as<const T>();
      T* dst = a.outputs[0]->as<T>();
      ParallelFor(count, kParallelGrainElements, [&](int64_t begin, int64_t end) {
        Odometer<1> it{&dims, {&walk}, {}, {}};
        it.Seek(begin);
        for (int64_t p = begin; p < end; ++p) {
          const int64_t index = indices[p] < 0 ? indices[p] + dim : indices[p];
          dst[p] = src[it.offset[0] + index * axis_stride];
          it.Next();
        }
      });
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

// ---- Generators ----

Result<PreparedOp> PrepareShape(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  const int64_t rank = c.Rank(0);
  int64_t start = c.node().IntAttr("start", 0);
  int64_t end = c.node().IntAttr("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  const std::vector<int64_t> dims(x.begin() + start, x.begin() + std::max(start, end));
  Kernel run = [dims](const OpArgs& a) {
    std::copy(dims.begin(), dims.end(), a.outputs[0]->as<int64_t>());
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareConstantOfShape(const NodeContext& c) {
  const Storage storage = c.OutStorage(0);
  const double value = c.node().FloatAttr("value", 0.0);
  const int64_t int_value = c.node().IntAttr("value", static_cast<int64_t>(value));
  Kernel run = [storage, value, int_value](const OpArgs& a) {
    View* out = a.outputs[0];
    if (storage == Storage::kFloat) {
      std::fill(out->as<float>(), out->as<float>() + out->elements, static_cast<float>(value));
    } else if (storage == Storage::kInt) {
      std::fill(out->as<int64_t>(), out->as<int64_t>() + out->elements, int_value);
    } else {
      std::fill(out->as<uint8_t>(), out->as<uint8_t>() + out->elements,
                static_cast<uint8_t>(value != 0 || int_value != 0));
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareRange(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  const Storage storage = c.OutStorage(0);
  if (storage == Storage::kBool) return InvalidArgument("Range of bool is not supported");
  Kernel run = [storage](const OpArgs& a) {
    View* out = a.outputs[0];
    if (storage == Storage::kFloat) {
      const float start = a.inputs[0]->as<const float>()[0];
      const float delta = a.inputs[2]->as<const float>()[0];
      for (int64_t k = 0; k < out->elements; ++k) {
        out->as<float>()[k] = start + static_cast<float>(k) * delta;
      }
    } else {
      const int64_t start = a.inputs[0]->as<const int64_t>()[0];
      const int64_t delta = a.inputs[2]->as<const int64_t>()[0];
      for (int64_t k = 0; k < out->elements; ++k) out->as<int64_t>()[k] = start + k * delta;
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareTrilu(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape& x = c.InShape(0);
  if (x.size() < 2) return InvalidArgument("needs rank >= 2");
  const int64_t rows = x[x.size() - 2];
  const int64_t cols = x.back();
  const int64_t planes = NumElements(Shape(x.begin(), x.end() - 2));
  const bool upper = c.node().IntAttr("upper", 1) != 0;
  const bool has_k = c.HasInput(1);
  Kernel run = WithElementType(c.InStorage(0), [&](auto tag) -> Kernel {
    using T = decltype(tag);
    return [=](const OpArgs& a) {
      const int64_t k = has_k ? a.inputs[1]->as<const int64_t>()[0] : 0;
      const T* src = a.inputs[0]->as<const T>();
      T* dst = a.outputs[0]->as<T>();
      ParallelFor(planes * rows,
                  std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(cols, 1)),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t r = begin; r < end; ++r) {
                      const int64_t i = r % rows;
                      for (int64_t j = 0; j < cols; ++j) {
                        const bool keep = upper ? j - i >= k : j - i <= k;
                        dst[r * cols + j] = keep ? src[r * cols + j] : T{0};
                      }
                    }
                  });
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), 0, false};
}

// ---- Resize ----

// One resized axis: for every output index a fixed number of (input index, weight) taps, and
// whether the position fell outside the crop (tf_crop_and_resize's extrapolation).
struct AxisTaps {
  size_t dim = 0;
  int64_t in = 0;
  int64_t out = 0;
  int64_t width = 0;
  std::vector<int64_t> index;  // out * width
  std::vector<float> weight;   // out * width
  std::vector<uint8_t> outside;
};

struct ResizeAttrs {
  std::string mode;
  std::string transform;
  std::string nearest_mode;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
};

double CubicKernel(double x, double a) {
  x = std::fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

Result<AxisTaps> ComputeTaps(const ResizeAttrs& attrs, size_t dim, int64_t in, int64_t out,
                             double scale, double roi_start, double roi_end) {
  AxisTaps taps;
  taps.dim = dim;
  taps.in = in;
  taps.out = out;
  const bool nearest = attrs.mode == "nearest";
  const bool linear = attrs.mode == "linear";
  const double s = attrs.antialias && !nearest ? std::min(scale, 1.0) : 1.0;
  // Offsets of the taps from the left neighbour, as ONNX's reference picks them.
  int64_t first = 0;
  int64_t count = 1;
  if (linear) {
    first = static_cast<int64_t>(std::floor(-1.0 / s)) + 1;
    count = 2 - 2 * first;
  } else if (!nearest) {
    first = static_cast<int64_t>(std::floor(-2.0 / s)) + 1;
    count = 2 - 2 * first;
  }
  taps.width = count;
  const auto in_d = static_cast<double>(in);
  const auto out_d = static_cast<double>(out);
  for (int64_t j = 0; j < out; ++j) {
    const auto jd = static_cast<double>(j);
    double x = 0;
    const std::string& t = attrs.transform;
    if (t == "half_pixel") {
      x = (jd + 0.5) / scale - 0.5;
    } else if (t == "half_pixel_symmetric") {
      const double adjustment = out_d / (scale * in_d);
      x = in_d / 2 * (1 - adjustment) + (jd + 0.5) / scale - 0.5;
    } else if (t == "pytorch_half_pixel") {
      x = out > 1 ? (jd + 0.5) / scale - 0.5 : 0;
    } else if (t == "align_corners") {
      x = out == 1 ? 0 : jd * (in_d - 1) / (out_d - 1);
    } else if (t == "asymmetric") {
      x = jd / scale;
    } else if (t == "tf_crop_and_resize") {
      x = out > 1 ? roi_start * (in_d - 1) + jd * (roi_end - roi_start) * (in_d - 1) / (out_d - 1)
                  : 0.5 * (roi_start + roi_end) * (in_d - 1);
    } else {
      return InvalidArgument(fmt::format("unknown coordinate_transformation_mode '{}'", t));
    }
    taps.outside.push_back(t == "tf_crop_and_resize" && (x < 0 || x > in_d - 1) ? 1 : 0);
    if (nearest) {
      double picked = 0;
      if (attrs.nearest_mode == "round_prefer_floor") {
        picked = std::ceil(x - 0.5);
      } else if (attrs.nearest_mode == "round_prefer_ceil") {
        picked = std::floor(x + 0.5);
      } else if (attrs.nearest_mode == "floor") {
        picked = std::floor(x);
      } else if (attrs.nearest_mode == "ceil") {
        picked = std::ceil(x);
      } else {
        return InvalidArgument(fmt::format("unknown nearest_mode '{}'", attrs.nearest_mode));
      }
      taps.index.push_back(std::clamp<int64_t>(static_cast<int64_t>(picked), 0, in - 1));
      taps.weight.push_back(1.0f);
      continue;
    }
    // The left neighbour and x's distance from it, in (0, 1].
    const auto left = static_cast<int64_t>(std::ceil(x)) - 1;
    const double ratio = x - static_cast<double>(left);
    std::vector<double> w(static_cast<size_t>(count));
    double sum = 0;
    for (int64_t k = 0; k < count; ++k) {
      const double distance = (static_cast<double>(first + k) - ratio) * s;
      w[static_cast<size_t>(k)] =
          linear ? std::max(0.0, 1 - std::fabs(distance)) : CubicKernel(distance, attrs.cubic_a);
      sum += w[static_cast<size_t>(k)];
    }
    if (attrs.exclude_outside) {
      sum = 0;
      for (int64_t k = 0; k < count; ++k) {
        const int64_t i = left + first + k;
        if (i < 0 || i >= in) w[static_cast<size_t>(k)] = 0;
        sum += w[static_cast<size_t>(k)];
      }
    }
    for (int64_t k = 0; k < count; ++k) {
      taps.index.push_back(std::clamp<int64_t>(left + first + k, 0, in - 1));
      taps.weight.push_back(static_cast<float>(sum != 0 ? w[static_cast<size_t>(k)] / sum : 0));
    }
  }
  return taps;
}

// One separable pass along taps.dim: [outer, in, inner] -> [outer, out, inner].
template <typename T>
void ResizePass(const T* src, T* dst, const Shape& shape, const AxisTaps& taps,
                float extrapolation) {
  const int64_t outer = NumElements(Shape(shape.begin(), shape.begin() + taps.dim));
  const int64_t inner = NumElements(Shape(shape.begin() + taps.dim + 1, shape.end()));
  const int64_t width = taps.width;
  ParallelFor(outer * taps.out,
              std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(inner * width, 1)),
              [&](int64_t begin, int64_t end) {
                for (int64_t p = begin; p < end; ++p) {
                  const int64_t o = p / taps.out;
                  const int64_t j = p % taps.out;
                  T* row = dst + p * inner;
                  if (taps.outside[static_cast<size_t>(j)] != 0) {
                    std::fill(row, row + inner, static_cast<T>(extrapolation));
                    continue;
                  }
                  const int64_t* index = taps.index.data() + j * width;
                  const float* weight = taps.weight.data() + j * width;
                  if (width == 1) {
                    std::copy_n(src + (o * taps.in + index[0]) * inner, inner, row);
                    continue;
                  }
                  for (int64_t i = 0; i < inner; ++i) {
                    float acc = 0;
                    for (int64_t k = 0; k < width; ++k) {
                      acc +=
                          weight[k] * static_cast<float>(src[(o * taps.in + index[k]) * inner + i]);
                    }
                    row[i] = static_cast<T>(acc);
                  }
                }
              });
}

Result<PreparedOp> PrepareResize(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Shape x = c.InShape(0);
  const Shape out = c.OutShape(0);
  ResizeAttrs attrs;
  attrs.mode = c.node().StringAttr("mode", "nearest");
  attrs.transform = c.node().StringAttr("coordinate_transformation_mode", "half_pixel");
  attrs.nearest_mode = c.node().StringAttr("nearest_mode", "round_prefer_floor");
  attrs.cubic_a = c.node().FloatAttr("cubic_coeff_a", -0.75);
  attrs.exclude_outside = c.node().IntAttr("exclude_outside", 0) != 0;
  attrs.antialias = c.node().IntAttr("antialias", 0) != 0;
  const auto extrapolation = static_cast<float>(c.node().FloatAttr("extrapolation_value", 0.0));
  if (attrs.mode != "nearest" && attrs.mode != "linear" && attrs.mode != "cubic") {
    return InvalidArgument(fmt::format("unknown mode '{}'", attrs.mode));
  }
  const Storage storage = c.InStorage(0);
  if (storage != Storage::kFloat && attrs.mode != "nearest") {
    return InvalidArgument("only nearest Resize is supported for non-floating tensors");
  }
  std::vector<int64_t> axes = c.node().IntsAttr("axes");
  if (axes.empty()) {
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  for (int64_t& axis : axes) {
    KF_ASSIGN_OR_RETURN(axis, c.NormalizeAxis(axis, c.Rank(0)));
  }
  std::vector<double> scales(x.size(), 1.0);
  std::vector<double> given_scales;
  if (c.HasInput(2)) {
    KF_ASSIGN_OR_RETURN(given_scales, c.ConstFloats(2, "scales"));
  }
  if (!given_scales.empty()) {
    if (given_scales.size() != axes.size()) return InvalidArgument("scales do not match the axes");
    for (size_t i = 0; i < axes.size(); ++i) scales[static_cast<size_t>(axes[i])] = given_scales[i];
  } else {
    // From sizes: the output over the input per axis, or one common scale with a keep-aspect
    // policy (the output dims already reflect it).
    const std::string policy = c.node().StringAttr("keep_aspect_ratio_policy", "stretch");
    double common = policy == "not_larger" ? std::numeric_limits<double>::max() : 0.0;
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> sizes, c.ConstInts(3, "sizes"));
    if (sizes.size() != axes.size()) return InvalidArgument("sizes do not match the axes");
    for (size_t i = 0; i < axes.size(); ++i) {
      const auto d = static_cast<size_t>(axes[i]);
      if (x[d] == 0) return InvalidArgument("cannot resize an empty dim");
      scales[d] = static_cast<double>(sizes[i]) / static_cast<double>(x[d]);
      common = policy == "not_larger" ? std::min(common, scales[d]) : std::max(common, scales[d]);
    }
    if (policy != "stretch") {
      for (int64_t axis : axes) scales[static_cast<size_t>(axis)] = common;
    }
  }
  const bool crop = attrs.transform == "tf_crop_and_resize";
  // roi: starts then ends, for the listed axes (or every dim).
  std::optional<std::vector<double>> roi;
  if (crop && c.HasInput(1) && c.IsConstant(1)) {
    KF_ASSIGN_OR_RETURN(roi, c.ConstFloats(1, "roi"));
  } else if (!crop || !c.HasInput(1)) {
    roi = std::vector<double>();
  }
  std::vector<size_t> pass_dims;
  for (size_t d = 0; d < x.size(); ++d) {
    if (crop || x[d] != out[d] || scales[d] != 1.0) pass_dims.push_back(d);
  }
  // Shapes between passes, and the largest, which sizes the two ping-pong scratch buffers.
  std::vector<Shape> shapes = {x};
  int64_t largest = 0;
  for (size_t d : pass_dims) {
    Shape next = shapes.back();
    next[d] = out[d];
    shapes.push_back(next);
  }
  for (size_t i = 1; i + 1 < shapes.size(); ++i)
    largest = std::max(largest, NumElements(shapes[i]));
  auto make_taps = [=](const std::vector<double>& roi_values) -> Result<std::vector<AxisTaps>> {
    std::vector<AxisTaps> passes;
    for (size_t d : pass_dims) {
      double start = 0;
      double end = 1;
      if (!roi_values.empty()) {
        const auto it = std::find(axes.begin(), axes.end(), static_cast<int64_t>(d));
        const size_t slot = static_cast<size_t>(it - axes.begin());
        if (it != axes.end() && slot + axes.size() < roi_values.size()) {
          start = roi_values[slot];
          end = roi_values[slot + axes.size()];
        }
      }
      KF_ASSIGN_OR_RETURN(AxisTaps taps,
                          ComputeTaps(attrs, d, x[d], out[d], scales[d], start, end));
      passes.push_back(std::move(taps));
    }
    return passes;
  };
  std::vector<AxisTaps> fixed;
  if (roi) {
    KF_ASSIGN_OR_RETURN(fixed, make_taps(*roi));
  }
  const int64_t elem_bytes = StorageBytes(storage);
  const size_t scratch_bytes = static_cast<size_t>(2 * largest * elem_bytes + 128);
  Kernel run = WithElementType(storage, [&](auto tag) -> Kernel {
    using Bits = decltype(tag);
    return [=](const OpArgs& a) -> Status {
      std::vector<AxisTaps> computed;
      if (!roi) {
        // tf_crop_and_resize with a roi computed at run time.
        const View* r = a.inputs[1];
        std::vector<double> values(r->as<const float>(), r->as<const float>() + r->elements);
        KF_ASSIGN_OR_RETURN(computed, make_taps(values));
      }
      const std::vector<AxisTaps>& passes = roi ? fixed : computed;
      if (passes.empty()) {
        std::memcpy(a.outputs[0]->data, a.inputs[0]->data,
                    static_cast<size_t>(a.outputs[0]->elements * elem_bytes));
        return Status::Ok();
      }
      const size_t half = (static_cast<size_t>(largest * elem_bytes) + 63) / 64 * 64;
      std::array<void*, 2> buffers = {a.scratch, a.scratch + half};
      const void* src = a.inputs[0]->data;
      for (size_t p = 0; p < passes.size(); ++p) {
        void* dst = p + 1 == passes.size() ? a.outputs[0]->data : buffers[p % 2];
        if (storage == Storage::kFloat) {
          ResizePass(static_cast<const float*>(src), static_cast<float*>(dst), shapes[p], passes[p],
                     extrapolation);
        } else if (storage == Storage::kInt) {
          ResizePass(static_cast<const int64_t*>(src), static_cast<int64_t*>(dst), shapes[p],
                     passes[p], extrapolation);
        } else {
          ResizePass(static_cast<const Bits*>(src), static_cast<Bits*>(dst), shapes[p], passes[p],
                     extrapolation);
        }
        src = dst;
      }
      return Status::Ok();
    };
  });
  return PreparedOp{std::move(run), scratch_bytes, false};
}

}  // namespace

void PermuteCopy(const void* in, void* out, int64_t elem_bytes, const Shape& in_shape,
                 const std::vector<int64_t>& perm) {
  switch (elem_bytes) {
    case 8:
      PermuteTyped(static_cast<const uint64_t*>(in), static_cast<uint64_t*>(out), in_shape, perm);
      return;
    case 4:
      PermuteTyped(static_cast<const uint32_t*>(in), static_cast<uint32_t*>(out), in_shape, perm);
      return;
    default:
      PermuteTyped(static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), in_shape, perm);
      return;
  }
}

bool IsLayoutOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {
      "Reshape",        "Squeeze", "Unsqueeze",       "Flatten", "Identity", "Dropout",
      "Transpose",      "Expand",  "Concat",          "Split",   "Slice",    "Gather",
      "GatherElements", "Shape",   "ConstantOfShape", "Range",   "Tile",     "Pad",
      "Resize",         "Trilu"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PrepareLayoutOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "Reshape" || op == "Squeeze" || op == "Unsqueeze" || op == "Flatten" ||
      op == "Identity") {
    KF_RETURN_IF_ERROR(c.RequireInputs(1));
    return PreparedOp{{}, 0, true};
  }
  if (op == "Dropout") return PrepareDropout(c);
  if (op == "Transpose") return PrepareTranspose(c);
  if (op == "Expand") return PrepareExpand(c);
  if (op == "Concat") return PrepareConcat(c);
  if (op == "Split") return PrepareSplit(c);
  if (op == "Slice") return PrepareSlice(c);
  if (op == "Gather") return PrepareGather(c);
  if (op == "GatherElements") return PrepareGatherElements(c);
  if (op == "Shape") return PrepareShape(c);
  if (op == "ConstantOfShape") return PrepareConstantOfShape(c);
  if (op == "Range") return PrepareRange(c);
  if (op == "Tile") return PrepareTile(c);
  if (op == "Pad") return PreparePad(c);
  if (op == "Resize") return PrepareResize(c);
  if (op == "Trilu") return PrepareTrilu(c);
  return InvalidArgument(fmt::format("no baseline kernel for {}", op));
}

}  // namespace kfleet::runtime::baseline
