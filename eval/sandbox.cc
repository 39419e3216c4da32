#include "eval/sandbox.h"

#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace kfleet::eval {
namespace {

enum class Condition {
  kAlways,
  kFamilyNotUnix,       // argument 0, the address family, is not AF_UNIX
  kWithoutCloneThread,  // argument 0, clone's flags, lacks CLONE_THREAD
};

struct BlockedCall {
  int syscall;
  const char* name;
  Condition condition;
};

// The calls that raise SIGSYS. SCMP_SYS names them for the build's architecture.
constexpr BlockedCall kBlockedCalls[] = {
    // The network: a kernel could ship its inputs out or fetch code. AF_UNIX stays; glibc uses it
    // for local lookups (nscd) and it cannot leave the machine.
    {SCMP_SYS(socket), "socket", Condition::kFamilyNotUnix},
    // The same rule, so a forbidden family is reported whichever call asked for it.
    {SCMP_SYS(socketpair), "socketpair", Condition::kFamilyNotUnix},
    // A new process escapes the harness's timing and can fork-bomb the node; RLIMIT_NPROC does
    // not bind root. glibc's fork() and posix_spawn() arrive here as clone.
    {SCMP_SYS(fork), "fork", Condition::kAlways},
    {SCMP_SYS(vfork), "vfork", Condition::kAlways},
    {SCMP_SYS(clone), "clone", Condition::kWithoutCloneThread},
    // Running another program (a shell, a downloaded binary) is no part of a kernel.
    {SCMP_SYS(execve), "execve", Condition::kAlways},
    {SCMP_SYS(execveat), "execveat", Condition::kAlways},
    // Both reach into other processes of the same user, such as the worker and its keys.
    {SCMP_SYS(ptrace), "ptrace", Condition::kAlways},
    {SCMP_SYS(process_vm_writev), "process_vm_writev", Condition::kAlways},
    // io_uring opens sockets (IORING_OP_SOCKET) without a socket() call this filter would see.
    {SCMP_SYS(io_uring_setup), "io_uring_setup", Condition::kAlways},
};

// Where the SIGSYS handler writes; set before the handler is installed. A lock-free atomic is
// what a signal handler may read.
std::atomic<int> g_report_fd{STDERR_FILENO};
static_assert(std::atomic<int>::is_always_lock_free);

// A fixed buffer the signal handler formats into: no allocation, no stdio.
class SignalSafeLine {
 public:
  void Append(const char* text) {
    while (*text != '\0' && length_ < sizeof bytes_) bytes_[length_++] = *text++;
  }
  void AppendNumber(uint64_t value, unsigned base) {
    char digits[24];
    int count = 0;
    do {
      digits[count++] = "0123456789abcdef"[value % base];
      value /= base;
    } while (value != 0);
    while (count > 0 && length_ < sizeof bytes_) bytes_[length_++] = digits[--count];
  }
  void AppendInt(int64_t value) {
    if (value < 0) Append("-");
    AppendNumber(value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value), 10);
  }
  void WriteTo(int fd) const {
    size_t done = 0;
    while (done < length_) {
      const ssize_t n = ::write(fd, bytes_ + done, length_ - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // nowhere left to report; the exit code still says it
      done += static_cast<size_t>(n);
    }
  }

 private:
  char bytes_[160];
  size_t length_ = 0;
};

// The blocked call's first argument, from the registers the kernel saved for the handler.
bool FirstArgument([[maybe_unused]] const void* context, [[maybe_unused]] uint64_t* value) {
#if defined(__x86_64__)
  *value =
      static_cast<uint64_t>(static_cast<const ucontext_t*>(context)->uc_mcontext.gregs[REG_RDI]);
  return true;
#elif defined(__aarch64__)
  *value = static_cast<const ucontext_t*>(context)->uc_mcontext.regs[0];
  return true;
#else
  return false;
#endif
}

// Async-signal-safe: only write(2) and _exit(2).
void OnBlockedSystemCall(int, siginfo_t* info, void* context) {
  SignalSafeLine line;
  line.Append("sandbox: blocked system call ");
  const BlockedCall* blocked = nullptr;
  for (const BlockedCall& call : kBlockedCalls) {
    if (call.syscall == info->si_syscall) blocked = &call;
  }
  uint64_t argument = 0;
  if (blocked == nullptr) {
    line.Append("#");
    line.AppendInt(info->si_syscall);
  } else {
    line.Append(blocked->name);
    if (blocked->condition == Condition::kFamilyNotUnix && FirstArgument(context, &argument)) {
      line.Append("(family=");
      line.AppendInt(static_cast<int32_t>(argument));  // the kernel reads an int
      line.Append(")");
    } else if (blocked->condition == Condition::kWithoutCloneThread &&
               FirstArgument(context, &argument)) {
      line.Append("(flags=0x");
      line.AppendNumber(argument, 16);
      line.Append(")");
    }
  }
  line.Append("\n");
  line.WriteTo(g_report_fd.load());
  ::_exit(kSandboxViolationExitCode);
}

Status SeccompError(const std::string& what, int rc) {
  return Internal("enter the sandbox: " + what + ": " + std::strerror(-rc));
}

// Owns a libseccomp filter under construction.
class SeccompFilter {
 public:
  SeccompFilter() : context_(::seccomp_init(SCMP_ACT_ALLOW)) {}
  ~SeccompFilter() {
    if (context_ != nullptr) ::seccomp_release(context_);
  }
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;
  scmp_filter_ctx get() const { return context_; }

 private:
  scmp_filter_ctx context_;
};

// Conditions are built as plain structs: libseccomp's SCMP_A0 macros are C compound literals,
// which -Wpedantic rejects in C++.
Status AddRule(const SeccompFilter& filter, const BlockedCall& call) {
  scmp_arg_cmp condition{};
  unsigned count = 1;
  switch (call.condition) {
    case Condition::kAlways:
      count = 0;
      break;
    case Condition::kFamilyNotUnix:
      condition = {0, SCMP_CMP_NE, AF_UNIX, 0};
      break;
    case Condition::kWithoutCloneThread:
      condition = {0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0};
      break;
  }
  const int rc = ::seccomp_rule_add_array(filter.get(), SCMP_ACT_TRAP, call.syscall, count,
                                          count == 0 ? nullptr : &condition);
  if (rc != 0) return SeccompError(std::string("add the rule for ") + call.name, rc);
  return Status::Ok();
}

}  // namespace

Status EnterSandbox(int report_fd) {
  if (report_fd < 0) {
    return InvalidArgument("enter the sandbox: report_fd is " + std::to_string(report_fd));
  }
  // A crashing kernel must not leave a core file (its inputs, maybe secrets) on the node.
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    return ErrnoError("enter the sandbox: set RLIMIT_CORE to 0", errno);
  }

  g_report_fd.store(report_fd);
  struct sigaction action {};
  action.sa_sigaction = OnBlockedSystemCall;
  action.sa_flags = SA_SIGINFO;
  ::sigfillset(&action.sa_mask);
  if (::sigaction(SIGSYS, &action, nullptr) != 0) {
    return ErrnoError("enter the sandbox: install the SIGSYS handler", errno);
  }
  // A blocked SIGSYS would make the kernel kill the process without the report; threads started
  // from here on inherit this mask.
  sigset_t sigsys;
  ::sigemptyset(&sigsys);
  ::sigaddset(&sigsys, SIGSYS);
  if (const int rc = ::pthread_sigmask(SIG_UNBLOCK, &sigsys, nullptr); rc != 0) {
    return ErrnoError("enter the sandbox: unblock SIGSYS", rc);
  }
  // Lets an unprivileged process install a filter, and keeps setuid programs from gaining rights.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL) != 0) {
    return ErrnoError("enter the sandbox: prctl(PR_SET_NO_NEW_PRIVS)", errno);
  }

  SeccompFilter filter;
  if (filter.get() == nullptr) return Internal("enter the sandbox: seccomp_init failed");
  // Threads that OpenMP or OpenBLAS started already must be confined too.
  if (const int rc = ::seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return SeccompError("enable thread synchronisation", rc);
  }
  // A call through another ABI (int 0x80, x32) would bypass the x86_64 rules. Kill the whole
  // process, not just the thread libseccomp's default kills, so the harness sees it end.
  if (const int rc =
          ::seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
      rc != 0) {
    return SeccompError("set the action for other architectures", rc);
  }
  for (const BlockedCall& call : kBlockedCalls) KF_RETURN_IF_ERROR(AddRule(filter, call));
  // clone3 passes its flags in memory the filter cannot read; ENOSYS makes glibc use clone.
  if (const int rc = ::seccomp_rule_add_array(filter.get(), SCMP_ACT_ERRNO(ENOSYS),
                                              SCMP_SYS(clone3), 0, nullptr);
      rc != 0) {
    return SeccompError("add the rule for clone3", rc);
  }
  if (const int rc = ::seccomp_load(filter.get()); rc != 0) {
    return SeccompError("load the filter", rc);
  }
  return Status::Ok();
}

}  // namespace kfleet::eval
