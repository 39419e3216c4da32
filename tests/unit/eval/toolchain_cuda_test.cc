// The CUDA toolchain: flags and the ptxas report everywhere; real nvcc compiles where nvcc is
// installed (no GPU needed: nothing here launches a kernel).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "eval/toolchain.h"

namespace kfleet::eval {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

// out0 = 2 * in0 through a shared-memory tile, launched on the harness's stream.
constexpr const char* kScaleSource = R"(#include "kfleet/kernel.h"
#include <cuda_runtime.h>

template <int kBlock>
__global__ void Scale(const float* in, float* out, int64_t n) {
  __shared__ float tile[kBlock];
  const int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x;
  tile[threadIdx.x] = i < n ? in[i] : 0.0f;
  __syncthreads();
  if (i < n) out[i] = 2.0f * tile[threadIdx.x];
}

int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                  void* stream) {
  if (n_in != 1 || n_out != 1) return KF_ERR_INVALID_ARGUMENT;
  int64_t n = 1;
  for (int32_t d = 0; d < in[0].ndim; ++d) n *= in[0].shape[d];
  Scale<256><<<(n + 255) / 256, 256, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const float*>(in[0].data), static_cast<float*>(out[0].data), n);
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}
)";

// Line 3 names an undeclared variable.
constexpr const char* kSyntaxErrorSource = R"(#include "kfleet/kernel.h"
int kf_kernel_run(const kf_tensor*, int32_t, kf_tensor*, int32_t, void*) {
  return undeclared_status;
}
)";

// The CUDA runtime the kernel loads keeps threads and atexit handlers: it stays mapped.
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE;

bool Contains(const Strings& flags, const std::string& flag) {
  return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

// Sets KFLEET_CUDA_HOME for one test (unset for a null `home`) and puts it back afterwards.
class CudaHomeTest : public ::testing::Test {
 protected:
  void SetCudaHome(const char* home) {
    if (const char* old = std::getenv("KFLEET_CUDA_HOME"); old != nullptr && !saved_) saved_ = old;
    touched_ = true;
    ASSERT_EQ(home == nullptr ? unsetenv("KFLEET_CUDA_HOME") : setenv("KFLEET_CUDA_HOME", home, 1),
              0);
  }
  void TearDown() override {
    if (!touched_) return;
    EXPECT_EQ(
        saved_ ? setenv("KFLEET_CUDA_HOME", saved_->c_str(), 1) : unsetenv("KFLEET_CUDA_HOME"), 0);
  }

 private:
  bool touched_ = false;
  std::optional<std::string> saved_;
};

class CudaToolchainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-cuda-toolchain-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    cache_.emplace(std::move(dir).value());
    Result<std::unique_ptr<Toolchain>> toolchain = MakeCudaToolchain(Options());
    if (!toolchain.ok() && toolchain.status().code() == ErrorCode::kNotFound) {
      GTEST_SKIP() << "no CUDA compiler on this machine: " << toolchain.status().message();
    }
    ASSERT_TRUE(toolchain.ok()) << toolchain.status().ToString();
    toolchain_ = std::move(toolchain).value();
  }

  CompileOptions Options() const {
    CompileOptions options = CudaCompileOptions("sm_90");
    options.cache_dir = cache_->path();
    return options;
  }

  CompiledKernel MustCompile(Toolchain& toolchain, std::string_view source) {
    Result<CompiledKernel> kernel = toolchain.Compile(source);
    EXPECT_TRUE(kernel.ok()) << kernel.status().ToString();
    return kernel.ok() ? std::move(kernel).value() : CompiledKernel{};
  }

  std::optional<TempDir> cache_;
  std::unique_ptr<Toolchain> toolchain_;
};

TEST_F(CudaToolchainTest, CompiledKernelLoadsWithoutAGpu) {
  EXPECT_TRUE(toolchain_->name().starts_with("nvcc ")) << toolchain_->name();
  CompiledKernel kernel = MustCompile(*toolchain_, kScaleSource);
  ASSERT_TRUE(kernel.ok) << kernel.log;
  EXPECT_FALSE(kernel.cache_hit);
  EXPECT_EQ(kernel.library, cache_->path() / kernel.key / "kernel.so");
  EXPECT_TRUE(fs::exists(cache_->path() / kernel.key / "kernel.cu"));
  EXPECT_NE(kernel.command.find("nvcc -Iinclude kernel.cu -o kernel.so -O3"), std::string::npos)
      << kernel.command;
  EXPECT_NE(kernel.command.find("arch=compute_90a,code=sm_90a"), std::string::npos)
      << kernel.command;
  // The log keeps ptxas' report; the summary names the kernel and its shared-memory tile.
  EXPECT_NE(kernel.log.find("ptxas info    : Used "), std::string::npos) << kernel.log;
  EXPECT_TRUE(kernel.resources.starts_with("Scale<256>: ")) << kernel.resources;
  EXPECT_NE(kernel.resources.find(" registers, 0 spill bytes, 1024 smem bytes"), std::string::npos)
      << kernel.resources;

  // cudart reaches for the driver only on the first CUDA call, so this loads without a GPU.
  void* library = dlopen(kernel.library.c_str(), kDlopenFlags);
  ASSERT_NE(library, nullptr) << dlerror();
  EXPECT_NE(dlsym(library, "kf_kernel_run"), nullptr) << dlerror();
  EXPECT_EQ(dlclose(library), 0);
}

TEST_F(CudaToolchainTest, SecondCompileIsACacheHit) {
  CompiledKernel first = MustCompile(*toolchain_, kScaleSource);
  ASSERT_TRUE(first.ok) << first.log;

  // A new toolchain stands for another process using the same cache.
  Result<std::unique_ptr<Toolchain>> again = MakeCudaToolchain(Options());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  CompiledKernel second = MustCompile(**again, kScaleSource);
  EXPECT_TRUE(second.cache_hit);
  EXPECT_EQ(second.library, first.library);
  // Read back from the cached log (the cache itself is the CPU toolchain's, tested there).
  EXPECT_EQ(second.resources, first.resources);
}

TEST_F(CudaToolchainTest, OtherArchGivesANewKey) {
  CompiledKernel hopper = MustCompile(*toolchain_, kScaleSource);
  CompileOptions ampere_options = CudaCompileOptions("sm_80");
  ampere_options.cache_dir = cache_->path();
  Result<std::unique_ptr<Toolchain>> ampere = MakeCudaToolchain(ampere_options);
  ASSERT_TRUE(ampere.ok()) << ampere.status().ToString();
  CompiledKernel older = MustCompile(**ampere, kScaleSource);
  EXPECT_TRUE(hopper.ok && older.ok) << older.log;
  EXPECT_FALSE(older.cache_hit);
  EXPECT_NE(older.key, hopper.key);
}

TEST_F(CudaToolchainTest, SyntaxErrorGivesNvccsMessage) {
  CompiledKernel broken = MustCompile(*toolchain_, kSyntaxErrorSource);
  EXPECT_FALSE(broken.ok);
  EXPECT_NE(broken.log.find("kernel.cu(3): error: identifier \"undeclared_status\" is undefined"),
            std::string::npos)
      << broken.log;
  EXPECT_EQ(broken.resources, "");
  EXPECT_TRUE(MustCompile(*toolchain_, kSyntaxErrorSource).cache_hit);
}

TEST(DefaultCudaFlags, HopperGetsTheArchSpecificVariantAndPtx) {
  const Strings flags = DefaultCudaFlags("sm_90");
  ASSERT_GE(flags.size(), 11u);
  EXPECT_EQ(Strings(flags.begin(), flags.begin() + 11),
            (Strings{"-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-gencode",
                     "arch=compute_90a,code=sm_90a", "-gencode", "arch=compute_90,code=compute_90",
                     "-Xptxas", "-v"}));
  EXPECT_EQ(Strings(flags.end() - 4, flags.end()),
            (Strings{"-lcublasLt", "-lcublas", "-lcudnn", "--cudart=shared"}));
  EXPECT_TRUE(Contains(DefaultCudaFlags("sm_100"), "arch=compute_100a,code=sm_100a"));
  EXPECT_TRUE(Contains(DefaultCudaFlags("sm_120"), "arch=compute_120,code=compute_120"));
  // An arch that already names its variant is taken as it is.
  EXPECT_TRUE(Contains(DefaultCudaFlags("sm_90a"), "arch=compute_90a,code=sm_90a"));
  EXPECT_TRUE(Contains(DefaultCudaFlags("sm_90a"), "arch=compute_90,code=compute_90"));
}

TEST(DefaultCudaFlags, NoArchSpecificVariantBeforeHopper) {
  for (const char* arch : {"sm_80", "sm_89"}) {
    const std::string number = std::string(arch).substr(3);
    const Strings flags = DefaultCudaFlags(arch);
    EXPECT_TRUE(Contains(flags, "arch=compute_" + number + ",code=sm_" + number)) << arch;
    EXPECT_TRUE(Contains(flags, "arch=compute_" + number + ",code=compute_" + number)) << arch;
    for (const std::string& flag : flags) {
      EXPECT_EQ(flag.find(number + "a"), std::string::npos) << flag;
    }
  }
}

TEST(DefaultCudaFlags, UnknownArchIsLeftForNvccToReject) {
  EXPECT_TRUE(Contains(DefaultCudaFlags("gfx90a"), "--gpu-architecture=gfx90a"));
}

TEST_F(CudaHomeTest, KfleetCudaHomeOverridesTheToolkit) {
  Result<TempDir> home = TempDir::Create("kfleet-cuda-home");
  ASSERT_TRUE(home.ok()) << home.status().ToString();
  fs::create_directories(home->path() / "lib64");
  SetCudaHome(home->path().c_str());
  const std::string lib64 = (home->path() / "lib64").string();
  const Strings flags = DefaultCudaFlags("sm_90");
  EXPECT_TRUE(Contains(flags, "-I" + (home->path() / "include").string()));
  EXPECT_TRUE(Contains(flags, "-L" + lib64));
  EXPECT_TRUE(Contains(flags, "-rpath=" + lib64));

  // A toolkit without nvcc, and none in PATH or the build's CUDA: the error says where it looked.
  CompileOptions options = CudaCompileOptions("sm_90");
  options.compiler = "kfleet-no-such-nvcc";
  Result<std::unique_ptr<Toolchain>> toolchain = MakeCudaToolchain(options);
  ASSERT_FALSE(toolchain.ok());
  EXPECT_EQ(toolchain.status().code(), ErrorCode::kNotFound);
  const std::string& message = toolchain.status().message();
  EXPECT_NE(message.find("tried " + (home->path() / "bin" / "kfleet-no-such-nvcc").string() +
                         ", kfleet-no-such-nvcc in PATH, "),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("KFLEET_CUDA_HOME"), std::string::npos) << message;
}

TEST_F(CudaHomeTest, WithoutKfleetCudaHomeTheBuildsToolkitIsUsed) {
  SetCudaHome(nullptr);
  const Strings flags = DefaultCudaFlags("sm_90");
  const auto library_dir = std::find_if(
      flags.begin(), flags.end(), [](const std::string& flag) { return flag.starts_with("-L"); });
  ASSERT_NE(library_dir, flags.end());
  EXPECT_TRUE(Contains(flags, "-rpath=" + library_dir->substr(2)));
  EXPECT_TRUE(std::any_of(flags.begin(), flags.end(),
                          [](const std::string& flag) { return flag.starts_with("-I/"); }));
}

// nvcc 13.0's output (-Xptxas -v; -maxrregcount=24 for the stack), its entry's spill counts made
// non-zero, with a non-inlined device function whose own spills are not the kernel's.
constexpr const char* kPtxasReport =
    R"(ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z6SpillyPKfPfi' for 'sm_90a'
ptxas info    : Function properties for _Z6SpillyPKfPfi
    416 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 24 registers, used 0 barriers, 416 bytes cumulative stack size
ptxas info    : Compile time = 74.789 ms
ptxas info    : Function properties for _Z6HelperPKfi
    0 bytes stack frame, 244 bytes spill stores, 300 bytes spill loads
ptxas info    : Compiling entry function '_Z5ScaleILi256EEvPKfPfl' for 'sm_90a'
ptxas info    : Function properties for _Z5ScaleILi256EEvPKfPfl
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 16384 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'plain_c' for 'sm_90a'
ptxas info    : Function properties for plain_c
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 10 registers, used 0 barriers
)";

TEST(SummarizePtxasReport, OneEntryPerKernel) {
  EXPECT_EQ(SummarizePtxasReport(kPtxasReport),
            "Spilly: 24 registers, 20 spill bytes, 0 smem bytes; "
            "Scale<256>: 40 registers, 0 spill bytes, 16384 smem bytes; "
            "plain_c: 10 registers, 0 spill bytes, 0 smem bytes");
}

TEST(SummarizePtxasReport, EmptyWithoutAReport) {
  EXPECT_EQ(SummarizePtxasReport(""), "");
  EXPECT_EQ(SummarizePtxasReport("kernel.cpp:3:10: error: 'x' was not declared in this scope\n"),
            "");
  EXPECT_EQ(SummarizePtxasReport("ptxas info    : 0 bytes gmem\nUsed 3 registers\n"), "");
}

}  // namespace
}  // namespace kfleet::eval
