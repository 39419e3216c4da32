#include "worker/probe_util.h"

#include <charconv>

namespace kfleet::worker::probe_util {
namespace {

std::optional<uint64_t> LeadingNumber(std::string_view text, int base) {
  text = Trim(text);
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (error != std::errc() || end == text.data()) return std::nullopt;
  return value;
}

}  // namespace

std::vector<std::string_view> SplitWords(std::string_view text) {
  std::vector<std::string_view> words;
  constexpr std::string_view kSpace = " \t\r\n";
  size_t begin = text.find_first_not_of(kSpace);
  while (begin != std::string_view::npos) {
    size_t end = text.find_first_of(kSpace, begin);
    words.push_back(text.substr(begin, end == std::string_view::npos ? end : end - begin));
    begin = text.find_first_not_of(kSpace, end);
  }
  return words;
}

std::optional<KeyValue> SplitKeyValue(std::string_view line) {
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  return KeyValue{Trim(line.substr(0, colon)), Trim(line.substr(colon + 1))};
}

std::optional<uint64_t> LeadingUint(std::string_view text) { return LeadingNumber(text, 10); }

std::optional<uint64_t> LeadingHex(std::string_view text) {
  text = Trim(text);
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  return LeadingNumber(text, 16);
}

}  // namespace kfleet::worker::probe_util
