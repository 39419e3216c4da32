#include "common/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace kfleet {
namespace {

ProcessSpec Shell(std::string script) {
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", std::move(script)};
  return spec;
}

ProcessResult MustRun(const ProcessSpec& spec, const std::atomic<bool>* cancel = nullptr) {
  Result<ProcessResult> result = SystemProcessRunner().Run(spec, cancel);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return result.ok() ? std::move(result).value() : ProcessResult{};
}

// Gone or a zombie: the container's init may never reap orphans reparented to it.
bool IsDead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) return true;
  char state = line[paren + 2];
  return state == 'Z' || state == 'X';
}

// The soft and hard values of one row of /proc/self/limits as the child sees them, e.g.
// "Max processes" -> "50 50"; dash's ulimit has no -u, so the test reads the kernel's table.
std::string ChildLimit(const ProcessSpec& limits_from, const std::string& row) {
  ProcessSpec spec = limits_from;
  spec.argv = {"grep", "^" + row + " ", "/proc/self/limits"};
  Result<ProcessResult> result = SystemProcessRunner().Run(spec);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  if (!result.ok()) return "";
  std::istringstream fields(result->stdout_bytes.substr(row.size()));
  std::string soft;
  std::string hard;
  fields >> soft >> hard;
  return soft + " " + hard;
}

bool BecomesDead(pid_t pid, std::chrono::milliseconds within) {
  auto deadline = std::chrono::steady_clock::now() + within;
  while (!IsDead(pid)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int CountOpenFds() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

class SubprocessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "kfleet-subprocess-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = std::filesystem::canonical(pattern);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(SubprocessTest, ReportsExitCodesAndUsage) {
  ProcessResult ok = MustRun(Shell("exit 0"));
  EXPECT_TRUE(ok.Succeeded());
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_GT(ok.max_rss_kb, 0);

  ProcessResult three = MustRun(Shell("exit 3"));
  EXPECT_FALSE(three.Succeeded());
  EXPECT_EQ(three.exit_code, 3);
  EXPECT_EQ(three.term_signal, 0);
  EXPECT_EQ(three.Describe(), "exited with 3");
}

TEST_F(SubprocessTest, CapturesStdoutAndStderrSeparately) {
  ProcessResult result = MustRun(Shell("echo out; echo err >&2; printf 'a\\0b'"));
  EXPECT_EQ(result.stdout_bytes, std::string("out\na\0b", 7));
  EXPECT_EQ(result.stderr_bytes, "err\n");
  EXPECT_FALSE(result.stdout_truncated);
}

TEST_F(SubprocessTest, StdinRoundTripsThroughCat) {
  ProcessSpec spec;
  spec.argv = {"cat"};
  spec.stdin_bytes = "hello\nworld";
  EXPECT_EQ(MustRun(spec).stdout_bytes, "hello\nworld");
}

TEST_F(SubprocessTest, EightMegabytesBothWaysDoNotDeadlock) {
  ProcessSpec spec;
  spec.argv = {"cat"};
  spec.stdin_bytes.resize(8 << 20);
  for (size_t i = 0; i < spec.stdin_bytes.size(); ++i) {
    spec.stdin_bytes[i] = static_cast<char>(i * 7 + i / 4096);
  }
  spec.max_output_bytes = 16 << 20;
  ProcessResult result = MustRun(spec);
  EXPECT_TRUE(result.Succeeded()) << result.Describe();
  EXPECT_TRUE(result.stdout_bytes == spec.stdin_bytes);
}

TEST_F(SubprocessTest, ChildClosingStdinEarlyDoesNotKillTheCaller) {
  ProcessSpec spec = Shell("head -c 3");
  spec.stdin_bytes.assign(8 << 20, 'x');
  ProcessResult result = MustRun(spec);
  EXPECT_TRUE(result.Succeeded()) << result.Describe();
  EXPECT_EQ(result.stdout_bytes, "xxx");
}

TEST_F(SubprocessTest, TruncatesOutputBeyondTheLimit) {
  ProcessSpec spec = Shell("head -c 300000 /dev/zero; echo done >&2");
  spec.max_output_bytes = 1000;
  ProcessResult result = MustRun(spec);
  EXPECT_TRUE(result.Succeeded()) << result.Describe();
  EXPECT_EQ(result.stdout_bytes, std::string(1000, '\0'));
  EXPECT_TRUE(result.stdout_truncated);
  EXPECT_EQ(result.stderr_bytes, "done\n");
  EXPECT_FALSE(result.stderr_truncated);
}

TEST_F(SubprocessTest, AddsAndOverridesEnvironment) {
  ProcessSpec spec = Shell("echo \"$KF_SUBPROCESS_TEST $HOME\"; [ -n \"$PATH\" ] && echo has-path");
  spec.env = {"KF_SUBPROCESS_TEST=added", "HOME=/kfleet-home"};
  EXPECT_EQ(MustRun(spec).stdout_bytes, "added /kfleet-home\nhas-path\n");
}

TEST_F(SubprocessTest, ClearedEnvironmentHoldsOnlyTheGivenVariables) {
  ProcessSpec spec;
  spec.argv = {"env"};  // found through the default PATH, as the child has none
  spec.clear_env = true;
  spec.env = {"A=1", "B=2", "A=3"};
  EXPECT_EQ(MustRun(spec).stdout_bytes, "A=3\nB=2\n");
}

TEST_F(SubprocessTest, RunsInTheGivenDirectory) {
  ProcessSpec spec = Shell("pwd -P");
  spec.cwd = dir_;
  EXPECT_EQ(MustRun(spec).stdout_bytes, dir_.string() + "\n");
}

TEST_F(SubprocessTest, ExecFailureNamesTheProgram) {
  ProcessSpec spec;
  spec.argv = {"kfleet-no-such-program", "--flag"};
  Result<ProcessResult> result = SystemProcessRunner().Run(spec);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(result.status().message(), "start 'kfleet-no-such-program': No such file or directory");
}

TEST_F(SubprocessTest, NonExecutableFileIsPermissionDenied) {
  std::filesystem::path script = dir_ / "script.sh";
  std::ofstream(script) << "#!/bin/sh\necho hi\n";
  ProcessSpec spec;
  spec.argv = {script.string()};
  Result<ProcessResult> result = SystemProcessRunner().Run(spec);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(result.status().message().find("Permission denied"), std::string::npos);
}

TEST_F(SubprocessTest, MissingWorkingDirectoryIsAStartError) {
  ProcessSpec spec = Shell("true");
  spec.cwd = dir_ / "absent";
  Result<ProcessResult> result = SystemProcessRunner().Run(spec);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "start '/bin/sh': chdir " + spec.cwd.string() + ": No such file or directory");
}

TEST_F(SubprocessTest, MalformedSpecsAreRejected) {
  ProcessSpec empty;
  EXPECT_EQ(SystemProcessRunner().Run(empty).status().code(), ErrorCode::kInvalidArgument);
  ProcessSpec bad_env = Shell("true");
  bad_env.env = {"NO_EQUALS_SIGN"};
  Result<ProcessResult> result = SystemProcessRunner().Run(bad_env);
  EXPECT_EQ(result.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("NO_EQUALS_SIGN"), std::string::npos);
}

TEST_F(SubprocessTest, CrashReportsTheSignal) {
  ProcessResult result = MustRun(Shell("ulimit -c 0; kill -SEGV $$"));
  EXPECT_FALSE(result.Succeeded());
  EXPECT_EQ(result.term_signal, SIGSEGV);
  EXPECT_EQ(result.Describe(), "killed by SIGSEGV");
}

TEST(ProcessResultTest, DescribesEachEnding) {
  ProcessResult core;
  core.term_signal = SIGSEGV;
  core.core_dumped = true;
  EXPECT_EQ(core.Describe(), "killed by SIGSEGV (core dumped)");
  ProcessResult timed_out;
  timed_out.term_signal = SIGKILL;
  timed_out.timed_out = true;
  timed_out.wall_ms = 2000;
  EXPECT_EQ(timed_out.Describe(), "timed out after 2000 ms (killed)");
  EXPECT_FALSE(timed_out.Succeeded());
  ProcessResult cancelled;
  cancelled.term_signal = SIGKILL;
  cancelled.cancelled = true;
  cancelled.wall_ms = 40;
  EXPECT_EQ(cancelled.Describe(), "cancelled after 40 ms (killed)");
}

TEST_F(SubprocessTest, TimeoutKillsASleepingChild) {
  ProcessSpec spec = Shell("sleep 30");
  spec.timeout_ms = 300;
  ProcessResult result = MustRun(spec);
  EXPECT_TRUE(result.timed_out);
  EXPECT_EQ(result.term_signal, SIGKILL);
  EXPECT_GE(result.wall_ms, 300);
  // Killed long before the child's own 30 s; a loose bound keeps a loaded CI machine honest.
  EXPECT_LT(result.wall_ms, 5000);
  EXPECT_EQ(result.Describe().rfind("timed out after ", 0), 0u) << result.Describe();
}

TEST_F(SubprocessTest, TimeoutKillsGrandchildren) {
  ProcessSpec spec = Shell("sleep 30 & echo $!; sleep 30");
  spec.timeout_ms = 300;
  ProcessResult result = MustRun(spec);
  EXPECT_TRUE(result.timed_out);
  pid_t grandchild = std::atoi(result.stdout_bytes.c_str());
  ASSERT_GT(grandchild, 0) << result.stdout_bytes;
  EXPECT_TRUE(BecomesDead(grandchild, std::chrono::milliseconds(5000)));
}

TEST_F(SubprocessTest, StrayGrandchildDoesNotHoldRunOpen) {
  ProcessResult result = MustRun(Shell("sleep 30 & echo $!"));
  EXPECT_TRUE(result.Succeeded()) << result.Describe();
  EXPECT_LT(result.wall_ms, 5000);
  pid_t grandchild = std::atoi(result.stdout_bytes.c_str());
  ASSERT_GT(grandchild, 0) << result.stdout_bytes;
  EXPECT_TRUE(BecomesDead(grandchild, std::chrono::milliseconds(5000)));
}

TEST_F(SubprocessTest, ChildThatClosesItsOutputIsStillAwaited) {
  ProcessResult result = MustRun(Shell("exec >&- 2>&-; sleep 0.2; exit 4"));
  EXPECT_EQ(result.exit_code, 4);
  EXPECT_GE(result.wall_ms, 200);
}

TEST_F(SubprocessTest, CancelFlagFromAnotherThreadKillsTheChild) {
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancel = true;
  });
  ProcessResult result = MustRun(Shell("sleep 30"), &cancel);
  canceller.join();
  EXPECT_TRUE(result.cancelled);
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.term_signal, SIGKILL);
  EXPECT_LT(result.wall_ms, 5000);
}

TEST_F(SubprocessTest, AppliesResourceLimits) {
  ProcessSpec spec = Shell("ulimit -v; ulimit -t; ulimit -f; ulimit -n");
  spec.limits.address_space_bytes = uint64_t{1} << 30;
  spec.limits.cpu_seconds = 7;
  spec.limits.file_size_bytes = 1 << 20;
  spec.limits.open_files = 64;
  // ulimit reports kilobytes, seconds, 512-byte blocks and a count.
  EXPECT_EQ(MustRun(spec).stdout_bytes, "1048576\n7\n2048\n64\n");
}

TEST_F(SubprocessTest, LimitsProcessesAndCoreDumps) {
  ProcessSpec spec;
  spec.limits.processes = 50;
  spec.limits.core_dumps = false;
  EXPECT_EQ(ChildLimit(spec, "Max processes"), "50 50");
  EXPECT_EQ(ChildLimit(spec, "Max core file size"), "0 0");
}

TEST_F(SubprocessTest, KeepsProcessAndCoreLimitsByDefault) {
  const auto text = [](rlim_t value) {
    return value == RLIM_INFINITY ? std::string("unlimited") : std::to_string(value);
  };
  rlimit processes{};
  rlimit core{};
  ASSERT_EQ(getrlimit(RLIMIT_NPROC, &processes), 0);
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &core), 0);
  EXPECT_EQ(ChildLimit({}, "Max processes"),
            text(processes.rlim_cur) + " " + text(processes.rlim_max));
  EXPECT_EQ(ChildLimit({}, "Max core file size"), text(core.rlim_cur) + " " + text(core.rlim_max));
}

TEST_F(SubprocessTest, FileSizeLimitStopsAWriter) {
  ProcessSpec spec = Shell("head -c 100000 /dev/zero > out; echo \"status $?\"");
  spec.cwd = dir_;
  spec.limits.file_size_bytes = 4096;
  ProcessResult result = MustRun(spec);
  EXPECT_EQ(result.stdout_bytes, "status " + std::to_string(128 + SIGXFSZ) + "\n");
  EXPECT_EQ(std::filesystem::file_size(dir_ / "out"), 4096u);
}

TEST_F(SubprocessTest, ChildStartsWithDefaultSignalsAndOnlyStandardFds) {
  struct sigaction ignore {};
  struct sigaction previous {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGUSR1, &ignore, &previous), 0);
  sigset_t usr2;
  sigset_t caller_mask;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &usr2, &caller_mask), 0);
  int inheritable_fd = open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(inheritable_fd, 0);

  ProcessSpec signals;
  signals.argv = {"grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"};
  ProcessResult signal_state = MustRun(signals);
  ProcessResult fds = MustRun(Shell("ls /proc/$$/fd"));

  close(inheritable_fd);
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &caller_mask, nullptr), 0);
  ASSERT_EQ(sigaction(SIGUSR1, &previous, nullptr), 0);
  EXPECT_EQ(signal_state.stdout_bytes, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
  EXPECT_EQ(fds.stdout_bytes, "0\n1\n2\n");
}

TEST_F(SubprocessTest, ConcurrentRunsFromEightThreads) {
  constexpr int kThreads = 8;
  std::vector<ProcessResult> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([i, &results] {
      ProcessSpec spec =
          Shell("cat; echo " + std::to_string(i) + " >&2; exit " + std::to_string(i));
      spec.stdin_bytes.assign(1 << 20, static_cast<char>('a' + i));
      results[static_cast<size_t>(i)] = MustRun(spec);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kThreads; ++i) {
    const ProcessResult& result = results[static_cast<size_t>(i)];
    EXPECT_EQ(result.exit_code, i);
    EXPECT_TRUE(result.stdout_bytes == std::string(1 << 20, static_cast<char>('a' + i)))
        << "thread " << i;
    EXPECT_EQ(result.stderr_bytes, std::to_string(i) + "\n");
  }
}

TEST_F(SubprocessTest, HundredRunsLeakNoFds) {
  int before = CountOpenFds();
  for (int i = 0; i < 100; ++i) {
    ProcessSpec spec;
    spec.argv = {"true"};
    spec.stdin_bytes = "ignored";
    ASSERT_TRUE(MustRun(spec).Succeeded());
  }
  EXPECT_EQ(CountOpenFds(), before);
}

}  // namespace
}  // namespace kfleet
