#include "eval/model_verify.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/subprocess.h"
#include "common/temp_dir.h"
#include "eval/device.h"
#include "kfleet/kernel.h"
#include "planner/kernel_spec.h"
#include "planner/onnx_import.h"
#include "planner/partition.h"

namespace kfleet::eval {
namespace {

namespace fs = std::filesystem;

// LayerNorm -> MatMul, twice: two specs ("layernorm", "gemm"), each occurring twice.
constexpr const char* kModelF32 = R"(<ir_version: 8, opset_import: ["" : 17]>
verify_ln_gemm (float[16,96] x, float[96] g1, float[96] b1, float[96,96] w1, float[96] g2,
                float[96] b2, float[96,96] w2) => (float[16,96] y) {
  n1 = LayerNormalization <axis = -1, epsilon = 0.00001> (x, g1, b1)
  m1 = MatMul (n1, w1)
  n2 = LayerNormalization <axis = -1, epsilon = 0.00001> (m1, g2, b2)
  y = MatMul (n2, w2)
}
)";

// The same in half precision: the executor holds f16 values in f32, the kernel sees f16.
constexpr const char* kModelF16 = R"(<ir_version: 8, opset_import: ["" : 17]>
verify_ln_gemm_f16 (float16[16,96] x, float16[96] g1, float16[96] b1, float16[96,96] w1)
    => (float16[16,96] y) {
  n1 = LayerNormalization <axis = -1, epsilon = 0.00001> (x, g1, b1)
  y = MatMul (n1, w1)
}
)";

// LayerNorm as older exports write it, with gamma computed by a node written in the middle of
// the pattern: the collapsed group must run after it, not where its first node was.
constexpr const char* kModelInterleaved = R"(<ir_version: 7, opset_import: ["" : 13]>
verify_interleaved (float[16,96] x, float[96] graw, float[96] b, float[96,96] w)
    => (float[16,96] y, float[16,96] z) {
  mean = ReduceMean <axes = [-1]> (x)
  d = Sub (x, mean)
  g = Exp (graw)
  two = Constant <value = float {2.0}> ()
  sq = Pow (d, two)
  var = ReduceMean <axes = [-1]> (sq)
  eps = Constant <value = float {0.00001}> ()
  ve = Add (var, eps)
  sd = Sqrt (ve)
  n = Div (d, sd)
  gn = Mul (n, g)
  y = Add (gn, b)
  z = MatMul (y, w)
}
)";

// out0 = in0 @ in1 for f32 matrices, one output row per iteration.
constexpr const char* kGemmSource = R"(#include "kfleet/kernel.h"

// A helper every test kernel defines: the combined library must keep each kernel's own.
int RowCount(const kf_tensor& t) { return static_cast<int>(t.shape[0]); }

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void*) {
  if (n_in != 2 || n_out != 1 || in[0].ndim != 2 || in[1].ndim != 2) {
    return KF_ERR_INVALID_ARGUMENT;
  }
  const int64_t m = RowCount(in[0]), k = in[0].shape[1], n = in[1].shape[1];
  const float* a = static_cast<const float*>(in[0].data);
  const float* b = static_cast<const float*>(in[1].data);
  float* c = static_cast<float*>(out[0].data);
#pragma omp parallel for
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) c[i * n + j] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += a[i * k + p] * b[p * n + j];
    }
  }
  return KF_OK;
}
)";

// Runs and writes every element, all zeros: the harness would have caught it, the model check
// must too.
constexpr const char* kZerosSource = R"(#include "kfleet/kernel.h"

int RowCount(const kf_tensor& t) { return static_cast<int>(t.shape[0]); }

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t, kf_tensor* out, int32_t, void*) {
  float* y = static_cast<float*>(out[0].data);
  for (int64_t i = 0; i < RowCount(in[0]) * in[0].shape[1]; ++i) y[i] = 0.0f;
  return KF_OK;
}
)";

constexpr const char* kUnsupportedSource = R"(#include "kfleet/kernel.h"
extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  return KF_ERR_UNSUPPORTED_SHAPE;
}
)";

constexpr const char* kSyntaxErrorSource = R"(#include "kfleet/kernel.h"
extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  return undeclared_status;
}
)";

// Writes zeros over its output on the GPU: runs fine, and is wrong.
constexpr const char* kCudaZerosSource = R"(#include "kfleet/kernel.h"
#include <cuda_runtime.h>

extern "C" int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor* out, int32_t, void* stream) {
  int64_t n = 1;
  for (int32_t d = 0; d < out[0].ndim; ++d) n *= out[0].shape[d];
  return cudaMemsetAsync(out[0].data, 0, n * sizeof(float), static_cast<cudaStream_t>(stream)) ==
                 cudaSuccess
             ? KF_OK
             : KF_ERR_DEVICE;
}
)";

using KernelRun = int (*)(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*);

std::string TestData(const std::string& relative) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/" + relative;
}

std::string ReadTestFile(const std::string& relative) {
  Result<std::string> text = ReadFile(TestData(relative));
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? *text : "";
}

// `source` with `scaling` (a loop over its output) run before it returns.
std::string WithScaledOutput(std::string source, const std::string& scaling) {
  const size_t at = source.rfind("return KF_OK;");
  EXPECT_NE(at, std::string::npos);
  if (at != std::string::npos) source.insert(at, scaling + "\n  ");
  return source;
}

class ModelVerifyTest : public ::testing::Test {
 protected:
  // One compile cache for the suite: the kernels every test shares compile once.
  static void SetUpTestSuite() {
    Result<TempDir> dir = TempDir::Create("kfleet-verify-cache");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    cache_ = new TempDir(std::move(dir).value());
  }
  static void TearDownTestSuite() {
    delete cache_;
    cache_ = nullptr;
  }

  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-verify-work");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    work_.emplace(std::move(dir).value());
  }

  static planner::Graph Import(const char* text) {
    Result<planner::Graph> graph = planner::ImportOnnxText(text, {});
    EXPECT_TRUE(graph.ok()) << graph.status().ToString();
    return graph.ok() ? std::move(graph).value() : planner::Graph{};
  }

  // The spec hash of the model's groups of `family`; they must all have the same spec.
  static std::string HashOf(const planner::Graph& graph, const std::string& family) {
    Result<std::vector<planner::FusionGroup>> groups = planner::PartitionGraph(graph);
    EXPECT_TRUE(groups.ok()) << groups.status().ToString();
    if (!groups.ok()) return "";
    std::string hash;
    for (const planner::FusionGroup& group : *groups) {
      if (group.family != family) continue;
      Result<planner::KernelSpec> spec = planner::BuildKernelSpec(graph, group);
      EXPECT_TRUE(spec.ok()) << spec.status().ToString();
      if (!spec.ok()) return "";
      EXPECT_TRUE(hash.empty() || hash == spec->hash) << family << " groups differ";
      hash = spec->hash;
    }
    EXPECT_FALSE(hash.empty()) << "no " << family << " group";
    return hash;
  }

  VerifyOptions Options() const {
    VerifyOptions options;
    options.reps = 3;
    options.threads = 2;
    options.work_dir = work_->path();
    options.compile.cache_dir = cache_->path();
    return options;
  }

  static ModelVerifyReport MustVerify(const planner::Graph& graph,
                                      const std::vector<SwapKernel>& kernels,
                                      const VerifyOptions& options) {
    Result<ModelVerifyReport> report = VerifyModel(graph, kernels, options);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? std::move(report).value() : ModelVerifyReport{};
  }

  static inline TempDir* cache_ = nullptr;
  std::optional<TempDir> work_;
};

TEST_F(ModelVerifyTest, SwapsCorrectKernelsIntoEveryOccurrence) {
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "layernorm"), "layernorm 16x96 f32",
       ReadTestFile("kernels/layernorm_good.cpp"), "kf_layernorm_run"},
      {HashOf(graph, "gemm"), "gemm 16x96x96 f32", kGemmSource, "kf_gemm_run"}};
  const ModelVerifyReport report = MustVerify(graph, kernels, Options());

  ASSERT_EQ(report.kernels.size(), 2u);
  for (size_t k = 0; k < kernels.size(); ++k) {
    const KernelVerdict& verdict = report.kernels[k];
    EXPECT_TRUE(verdict.kept) << verdict.name << ": " << verdict.reason;
    EXPECT_EQ(verdict.reason, "");
    EXPECT_EQ(verdict.occurrences, 2) << verdict.name;
    EXPECT_EQ(verdict.spec_hash, kernels[k].spec_hash);
    EXPECT_EQ(verdict.name, kernels[k].name);
    EXPECT_EQ(verdict.symbol, kernels[k].symbol);
  }
  EXPECT_TRUE(report.outputs_match);
  EXPECT_LE(report.max_error, 1e-3);
  EXPECT_GT(report.max_error, 0);  // the kernels did run: their rounding differs from OpenBLAS's
  EXPECT_EQ(report.reps, 3);
  EXPECT_GT(report.baseline_ms, 0);
  EXPECT_GT(report.swapped_ms, 0);
  EXPECT_GT(report.speedup, 0);
  EXPECT_DOUBLE_EQ(report.speedup, report.baseline_ms / report.swapped_ms);

  // Only the library is left in the work directory, exporting each kernel under its symbol.
  EXPECT_EQ(report.library, work_->path() / "libkfleet_kernels.so");
  std::vector<fs::path> left;
  for (const fs::directory_entry& entry : fs::directory_iterator(work_->path())) {
    left.push_back(entry.path());
  }
  EXPECT_EQ(left, std::vector<fs::path>{report.library});
  void* library = dlopen(report.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(library, nullptr) << dlerror();
  auto gemm = reinterpret_cast<KernelRun>(dlsym(library, "kf_gemm_run"));
  ASSERT_NE(gemm, nullptr);
  EXPECT_NE(dlsym(library, "kf_layernorm_run"), nullptr);
  // Helpers stay private to their kernel; the ABI's generic name is gone.
  EXPECT_EQ(dlsym(library, "_Z8RowCountRK9kf_tensor"), nullptr);
  EXPECT_EQ(dlsym(library, "kf_kernel_run"), nullptr);
  // [[1, 2]] @ [[3], [4]] = [[11]].
  float a[2] = {1, 2};
  float b[2] = {3, 4};
  float c[1] = {0};
  const int64_t a_shape[2] = {1, 2};
  const int64_t b_shape[2] = {2, 1};
  const int64_t c_shape[2] = {1, 1};
  const int64_t a_strides[2] = {2, 1};
  const int64_t b_strides[2] = {1, 1};
  const kf_tensor inputs[2] = {{a, KF_F32, 2, a_shape, a_strides},
                               {b, KF_F32, 2, b_shape, b_strides}};
  kf_tensor output = {c, KF_F32, 2, c_shape, b_strides};
  EXPECT_EQ(gemm(inputs, 2, &output, 1, nullptr), KF_OK);
  EXPECT_EQ(c[0], 11.0f);
  EXPECT_EQ(dlclose(library), 0);

  // The header declares both, names their jobs, and compiles against the ABI header.
  EXPECT_NE(report.header.find("int kf_layernorm_run(const kf_tensor* in"), std::string::npos)
      << report.header;
  EXPECT_NE(report.header.find("int kf_gemm_run("), std::string::npos) << report.header;
  EXPECT_NE(report.header.find("layernorm 16x96 f32"), std::string::npos) << report.header;
  EXPECT_NE(report.header.find("gemm 16x96x96 f32"), std::string::npos) << report.header;
  const fs::path include = work_->path() / "include";
  ASSERT_TRUE(MakeDirs(include / "kfleet").ok());
  ASSERT_TRUE(WriteFileAtomic(include / "kfleet" / "kernel.h", KernelAbiHeader()).ok());
  ASSERT_TRUE(WriteFileAtomic(include / "kfleet_kernels.h", report.header).ok());
  for (const char* language : {"c", "c++"}) {
    ProcessSpec check;
    check.argv = {"g++",
                  "-fsyntax-only",
                  "-Wall",
                  "-Werror",
                  "-x",
                  language,
                  "-I",
                  include.string(),
                  (include / "kfleet_kernels.h").string()};
    Result<ProcessResult> compiled = SystemProcessRunner().Run(check);
    ASSERT_TRUE(compiled.ok()) << compiled.status().ToString();
    EXPECT_TRUE(compiled->Succeeded()) << language << ": " << compiled->stderr_bytes;
  }
}

TEST_F(ModelVerifyTest, CollapsedGroupRunsAfterWhatItReads) {
  const planner::Graph graph = Import(kModelInterleaved);
  const std::vector<SwapKernel> kernels = {{HashOf(graph, "layernorm"), "layernorm decomposed",
                                            ReadTestFile("kernels/layernorm_good.cpp"),
                                            "kf_layernorm_run"}};
  const ModelVerifyReport report = MustVerify(graph, kernels, Options());
  ASSERT_EQ(report.kernels.size(), 1u);
  EXPECT_TRUE(report.kernels[0].kept) << report.kernels[0].reason;
  EXPECT_EQ(report.kernels[0].occurrences, 1);
  EXPECT_TRUE(report.outputs_match);
  EXPECT_GT(report.max_error, 0);
  EXPECT_LE(report.max_error, 1e-3);
}

TEST_F(ModelVerifyTest, DropsKernelsThatBreakTheModelAndKeepsTheRest) {
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "layernorm"), "layernorm zeros", kZerosSource, "kf_zeros_run"},
      {HashOf(graph, "gemm"), "gemm 16x96x96 f32", kGemmSource, "kf_gemm_run"}};
  const ModelVerifyReport report = MustVerify(graph, kernels, Options());

  ASSERT_EQ(report.kernels.size(), 2u);
  EXPECT_FALSE(report.kernels[0].kept);
  EXPECT_EQ(report.kernels[0].occurrences, 2);
  EXPECT_TRUE(
      report.kernels[0].reason.starts_with("output mismatch when swapped in alone: max error "))
      << report.kernels[0].reason;
  EXPECT_TRUE(report.kernels[1].kept) << report.kernels[1].reason;
  EXPECT_TRUE(report.outputs_match);
  EXPECT_LE(report.max_error, 1e-3);

  void* library = dlopen(report.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(library, nullptr) << dlerror();
  EXPECT_NE(dlsym(library, "kf_gemm_run"), nullptr);
  EXPECT_EQ(dlsym(library, "kf_zeros_run"), nullptr);  // dropped kernels are not exported
  EXPECT_EQ(dlclose(library), 0);
  EXPECT_EQ(report.header.find("kf_zeros_run"), std::string::npos) << report.header;
}

// Each kernel scales its output by 1.01: alone, y is off by 1% (LayerNorm undoes the first
// layer's scaling); together by 2%.
TEST_F(ModelVerifyTest, DropsTheWorstWhenKernelsFailOnlyTogether) {
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "layernorm"), "layernorm scaled",
       WithScaledOutput(ReadTestFile("kernels/layernorm_good.cpp"),
                        "for (int64_t i = 0; i < rows * cols; ++i) y[i] *= 1.01f;"),
       "kf_layernorm_scaled_run"},
      {HashOf(graph, "gemm"), "gemm scaled",
       WithScaledOutput(kGemmSource, "for (int64_t i = 0; i < m * n; ++i) c[i] *= 1.01f;"),
       "kf_gemm_scaled_run"}};
  VerifyOptions options = Options();
  options.rtol = 1e-2;
  const ModelVerifyReport report = MustVerify(graph, kernels, options);

  ASSERT_EQ(report.kernels.size(), 2u);
  EXPECT_NE(report.kernels[0].kept, report.kernels[1].kept);
  const KernelVerdict& dropped = report.kernels[0].kept ? report.kernels[1] : report.kernels[0];
  EXPECT_TRUE(dropped.reason.starts_with(
      "outputs out of tolerance together with the other kernels: max error "))
      << dropped.reason;
  EXPECT_TRUE(report.outputs_match);
  EXPECT_GT(report.max_error, 1e-3);
  EXPECT_LE(report.max_error, 1e-2);
}

TEST_F(ModelVerifyTest, KernelThatFailsInTheModelIsDropped) {
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "gemm"), "gemm refuses", kUnsupportedSource, "kf_refuses_run"}};
  const ModelVerifyReport report = MustVerify(graph, kernels, Options());
  ASSERT_EQ(report.kernels.size(), 1u);
  EXPECT_FALSE(report.kernels[0].kept);
  EXPECT_TRUE(report.kernels[0].reason.starts_with("fails when swapped in alone: "))
      << report.kernels[0].reason;
  EXPECT_NE(report.kernels[0].reason.find("KF_ERR_UNSUPPORTED_SHAPE"), std::string::npos)
      << report.kernels[0].reason;
  // Nothing kept: the model is the baseline, and no library is left behind.
  EXPECT_TRUE(report.outputs_match);
  EXPECT_EQ(report.max_error, 0);
  EXPECT_EQ(report.speedup, 1);
  EXPECT_EQ(report.library, fs::path());
  EXPECT_EQ(report.header, "");
  EXPECT_TRUE(fs::is_empty(work_->path()));
}

TEST_F(ModelVerifyTest, ReportsKernelsThatMatchNothingOrDoNotBuild) {
  const planner::Graph graph = Import(kModelF32);
  const std::string gemm = HashOf(graph, "gemm");
  const std::vector<SwapKernel> kernels = {
      {std::string(64, '0'), "from another model", kGemmSource, "kf_other_run"},
      {HashOf(graph, "layernorm"), "layernorm typo", kSyntaxErrorSource, "kf_typo_run"},
      {gemm, "gemm 16x96x96 f32", kGemmSource, "kf_gemm_run"},
      {gemm, "gemm again", kGemmSource, "kf_again_run"},
      {gemm, "gemm same symbol", kGemmSource, "kf_gemm_run"},
      {gemm, "gemm bad symbol", kGemmSource, "kf-gemm"}};
  const ModelVerifyReport report = MustVerify(graph, kernels, Options());

  ASSERT_EQ(report.kernels.size(), kernels.size());
  EXPECT_FALSE(report.kernels[0].kept);
  EXPECT_EQ(report.kernels[0].occurrences, 0);
  EXPECT_EQ(report.kernels[0].reason, "no fusion group of the model has this spec");
  EXPECT_FALSE(report.kernels[1].kept);
  EXPECT_EQ(report.kernels[1].occurrences, 2);
  EXPECT_TRUE(report.kernels[1].reason.starts_with("does not compile: "))
      << report.kernels[1].reason;
  EXPECT_NE(report.kernels[1].reason.find("undeclared_status"), std::string::npos)
      << report.kernels[1].reason;
  EXPECT_TRUE(report.kernels[2].kept) << report.kernels[2].reason;
  EXPECT_FALSE(report.kernels[3].kept);
  EXPECT_EQ(report.kernels[3].reason,
            "kernel 'gemm 16x96x96 f32', earlier in the list, replaces this spec");
  EXPECT_FALSE(report.kernels[4].kept);
  EXPECT_EQ(report.kernels[4].reason,
            "symbol 'kf_gemm_run' is already kernel 'gemm 16x96x96 f32''s");
  EXPECT_FALSE(report.kernels[5].kept);
  EXPECT_EQ(report.kernels[5].reason, "symbol 'kf-gemm' is not a C identifier");
  EXPECT_TRUE(report.outputs_match);
  EXPECT_TRUE(fs::exists(report.library));
  EXPECT_NE(report.header.find("kf_gemm_run"), std::string::npos);
  EXPECT_EQ(report.header.find("kf_typo_run"), std::string::npos);
}

TEST_F(ModelVerifyTest, HalfPrecisionKernelSeesItsSpecDtype) {
  const planner::Graph graph = Import(kModelF16);
  const std::vector<SwapKernel> kernels = {{HashOf(graph, "layernorm"), "layernorm 16x96 f16",
                                            ReadTestFile("kernels/layernorm_f16_good.cpp"),
                                            "kf_layernorm_f16_run"}};
  VerifyOptions options = Options();
  options.rtol = 1e-2;  // the kernel rounds its output to f16; the baseline keeps it in f32
  const ModelVerifyReport report = MustVerify(graph, kernels, options);
  ASSERT_EQ(report.kernels.size(), 1u);
  EXPECT_TRUE(report.kernels[0].kept) << report.kernels[0].reason;
  EXPECT_EQ(report.kernels[0].occurrences, 1);
  EXPECT_TRUE(report.outputs_match);
  EXPECT_GT(report.max_error, 0);
  EXPECT_LE(report.max_error, 1e-2);
}

TEST_F(ModelVerifyTest, RefusesOptionsItCannotWorkWith) {
  const planner::Graph graph = Import(kModelF32);
  VerifyOptions options = Options();
  options.reps = 0;
  EXPECT_EQ(VerifyModel(graph, {}, options).status().code(), ErrorCode::kInvalidArgument);
  options = Options();
  options.work_dir = work_->path() / "missing";
  EXPECT_EQ(VerifyModel(graph, {}, options).status().code(), ErrorCode::kInvalidArgument);
  options = Options();
  options.backend = "hip";
  EXPECT_EQ(VerifyModel(graph, {}, options).status().code(), ErrorCode::kInvalidArgument);
  options = Options();
  options.compile.compiler = "kfleet-no-such-compiler";
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "gemm"), "gemm", kGemmSource, "kf_gemm_run"}};
  EXPECT_FALSE(VerifyModel(graph, kernels, options).ok());
}

// Both kernels on GPU 0: nvcc objects, each with its own fatbin, in one library; the CUDA
// baseline hands them device pointers.
TEST_F(ModelVerifyTest, CudaKernelsRunInsideTheCudaBaseline) {
  const Status gpu = CheckDevice("cuda", 0);
  if (!gpu.ok()) GTEST_SKIP() << "no usable CUDA device: " << gpu.message();
  Result<CudaDeviceSummary> device = DescribeCudaDevice(0);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "layernorm"), "layernorm 16x96 f32 (cuda)",
       ReadTestFile("kernels/cuda/layernorm_good.cu"), "kf_layernorm_cuda_run"},
      {HashOf(graph, "gemm"), "gemm 16x96x96 f32 (cuda)",
       ReadTestFile("kernels/cuda/matmul_good.cu"), "kf_matmul_cuda_run"}};
  VerifyOptions options = Options();
  options.backend = "cuda";
  options.device = 0;
  options.compile = CudaCompileOptions(device->arch);
  options.compile.cache_dir = cache_->path();
  const ModelVerifyReport report = MustVerify(graph, kernels, options);

  ASSERT_EQ(report.kernels.size(), 2u);
  for (const KernelVerdict& verdict : report.kernels) {
    EXPECT_TRUE(verdict.kept) << verdict.name << ": " << verdict.reason;
    EXPECT_EQ(verdict.occurrences, 2) << verdict.name;
  }
  EXPECT_TRUE(report.outputs_match);
  EXPECT_LE(report.max_error, 1e-3);
  EXPECT_GT(report.max_error, 0);  // the kernels did run: their rounding differs from cuBLASLt's
  EXPECT_GT(report.baseline_ms, 0);
  EXPECT_GT(report.swapped_ms, 0);
  EXPECT_DOUBLE_EQ(report.speedup, report.baseline_ms / report.swapped_ms);

  // The CUDA runtime the library loads must stay mapped (as in the verifier).
  void* library = dlopen(report.library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  ASSERT_NE(library, nullptr) << dlerror();
  EXPECT_NE(dlsym(library, "kf_layernorm_cuda_run"), nullptr);
  EXPECT_NE(dlsym(library, "kf_matmul_cuda_run"), nullptr);
  EXPECT_EQ(dlsym(library, "kf_kernel_run"), nullptr);
  EXPECT_EQ(dlsym(library, "_Z8RowCountRK9kf_tensor"), nullptr);
  EXPECT_EQ(dlclose(library), 0);
}

TEST_F(ModelVerifyTest, CudaKernelThatBreaksTheModelIsDropped) {
  const Status gpu = CheckDevice("cuda", 0);
  if (!gpu.ok()) GTEST_SKIP() << "no usable CUDA device: " << gpu.message();
  Result<CudaDeviceSummary> device = DescribeCudaDevice(0);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  const planner::Graph graph = Import(kModelF32);
  const std::vector<SwapKernel> kernels = {
      {HashOf(graph, "layernorm"), "layernorm zeros (cuda)", kCudaZerosSource, "kf_zeros_cuda_run"},
      {HashOf(graph, "gemm"), "gemm 16x96x96 f32 (cuda)",
       ReadTestFile("kernels/cuda/matmul_good.cu"), "kf_matmul_cuda_run"}};
  VerifyOptions options = Options();
  options.backend = "cuda";
  options.compile = CudaCompileOptions(device->arch);
  options.compile.cache_dir = cache_->path();
  const ModelVerifyReport report = MustVerify(graph, kernels, options);
  ASSERT_EQ(report.kernels.size(), 2u);
  EXPECT_FALSE(report.kernels[0].kept);
  EXPECT_TRUE(
      report.kernels[0].reason.starts_with("output mismatch when swapped in alone: max error "))
      << report.kernels[0].reason;
  EXPECT_TRUE(report.kernels[1].kept) << report.kernels[1].reason;
  EXPECT_TRUE(report.outputs_match);
}

TEST_F(ModelVerifyTest, CudaWithoutAGpuIsAnErrorNotACrash) {
  if (CheckDevice("cuda", 0).ok()) GTEST_SKIP() << "a CUDA device is usable here";
  const planner::Graph graph = Import(kModelF32);
  VerifyOptions options = Options();
  options.backend = "cuda";
  options.compile = CudaCompileOptions("sm_90");
  options.compile.cache_dir = cache_->path();
  const Result<ModelVerifyReport> report = VerifyModel(graph, {}, options);
  ASSERT_FALSE(report.ok());
  EXPECT_FALSE(report.status().message().empty());
}

TEST_F(ModelVerifyTest, ReportRoundTripsThroughJson) {
  ModelVerifyReport report;
  report.outputs_match = true;
  report.max_error = 2.5e-4;
  report.baseline_ms = 12.5;
  report.swapped_ms = 5;
  report.speedup = 2.5;
  report.reps = 7;
  report.kernels = {{"abc", "layernorm 16x96 f32", "kf_k0_run", 2, true, ""},
                    {"def", "gemm \"quoted\"", "kf_k1_run", 1, false, "does not compile:\nline 2"}};
  report.library = "/tmp/work/libkfleet_kernels.so";
  report.header = "/* header */\nint kf_k0_run(void);\n";

  Result<ModelVerifyReport> back = ModelVerifyReportFromJson(ToJson(report));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->outputs_match, report.outputs_match);
  EXPECT_EQ(back->max_error, report.max_error);
  EXPECT_EQ(back->baseline_ms, report.baseline_ms);
  EXPECT_EQ(back->swapped_ms, report.swapped_ms);
  EXPECT_EQ(back->speedup, report.speedup);
  EXPECT_EQ(back->reps, report.reps);
  ASSERT_EQ(back->kernels.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(back->kernels[k].spec_hash, report.kernels[k].spec_hash);
    EXPECT_EQ(back->kernels[k].name, report.kernels[k].name);
    EXPECT_EQ(back->kernels[k].symbol, report.kernels[k].symbol);
    EXPECT_EQ(back->kernels[k].occurrences, report.kernels[k].occurrences);
    EXPECT_EQ(back->kernels[k].kept, report.kernels[k].kept);
    EXPECT_EQ(back->kernels[k].reason, report.kernels[k].reason);
  }
  EXPECT_EQ(back->library, report.library);
  EXPECT_EQ(back->header, report.header);

  // An infinite error (a NaN where the baseline has a number) survives JSON's lack of Inf.
  report.outputs_match = false;
  report.max_error = std::numeric_limits<double>::infinity();
  back = ModelVerifyReportFromJson(ToJson(report));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(std::isinf(back->max_error));

  EXPECT_EQ(ModelVerifyReportFromJson("{\"outputs_match\": true}").status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ModelVerifyReportFromJson("not json").status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::eval
