#include "agents/source_check.h"

#include <fmt/format.h>

#include <cctype>
#include <map>

namespace kfleet::agents {
namespace {

const std::map<std::string_view, std::string_view>& Categories() {
  static const auto* const names = new std::map<std::string_view, std::string_view>{
      {"processes", "spawns processes"},
      {"sockets", "opens sockets"},
      {"timing", "reads clocks or sleeps"},
      {"files", "touches files"},
      {"reference", "reaches for the reference or the harness"},
  };
  return *names;
}

// Identifiers (called or named) and the category they belong to.
const std::map<std::string_view, std::string_view>& Identifiers() {
  static const auto* const ids = new std::map<std::string_view, std::string_view>{
      {"system", "processes"},
      {"popen", "processes"},
      {"fork", "processes"},
      {"vfork", "processes"},
      {"execl", "processes"},
      {"execlp", "processes"},
      {"execle", "processes"},
      {"execv", "processes"},
      {"execvp", "processes"},
      {"execvpe", "processes"},
      {"execve", "processes"},
      {"posix_spawn", "processes"},
      {"posix_spawnp", "processes"},
      {"clone", "processes"},
      {"socket", "sockets"},
      {"connect", "sockets"},
      {"bind", "sockets"},
      {"listen", "sockets"},
      {"accept", "sockets"},
      {"getaddrinfo", "sockets"},
      {"gethostbyname", "sockets"},
      {"curl_easy_init", "sockets"},
      {"clock_gettime", "timing"},
      {"gettimeofday", "timing"},
      {"__rdtsc", "timing"},
      {"rdtsc", "timing"},
      {"chrono", "timing"},
      {"usleep", "timing"},
      {"nanosleep", "timing"},
      {"sleep_for", "timing"},
      {"sleep_until", "timing"},
      {"cudaEventRecord", "timing"},
      {"cudaEventElapsedTime", "timing"},
      {"hipEventRecord", "timing"},
      {"hipEventElapsedTime", "timing"},
      {"fopen", "files"},
      {"freopen", "files"},
      {"open", "files"},
      {"openat", "files"},
      {"creat", "files"},
      {"ifstream", "files"},
      {"ofstream", "files"},
      {"fstream", "files"},
      {"mmap", "files"},
      {"unlink", "files"},
      {"dlopen", "reference"},
      {"dlsym", "reference"},
      {"dladdr", "reference"},
      {"dl_iterate_phdr", "reference"},
      {"getenv", "reference"},
      {"kfleet", "reference"},
      {"kf_reference", "reference"},
  };
  return *ids;
}

// Headers whose only use here would be one of the categories.
const std::map<std::string_view, std::string_view>& Headers() {
  static const auto* const headers = new std::map<std::string_view, std::string_view>{
      {"sys/socket.h", "sockets"}, {"netinet/in.h", "sockets"}, {"arpa/inet.h", "sockets"},
      {"netdb.h", "sockets"},      {"curl/curl.h", "sockets"},  {"spawn.h", "processes"},
      {"sys/wait.h", "processes"}, {"chrono", "timing"},        {"sys/time.h", "timing"},
      {"x86intrin.h", "timing"},   {"fstream", "files"},        {"fcntl.h", "files"},
      {"sys/mman.h", "files"},     {"dlfcn.h", "reference"},    {"link.h", "reference"},
  };
  return *headers;
}

bool IdentifierChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; }

// `source` with comments and the contents of string and character literals blanked (newlines
// kept, so line numbers hold).
std::string Blank(std::string_view source) {
  std::string out(source);
  enum { kCode, kLine, kBlock, kString, kChar } state = kCode;
  for (size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    const char next = i + 1 < out.size() ? out[i + 1] : '\0';
    switch (state) {
      case kCode:
        if (c == '/' && next == '/') {
          state = kLine;
          out[i] = ' ';
        } else if (c == '/' && next == '*') {
          state = kBlock;
          out[i] = ' ';
        } else if (c == '"') {
          state = kString;
        } else if (c == '\'') {
          state = kChar;
        }
        break;
      case kLine:
        if (c == '\n') {
          state = kCode;
        } else {
          out[i] = ' ';
        }
        break;
      case kBlock:
        if (c == '*' && next == '/') {
          out[i] = ' ';
          out[i + 1] = ' ';
          ++i;
          state = kCode;
        } else if (c != '\n') {
          out[i] = ' ';
        }
        break;
      case kString:
      case kChar:
        if (c == '\\' && i + 1 < out.size()) {
          out[i] = ' ';
          if (out[i + 1] != '\n') out[i + 1] = ' ';
          ++i;
        } else if (c == (state == kString ? '"' : '\'') || c == '\n') {
          state = kCode;
        } else {
          out[i] = ' ';
        }
        break;
    }
  }
  return out;
}

// The header an #include line names, or empty.
std::string_view IncludedHeader(std::string_view line) {
  size_t i = line.find_first_not_of(" \t");
  if (i == std::string_view::npos || line[i] != '#') return {};
  i = line.find_first_not_of(" \t", i + 1);
  if (i == std::string_view::npos || line.substr(i, 7) != "include") return {};
  const size_t open = line.find_first_of("<\"", i + 7);
  if (open == std::string_view::npos) return {};
  const size_t close = line.find(line[open] == '<' ? '>' : '"', open + 1);
  if (close == std::string_view::npos) return {};
  return line.substr(open + 1, close - open - 1);
}

}  // namespace

std::vector<SourceFinding> ScanSource(std::string_view source) {
  std::vector<SourceFinding> findings;
  const std::string blank = Blank(source);
  int line_number = 0;
  size_t pos = 0;
  while (pos < blank.size()) {
    ++line_number;
    size_t end = blank.find('\n', pos);
    if (end == std::string::npos) end = blank.size();
    // Header names sit in the original text (a "..." include is blanked as a string).
    const std::string_view original = source.substr(pos, end - pos);
    const std::string_view header = IncludedHeader(original);
    if (!header.empty()) {
      auto it = Headers().find(header);
      if (it != Headers().end()) {
        findings.push_back({line_number, std::string(it->second), "<" + std::string(header) + ">"});
      } else if (header.starts_with("kfleet/") && header != "kfleet/kernel.h") {
        // The kernel ABI header is the one part of kfleet a kernel includes.
        findings.push_back({line_number, "reference", "<" + std::string(header) + ">"});
      }
    } else {
      const std::string_view line(blank.data() + pos, end - pos);
      for (size_t i = 0; i < line.size();) {
        if (!IdentifierChar(line[i]) || std::isdigit(static_cast<unsigned char>(line[i])) != 0) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < line.size() && IdentifierChar(line[j])) ++j;
        const std::string_view word = line.substr(i, j - i);
        // A member (x.open(), p->bind) is someone else's method, not the libc call.
        const bool member =
            (i > 0 && line[i - 1] == '.') || (i > 1 && line.substr(i - 2, 2) == "->");
        auto it = Identifiers().find(word);
        if (it != Identifiers().end() && !member) {
          findings.push_back({line_number, std::string(it->second), std::string(word)});
        }
        i = j;
      }
    }
    pos = end + 1;
  }
  return findings;
}

Status CheckAgentSource(std::string_view source) {
  const std::vector<SourceFinding> findings = ScanSource(source);
  if (findings.empty()) return Status::Ok();
  std::string message = "the source is rejected before compiling:";
  for (size_t k = 0; k < findings.size() && k < 8; ++k) {
    const SourceFinding& f = findings[k];
    message += fmt::format("\n  line {}: {}: {}", f.line, Categories().at(f.category), f.what);
  }
  if (findings.size() > 8) message += fmt::format("\n  ... {} more", findings.size() - 8);
  return InvalidArgument(message);
}

}  // namespace kfleet::agents
