#include "cli/search_view.h"

#include <fmt/format.h>

#include <cctype>

#include "cli/format.h"
#include "cli/output.h"

namespace kfleet::cli {
namespace {

using nlohmann::json;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

std::string Speedup(double s) { return s > 0 ? fmt::format("{:.2f}x", s) : "-"; }

std::string BudgetBar(uint64_t spent_ms, uint64_t budget_ms, int width) {
  if (budget_ms == 0) return "";
  const double fraction =
      std::min(1.0, static_cast<double>(spent_ms) / static_cast<double>(budget_ms));
  const int filled = static_cast<int>(fraction * width + 0.5);
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

std::string Shorten(const std::string& text, size_t limit) {
  return text.size() <= limit ? text : text.substr(0, limit - 3) + "...";
}

}  // namespace

bool ParseDurationMs(const std::string& text, int64_t* ms) {
  if (text.empty()) return false;
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == start || i - start > 9) return false;
    const int64_t value = std::stoll(text.substr(start, i - start));
    int64_t unit = 1000;  // a bare number is seconds
    if (i < text.size()) {
      const char c = text[i++];
      if (c == 'h') {
        unit = 3'600'000;
      } else if (c == 'm') {
        unit = 60'000;
      } else if (c == 's') {
        unit = 1000;
      } else {
        return false;
      }
    } else if (start > 0) {
      return false;  // "1m30" is ambiguous
    }
    total += value * unit;
  }
  *ms = total;
  return total > 0;
}

std::string FormatModelJob(msg::ShowReply::Reader reply) {
  msg::JobSummary::Reader job = reply.getJob();
  std::string out;
  std::vector<std::vector<std::string>> summary = {
      {"state", Text(job.getState()) +
                    (job.getPhase().size() > 0 ? " (" + Text(job.getPhase()) + ")" : "")}};
  if (reply.getDevice().size() > 0) summary.push_back({"device", Text(reply.getDevice())});
  if (reply.getBaselineModelUs() > 0) {
    summary.push_back({"baseline", fmt::format("{:.2f} ms per run of the whole model",
                                               reply.getBaselineModelUs() / 1000)});
  }
  summary.push_back(
      {"search", fmt::format("{:.0f} s of {:.0f} s budget", reply.getSearchElapsedMs() / 1000.0,
                             reply.getBudgetMs() / 1000.0)});
  summary.push_back({"projected", fmt::format("{:.3f}x end to end (Amdahl, from profiled kernels)",
                                              reply.getProjectedSpeedup())});
  summary.push_back({"measured", reply.getMeasuredSpeedup() > 0
                                     ? fmt::format("{:.3f}x end to end, kernels swapped in",
                                                   reply.getMeasuredSpeedup())
                                     : std::string("not measured yet")});
  if (reply.getVerifyNote().size() > 0) summary.push_back({"check", Text(reply.getVerifyNote())});
  if (job.getAgent().size() > 0 && Text(job.getAgent()) != "template") {
    summary.push_back({"agent", Text(job.getAgent())});
    summary.push_back({"llm", FormatLlmUsage(job.getLlm())});
  }
  if (job.getError().size() > 0) summary.push_back({"error", Text(job.getError())});
  out += FormatTable(summary);

  auto kernels = reply.getKernels();
  if (kernels.size() == 0) return out;
  std::vector<std::vector<std::string>> rows = {{"#", "kernel", "n", "share", "base us", "best us",
                                                 "speedup", "%SOL", "tried", "budget", "state",
                                                 "note"}};
  int rank = 0;
  for (msg::KernelJobSummary::Reader k : kernels) {
    ++rank;
    const bool has_best = k.getBestUs() > 0;
    std::string state = Text(k.getState());
    if (k.getVerified()) state += ", verified";
    rows.push_back(
        {std::to_string(rank), Shorten(Text(k.getName()), 42), std::to_string(k.getCount()),
         fmt::format("{:.1f}%", k.getShare() * 100), fmt::format("{:.1f}", k.getBaselineUs()),
         has_best ? fmt::format("{:.1f}", k.getBestUs()) : "-", Speedup(k.getSpeedup()),
         has_best ? fmt::format("{:.0f}%", 100 * k.getSolUs() / k.getBestUs()) : "-",
         k.getCandidates() > 0
             ? fmt::format("{} ({} failed)", k.getCandidates(), k.getFailedCandidates())
             : "-",
         BudgetBar(k.getSpentMs(), k.getBudgetMs(), 10), state, Shorten(Text(k.getNote()), 60)});
  }
  out += "\nkernel jobs, ranked by expected saving:\n" + FormatTable(rows);
  return out;
}

json ModelJobJson(msg::ShowReply::Reader reply) {
  json kernels = json::array();
  for (msg::KernelJobSummary::Reader k : reply.getKernels()) kernels.push_back(KernelJson(k));
  json failures = json::array();
  for (capnp::Text::Reader f : reply.getAttemptFailures()) failures.push_back(Text(f));
  return {{"job", JobJson(reply.getJob())},
          {"device", Text(reply.getDevice())},
          {"baseline_model_us", reply.getBaselineModelUs()},
          {"projected_speedup", reply.getProjectedSpeedup()},
          {"measured_speedup", reply.getMeasuredSpeedup()},
          {"verify_note", Text(reply.getVerifyNote())},
          {"budget_ms", reply.getBudgetMs()},
          {"search_elapsed_ms", reply.getSearchElapsedMs()},
          {"kernels", std::move(kernels)},
          {"attempt_failures", std::move(failures)}};
}

}  // namespace kfleet::cli
