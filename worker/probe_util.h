// Helpers the probe's source files share; not part of the worker's API.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "worker/probe.h"

namespace kfleet::worker::probe_util {

inline std::string_view Trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  size_t end = text.find_last_not_of(kSpace);
  return text.substr(begin, end - begin + 1);
}

// Calls `fn(line)` for every line of `text`, without its newline.
template <typename Fn>
void ForEachLine(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    size_t end = text.find('\n');
    fn(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

std::vector<std::string_view> SplitWords(std::string_view text);

struct KeyValue {
  std::string_view key;
  std::string_view value;
};

// "model name\t: AMD EPYC" -> {"model name", "AMD EPYC"}; nullopt for a line without ':'.
std::optional<KeyValue> SplitKeyValue(std::string_view line);

// The decimal number `text` starts with, after blanks: "67092480(0x3ffc000) KB" -> 67092480.
std::optional<uint64_t> LeadingUint(std::string_view text);

// As LeadingUint, but base 16 and an optional "0x": "0xd4f" -> 0xd4f.
std::optional<uint64_t> LeadingHex(std::string_view text);

inline CommandRunner& RunnerFor(const ProbeOptions& options, SystemCommandRunner& shell) {
  return options.runner != nullptr ? *options.runner : shell;
}

}  // namespace kfleet::worker::probe_util
