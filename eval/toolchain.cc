#include "eval/toolchain.h"

#include <cxxabi.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
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
constexpr const char* kCpuSourceName = "kernel.cpp";
constexpr const char* kCudaSourceName = "kernel.cu";
constexpr const char* kLibraryName = "kernel.so";
constexpr const char* kLogName = "compile.log";
// Present instead of kernel.so when the compiler rejected the source, so it is not recompiled.
constexpr const char* kFailedMarkerName = "compile-failed";
constexpr size_t kMaxLogBytes = size_t{16} << 20;

// CMake passes OpenBLAS's and CUDA's directories and libraries colon-separated, as in PATH.
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
std::vector<std::string> CompileArgv(const std::string& compiler, const std::string& source_name,
                                     const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {compiler, "-Iinclude", source_name, "-o", kLibraryName};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return argv;
}

// The CPU and CUDA toolchains: they differ only in the source file's name and in how the
// compiler's identity was found.
class CachingToolchain final : public Toolchain {
 public:
  CachingToolchain(std::string name, std::string identity, std::string source_name,
                   CompileOptions options, ProcessRunner& runner)
      : name_(std::move(name)),
        identity_(std::move(identity)),
        source_name_(std::move(source_name)),
        compiler_(std::move(options.compiler)),
        flags_(std::move(options.flags)),
        cache_dir_(std::move(options.cache_dir)),
        timeout_ms_(options.timeout_ms),
        argv_(CompileArgv(compiler_, source_name_, flags_)),
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
    KF_RETURN_IF_ERROR(WriteFileAtomic(work.path() / source_name_, source));
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
    kernel.resources = SummarizePtxasReport(kernel.log);
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
    kernel->resources = SummarizePtxasReport(kernel->log);
    return true;
  }

  const std::string name_;
  const std::string identity_;
  const std::string source_name_;
  const std::string compiler_;
  const std::vector<std::string> flags_;
  const fs::path cache_dir_;
  const int64_t timeout_ms_;
  const std::vector<std::string> argv_;
  ProcessRunner& runner_;
};

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// What every toolchain checks first; fills in the default cache dir.
Status PrepareOptions(CompileOptions& options) {
  if (options.compiler.empty()) return InvalidArgument("compile options: compiler is empty");
  if (options.timeout_ms <= 0) {
    return InvalidArgument("compile options: timeout_ms is " + std::to_string(options.timeout_ms) +
                           "; it must be positive");
  }
  if (options.cache_dir.empty()) options.cache_dir = DefaultKernelCacheDir();
  return Status::Ok();
}

// $KFLEET_CUDA_HOME: the GPU machine may keep CUDA where this build never looked.
std::optional<fs::path> CudaHomeOverride() {
  const char* home = std::getenv("KFLEET_CUDA_HOME");
  if (home == nullptr || home[0] == '\0') return std::nullopt;
  return fs::path(home);
}

// "13.0.88" from nvcc's "Cuda compilation tools, release 13.0, V13.0.88"; else the first line.
std::string NvccVersion(const std::string& version_text) {
  constexpr std::string_view kMarker = ", V";
  const size_t at = version_text.find(kMarker);
  if (at == std::string::npos) return FirstLine(version_text);
  const size_t begin = at + kMarker.size();
  return version_text.substr(begin, version_text.find_first_of(" \r\n", begin) - begin);
}

// The number written just before `unit` in `line` ("Used 40 registers" with " registers").
std::optional<uint64_t> NumberBefore(std::string_view line, std::string_view unit) {
  const size_t at = line.find(unit);
  if (at == std::string_view::npos) return std::nullopt;
  size_t begin = at;
  while (begin > 0 && line[begin - 1] >= '0' && line[begin - 1] <= '9') --begin;
  uint64_t number = 0;
  if (std::from_chars(line.data() + begin, line.data() + at, number).ec != std::errc()) {
    return std::nullopt;  // no digits, or too many
  }
  return number;
}

// "Scale<256>" for "_Z5ScaleILi256EEvPKfPfl" (demangled "void Scale<256>(float const*, ...)"):
// no return type, no parameters. Names that do not demangle (extern "C") stay as they are.
std::string ShortKernelName(const std::string& symbol) {
  int status = 0;
  const std::unique_ptr<char, decltype(&std::free)> demangled(
      abi::__cxa_demangle(symbol.c_str(), nullptr, nullptr, &status), &std::free);
  if (status != 0 || demangled == nullptr) return symbol;
  std::string_view name = demangled.get();
  // The parameter list is the parenthesized group the name ends with.
  int depth = 0;
  for (size_t i = name.size(); i > 0; --i) {
    if (name[i - 1] == ')') ++depth;
    if (name[i - 1] == '(' && --depth == 0) {
      name = name.substr(0, i - 1);
      break;
    }
  }
  // A return type ("void " for templates) ends at the last space outside <> and ().
  size_t start = 0;
  depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<' || name[i] == '(') ++depth;
    if (name[i] == '>' || name[i] == ')') --depth;
    if (name[i] == ' ' && depth == 0) start = i + 1;
  }
  return std::string(name.substr(start));
}

}  // namespace

std::string SummarizePtxasReport(std::string_view log) {
  struct Entry {
    std::string symbol;
    uint64_t registers = 0;
    uint64_t spill_bytes = 0;
    uint64_t smem_bytes = 0;
  };
  std::vector<Entry> entries;
  // "Function properties for X" also describes device functions ptxas did not inline; only
  // the entry's own stack line counts.
  bool in_entry_properties = false;
  size_t begin = 0;
  while (begin < log.size()) {
    const size_t end = std::min(log.find('\n', begin), log.size());
    const std::string_view line = log.substr(begin, end - begin);
    begin = end + 1;
    constexpr std::string_view kEntry = "Compiling entry function '";
    constexpr std::string_view kProperties = "Function properties for ";
    if (const size_t entry_at = line.find(kEntry); entry_at != std::string_view::npos) {
      const std::string_view rest = line.substr(entry_at + kEntry.size());
      entries.push_back({std::string(rest.substr(0, rest.find('\''))), 0, 0, 0});
      in_entry_properties = false;
    } else if (entries.empty()) {
      continue;
    } else if (const size_t of_at = line.find(kProperties); of_at != std::string_view::npos) {
      in_entry_properties = line.substr(of_at + kProperties.size()) == entries.back().symbol;
    } else if (std::optional<uint64_t> stores = NumberBefore(line, " bytes spill stores")) {
      if (in_entry_properties) {
        entries.back().spill_bytes = *stores + NumberBefore(line, " bytes spill loads").value_or(0);
      }
    } else if (std::optional<uint64_t> registers = NumberBefore(line, " registers")) {
      entries.back().registers = *registers;
      entries.back().smem_bytes = NumberBefore(line, " bytes smem").value_or(0);
    }
  }
  std::string summary;
  for (const Entry& entry : entries) {
    if (!summary.empty()) summary += "; ";
    summary += ShortKernelName(entry.symbol) + ": " + std::to_string(entry.registers) +
               " registers, " + std::to_string(entry.spill_bytes) + " spill bytes, " +
               std::to_string(entry.smem_bytes) + " smem bytes";
  }
  return summary;
}

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
  KF_RETURN_IF_ERROR(PrepareOptions(options));

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
  return std::unique_ptr<Toolchain>(std::make_unique<CachingToolchain>(
      name, std::move(identity), kCpuSourceName, std::move(options), runner));
}

std::vector<std::string> DefaultCudaFlags(std::string_view arch) {
  std::vector<std::string> flags = {"-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC"};
  // "sm_90" -> "90"; an arch that already names a variant ("sm_90a") is kept as it is.
  const std::string_view number = arch.starts_with("sm_") ? arch.substr(3) : arch;
  const std::string_view plain = number.substr(0, number.find_first_not_of("0123456789"));
  int major_minor = 0;
  if (plain.empty() ||
      std::from_chars(plain.data(), plain.data() + plain.size(), major_minor).ec != std::errc()) {
    // Not an arch this code knows how to spell: nvcc says what is wrong with it in the log.
    flags.push_back("--gpu-architecture=" + std::string(arch));
  } else {
    // The 'a' variants exist from Hopper (9.0) on and unlock wgmma, TMA and setmaxnreg; their
    // machine code runs on that arch alone, hence PTX of the plain arch for any later GPU.
    const std::string variant =
        std::string(number) + (number == plain && major_minor >= 90 ? "a" : "");
    flags.insert(flags.end(),
                 {"-gencode", "arch=compute_" + variant + ",code=sm_" + variant, "-gencode",
                  "arch=compute_" + std::string(plain) + ",code=compute_" + std::string(plain)});
  }
  flags.insert(flags.end(), {"-Xptxas", "-v"});

  const std::optional<fs::path> home = CudaHomeOverride();
  std::vector<std::string> include_dirs = SplitColons(KFLEET_CUDA_INCLUDE_DIRS);
  fs::path library_dir = KFLEET_CUDA_LIBRARY_DIR;
  if (home) {
    include_dirs = {(*home / "include").string()};
    std::error_code ec;
    library_dir = fs::is_directory(*home / "lib64", ec) ? *home / "lib64" : *home / "lib";
  }
  for (const std::string& dir : include_dirs) flags.push_back("-I" + dir);
  // The shared runtime rather than nvcc's default static one: the candidate then shares the
  // process's libcudart.so when one is loaded, and the library stays small.
  flags.insert(flags.end(),
               {"-L" + library_dir.string(), "-Xlinker", "-rpath=" + library_dir.string(),
                "-lcublasLt", "-lcublas", "-lcudnn", "--cudart=shared"});
  return flags;
}

CompileOptions CudaCompileOptions(std::string_view arch) {
  CompileOptions options;
  options.compiler = "nvcc";
  options.flags = DefaultCudaFlags(arch);
  return options;
}

Result<std::unique_ptr<Toolchain>> MakeCudaToolchain(CompileOptions options,
                                                     ProcessRunner& runner) {
  KF_RETURN_IF_ERROR(PrepareOptions(options));
  std::vector<std::string> candidates = {options.compiler};
  if (options.compiler.find('/') == std::string::npos) {
    candidates.clear();
    if (const std::optional<fs::path> home = CudaHomeOverride()) {
      candidates.push_back((*home / "bin" / options.compiler).string());
    }
    candidates.push_back(options.compiler);  // searched in PATH
    candidates.push_back((fs::path(KFLEET_CUDA_BIN_DIR) / options.compiler).string());
  }
  std::string tried;
  for (const std::string& candidate : candidates) {
    Result<std::string> version =
        QueryCompiler(runner, {candidate, "--version"}, options.timeout_ms);
    if (!version.ok() && version.status().code() == ErrorCode::kNotFound) {
      tried += (tried.empty() ? "" : ", ") + candidate +
               (candidate.find('/') == std::string::npos ? " in PATH" : "");
      continue;
    }
    if (!version.ok()) return version.status();
    options.compiler = candidate;
    const std::string name =
        fs::path(candidate).filename().string() + " " + NvccVersion(version.value());
    // The whole --version text, build number included: nvcc ships no -march=native-like flag,
    // so the version alone decides what machine code a source and flags become.
    return std::unique_ptr<Toolchain>(std::make_unique<CachingToolchain>(
        name, std::move(version).value(), kCudaSourceName, std::move(options), runner));
  }
  return NotFound("compiler '" + options.compiler + "' not found (tried " + tried +
                  "; set KFLEET_CUDA_HOME to the CUDA toolkit)");
}

}  // namespace kfleet::eval
