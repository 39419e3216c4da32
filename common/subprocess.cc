#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <utility>

#include "common/clock.h"
#include "common/log.h"

namespace kfleet {
namespace {

constexpr int kCancelCheckIntervalMs = 50;
// Without a pidfd nothing wakes poll when the child exits, so the loop asks the kernel this often.
constexpr int kExitCheckIntervalMs = 5;
constexpr size_t kReadChunkBytes = size_t{64} << 10;
// After the child exits, at most this many chunks are drained per stream: enough for the largest
// pipe buffer (pipe-max-size, 1 MiB by default) without spinning on an escaped writer.
constexpr int kMaxDrainReads = 32;
// Bounds the close() fallback when the fd limit is unlimited.
constexpr rlim_t kMaxFdFallback = rlim_t{1} << 20;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // A failed close of a pipe or pidfd tells us nothing we could act on; Linux frees the fd anyway.
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

// O_CLOEXEC: a child forked concurrently by another thread must not keep our pipe ends open.
Result<Pipe> MakePipe(const std::string& context, const char* what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return ErrnoError(context + ": create the " + what + " pipe", errno);
  }
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Status SetNonBlocking(const std::string& context, const UniqueFd& fd) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(context + ": make a pipe non-blocking", errno);
  }
  return Status::Ok();
}

// pthread_sigmask fails only for an invalid `how`, which would be a bug in this file.
void SetThreadSignalMask(int how, const sigset_t* set, sigset_t* old) {
  [[maybe_unused]] int rc = ::pthread_sigmask(how, set, old);
  assert(rc == 0);
}

// Keeps SIGPIPE blocked in the calling thread while Run writes the child's stdin: a write to a
// child that stopped reading then fails with EPIPE instead of killing the caller. A SIGPIPE those
// writes left pending is consumed before the caller's mask comes back.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    ::sigemptyset(&sigpipe_);
    ::sigaddset(&sigpipe_, SIGPIPE);
    SetThreadSignalMask(SIG_BLOCK, &sigpipe_, &caller_mask_);
    was_pending_ = IsPending();
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_ && IsPending()) {
      const timespec no_wait{};
      while (::sigtimedwait(&sigpipe_, nullptr, &no_wait) < 0 && errno == EINTR) {
      }
    }
    SetThreadSignalMask(SIG_SETMASK, &caller_mask_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  // sigpending fails only for a bad pointer.
  static bool IsPending() {
    sigset_t pending;
    return ::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1;
  }

  sigset_t sigpipe_;
  sigset_t caller_mask_;
  bool was_pending_ = false;
};

// `target` is a pid, or minus a process group id. ESRCH: it is gone already. EPERM (a process
// changed its credentials) leaves it running; a non-root worker can do no more than say so.
void SendKill(pid_t target) {
  if (::kill(target, SIGKILL) != 0 && errno != ESRCH) {
    log::Warn("subprocess.kill_failed").Kv("target", target).Kv("error", std::strerror(errno));
  }
}

// What the child was doing when it failed before exec; sent to the parent over the report pipe.
enum class ChildStep : int32_t {
  kProcessGroup,
  kParentDeathSignal,
  kRedirect,
  kLimitAddressSpace,
  kLimitCpu,
  kLimitFileSize,
  kLimitOpenFiles,
  kLimitProcesses,
  kLimitCoreDumps,
  kChdir,
  kSignalMask,
  kExec,
};

struct ChildFailure {
  int32_t step;
  int32_t errno_value;
};

using RlimitResource = decltype(RLIMIT_AS);

struct PreparedLimit {
  RlimitResource resource;
  rlimit value;
  ChildStep step;
};

// Everything the child needs, built before fork: between fork and exec only async-signal-safe
// calls are allowed, so the child reads these and allocates nothing.
struct ChildPlan {
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<std::string> exec_paths;  // candidates for argv[0], tried in order
  std::vector<char*> argv;              // null-terminated views of the storage above
  std::vector<char*> envp;
  const char* cwd = nullptr;  // null: inherit
  std::vector<PreparedLimit> limits;
  int close_fallback_max_fd = 0;
  pid_t parent_pid = 0;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  int report_fd = -1;
};

[[noreturn]] void ReportAndExit(int report_fd, ChildStep step, int errno_value) {
  const ChildFailure failure{static_cast<int32_t>(step), errno_value};
  // If this write fails the parent sees a start without a report and exit code 127.
  while (::write(report_fd, &failure, sizeof failure) < 0 && errno == EINTR) {
  }
  ::_exit(127);
}

// Runs in the forked child with every signal blocked (inherited from the parent's fork window).
[[noreturn]] void RunChild(const ChildPlan& plan) {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ::sigemptyset(&default_action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    // Fails (EINVAL) only for SIGKILL, SIGSTOP and glibc's reserved signals, which need no reset.
    ::sigaction(sig, &default_action, nullptr);
  }

  if (::setpgid(0, 0) != 0) ReportAndExit(plan.report_fd, ChildStep::kProcessGroup, errno);
  if (::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(SIGKILL)) != 0) {
    ReportAndExit(plan.report_fd, ChildStep::kParentDeathSignal, errno);
  }
  // The parent may have died before PR_SET_PDEATHSIG took effect; nobody is left to report to.
  if (::getppid() != plan.parent_pid) ::_exit(127);

  // Lift the four fds to 4 and above first, so moving one into 0..3 cannot overwrite another.
  const int sources[4] = {plan.stdin_fd, plan.stdout_fd, plan.stderr_fd, plan.report_fd};
  int lifted[4];
  for (int i = 0; i < 4; ++i) {
    lifted[i] = ::fcntl(sources[i], F_DUPFD_CLOEXEC, 4);
    if (lifted[i] < 0) ReportAndExit(plan.report_fd, ChildStep::kRedirect, errno);
  }
  for (int target = 0; target < 3; ++target) {
    // dup2 leaves the target without FD_CLOEXEC, so it survives exec.
    if (::dup2(lifted[target], target) < 0) ReportAndExit(lifted[3], ChildStep::kRedirect, errno);
  }
  if (::dup3(lifted[3], 3, O_CLOEXEC) < 0) ReportAndExit(lifted[3], ChildStep::kRedirect, errno);
  constexpr int kReportFd = 3;
  // close_range needs Linux 5.9 and some seccomp profiles refuse it.
  if (::close_range(kReportFd + 1, ~0U, 0) != 0) {
    for (int fd = kReportFd + 1; fd < plan.close_fallback_max_fd; ++fd) ::close(fd);
  }

  for (const PreparedLimit& limit : plan.limits) {
    if (::setrlimit(limit.resource, &limit.value) != 0) ReportAndExit(kReportFd, limit.step, errno);
  }
  if (plan.cwd != nullptr && ::chdir(plan.cwd) != 0) {
    ReportAndExit(kReportFd, ChildStep::kChdir, errno);
  }
  sigset_t none;
  ::sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) {
    ReportAndExit(kReportFd, ChildStep::kSignalMask, errno);
  }

  // execvp's rules: skip candidates that do not exist, remember EACCES, stop at any other error.
  int exec_errno = ENOENT;
  bool saw_eacces = false;
  for (const std::string& path : plan.exec_paths) {
    ::execve(path.c_str(), plan.argv.data(), plan.envp.data());
    exec_errno = errno;
    if (exec_errno == EACCES) {
      saw_eacces = true;
    } else if (exec_errno != ENOENT && exec_errno != ENOTDIR) {
      ReportAndExit(kReportFd, ChildStep::kExec, exec_errno);
    }
  }
  ReportAndExit(kReportFd, ChildStep::kExec, saw_eacces ? EACCES : exec_errno);
}

Status ValidateSpec(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return InvalidArgument("process spec: argv is empty; argv[0] must name the program");
  }
  for (const std::string& arg : spec.argv) {
    if (arg.find('\0') != std::string::npos) {
      return InvalidArgument("process spec for '" + spec.argv[0] +
                             "': an argument contains a NUL byte");
    }
  }
  for (const std::string& entry : spec.env) {
    size_t equals = entry.find('=');
    if (equals == 0 || equals == std::string::npos || entry.find('\0') != std::string::npos) {
      return InvalidArgument("process spec for '" + spec.argv[0] + "': environment entry '" +
                             entry + "' is not NAME=VALUE");
    }
  }
  if (spec.timeout_ms < 0) {
    return InvalidArgument("process spec for '" + spec.argv[0] + "': timeout_ms is " +
                           std::to_string(spec.timeout_ms) + "; use 0 for no timeout");
  }
  return Status::Ok();
}

std::vector<std::string> BuildEnvironment(const ProcessSpec& spec) {
  std::vector<std::string> env;
  if (!spec.clear_env) {
    for (char** entry = environ; *entry != nullptr; ++entry) env.emplace_back(*entry);
  }
  for (const std::string& entry : spec.env) {
    std::string_view name_with_equals(entry.data(), entry.find('=') + 1);
    auto same = std::find_if(env.begin(), env.end(), [&](const std::string& existing) {
      return existing.starts_with(name_with_equals);
    });
    if (same != env.end()) {
      *same = entry;
    } else {
      env.push_back(entry);
    }
  }
  return env;
}

// Like execvp, but the PATH is the child's; an empty PATH element means the working directory.
std::vector<std::string> ExecCandidates(const std::string& program,
                                        const std::vector<std::string>& env) {
  if (program.find('/') != std::string::npos) return {program};
  std::string search_path = "/bin:/usr/bin";
  for (const std::string& entry : env) {
    if (entry.starts_with("PATH=")) search_path = entry.substr(5);
  }
  std::vector<std::string> candidates;
  size_t begin = 0;
  while (true) {
    size_t end = search_path.find(':', begin);
    std::string dir = search_path.substr(begin, end == std::string::npos ? end : end - begin);
    candidates.push_back((dir.empty() ? std::string(".") : dir) + "/" + program);
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return candidates;
}

Status PrepareLimits(const ProcessSpec::Limits& limits, std::vector<PreparedLimit>* out) {
  auto add = [out](RlimitResource resource, const char* name, uint64_t value, rlim_t hard_extra,
                   ChildStep step) -> Status {
    if (value == 0) return Status::Ok();
    rlimit current{};
    if (::getrlimit(resource, &current) != 0) {
      return ErrnoError(std::string("read the current ") + name, errno);
    }
    // An unprivileged child cannot raise its hard limit; the existing, stricter one stands.
    const rlim_t wanted = static_cast<rlim_t>(value);
    const rlim_t hard =
        std::min(current.rlim_max,
                 wanted > RLIM_INFINITY - hard_extra ? RLIM_INFINITY : wanted + hard_extra);
    out->push_back({resource, rlimit{std::min(wanted, hard), hard}, step});
    return Status::Ok();
  };
  KF_RETURN_IF_ERROR(
      add(RLIMIT_AS, "RLIMIT_AS", limits.address_space_bytes, 0, ChildStep::kLimitAddressSpace));
  // One second between SIGXCPU and SIGKILL lets the child report that it ran out of CPU time.
  KF_RETURN_IF_ERROR(add(RLIMIT_CPU, "RLIMIT_CPU", limits.cpu_seconds, 1, ChildStep::kLimitCpu));
  KF_RETURN_IF_ERROR(
      add(RLIMIT_FSIZE, "RLIMIT_FSIZE", limits.file_size_bytes, 0, ChildStep::kLimitFileSize));
  KF_RETURN_IF_ERROR(
      add(RLIMIT_NOFILE, "RLIMIT_NOFILE", limits.open_files, 0, ChildStep::kLimitOpenFiles));
  KF_RETURN_IF_ERROR(
      add(RLIMIT_NPROC, "RLIMIT_NPROC", limits.processes, 0, ChildStep::kLimitProcesses));
  // Lowering a limit to 0 needs no privilege, so this one skips the clamping above.
  if (!limits.core_dumps) out->push_back({RLIMIT_CORE, rlimit{0, 0}, ChildStep::kLimitCoreDumps});
  return Status::Ok();
}

Status StartError(const ProcessSpec& spec, const ChildFailure& failure) {
  std::string what = "start '" + spec.argv[0] + "'";
  switch (static_cast<ChildStep>(failure.step)) {
    case ChildStep::kProcessGroup: what += ": setpgid"; break;
    case ChildStep::kParentDeathSignal: what += ": prctl(PR_SET_PDEATHSIG)"; break;
    case ChildStep::kRedirect: what += ": redirect stdin/stdout/stderr"; break;
    case ChildStep::kLimitAddressSpace:
      what +=
          ": limit address space to " + std::to_string(spec.limits.address_space_bytes) + " bytes";
      break;
    case ChildStep::kLimitCpu:
      what += ": limit CPU time to " + std::to_string(spec.limits.cpu_seconds) + " s";
      break;
    case ChildStep::kLimitFileSize:
      what += ": limit file size to " + std::to_string(spec.limits.file_size_bytes) + " bytes";
      break;
    case ChildStep::kLimitOpenFiles:
      what += ": limit open files to " + std::to_string(spec.limits.open_files);
      break;
    case ChildStep::kLimitProcesses:
      what += ": limit processes to " + std::to_string(spec.limits.processes);
      break;
    case ChildStep::kLimitCoreDumps: what += ": disable core dumps"; break;
    case ChildStep::kChdir: what += ": chdir " + spec.cwd.string(); break;
    case ChildStep::kSignalMask: what += ": reset the signal mask"; break;
    case ChildStep::kExec: break;
  }
  std::string message = ErrnoError(what, failure.errno_value).message();
  if (failure.errno_value == ENOENT) return NotFound(std::move(message));
  if (failure.errno_value == EACCES || failure.errno_value == EPERM) {
    return PermissionDenied(std::move(message));
  }
  return IoError(std::move(message));
}

// Reads the child's start report: EOF alone means exec succeeded (the pipe is close-on-exec).
Result<bool> ReadStartReport(const std::string& context, const UniqueFd& fd,
                             ChildFailure* failure) {
  char bytes[sizeof(ChildFailure)];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::read(fd.get(), bytes + got, sizeof bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(context + ": read the child's start report", errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == 0) return false;
  if (got != sizeof bytes) return Internal(context + ": the child's start report is truncated");
  std::memcpy(failure, bytes, sizeof bytes);
  return true;
}

// Kills the child and its process group and reaps the child unless Run has reaped it.
class ChildReaper {
 public:
  explicit ChildReaper(pid_t pid) : pid_(pid) {}
  ~ChildReaper() {
    if (pid_ <= 0) return;
    SendKill(-pid_);
    SendKill(pid_);  // it may have failed before setpgid
    int status = 0;
    // ECHILD (someone else reaped it) leaves nothing to do.
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ChildReaper(const ChildReaper&) = delete;
  ChildReaper& operator=(const ChildReaper&) = delete;
  void Release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// Without a pidfd, asks the kernel whether the child is a zombie yet, leaving it unreaped.
Result<bool> HasExited(const std::string& context, pid_t pid) {
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno != EINTR) return ErrnoError(context + ": wait for the child", errno);
  }
  return info.si_pid == pid;
}

struct OutputStream {
  UniqueFd fd;
  std::string* bytes;
  bool* truncated;
};

// One read; keeps at most `max_bytes` and drops the rest so the child never blocks on a full pipe.
// Returns false when nothing more can be read now (EOF closes the stream).
Result<bool> ReadChunk(const std::string& context, OutputStream& stream, size_t max_bytes,
                       char* buffer) {
  ssize_t n;
  do {
    n = ::read(stream.fd.get(), buffer, kReadChunkBytes);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return false;
  if (n < 0) return ErrnoError(context + ": read the child's output", errno);
  if (n == 0) {
    stream.fd.Reset();
    return false;
  }
  const size_t got = static_cast<size_t>(n);
  const size_t room = max_bytes - std::min(max_bytes, stream.bytes->size());
  stream.bytes->append(buffer, std::min(got, room));
  if (got > room) *stream.truncated = true;
  return true;
}

// Writes what the pipe takes now; EPIPE (the child closed stdin) ends the input quietly.
Status WriteStdin(const std::string& context, UniqueFd& fd, const std::string& bytes,
                  size_t* written) {
  ssize_t n;
  do {
    n = ::write(fd.get(), bytes.data() + *written, bytes.size() - *written);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return Status::Ok();
  if (n < 0 && errno == EPIPE) {
    fd.Reset();
    return Status::Ok();
  }
  if (n < 0) return ErrnoError(context + ": write the child's stdin", errno);
  *written += static_cast<size_t>(n);
  if (*written == bytes.size()) fd.Reset();
  return Status::Ok();
}

double Seconds(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

class SystemRunner final : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec, const std::atomic<bool>* cancel) override {
    KF_RETURN_IF_ERROR(ValidateSpec(spec));
    const std::string context = "run '" + spec.argv[0] + "'";

    ChildPlan plan;
    plan.argv_storage = spec.argv;
    plan.env_storage = BuildEnvironment(spec);
    plan.exec_paths = ExecCandidates(spec.argv[0], plan.env_storage);
    for (std::string& arg : plan.argv_storage) plan.argv.push_back(arg.data());
    plan.argv.push_back(nullptr);
    for (std::string& entry : plan.env_storage) plan.envp.push_back(entry.data());
    plan.envp.push_back(nullptr);
    if (!spec.cwd.empty()) plan.cwd = spec.cwd.c_str();
    KF_RETURN_IF_ERROR(PrepareLimits(spec.limits, &plan.limits).WithContext(context));
    rlimit fd_limit{};
    if (::getrlimit(RLIMIT_NOFILE, &fd_limit) != 0) {
      return ErrnoError(context + ": read RLIMIT_NOFILE", errno);
    }
    plan.close_fallback_max_fd = static_cast<int>(std::min(fd_limit.rlim_cur, kMaxFdFallback));
    plan.parent_pid = ::getpid();

    KF_ASSIGN_OR_RETURN(Pipe in, MakePipe(context, "stdin"));
    KF_ASSIGN_OR_RETURN(Pipe out, MakePipe(context, "stdout"));
    KF_ASSIGN_OR_RETURN(Pipe err, MakePipe(context, "stderr"));
    KF_ASSIGN_OR_RETURN(Pipe report, MakePipe(context, "start report"));
    plan.stdin_fd = in.read.get();
    plan.stdout_fd = out.write.get();
    plan.stderr_fd = err.write.get();
    plan.report_fd = report.write.get();

    ScopedSigpipeBlock sigpipe_block;
    // No handler of the caller's may run in the child before it resets them all.
    sigset_t all_signals;
    sigset_t io_mask;
    ::sigfillset(&all_signals);
    SetThreadSignalMask(SIG_SETMASK, &all_signals, &io_mask);
    const int64_t start_us = SystemClock().MonotonicUs();
    const pid_t pid = ::fork();
    if (pid == 0) RunChild(plan);
    const int fork_errno = errno;
    SetThreadSignalMask(SIG_SETMASK, &io_mask, nullptr);
    if (pid < 0) return ErrnoError(context + ": fork", fork_errno);

    ChildReaper reaper(pid);
    in.read.Reset();
    out.write.Reset();
    err.write.Reset();
    report.write.Reset();

    ChildFailure failure{};
    KF_ASSIGN_OR_RETURN(bool start_failed, ReadStartReport(context, report.read, &failure));
    if (start_failed) return StartError(spec, failure);

    // pidfd_open needs Linux 5.3; without it the loop checks for the child's exit every 5 ms.
    // Called through syscall(): glibc 2.36's <sys/pidfd.h> lacks extern "C" and does not link.
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (spec.stdin_bytes.empty()) in.write.Reset();
    for (const UniqueFd* fd : {&in.write, &out.read, &err.read}) {
      if (fd->valid()) KF_RETURN_IF_ERROR(SetNonBlocking(context, *fd));
    }

    ProcessResult result;
    OutputStream streams[2] = {
        {std::move(out.read), &result.stdout_bytes, &result.stdout_truncated},
        {std::move(err.read), &result.stderr_bytes, &result.stderr_truncated}};
    std::vector<char> buffer(kReadChunkBytes);
    size_t stdin_written = 0;
    constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();
    const bool has_deadline =
        spec.timeout_ms > 0 && spec.timeout_ms < (kNoDeadline - start_us) / 1000;
    const int64_t deadline_us = has_deadline ? start_us + spec.timeout_ms * 1000 : kNoDeadline;
    bool kill_requested = false;
    while (true) {
      if (cancel != nullptr && cancel->load()) {
        result.cancelled = kill_requested = true;
        break;
      }
      const int64_t now_us = SystemClock().MonotonicUs();
      if (now_us >= deadline_us) {
        result.timed_out = kill_requested = true;
        break;
      }
      int wait_ms = -1;
      if (has_deadline) {
        wait_ms = static_cast<int>(std::min<int64_t>((deadline_us - now_us + 999) / 1000, INT_MAX));
      }
      const auto wake_within = [&wait_ms](int interval_ms) {
        wait_ms = wait_ms < 0 ? interval_ms : std::min(wait_ms, interval_ms);
      };
      if (cancel != nullptr) wake_within(kCancelCheckIntervalMs);
      if (!pidfd.valid()) wake_within(kExitCheckIntervalMs);

      pollfd fds[4];
      nfds_t count = 0;
      const auto watch = [&](const UniqueFd& fd, short events) -> pollfd* {
        if (!fd.valid()) return nullptr;
        fds[count] = pollfd{fd.get(), events, 0};
        return &fds[count++];
      };
      const pollfd* stdin_poll = watch(in.write, POLLOUT);
      const pollfd* out_poll = watch(streams[0].fd, POLLIN);
      const pollfd* err_poll = watch(streams[1].fd, POLLIN);
      const pollfd* exit_poll = watch(pidfd, POLLIN);
      if (::poll(fds, count, wait_ms) < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(context + ": poll the child's pipes", errno);
      }

      if (stdin_poll != nullptr && stdin_poll->revents != 0) {
        KF_RETURN_IF_ERROR(WriteStdin(context, in.write, spec.stdin_bytes, &stdin_written));
      }
      const pollfd* stream_polls[2] = {out_poll, err_poll};
      for (int i = 0; i < 2; ++i) {
        if (stream_polls[i] == nullptr || stream_polls[i]->revents == 0) continue;
        KF_RETURN_IF_ERROR(
            ReadChunk(context, streams[i], spec.max_output_bytes, buffer.data()).status());
      }
      bool exited = false;
      if (pidfd.valid()) {
        exited = exit_poll != nullptr && (exit_poll->revents & POLLIN) != 0;
      } else {
        KF_ASSIGN_OR_RETURN(exited, HasExited(context, pid));
      }
      if (exited) break;
    }

    // On exit this kills stray grandchildren, which may hold the pipes open; on timeout or cancel
    // it kills the child too (directly as well, in case it left its process group).
    SendKill(-pid);
    if (kill_requested) SendKill(pid);
    in.write.Reset();
    for (OutputStream& stream : streams) {
      for (int i = 0; i < kMaxDrainReads && stream.fd.valid(); ++i) {
        KF_ASSIGN_OR_RETURN(bool more,
                            ReadChunk(context, stream, spec.max_output_bytes, buffer.data()));
        if (!more) break;
      }
    }

    int status = 0;
    rusage usage{};
    while (::wait4(pid, &status, 0, &usage) < 0) {
      if (errno != EINTR) {
        return ErrnoError(context + ": wait for the child (is SIGCHLD ignored?)", errno);
      }
    }
    reaper.Release();
    result.wall_ms = (SystemClock().MonotonicUs() - start_us) / 1000;
    if (WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.term_signal = WTERMSIG(status);
      result.core_dumped = WCOREDUMP(status) != 0;
    }
    // A child that exited on its own just before our SIGKILL landed did finish in time.
    if (result.term_signal != SIGKILL) result.timed_out = result.cancelled = false;
    result.max_rss_kb = usage.ru_maxrss;
    result.user_s = Seconds(usage.ru_utime);
    result.sys_s = Seconds(usage.ru_stime);
    return result;
  }
};

std::string SignalName(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

bool ProcessResult::Succeeded() const {
  return !timed_out && !cancelled && term_signal == 0 && exit_code == 0;
}

std::string ProcessResult::Describe() const {
  if (timed_out) return "timed out after " + std::to_string(wall_ms) + " ms (killed)";
  if (cancelled) return "cancelled after " + std::to_string(wall_ms) + " ms (killed)";
  if (term_signal != 0) {
    std::string text = "killed by " + SignalName(term_signal);
    if (core_dumped) text += " (core dumped)";
    return text;
  }
  return "exited with " + std::to_string(exit_code);
}

ProcessRunner& SystemProcessRunner() {
  static SystemRunner runner;
  return runner;
}

}  // namespace kfleet
