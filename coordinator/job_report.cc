#include "coordinator/job_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iterator>
#include <string_view>
#include <vector>

namespace kfleet::coordinator {
namespace {

constexpr std::string_view kNone = "—";

bool HasWinner(const ReportKernel& k) { return std::isfinite(k.speedup) && k.speedup > 0; }

bool Positive(double v) { return std::isfinite(v) && v > 0; }

// ---- Number formatting, shared by the markdown and the plots.

// Three or four significant digits without an exponent: 3.42, 48.7, 1234.
std::string FormatNumber(double v) {
  if (!std::isfinite(v)) return std::string(kNone);
  const double mag = std::fabs(v);
  if (mag < 10) return fmt::format("{:.2f}", v);
  if (mag < 1000) return fmt::format("{:.1f}", v);
  return fmt::format("{:.0f}", v);
}

// A dash for the zeros that stand for "unknown" or "none".
std::string FormatPositive(double v) { return Positive(v) ? FormatNumber(v) : std::string(kNone); }

std::string FormatTime(double v, std::string_view unit) {
  if (!Positive(v)) return std::string(kNone);
  return fmt::format("{} {}", FormatNumber(v), unit);
}

std::string FormatSpeedup(double v) { return fmt::format("{:.2f}x", v); }

std::string FormatDuration(double s) {
  if (!Positive(s)) return "0 s";
  if (s < 60) return fmt::format("{:.1f} s", s);
  const int64_t total = std::llround(s);
  if (total < 3600) return fmt::format("{}m {:02}s", total / 60, total % 60);
  return fmt::format("{}h {:02}m", total / 3600, (total % 3600) / 60);
}

// Percent of speed-of-light reached by the best candidate, or a dash when either is unknown.
std::string FormatSolPercent(const ReportKernel& k) {
  if (!Positive(k.sol_us) || !Positive(k.best_us)) return std::string(kNone);
  return fmt::format("{:.0f}%", 100.0 * k.sol_us / k.best_us);
}

// ---- Markdown escaping.

// Plain inline text: one line, and no '<' a renderer could take for an HTML tag.
std::string MdText(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\n' || c == '\r') {
      out += ' ';
    } else if (c == '<') {
      out += "&lt;";
    } else {
      out += c;
    }
  }
  return out;
}

// A code span, fenced by one backtick more than the longest run inside it.
std::string MdCode(std::string_view s) {
  std::string body;
  size_t run = 0;
  size_t longest = 0;
  for (char c : s) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
    body += (c == '\n' || c == '\r') ? ' ' : c;
  }
  if (body.empty()) return std::string(kNone);
  const std::string fence(longest + 1, '`');
  const std::string pad = (body.front() == '`' || body.back() == '`') ? " " : "";
  return fence + pad + body + pad + fence;
}

// A table cell: '|' would end the cell, even inside a code span.
std::string MdCell(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string KernelStateCell(const ReportKernel& k) {
  std::string state = k.state.empty() ? std::string(kNone) : MdText(k.state);
  if (HasWinner(k) && k.verified) return state + ", verified";
  if (HasWinner(k) && !k.verify_note.empty()) return state + ", dropped";
  return state;
}

std::string VerifyStatus(const ReportKernel& k) {
  if (k.verified) {
    return k.verify_note.empty() ? "kept by the end-to-end check"
                                 : "kept by the end-to-end check (" + MdText(k.verify_note) + ")";
  }
  if (!k.verify_note.empty()) return "dropped by the end-to-end check: " + MdText(k.verify_note);
  return "not checked end to end yet";
}

void AppendSummary(const JobReport& r, std::string* out) {
  auto line = [out](std::string_view label, const std::string& value) {
    fmt::format_to(std::back_inserter(*out), "- **{}:** {}\n", label, value);
  };
  *out += "## Summary\n\n";
  line("Target", r.target.empty() ? std::string(kNone) : MdText(r.target));
  line("Device", r.device.empty() ? std::string(kNone) : MdText(r.device));
  std::string state = r.state.empty() ? "unknown" : MdText(r.state);
  if (!r.phase.empty()) state += " (phase: " + MdText(r.phase) + ")";
  line("State", state);
  if (!r.error.empty()) line("Error", MdText(r.error));
  std::string time = "elapsed " + FormatDuration(r.elapsed_s);
  if (Positive(r.budget_s)) {
    time += fmt::format(" of a {} budget ({:.0f}%)", FormatDuration(r.budget_s),
                        100.0 * r.elapsed_s / r.budget_s);
  } else {
    time += ", no budget";
  }
  line("Search time", time);
  line("Baseline model time",
       Positive(r.baseline_model_ms) ? FormatTime(r.baseline_model_ms, "ms") : "not measured");
  if (r.agent != "template" && !r.agent.empty()) {
    line("Agent", fmt::format("{} (model {})", MdText(r.agent), MdCode(r.llm_model)));
    std::string usage =
        fmt::format("{} requests ({} without an answer), {} prompt + {} completion tokens, ${:.4f}",
                    r.llm_calls, r.llm_failed_calls, r.llm_prompt_tokens, r.llm_completion_tokens,
                    r.llm_cost_usd);
    if (Positive(r.llm_budget_usd)) usage += fmt::format(" of a ${:.2f} budget", r.llm_budget_usd);
    line("LLM use", usage);
  }

  const int64_t winners = std::count_if(r.kernels.begin(), r.kernels.end(), HasWinner);
  const int64_t verified = std::count_if(r.kernels.begin(), r.kernels.end(),
                                         [](const ReportKernel& k) { return k.verified; });
  const int64_t searched = std::count_if(
      r.kernels.begin(), r.kernels.end(),
      [](const ReportKernel& k) { return k.candidates > 0 || k.state == "searching"; });
  line("Kernels", fmt::format("{} kernel jobs, {} searched, {} with a winner, {} kept by the "
                              "end-to-end check",
                              r.kernels.size(), searched, winners, verified));

  line("Projected end-to-end speedup",
       fmt::format("**{}** (Amdahl: each kernel's profiled speedup weighted by its share)",
                   FormatSpeedup(r.projected_speedup)));
  if (Positive(r.measured_speedup)) {
    std::string measured = fmt::format("**{}**", FormatSpeedup(r.measured_speedup));
    if (Positive(r.baseline_model_ms) && Positive(r.swapped_model_ms)) {
      measured += fmt::format(" ({} → {})", FormatTime(r.baseline_model_ms, "ms"),
                              FormatTime(r.swapped_model_ms, "ms"));
    }
    if (Positive(r.projected_speedup)) {
      measured +=
          fmt::format(", {:.0f}% of projected", 100.0 * r.measured_speedup / r.projected_speedup);
    }
    line("Measured end-to-end speedup", measured);
  } else {
    line("Measured end-to-end speedup", "not measured");
  }
  line("Verification", r.verify_note.empty() ? "not run yet" : MdText(r.verify_note));
  *out += '\n';
}

void AppendTable(const JobReport& r, std::string* out) {
  *out += "## Kernels by expected saving\n\n";
  if (r.kernels.empty()) {
    *out += "No kernels were selected for search.\n\n";
    return;
  }
  *out +=
      "| Rank | Kernel | Family | Count | Share % | Baseline µs | Best µs | Speedup | % of SoL "
      "| Candidates (failed) | State |\n"
      "|---:|:---|:---|---:|---:|---:|---:|---:|---:|---:|:---|\n";
  for (const ReportKernel& k : r.kernels) {
    fmt::format_to(std::back_inserter(*out),
                   "| {} | {} | {} | {} | {:.1f} | {} | {} | {} | {} | {} ({}) | {} |\n", k.rank,
                   MdCell(MdCode(k.name)), MdCell(MdCode(k.family)), k.count, 100.0 * k.share,
                   FormatPositive(k.baseline_us),
                   HasWinner(k) ? FormatPositive(k.best_us) : std::string(kNone),
                   HasWinner(k) ? FormatSpeedup(k.speedup) : std::string(kNone),
                   FormatSolPercent(k), k.candidates, k.failed, MdCell(KernelStateCell(k)));
  }
  *out += '\n';
}

void AppendWinner(const ReportKernel& k, std::string* out) {
  auto line = [out](std::string_view label, const std::string& value) {
    fmt::format_to(std::back_inserter(*out), "- **{}:** {}\n", label, value);
  };
  fmt::format_to(std::back_inserter(*out), "### {}. {}\n\n", k.rank, MdCode(k.name));
  const bool by_llm = k.agent.starts_with("llm:");
  if (by_llm) {
    line("Written by",
         fmt::format("the LLM agent, {} (family {})", MdCode(k.agent.substr(4)), MdCode(k.family)));
  } else {
    line("Template", fmt::format("{} (family {})", MdCode(k.template_name), MdCode(k.family)));
  }
  std::string time = fmt::format("{} → {} per occurrence, **{}**", FormatTime(k.baseline_us, "µs"),
                                 FormatTime(k.best_us, "µs"), FormatSpeedup(k.speedup));
  if (Positive(k.sol_us)) {
    time +=
        fmt::format("; {} of speed-of-light ({})", FormatSolPercent(k), FormatTime(k.sol_us, "µs"));
  }
  line("Time", time);
  line("Source", MdCode(k.source_path));
  line("End-to-end check", VerifyStatus(k));
  if (!k.note.empty()) line("Stopped", MdText(k.note));
  *out += '\n';
  if (by_llm) {
    // The Designer's sketch, quoted: it is the model's text, not ours.
    if (!k.explanation.empty()) {
      *out += "The Designer's sketch:\n\n";
      size_t pos = 0;
      while (pos < k.explanation.size()) {
        size_t end = k.explanation.find('\n', pos);
        if (end == std::string::npos) end = k.explanation.size();
        *out += "> " + MdText(k.explanation.substr(pos, end - pos)) + "\n";
        pos = end + 1;
      }
      *out += '\n';
    }
    return;
  }
  if (k.params.empty()) {
    *out += "No parameters.\n\n";
  } else {
    *out += "| Parameter | Value |\n|:---|:---|\n";
    for (const auto& [name, value] : k.params) {
      fmt::format_to(std::back_inserter(*out), "| {} | {} |\n", MdCell(MdCode(name)),
                     MdCell(MdCode(value)));
    }
    *out += '\n';
  }
  if (!k.explanation.empty()) *out += k.explanation + "\n\n";
}

void AppendWithoutWinner(const JobReport& r, std::string* out) {
  const bool any = std::any_of(r.kernels.begin(), r.kernels.end(),
                               [](const ReportKernel& k) { return !HasWinner(k); });
  if (!any) return;
  *out += "## Kernels without a winner\n\n";
  for (const ReportKernel& k : r.kernels) {
    if (HasWinner(k)) continue;
    fmt::format_to(std::back_inserter(*out),
                   "- Rank {}: {} ({}): {}; {} candidates tried, {} failed\n", k.rank,
                   MdCode(k.name), k.state.empty() ? "unknown" : MdText(k.state),
                   k.note.empty() ? "no note" : MdText(k.note), k.candidates, k.failed);
  }
  *out += '\n';
}

// ---- SVG.

constexpr std::array<std::string_view, 10> kPalette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                       "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                                       "#9c755f", "#bab0ac"};

std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// At most `max_chars` code points, ending in an ellipsis when cut; never splits a UTF-8 sequence.
std::string Truncate(std::string_view s, size_t max_chars) {
  size_t chars = 0;
  size_t cut = s.size();
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars == max_chars - 1 && cut == s.size()) cut = i;
    if (++chars > max_chars) return std::string(s.substr(0, cut)) + "…";
  }
  return std::string(s);
}

std::string KernelLabel(const ReportKernel& k, size_t max_chars) {
  return XmlEscape(Truncate(fmt::format("#{} {}", k.rank, k.name), max_chars));
}

// 1, 2 or 5 times a power of ten, at least `raw`.
double NiceStep(double raw) {
  if (!Positive(raw)) return 1;
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (m * decade >= raw * (1 - 1e-9)) return m * decade;
  }
  return 10 * decade;
}

// Maps data values onto a pixel range: linear from 0, or by decades when `log`.
struct Axis {
  double lo = 0;
  double hi = 1;
  bool log = false;
  double px_lo = 0;
  double px_hi = 1;

  double Map(double v) const {
    double f = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                   : (v - lo) / (hi - lo);
    if (!std::isfinite(f)) f = 0;
    return px_lo + std::clamp(f, 0.0, 1.0) * (px_hi - px_lo);
  }

  std::vector<double> Ticks() const {
    std::vector<double> ticks;
    if (log) {
      for (double v = lo; v <= hi * (1 + 1e-9); v *= 10) ticks.push_back(v);
    } else {
      const double step = NiceStep((hi - lo) / 4);
      for (int i = 0; lo + i * step <= hi * (1 + 1e-9); ++i) ticks.push_back(lo + i * step);
    }
    return ticks;
  }
};

// Speedup axes include 1x so its reference line is on the plot; log when the values span > 10x.
Axis SpeedupAxis(double min_v, double max_v, double px_lo, double px_hi) {
  Axis a;
  a.px_lo = px_lo;
  a.px_hi = px_hi;
  a.log = max_v / min_v > 10;
  if (a.log) {
    a.lo = std::pow(10.0, std::floor(std::log10(std::min(min_v, 1.0))));
    a.hi = std::pow(10.0, std::ceil(std::log10(std::max(max_v, 1.0))));
  } else {
    const double top = std::max(max_v, 1.0);
    const double step = NiceStep(top / 4);
    a.hi = step * std::ceil(top / step * (1 - 1e-9));
  }
  return a;
}

Axis TimeAxis(double max_s, double px_lo, double px_hi) {
  Axis a;
  a.px_lo = px_lo;
  a.px_hi = px_hi;
  const double top = Positive(max_s) ? max_s : 1;
  const double step = NiceStep(top / 4);
  a.hi = step * std::ceil(top / step * (1 - 1e-9));
  return a;
}

std::string SvgOpen(int width, int height) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      width, height);
}

std::string SvgMessage(std::string_view title, std::string_view message) {
  return SvgOpen(640, 80) +
         fmt::format(
             "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n"
             "<text x=\"320\" y=\"55\" text-anchor=\"middle\" fill=\"#666\">{}</text>\n</svg>\n",
             XmlEscape(title), XmlEscape(message));
}

}  // namespace

std::string RenderReportMarkdown(const JobReport& report) {
  std::string out =
      fmt::format("# Kernel search report: {} (job {})\n\n",
                  report.name.empty() ? "unnamed" : MdText(report.name), report.job_id);
  AppendSummary(report, &out);
  AppendTable(report, &out);
  out += "## Plots\n\n![Speedup per kernel](speedup.svg)\n\n![Search progress](progress.svg)\n\n";
  if (std::any_of(report.kernels.begin(), report.kernels.end(), HasWinner)) {
    out += "## Winners\n\n";
    for (const ReportKernel& k : report.kernels) {
      if (HasWinner(k)) AppendWinner(k, &out);
    }
  }
  AppendWithoutWinner(report, &out);
  while (out.size() > 1 && out[out.size() - 1] == '\n' && out[out.size() - 2] == '\n') {
    out.pop_back();
  }
  return out;
}

std::string RenderSpeedupSvg(const JobReport& report) {
  constexpr std::string_view kTitle = "Speedup per kernel (baseline / best, one occurrence)";
  std::vector<const ReportKernel*> bars;
  for (const ReportKernel& k : report.kernels) {
    if (HasWinner(k)) bars.push_back(&k);
  }
  if (bars.empty()) return SvgMessage(kTitle, "no kernels with a verified winner yet");

  constexpr int kWidth = 800;
  constexpr int kLabelRight = 250;
  constexpr int kBarLeft = 260;
  constexpr int kBarRight = 670;
  constexpr int kTop = 48;
  constexpr int kRow = 22;
  constexpr int kBarHeight = 14;
  const int axis_y = kTop + static_cast<int>(bars.size()) * kRow + 4;
  const int height = axis_y + 30;

  double min_v = bars.front()->speedup;
  double max_v = min_v;
  for (const ReportKernel* k : bars) {
    min_v = std::min(min_v, k->speedup);
    max_v = std::max(max_v, k->speedup);
  }
  const Axis x = SpeedupAxis(min_v, max_v, kBarLeft, kBarRight);

  std::string out = SvgOpen(kWidth, height);
  fmt::format_to(std::back_inserter(out),
                 "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}{}</text>\n",
                 XmlEscape(kTitle), x.log ? ", log scale" : "");
  for (double t : x.Ticks()) {
    const double px = x.Map(t);
    fmt::format_to(
        std::back_inserter(out),
        "<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#444\">{4:g}x</text>\n",
        px, kTop - 4, axis_y, axis_y + 16, t);
  }
  for (size_t i = 0; i < bars.size(); ++i) {
    const ReportKernel& k = *bars[i];
    const int y = kTop + static_cast<int>(i) * kRow;
    const double end = x.Map(k.speedup);
    // Faded rather than left out: the profiled gain of a dropped winner is still worth seeing.
    const bool dropped = !k.verified && !k.verify_note.empty();
    fmt::format_to(std::back_inserter(out),
                   "<g><title>{0}</title>\n"
                   "<text x=\"{1}\" y=\"{2}\" text-anchor=\"end\">{3}</text>\n"
                   "<rect x=\"{4}\" y=\"{5}\" width=\"{6:.1f}\" height=\"{7}\" fill=\"{8}\"{9}/>\n"
                   "<text x=\"{10:.1f}\" y=\"{2}\">{11}{12}</text></g>\n",
                   XmlEscape(fmt::format("#{} {}: {}", k.rank, k.name, FormatSpeedup(k.speedup))),
                   kLabelRight, y + kBarHeight - 2, KernelLabel(k, 36), kBarLeft, y,
                   std::max(1.0, end - kBarLeft), kBarHeight,
                   k.speedup >= 1 ? "#4e79a7" : "#e15759", dropped ? " fill-opacity=\"0.4\"" : "",
                   std::max(end, static_cast<double>(kBarLeft)) + 4, FormatSpeedup(k.speedup),
                   dropped ? ", dropped" : "");
  }
  const double one = x.Map(1);
  fmt::format_to(std::back_inserter(out),
                 "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#333\"/>\n"
                 "<line x1=\"{3:.1f}\" x2=\"{3:.1f}\" y1=\"{4}\" y2=\"{2}\" stroke=\"#333\" "
                 "stroke-dasharray=\"4 3\"/>\n"
                 "<text x=\"{3:.1f}\" y=\"{5}\" text-anchor=\"middle\" fill=\"#333\">1x</text>\n"
                 "</svg>\n",
                 kBarLeft, kBarRight, axis_y, one, kTop - 8, kTop - 12);
  return out;
}

std::string RenderProgressSvg(const JobReport& report) {
  constexpr std::string_view kTitle = "Search progress: best speedup over search time";
  struct Series {
    const ReportKernel* kernel;
    size_t color;
    std::vector<ProgressPoint> points;
  };
  std::vector<Series> series;
  double max_t = 0;
  double min_v = 1;
  double max_v = 1;
  for (size_t i = 0; i < report.kernels.size(); ++i) {
    Series s{&report.kernels[i], i, {}};
    for (const ProgressPoint& p : report.kernels[i].progress) {
      if (!std::isfinite(p.t_s) || p.t_s < 0 || !Positive(p.best_speedup)) continue;
      s.points.push_back(p);
      max_t = std::max(max_t, p.t_s);
      min_v = std::min(min_v, p.best_speedup);
      max_v = std::max(max_v, p.best_speedup);
    }
    if (s.points.empty()) continue;
    std::stable_sort(s.points.begin(), s.points.end(),
                     [](const ProgressPoint& a, const ProgressPoint& b) { return a.t_s < b.t_s; });
    series.push_back(std::move(s));
  }
  if (series.empty()) return SvgMessage(kTitle, "no search progress yet");

  constexpr int kWidth = 900;
  constexpr int kPlotLeft = 70;
  constexpr int kPlotRight = 600;
  constexpr int kPlotTop = 40;
  constexpr int kPlotBottom = 300;
  constexpr int kLegendLeft = 625;
  constexpr int kLegendRow = 18;
  const int height =
      std::max(kPlotBottom + 50, kPlotTop + 10 + static_cast<int>(series.size()) * kLegendRow);

  const Axis x = TimeAxis(max_t, kPlotLeft, kPlotRight);
  const Axis y = SpeedupAxis(min_v, max_v, kPlotBottom, kPlotTop);

  std::string out = SvgOpen(kWidth, height);
  fmt::format_to(std::back_inserter(out),
                 "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}{}</text>\n",
                 XmlEscape(kTitle), y.log ? ", log scale" : "");
  for (double t : x.Ticks()) {
    fmt::format_to(
        std::back_inserter(out),
        "<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#e5e5e5\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#444\">{4:g}</text>\n",
        x.Map(t), kPlotTop, kPlotBottom, kPlotBottom + 16, t);
  }
  for (double v : y.Ticks()) {
    fmt::format_to(
        std::back_inserter(out),
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#e5e5e5\"/>\n"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" fill=\"#444\">{5:g}x</text>\n",
        kPlotLeft, kPlotRight, y.Map(v), kPlotLeft - 6, y.Map(v) + 4, v);
  }
  fmt::format_to(std::back_inserter(out),
                 "<line x1=\"{0}\" x2=\"{1}\" y1=\"{3}\" y2=\"{3}\" stroke=\"#333\"/>\n"
                 "<line x1=\"{0}\" x2=\"{0}\" y1=\"{2}\" y2=\"{3}\" stroke=\"#333\"/>\n"
                 "<line x1=\"{0}\" x2=\"{1}\" y1=\"{4:.1f}\" y2=\"{4:.1f}\" stroke=\"#333\" "
                 "stroke-dasharray=\"4 3\"/>\n"
                 "<text x=\"{5}\" y=\"{6}\" text-anchor=\"middle\">search time (s)</text>\n"
                 "<text x=\"16\" y=\"{7}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {7})\">"
                 "best speedup</text>\n",
                 kPlotLeft, kPlotRight, kPlotTop, kPlotBottom, y.Map(1),
                 (kPlotLeft + kPlotRight) / 2, kPlotBottom + 36, (kPlotTop + kPlotBottom) / 2);

  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const std::string_view color = kPalette[s.color % kPalette.size()];
    // Past the palette, lines repeat colors and are told apart by a dash pattern.
    const std::string dash = s.color < kPalette.size() ? "" : " stroke-dasharray=\"6 3\"";
    std::string path = fmt::format("M{:.1f} {:.1f}", x.Map(s.points.front().t_s),
                                   y.Map(s.points.front().best_speedup));
    for (size_t j = 1; j < s.points.size(); ++j) {
      fmt::format_to(std::back_inserter(path), " H{:.1f} V{:.1f}", x.Map(s.points[j].t_s),
                     y.Map(s.points[j].best_speedup));
    }
    const ProgressPoint& last = s.points.back();
    const int legend_y = kPlotTop + static_cast<int>(i) * kLegendRow;
    fmt::format_to(
        std::back_inserter(out),
        "<path d=\"{0}\" fill=\"none\" stroke=\"{1}\" stroke-width=\"2\"{2}/>\n"
        "<circle cx=\"{3:.1f}\" cy=\"{4:.1f}\" r=\"3\" fill=\"{1}\"/>\n"
        "<line x1=\"{5}\" x2=\"{6}\" y1=\"{7}\" y2=\"{7}\" stroke=\"{1}\" stroke-width=\"3\"{2}/>\n"
        "<text x=\"{8}\" y=\"{9}\">{10} ({11})</text>\n",
        path, color, dash, x.Map(last.t_s), y.Map(last.best_speedup), kLegendLeft, kLegendLeft + 18,
        legend_y + 8, kLegendLeft + 24, legend_y + 12, KernelLabel(*s.kernel, 30),
        FormatSpeedup(last.best_speedup));
  }
  out += "</svg>\n";
  return out;
}

}  // namespace kfleet::coordinator
