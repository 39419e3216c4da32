#include "agents/gemm_template.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "agents/gemm_analysis.h"

namespace kfleet::agents {
namespace {

bool HasEpilogue(const GemmPlan& plan) {
  return !(plan.statements.empty() && plan.result == "acc");
}

// Every line of `lines` prefixed with `indent`.
std::string Indented(const std::string& lines, const std::string& indent) {
  std::string out;
  size_t start = 0;
  while (start < lines.size()) {
    size_t end = lines.find('\n', start);
    if (end == std::string::npos) end = lines.size() - 1;
    out += indent + lines.substr(start, end - start + 1);
    start = end + 1;
  }
  return out;
}

// ---- gemm_blas ----

std::string RenderBlasSource(const GemmPlan& plan, const Params& params) {
  const bool epilogue = HasEpilogue(plan);
  const std::string& split = params.at("split");
  std::string s = "#include <cblas.h>\n\n" + RenderGemmPrelude(plan);
  s += fmt::format(
      R"(
// C rows [i0, i1) x columns [j0, j1) of batch b by one single-threaded sgemm call.
static void Multiply(const GemmArgs& g, int64_t b, int64_t i0, int64_t i1, int64_t j0,
                     int64_t j1) {{
  const float* a = g.a + b * g.a_stride + {};
  const float* bm = g.b + b * g.b_stride + {};
  cblas_sgemm(CblasRowMajor, {}, {}, static_cast<int>(i1 - i0),
              static_cast<int>(j1 - j0), static_cast<int>(g.k), 1.0f, a, static_cast<int>(g.lda),
              bm, static_cast<int>(g.ldb), 0.0f, g.c + (b * g.m + i0) * g.n + j0,
              static_cast<int>(g.n));
}}
)",
      plan.a.transposed ? "i0" : "i0 * g.lda", plan.b.transposed ? "j0 * g.ldb" : "j0",
      plan.a.transposed ? "CblasTrans" : "CblasNoTrans",
      plan.b.transposed ? "CblasTrans" : "CblasNoTrans");

  s += "\nstatic void Block(const GemmArgs& g, int64_t b, int64_t i0, int64_t i1, int64_t j0, "
       "int64_t j1) {\n";
  if (params.at("epilogue") == "per_row_panel") {
    s += "  // Panels of 64 rows, each finished while it is still in L1 / L2.\n"
         "  for (int64_t p = i0; p < i1; p += 64) {\n"
         "    const int64_t pe = p + 64 < i1 ? p + 64 : i1;\n"
         "    Multiply(g, b, p, pe, j0, j1);\n";
    if (epilogue) s += "    ApplyEpilogue(g, b, p, pe, j0, j1);\n";
    s += "  }\n}\n";
  } else {
    s += "  Multiply(g, b, i0, i1, j0, j1);\n";
    if (epilogue) s += "  ApplyEpilogue(g, b, i0, i1, j0, j1);\n";
    s += "}\n";
  }

  // Blocks are aligned to 16 columns (a worker's stores stay on its own cache lines) or 8 rows.
  const std::string by_columns =
      "const int64_t blocks = (g.n + 15) / 16;\n"
      "const int64_t j0 = blocks * t / workers * 16;\n"
      "const int64_t j1 = blocks * (t + 1) / workers * 16;\n"
      "if (j0 < j1) Block(g, b, 0, g.m, j0, j1 < g.n ? j1 : g.n);\n";
  const std::string by_rows =
      "const int64_t blocks = (g.m + 7) / 8;\n"
      "const int64_t i0 = blocks * t / workers * 8;\n"
      "const int64_t i1 = blocks * (t + 1) / workers * 8;\n"
      "if (i0 < i1) Block(g, b, i0, i1 < g.m ? i1 : g.m, 0, g.n);\n";
  s += "\n// Worker t of `workers` computes its share of batch b's C.\n"
       "static void RunWorker(const GemmArgs& g, int64_t b, int64_t t, int64_t workers) {\n";
  if (split == "columns") {
    s += Indented(by_columns, "  ");
  } else if (split == "rows") {
    s += Indented(by_rows, "  ");
  } else {
    s += "  // Split the dimension that gives more aligned blocks.\n"
         "  if ((g.m + 7) / 8 >= (g.n + 15) / 16) {\n" +
         Indented(by_rows, "    ") + "  } else {\n" + Indented(by_columns, "    ") + "  }\n";
  }
  s += "}\n";

  s += R"(
extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  GemmArgs g;
  const int status = ReadGemmArgs(in, n_in, out, n_out, &g);
  if (status != KF_OK) return status;
  if (g.batch * g.m * g.n == 0) return KF_OK;
)";
  if (params.at("threads") == "all") {
    s += R"(#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    if (g.batch >= threads) {
      // Enough problems for everyone: contiguous whole batches per thread.
      for (int64_t b = g.batch * t / threads; b < g.batch * (t + 1) / threads; ++b) {
        RunWorker(g, b, 0, 1);
      }
    } else {
      for (int64_t b = 0; b < g.batch; ++b) RunWorker(g, b, t, threads);
    }
  }
  return KF_OK;
}
)";
  } else {
    s += R"(  // One thread walks C in blocks of about 128 KiB, each finished while it is in cache.
  const int64_t workers = (g.m * g.n + 32767) / 32768;
  for (int64_t b = 0; b < g.batch; ++b) {
    for (int64_t t = 0; t < workers; ++t) RunWorker(g, b, t, workers);
  }
  return KF_OK;
}
)";
  }
  return s;
}

class GemmBlasTemplate : public TemplateFamily {
 public:
  std::string_view name() const override { return "gemm_blas"; }

  Status Supports(const SpecView& spec) const override { return AnalyzeGemm(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView&) const override {
    return {{"split", {"columns", "rows", "auto"}},
            {"threads", {"all", "1"}},
            {"epilogue", {"per_block", "per_row_panel"}}};
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(GemmPlan plan, AnalyzeGemm(spec));
    RenderedKernel kernel;
    kernel.source = RenderBlasSource(plan, params);
    kernel.explanation = fmt::format(
        "{}: {} thread(s) each run a one-thread OpenBLAS sgemm on a block of C split by {} and "
        "apply the epilogue {} while it is in cache.",
        DescribeGemm(plan), params.at("threads"), params.at("split"),
        params.at("epilogue") == "per_block" ? "per block" : "per 64-row panel");
    return kernel;
  }
};

// ---- gemm_tiled ----

std::string RenderTiledSource(const GemmPlan& plan, const Params& params) {
  std::string s = RenderGemmPrelude(plan);
  s += fmt::format(
      R"(
// Register tile kMr x kNr, cache tiles kMc x kKc of A and kKc x nc of B.
constexpr int64_t kMr = {};
constexpr int64_t kNr = {};
constexpr int64_t kKc = {};
constexpr int64_t kMc = {};
// Column blocks are at most this wide, so a packed kKc x nc block of B stays within ~1 MiB.
constexpr int64_t kNcMax = (262144 / kKc) / kNr * kNr;
)",
      params.at("mr"), params.at("nr"), params.at("kc"), params.at("mc"));

  s += fmt::format(
      R"(
// rows x kb of op(A) from (i0, p0) as kMr-row panels, k-major inside a panel; rows past the end
// are zeros so the micro-kernel never branches.
static void PackA(const GemmArgs& g, const float* __restrict a, int64_t i0, int64_t rows,
                  int64_t p0, int64_t kb, float* __restrict dst) {{
  for (int64_t ir = 0; ir < rows; ir += kMr) {{
    const int64_t h = rows - ir < kMr ? rows - ir : kMr;
    for (int64_t p = 0; p < kb; ++p) {{
      for (int64_t r = 0; r < kMr; ++r) {{
        dst[p * kMr + r] = r < h ? a[{}] : 0.0f;
      }}
    }}
    dst += kMr * kb;
  }}
}}

// kb x cols of op(B) from (p0, j0) as kNr-column panels, k-major inside a panel; zero padded.
static void PackB(const GemmArgs& g, const float* __restrict bm, int64_t p0, int64_t kb,
                  int64_t j0, int64_t cols, float* __restrict dst) {{
  for (int64_t jr = 0; jr < cols; jr += kNr) {{
    const int64_t w = cols - jr < kNr ? cols - jr : kNr;
    for (int64_t p = 0; p < kb; ++p) {{
      for (int64_t c = 0; c < kNr; ++c) {{
        dst[p * kNr + c] = c < w ? bm[{}] : 0.0f;
      }}
    }}
    dst += kNr * kb;
  }}
}}
)",
      plan.a.transposed ? "(p0 + p) * g.lda + i0 + ir + r" : "(i0 + ir + r) * g.lda + p0 + p",
      plan.b.transposed ? "(j0 + jr + c) * g.ldb + p0 + p" : "(p0 + p) * g.ldb + j0 + jr + c");

  s += R"(
// One kMr x kNr tile of C over kb steps of k; the accumulators are a fixed-size array the
// compiler keeps in vector registers. Writes (or adds to, after the first k block) the valid
// rows x cols corner.
static void MicroKernel(int64_t kb, const float* __restrict ap, const float* __restrict bp,
                        float* __restrict c, int64_t ldc, int64_t rows, int64_t cols,
                        bool accumulate) {
  float acc[kMr][kNr];
  for (int64_t r = 0; r < kMr; ++r) {
    for (int64_t j = 0; j < kNr; ++j) acc[r][j] = 0.0f;
  }
  for (int64_t p = 0; p < kb; ++p) {
    const float* __restrict bv = bp + p * kNr;
#pragma GCC unroll 8
    for (int64_t r = 0; r < kMr; ++r) {
      const float av = ap[p * kMr + r];
      // Without the simd pragma GCC vectorizes over k instead, 2-40x slower depending on the tile.
#pragma omp simd
      for (int64_t j = 0; j < kNr; ++j) acc[r][j] += av * bv[j];
    }
  }
  if (rows == kMr && cols == kNr) {
    for (int64_t r = 0; r < kMr; ++r) {
      float* __restrict row = c + r * ldc;
      if (accumulate) {
        for (int64_t j = 0; j < kNr; ++j) row[j] += acc[r][j];
      } else {
        for (int64_t j = 0; j < kNr; ++j) row[j] = acc[r][j];
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r][j] : acc[r][j];
    }
  }
}

// Columns [j0, j0 + nc) of batch b: k blocks outermost so the packed B block is reused by every
// row block; the epilogue runs on each tile as its last k block is written.
static void ColumnBlock(const GemmArgs& g, int64_t b, int64_t j0, int64_t nc, float* abuf,
                        float* bbuf) {
  const int64_t cols = g.n - j0 < nc ? g.n - j0 : nc;
  const float* a = g.a + b * g.a_stride;
  const float* bm = g.b + b * g.b_stride;
  float* c = g.c + b * g.m * g.n;
  // K = 0 still takes one empty step so every tile is written.
  for (int64_t p0 = 0; p0 == 0 || p0 < g.k; p0 += kKc) {
    const int64_t kb = g.k - p0 < kKc ? g.k - p0 : kKc;
    PackB(g, bm, p0, kb, j0, cols, bbuf);
    for (int64_t i0 = 0; i0 < g.m; i0 += kMc) {
      const int64_t rows = g.m - i0 < kMc ? g.m - i0 : kMc;
      PackA(g, a, i0, rows, p0, kb, abuf);
      for (int64_t jr = 0; jr < cols; jr += kNr) {
        const int64_t w = cols - jr < kNr ? cols - jr : kNr;
        for (int64_t ir = 0; ir < rows; ir += kMr) {
          const int64_t h = rows - ir < kMr ? rows - ir : kMr;
          MicroKernel(kb, abuf + ir * kb, bbuf + jr * kb, c + (i0 + ir) * g.n + j0 + jr, g.n, h, w,
                      p0 > 0);
)";
  if (HasEpilogue(plan)) {
    s += "          if (p0 + kKc >= g.k) ApplyEpilogue(g, b, i0 + ir, i0 + ir + h, j0 + jr, "
         "j0 + jr + w);\n";
  }
  s += R"(        }
      }
    }
  }
}

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  GemmArgs g;
  const int status = ReadGemmArgs(in, n_in, out, n_out, &g);
  if (status != KF_OK) return status;
  if (g.batch * g.m * g.n == 0) return KF_OK;
)";
  const bool parallel = params.at("threads") == "all";
  s += parallel ? "  const int64_t workers = omp_get_max_threads();\n"
                : "  const int64_t workers = 1;\n";
  s +=
      R"(  // Column blocks: enough (batch, block) items for every worker, kNr-aligned, at most kNcMax.
  const int64_t per_batch = (workers + g.batch - 1) / g.batch;
  int64_t nc = ((g.n + per_batch - 1) / per_batch + kNr - 1) / kNr * kNr;
  nc = nc < kNcMax ? nc : kNcMax;
  const int64_t col_blocks = (g.n + nc - 1) / nc;
  const int64_t items = g.batch * col_blocks;
  const int64_t a_size = (kMc + kMr - 1) / kMr * kMr * kKc;
  const int64_t per_worker = a_size + nc * kKc;
  float* scratch = static_cast<float*>(std::aligned_alloc(64, workers * per_worker * 4));
  if (scratch == nullptr) return KF_ERR_OUT_OF_MEMORY;
)";
  if (parallel) {
    s += R"(#pragma omp parallel num_threads(workers)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    float* abuf = scratch + t * per_worker;
    for (int64_t item = items * t / threads; item < items * (t + 1) / threads; ++item) {
      ColumnBlock(g, item / col_blocks, item % col_blocks * nc, nc, abuf, abuf + a_size);
    }
  }
)";
  } else {
    s += R"(  for (int64_t item = 0; item < items; ++item) {
    ColumnBlock(g, item / col_blocks, item % col_blocks * nc, nc, scratch, scratch + a_size);
  }
)";
  }
  s += "  std::free(scratch);\n  return KF_OK;\n}\n";
  return s;
}

class GemmTiledTemplate : public TemplateFamily {
 public:
  std::string_view name() const override { return "gemm_tiled"; }

  Status Supports(const SpecView& spec) const override { return AnalyzeGemm(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView&) const override {
    return {{"mr", {"6", "4", "8"}},
            {"nr", {"16", "32"}},
            {"kc", {"256", "128", "512"}},
            {"mc", {"96", "48", "192"}},
            {"threads", {"all", "1"}}};
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(GemmPlan plan, AnalyzeGemm(spec));
    RenderedKernel kernel;
    kernel.source = RenderTiledSource(plan, params);
    kernel.explanation = fmt::format(
        "{}: packed {}x{} register-blocked micro-kernel, kc={} mc={} cache tiles, column blocks "
        "split statically over {} thread(s), epilogue on each tile as it is written; no BLAS, so "
        "it stays below OpenBLAS.",
        DescribeGemm(plan), params.at("mr"), params.at("nr"), params.at("kc"), params.at("mc"),
        params.at("threads"));
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeGemmBlasTemplate() {
  return std::make_unique<GemmBlasTemplate>();
}

std::unique_ptr<TemplateFamily> MakeGemmTiledTemplate() {
  return std::make_unique<GemmTiledTemplate>();
}

}  // namespace kfleet::agents
