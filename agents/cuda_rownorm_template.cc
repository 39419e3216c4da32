// "cuda_rownorm": a row normalization, softmax or reduction (rownorm_analysis.h's RowPlan: the
// core with its fused prologue and epilogue) as one CUDA kernel. A warp or a whole block owns a
// row; statistics are reduced across its threads in a fixed order (deterministic), in f32 for
// every storage type. Rows up to a compile-time size stay in registers between passes; longer
// ones are read again from memory.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agents/cuda_templates.h"
#include "agents/kernel_math.h"
#include "agents/rownorm_analysis.h"

namespace kfleet::agents {
namespace {

using planner::DType;

bool IsIdentifierChar(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_';
}

// Whether `token` occurs in `text` as a whole token (no identifier character right before it, nor
// right after it when it ends in one).
size_t FindToken(const std::string& text, const std::string& token, size_t from = 0) {
  for (size_t at = text.find(token, from); at != std::string::npos; at = text.find(token, at + 1)) {
    const size_t end = at + token.size();
    const bool open_start = at == 0 || !IsIdentifierChar(text[at - 1]);
    const bool open_end =
        !IsIdentifierChar(token.back()) || end == text.size() || !IsIdentifierChar(text[end]);
    if (open_start && open_end) return at;
  }
  return std::string::npos;
}

std::string ReplaceToken(std::string text, const std::string& token, const std::string& by) {
  for (size_t at = FindToken(text, token); at != std::string::npos;
       at = FindToken(text, token, at + by.size())) {
    text.replace(at, token.size(), by);
  }
  return text;
}

// `text` with every "$NAME" (capitals, digits, '_') replaced by vars' NAME; unknown names stay.
std::string Expand(std::string_view text, const std::map<std::string, std::string>& vars) {
  auto is_name = [](char ch) {
    return std::isupper(static_cast<unsigned char>(ch)) != 0 ||
           std::isdigit(static_cast<unsigned char>(ch)) != 0 || ch == '_';
  };
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    size_t end = i + 1;
    if (text[i] == '$') {
      while (end < text.size() && is_name(text[end])) ++end;
    }
    auto var = vars.find(std::string(text.substr(i + 1, end - i - 1)));
    if (end > i + 1 && var != vars.end()) {
      out += var->second;
      i = end - 1;
    } else {
      out += text[i];
    }
  }
  return out;
}

bool HasPasses(RowKind kind) {
  return kind == RowKind::kLayerNorm || kind == RowKind::kSoftmax || kind == RowKind::kLogSoftmax;
}

// The most floats a thread keeps of a row in registers, and the most threads a row gets.
constexpr int kMaxCachedFloats = 32;
constexpr int kMaxRowThreads = 512;

// Cross-thread reductions: sums and extremes by an xor butterfly (a + b and max(a, b) commute, so
// every lane ends with the same bits), merges that do not commute (Welford, online softmax) by a
// tree to lane 0 and a broadcast; a block then combines its warps' partials in a fixed order.
constexpr std::string_view kReductions = R"(struct kf_add {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct kf_max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct kf_min {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float kf_row_reduce(float v, float* shared, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (kRowThreads == 32) {
    return v;
  } else {
    if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
    __syncthreads();
    float total = shared[0];
    for (int i = 1; i < kRowThreads / 32; ++i) total = op(total, shared[i]);
    __syncthreads();
    return total;
  }
}

// Count, mean and sum of squared deviations of some elements (Welford); merged by Chan's formula.
struct kf_moments {
  float n, mean, m2;
};
__device__ __forceinline__ kf_moments kf_merge(kf_moments a, kf_moments b) {
  if (b.n == 0.0f) return a;
  if (a.n == 0.0f) return b;
  const float n = a.n + b.n;
  const float wb = b.n / n;
  const float d = b.mean - a.mean;
  return {n, a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb};
}
__device__ __forceinline__ kf_moments kf_shfl(kf_moments s, int o, bool down) {
  if (down) {
    return {__shfl_down_sync(0xffffffffu, s.n, o), __shfl_down_sync(0xffffffffu, s.mean, o),
            __shfl_down_sync(0xffffffffu, s.m2, o)};
  }
  return {__shfl_sync(0xffffffffu, s.n, o), __shfl_sync(0xffffffffu, s.mean, o),
          __shfl_sync(0xffffffffu, s.m2, o)};
}

// Running max and the sum of exp(x - max) (online softmax).
struct kf_online {
  float max, sum;
};
__device__ __forceinline__ kf_online kf_merge(kf_online a, kf_online b) {
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}
__device__ __forceinline__ kf_online kf_shfl(kf_online s, int o, bool down) {
  if (down) return {__shfl_down_sync(0xffffffffu, s.max, o), __shfl_down_sync(0xffffffffu, s.sum, o)};
  return {__shfl_sync(0xffffffffu, s.max, o), __shfl_sync(0xffffffffu, s.sum, o)};
}

template <typename S>
__device__ __forceinline__ S kf_row_merge(S s, float* shared) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s = kf_merge(s, kf_shfl(s, o, true));
  if constexpr (kRowThreads == 32) {
    return kf_shfl(s, 0, false);
  } else {
    S* partial = reinterpret_cast<S*>(shared);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
    __syncthreads();
    S total = partial[0];
    for (int i = 1; i < kRowThreads / 32; ++i) total = kf_merge(total, partial[i]);
    __syncthreads();
    return total;
  }
}

)";

// One row: held in J packs of V per thread, or (J == 0) streamed from memory on every pass. The
// host picks, so each kernel's registers are sized for its own path.
constexpr std::string_view kRowFunction = R"(template <int V, int J>
__device__ __forceinline__ void kf_row(const kf_args& a, int64_t r, int t, float* shared) {
  const kf_row_view w = kf_row_at(a, r);
  const int64_t cols = a.cols;
  const int64_t packs = cols / V;
  if constexpr (J > 0) {
    float xs[J][V];
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t p = t + j * kRowThreads;
      if (p < packs) kf_x<V>(w, p * V, xs[j]);
    }
$CACHED  } else {
$STREAMED  }
}

template <int V, int J>
__global__ void __launch_bounds__(kBlock) kf_rownorm(const kf_args a) {
  __shared__ float shared[3 * (kBlock / 32)];
  const int t = threadIdx.x % kRowThreads;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kRowThreads;
       r < a.rows; r += step) {
    kf_row<V, J>(a, r, t, shared);
  }
}

)";

constexpr std::string_view kHost =
    R"(extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream) {
  static const int32_t kDTypes[$N_IN] = {$DTYPES};
  static const int32_t kRanks[$N_IN] = {$RANKS};
  if (in == nullptr || out == nullptr || n_in != $N_IN || n_out != 1) return KF_ERR_INVALID_ARGUMENT;
  for (int32_t i = 0; i < $N_IN; ++i) {
    if (in[i].dtype != kDTypes[i] || in[i].ndim != kRanks[i]) return KF_ERR_INVALID_ARGUMENT;
  }
  if (out[0].dtype != $OUT_DTYPE || out[0].ndim != $OUT_RANK) return KF_ERR_INVALID_ARGUMENT;
  int64_t rows = 1;
  int64_t cols = 1;
  for (int32_t d = 0; d < in[$SHAPE_INPUT].ndim; ++d) {
    (d < in[$SHAPE_INPUT].ndim - $REDUCED_AXES ? rows : cols) *= in[$SHAPE_INPUT].shape[d];
  }
$CHECKS  if (kf_elements(out[0]) != $OUT_ELEMENTS) return KF_ERR_INVALID_ARGUMENT;
  if (rows == 0 || cols == 0) return kf_elements(out[0]) == 0 ? KF_OK : KF_ERR_UNSUPPORTED_SHAPE;
  kf_args a;
$POINTERS  a.rows = rows;
  a.cols = cols;
  const bool vec = kVector > 1 && cols % kVector == 0$ALIGNED;
  int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  // Rows of at most kCached packs per thread stay in registers; without whole aligned packs a
  // pack is one element, and as many are cached.
  const int64_t capacity = static_cast<int64_t>(kCached) * kVector * kRowThreads;
  const bool cached = cols <= capacity;
  const dim3 grid(static_cast<unsigned>(blocks));
  if (vec && cached) {
    kf_rownorm<kVector, kCached><<<grid, kBlock, 0, s>>>(a);
  } else if (vec) {
    kf_rownorm<kVector, 0><<<grid, kBlock, 0, s>>>(a);
  } else if (cached) {
    kf_rownorm<1, kCached * kVector><<<grid, kBlock, 0, s>>>(a);
  } else {
    kf_rownorm<1, 0><<<grid, kBlock, 0, s>>>(a);
  }
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}
)";

struct RowOptions {
  bool warp_per_row = true;
  int block = 256;
  bool cache = true;
  bool one_pass = false;  // Welford for LayerNorm, online max and sum for softmax
  bool vector = true;     // 16-byte loads and stores
};

class RowRenderer {
 public:
  RowRenderer(const RowPlan& plan, const planner::Graph& graph, const RowOptions& options)
      : plan_(plan), g_(graph), options_(options) {}

  int Vector() const;  // elements per 16-byte access to the widest tensor a pack moves
  int Cached(int64_t spec_cols) const;
  std::string Emit(const std::string& explanation, int64_t spec_cols) const;

 private:
  DType InputDType(size_t k) const { return g_.values[g_.inputs[k]].dtype; }
  DType OutputDType() const { return g_.values[g_.outputs[0]].dtype; }
  std::string Views() const;
  std::string Expression(const std::string& expr, std::string& loads) const;
  std::string ElementFunctions() const;
  std::string Pass(bool cached, const std::string& lane, const std::string& after) const;
  std::string Core(bool cached) const;
  std::string Host() const;

  const RowPlan& plan_;
  const planner::Graph& g_;
  const RowOptions& options_;
};

int RowRenderer::Vector() const {
  if (!options_.vector) return 1;
  int64_t widest = planner::DTypeBytes(OutputDType());
  for (size_t k = 0; k < plan_.inputs.size(); ++k) {
    widest = std::max(widest, planner::DTypeBytes(InputDType(k)));
  }
  return static_cast<int>(16 / widest);
}

// Packs per thread held in registers: enough for the spec's own rows, at most kMaxCachedFloats.
int RowRenderer::Cached(int64_t spec_cols) const {
  if (!options_.cache) return 0;
  const int64_t threads = options_.warp_per_row ? 32 : options_.block;
  const int64_t per_pack = threads * Vector();
  const int64_t needed = std::max<int64_t>(1, (spec_cols + per_pack - 1) / per_pack);
  return static_cast<int>(std::min<int64_t>(needed, kMaxCachedFloats / Vector()));
}

// kf_args (the kernel's tensors) and kf_row_view (what one row reads: row pointers and values).
std::string RowRenderer::Views() const {
  std::string args = "struct kf_args {\n";
  std::string view = "struct kf_row_view {\n";
  std::string at =
      "__device__ __forceinline__ kf_row_view kf_row_at(const kf_args& a, int64_t r) {\n"
      "  kf_row_view w;\n";
  for (size_t k = 0; k < plan_.inputs.size(); ++k) {
    const std::string_view type = KernelStorageType(InputDType(k));
    args += fmt::format("  const {}* in{};\n", type, k);
    switch (plan_.inputs[k]) {
      case OperandIndex::kScalar:
        view += fmt::format("  float s{};\n", k);
        at += fmt::format("  w.s{0} = kf_ld(a.in{0}[0]);\n", k);
        break;
      case OperandIndex::kRow:
        view += fmt::format("  float s{};\n", k);
        at += fmt::format("  w.s{0} = kf_ld(a.in{0}[r]);\n", k);
        break;
      case OperandIndex::kColumn:
        view += fmt::format("  const {}* in{};\n", type, k);
        at += fmt::format("  w.in{0} = a.in{0};\n", k);
        break;
      case OperandIndex::kElement:
        view += fmt::format("  const {}* e{};\n", type, k);
        at += fmt::format("  w.e{0} = a.in{0} + r * a.cols;\n", k);
        break;
    }
  }
  const std::string_view out = KernelStorageType(OutputDType());
  args += fmt::format("  {}* out;\n  int64_t rows;\n  int64_t cols;\n}};\n\n", out);
  if (!WritesOnePerRow(plan_.kind)) {
    view += fmt::format("  {}* y;\n", out);
    at += "  w.y = a.out + r * a.cols;\n";
  }
  return args + view + "};\n\n" + at + "  return w;\n}\n\n";
}

// A RowPlan expression read per lane l of a pack starting at column c0: its row operands come
// from the view `w`, its column and element operands from packs it loads (added to `loads`).
std::string RowRenderer::Expression(const std::string& expr, std::string& loads) const {
  std::string out = expr;
  for (size_t k = 0; k < plan_.inputs.size(); ++k) {
    const std::string column = fmt::format("in{}[c]", k);
    const std::string element = fmt::format("e{}[c]", k);
    if (FindToken(out, column) != std::string::npos) {
      loads += fmt::format("  const auto pc{0} = kf_load<V>(w.in{0} + c0);\n", k);
      out = ReplaceToken(out, column, fmt::format("kf_ld(pc{}.v[l])", k));
    }
    if (FindToken(out, element) != std::string::npos) {
      loads += fmt::format("  const auto pe{0} = kf_load<V>(w.e{0} + c0);\n", k);
      out = ReplaceToken(out, element, fmt::format("kf_ld(pe{}.v[l])", k));
    }
    out = ReplaceToken(out, fmt::format("s{}", k), fmt::format("w.s{}", k));
  }
  return out;
}

// kf_x: the row elements (prologue applied) of the pack at c0; kf_y: the epilogue of the core's
// results vv and their store (whole-row kinds).
std::string RowRenderer::ElementFunctions() const {
  std::string loads;
  const std::string x = Expression(plan_.x_expr, loads);
  std::string s = fmt::format(
      "template <int V>\n"
      "__device__ __forceinline__ void kf_x(const kf_row_view& w, int64_t c0, "
      "float (&xv)[V]) {{\n"
      "{}"
      "#pragma unroll\n"
      "  for (int l = 0; l < V; ++l) xv[l] = {};\n"
      "}}\n\n",
      loads, x);
  if (WritesOnePerRow(plan_.kind)) return s;
  loads.clear();
  const std::string y = Expression(plan_.epilogue_expr, loads);
  const std::string_view out = KernelStorageType(OutputDType());
  s += fmt::format(
      "template <int V>\n"
      "__device__ __forceinline__ void kf_y(const kf_row_view& w, int64_t c0, "
      "const float (&vv)[V]) {{\n"
      "{0}"
      "  kf_pack<{1}, V> o;\n"
      "#pragma unroll\n"
      "  for (int l = 0; l < V; ++l) {{\n"
      "    const float v = vv[l];\n"
      "    kf_st(o.v[l], {2});\n"
      "  }}\n"
      "  *reinterpret_cast<kf_pack<{1}, V>*>(w.y + c0) = o;\n"
      "}}\n\n",
      loads, out, y);
  return s;
}

// One pass over this thread's packs of the row: `lane` runs for each element x of a pack (lane
// l), `after` once per pack (first column c0). Their lines start with "$I", the indentation. A
// streamed row is loaded kStreamPacks packs ahead of their use, so that many are in flight.
std::string RowRenderer::Pass(bool cached, const std::string& lane,
                              const std::string& after) const {
  // The write pass also loads the epilogue's operands per pack: one pack at a time there keeps
  // the registers (and so the occupancy) of the statistics passes.
  const std::string ahead = after.empty() ? "kStreamPacks" : "1";
  const std::string in = cached ? "      " : "        ";
  const std::string packs = fmt::format(
      "#pragma unroll\n"
      "{0}for (int j = 0; j < {1}; ++j) {{\n"
      "{0}  const int64_t p = {2} + j * kRowThreads;\n"
      "{0}  if (p >= packs) continue;\n"
      "{0}  const int64_t c0 = p * V;\n"
      "{0}  (void)c0;\n"
      "#pragma unroll\n"
      "{0}  for (int l = 0; l < V; ++l) {{\n"
      "{0}    const float x = {3}[j][l];\n"
      "{4}"
      "{0}  }}\n"
      "{5}"
      "{0}}}\n",
      in.substr(2), cached ? "J" : ahead, cached ? "t" : "q", cached ? "xs" : "xv",
      Expand(lane, {{"I", in + "  "}}), Expand(after, {{"I", in}}));
  if (cached) return packs;
  return Expand(
             "    for (int64_t q = t; q < packs; q += $AHEAD * kRowThreads) {\n"
             "      float xv[$AHEAD][V];\n"
             "#pragma unroll\n"
             "      for (int j = 0; j < $AHEAD; ++j) {\n"
             "        const int64_t p = q + j * kRowThreads;\n"
             "        if (p < packs) kf_x<V>(w, p * V, xv[j]);\n"
             "      }\n",
             {{"AHEAD", ahead}}) +
         packs + "    }\n";
}

// The statistics passes and the write for one row, over cached or streamed packs.
std::string RowRenderer::Core(bool cached) const {
  const std::string in = "    ";
  auto line = [&](const std::string& text) { return in + text + "\n"; };
  auto pass = [&](const std::string& lane, const std::string& after = "") {
    return Pass(cached, lane, after);
  };
  // Whole-row kinds: `v` per element into vv, then kf_y stores the pack.
  auto write = [&](const std::string& v) {
    return pass(fmt::format("$Ivv[l] = {};\n", v), "$Ikf_y<V>(w, c0, vv);\n");
  };
  const std::string eps = fmt::format("static_cast<float>({:.17g})", plan_.epsilon);
  std::string s;
  const bool one = options_.one_pass;
  switch (plan_.kind) {
    case RowKind::kLayerNorm:
      if (one) {
        s += line("kf_moments m = {0.0f, 0.0f, 0.0f};");
        s += pass(
            "$Im.n += 1.0f;\n$Iconst float d = x - m.mean;\n$Im.mean += d / m.n;\n"
            "$Im.m2 += d * (x - m.mean);\n");
        s += line("m = kf_row_merge(m, shared);");
        s += line("const float mean = m.mean;");
        s += line("const float var = fmaxf(m.m2 / static_cast<float>(cols), 0.0f);");
      } else {
        s += line("float sum = 0.0f;");
        s += pass("$Isum += x;\n");
        s += line("const float mean = kf_row_reduce(sum, shared, kf_add{}) / cols;");
        s += line("float sq = 0.0f;");
        s += pass("$Iconst float d = x - mean;\n$Isq += d * d;\n");
        s += line("const float var = kf_row_reduce(sq, shared, kf_add{}) / cols;");
      }
      s += line(fmt::format("const float inv_std = 1.0f / sqrtf(var + {});", eps));
      s += line("float vv[V];");
      s += write("(x - mean) * inv_std");
      break;
    case RowKind::kRmsNorm:
      s += line("float sq = 0.0f;");
      s += pass("$Isq += x * x;\n");
      s += line(fmt::format(
          "const float inv_rms = 1.0f / sqrtf(kf_row_reduce(sq, shared, kf_add{{}}) / cols + {});",
          eps));
      s += line("float vv[V];");
      s += write("x * inv_rms");
      break;
    case RowKind::kSoftmax:
    case RowKind::kLogSoftmax:
      if (one) {
        s += line("kf_online m = {-FLT_MAX, 0.0f};");
        s += pass(
            "$Iif (x > m.max) {\n$I  m.sum = m.sum * expf(m.max - x) + 1.0f;\n"
            "$I  m.max = x;\n$I} else {\n$I  m.sum += expf(x - m.max);\n$I}\n");
        s += line("m = kf_row_merge(m, shared);");
        s += line("const float mx = m.max;");
        s += line("const float sum = m.sum;");
      } else {
        s += line("float mx = -INFINITY;");
        s += pass("$Imx = fmaxf(mx, x);\n");
        s += line("mx = kf_row_reduce(mx, shared, kf_max{});");
        s += line("float part = 0.0f;");
        s += pass("$Ipart += expf(x - mx);\n");
        s += line("const float sum = kf_row_reduce(part, shared, kf_add{});");
      }
      s += line("float vv[V];");
      if (plan_.kind == RowKind::kSoftmax) {
        s += line("const float inv = 1.0f / sum;");
        s += write("expf(x - mx) * inv");
      } else {
        s += line("const float log_sum = logf(sum);");
        s += write("(x - mx) - log_sum");
      }
      break;
    case RowKind::kReduceSum:
    case RowKind::kReduceMean:
    case RowKind::kReduceMax:
    case RowKind::kReduceMin: {
      const bool sum = plan_.kind == RowKind::kReduceSum || plan_.kind == RowKind::kReduceMean;
      const std::string op = sum                                 ? "kf_add"
                             : plan_.kind == RowKind::kReduceMax ? "kf_max"
                                                                 : "kf_min";
      s += line(fmt::format("float acc = {};", sum                                 ? "0.0f"
                                               : plan_.kind == RowKind::kReduceMax ? "-INFINITY"
                                                                                   : "INFINITY"));
      s += pass(fmt::format("$Iacc = {}{{}}(acc, x);\n", op));
      s += line(fmt::format("acc = kf_row_reduce(acc, shared, {}{{}});", op));
      s += line(fmt::format("const float v = acc{};",
                            plan_.kind == RowKind::kReduceMean ? " / cols" : ""));
      std::string unused;
      s += line(
          fmt::format("if (t == 0) kf_st(a.out[r], {});", Expression(plan_.epilogue_expr, unused)));
      break;
    }
  }
  return s;
}

std::string RowRenderer::Host() const {
  std::vector<std::string> dtypes;
  std::vector<std::string> ranks;
  std::string checks;
  std::string pointers;
  std::string aligned;
  for (size_t k = 0; k < plan_.inputs.size(); ++k) {
    dtypes.emplace_back(KernelAbiDType(InputDType(k)));
    ranks.push_back(std::to_string(plan_.input_ranks[k]));
    const OperandIndex index = plan_.inputs[k];
    const char* expected = index == OperandIndex::kScalar   ? "1"
                           : index == OperandIndex::kColumn ? "cols"
                           : index == OperandIndex::kRow    ? "rows"
                                                            : "rows * cols";
    checks += fmt::format("  if (kf_elements(in[{}]) != {}) return KF_ERR_INVALID_ARGUMENT;\n", k,
                          expected);
    pointers += fmt::format("  a.in{0} = static_cast<const {1}*>(in[{0}].data);\n", k,
                            KernelStorageType(InputDType(k)));
    if (index == OperandIndex::kColumn || index == OperandIndex::kElement) {
      aligned += fmt::format(" && kf_aligned<kVector>(a.in{})", k);
    }
  }
  pointers +=
      fmt::format("  a.out = static_cast<{}*>(out[0].data);\n", KernelStorageType(OutputDType()));
  if (!WritesOnePerRow(plan_.kind)) aligned += " && kf_aligned<kVector>(a.out)";
  return Expand(kHost, {{"N_IN", std::to_string(plan_.inputs.size())},
                        {"DTYPES", fmt::format("{}", fmt::join(dtypes, ", "))},
                        {"RANKS", fmt::format("{}", fmt::join(ranks, ", "))},
                        {"OUT_DTYPE", std::string(KernelAbiDType(OutputDType()))},
                        {"OUT_RANK", std::to_string(plan_.output_rank)},
                        {"SHAPE_INPUT", std::to_string(plan_.shape_input)},
                        {"REDUCED_AXES", std::to_string(plan_.reduced_axes)},
                        {"CHECKS", checks},
                        {"OUT_ELEMENTS", WritesOnePerRow(plan_.kind) ? "rows" : "rows * cols"},
                        {"POINTERS", pointers},
                        {"ALIGNED", aligned}});
}

std::string RowRenderer::Emit(const std::string& explanation, int64_t spec_cols) const {
  std::string s = fmt::format(
      "// Generated by kfleet's cuda_rownorm template.\n// {}\n"
      "#include <cuda_bf16.h>\n#include <cuda_fp16.h>\n#include <cuda_runtime.h>\n\n"
      "#include <cfloat>\n#include <cmath>\n#include <cstdint>\n\n#include \"kfleet/kernel.h\"\n\n",
      explanation);
  s += CudaStorageSource();
  const int threads = options_.warp_per_row ? 32 : options_.block;
  s += fmt::format(
      "\nconstexpr int kBlock = {};\n"
      "constexpr int kRowThreads = {};  // threads that share a row\n"
      "constexpr int kRowsPerBlock = kBlock / kRowThreads;\n"
      "constexpr int kVector = {};  // elements per 16-byte access ({})\n"
      "constexpr int kCached = {};  // packs per thread kept in registers (0: none)\n"
      "constexpr int kStreamPacks = 4;  // packs per thread in flight when a row streams\n"
      "constexpr int64_t kMaxBlocks = 1 << 20;  // a grid-stride loop covers the other rows\n\n",
      options_.block, threads, Vector(), options_.vector ? "when aligned" : "off",
      Cached(spec_cols));
  s += "static int64_t kf_elements(const kf_tensor& t) {\n  int64_t n = 1;\n"
       "  for (int32_t d = 0; d < t.ndim; ++d) n *= t.shape[d];\n  return n;\n}\n\n";
  s += kReductions;
  s += Views();
  s += ElementFunctions();
  s += Expand(kRowFunction, {{"CACHED", Core(true)}, {"STREAMED", Core(false)}});
  s += Host();
  return s;
}

class CudaRowNormTemplate final : public TemplateFamily {
 public:
  std::string_view name() const override { return "cuda_rownorm"; }

  Status Supports(const SpecView& spec) const override {
    return AnalyzeRowSpec(spec, RowDTypes::kF32AndHalf).status();
  }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    Result<RowPlan> plan = AnalyzeRowSpec(spec, RowDTypes::kF32AndHalf);
    const int64_t cols = plan.ok() ? SpecCols(spec, *plan) : 0;
    // A warp per row first for rows a warp covers in a few 16-byte loads per lane. Rows no
    // configuration keeps in registers want the most threads, and the one-pass forms, which
    // read them once less.
    const bool short_rows = cols <= 1024;
    const bool streamed = cols > kMaxRowThreads * kMaxCachedFloats;
    std::vector<ParamSpace> space = {
        {"row_threads", short_rows ? std::vector<std::string>{"warp", "block"}
                                   : std::vector<std::string>{"block", "warp"}},
        {"block", streamed ? std::vector<std::string>{"512", "256", "128"}
                           : std::vector<std::string>{"256", "128", "512"}},
        {"cache", {"registers", "none"}}};
    if (plan.ok() && HasPasses(plan->kind)) {
      std::vector<std::string> passes = plan->kind == RowKind::kLayerNorm
                                            ? std::vector<std::string>{"two", "welford"}
                                            : std::vector<std::string>{"three", "online"};
      if (streamed) std::swap(passes[0], passes[1]);
      space.push_back({"passes", passes});
    }
    space.push_back({"loads", {"16B", "scalar"}});
    return space;
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_ASSIGN_OR_RETURN(RowPlan plan, AnalyzeRowSpec(spec, RowDTypes::kF32AndHalf));
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    RowOptions options;
    options.warp_per_row = params.at("row_threads") == "warp";
    options.block = std::stoi(params.at("block"));
    options.cache = params.at("cache") == "registers";
    options.one_pass = HasPasses(plan.kind) &&
                       (params.at("passes") == "welford" || params.at("passes") == "online");
    options.vector = params.at("loads") == "16B";
    const int64_t spec_cols = SpecCols(spec, plan);
    const RowRenderer renderer(plan, *spec.graph, options);
    std::string strategy;
    if (HasPasses(plan.kind)) {
      strategy = plan.kind == RowKind::kLayerNorm
                     ? (options.one_pass ? "one-pass Welford" : "two-pass mean then variance")
                     : (options.one_pass ? "online max and sum" : "three passes (max, sum, write)");
      strategy += ", ";
    }
    const int cached = renderer.Cached(spec_cols);
    RenderedKernel kernel;
    kernel.explanation = fmt::format(
        "{}: {} per row ({} threads a block), {}{}, {}; f32 statistics.", plan.description,
        options.warp_per_row ? "a warp" : "a block", options.block, strategy,
        cached > 0 ? fmt::format("rows up to {} columns kept in registers",
                                 static_cast<int64_t>(cached) * renderer.Vector() *
                                     (options.warp_per_row ? 32 : options.block))
                   : "rows streamed from memory on every pass",
        options.vector ? "16-byte loads where aligned" : "scalar loads");
    kernel.source = renderer.Emit(kernel.explanation, spec_cols);
    return kernel;
  }

 private:
  // The row length of the spec's own shapes: the trailing reduced axes of its shape input.
  static int64_t SpecCols(const SpecView& spec, const RowPlan& plan) {
    const planner::Shape& shape =
        spec.graph->values[spec.graph->inputs[static_cast<size_t>(plan.shape_input)]].shape;
    int64_t cols = 1;
    for (size_t d = shape.size() - static_cast<size_t>(plan.reduced_axes); d < shape.size(); ++d) {
      cols *= shape[d];
    }
    return cols;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeCudaRowNormTemplate() {
  return std::make_unique<CudaRowNormTemplate>();
}

}  // namespace kfleet::agents
