#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdlib>

#include "worker/probe.h"
#include "worker/probe_util.h"

namespace kfleet::worker {
namespace {

using probe_util::SplitWords;
using probe_util::Trim;

// Where the CUDA and ROCm installers put their tools, often outside $PATH.
constexpr std::array<std::string_view, 2> kVendorToolDirs = {"/usr/local/cuda/bin",
                                                             "/opt/rocm/bin"};
constexpr std::array<std::string_view, 5> kToolchains = {"g++", "c++", "clang++", "nvcc", "hipcc"};

// The digits and dots `text` starts with: "13.0.88\n" -> "13.0.88", "5.2.21153-0" -> "5.2.21153".
std::string VersionPrefix(std::string_view text) {
  std::string_view version = text.substr(0, text.find_first_not_of("0123456789."));
  while (version.ends_with('.')) version.remove_suffix(1);
  return std::string(version);
}

std::string_view LineAt(std::string_view text, size_t at) {
  size_t end = text.find('\n', at);
  return text.substr(at, end == std::string_view::npos ? end : end - at);
}

// "Cuda compilation tools, release 13.0, V13.0.88": the V field has the patch level.
std::string NvccVersion(std::string_view text) {
  size_t at = text.find("Cuda compilation tools");
  if (at == std::string_view::npos) return "";
  std::string_view line = LineAt(text, at);
  if (size_t v = line.find(", V"); v != std::string_view::npos) {
    std::string version = VersionPrefix(line.substr(v + 3));
    if (!version.empty()) return version;
  }
  size_t release = line.find("release ");
  return release == std::string_view::npos ? "" : VersionPrefix(line.substr(release + 8));
}

// "HIP version: 5.2.21153-0": the part after '-' is a git hash (0 in Debian's build).
std::string HipccVersion(std::string_view text) {
  constexpr std::string_view kPrefix = "HIP version:";
  size_t at = text.find(kPrefix);
  if (at == std::string_view::npos) return "";
  return VersionPrefix(Trim(LineAt(text, at + kPrefix.size())));
}

// "Debian clang version 14.0.6", or GCC's "g++ (Debian 12.2.0-14+deb12u1) 12.2.0" where the
// version follows the parenthesized package name (which holds a version-like string itself).
std::string CxxVersion(std::string_view text) {
  constexpr std::string_view kClang = "clang version ";
  if (size_t at = text.find(kClang); at != std::string_view::npos) {
    return VersionPrefix(text.substr(at + kClang.size()));
  }
  std::string_view line = LineAt(text, 0);
  if (size_t paren = line.find(')'); paren != std::string_view::npos) {
    line.remove_prefix(paren + 1);
  }
  for (std::string_view word : SplitWords(line)) {
    std::string version = VersionPrefix(word);
    if (version.find('.') != std::string::npos) return version;
  }
  return "";
}

}  // namespace

std::string ParseToolchainVersion(std::string_view name, std::string_view text) {
  if (name == "nvcc") return NvccVersion(text);
  if (name == "hipcc") return HipccVersion(text);
  return CxxVersion(text);
}

std::vector<std::string> ToolSearchDirs(const ProbeOptions& options) {
  if (!options.tool_dirs.empty()) return options.tool_dirs;
  std::vector<std::string> dirs;
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "";
  while (!rest.empty()) {
    size_t colon = rest.find(':');
    std::string_view dir = rest.substr(0, colon);
    if (!dir.empty()) dirs.emplace_back(dir);  // an empty entry means the working directory
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  for (std::string_view dir : kVendorToolDirs) dirs.emplace_back(dir);
  return dirs;
}

std::string FindExecutable(std::string_view name, const std::vector<std::string>& dirs) {
  for (const std::string& dir : dirs) {
    std::string path = dir + "/" + std::string(name);
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) continue;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

std::vector<ToolchainInfo> ProbeToolchains(const ProbeOptions& options,
                                           std::vector<std::string>& notes) {
  std::vector<std::string> dirs = ToolSearchDirs(options);
  SystemCommandRunner shell;
  CommandRunner& runner = probe_util::RunnerFor(options, shell);
  std::vector<ToolchainInfo> toolchains;
  for (std::string_view name : kToolchains) {
    std::string path = FindExecutable(name, dirs);
    if (path.empty()) continue;
    Result<std::string> output = runner.Run({path, "--version"}, options.command_timeout_ms);
    if (!output.ok()) {
      notes.push_back("toolchain " + std::string(name) + " left out: " + output.status().message());
      continue;
    }
    std::string version = ParseToolchainVersion(name, *output);
    if (version.empty()) {
      notes.push_back("toolchain " + std::string(name) + ": no version in `" + path +
                      " --version` output");
    }
    toolchains.push_back({std::string(name), std::move(version), std::move(path)});
  }
  return toolchains;
}

}  // namespace kfleet::worker
