// Enters the sandbox, then does what argv[1] says; sandbox_test checks how it ends. Exit 0: the
// action worked; 1: it worked although the sandbox should have stopped it, or it failed although
// it should be allowed; 2: bad usage or EnterSandbox failed; kSandboxViolationExitCode: stopped.
#include <cblas.h>
#include <omp.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "eval/sandbox.h"

extern char** environ;

namespace {

int Fail(const char* what) {
  std::fprintf(stderr, "probe: %s (errno %d: %s)\n", what, errno, std::strerror(errno));
  return 1;
}

int InetSocket() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  return Fail(fd >= 0 ? "an AF_INET socket was allowed" : "socket(AF_INET) failed instead");
}

int UnixSocket() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return Fail("socket(AF_UNIX)");
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return Fail("socketpair(AF_UNIX)");
  if (::close(fd) != 0 || ::close(pair[0]) != 0 || ::close(pair[1]) != 0) return Fail("close");
  return 0;
}

int Fork() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  if (pid > 0) ::waitpid(pid, nullptr, 0);
  return Fail(pid > 0 ? "fork was allowed" : "fork failed instead");
}

int Spawn() {
  pid_t pid = 0;
  char name[] = "true";
  char* argv[] = {name, nullptr};
  const int rc = ::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ);
  if (rc == 0) ::waitpid(pid, nullptr, 0);
  errno = rc;
  return Fail(rc == 0 ? "posix_spawn was allowed" : "posix_spawn failed instead");
}

int Exec() {
  ::execl("/bin/true", "true", static_cast<char*>(nullptr));
  return Fail("execl failed instead");
}

int Clone3() {
  // With clone3 refused, glibc falls back to clone, whose flags the filter can check.
  if (::syscall(SYS_clone3, nullptr, 0) == -1 && errno == ENOSYS) return 0;
  return Fail("clone3 did not fail with ENOSYS");
}

int Threads() {
  constexpr int kThreads = 4;
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back([&ran] { ran.fetch_add(1); });
  for (std::thread& thread : threads) thread.join();

  std::atomic<int> omp_ran{0};
  int team = 0;
#pragma omp parallel num_threads(kThreads)
  {
    omp_ran.fetch_add(1);
#pragma omp single
    team = omp_get_num_threads();
  }
  if (ran.load() != kThreads || omp_ran.load() != kThreads || team != kThreads) {
    std::fprintf(stderr, "probe: std::thread ran %d, OpenMP ran %d in a team of %d; wanted %d\n",
                 ran.load(), omp_ran.load(), team, kThreads);
    return 1;
  }
  return 0;
}

int OpenBlas() {
  // Large enough that OpenBLAS splits it across its threads.
  constexpr int kN = 512;
  openblas_set_num_threads(4);
  std::vector<float> a(kN * kN, 1.0f);
  std::vector<float> b(kN * kN, 2.0f);
  std::vector<float> c(kN * kN, 0.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kN, kN, kN, 1.0f, a.data(), kN, b.data(),
              kN, 0.0f, c.data(), kN);
  for (float value : c) {
    if (value != 2.0f * kN) {
      std::fprintf(stderr, "probe: sgemm gave %g, wanted %g\n", static_cast<double>(value),
                   2.0 * kN);
      return 1;
    }
  }
  return 0;
}

int FileWrite() {
  {
    std::ofstream out("probe-output.txt");
    out << "written in the sandbox\n";
    if (!out.flush()) return Fail("write probe-output.txt");
  }
  std::ifstream in("probe-output.txt");
  std::string line;
  if (!std::getline(in, line) || line != "written in the sandbox") {
    return Fail("read back probe-output.txt");
  }
  return 0;
}

int CoreLimit() {
  rlimit core{};
  if (::getrlimit(RLIMIT_CORE, &core) != 0) return Fail("getrlimit(RLIMIT_CORE)");
  if (core.rlim_cur == 0 && core.rlim_max == 0) return 0;
  std::fprintf(stderr, "probe: RLIMIT_CORE is %llu/%llu, wanted 0/0\n",
               static_cast<unsigned long long>(core.rlim_cur),
               static_cast<unsigned long long>(core.rlim_max));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: sandbox_probe ACTION\n");
    return 2;
  }
  const kfleet::Status entered = kfleet::eval::EnterSandbox(STDERR_FILENO);
  if (!entered.ok()) {
    std::fprintf(stderr, "probe: %s\n", entered.ToString().c_str());
    return 2;
  }
  const std::string action = argv[1];
  if (action == "inet-socket") return InetSocket();
  if (action == "unix-socket") return UnixSocket();
  if (action == "fork") return Fork();
  if (action == "spawn") return Spawn();
  if (action == "exec") return Exec();
  if (action == "clone3") return Clone3();
  if (action == "threads") return Threads();
  if (action == "openblas") return OpenBlas();
  if (action == "file-write") return FileWrite();
  if (action == "core-limit") return CoreLimit();
  std::fprintf(stderr, "probe: unknown action '%s'\n", action.c_str());
  return 2;
}
