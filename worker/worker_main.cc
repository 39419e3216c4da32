// kfleet-worker: the worker daemon. Joins a coordinator, reports what this node has, runs the
// tasks it is given in child processes and keeps their results until the coordinator has them.
//
// `kfleet-worker run-task ...` (hidden) is the child side: ProcessTaskExecutor re-executes this
// binary that way for each task, payload on stdin, output on stdout, error text on stderr.
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "common/files.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "messages/curve.h"
#include "worker/capabilities.h"
#include "worker/echo_task.h"
#include "worker/kernel_tasks.h"
#include "worker/probe.h"
#include "worker/session.h"
#include "worker/task_runner.h"

namespace kfleet::worker {
namespace {

struct DaemonFlags {
  std::string join;
  std::string key_file;
  std::string name;
  uint32_t cpu_slots = 0;  // 0: one per physical core
  std::string work_dir;
  bool insecure = false;
  std::string log_level = "info";
};

struct RunTaskFlags {
  std::string kind;
  uint64_t task_id = 0;
  uint32_t attempt = 0;
  int64_t timeout_ms = 0;  // the task's limit, so that kernel evaluations finish under it
  int device = 0;          // the GPU the session gave a CUDA task
};

// Exit codes of `run-task`; any nonzero one is a failed attempt, the numbers help a person.
constexpr int kTaskFailed = 1;
constexpr int kTaskUnrunnable = 2;

// Threads for the kernels and the baseline of kernel tasks: KFLEET_TASK_THREADS, else 0 (every
// core). A worker with several CPU slots sets it so that concurrent tasks do not oversubscribe.
int TaskThreads() {
  const char* text = std::getenv("KFLEET_TASK_THREADS");
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  const long threads = std::strtol(text, &end, 10);
  return *end == '\0' && threads > 0 && threads <= 4096 ? static_cast<int>(threads) : 0;
}

Result<std::string> RunKernelTaskInScratch(const RunTaskFlags& flags, std::string_view payload) {
  // A fresh directory per attempt, removed when it ends, whatever the task left there.
  KF_ASSIGN_OR_RETURN(TempDir scratch,
                      TempDir::Create("kfleet-task-" + std::to_string(flags.task_id)));
  KernelTaskContext context;
  context.scratch_dir = scratch.path();
  context.threads = TaskThreads();
  context.timeout_ms = flags.timeout_ms;
  context.device = flags.device;
  return RunKernelTask(flags.kind, payload, context);
}

// Writes the task's output, or its error for the worker to report, and returns the exit code.
int Answer(const Result<std::string>& output) {
  if (!output.ok()) {
    std::cerr << output.status().message() << "\n";
    return kTaskFailed;
  }
  std::cout << *output << std::flush;
  return std::cout.good() ? 0 : kTaskFailed;
}

int RunTask(const RunTaskFlags& flags) {
  std::string payload(std::istreambuf_iterator<char>(std::cin), {});
  if (std::cin.bad()) {
    std::cerr << "run-task: cannot read the payload from standard input\n";
    return kTaskUnrunnable;
  }
  if (IsKernelTaskKind(flags.kind)) return Answer(RunKernelTaskInScratch(flags, payload));
  if (flags.kind != "echo") {
    std::cerr << UnknownKindError(flags.kind).message() << "\n";
    return kTaskUnrunnable;
  }
  Result<EchoPayloadMessage> echo = DecodeEchoPayload(payload);
  if (!echo.ok()) {
    std::cerr << echo.status().message() << "\n";
    return kTaskUnrunnable;
  }
  return Answer(RunEcho(echo->root(), flags.task_id, flags.attempt));
}

// Node names become directory names and log values: the coordinator's rule, checked early.
bool IsValidNodeName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '-' || name[0] == '.') return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// NULL-mechanism traffic is unauthenticated and unencrypted, so it must not leave the machine.
bool IsLoopbackEndpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  const size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  in_addr address{};
  if (::inet_pton(AF_INET, std::string(host).c_str(), &address) != 1) return false;
  return (ntohl(address.s_addr) >> 24) == 127;
}

struct Connection {
  std::string endpoint;
  std::string name;
  std::optional<msg::ClientCredentials> credentials;
};

Result<Connection> ResolveConnection(const DaemonFlags& flags) {
  Connection connection;
  if (flags.insecure) {
    if (!flags.key_file.empty()) {
      return InvalidArgument("--insecure and --key exclude each other: a key means CURVE");
    }
    if (flags.name.empty() || flags.join.empty()) {
      return InvalidArgument("--insecure needs --name NAME and --join ENDPOINT");
    }
    if (!IsLoopbackEndpoint(flags.join)) {
      return InvalidArgument("--insecure is for a coordinator on this machine, and '" + flags.join +
                             "' is not loopback (127.0.0.0/8, [::1], localhost) or ipc://; join "
                             "a remote coordinator with the key file from `kfleet nodes invite`");
    }
    connection.endpoint = flags.join;
    connection.name = flags.name;
    return connection;
  }
  if (flags.key_file.empty()) {
    return InvalidArgument(
        "give --key FILE (written by `kfleet nodes invite NAME` on the coordinator), or "
        "--insecure --name NAME --join ENDPOINT for a coordinator on this machine");
  }
  KF_ASSIGN_OR_RETURN(msg::ClientCredentials credentials,
                      msg::LoadClientCredentials(flags.key_file));
  if (!flags.name.empty() && flags.name != credentials.name) {
    return InvalidArgument("--name " + flags.name +
                           " does not match the key file, which was "
                           "issued for '" +
                           credentials.name +
                           "'; a worker may only join under "
                           "its key's name");
  }
  connection.endpoint = flags.join.empty() ? credentials.endpoint : flags.join;
  connection.name = credentials.name;
  if (connection.endpoint.empty()) {
    return InvalidArgument(flags.key_file + " names no coordinator endpoint; give --join ENDPOINT");
  }
  connection.credentials = std::move(credentials);
  return connection;
}

Result<std::filesystem::path> WorkDir(const DaemonFlags& flags, const std::string& name) {
  if (!flags.work_dir.empty()) return std::filesystem::path(flags.work_dir);
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state != '\0') {
    return std::filesystem::path(state) / "kfleet-worker" / name;
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    return InvalidArgument(
        "HOME is not set, so there is no default work directory; give "
        "--work-dir DIR");
  }
  return std::filesystem::path(home) / ".local/state/kfleet-worker" / name;
}

// Held for the life of the process: two workers sharing a spool would resend each other's
// results and fight over their acknowledgements.
Status LockWorkDir(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "worker.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("open " + path.string(), errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd);  // the lock's failure is what the caller needs to hear about
    if (error == EWOULDBLOCK) {
      return FailedPrecondition("another kfleet-worker is using " + dir.string() +
                                "; stop it, or give this one another --work-dir");
    }
    return ErrnoError("lock " + path.string(), error);
  }
  return Status::Ok();
}

// SIGINT and SIGTERM are read from a signalfd the poll loop watches. They must be blocked before
// any thread starts (ZeroMQ's, the task threads), so that no thread takes them the default way.
Result<int> BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (const int rc = ::pthread_sigmask(SIG_BLOCK, &signals, nullptr); rc != 0) {
    return ErrnoError("block SIGINT and SIGTERM", rc);
  }
  const int fd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return ErrnoError("create a signalfd", errno);
  return fd;
}

std::string ReadSignalName(int signal_fd) {
  signalfd_siginfo info{};
  if (::read(signal_fd, &info, sizeof info) != sizeof info) return "a stop signal";
  const char* name = ::sigabbrev_np(static_cast<int>(info.ssi_signo));
  return name != nullptr ? std::string("SIG") + name : "signal " + std::to_string(info.ssi_signo);
}

void PrintLine(const std::string& line, bool problem) {
  (problem ? std::cerr : std::cout) << line << std::endl;
}

int RunDaemon(const DaemonFlags& flags) {
  Result<log::Level> level = log::ParseLevel(flags.log_level);
  if (!level.ok()) {
    std::cerr << "kfleet-worker: --log-level: " << level.status().message() << "\n";
    return 2;
  }
  if (Status logging = log::Init({*level, ""}); !logging.ok()) {
    std::cerr << "kfleet-worker: " << logging.message() << "\n";
    return 1;
  }
  Result<Connection> connection = ResolveConnection(flags);
  if (!connection.ok()) {
    std::cerr << "kfleet-worker: " << connection.status().message() << "\n";
    return 2;
  }
  if (!IsValidNodeName(connection->name)) {
    std::cerr << "kfleet-worker: node name '" << connection->name
              << "' is not valid: use 1-64 letters, digits, '-', '_' or '.'\n";
    return 2;
  }
  Result<int> signal_fd = BlockStopSignals();
  if (!signal_fd.ok()) {
    std::cerr << "kfleet-worker: " << signal_fd.status().message() << "\n";
    return 1;
  }
  Result<std::filesystem::path> work_dir = WorkDir(flags, connection->name);
  Status prepared = work_dir.ok() ? MakeDirs(*work_dir, /*private_dir=*/true) : work_dir.status();
  if (prepared.ok()) prepared = LockWorkDir(*work_dir);
  if (!prepared.ok()) {
    std::cerr << "kfleet-worker: work directory: " << prepared.message() << "\n";
    return 1;
  }

  SessionOptions options;
  options.endpoint = connection->endpoint;
  options.credentials = connection->credentials;
  options.node_name = connection->name;
  options.worker_version = KFLEET_VERSION;
  options.probe = ProbeNode(ProbeOptions{});
  for (const std::string& note : options.probe.notes) {
    log::Info("worker.probe_note").Kv("node", connection->name).Kv("note", note);
  }
  options.slots = DefaultSlots(options.probe);
  if (flags.cpu_slots > 0) options.slots.cpu = flags.cpu_slots;
  options.spool_dir = *work_dir / "results";
  options.on_status = PrintLine;
  PrintLine("kfleet-worker " + connection->name + ": " +
                DescribeNode(options.probe, options.slots) + ", joining " + connection->endpoint +
                (flags.insecure ? " (insecure)" : ""),
            false);

  Result<std::shared_ptr<WakeupFd>> wakeup = WakeupFd::Create();
  if (!wakeup.ok()) {
    std::cerr << "kfleet-worker: " << wakeup.status().message() << "\n";
    return 1;
  }
  ProcessExecutorOptions executor_options;
  executor_options.cwd = *work_dir;
  zmq::context_t context;
  Result<std::unique_ptr<WorkerSession>> session =
      WorkerSession::Create(context, std::move(options),
                            std::make_unique<ProcessTaskExecutor>(executor_options, *wakeup));
  if (!session.ok()) {
    std::cerr << "kfleet-worker: " << session.status().message() << "\n";
    return 1;
  }
  WorkerSession* sessions[] = {session->get()};
  Result<bool> signalled = RunSessionLoop(sessions, SystemClock(), *signal_fd);
  if (!signalled.ok()) {
    log::Error("worker.loop_failed").Kv("error", signalled.status());
    (*session)->Shutdown("the worker's poll loop failed: " + signalled.status().message());
    return 1;
  }
  if (*signalled) (*session)->Shutdown(ReadSignalName(*signal_fd) + " received");
  return (*session)->exit_code();
}

}  // namespace
}  // namespace kfleet::worker

int main(int argc, char** argv) {
  using kfleet::worker::DaemonFlags;
  using kfleet::worker::RunTaskFlags;
  CLI::App app{"kfleet-worker: joins a kfleet coordinator and runs the tasks it assigns"};
  app.set_version_flag("--version", std::string("kfleet-worker ") + KFLEET_VERSION);
  DaemonFlags daemon;
  app.add_option("--join", daemon.join,
                 "Coordinator endpoint, e.g. tcp://HOST:7600 (default: the one in the key file)");
  app.add_option("--key", daemon.key_file,
                 "Credential file from `kfleet nodes invite NAME`: name, endpoint and CURVE keys");
  app.add_option("--name", daemon.name,
                 "Node name (default: the key's name; required with --insecure)");
  app.add_option("--cpu-slots", daemon.cpu_slots, "CPU tasks run at once (default: physical cores)")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--work-dir", daemon.work_dir,
                 "Where results wait for the coordinator's ack (default: "
                 "~/.local/state/kfleet-worker/NAME)");
  app.add_flag("--insecure", daemon.insecure,
               "No encryption or authentication (ZeroMQ NULL); loopback and ipc:// only");
  app.add_option("--log-level", daemon.log_level, "debug, info, warn, error or off")
      ->capture_default_str();

  // The child side of ProcessTaskExecutor; an empty group keeps it out of --help.
  RunTaskFlags task;
  CLI::App* run_task = app.add_subcommand("run-task", "Run one task (used by the worker itself)");
  run_task->group("");
  run_task->add_option("--kind", task.kind, "Task kind")->required();
  run_task->add_option("--task-id", task.task_id, "Task id")->required();
  run_task->add_option("--attempt", task.attempt, "Attempt")->required();
  run_task->add_option("--timeout-ms", task.timeout_ms, "The task's time limit (0: none)");
  run_task->add_option("--device", task.device, "GPU index of a CUDA task (default 0)")
      ->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; usage errors exit 2 like other Unix tools.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (run_task->parsed()) return kfleet::worker::RunTask(task);
  return kfleet::worker::RunDaemon(daemon);
}
