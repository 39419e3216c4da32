#include "eval/toolchain.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/temp_dir.h"
#include "include/kfleet/kernel.h"

namespace kfleet::eval {
namespace {

namespace fs = std::filesystem;

// out0 = relu(in0 @ in1) in f32: an OpenBLAS call with an OpenMP epilogue, as candidates write.
constexpr const char* kMatmulReluSource = R"(#include "kfleet/kernel.h"
#include <cblas.h>

int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out, void*) {
  if (n_in != 2 || n_out != 1) return KF_ERR_INVALID_ARGUMENT;
  const int64_t m = in[0].shape[0], k = in[0].shape[1], n = in[1].shape[1];
  float* c = static_cast<float*>(out[0].data);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f,
              static_cast<const float*>(in[0].data), k, static_cast<const float*>(in[1].data), n,
              0.0f, c, n);
#pragma omp parallel for
  for (int64_t i = 0; i < m * n; ++i) c[i] = c[i] > 0.0f ? c[i] : 0.0f;
  return KF_OK;
}
)";

// Line 3 names an undeclared variable.
constexpr const char* kSyntaxErrorSource = R"(#include "kfleet/kernel.h"
int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  return undeclared_status;
}
)";

// 4e10 constexpr steps: minutes of compiling once the test lifts GCC's operation limit.
constexpr const char* kSlowSource = R"(constexpr long Sum() {
  long sum = 0;
  for (long i = 0; i < 200000; ++i)
    for (long j = 0; j < 200000; ++j) sum += (i ^ j) % 7;
  return sum;
}
static_assert(Sum() > 0);
)";
constexpr const char* kNoConstexprLimitFlag = "-fconstexpr-ops-limit=4611686018427387904";

using KernelRun = int (*)(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*);

// The kernel brings libgomp, which this test does not link: unloading it under OpenMP's idle
// pool threads would crash them, so the library stays loaded, as it must in the harness.
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;

class ToolchainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-toolchain-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    cache_.emplace(std::move(dir).value());
  }

  CompileOptions Options() const {
    CompileOptions options;
    options.cache_dir = cache_->path();
    return options;
  }

  static std::unique_ptr<Toolchain> Make(CompileOptions options) {
    Result<std::unique_ptr<Toolchain>> toolchain = MakeCpuToolchain(std::move(options));
    EXPECT_TRUE(toolchain.ok()) << toolchain.status().ToString();
    return toolchain.ok() ? std::move(toolchain).value() : nullptr;
  }

  static CompiledKernel MustCompile(Toolchain& toolchain, std::string_view source) {
    Result<CompiledKernel> kernel = toolchain.Compile(source);
    EXPECT_TRUE(kernel.ok()) << kernel.status().ToString();
    return kernel.ok() ? std::move(kernel).value() : CompiledKernel{};
  }

  // Work directories left in the cache: none once every compile has finished.
  int LeftoverWorkDirs() const {
    int count = 0;
    for (const fs::directory_entry& entry : fs::directory_iterator(cache_->path())) {
      if (entry.path().filename().string().starts_with("tmp-")) ++count;
    }
    return count;
  }

  std::optional<TempDir> cache_;
};

TEST_F(ToolchainTest, CompiledKernelLoadsAndComputes) {
  std::unique_ptr<Toolchain> toolchain = Make(Options());
  ASSERT_NE(toolchain, nullptr);
  EXPECT_TRUE(toolchain->name().starts_with("g++ ")) << toolchain->name();
  CompiledKernel kernel = MustCompile(*toolchain, kMatmulReluSource);
  ASSERT_TRUE(kernel.ok) << kernel.log;
  EXPECT_FALSE(kernel.cache_hit);
  EXPECT_GT(kernel.seconds, 0);
  EXPECT_EQ(kernel.key.size(), 64u);
  EXPECT_EQ(kernel.library, cache_->path() / kernel.key / "kernel.so");
  EXPECT_EQ(kernel.log_path, cache_->path() / kernel.key / "compile.log");
  EXPECT_TRUE(fs::exists(kernel.log_path));
  EXPECT_TRUE(kernel.command.starts_with("g++ -Iinclude kernel.cpp -o kernel.so -O3"))
      << kernel.command;
  EXPECT_NE(kernel.command.find("-lopenblas"), std::string::npos) << kernel.command;
  EXPECT_EQ(LeftoverWorkDirs(), 0);

  void* library = dlopen(kernel.library.c_str(), kDlopenFlags);
  ASSERT_NE(library, nullptr) << dlerror();
  auto run = reinterpret_cast<KernelRun>(dlsym(library, "kf_kernel_run"));
  ASSERT_NE(run, nullptr) << dlerror();
  // [[1, 2], [3, 4], [-5, -6]] @ [[1, -1], [1, 1]] = [[3, 1], [7, 1], [-11, -1]], then relu.
  float a[6] = {1, 2, 3, 4, -5, -6};
  float b[4] = {1, -1, 1, 1};
  float c[6] = {-9, -9, -9, -9, -9, -9};
  const int64_t a_shape[2] = {3, 2};
  const int64_t b_shape[2] = {2, 2};
  const int64_t c_shape[2] = {3, 2};
  const int64_t a_strides[2] = {2, 1};
  const int64_t b_strides[2] = {2, 1};
  const kf_tensor inputs[2] = {{a, KF_F32, 2, a_shape, a_strides},
                               {b, KF_F32, 2, b_shape, b_strides}};
  kf_tensor output = {c, KF_F32, 2, c_shape, a_strides};
  EXPECT_EQ(run(inputs, 2, &output, 1, nullptr), KF_OK);
  const std::vector<float> got(c, c + 6);
  EXPECT_EQ(got, (std::vector<float>{3, 1, 7, 1, 0, 0}));
  EXPECT_EQ(dlclose(library), 0);
}

TEST_F(ToolchainTest, SecondCompileIsACacheHit) {
  std::unique_ptr<Toolchain> toolchain = Make(Options());
  ASSERT_NE(toolchain, nullptr);
  CompiledKernel first = MustCompile(*toolchain, kMatmulReluSource);
  ASSERT_TRUE(first.ok) << first.log;

  // A new toolchain stands for another process using the same cache.
  std::unique_ptr<Toolchain> again = Make(Options());
  ASSERT_NE(again, nullptr);
  CompiledKernel second = MustCompile(*again, kMatmulReluSource);
  EXPECT_TRUE(second.ok);
  EXPECT_TRUE(second.cache_hit);
  EXPECT_EQ(second.seconds, 0);
  EXPECT_EQ(second.key, first.key);
  EXPECT_EQ(second.library, first.library);
  EXPECT_EQ(second.log, first.log);
  EXPECT_EQ(second.command, first.command);
}

TEST_F(ToolchainTest, ChangedFlagOrSourceGivesANewKey) {
  std::unique_ptr<Toolchain> toolchain = Make(Options());
  ASSERT_NE(toolchain, nullptr);
  CompiledKernel base = MustCompile(*toolchain, kMatmulReluSource);
  CompiledKernel edited = MustCompile(*toolchain, std::string(kMatmulReluSource) + "// edited\n");

  CompileOptions options = Options();
  options.flags.push_back("-DKFLEET_TEST_VARIANT=1");
  std::unique_ptr<Toolchain> variant = Make(options);
  ASSERT_NE(variant, nullptr);
  CompiledKernel flagged = MustCompile(*variant, kMatmulReluSource);

  EXPECT_TRUE(base.ok && edited.ok && flagged.ok);
  EXPECT_FALSE(edited.cache_hit);
  EXPECT_FALSE(flagged.cache_hit);
  EXPECT_NE(edited.key, base.key);
  EXPECT_NE(flagged.key, base.key);
  EXPECT_NE(flagged.key, edited.key);
  EXPECT_NE(flagged.library, base.library);
}

TEST_F(ToolchainTest, SyntaxErrorIsReportedAndCached) {
  std::unique_ptr<Toolchain> toolchain = Make(Options());
  ASSERT_NE(toolchain, nullptr);
  CompiledKernel broken = MustCompile(*toolchain, kSyntaxErrorSource);
  EXPECT_FALSE(broken.ok);
  EXPECT_FALSE(broken.timed_out);
  EXPECT_TRUE(broken.library.empty());
  EXPECT_NE(broken.log.find("kernel.cpp:3:"), std::string::npos) << broken.log;
  EXPECT_NE(broken.log.find("error: 'undeclared_status' was not declared"), std::string::npos)
      << broken.log;
  EXPECT_EQ(broken.log_path, cache_->path() / broken.key / "compile.log");
  EXPECT_TRUE(fs::exists(broken.log_path));

  CompiledKernel again = MustCompile(*toolchain, kSyntaxErrorSource);
  EXPECT_FALSE(again.ok);
  EXPECT_TRUE(again.cache_hit);
  EXPECT_EQ(again.log, broken.log);
}

TEST_F(ToolchainTest, TimeoutIsReportedAndNotCached) {
  CompileOptions options = Options();
  options.timeout_ms = 2000;
  options.flags.push_back(kNoConstexprLimitFlag);
  std::unique_ptr<Toolchain> toolchain = Make(options);
  ASSERT_NE(toolchain, nullptr);
  CompiledKernel slow = MustCompile(*toolchain, kSlowSource);
  EXPECT_FALSE(slow.ok);
  EXPECT_TRUE(slow.timed_out);
  EXPECT_FALSE(slow.cache_hit);
  EXPECT_TRUE(slow.log_path.empty());
  EXPECT_NE(slow.log.find("timed out after 2000 ms"), std::string::npos) << slow.log;
  EXPECT_FALSE(fs::exists(cache_->path() / slow.key));
  EXPECT_EQ(LeftoverWorkDirs(), 0);
}

TEST_F(ToolchainTest, MissingCompilerIsAnErrorNamingIt) {
  CompileOptions options = Options();
  options.compiler = "kfleet-no-such-compiler";
  Result<std::unique_ptr<Toolchain>> toolchain = MakeCpuToolchain(options);
  ASSERT_FALSE(toolchain.ok());
  EXPECT_EQ(toolchain.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(toolchain.status().message().find("kfleet-no-such-compiler"), std::string::npos)
      << toolchain.status().ToString();
}

TEST_F(ToolchainTest, UnwritableCacheDirIsAnError) {
  CompileOptions options = Options();
  options.cache_dir = "/proc/kfleet-kernels";
  std::unique_ptr<Toolchain> toolchain = Make(options);
  ASSERT_NE(toolchain, nullptr);
  Result<CompiledKernel> kernel = toolchain->Compile(kSyntaxErrorSource);
  ASSERT_FALSE(kernel.ok());
  EXPECT_NE(kernel.status().message().find("/proc/kfleet-kernels"), std::string::npos)
      << kernel.status().ToString();
}

TEST_F(ToolchainTest, DamagedCacheEntryIsAnError) {
  std::unique_ptr<Toolchain> toolchain = Make(Options());
  ASSERT_NE(toolchain, nullptr);
  CompiledKernel kernel = MustCompile(*toolchain, kSyntaxErrorSource);
  ASSERT_TRUE(fs::remove(cache_->path() / kernel.key / "compile-failed"));
  Result<CompiledKernel> damaged = toolchain->Compile(kSyntaxErrorSource);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(damaged.status().message().find(kernel.key), std::string::npos);
}

TEST_F(ToolchainTest, ConcurrentCompilesOfOneSourceShareTheLibrary) {
  // Two toolchains, as two processes would have, racing on the same key.
  std::unique_ptr<Toolchain> first = Make(Options());
  std::unique_ptr<Toolchain> second = Make(Options());
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  CompiledKernel results[2];
  std::thread racer([&] { results[0] = MustCompile(*first, kMatmulReluSource); });
  results[1] = MustCompile(*second, kMatmulReluSource);
  racer.join();
  EXPECT_TRUE(results[0].ok) << results[0].log;
  EXPECT_TRUE(results[1].ok) << results[1].log;
  EXPECT_EQ(results[0].library, results[1].library);
  EXPECT_TRUE(fs::exists(results[0].library));
  EXPECT_EQ(LeftoverWorkDirs(), 0);
  void* library = dlopen(results[1].library.c_str(), kDlopenFlags);
  ASSERT_NE(library, nullptr) << dlerror();
  EXPECT_NE(dlsym(library, "kf_kernel_run"), nullptr);
  EXPECT_EQ(dlclose(library), 0);
}

// Before running a compile, has `rival` compile the same source into the same cache, so the
// compile that follows always loses the race to publish its entry.
class LosingRaceRunner final : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec, const std::atomic<bool>* cancel) override {
    const bool is_compile = !spec.cwd.empty();  // the version queries run without a cwd
    if (is_compile && rival != nullptr) {
      Result<CompiledKernel> won = rival->Compile(source);
      EXPECT_TRUE(won.ok()) << won.status().ToString();
      if (won.ok()) winner = std::move(won).value();
    }
    return SystemProcessRunner().Run(spec, cancel);
  }

  Toolchain* rival = nullptr;
  std::string source;
  CompiledKernel winner;
};

TEST_F(ToolchainTest, LoserOfThePublishRaceUsesTheWinnersEntry) {
  std::unique_ptr<Toolchain> rival = Make(Options());
  ASSERT_NE(rival, nullptr);
  LosingRaceRunner runner;
  runner.rival = rival.get();
  runner.source = kMatmulReluSource;
  Result<std::unique_ptr<Toolchain>> loser = MakeCpuToolchain(Options(), runner);
  ASSERT_TRUE(loser.ok()) << loser.status().ToString();

  CompiledKernel lost = MustCompile(**loser, kMatmulReluSource);
  ASSERT_TRUE(runner.winner.ok) << runner.winner.log;
  EXPECT_TRUE(lost.ok) << lost.log;
  EXPECT_FALSE(lost.cache_hit);
  EXPECT_GT(lost.seconds, 0);
  EXPECT_EQ(lost.key, runner.winner.key);
  EXPECT_EQ(lost.library, runner.winner.library);
  EXPECT_EQ(lost.log_path, runner.winner.log_path);
  EXPECT_EQ(LeftoverWorkDirs(), 0);
}

TEST(KernelAbiHeader, IsTheAbiHeader) {
  EXPECT_NE(KernelAbiHeader().find("#define KF_ABI_VERSION 1"), std::string_view::npos);
  EXPECT_NE(KernelAbiHeader().find("int kf_kernel_run("), std::string_view::npos);
}

TEST(DefaultCpuFlags, CarryOpenBlas) {
  const std::vector<std::string> flags = DefaultCpuFlags();
  EXPECT_EQ(std::vector<std::string>(flags.begin(), flags.begin() + 6),
            (std::vector<std::string>{"-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
                                      "-std=c++17"}));
  EXPECT_EQ(flags.back(), "-lopenblas");
}

// Sets or unsets environment variables for one test and puts them back afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    if (value == nullptr) {
      EXPECT_EQ(unsetenv(name), 0);
    } else {
      EXPECT_EQ(setenv(name, value, 1), 0);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      EXPECT_EQ(setenv(name_, old_->c_str(), 1), 0);
    } else {
      EXPECT_EQ(unsetenv(name_), 0);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DefaultKernelCacheDir, FollowsKfleetThenXdgThenHome) {
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", "/srv/kfleet-cache");
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DefaultKernelCacheDir(), fs::path("/srv/kfleet-cache/kernels"));
  }
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", nullptr);
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DefaultKernelCacheDir(), fs::path("/xdg/kfleet/kernels"));
  }
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", "");
    ScopedEnv xdg("XDG_CACHE_HOME", "relative/ignored");
    EXPECT_EQ(DefaultKernelCacheDir(), fs::path("/home/someone/.cache/kfleet/kernels"));
  }
}

}  // namespace
}  // namespace kfleet::eval
