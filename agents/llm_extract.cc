#include "agents/llm_extract.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace kfleet::agents {
namespace {

struct Block {
  std::string info;
  std::string body;
  bool closed = false;
};

std::string_view Trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

// The fence a line opens or closes: three or more backticks or tildes after at most three
// spaces of indentation; the rest of the line is the info string.
bool IsFence(std::string_view line, std::string* fence, std::string* info) {
  size_t indent = 0;
  while (indent < line.size() && indent < 4 && line[indent] == ' ') ++indent;
  if (indent > 3 || indent >= line.size()) return false;
  const char mark = line[indent];
  if (mark != '`' && mark != '~') return false;
  size_t run = indent;
  while (run < line.size() && line[run] == mark) ++run;
  if (run - indent < 3) return false;
  *fence = std::string(line.substr(indent, run - indent));
  *info = std::string(Trim(line.substr(run)));
  return true;
}

std::vector<Block> FencedBlocks(std::string_view answer) {
  std::vector<Block> blocks;
  std::string open_fence;
  size_t pos = 0;
  while (pos <= answer.size()) {
    size_t end = answer.find('\n', pos);
    if (end == std::string_view::npos) end = answer.size();
    const std::string_view line = answer.substr(pos, end - pos);
    std::string fence;
    std::string info;
    const bool is_fence = IsFence(line, &fence, &info);
    if (open_fence.empty()) {
      if (is_fence) {
        open_fence = fence;
        // The info string's first word names the language ("cuda", "c++ title=kernel.cu").
        blocks.push_back({info.substr(0, info.find(' ')), "", false});
      }
    } else if (is_fence && info.empty() && fence[0] == open_fence[0] &&
               fence.size() >= open_fence.size()) {
      blocks.back().closed = true;
      open_fence.clear();
    } else {
      blocks.back().body.append(line);
      blocks.back().body.push_back('\n');
    }
    if (end == answer.size()) break;
    pos = end + 1;
  }
  return blocks;
}

bool DefinesEntry(std::string_view text) {
  // A definition, not a mention in prose: the name followed by its parameter list and, before
  // the next ';', an opening brace.
  for (size_t at = text.find("kf_kernel_run"); at != std::string_view::npos;
       at = text.find("kf_kernel_run", at + 1)) {
    const size_t paren = text.find_first_not_of(" \t\r\n", at + 13);
    if (paren == std::string_view::npos || text[paren] != '(') continue;
    const size_t stop = text.find_first_of(";{", paren);
    if (stop != std::string_view::npos && text[stop] == '{') return true;
  }
  return false;
}

}  // namespace

std::string_view ExtractFailureName(ExtractFailure failure) {
  switch (failure) {
    case ExtractFailure::kNone:
      return "none";
    case ExtractFailure::kNoCode:
      return "no_code";
    case ExtractFailure::kNoEntry:
      return "no_entry";
    case ExtractFailure::kTruncated:
      return "truncated";
  }
  return "unknown";
}

ExtractedSource ExtractKernelSource(std::string_view answer) {
  ExtractedSource result;
  const std::vector<Block> blocks = FencedBlocks(answer);
  result.blocks = static_cast<int>(blocks.size());
  if (!blocks.empty()) {
    const Block* chosen = nullptr;
    for (const Block& block : blocks) {
      if (block.closed && DefinesEntry(block.body)) chosen = &block;
    }
    if (chosen != nullptr) {
      result.source = chosen->body;
      result.info = chosen->info;
      return result;
    }
    if (!blocks.back().closed) {
      result.failure = ExtractFailure::kTruncated;
      result.reason = fmt::format(
          "the answer ends inside its code block ({} lines in it): it was cut off, most likely "
          "by the token limit",
          std::count(blocks.back().body.begin(), blocks.back().body.end(), '\n'));
      return result;
    }
    result.failure = ExtractFailure::kNoEntry;
    result.reason = fmt::format(
        "{} code block(s), none of which defines kf_kernel_run(const kf_tensor*, int32_t, "
        "kf_tensor*, int32_t, void*)",
        blocks.size());
    return result;
  }
  // No fences: the answer itself may be the file.
  const size_t include = answer.find("#include");
  const size_t line_start =
      include == std::string_view::npos ? include : answer.rfind('\n', include);
  const size_t from = include == std::string_view::npos      ? include
                      : line_start == std::string_view::npos ? 0
                                                             : line_start + 1;
  if (from != std::string_view::npos && DefinesEntry(answer.substr(from))) {
    result.source = std::string(answer.substr(from));
    if (!result.source.empty() && result.source.back() != '\n') result.source.push_back('\n');
    return result;
  }
  result.failure = ExtractFailure::kNoCode;
  result.reason = DefinesEntry(answer)
                      ? "the answer defines kf_kernel_run but has no #include and no code block"
                      : "the answer has no code block and no source file in it";
  return result;
}

}  // namespace kfleet::agents
