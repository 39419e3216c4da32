// Runs a program in a child process with captured output, a wall-clock limit and rlimits.
// The worker runs every task and kernel evaluation this way; tests replace ProcessRunner to make
// a child crash or hang on demand.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status.h"

namespace kfleet {

struct ProcessSpec {
  // argv[0] is the program. Without a '/' it is searched in the PATH of the child's environment
  // (or /bin:/usr/bin when that has none); with one, it is relative to `cwd`.
  std::vector<std::string> argv;
  std::filesystem::path cwd;  // empty: inherit
  // "NAME=VALUE". With clear_env=false these are added to (or replace) the parent's variables.
  std::vector<std::string> env;
  bool clear_env = false;
  std::string stdin_bytes;  // written to the child's stdin, which is then closed
  // Wall clock; 0 = none. On expiry the child's whole process group gets SIGKILL.
  int64_t timeout_ms = 0;
  // Per stream; output beyond it is read and dropped, and the stream marked truncated.
  size_t max_output_bytes = size_t{1} << 20;
  // setrlimit in the child (soft and hard); 0 = unchanged. A value above the current hard limit
  // is lowered to it. CPU: SIGXCPU at cpu_seconds, SIGKILL one second later.
  struct Limits {
    uint64_t address_space_bytes = 0;
    uint64_t cpu_seconds = 0;
    uint64_t file_size_bytes = 0;
    uint64_t open_files = 0;
    // RLIMIT_NPROC counts every process of the child's real UID, not only its descendants, and
    // root ignores it; eval/sandbox.h's seccomp rule against fork is what stops a kernel forking.
    uint64_t processes = 0;
    bool core_dumps = true;  // false: RLIMIT_CORE 0, so a crash leaves no core file behind
  } limits;
};

struct ProcessResult {
  int exit_code = -1;   // valid when the child exited (term_signal == 0)
  int term_signal = 0;  // nonzero when the child was killed by a signal
  bool core_dumped = false;
  bool timed_out = false;  // we killed it at timeout_ms
  bool cancelled = false;  // we killed it because the cancel flag was set
  std::string stdout_bytes;
  std::string stderr_bytes;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  int64_t wall_ms = 0;
  int64_t max_rss_kb = 0;  // from wait4's rusage: the child and the descendants it waited for
  double user_s = 0;
  double sys_s = 0;

  // Exited with 0 on its own.
  bool Succeeded() const;
  // "exited with 3", "killed by SIGSEGV (core dumped)", "timed out after 2000 ms (killed)".
  std::string Describe() const;
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs the child to completion; how it ended is in the ProcessResult. An error Status means it
  // could not be started (bad spec, exec or chdir failed, ...) or, rarely, that watching it failed
  // (poll, read), in which case it was killed and reaped. `cancel`, when given, is polled at least
  // every 50 ms; setting it kills the child's process group.
  virtual Result<ProcessResult> Run(const ProcessSpec& spec,
                                    const std::atomic<bool>* cancel = nullptr) = 0;
};

// The real runner: fork + exec. Thread-safe; Run blocks the calling thread until the child is
// reaped.
//  - The child gets its own process group, default signal dispositions, an empty signal mask,
//    only fds 0-2, and PR_SET_PDEATHSIG(SIGKILL). Linux sends that signal when the *thread* that
//    forked exits; Run keeps that thread blocked until the child is reaped, so it fires only
//    when the worker dies while a child runs, which is the intent.
//  - When the child exits, the rest of its process group is killed, so a stray grandchild that
//    holds the output pipes cannot make Run hang.
//  - SIGPIPE is blocked in the calling thread while Run writes stdin (and a SIGPIPE it raised is
//    consumed), so a child that exits without reading its input cannot kill the caller. No
//    process-wide signal disposition is changed.
//  - Requires that nothing else reaps our children: no SIGCHLD set to SIG_IGN (the kernel would
//    reap them) and no waitpid(-1, ...) elsewhere in the process.
ProcessRunner& SystemProcessRunner();

}  // namespace kfleet
