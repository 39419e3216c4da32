#include "agents/conv_template.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "agents/conv_analysis.h"

namespace kfleet::agents {
namespace {

// conv_im2col's register-tiled micro-kernel: kMr filters x kNr output positions per tile, k in
// blocks of kKc, sums in `acc` (float or double).
std::string RenderTile(const std::string& tile, const std::string& acc) {
  const size_t x = tile.find('x');
  return fmt::format(
      R"(
constexpr int64_t kMr = {};
constexpr int64_t kNr = {};
constexpr int64_t kKc = 256;
using Acc = {};

// acc += a[kMr x k] (lda) * b[k x kNr] (ldb). Inlined into Tile, where the accumulators are a
// fixed-size array the compiler keeps in vector registers.
static inline __attribute__((always_inline)) void TileSteps(int64_t k, const float* __restrict a,
                                                            int64_t lda,
                                                            const float* __restrict b,
                                                            int64_t ldb, Acc (&acc)[kMr][kNr]) {{
  for (int64_t p = 0; p < k; ++p) {{
    const float* __restrict bv = b + p * ldb;
#pragma GCC unroll 8
    for (int64_t r = 0; r < kMr; ++r) {{
      const Acc av = a[r * lda + p];
#pragma omp simd
      for (int64_t j = 0; j < kNr; ++j) acc[r][j] += av * static_cast<Acc>(bv[j]);
    }}
  }}
}}

// c[rows x cols] (ldc) (+)= a[rows x k] (lda) * b[k x cols] (ldb), with rows <= kMr,
// cols <= kNr and k <= kKc. The accumulators start from c when `accumulate`, so every element
// sums over the whole k in ascending order however k is blocked. Edge tiles run the same vector
// loop on zero-padded copies.
static void Tile(int64_t k, const float* __restrict a, int64_t lda, const float* __restrict b,
                 int64_t ldb, Acc* __restrict c, int64_t ldc, int64_t rows, int64_t cols,
                 bool accumulate) {{
  Acc acc[kMr][kNr];
  for (int64_t r = 0; r < kMr; ++r) {{
    for (int64_t j = 0; j < kNr; ++j) {{
      acc[r][j] = accumulate && r < rows && j < cols ? c[r * ldc + j] : 0;
    }}
  }}
  if (rows == kMr && cols == kNr) {{
    TileSteps(k, a, lda, b, ldb, acc);
  }} else {{
    float ap[kMr * kKc];
    float bp[kKc * kNr];
    for (int64_t r = 0; r < kMr; ++r) {{
      for (int64_t p = 0; p < k; ++p) ap[r * kKc + p] = r < rows ? a[r * lda + p] : 0.0f;
    }}
    for (int64_t p = 0; p < k; ++p) {{
      for (int64_t j = 0; j < kNr; ++j) bp[p * kNr + j] = j < cols ? b[p * ldb + j] : 0.0f;
    }}
    TileSteps(k, ap, kKc, bp, kNr, acc);
  }}
  for (int64_t r = 0; r < rows; ++r) {{
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = acc[r][j];
  }}
}}
)",
      tile.substr(0, x), tile.substr(x + 1), acc);
}

// The loop GEMM of conv_im2col over a row-major B, float sums written straight into c.
constexpr std::string_view kMultiply = R"(
// c[rows x cols] = a[rows x k] * b[k x cols] in blocks of kKc along k (a kMr x kKc sliver of a
// and a kKc x kNr panel of b stay in L1, the rows x kKc block of a in L2), column panels outside
// row tiles so each panel of b is reused by every row tile.
static void Multiply(int64_t rows, int64_t cols, int64_t k, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float* c, int64_t ldc, double*, int64_t) {
  for (int64_t p0 = 0; p0 < k; p0 += kKc) {
    const int64_t kb = k - p0 < kKc ? k - p0 : kKc;
    for (int64_t j0 = 0; j0 < cols; j0 += kNr) {
      const int64_t w = cols - j0 < kNr ? cols - j0 : kNr;
      for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
        const int64_t h = rows - i0 < kMr ? rows - i0 : kMr;
        Tile(kb, a + i0 * lda + p0, lda, b + p0 * ldb + j0, ldb, c + i0 * ldc + j0, ldc, h, w,
             p0 > 0);
      }
    }
  }
}
)";

// The same with double sums: they live in `partial` (ldp) between k blocks and c gets them rounded
// once at the end.
constexpr std::string_view kMultiplyF64 = R"(
// c[rows x cols] = a[rows x k] * b[k x cols] in blocks of kKc along k, summed in double in
// partial[rows x cols] (ldp), then rounded into c.
static void Multiply(int64_t rows, int64_t cols, int64_t k, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float* c, int64_t ldc, double* partial,
                     int64_t ldp) {
  for (int64_t p0 = 0; p0 < k; p0 += kKc) {
    const int64_t kb = k - p0 < kKc ? k - p0 : kKc;
    for (int64_t j0 = 0; j0 < cols; j0 += kNr) {
      const int64_t w = cols - j0 < kNr ? cols - j0 : kNr;
      for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
        const int64_t h = rows - i0 < kMr ? rows - i0 : kMr;
        Tile(kb, a + i0 * lda + p0, lda, b + p0 * ldb + j0, ldb, partial + i0 * ldp + j0, ldp, h,
             w, p0 > 0);
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] = static_cast<float>(partial[i * ldp + j]);
  }
}
)";

// Output columns whose input column ox * kStrideW + dx lies inside a row of g.w: [*lo, *hi).
constexpr std::string_view kValidColumns = R"(
// Output columns ox with 0 <= ox * kStrideW + dx < g.w, as [*lo, *hi).
static inline void ValidColumns(const ConvArgs& g, int64_t dx, int64_t* lo, int64_t* hi) {
  int64_t l = dx >= 0 ? 0 : (-dx + kStrideW - 1) / kStrideW;
  int64_t h = g.w - dx <= 0 ? 0 : (g.w - dx - 1) / kStrideW + 1;
  h = h < g.ow ? h : g.ow;
  *lo = l < h ? l : h;
  *hi = h;
}
)";

constexpr std::string_view kRunHead = R"(
extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  ConvArgs g;
  const int status = ReadConvArgs(in, n_in, out, n_out, &g);
  if (status != KF_OK) return status;
  const int64_t plane = g.oh * g.ow;
  if (g.n * g.m * plane == 0) return KF_OK;
)";

// ---- conv_im2col ----

std::string RenderIm2colSource(const ConvPlan& plan, const Params& params) {
  const bool blas = params.at("gemm") == "blas";
  const bool double_sums = params.at("gemm") == "loops_f64";
  const bool fused = params.at("epilogue") == "fused" && plan.has_epilogue();
  const bool separate = params.at("epilogue") == "separate" && plan.has_epilogue();
  const bool items = params.at("threads") == "items";
  const std::string& block = params.at("col_block");
  std::string s = blas ? "#include <cblas.h>\n\n" : "";
  s += RenderConvPrelude(plan);
  if (!blas) {
    s += RenderTile("8x32", double_sums ? "double" : "float");
    s += double_sums ? kMultiplyF64 : kMultiply;
  }
  s += kValidColumns;
  s += fmt::format(
      "\n// Output positions per block (0: the whole plane).\nconstexpr int64_t kColBlock = {};\n"
      "// Sums in double, kept between k blocks in a per-thread buffer.\n"
      "constexpr bool kDoubleSums = {};\n",
      block == "plane" ? "0" : block, double_sums ? "true" : "false");
  s += R"(
// 1x1, stride 1, unpadded: the input planes are the GEMM's B as they are.
static bool Pointwise(const ConvArgs& g) {
  return g.kh == 1 && g.kw == 1 && kStrideH == 1 && kStrideW == 1 && g.pad_h == 0 &&
         g.pad_w == 0 && g.oh == g.h && g.ow == g.w;
}

// Rows of the im2col buffer lie an odd number of cache lines apart: a k x kNr panel of them then
// spreads over every L1 set instead of thrashing a few.
static inline int64_t ColStride(int64_t cols) { return ((cols + 15) / 16 | 1) * 16; }

// Rows [r0, r1) of one group's im2col matrix for output positions [p0, p1): row (c, ki, kj) holds
// x[c, oy * kStrideH - pad_h + ki * kDilationH, ox * kStrideW - pad_w + kj * kDilationW], zero
// in the padding. `x` is the group's first input channel.
static void Im2Col(const ConvArgs& g, const float* __restrict x, int64_t p0, int64_t p1,
                   int64_t r0, int64_t r1, float* __restrict col) {
  const int64_t taps = g.kh * g.kw;
  const int64_t pc = p1 - p0;
  const int64_t stride = ColStride(pc);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t ch = r / taps;
    const int64_t ki = r % taps / g.kw;
    const int64_t kj = r % g.kw;
    const float* __restrict xc = x + ch * g.h * g.w;
    float* __restrict dst = col + r * stride;
    const int64_t dx = kj * kDilationW - g.pad_w;
    int64_t lo, hi;
    ValidColumns(g, dx, &lo, &hi);
    for (int64_t oy = p0 / g.ow; oy * g.ow < p1; ++oy) {
      const int64_t base = oy * g.ow - p0;  // dst[base + ox] is output column ox of row oy
      const int64_t a = base < 0 ? -base : 0;
      const int64_t e = base + g.ow > pc ? pc - base : g.ow;
      const int64_t iy = oy * kStrideH - g.pad_h + ki * kDilationH;
      if (iy < 0 || iy >= g.h) {
        for (int64_t ox = a; ox < e; ++ox) dst[base + ox] = 0.0f;
        continue;
      }
      const float* __restrict xrow = xc + iy * g.w;
      // Zeros on [a, a1), the input on [a1, e1), zeros on [e1, e).
      int64_t a1 = lo > a ? lo : a;
      a1 = a1 < e ? a1 : e;
      int64_t e1 = hi < e ? hi : e;
      e1 = e1 > a1 ? e1 : a1;
      for (int64_t ox = a; ox < a1; ++ox) dst[base + ox] = 0.0f;
      for (int64_t ox = a1; ox < e1; ++ox) dst[base + ox] = xrow[ox * kStrideW + dx];
      for (int64_t ox = e1; ox < e; ++ox) dst[base + ox] = 0.0f;
    }
  }
}
)";
  // The product of a group's filters [mg x k] with B [k x cols] into C rows of the output.
  const std::string product =
      blas ? "  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(g.mg),\n"
             "              static_cast<int>(cols), static_cast<int>(k), 1.0f, a, "
             "static_cast<int>(k),"
             "\n              bm, static_cast<int>(ldb), 0.0f, c, static_cast<int>(plane));\n"
           : "";
  s += R"(
// B of block [p0, p1) of image b, group gi: the input planes themselves, or the block's im2col.
static const float* BlockB(const ConvArgs& g, int64_t b, int64_t gi, int64_t p0, int64_t p1,
                           int64_t r0, int64_t r1, float* col, int64_t* ldb) {
  const float* x = g.x + (b * g.c + gi * g.cg) * g.h * g.w;
  if (Pointwise(g)) {
    *ldb = g.h * g.w;
    return x + p0;
  }
  Im2Col(g, x, p0, p1, r0, r1, col);
  *ldb = ColStride(p1 - p0);
  return col;
}
)";
  if (items) {
    s += R"(
// Output positions [p0, p1) of image b, group gi by one thread: B, the product with the group's
// filters, and the epilogue on the block while it is in cache.
static void Block(const ConvArgs& g, int64_t b, int64_t gi, int64_t p0, int64_t p1, float* col,
                  double* partial) {
  const int64_t k = g.cg * g.kh * g.kw;
  const int64_t plane = g.oh * g.ow;
  const int64_t cols = p1 - p0;
  int64_t ldb = 0;
  const float* bm = BlockB(g, b, gi, p0, p1, 0, k, col, &ldb);
  const float* a = g.wt + gi * g.mg * k;
  float* c = g.y + (b * g.m + gi * g.mg) * plane + p0;
)";
    s += blas ? product : "  Multiply(g.mg, cols, k, a, k, bm, ldb, c, plane, partial, cols);\n";
    if (fused)
      s += "  for (int64_t m = 0; m < g.mg; ++m) ApplyEpilogue(g, b, gi * g.mg + m, p0, p1);\n";
    s += "}\n";
  } else {
    s += R"(
// Output positions [p0, p1) of image b, group gi by the whole team: im2col rows split over the
// threads, then the product )";
    s += blas ? "by OpenBLAS's own threads" : "with the column tiles split over the threads";
    s += R"(, then the epilogue rows.
static void Block(const ConvArgs& g, int64_t b, int64_t gi, int64_t p0, int64_t p1, float* col,
                  double* partial) {
  const int64_t k = g.cg * g.kh * g.kw;
  const int64_t plane = g.oh * g.ow;
  const int64_t cols = p1 - p0;
  int64_t ldb = 0;
  const float* bm = nullptr;
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    int64_t ld = 0;
    const float* mine = BlockB(g, b, gi, p0, p1, k * t / threads, k * (t + 1) / threads, col, &ld);
    if (t == 0) {
      bm = mine;
      ldb = ld;
    }
  }
  const float* a = g.wt + gi * g.mg * k;
  float* c = g.y + (b * g.m + gi * g.mg) * plane + p0;
)";
    if (blas) {
      s += product;
    } else {
      s += R"(#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    const int64_t tiles = (cols + kNr - 1) / kNr;
    const int64_t j0 = tiles * t / threads * kNr;
    const int64_t j1 = tiles * (t + 1) / threads * kNr;
    if (j0 < j1) {
      Multiply(g.mg, (j1 < cols ? j1 : cols) - j0, k, a, k, bm + j0, ldb, c + j0, plane,
               partial == nullptr ? nullptr : partial + j0, cols);
    }
  }
)";
    }
    if (fused) {
      s += "#pragma omp parallel for schedule(static)\n"
           "  for (int64_t m = 0; m < g.mg; ++m) ApplyEpilogue(g, b, gi * g.mg + m, p0, p1);\n";
    }
    s += "}\n";
  }

  s += kRunHead;
  s += R"(  const int64_t pc = kColBlock > 0 && kColBlock < plane ? kColBlock : plane;
  const int64_t blocks = (plane + pc - 1) / pc;
  const int64_t items = g.n * kGroups * blocks;
  const int64_t col_floats = Pointwise(g) ? 0 : g.cg * g.kh * g.kw * ColStride(pc);
)";
  s += items ? "  int64_t workers = omp_get_max_threads();\n"
               "  workers = workers < items ? workers : items;\n"
             : "  const int64_t workers = 1;\n";
  s += R"(  float* scratch = nullptr;
  if (col_floats > 0) {
    const int64_t bytes = (workers * col_floats * 4 + 63) / 64 * 64;
    scratch = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
    if (scratch == nullptr) return KF_ERR_OUT_OF_MEMORY;
  }
  const int64_t partial_doubles = kDoubleSums ? g.mg * pc : 0;
  double* partials = nullptr;
  if (partial_doubles > 0) {
    const int64_t bytes = (workers * partial_doubles * 8 + 63) / 64 * 64;
    partials = static_cast<double*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
    if (partials == nullptr) {
      std::free(scratch);
      return KF_ERR_OUT_OF_MEMORY;
    }
  }
)";
  if (items) {
    s += R"(  // Items (image, group, block of positions) in contiguous runs per thread; each output
  // element is computed by one thread, the same way whatever the thread count.
#pragma omp parallel num_threads(workers)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    float* col = scratch == nullptr ? nullptr : scratch + t * col_floats;
    double* partial = partials == nullptr ? nullptr : partials + t * partial_doubles;
    for (int64_t item = items * t / threads; item < items * (t + 1) / threads; ++item) {
      const int64_t p0 = item % blocks * pc;
      const int64_t p1 = p0 + pc < plane ? p0 + pc : plane;
      Block(g, item / blocks / kGroups, item / blocks % kGroups, p0, p1, col, partial);
    }
  }
)";
  } else {
    s += R"(  for (int64_t item = 0; item < items; ++item) {
    const int64_t p0 = item % blocks * pc;
    const int64_t p1 = p0 + pc < plane ? p0 + pc : plane;
    Block(g, item / blocks / kGroups, item / blocks % kGroups, p0, p1, scratch, partials);
  }
)";
  }
  if (separate) {
    s += R"(  // The epilogue as a second pass over the output, one plane per iteration.
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < g.n * g.m; ++q) ApplyEpilogue(g, q / g.m, q % g.m, 0, plane);
)";
  }
  s += "  std::free(partials);\n  std::free(scratch);\n  return KF_OK;\n}\n";
  return s;
}

class ConvIm2colTemplate : public TemplateFamily {
 public:
  std::string_view name() const override { return "conv_im2col"; }

  Status Supports(const SpecView& spec) const override { return AnalyzeConv(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    // Saturating epilogues need double sums to pass the stability stage.
    Result<ConvPlan> plan = AnalyzeConv(spec);
    const bool f64 = plan.ok() && plan->saturates;
    return {{"gemm", f64 ? std::vector<std::string>{"loops_f64", "loops", "blas"}
                         : std::vector<std::string>{"loops", "blas", "loops_f64"}},
            {"threads", {"items", "gemm"}},
            {"col_block", {"256", "1024", "plane"}},
            {"epilogue", {"fused", "separate"}}};
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(ConvPlan plan, AnalyzeConv(spec));
    RenderedKernel kernel;
    kernel.source = RenderIm2colSource(plan, params);
    kernel.explanation = fmt::format(
        "{}: im2col per image and group in blocks of {} output positions, then {} ({}), "
        "epilogue {}.",
        DescribeConv(plan), params.at("col_block"),
        params.at("gemm") == "blas"    ? "an OpenBLAS sgemm"
        : params.at("gemm") == "loops" ? "an 8x32 register-tiled loop GEMM"
                                       : "an 8x32 register-tiled loop GEMM summing in double",
        params.at("threads") == "items" ? "blocks split over the threads, one-thread GEMMs"
                                        : "blocks in turn, the GEMM itself multi-threaded",
        params.at("epilogue") == "fused" ? "fused into each block while it is in cache"
                                         : "as a separate pass over the output");
    return kernel;
  }
};

// ---- conv_direct ----

std::string RenderDepthwiseSource(const ConvPlan& plan, const Params& params) {
  std::string s = RenderConvPrelude(plan);
  s += kValidColumns;
  s += fmt::format(R"(
// Accumulator type: double keeps the few-tap sums exact enough that a clipped output near zero
// survives inputs a thousand times larger (the stability stage); the loads dominate either way.
using Acc = {};
constexpr int64_t kChunk = 256;

// Output row oy of one plane, in chunks of kChunk columns: each tap a vector pass over the chunk
// in a fixed order, accumulated in Acc. `xc` is the input channel, `wm` the filter.
static void DepthwiseRow(const ConvArgs& g, const float* __restrict xc, const float* __restrict wm,
                         int64_t oy, float* __restrict y) {{
  for (int64_t o0 = 0; o0 < g.ow; o0 += kChunk) {{
    const int64_t o1 = o0 + kChunk < g.ow ? o0 + kChunk : g.ow;
    Acc acc[kChunk];
    for (int64_t j = 0; j < o1 - o0; ++j) acc[j] = 0;
    for (int64_t ki = 0; ki < g.kh; ++ki) {{
      const int64_t iy = oy * kStrideH - g.pad_h + ki * kDilationH;
      if (iy < 0 || iy >= g.h) continue;
      const float* __restrict xrow = xc + iy * g.w;
#pragma GCC unroll {}
      for (int64_t kj = 0; kj < g.kw; ++kj) {{
        const Acc wv = wm[ki * g.kw + kj];
        const int64_t dx = kj * kDilationW - g.pad_w;
        int64_t lo, hi;
        ValidColumns(g, dx, &lo, &hi);
        lo = lo > o0 ? lo : o0;
        hi = hi < o1 ? hi : o1;
        for (int64_t ox = lo; ox < hi; ++ox) {{
          acc[ox - o0] += wv * static_cast<Acc>(xrow[ox * kStrideW + dx]);
        }}
      }}
    }}
    for (int64_t j = 0; j < o1 - o0; ++j) y[o0 + j] = static_cast<float>(acc[j]);
  }}
}}

// Rows [r0, r1) of plane q (image q / m, channel q % m), each finished by the epilogue while it
// is in L1.
static void Rows(const ConvArgs& g, int64_t q, int64_t r0, int64_t r1) {{
  const int64_t b = q / g.m;
  const int64_t m = q % g.m;
  const float* xc = g.x + (b * g.c + m / g.mg) * g.h * g.w;
  const float* wm = g.wt + m * g.kh * g.kw;
  float* y = g.y + q * g.oh * g.ow;
  for (int64_t oy = r0; oy < r1; ++oy) {{
    DepthwiseRow(g, xc, wm, oy, y + oy * g.ow);
    ApplyEpilogue(g, b, m, oy * g.ow, (oy + 1) * g.ow);
  }}
}}
)",
                   params.at("acc") == "f64" ? "double" : "float", params.at("unroll"));
  s += kRunHead;
  s += "  if (g.cg != 1) return KF_ERR_UNSUPPORTED_SHAPE;\n";
  const std::string rows = params.at("rows");
  s += fmt::format(
      "  // Work items: {}.\n"
      "  const int64_t per_item = {};\n"
      "  const int64_t row_blocks = (g.oh + per_item - 1) / per_item;\n"
      "  const int64_t items = g.n * g.m * row_blocks;\n",
      rows == "plane" ? "whole planes" : "blocks of " + rows + " output rows",
      rows == "plane" ? "g.oh" : rows);
  const std::string loop =
      "for (int64_t item = items * t / threads; item < items * (t + 1) / threads; ++item) {\n"
      "      const int64_t r0 = item % row_blocks * per_item;\n"
      "      Rows(g, item / row_blocks, r0, r0 + per_item < g.oh ? r0 + per_item : g.oh);\n"
      "    }\n";
  if (params.at("threads") == "all") {
    s += "#pragma omp parallel\n  {\n"
         "    const int64_t threads = omp_get_num_threads();\n"
         "    const int64_t t = omp_get_thread_num();\n    " +
         loop + "  }\n";
  } else {
    s += "  {\n    const int64_t threads = 1;\n    const int64_t t = 0;\n    " + loop + "  }\n";
  }
  s += "  return KF_OK;\n}\n";
  return s;
}

std::string RenderPointwiseSource(const ConvPlan& plan, const Params& params) {
  const std::string& tile = params.at("tile");
  const size_t x = tile.find('x');
  std::string s = RenderConvPrelude(plan);
  s += fmt::format(R"(
// Register tile: kMr filters x kNr output positions, accumulated in Acc.
constexpr int64_t kMr = {};
constexpr int64_t kNr = {};
using Acc = {};
// Output positions per work item.
constexpr int64_t kColBlock = {};
)",
                   tile.substr(0, x), tile.substr(x + 1),
                   params.at("acc") == "f64" ? "double" : "float", params.at("col_block"));
  s += R"(
// Filter panel i (rows i * kMr .. of every group, counted over groups) k-major, zero past mg.
static void PackFilters(const ConvArgs& g, int64_t i, float* __restrict dst) {
  const int64_t panels = (g.mg + kMr - 1) / kMr;
  const int64_t gi = i / panels;
  const int64_t r0 = i % panels * kMr;
  const float* __restrict w = g.wt + gi * g.mg * g.cg;
  for (int64_t p = 0; p < g.cg; ++p) {
    for (int64_t r = 0; r < kMr; ++r) {
      dst[p * kMr + r] = r0 + r < g.mg ? w[(r0 + r) * g.cg + p] : 0.0f;
    }
  }
}

// The input channels at output positions offset[0..cols) as a cg x kNr panel, zero past cols:
// read in place through the stride, with no im2col buffer.
static void PackPositions(const ConvArgs& g, const float* __restrict x,
                          const int64_t* __restrict offset, int64_t j0, int64_t cols,
                          float* __restrict panel) {
  const int64_t hw = g.h * g.w;
  for (int64_t p = 0; p < g.cg; ++p) {
    const float* __restrict xc = x + p * hw;
    float* __restrict dst = panel + p * kNr;
    if (kStrideH == 1 && kStrideW == 1 && cols == kNr) {
      for (int64_t j = 0; j < kNr; ++j) dst[j] = xc[j0 + j];
    } else {
      for (int64_t j = 0; j < kNr; ++j) dst[j] = j < cols ? xc[offset[j]] : 0.0f;
    }
  }
}

// c[rows x cols] (ldc) = a panel (k x kMr) x b panel (k x kNr). The accumulators are a
// fixed-size array the compiler keeps in vector registers; each sums over k in ascending order.
static void Tile(int64_t k, const float* __restrict a, const float* __restrict b,
                 float* __restrict c, int64_t ldc, int64_t rows, int64_t cols) {
  Acc acc[kMr][kNr];
  for (int64_t r = 0; r < kMr; ++r) {
    for (int64_t j = 0; j < kNr; ++j) acc[r][j] = 0;
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* __restrict av = a + p * kMr;
    const float* __restrict bv = b + p * kNr;
#pragma GCC unroll 8
    for (int64_t r = 0; r < kMr; ++r) {
      const Acc ar = av[r];
#pragma omp simd
      for (int64_t j = 0; j < kNr; ++j) acc[r][j] += ar * static_cast<Acc>(bv[j]);
    }
  }
  if (rows == kMr && cols == kNr) {
    for (int64_t r = 0; r < kMr; ++r) {
      for (int64_t j = 0; j < kNr; ++j) c[r * ldc + j] = static_cast<float>(acc[r][j]);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = static_cast<float>(acc[r][j]);
  }
}

// Image b, group gi, output positions [p0, p1): per kNr-wide panel of positions, every filter
// panel over it, then the epilogue on the block while it is in cache.
static void Block(const ConvArgs& g, const float* filters, int64_t b, int64_t gi, int64_t p0,
                  int64_t p1, float* panel) {
  const int64_t plane = g.oh * g.ow;
  const int64_t panels = (g.mg + kMr - 1) / kMr;
  const float* x = g.x + (b * g.c + gi * g.cg) * g.h * g.w;
  float* c = g.y + (b * g.m + gi * g.mg) * plane;
  int64_t offset[kNr];
  for (int64_t j0 = p0; j0 < p1; j0 += kNr) {
    const int64_t cols = p1 - j0 < kNr ? p1 - j0 : kNr;
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t p = j0 + j;
      offset[j] = p / g.ow * kStrideH * g.w + p % g.ow * kStrideW;
    }
    PackPositions(g, x, offset, j0, cols, panel);
    for (int64_t i = 0; i < panels; ++i) {
      const int64_t rows = g.mg - i * kMr < kMr ? g.mg - i * kMr : kMr;
      Tile(g.cg, filters + (gi * panels + i) * g.cg * kMr, panel, c + i * kMr * plane + j0, plane,
           rows, cols);
    }
  }
  for (int64_t m = 0; m < g.mg; ++m) ApplyEpilogue(g, b, gi * g.mg + m, p0, p1);
}
)";
  s += kRunHead;
  s += R"(  if (g.kh != 1 || g.kw != 1 || g.pad_h != 0 || g.pad_w != 0) {
    return KF_ERR_UNSUPPORTED_SHAPE;
  }
  const int64_t pc = kColBlock < plane ? kColBlock : plane;
  const int64_t blocks = (plane + pc - 1) / pc;
  const int64_t items = g.n * kGroups * blocks;
  const int64_t filter_panels = kGroups * ((g.mg + kMr - 1) / kMr);
  const int64_t filter_floats = filter_panels * g.cg * kMr;
)";
  s += params.at("threads") == "all" ? "  int64_t workers = omp_get_max_threads();\n"
                                       "  workers = workers < items ? workers : items;\n"
                                     : "  const int64_t workers = 1;\n";
  s += R"(  const int64_t bytes = ((filter_floats + workers * g.cg * kNr) * 4 + 63) / 64 * 64;
  float* scratch = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes)));
  if (scratch == nullptr) return KF_ERR_OUT_OF_MEMORY;
#pragma omp parallel num_threads(workers)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    for (int64_t i = filter_panels * t / threads; i < filter_panels * (t + 1) / threads; ++i) {
      PackFilters(g, i, scratch + i * g.cg * kMr);
    }
#pragma omp barrier
    float* panel = scratch + filter_floats + t * g.cg * kNr;
    for (int64_t item = items * t / threads; item < items * (t + 1) / threads; ++item) {
      const int64_t p0 = item % blocks * pc;
      const int64_t p1 = p0 + pc < plane ? p0 + pc : plane;
      Block(g, scratch, item / blocks / kGroups, item / blocks % kGroups, p0, p1, panel);
    }
  }
  std::free(scratch);
  return KF_OK;
}
)";
  return s;
}

// What conv_direct does with the spec: "depthwise", "pointwise", or why neither.
Result<std::string> DirectMode(const ConvPlan& plan) {
  if (plan.depthwise() && plan.x_shape[1] == plan.group) return std::string("depthwise");
  if (plan.pointwise()) {
    const bool unpadded = plan.auto_pad != "NOTSET" || (plan.pads[0] == 0 && plan.pads[1] == 0 &&
                                                        plan.pads[2] == 0 && plan.pads[3] == 0);
    if (!unpadded) {
      return InvalidArgument(fmt::format(
          "conv_direct's 1x1 path reads the input in place and needs zero pads; this 1x1 "
          "convolution has pads [{}] (use conv_im2col)",
          fmt::join(plan.pads, ",")));
    }
    return std::string("pointwise");
  }
  return InvalidArgument(fmt::format(
      "conv_direct handles depthwise (group == input channels) and 1x1 convolutions; this is a "
      "{}x{} convolution with {} input channels and group {} (use conv_im2col)",
      plan.w_shape[2], plan.w_shape[3], plan.x_shape[1], plan.group));
}

class ConvDirectTemplate : public TemplateFamily {
 public:
  std::string_view name() const override { return "conv_direct"; }

  Status Supports(const SpecView& spec) const override {
    KF_ASSIGN_OR_RETURN(ConvPlan plan, AnalyzeConv(spec));
    return DirectMode(plan).status();
  }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    Result<ConvPlan> plan = AnalyzeConv(spec);
    const bool depthwise = plan.ok() && DirectMode(*plan).ok() && *DirectMode(*plan) == "depthwise";
    if (depthwise) {
      return {{"threads", {"all", "1"}},
              {"rows", {"plane", "4"}},
              {"unroll", {"4", "1"}},
              {"acc", {"f64", "f32"}}};
    }
    // Saturating epilogues need f64 sums to pass the stability stage; f64 wants a narrower tile.
    const bool f64 = plan.ok() && plan->saturates;
    return {{"threads", {"all", "1"}},
            {"acc",
             f64 ? std::vector<std::string>{"f64", "f32"} : std::vector<std::string>{"f32", "f64"}},
            {"tile", f64 ? std::vector<std::string>{"8x16", "8x32", "6x32"}
                         : std::vector<std::string>{"8x32", "6x32", "8x16"}},
            {"col_block", {"512", "128"}}};
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(ConvPlan plan, AnalyzeConv(spec));
    KF_ASSIGN_OR_RETURN(std::string mode, DirectMode(plan));
    RenderedKernel kernel;
    if (mode == "depthwise") {
      kernel.source = RenderDepthwiseSource(plan, params);
      kernel.explanation = fmt::format(
          "{}: direct loops, one vector pass per tap over each output row accumulated in {} "
          "(kernel-width loop unrolled by {}), epilogue on the row while it is in L1; items are {} "
          "over {} thread(s).",
          DescribeConv(plan), params.at("acc"), params.at("unroll"),
          params.at("rows") == "plane" ? "whole planes" : "blocks of 4 rows", params.at("threads"));
    } else {
      kernel.source = RenderPointwiseSource(plan, params);
      kernel.explanation = fmt::format(
          "{}: packed filters times kNr-wide panels of the input gathered in place (no im2col), "
          "{} register tile accumulated in {}, blocks of {} output positions over {} thread(s), "
          "epilogue per block while it is in cache.",
          DescribeConv(plan), params.at("tile"), params.at("acc"), params.at("col_block"),
          params.at("threads"));
    }
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeConvIm2colTemplate() {
  return std::make_unique<ConvIm2colTemplate>();
}

std::unique_ptr<TemplateFamily> MakeConvDirectTemplate() {
  return std::make_unique<ConvDirectTemplate>();
}

}  // namespace kfleet::agents
