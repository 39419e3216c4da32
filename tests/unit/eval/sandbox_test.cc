#include "eval/sandbox.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <optional>
#include <string>

#include "common/files.h"
#include "common/subprocess.h"
#include "common/temp_dir.h"
#include "tests/test_binaries.h"

namespace kfleet::eval {
namespace {

// Runs sandbox_probe ACTION in a fresh temp dir; the sandbox applies to the probe, not the test.
class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-sandbox-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
  }

  ProcessResult Probe(const std::string& action) {
    ProcessSpec spec;
    spec.argv = {kfleet::testing::TestBinary("sandbox_probe", KFLEET_SANDBOX_PROBE), action};
    spec.cwd = dir_->path();
    spec.timeout_ms = 60000;
    Result<ProcessResult> result = SystemProcessRunner().Run(spec);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    return result.ok() ? std::move(result).value() : ProcessResult{};
  }

  void ExpectAllowed(const std::string& action) {
    ProcessResult result = Probe(action);
    EXPECT_TRUE(result.Succeeded()) << action << ": " << result.Describe() << "\n"
                                    << result.stderr_bytes;
    EXPECT_EQ(result.stderr_bytes, "") << action;
  }

  void ExpectBlocked(const std::string& action, const std::string& message) {
    ProcessResult result = Probe(action);
    EXPECT_EQ(result.term_signal, 0) << action << ": " << result.Describe();
    EXPECT_EQ(result.exit_code, kSandboxViolationExitCode) << action << ": " << result.stderr_bytes;
    EXPECT_EQ(result.stderr_bytes, message) << action;
  }

  std::optional<TempDir> dir_;
};

TEST_F(SandboxTest, BlocksInetSocketsAndNamesTheFamily) {
  ExpectBlocked("inet-socket", "sandbox: blocked system call socket(family=2)\n");
}

TEST_F(SandboxTest, AllowsUnixSockets) { ExpectAllowed("unix-socket"); }

// glibc's fork() is clone(CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD).
TEST_F(SandboxTest, BlocksFork) {
  ExpectBlocked("fork", "sandbox: blocked system call clone(flags=0x1200011)\n");
}

// posix_spawn tries clone3 first; the ENOSYS sends it to clone(CLONE_VM | CLONE_VFORK), which it
// calls with every signal blocked. The kernel then kills with SIGSYS instead of running the
// handler, so there is no report line.
TEST_F(SandboxTest, BlocksPosixSpawnWithoutAReport) {
  ProcessResult result = Probe("spawn");
  EXPECT_EQ(result.term_signal, SIGSYS) << result.Describe() << "\n" << result.stderr_bytes;
  EXPECT_FALSE(result.core_dumped);
  EXPECT_EQ(result.stderr_bytes, "");
}

TEST_F(SandboxTest, BlocksExec) { ExpectBlocked("exec", "sandbox: blocked system call execve\n"); }

TEST_F(SandboxTest, Clone3FailsWithEnosys) { ExpectAllowed("clone3"); }

TEST_F(SandboxTest, AllowsThreadsAndOpenMp) { ExpectAllowed("threads"); }

TEST_F(SandboxTest, AllowsThreadedOpenBlas) { ExpectAllowed("openblas"); }

TEST_F(SandboxTest, AllowsWritingFilesInTheWorkingDirectory) {
  ExpectAllowed("file-write");
  Result<std::string> written = ReadFile(dir_->path() / "probe-output.txt");
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(*written, "written in the sandbox\n");
}

TEST_F(SandboxTest, DisablesCoreDumps) { ExpectAllowed("core-limit"); }

TEST(EnterSandbox, RejectsANegativeReportFd) {
  EXPECT_EQ(EnterSandbox(-1).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::eval
