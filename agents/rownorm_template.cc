#include "agents/rownorm_template.h"

#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

#include "agents/kernel_math.h"
#include "agents/rownorm_analysis.h"

namespace kfleet::agents {
namespace {

// Replaces every "$NAME" of `text` with its value; keeps the C++ templates below readable without
// fmt's brace escaping.
std::string Subst(std::string text, const std::vector<std::pair<std::string, std::string>>& vars) {
  for (const auto& [name, value] : vars) {
    for (size_t at = text.find(name); at != std::string::npos;
         at = text.find(name, at + value.size())) {
      text.replace(at, name.size(), value);
    }
  }
  return text;
}

bool HasPasses(RowKind kind) {
  return kind == RowKind::kLayerNorm || kind == RowKind::kSoftmax || kind == RowKind::kLogSoftmax;
}

bool HasAccumulate(RowKind kind) {
  return kind != RowKind::kReduceMax && kind != RowKind::kReduceMin;
}

// Mean and variance by two passes over the row: exact for rows with a large mean.
constexpr const char* kMeanVarTwoPass = R"(  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < cols; ++c) sum += static_cast<acc_t>($X);
  const acc_t mean = sum / static_cast<acc_t>(cols);
  acc_t sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < cols; ++c) {
    const acc_t d = static_cast<acc_t>($X) - mean;
    sq += d * d;
  }
  const acc_t var = sq / static_cast<acc_t>(cols);
)";

// Welford in 16 lanes that see the same count (so merging them is Chan's formula with equal
// weights), then the tail one element at a time.
constexpr const char* kMeanVarWelford = R"(  acc_t lane_mean[16] = {};
  acc_t lane_m2[16] = {};
  const int64_t chunks = cols / 16;
  for (int64_t k = 0; k < chunks; ++k) {
    const acc_t inv_n = acc_t(1) / static_cast<acc_t>(k + 1);
#pragma omp simd
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t c = k * 16 + l;
      const acc_t x = static_cast<acc_t>($X);
      const acc_t d = x - lane_mean[l];
      lane_mean[l] += d * inv_n;
      lane_m2[l] += d * (x - lane_mean[l]);
    }
  }
  acc_t mean = 0;
  for (int l = 0; l < 16; ++l) mean += lane_mean[l];
  mean /= acc_t(16);
  acc_t m2 = 0;
  for (int l = 0; l < 16; ++l) {
    const acc_t d = lane_mean[l] - mean;
    m2 += lane_m2[l] + static_cast<acc_t>(chunks) * d * d;
  }
  for (int64_t c = chunks * 16; c < cols; ++c) {
    const acc_t x = static_cast<acc_t>($X);
    const acc_t d = x - mean;
    mean += d / static_cast<acc_t>(c + 1);
    m2 += d * (x - mean);
  }
  const acc_t var = m2 / static_cast<acc_t>(cols);
)";

constexpr const char* kLayerNormWrite = R"(  const acc_t clamped = var > acc_t(0) ? var : acc_t(0);
  const float inv_std = static_cast<float>(acc_t(1) / std::sqrt(clamped + static_cast<acc_t>($EPS)));
  const float mean_f = static_cast<float>(mean);
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const float v = ($X - mean_f) * inv_std;
    y[c] = $EPI;
  }
)";

constexpr const char* kRmsNorm = R"(  acc_t sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < cols; ++c) {
    const acc_t x = static_cast<acc_t>($X);
    sq += x * x;
  }
  const float inv_rms =
      static_cast<float>(acc_t(1) / std::sqrt(sq / static_cast<acc_t>(cols) + static_cast<acc_t>($EPS)));
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const float v = $X * inv_rms;
    y[c] = $EPI;
  }
)";

// Two passes: the row max, then the exponentials (kept in y for softmax) and their sum.
constexpr const char* kSoftmaxStatsTwoPass = R"(  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < cols; ++c) {
    const float x = $X;
    m = x > m ? x : m;
  }
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < cols; ++c) {
    const float e = kf_exp($X - m);
    $STORE_E
    s += static_cast<acc_t>(e);
  }
)";

// One pass: 16 lanes keep a running max and a sum rescaled whenever their max grows.
constexpr const char* kSoftmaxStatsOnline = R"(  float lane_m[16];
  acc_t lane_s[16];
  for (int l = 0; l < 16; ++l) {
    lane_m[l] = -FLT_MAX;
    lane_s[l] = 0;
  }
  const int64_t body = cols - cols % 16;
  for (int64_t k = 0; k < body; k += 16) {
#pragma omp simd
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t c = k + l;
      const float x = $X;
      const float mx = x > lane_m[l] ? x : lane_m[l];
      lane_s[l] = lane_s[l] * static_cast<acc_t>(kf_exp(lane_m[l] - mx)) +
                  static_cast<acc_t>(kf_exp(x - mx));
      lane_m[l] = mx;
    }
  }
  for (int64_t c = body; c < cols; ++c) {
    const int64_t l = c - body;
    const float x = $X;
    const float mx = x > lane_m[l] ? x : lane_m[l];
    lane_s[l] = lane_s[l] * static_cast<acc_t>(kf_exp(lane_m[l] - mx)) +
                static_cast<acc_t>(kf_exp(x - mx));
    lane_m[l] = mx;
  }
  float m = lane_m[0];
  for (int l = 1; l < 16; ++l) m = lane_m[l] > m ? lane_m[l] : m;
  acc_t s = 0;
  for (int l = 0; l < 16; ++l) s += lane_s[l] * static_cast<acc_t>(kf_exp(lane_m[l] - m));
)";

constexpr const char* kSoftmaxWrite = R"(  const float inv = static_cast<float>(acc_t(1) / s);
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const float v = $EXPVAL * inv;
    y[c] = $EPI;
  }
)";

constexpr const char* kLogSoftmaxWrite = R"(  const float log_s = static_cast<float>(std::log(s));
#pragma omp simd
  for (int64_t c = 0; c < cols; ++c) {
    const float v = ($X - m) - log_s;
    y[c] = $EPI;
  }
)";

constexpr const char* kReduceSum = R"(  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < cols; ++c) s += static_cast<acc_t>($X);
  const float v = static_cast<float>($RESULT);
  out[r] = $EPI;
)";

constexpr const char* kReduceExtreme = R"(  float m = $INIT;
#pragma omp simd reduction($OP : m)
  for (int64_t c = 0; c < cols; ++c) {
    const float x = $X;
    m = x $CMP m ? x : m;
  }
  const float v = m;
  out[r] = $EPI;
)";

// The body of RunRow for one row r.
std::string RowBody(const RowPlan& plan, bool one_pass) {
  const std::string eps = fmt::format("{:.17g}", plan.epsilon);
  std::string body;
  switch (plan.kind) {
    case RowKind::kLayerNorm:
      body = std::string(one_pass ? kMeanVarWelford : kMeanVarTwoPass) + kLayerNormWrite;
      break;
    case RowKind::kRmsNorm:
      body = kRmsNorm;
      break;
    case RowKind::kSoftmax:
      if (one_pass) {
        body = std::string(kSoftmaxStatsOnline) +
               Subst(kSoftmaxWrite, {{"$EXPVAL", "kf_exp($X - m)"}});
      } else {
        body = Subst(std::string(kSoftmaxStatsTwoPass) + kSoftmaxWrite,
                     {{"$STORE_E", "y[c] = e;"}, {"$EXPVAL", "y[c]"}});
      }
      break;
    case RowKind::kLogSoftmax:
      body = std::string(one_pass ? kSoftmaxStatsOnline
                                  : Subst(kSoftmaxStatsTwoPass, {{"    $STORE_E\n", ""}})) +
             kLogSoftmaxWrite;
      break;
    case RowKind::kReduceSum:
      body = Subst(kReduceSum, {{"$RESULT", "s"}});
      break;
    case RowKind::kReduceMean:
      body = Subst(kReduceSum, {{"$RESULT", "s / static_cast<acc_t>(cols)"}});
      break;
    case RowKind::kReduceMax:
      body = Subst(kReduceExtreme, {{"$INIT", "-INFINITY"}, {"$OP", "max"}, {"$CMP", ">"}});
      break;
    case RowKind::kReduceMin:
      body = Subst(kReduceExtreme, {{"$INIT", "INFINITY"}, {"$OP", "min"}, {"$CMP", "<"}});
      break;
  }
  return Subst(body, {{"$X", plan.x_expr}, {"$EPI", plan.epilogue_expr}, {"$EPS", eps}});
}

std::string RenderSource(const RowPlan& plan, const Params& params,
                         const std::string& explanation) {
  const bool one_pass = params.count("passes") != 0 && params.at("passes") == "one";
  const bool f64 = params.count("accumulate") != 0 && params.at("accumulate") == "f64";
  const bool all_threads = params.at("threads") == "all";
  const std::string rows_per_task = params.at("rows_per_task");
  const bool per_row = WritesOnePerRow(plan.kind);
  const int n_in = static_cast<int>(plan.inputs.size());

  std::string row_params;
  std::string row_args;
  std::string row_setup;
  std::string input_checks;
  std::string pointers;
  for (int k = 0; k < n_in; ++k) {
    row_params += fmt::format("const float* __restrict in{}, ", k);
    row_args += fmt::format("in{}, ", k);
    pointers += fmt::format("  const float* in{0} = static_cast<const float*>(in[{0}].data);\n", k);
    std::string expected;
    switch (plan.inputs[k]) {
      case OperandIndex::kScalar:
        row_setup += fmt::format("  const float s{0} = in{0}[0];\n", k);
        expected = "1";
        break;
      case OperandIndex::kColumn:
        expected = "cols";
        break;
      case OperandIndex::kRow:
        row_setup += fmt::format("  const float s{0} = in{0}[r];\n", k);
        expected = "rows";
        break;
      case OperandIndex::kElement:
        row_setup += fmt::format("  const float* __restrict e{0} = in{0} + r * cols;\n", k);
        expected = "rows * cols";
        break;
    }
    input_checks +=
        fmt::format("  if (Numel(in[{}]) != {}) return KF_ERR_INVALID_ARGUMENT;\n", k, expected);
  }
  if (!per_row) row_setup += "  float* __restrict y = out + r * cols;\n";

  std::string ranks;
  for (int k = 0; k < n_in; ++k)
    ranks += fmt::format("{}{}", k > 0 ? ", " : "", plan.input_ranks[k]);

  const bool uses_exp = plan.kind == RowKind::kSoftmax || plan.kind == RowKind::kLogSoftmax;
  std::string source =
      Subst(R"(// Generated by kfleet's rownorm template.
// $EXPLANATION
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "kfleet/kernel.h"

namespace {

typedef $ACC acc_t;

$EXP// One thread computes a whole row, so the result does not depend on the thread count.
void RunRow($ROW_PARAMSfloat* __restrict out, int64_t r, int64_t cols) {
$ROW_SETUP$BODY}

int64_t Numel(const kf_tensor& t) {
  int64_t n = 1;
  for (int32_t d = 0; d < t.ndim; ++d) n *= t.shape[d];
  return n;
}

}  // namespace

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  static const int32_t kInputRanks[$N_IN] = {$RANKS};
  if (n_in != $N_IN || n_out != 1) return KF_ERR_INVALID_ARGUMENT;
  for (int32_t i = 0; i < $N_IN; ++i) {
    if (in[i].dtype != KF_F32 || in[i].ndim != kInputRanks[i]) return KF_ERR_INVALID_ARGUMENT;
  }
  if (out[0].dtype != KF_F32 || out[0].ndim != $OUT_RANK) return KF_ERR_INVALID_ARGUMENT;
  const kf_tensor& shaped = in[$SHAPE_INPUT];
  int64_t rows = 1;
  int64_t cols = 1;
  for (int32_t d = 0; d < shaped.ndim; ++d) {
    if (d < shaped.ndim - $REDUCED_AXES) {
      rows *= shaped.shape[d];
    } else {
      cols *= shaped.shape[d];
    }
  }
$INPUT_CHECKS  if (Numel(out[0]) != $OUT_NUMEL) return KF_ERR_INVALID_ARGUMENT;
  if (rows == 0 || cols == 0) return Numel(out[0]) == 0 ? KF_OK : KF_ERR_UNSUPPORTED_SHAPE;
$POINTERS  float* y = static_cast<float*>(out[0].data);
  const int64_t rows_per_task = $RPT;
  const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
$PARALLEL  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t end = (t + 1) * rows_per_task < rows ? (t + 1) * rows_per_task : rows;
    for (int64_t r = t * rows_per_task; r < end; ++r) RunRow($ROW_ARGSy, r, cols);
  }
  return KF_OK;
}
)",
            {{"$EXPLANATION", explanation},
             {"$ACC", f64 ? "double" : "float"},
             {"$EXP", uses_exp ? std::string(KernelExpSource()) : ""},
             {"$ROW_PARAMS", row_params},
             {"$ROW_SETUP", row_setup},
             {"$BODY", RowBody(plan, one_pass)},
             {"$N_IN", std::to_string(n_in)},
             {"$RANKS", ranks},
             {"$OUT_RANK", std::to_string(plan.output_rank)},
             {"$SHAPE_INPUT", std::to_string(plan.shape_input)},
             {"$REDUCED_AXES", std::to_string(plan.reduced_axes)},
             {"$INPUT_CHECKS", input_checks},
             {"$OUT_NUMEL", per_row ? "rows" : "rows * cols"},
             {"$POINTERS", pointers},
             {"$RPT", rows_per_task},
             // Dynamic tasks balance uneven rows; small tensors skip the fork.
             {"$PARALLEL", all_threads ? "#pragma omp parallel for schedule(dynamic, 1) if "
                                         "(rows * cols >= 16384)\n"
                                       : ""},
             {"$ROW_ARGS", row_args}});
  return source;
}

class RowNormTemplate final : public TemplateFamily {
 public:
  std::string_view name() const override { return "rownorm"; }

  Status Supports(const SpecView& spec) const override { return AnalyzeRowSpec(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    Result<RowPlan> plan = AnalyzeRowSpec(spec);
    std::vector<ParamSpace> space;
    if (!plan.ok() || HasPasses(plan->kind)) space.push_back({"passes", {"two", "one"}});
    space.push_back({"threads", {"all", "1"}});
    space.push_back({"rows_per_task", {"8", "1", "32"}});
    if (!plan.ok() || HasAccumulate(plan->kind)) space.push_back({"accumulate", {"f32", "f64"}});
    return space;
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_ASSIGN_OR_RETURN(RowPlan plan, AnalyzeRowSpec(spec));
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    std::string strategy;
    if (HasPasses(plan.kind)) {
      const bool one = params.at("passes") == "one";
      if (plan.kind == RowKind::kLayerNorm) {
        strategy = one ? "one-pass Welford (16 lanes)" : "two-pass mean then variance";
      } else {
        strategy = one ? "online max and rescaled sum (16 lanes)" : "two passes, max then sum";
      }
      strategy += ", ";
    }
    if (HasAccumulate(plan.kind)) strategy += params.at("accumulate") + " accumulators, ";
    RenderedKernel kernel;
    kernel.explanation = fmt::format(
        "{}: one thread per row, rows in tasks of {} on {} thread(s); {}vectorized columns.",
        plan.description, params.at("rows_per_task"), params.at("threads") == "all" ? "all" : "1",
        strategy);
    kernel.source = RenderSource(plan, params, kernel.explanation);
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeRowNormTemplate() {
  return std::make_unique<RowNormTemplate>();
}

}  // namespace kfleet::agents
