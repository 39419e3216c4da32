// The sandbox a candidate kernel runs in: a seccomp filter, entered by the harness process after
// it has set itself up and before it loads the kernel. It keeps a kernel from reaching the
// network or starting programs; threads (OpenMP, OpenBLAS) keep working.
#pragma once

#include "common/status.h"

namespace kfleet::eval {

// Exit code of a process the sandbox stopped for a forbidden system call.
inline constexpr int kSandboxViolationExitCode = 86;

// Sets RLIMIT_CORE to 0 and PR_SET_NO_NEW_PRIVS, then installs a seccomp filter on every thread of
// the calling process (threads started later inherit it). From then on these raise SIGSYS:
//  - socket() / socketpair() with a family other than AF_UNIX,
//  - fork, vfork, and clone without CLONE_THREAD (new processes; new threads stay allowed),
//  - execve, execveat, ptrace, process_vm_writev, io_uring_setup;
// and clone3 fails with ENOSYS, so glibc falls back to clone, whose flags the filter can see.
// System calls of another ABI (i386 int 0x80, x32) kill the process.
// The SIGSYS handler writes one line to `report_fd`, e.g.
// "sandbox: blocked system call socket(family=2)", and exits with kSandboxViolationExitCode. A
// thread that has SIGSYS blocked when it makes such a call (glibc's posix_spawn blocks every
// signal around its clone) is killed by SIGSYS instead, without the line: treat that as a
// violation too.
// There is no way out again: call it in the process that is to be confined, after its setup.
Status EnterSandbox(int report_fd);

}  // namespace kfleet::eval
