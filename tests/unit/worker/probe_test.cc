#include "worker/probe.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace kfleet::worker {
namespace {

using Strings = std::vector<std::string>;

std::filesystem::path DataDir() {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::filesystem::path(root != nullptr ? root : "tests/data") / "probe";
}

std::string Recorded(const std::string& name) {
  std::ifstream file(DataDir() / name, std::ios::binary);
  EXPECT_TRUE(file.good()) << "missing recording " << (DataDir() / name);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

bool AnyContains(const Strings& notes, std::string_view part) {
  return std::any_of(notes.begin(), notes.end(),
                     [&](const std::string& note) { return note.find(part) != std::string::npos; });
}

std::string Joined(const Strings& notes) {
  std::string text;
  for (const std::string& note : notes) text += note + "\n";
  return text;
}

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

// --- CPU ---------------------------------------------------------------------------------------

TEST(ParseCpuInfoTest, ThisMachine) {
  CpuInfo cpu =
      ParseCpuInfo(Recorded("cpuinfo_local_epyc_vm.txt"), Recorded("meminfo_local_epyc_vm.txt"));
  EXPECT_EQ(cpu.model, "AMD EPYC");
  EXPECT_EQ(cpu.cores, 2u);
  EXPECT_EQ(cpu.threads, 2u);
  EXPECT_EQ(cpu.memory_bytes, 24684092 * kKiB);
  EXPECT_EQ(cpu.arch, "x86-64-v4");
  EXPECT_EQ(cpu.features, (Strings{"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                   "avx512vl", "avx512_bf16"}));
}

TEST(ParseCpuInfoTest, TwoSocketEpycGenoaWithSmt) {
  CpuInfo cpu =
      ParseCpuInfo(Recorded("cpuinfo_epyc9124_2s.txt"), Recorded("meminfo_epyc9124_2s.txt"));
  EXPECT_EQ(cpu.model, "AMD EPYC 9124 16-Core Processor");
  EXPECT_EQ(cpu.cores, 32u);  // core ids repeat across sockets: pairs with the physical id count
  EXPECT_EQ(cpu.threads, 64u);
  EXPECT_EQ(cpu.memory_bytes, 395925292 * kKiB);
  EXPECT_EQ(cpu.arch, "x86-64-v4");
  EXPECT_EQ(cpu.features, (Strings{"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                                   "avx512vl", "avx512_bf16"}));
}

TEST(ParseCpuInfoTest, SapphireRapidsHasAmx) {
  CpuInfo cpu =
      ParseCpuInfo(Recorded("cpuinfo_xeon5415_spr.txt"), Recorded("meminfo_xeon5415_spr.txt"));
  EXPECT_EQ(cpu.model, "Intel(R) Xeon(R) Gold 5415+");
  EXPECT_EQ(cpu.cores, 8u);
  EXPECT_EQ(cpu.threads, 16u);
  EXPECT_EQ(cpu.memory_bytes, 263518812 * kKiB);
  EXPECT_EQ(cpu.arch, "x86-64-v4");
  EXPECT_EQ(cpu.features,
            (Strings{"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                     "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}));
}

TEST(ParseCpuInfoTest, GraceNeoverseV2) {
  CpuInfo cpu = ParseCpuInfo(Recorded("cpuinfo_grace_72c.txt"), Recorded("meminfo_grace_72c.txt"));
  EXPECT_EQ(cpu.model, "ARM Neoverse-V2");
  EXPECT_EQ(cpu.cores, 72u);
  EXPECT_EQ(cpu.threads, 72u);
  EXPECT_EQ(cpu.memory_bytes, 493196196 * kKiB);
  EXPECT_EQ(cpu.arch, "aarch64");
  EXPECT_EQ(cpu.features, (Strings{"asimd", "sve", "sve2", "bf16", "i8mm"}));
}

TEST(ParseCpuInfoTest, UnknownArmCoreNamesItsIds) {
  CpuInfo cpu = ParseCpuInfo(
      "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd99\n", "");
  EXPECT_EQ(cpu.model, "CPU implementer 0x41 part 0xd99");
  EXPECT_EQ(cpu.features, Strings{"asimd"});
}

TEST(ParseCpuInfoTest, EmptyAndMalformedInputGiveEmptyFields) {
  for (std::string_view cpuinfo :
       {std::string_view(""), std::string_view("\n\n"),
        std::string_view("no colon here\n:::\n: value\nprocessor\n"),
        std::string_view("flags\0: avx", 11), std::string_view("core id\t: 0\ncore id\t: 1\n")}) {
    CpuInfo cpu = ParseCpuInfo(cpuinfo, "MemTotal: lots\nMemFree:\n");
    EXPECT_EQ(cpu.threads, 0u) << cpuinfo;
    EXPECT_EQ(cpu.cores, 0u);
    EXPECT_EQ(cpu.memory_bytes, 0u);
    EXPECT_TRUE(cpu.model.empty());
    EXPECT_TRUE(cpu.arch.empty());
    EXPECT_TRUE(cpu.features.empty());
  }
}

TEST(ParseCpuInfoTest, TruncatedFileKeepsWhatItHas) {
  CpuInfo cpu = ParseCpuInfo("processor\t: 0\nmodel name\t: Some CPU\nprocessor\t: 1\nflags", "");
  EXPECT_EQ(cpu.threads, 2u);
  EXPECT_EQ(cpu.cores, 2u);
  EXPECT_EQ(cpu.model, "Some CPU");
  EXPECT_TRUE(cpu.arch.empty());
}

TEST(X86PsabiLevelTest, EachLevelNeedsAllItsFlags) {
  Strings v2 = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"};
  Strings v3 = v2;
  for (const char* flag : {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}) {
    v3.push_back(flag);
  }
  Strings v4 = v3;
  for (const char* flag : {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}) {
    v4.push_back(flag);
  }
  EXPECT_EQ(X86PsabiLevel({}), "x86-64");
  EXPECT_EQ(X86PsabiLevel({"fpu", "sse", "sse2", "lm"}), "x86-64");
  EXPECT_EQ(X86PsabiLevel(v2), "x86-64-v2");
  EXPECT_EQ(X86PsabiLevel(v3), "x86-64-v3");
  EXPECT_EQ(X86PsabiLevel(v4), "x86-64-v4");

  Strings v3_without_movbe = v4;
  std::erase(v3_without_movbe, "movbe");
  EXPECT_EQ(X86PsabiLevel(v3_without_movbe), "x86-64-v2");
  Strings v4_without_cd = v4;
  std::erase(v4_without_cd, "avx512cd");
  EXPECT_EQ(X86PsabiLevel(v4_without_cd), "x86-64-v3");
}

// --- NVIDIA ------------------------------------------------------------------------------------

TEST(ParseNvidiaSmiCsvTest, OneH200) {
  std::vector<GpuInfo> gpus = ParseNvidiaSmiCsv(Recorded("nvidia_smi_1x_h200.csv"));
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].backend, "cuda");
  EXPECT_EQ(gpus[0].index, 0u);
  EXPECT_EQ(gpus[0].name, "NVIDIA H200");
  EXPECT_EQ(gpus[0].arch, "sm_90");
  EXPECT_EQ(gpus[0].memory_bytes, 143771 * kMiB);
  EXPECT_EQ(gpus[0].compute_units, 0u);  // nvidia-smi does not report SMs
  EXPECT_EQ(gpus[0].clock_mhz, 1980u);
  EXPECT_EQ(gpus[0].memory_clock_mhz, 3201u);
  EXPECT_EQ(gpus[0].l2_bytes, 0u);  // nor L2 size and bus width: the driver API does
  EXPECT_EQ(gpus[0].memory_bus_bits, 0u);
  EXPECT_EQ(gpus[0].driver_version, "580.159.04");
}

TEST(ParseNvidiaSmiCsvTest, EightH200s) {
  std::vector<GpuInfo> gpus = ParseNvidiaSmiCsv(Recorded("nvidia_smi_8x_h200.csv"));
  ASSERT_EQ(gpus.size(), 8u);
  for (uint32_t i = 0; i < gpus.size(); ++i) {
    EXPECT_EQ(gpus[i].index, i);
    EXPECT_EQ(gpus[i].name, "NVIDIA H200");
    EXPECT_EQ(gpus[i].arch, "sm_90");
    EXPECT_EQ(gpus[i].memory_bytes, 143771 * kMiB);
  }
}

TEST(ParseNvidiaSmiCsvTest, NotAvailableFieldsAndCommasInNames) {
  std::vector<GpuInfo> gpus = ParseNvidiaSmiCsv(
      "0, NVIDIA A100-SXM4-80GB, 81920, 8.0, [N/A], [N/A], [N/A]\n"
      "1, Board, Rev 2, 1024, 12.0, 2100, 1750, 575.51.02\r\n");
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0].arch, "sm_80");
  EXPECT_EQ(gpus[0].clock_mhz, 0u);
  EXPECT_EQ(gpus[0].memory_clock_mhz, 0u);
  EXPECT_EQ(gpus[0].driver_version, "");
  EXPECT_EQ(gpus[1].name, "Board, Rev 2");
  EXPECT_EQ(gpus[1].arch, "sm_120");
  EXPECT_EQ(gpus[1].driver_version, "575.51.02");
}

TEST(ParseNvidiaSmiCsvTest, MalformedLinesAreSkipped) {
  EXPECT_TRUE(ParseNvidiaSmiCsv("").empty());
  EXPECT_TRUE(ParseNvidiaSmiCsv("\n\n").empty());
  EXPECT_TRUE(ParseNvidiaSmiCsv("NVIDIA-SMI has failed because it couldn't communicate with the "
                                "NVIDIA driver.")
                  .empty());
  EXPECT_TRUE(ParseNvidiaSmiCsv("index, name, memory.total [MiB], compute_cap, clocks.max.sm "
                                "[MHz], clocks.max.mem [MHz], driver_version")
                  .empty());
  EXPECT_TRUE(ParseNvidiaSmiCsv("0, NVIDIA H200, 143771").empty());
  std::vector<GpuInfo> gpus = ParseNvidiaSmiCsv("0, X, lots, nine, fast, slow, 1\n");
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].memory_bytes, 0u);
  EXPECT_EQ(gpus[0].arch, "");
}

// --- AMD ---------------------------------------------------------------------------------------

TEST(ParseRocminfoTest, Mi250xIsTwoGcds) {
  std::vector<GpuInfo> gpus = ParseRocminfo(Recorded("rocminfo_mi250x.txt"));
  ASSERT_EQ(gpus.size(), 2u);
  for (uint32_t i = 0; i < 2; ++i) {
    EXPECT_EQ(gpus[i].backend, "hip");
    EXPECT_EQ(gpus[i].index, i);
    EXPECT_EQ(gpus[i].name, "AMD Instinct MI250X");
    EXPECT_EQ(gpus[i].arch, "gfx90a");
    EXPECT_EQ(gpus[i].compute_units, 110u);
    EXPECT_EQ(gpus[i].clock_mhz, 1700u);
    EXPECT_EQ(gpus[i].memory_bytes, 67092480 * kKiB);
    EXPECT_EQ(gpus[i].memory_clock_mhz, 0u);
    EXPECT_EQ(gpus[i].driver_version, "");  // ROCm 5 prints no module version
  }
}

TEST(ParseRocminfoTest, Mi300xAfterTwoCpuAgents) {
  std::vector<GpuInfo> gpus = ParseRocminfo(Recorded("rocminfo_mi300x.txt"));
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].index, 0u);
  EXPECT_EQ(gpus[0].name, "AMD Instinct MI300X");
  EXPECT_EQ(gpus[0].arch, "gfx942");
  EXPECT_EQ(gpus[0].compute_units, 304u);
  EXPECT_EQ(gpus[0].clock_mhz, 2100u);
  EXPECT_EQ(gpus[0].memory_bytes, 201310208 * kKiB);
  EXPECT_EQ(gpus[0].driver_version, "6.8.5");
}

TEST(ParseRocminfoTest, ArchFromIsaWhenTheAgentNameIsNotATarget) {
  std::vector<GpuInfo> gpus = ParseRocminfo(
      "*******\nAgent 1\n*******\n  Name:                    AMD Radeon Graphics\n"
      "  Device Type:             GPU\n  ISA Info:\n    ISA 1\n"
      "      Name:                    amdgcn-amd-amdhsa--gfx1103\n");
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].name, "AMD Radeon Graphics");
  EXPECT_EQ(gpus[0].arch, "gfx1103");
}

TEST(ParseRocminfoTest, NoGpuAgentsOrGarbage) {
  std::string mi250x = Recorded("rocminfo_mi250x.txt");
  std::string cpu_only = mi250x.substr(0, mi250x.find("Agent 2"));
  EXPECT_TRUE(ParseRocminfo(cpu_only).empty());
  EXPECT_TRUE(ParseRocminfo("").empty());
  EXPECT_TRUE(ParseRocminfo("ROCk module is NOT loaded, possibly no GPU devices\n").empty());
  EXPECT_EQ(ParseRocminfo("Agent 1\nDevice Type: GPU").size(), 1u);
  EXPECT_TRUE(ParseRocminfo("Device Type: GPU\nSize: 5 KB\n").empty());  // outside any agent
}

// --- Toolchains --------------------------------------------------------------------------------

TEST(ParseToolchainVersionTest, RecordedOutputs) {
  EXPECT_EQ(ParseToolchainVersion("g++", Recorded("version_gxx_debian12.txt")), "12.2.0");
  EXPECT_EQ(ParseToolchainVersion("c++", Recorded("version_gxx_debian12.txt")), "12.2.0");
  EXPECT_EQ(ParseToolchainVersion("clang++", Recorded("version_clangxx_debian12.txt")), "14.0.6");
  EXPECT_EQ(ParseToolchainVersion("c++", Recorded("version_clangxx_debian12.txt")), "14.0.6");
  EXPECT_EQ(ParseToolchainVersion("nvcc", Recorded("version_nvcc_13.0.txt")), "13.0.88");
  EXPECT_EQ(ParseToolchainVersion("hipcc", Recorded("version_hipcc_debian12.txt")), "5.2.21153");
}

TEST(ParseToolchainVersionTest, OtherDistributionsFirstLines) {
  EXPECT_EQ(ParseToolchainVersion("g++", "g++ (GCC) 14.2.1 20250110 (Red Hat 14.2.1-7)\n"),
            "14.2.1");
  EXPECT_EQ(ParseToolchainVersion("g++", "g++ (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0\n"), "11.4.0");
  EXPECT_EQ(ParseToolchainVersion("g++", "g++-13 13.3.0\n"), "13.3.0");
  EXPECT_EQ(ParseToolchainVersion("clang++", "Ubuntu clang version 18.1.3 (1ubuntu1)\n"), "18.1.3");
  EXPECT_EQ(ParseToolchainVersion("hipcc",
                                  "HIP version: 6.2.41133-dd7f95766\nAMD clang version "
                                  "18.0.0git\n"),
            "6.2.41133");
  EXPECT_EQ(ParseToolchainVersion("nvcc", "Cuda compilation tools, release 12.4\n"), "12.4");
}

TEST(ParseToolchainVersionTest, NoVersionGivesEmpty) {
  for (std::string_view name : {"g++", "clang++", "nvcc", "hipcc"}) {
    EXPECT_EQ(ParseToolchainVersion(name, ""), "") << name;
    EXPECT_EQ(ParseToolchainVersion(name, "command not found\n"), "") << name;
    EXPECT_EQ(ParseToolchainVersion(name, "(((((\n)))) . .. 1\n"), "") << name;
  }
  EXPECT_EQ(ParseToolchainVersion("nvcc", "Cuda compilation tools, release , V\n"), "");
  EXPECT_EQ(ParseToolchainVersion("hipcc", "HIP version:"), "");
}

// --- Running programs and finding them ---------------------------------------------------------

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kfleet-probe-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::string& name, const std::string& text, int mode = 0644) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    ASSERT_EQ(::chmod((dir_ / name).c_str(), static_cast<mode_t>(mode)), 0);
  }

  std::filesystem::path dir_;
};

TEST(SystemCommandRunnerTest, PassesArgumentsVerbatim) {
  SystemCommandRunner runner;
  Result<std::string> output = runner.Run({"/bin/echo", "it's", "a $HOME; test"}, 5000);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  EXPECT_EQ(*output, "it's a $HOME; test\n");
}

TEST(SystemCommandRunnerTest, FailuresSayWhy) {
  SystemCommandRunner runner;
  Result<std::string> failed = runner.Run({"/bin/sh", "-c", "echo oops; echo more; exit 3"}, 5000);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(failed.status().message().find("exited with 3: oops"), std::string::npos)
      << failed.status().message();

  Result<std::string> missing = runner.Run({"/nonexistent/kfleet-tool", "--version"}, 5000);
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);

  EXPECT_EQ(runner.Run({}, 5000).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(runner.Run({"/bin/true"}, 0).status().code(), ErrorCode::kInvalidArgument);
}

TEST(SystemCommandRunnerTest, StopsAProgramAtItsTimeout) {
  SystemCommandRunner runner;
  auto start = std::chrono::steady_clock::now();
  Result<std::string> slow = runner.Run({"/bin/sleep", "10"}, 200);
  EXPECT_EQ(slow.status().code(), ErrorCode::kDeadlineExceeded) << slow.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

using FindExecutableTest = TempDirTest;

TEST_F(FindExecutableTest, OnlyExecutableRegularFiles) {
  std::filesystem::create_directories(dir_ / "a" / "nvcc");  // a directory, not a program
  std::filesystem::create_directories(dir_ / "b");
  std::filesystem::create_directories(dir_ / "c");
  WriteFile("b/nvcc", "", 0644);  // not executable
  WriteFile("c/nvcc", "#!/bin/sh\n", 0755);
  Strings dirs = {(dir_ / "missing").string(), (dir_ / "a").string(), (dir_ / "b").string(),
                  (dir_ / "c").string()};
  EXPECT_EQ(FindExecutable("nvcc", dirs), (dir_ / "c" / "nvcc").string());
  EXPECT_EQ(FindExecutable("hipcc", dirs), "");
  EXPECT_EQ(FindExecutable("nvcc", {}), "");
}

TEST(ToolSearchDirsTest, ExplicitDirsOrPathThenVendorDirs) {
  ProbeOptions options;
  options.tool_dirs = {"/x", "/y"};
  EXPECT_EQ(ToolSearchDirs(options), (Strings{"/x", "/y"}));
  options.tool_dirs.clear();
  Strings dirs = ToolSearchDirs(options);
  ASSERT_GE(dirs.size(), 2u);
  EXPECT_EQ(dirs[dirs.size() - 2], "/usr/local/cuda/bin");
  EXPECT_EQ(dirs.back(), "/opt/rocm/bin");
}

// --- ProbeNode ---------------------------------------------------------------------------------

// Plays back recorded output by program name, the way each tool would print it.
class RecordedRunner : public CommandRunner {
 public:
  std::map<std::string, Result<std::string>> outputs;  // by the program's file name
  Strings ran;

  Result<std::string> Run(const std::vector<std::string>& argv, int /*timeout_ms*/) override {
    std::string program = std::filesystem::path(argv.at(0)).filename().string();
    ran.push_back(program);
    auto it = outputs.find(program);
    if (it == outputs.end()) return NotFound(program + ": not recorded");
    return it->second;
  }
};

class ProbeNodeTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    std::filesystem::create_directories(dir_ / "proc");
    std::filesystem::create_directories(dir_ / "bin");
    for (const char* tool : {"nvidia-smi", "rocminfo", "g++", "nvcc", "hipcc"}) {
      WriteFile(std::string("bin/") + tool, "#!/bin/sh\nexit 1\n", 0755);
    }
    options_.proc_dir = dir_ / "proc";
    options_.tool_dirs = {(dir_ / "bin").string()};
    options_.cuda_driver_library = "";  // forces the nvidia-smi fallback
    options_.hip_runtime_libraries = {};
    options_.runner = &runner_;
  }

  RecordedRunner runner_;
  ProbeOptions options_;
};

TEST_F(ProbeNodeTest, RecordedNodeWithNvidiaAndAmdGpus) {
  WriteFile("proc/cpuinfo", Recorded("cpuinfo_xeon5415_spr.txt"));
  WriteFile("proc/meminfo", Recorded("meminfo_xeon5415_spr.txt"));
  runner_.outputs.emplace("nvidia-smi", Recorded("nvidia_smi_8x_h200.csv"));
  runner_.outputs.emplace("rocminfo", Recorded("rocminfo_mi300x.txt"));
  runner_.outputs.emplace("g++", Recorded("version_gxx_debian12.txt"));
  runner_.outputs.emplace("nvcc", Recorded("version_nvcc_13.0.txt"));
  runner_.outputs.emplace("hipcc", Recorded("version_hipcc_debian12.txt"));

  NodeProbe probe = ProbeNode(options_);
  EXPECT_FALSE(probe.hostname.empty());
  EXPECT_EQ(probe.cpu.model, "Intel(R) Xeon(R) Gold 5415+");
  EXPECT_EQ(probe.cpu.threads, 16u);
  ASSERT_EQ(probe.gpus.size(), 9u);
  EXPECT_EQ(probe.gpus[7].backend, "cuda");
  EXPECT_EQ(probe.gpus[7].index, 7u);
  EXPECT_EQ(probe.gpus[8].backend, "hip");
  EXPECT_EQ(probe.gpus[8].index, 0u);
  EXPECT_EQ(probe.gpus[8].arch, "gfx942");
  ASSERT_EQ(probe.toolchains.size(), 3u);
  EXPECT_EQ(probe.toolchains[0].name, "g++");
  EXPECT_EQ(probe.toolchains[0].version, "12.2.0");
  EXPECT_EQ(probe.toolchains[0].path, (dir_ / "bin" / "g++").string());
  EXPECT_EQ(probe.toolchains[1].name, "nvcc");
  EXPECT_EQ(probe.toolchains[1].version, "13.0.88");
  EXPECT_EQ(probe.toolchains[2].name, "hipcc");
  EXPECT_EQ(probe.toolchains[2].version, "5.2.21153");
  EXPECT_TRUE(AnyContains(probe.notes, "described by nvidia-smi")) << Joined(probe.notes);
  EXPECT_EQ(probe.notes.size(), 1u) << Joined(probe.notes);
}

TEST_F(ProbeNodeTest, EveryFailureBecomesANote) {
  runner_.outputs.emplace("nvidia-smi", Unavailable("nvidia-smi: exit status 9: NVIDIA-SMI has "
                                                    "failed"));
  runner_.outputs.emplace("rocminfo", DeadlineExceeded("rocminfo: still running after 10000 ms"));
  runner_.outputs.emplace("g++", "no version here\n");
  // nvcc and hipcc have no recording: the runner fails for them.

  NodeProbe probe = ProbeNode(options_);  // proc/cpuinfo and proc/meminfo are missing
  EXPECT_GE(probe.cpu.threads, 1u);
  EXPECT_EQ(probe.cpu.cores, probe.cpu.threads);
  EXPECT_GT(probe.cpu.memory_bytes, 0u);
  EXPECT_FALSE(probe.cpu.arch.empty());
  EXPECT_TRUE(probe.gpus.empty());
  ASSERT_EQ(probe.toolchains.size(), 1u);
  EXPECT_EQ(probe.toolchains[0].version, "");
  const Strings& notes = probe.notes;
  EXPECT_TRUE(AnyContains(notes, "thread count from sysconf")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "memory size from sysconf")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "NVIDIA-SMI has failed")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "still running after")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "toolchain g++: no version")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "toolchain nvcc left out")) << Joined(notes);
  EXPECT_TRUE(AnyContains(notes, "toolchain hipcc left out")) << Joined(notes);
}

TEST_F(ProbeNodeTest, NoGpuToolsAtAll) {
  std::filesystem::remove(dir_ / "bin" / "nvidia-smi");
  std::filesystem::remove(dir_ / "bin" / "rocminfo");
  options_.cuda_driver_library = "libkfleet-no-such-cuda.so.1";
  options_.hip_runtime_libraries = {"libkfleet-no-such-hip.so"};
  options_.probe_toolchains = false;
  NodeProbe probe = ProbeNode(options_);
  EXPECT_TRUE(probe.gpus.empty());
  EXPECT_TRUE(probe.toolchains.empty());
  EXPECT_TRUE(runner_.ran.empty()) << "nothing to run without tools";
  EXPECT_TRUE(AnyContains(probe.notes, "libkfleet-no-such-cuda.so.1")) << Joined(probe.notes);
  EXPECT_TRUE(AnyContains(probe.notes, "nvidia-smi was not found")) << Joined(probe.notes);
  EXPECT_TRUE(AnyContains(probe.notes, "rocminfo not found")) << Joined(probe.notes);
  EXPECT_TRUE(AnyContains(probe.notes, "libkfleet-no-such-hip.so")) << Joined(probe.notes);
}

// The real machine, whatever it has: results must hang together, and a missing GPU is explained.
TEST(ProbeNodeLiveTest, ThisMachineIsSelfConsistent) {
  NodeProbe probe = ProbeNode(ProbeOptions{});
  EXPECT_FALSE(probe.hostname.empty());
  EXPECT_GE(probe.cpu.cores, 1u);
  EXPECT_GE(probe.cpu.threads, probe.cpu.cores);
  EXPECT_GT(probe.cpu.memory_bytes, 0u);
  EXPECT_FALSE(probe.cpu.arch.empty());
  bool has_cuda = false;
  bool has_hip = false;
  for (const GpuInfo& gpu : probe.gpus) {
    has_cuda |= gpu.backend == "cuda";
    has_hip |= gpu.backend == "hip";
    EXPECT_FALSE(gpu.name.empty());
    EXPECT_GT(gpu.memory_bytes, 0u) << gpu.name;
  }
  if (!has_cuda) {
    EXPECT_TRUE(AnyContains(probe.notes, "cuda: ")) << Joined(probe.notes);
  }
  if (!has_hip) {
    EXPECT_TRUE(AnyContains(probe.notes, "hip: ")) << Joined(probe.notes);
  }
  for (const ToolchainInfo& toolchain : probe.toolchains) {
    EXPECT_TRUE(std::filesystem::exists(toolchain.path)) << toolchain.path;
  }
}

// On a machine with an NVIDIA driver, the probe must see exactly the GPUs nvidia-smi lists.
TEST(ProbeNodeLiveTest, FindsEveryNvidiaGpuTheDriverReports) {
  ProbeOptions options;
  const std::string smi = FindExecutable("nvidia-smi", ToolSearchDirs(options));
  if (smi.empty() || !std::filesystem::exists("/dev/nvidiactl")) {
    GTEST_SKIP() << "no NVIDIA GPU on this machine (no nvidia-smi or /dev/nvidiactl)";
  }
  SystemCommandRunner runner;
  Result<std::string> listed = runner.Run(
      {smi, "--query-gpu=index,name,memory.total,compute_cap,clocks.max.sm,clocks.max.mem,"
            "driver_version",
       "--format=csv,noheader,nounits"},
      20'000);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  const std::vector<GpuInfo> expected = ParseNvidiaSmiCsv(*listed);
  ASSERT_FALSE(expected.empty()) << *listed;

  NodeProbe probe = ProbeNode(options);
  std::vector<GpuInfo> found;
  for (const GpuInfo& gpu : probe.gpus) {
    if (gpu.backend == "cuda") found.push_back(gpu);
  }
  ASSERT_EQ(found.size(), expected.size()) << Joined(probe.notes);
  for (size_t i = 0; i < found.size(); ++i) {
    EXPECT_EQ(found[i].arch, expected[i].arch) << found[i].name;
    EXPECT_EQ(found[i].arch.rfind("sm_", 0), 0u) << found[i].arch;
    EXPECT_GT(found[i].compute_units, 0u) << "the driver API reports SM counts";
    EXPECT_GE(found[i].l2_bytes, uint64_t{1} << 20) << "and L2 sizes";
    EXPECT_GE(found[i].memory_bus_bits, 64u) << "and memory bus widths";
    EXPECT_GT(found[i].memory_bytes, uint64_t{1} << 30);
    EXPECT_NE(found[i].name.find("NVIDIA"), std::string::npos) << found[i].name;
  }
}

}  // namespace
}  // namespace kfleet::worker
