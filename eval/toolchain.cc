#include "eval/toolchain.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <system_error>
#include <utility>

#include "common/files.h"
#include "common/ids.h"
#include "common/temp_dir.h"

namespace kfleet::eval {

// Generated from include/kfleet/kernel.h by cmake/EmbedText.cmake (eval/CMakeLists.txt).
extern const char kKernelAbiHeader[];

namespace {

namespace fs = std::filesystem;

// One cache entry, <cache>/<key>/, holds the compile's working directory as it was, so its
// `command` can be rerun there by hand.
constexpr const char* kSourceName = "kernel.cpp";
constexpr const char* kLibraryName = "kernel.so";
constexpr const char* kLogName = "compile.log";
// Present instead of kernel.so when the compiler rejected the source, so it is not recompiled.
constexpr const char* kFailedMarkerName = "compile-failed";
constexpr size_t kMaxLogBytes = size_t{16} << 20;

// CMake passes OpenBLAS's directories and libraries colon-separated, as in PATH.
std::vector<std::string> SplitColons(std::string_view text) {
  std::vector<std::string> parts;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(':', begin);
    if (end == std::string_view::npos) end = text.size();
    if (end > begin) parts.emplace_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return parts;
}

// For display only: quotes an argument that a shell would split or expand.
std::string ShellWord(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_=+.,/:@%") == std::string::npos) {
    return arg;
  }
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string JoinCommand(const std::vector<std::string>& argv) {
  std::string command;
  for (const std::string& arg : argv) {
    if (!command.empty()) command += ' ';
    command += ShellWord(arg);
  }
  return command;
}

std::string CacheKey(std::string_view identity, const std::vector<std::string>& flags,
                     std::string_view source) {
  Sha256 hash;
  // Each field is length-prefixed, so moving bytes between fields changes the key.
  const auto field = [&hash](std::string_view bytes) {
    hash.Update(std::to_string(bytes.size()));
    hash.Update(":");
    hash.Update(bytes);
  };
  field(identity);
  field(KernelAbiHeader());
  field(std::to_string(flags.size()));
  for (const std::string& flag : flags) field(flag);
  field(source);
  return hash.FinishHex();
}

// fsync through a read-only descriptor; works for files and directories alike.
Status SyncPath(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open " + path.string() + " to sync it", errno);
  const int sync_rc = ::fsync(fd);
  const int sync_errno = errno;
  if (::close(fd) != 0 && sync_rc == 0) return ErrnoError("close " + path.string(), errno);
  if (sync_rc != 0) return ErrnoError("fsync " + path.string(), sync_errno);
  return Status::Ok();
}

Result<bool> PathExists(const fs::path& path) {
  std::error_code error;
  const bool exists = fs::exists(path, error);
  if (error) return IoError("check " + path.string() + ": " + error.message());
  return exists;
}

// Runs `argv` to completion and returns its stdout; any failure names the compiler.
Result<std::string> QueryCompiler(ProcessRunner& runner, const std::vector<std::string>& argv,
                                  int64_t timeout_ms) {
  ProcessSpec spec;
  spec.argv = argv;
  spec.timeout_ms = timeout_ms;
  spec.env = {"LC_ALL=C"};
  const std::string command = JoinCommand(argv);
  Result<ProcessResult> run = runner.Run(spec);
  if (!run.ok() && run.status().code() == ErrorCode::kNotFound) {
    return NotFound("compiler '" + argv[0] + "' not found (" + run.status().message() + ")");
  }
  if (!run.ok()) return run.status().WithContext("compiler '" + argv[0] + "'");
  if (!run->Succeeded()) {
    return FailedPrecondition("compiler '" + argv[0] + "' does not work: `" + command + "` " +
                              run->Describe() + ": " + run->stderr_bytes);
  }
  return std::move(run->stdout_bytes);
}

// What the log says after the compiler's own output: how it ended, when that is not plain.
std::string LogTrailer(const ProcessResult& run, std::string_view compiler, int64_t timeout_ms) {
  std::string trailer;
  if (run.stdout_truncated || run.stderr_truncated) {
    trailer += "kfleet: compiler output truncated\n";
  }
  if (run.timed_out) {
    trailer += "kfleet: " + std::string(compiler) + " timed out after " +
               std::to_string(timeout_ms) + " ms (killed; not cached)\n";
  } else if (run.term_signal != 0) {
    trailer += "kfleet: " + std::string(compiler) + " " + run.Describe() + " (not cached)\n";
  } else if (run.exit_code != 0) {
    trailer += "kfleet: " + std::string(compiler) + " " + run.Describe() + "\n";
  }
  return trailer;
}

// Relative paths, run inside the work directory: the command is the same for every compile and
// can be rerun in the cache entry. Flags follow the source so that -l libraries still link when
// the linker defaults to --as-needed.
std::vector<std::string> CompileArgv(const std::string& compiler,
                                     const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {compiler, "-Iinclude", kSourceName, "-o", kLibraryName};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return argv;
}

class CpuToolchain final : public Toolchain {
 public:
  CpuToolchain(std::string name, std::string identity, CompileOptions options,
               ProcessRunner& runner)
      : name_(std::move(name)),
        identity_(std::move(identity)),
        compiler_(std::move(options.compiler)),
        flags_(std::move(options.flags)),
        cache_dir_(std::move(options.cache_dir)),
        timeout_ms_(options.timeout_ms),
        argv_(CompileArgv(compiler_, flags_)),
        runner_(runner) {}

  std::string_view name() const override { return name_; }

  Result<CompiledKernel> Compile(std::string_view source) override {
    CompiledKernel kernel;
    kernel.key = CacheKey(identity_, flags_, source);
    kernel.command = JoinCommand(argv_);
    const fs::path entry = cache_dir_ / kernel.key;
    KF_ASSIGN_OR_RETURN(bool hit, ReadEntry(entry, &kernel));
    if (hit) {
      kernel.cache_hit = true;
      return kernel;
    }

    KF_RETURN_IF_ERROR(MakeDirs(cache_dir_).WithContext("kernel cache"));
    KF_ASSIGN_OR_RETURN(TempDir work, TempDir::Create("tmp", cache_dir_));
    KF_RETURN_IF_ERROR(WriteFileAtomic(work.path() / kSourceName, source));
    const fs::path header_dir = work.path() / "include" / "kfleet";
    KF_RETURN_IF_ERROR(MakeDirs(header_dir));
    KF_RETURN_IF_ERROR(WriteFileAtomic(header_dir / "kernel.h", KernelAbiHeader()));

    ProcessSpec spec;
    spec.argv = argv_;
    spec.cwd = work.path();
    spec.timeout_ms = timeout_ms_;
    // Plain ASCII diagnostics, the same on every machine, for people and agents reading the log.
    spec.env = {"LC_ALL=C"};
    Result<ProcessResult> ran = runner_.Run(spec);
    if (!ran.ok()) return ran.status().WithContext("compile kernel " + kernel.key);
    const ProcessResult& run = ran.value();
    kernel.seconds = static_cast<double>(run.wall_ms) / 1000.0;
    kernel.log = run.stdout_bytes + run.stderr_bytes + LogTrailer(run, compiler_, timeout_ms_);
    // A timeout or a killed compiler says more about the machine's load than about the source.
    if (run.timed_out || run.term_signal != 0) {
      kernel.timed_out = run.timed_out;
      return kernel;
    }

    KF_ASSIGN_OR_RETURN(bool built, PathExists(work.path() / kLibraryName));
    const bool compiled = run.exit_code == 0 && built;
    if (compiled) {
      KF_RETURN_IF_ERROR(SyncPath(work.path() / kLibraryName));
    } else {
      if (run.exit_code == 0) kernel.log += "kfleet: the compiler exited 0 but wrote no library\n";
      KF_RETURN_IF_ERROR(WriteFileAtomic(work.path() / kFailedMarkerName, run.Describe() + "\n"));
    }
    KF_RETURN_IF_ERROR(WriteFileAtomic(work.path() / kLogName, kernel.log));

    // rename() makes the entry appear whole. When another thread or process won the race, the
    // target is a non-empty directory and the rename fails; its entry is as good as ours.
    if (::rename(work.path().c_str(), entry.c_str()) != 0) {
      const int rename_errno = errno;
      if (rename_errno != ENOTEMPTY && rename_errno != EEXIST) {
        return ErrnoError("move " + work.path().string() + " to " + entry.string(), rename_errno);
      }
      const double seconds = kernel.seconds;
      KF_ASSIGN_OR_RETURN(bool winner, ReadEntry(entry, &kernel));
      if (!winner) return Internal("kernel cache entry " + entry.string() + " vanished");
      kernel.seconds = seconds;
      return kernel;
    }
    KF_RETURN_IF_ERROR(SyncPath(cache_dir_));
    kernel.ok = compiled;
    kernel.log_path = entry / kLogName;
    if (compiled) kernel.library = entry / kLibraryName;
    return kernel;
  }

 private:
  // Fills `kernel` from a finished entry; false when there is none. Entries only appear through
  // the rename in Compile, so one without a library or a failure marker was damaged by hand.
  static Result<bool> ReadEntry(const fs::path& entry, CompiledKernel* kernel) {
    KF_ASSIGN_OR_RETURN(bool exists, PathExists(entry));
    if (!exists) return false;
    const auto damaged = [&entry](const std::string& why) {
      return Corruption("kernel cache entry " + entry.string() + " " + why +
                        "; delete the directory to recompile");
    };
    Result<std::string> log = ReadFile(entry / kLogName, kMaxLogBytes);
    if (!log.ok()) {
      return damaged("has no readable " + std::string(kLogName) + " (" + log.status().message() +
                     ")");
    }
    KF_ASSIGN_OR_RETURN(bool has_library, PathExists(entry / kLibraryName));
    KF_ASSIGN_OR_RETURN(bool has_marker, PathExists(entry / kFailedMarkerName));
    if (has_library == has_marker) {
      return damaged("has " + std::string(has_library ? "both" : "neither") + " " + kLibraryName +
                     " and " + kFailedMarkerName);
    }
    kernel->ok = has_library;
    kernel->library = has_library ? entry / kLibraryName : fs::path();
    kernel->log_path = entry / kLogName;
    kernel->log = std::move(log).value();
    return true;
  }

  const std::string name_;
  const std::string identity_;
  const std::string compiler_;
  const std::vector<std::string> flags_;
  const fs::path cache_dir_;
  const int64_t timeout_ms_;
  const std::vector<std::string> argv_;
  ProcessRunner& runner_;
};

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

std::vector<std::string> DefaultCpuFlags() {
  std::vector<std::string> flags = {"-O3",     "-march=native", "-fopenmp",
                                    "-shared", "-fPIC",         "-std=c++17"};
  // The directories the kfleet build itself used (eval/CMakeLists.txt); the rpath makes the
  // kernel load that same OpenBLAS when the harness has not loaded one already. A binary copied
  // to a machine without OpenBLAS's headers compiles kernels without it: one that includes
  // <cblas.h> then fails to compile, saying so, instead of every kernel failing to link.
  const std::vector<std::string> include_dirs = SplitColons(KFLEET_OPENBLAS_INCLUDE_DIRS);
  std::error_code ec;
  if (include_dirs.empty() || !fs::exists(fs::path(include_dirs.front()) / "cblas.h", ec)) {
    return flags;
  }
  for (const std::string& dir : include_dirs) {
    flags.push_back("-I" + dir);
  }
  for (const std::string& dir : SplitColons(KFLEET_OPENBLAS_LIBRARY_DIRS)) {
    flags.push_back("-L" + dir);
    flags.push_back("-Wl,-rpath," + dir);
  }
  for (const std::string& library : SplitColons(KFLEET_OPENBLAS_LIBRARIES)) {
    flags.push_back("-l" + library);
  }
  return flags;
}

fs::path DefaultKernelCacheDir() {
  const char* kfleet = std::getenv("KFLEET_CACHE_DIR");
  if (kfleet != nullptr && kfleet[0] != '\0') return fs::path(kfleet) / "kernels";
  // XDG: an empty or relative XDG_CACHE_HOME is to be ignored.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return fs::path(xdg) / "kfleet" / "kernels";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return fs::path(home) / ".cache" / "kfleet" / "kernels";
  return fs::path("/tmp/kfleet-" + std::to_string(::getuid())) / "kernels";
}

std::string_view KernelAbiHeader() { return kKernelAbiHeader; }

Result<std::unique_ptr<Toolchain>> MakeCpuToolchain(CompileOptions options, ProcessRunner& runner) {
  if (options.compiler.empty()) return InvalidArgument("compile options: compiler is empty");
  if (options.timeout_ms <= 0) {
    return InvalidArgument("compile options: timeout_ms is " + std::to_string(options.timeout_ms) +
                           "; it must be positive");
  }
  if (options.cache_dir.empty()) options.cache_dir = DefaultKernelCacheDir();

  KF_ASSIGN_OR_RETURN(std::string version,
                      QueryCompiler(runner, {options.compiler, "--version"}, options.timeout_ms));
  const std::string version_line = FirstLine(version);
  // "g++ (Debian 12.2.0-14+deb12u1) 12.2.0": the version is the last word.
  const size_t last_space = version_line.find_last_of(' ');
  const std::string short_version =
      last_space == std::string::npos ? version_line : version_line.substr(last_space + 1);
  const std::string name = fs::path(options.compiler).filename().string() + " " + short_version;

  // -march=native means different instructions on different CPUs; a cache directory shared
  // between machines must not hand one machine's library to another.
  std::string identity = version_line;
  std::vector<std::string> native_query = {options.compiler};
  for (const std::string& flag : options.flags) {
    if (flag.starts_with("-m") && flag.find("native") != std::string::npos) {
      native_query.push_back(flag);
    }
  }
  if (native_query.size() > 1) {
    native_query.insert(native_query.end(), {"-Q", "--help=target"});
    KF_ASSIGN_OR_RETURN(std::string target,
                        QueryCompiler(runner, native_query, options.timeout_ms));
    identity += "\n" + target;
  }
  return std::unique_ptr<Toolchain>(
      std::make_unique<CpuToolchain>(name, std::move(identity), std::move(options), runner));
}

}  // namespace kfleet::eval
