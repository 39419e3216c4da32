#include "cli/output.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

namespace kfleet::cli {

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

int ExitCodeFor(const Status& status) {
  if (status.ok()) return 0;
  switch (status.code()) {
    case ErrorCode::kInvalidArgument: return 2;
    case ErrorCode::kUnavailable:
    case ErrorCode::kDeadlineExceeded: return 3;
    default: return 1;
  }
}

void ExitOnError(const Status& status) {
  if (status.ok()) return;
  std::cerr << "kfleet: " << status.message() << "\n";
  throw CLI::RuntimeError(ExitCodeFor(status));
}

}  // namespace kfleet::cli
