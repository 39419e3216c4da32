// Kernels of the CPU baseline executor (runtime/baseline.h), private to it. Each node is prepared
// once (attributes read, geometry and broadcast strides computed) into a closure that runs on
// buffers the executor owns. Values are held as f32 (every floating dtype), i64 (every integer
// dtype) or one byte per bool.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

// Compute-bound loops (exp, tanh, softmax) get one copy per SIMD width, chosen when the program
// loads: the default x86-64 target stops at SSE2, and eager frameworks use the widest vectors.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KF_SIMD_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define KF_SIMD_CLONES
#endif

namespace kfleet::runtime::baseline {

using planner::DType;
using planner::Shape;

enum class Storage { kFloat, kInt, kBool };
Storage StorageOf(DType dtype);
int64_t StorageBytes(Storage storage);

// One value during a run. The executor sets `data` before the node that reads or writes it runs.
struct View {
  void* data = nullptr;
  Storage storage = Storage::kFloat;
  DType dtype = DType::kF32;  // the graph's dtype (Cast rounds to it)
  Shape shape;
  int64_t elements = 0;

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

struct OpArgs {
  std::vector<const View*> inputs;  // nullptr where an optional input is omitted
  std::vector<View*> outputs;       // nullptr where an optional output is omitted
  std::byte* scratch = nullptr;     // PreparedOp::scratch_bytes, 64-byte aligned

  bool HasInput(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  bool HasOutput(size_t i) const { return i < outputs.size() && outputs[i] != nullptr; }
};

using Kernel = std::function<Status(const OpArgs&)>;

struct PreparedOp {
  Kernel run;  // may be empty for a pure view
  size_t scratch_bytes = 0;
  // Output 0 is input 0's data under another shape (Reshape and friends): the executor makes it
  // share input 0's buffer, as an eager framework's view does, and no element is copied.
  bool output_is_view = false;
};

// What a preparation reads: the node, its graph, and errors without the node prefix (the executor
// adds DescribeNode).
class NodeContext {
 public:
  NodeContext(const planner::Graph& graph, const planner::Node& node, int threads)
      : graph_(graph), node_(node), threads_(threads) {}

  const planner::Node& node() const { return node_; }
  // The OpenMP team the run will have: per-thread scratch is sized by it.
  int threads() const { return threads_; }
  const planner::Graph& graph() const { return graph_; }
  bool HasInput(size_t i) const { return i < node_.inputs.size() && node_.inputs[i] >= 0; }
  bool HasOutput(size_t i) const { return i < node_.outputs.size() && node_.outputs[i] >= 0; }
  const planner::Value& Input(size_t i) const { return graph_.values[node_.inputs[i]]; }
  const planner::Value& Output(size_t i) const { return graph_.values[node_.outputs[i]]; }
  const Shape& InShape(size_t i) const { return Input(i).shape; }
  const Shape& OutShape(size_t i) const { return Output(i).shape; }
  Storage InStorage(size_t i) const { return StorageOf(Input(i).dtype); }
  Storage OutStorage(size_t i) const { return StorageOf(Output(i).dtype); }
  int64_t Rank(size_t i) const { return static_cast<int64_t>(InShape(i).size()); }

  Status RequireInputs(size_t count) const;
  // The values of a constant input (Reshape's shape, Slice's starts); an error when the input is
  // computed at run time.
  Result<std::vector<int64_t>> ConstInts(size_t i, std::string_view role) const;
  Result<std::vector<double>> ConstFloats(size_t i, std::string_view role) const;
  bool IsConstant(size_t i) const;
  // Ints from input `i` when present, else attribute `attr` (the form before opset 13 / 18).
  Result<std::optional<std::vector<int64_t>>> IntsFromInputOrAttr(size_t i,
                                                                  std::string_view attr) const;
  Result<int64_t> NormalizeAxis(int64_t axis, int64_t rank) const;

 private:
  const planner::Graph& graph_;
  const planner::Node& node_;
  int threads_;
};

// Per family; each returns InvalidArgument for an op it does not know.
Result<PreparedOp> PrepareElementwiseOp(const NodeContext& c);  // baseline_ops.cc
Result<PreparedOp> PrepareLinearOp(const NodeContext& c);       // baseline_linear.cc
Result<PreparedOp> PrepareLayoutOp(const NodeContext& c);       // baseline_layout.cc
bool IsElementwiseOp(std::string_view op);
bool IsLinearOp(std::string_view op);
bool IsLayoutOp(std::string_view op);

// ---- Shared loops ----

// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
inline constexpr int64_t kParallelGrainElements = 1 << 15;

// Calls body(begin, end) over [0, n) split across the OpenMP team; `grain` is the smallest range
// worth a thread of its own.
template <typename Body>
void ParallelFor(int64_t n, int64_t grain, const Body& body) {
  if (n <= 0) return;
  const int threads = omp_get_max_threads();
  if (threads <= 1 || n <= std::max<int64_t>(grain, 1) || omp_in_parallel()) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t useful = std::min<int64_t>(threads, (n + grain - 1) / std::max<int64_t>(grain, 1));
  // Always the whole team, with the threads past `useful` idle: a region of another size makes
  // libgomp re-dock its pool, which cost 16-thread hosts about 150 us per small op.
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num();
    const int64_t team = std::min<int64_t>(useful, omp_get_num_threads());
    const int64_t chunk = (n + team - 1) / team;
    const int64_t begin = std::min(n, t * chunk);
    const int64_t end = std::min(n, begin + chunk);
    if (t < team && begin < end) body(begin, end);
  }
}

// Row-major odometer over `dims`, tracking an element offset per operand.
template <size_t N>
struct Odometer {
  const std::vector<int64_t>* dims;
  std::array<const std::vector<int64_t>*, N> strides;
  std::vector<int64_t> index;
  std::array<int64_t, N> offset{};

  // Positions the odometer at linear index `linear` of dims.
  void Seek(int64_t linear) {
    index.assign(dims->size(), 0);
    offset.fill(0);
    for (size_t d = dims->size(); d-- > 0;) {
      const int64_t size = (*dims)[d];
      index[d] = size > 0 ? linear % size : 0;
      linear = size > 0 ? linear / size : 0;
      for (size_t k = 0; k < N; ++k) offset[k] += index[d] * (*strides[k])[d];
    }
  }
  void Next() {
    for (size_t d = dims->size(); d-- > 0;) {
      for (size_t k = 0; k < N; ++k) offset[k] += (*strides[k])[d];
      if (++index[d] < (*dims)[d]) return;
      for (size_t k = 0; k < N; ++k) offset[k] -= index[d] * (*strides[k])[d];
      index[d] = 0;
    }
  }
};

// Operands broadcast to an output shape, with dims of size 1 dropped and neighbouring dims merged
// wherever every operand walks them as one, so the innermost run is as long as possible.
template <size_t N>
struct BroadcastPlan {
  std::vector<int64_t> dims;                    // collapsed output dims, at least one
  std::array<std::vector<int64_t>, N> strides;  // per operand, 0 on broadcast dims
  int64_t elements = 0;

  static BroadcastPlan Make(const Shape& out, const std::array<Shape, N>& ins);
  int64_t inner() const { return dims.back(); }
  int64_t inner_stride(size_t k) const { return strides[k].back(); }
};

template <size_t N>
BroadcastPlan<N> BroadcastPlan<N>::Make(const Shape& out, const std::array<Shape, N>& ins) {
  BroadcastPlan plan;
  plan.elements = planner::NumElements(out);
  const size_t rank = out.size();
  std::array<std::vector<int64_t>, N> full;
  for (size_t k = 0; k < N; ++k) {
    const Shape& in = ins[k];
    full[k].assign(rank, 0);
    int64_t stride = 1;
    for (size_t i = 0; i < in.size(); ++i) {
      const size_t d_in = in.size() - 1 - i;
      const size_t d_out = rank - 1 - i;
      full[k][d_out] = in[d_in] == 1 ? 0 : stride;
      stride *= in[d_in];
    }
  }
  for (size_t d = 0; d < rank; ++d) {
    if (out[d] == 1) continue;
    bool merge = !plan.dims.empty();
    for (size_t k = 0; k < N && merge; ++k) {
      merge = plan.strides[k].back() == full[k][d] * out[d];
    }
    if (merge) {
      plan.dims.back() *= out[d];
      for (size_t k = 0; k < N; ++k) plan.strides[k].back() = full[k][d];
    } else {
      plan.dims.push_back(out[d]);
      for (size_t k = 0; k < N; ++k) plan.strides[k].push_back(full[k][d]);
    }
  }
  if (plan.dims.empty()) {
    plan.dims.push_back(1);
    for (size_t k = 0; k < N; ++k) plan.strides[k].push_back(0);
  }
  return plan;
}

// Calls run(out_offset, in_offsets, count) for runs of output elements along the innermost dim,
// in parallel. Within a run operand k advances by plan.inner_stride(k) (0 or 1) per element.
template <size_t N, typename Run>
void ForEachRun(const BroadcastPlan<N>& plan, const Run& run) {
  const int64_t inner = plan.inner();
  if (plan.elements == 0) return;
  const int64_t rows = plan.elements / inner;
  if (rows == 1) {
    ParallelFor(inner, kParallelGrainElements, [&](int64_t begin, int64_t end) {
      std::array<int64_t, N> offsets;
      for (size_t k = 0; k < N; ++k) offsets[k] = begin * plan.inner_stride(k);
      run(begin, offsets, end - begin);
    });
    return;
  }
  const std::vector<int64_t> outer(plan.dims.begin(), plan.dims.end() - 1);
  std::array<std::vector<int64_t>, N> outer_strides;
  for (size_t k = 0; k < N; ++k) {
    outer_strides[k].assign(plan.strides[k].begin(), plan.strides[k].end() - 1);
  }
  const int64_t grain = std::max<int64_t>(1, kParallelGrainElements / inner);
  ParallelFor(rows, grain, [&](int64_t begin, int64_t end) {
    Odometer<N> it{&outer, {}, {}, {}};
    for (size_t k = 0; k < N; ++k) it.strides[k] = &outer_strides[k];
    it.Seek(begin);
    for (int64_t r = begin; r < end; ++r) {
      run(r * inner, it.offset, inner);
      it.Next();
    }
  });
}

// Copies `in` broadcast to `out_shape` into `out` (Expand; scale / bias operands).
template <typename T>
void BroadcastCopy(const T* in, const Shape& in_shape, T* out, const Shape& out_shape) {
  const auto plan = BroadcastPlan<1>::Make(out_shape, {in_shape});
  const int64_t stride = plan.inner_stride(0);
  ForEachRun(plan, [&](int64_t o, const std::array<int64_t, 1>& off, int64_t n) {
    T* dst = out + o;
    const T* src = in + off[0];
    if (stride == 1) {
      std::copy(src, src + n, dst);
    } else {
      std::fill(dst, dst + n, *src);
    }
  });
}

// Copies `in` (shape `in_shape`, elements of `elem_bytes`) into `out` with its dims permuted:
// out dim d is in dim perm[d] (Transpose; reductions over scattered axes).
void PermuteCopy(const void* in, void* out, int64_t elem_bytes, const Shape& in_shape,
                 const std::vector<int64_t>& perm);

}  // namespace kfleet::runtime::baseline
