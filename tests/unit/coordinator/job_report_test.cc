#include "coordinator/job_report.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

namespace kfleet::coordinator {
namespace {

// What is wrong with `xml` as a standalone document of one root element, or "" when nothing is.
// Enough XML for what the renderers write: declarations, comments, elements, quoted attributes,
// text with the predefined and numeric entities. No DTD, no CDATA.
std::string WellFormedError(std::string_view xml) {
  std::vector<std::string> open;
  int roots = 0;
  size_t i = 0;
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':' || c == '-' ||
           c == '.';
  };
  auto read_name = [&]() {
    const size_t start = i;
    while (i < xml.size() && name_char(xml[i])) ++i;
    return std::string(xml.substr(start, i - start));
  };
  auto skip_space = [&]() {
    while (i < xml.size() && std::isspace(static_cast<unsigned char>(xml[i]))) ++i;
  };
  auto entity_ok = [&](size_t at) {
    const size_t end = xml.find(';', at);
    if (end == std::string_view::npos) return false;
    const std::string_view e = xml.substr(at + 1, end - at - 1);
    if (e == "amp" || e == "lt" || e == "gt" || e == "quot" || e == "apos") return true;
    if (e.size() < 2 || e[0] != '#') return false;
    const bool hex = e[1] == 'x';
    const std::string_view digits = e.substr(hex ? 2 : 1);
    if (digits.empty()) return false;
    for (char c : digits) {
      if (!(hex ? std::isxdigit(static_cast<unsigned char>(c))
                : std::isdigit(static_cast<unsigned char>(c)))) {
        return false;
      }
    }
    return true;
  };
  while (i < xml.size()) {
    const char c = xml[i];
    if (c != '<') {
      if (c == '&' && !entity_ok(i)) return "bad entity at " + std::to_string(i);
      if (open.empty() && !std::isspace(static_cast<unsigned char>(c))) {
        return "text outside the root at " + std::to_string(i);
      }
      ++i;
      continue;
    }
    if (xml.substr(i, 4) == "<!--") {
      const size_t end = xml.find("-->", i);
      if (end == std::string_view::npos) return "unterminated comment";
      i = end + 3;
      continue;
    }
    if (xml.substr(i, 2) == "<?") {
      const size_t end = xml.find("?>", i);
      if (end == std::string_view::npos) return "unterminated declaration";
      i = end + 2;
      continue;
    }
    if (xml.substr(i, 2) == "</") {
      i += 2;
      const std::string name = read_name();
      skip_space();
      if (i >= xml.size() || xml[i] != '>') return "bad end tag </" + name;
      ++i;
      if (open.empty() || open.back() != name) return "unexpected </" + name + ">";
      open.pop_back();
      continue;
    }
    ++i;
    const std::string name = read_name();
    if (name.empty()) return "bad tag at " + std::to_string(i);
    if (open.empty() && ++roots > 1) return "second root <" + name + ">";
    std::vector<std::string> attrs;
    while (true) {
      skip_space();
      if (i >= xml.size()) return "unterminated <" + name;
      if (xml.substr(i, 2) == "/>") {
        i += 2;
        break;
      }
      if (xml[i] == '>') {
        ++i;
        open.push_back(name);
        break;
      }
      const std::string attr = read_name();
      if (attr.empty()) return "bad attribute in <" + name + ">";
      for (const std::string& seen : attrs) {
        if (seen == attr) return "duplicate attribute " + attr + " in <" + name + ">";
      }
      attrs.push_back(attr);
      skip_space();
      if (i >= xml.size() || xml[i] != '=') return "attribute " + attr + " has no value";
      ++i;
      skip_space();
      if (i >= xml.size() || (xml[i] != '"' && xml[i] != '\'')) return "unquoted " + attr;
      const char quote = xml[i++];
      const size_t end = xml.find(quote, i);
      if (end == std::string_view::npos) return "unterminated value of " + attr;
      for (size_t j = i; j < end; ++j) {
        if (xml[j] == '<') return "'<' in the value of " + attr;
        if (xml[j] == '&' && !entity_ok(j)) return "bad entity in the value of " + attr;
      }
      i = end + 1;
    }
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  if (roots != 1) return "no root element";
  return "";
}

size_t Count(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string_view::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// The line of `text` that contains `needle`, or "" when none does.
std::string LineWith(const std::string& text, std::string_view needle) {
  const size_t at = text.find(needle);
  if (at == std::string::npos) return "";
  const size_t start = text.rfind('\n', at) + 1;
  const size_t end = text.find('\n', at);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

ReportKernel GemmWinner() {
  ReportKernel k;
  k.rank = 1;
  k.name = "gemm+gelu_tanh 128x768x3072 f32";
  k.family = "gemm+gelu_tanh";
  k.template_name = "gemm_blas";
  k.count = 12;
  k.share = 0.41;
  k.baseline_us = 812.4;
  k.best_us = 351.7;
  k.speedup = 2.31;
  k.sol_us = 290;
  k.candidates = 40;
  k.failed = 3;
  k.state = "done";
  k.note = "reached 82% of speed-of-light";
  k.params = {{"tile_m", "64"}, {"unroll", "4"}};
  k.explanation = "Blocks the product in 64-row tiles so the weights stay in L2.";
  k.source_path = "kernels/01-gemm_gelu_tanh.cpp";
  k.verified = true;
  k.progress = {{5, 1.0}, {30, 1.6}, {400, 2.31}};
  return k;
}

ReportKernel SoftmaxDropped() {
  ReportKernel k;
  k.rank = 2;
  k.name = "softmax 12x128x128 f32";
  k.family = "rownorm";
  k.template_name = "rownorm";
  k.count = 12;
  k.share = 0.12;
  k.baseline_us = 45.3;
  k.best_us = 30.2;
  k.speedup = 1.5;
  k.sol_us = 10;
  k.candidates = 22;
  k.failed = 5;
  k.state = "done";
  k.note = "plateau";
  k.verify_note = "max error 3e-2 over the 1e-3 tolerance";
  k.progress = {{10, 1.2}, {60, 1.5}};
  return k;
}

ReportKernel LayernormFailed() {
  ReportKernel k;
  k.rank = 3;
  k.name = "layernorm 128x768 f32";
  k.family = "rownorm";
  k.count = 25;
  k.share = 0.05;
  k.baseline_us = 8.2;
  k.candidates = 10;
  k.failed = 10;
  k.state = "failed";
  k.note = "every candidate failed to compile";
  return k;
}

JobReport SampleReport() {
  JobReport r;
  r.job_id = 7;
  r.name = "gpt2-small";
  r.target = "cpu";
  r.device = "cpu: AMD EPYC 7B13, 2 cores";
  r.state = "done";
  r.phase = "verifying";
  r.budget_s = 3600;
  r.elapsed_s = 2530;
  r.baseline_model_ms = 41.2;
  r.projected_speedup = 1.42;
  r.measured_speedup = 1.38;
  r.swapped_model_ms = 29.85;
  r.verify_note = "outputs match (max error 2.1e-5)";
  r.kernels = {GemmWinner(), SoftmaxDropped(), LayernormFailed()};
  return r;
}

TEST(WellFormedCheckTest, AcceptsWellFormedAndRejectsBrokenDocuments) {
  EXPECT_EQ(WellFormedError("<?xml version=\"1.0\"?><a x=\"1&amp;\"><b/>t &lt; &#38;</a>\n"), "");
  EXPECT_NE(WellFormedError("<a><b></a>"), "");
  EXPECT_NE(WellFormedError("<a>x & y</a>"), "");
  EXPECT_NE(WellFormedError("<a x=\"<\"/>"), "");
  EXPECT_NE(WellFormedError("<a/><b/>"), "");
  EXPECT_NE(WellFormedError("<a x=\"1\" x=\"2\"/>"), "");
  EXPECT_NE(WellFormedError("<a>"), "");
}

TEST(RenderReportMarkdownTest, HasTitleSummaryAndRankedTable) {
  const std::string md = RenderReportMarkdown(SampleReport());
  EXPECT_EQ(md.rfind("# Kernel search report: gpt2-small (job 7)\n", 0), 0u) << md;
  EXPECT_NE(md.find("cpu: AMD EPYC 7B13, 2 cores"), std::string::npos);
  EXPECT_NE(md.find("done (phase: verifying)"), std::string::npos);
  EXPECT_NE(md.find("elapsed 42m 10s of a 1h 00m budget (70%)"), std::string::npos) << md;
  EXPECT_NE(md.find("41.2 ms"), std::string::npos);
  EXPECT_NE(md.find("outputs match (max error 2.1e-5)"), std::string::npos);
  EXPECT_NE(
      md.find("| Rank | Kernel | Family | Count | Share % | Baseline µs | Best µs | Speedup | "
              "% of SoL | Candidates (failed) | State |"),
      std::string::npos)
      << md;
  EXPECT_EQ(LineWith(md, "| 1 | `gemm+gelu_tanh"),
            "| 1 | `gemm+gelu_tanh 128x768x3072 f32` | `gemm+gelu_tanh` | 12 | 41.0 | 812.4 | "
            "351.7 | 2.31x | 82% | 40 (3) | done, verified |");
  EXPECT_EQ(LineWith(md, "| 2 | `softmax"),
            "| 2 | `softmax 12x128x128 f32` | `rownorm` | 12 | 12.0 | 45.3 | 30.2 | 1.50x | 33% | "
            "22 (5) | done, dropped |");
  EXPECT_EQ(LineWith(md, "| 3 | `layernorm"),
            "| 3 | `layernorm 128x768 f32` | `rownorm` | 25 | 5.0 | 8.20 | — | — | — | 10 (10) | "
            "failed |");
  EXPECT_NE(md.find("![Speedup per kernel](speedup.svg)"), std::string::npos);
  EXPECT_NE(md.find("![Search progress](progress.svg)"), std::string::npos);
}

TEST(RenderReportMarkdownTest, ShowsProjectedNextToMeasuredSpeedup) {
  const std::string md = RenderReportMarkdown(SampleReport());
  EXPECT_NE(LineWith(md, "Projected end-to-end speedup").find("**1.42x**"), std::string::npos)
      << md;
  const std::string measured = LineWith(md, "Measured end-to-end speedup");
  EXPECT_NE(measured.find("**1.38x**"), std::string::npos) << measured;
  EXPECT_NE(measured.find("41.2 ms → 29.9 ms"), std::string::npos) << measured;
  EXPECT_NE(measured.find("97% of projected"), std::string::npos) << measured;
}

TEST(RenderReportMarkdownTest, SaysNotMeasuredBeforeTheEndToEndCheck) {
  JobReport r = SampleReport();
  r.measured_speedup = 0;
  r.swapped_model_ms = 0;
  r.verify_note.clear();
  const std::string md = RenderReportMarkdown(r);
  EXPECT_EQ(LineWith(md, "Measured end-to-end speedup"),
            "- **Measured end-to-end speedup:** not measured");
  EXPECT_NE(LineWith(md, "Projected end-to-end speedup").find("1.42x"), std::string::npos);
  EXPECT_EQ(LineWith(md, "**Verification:**"), "- **Verification:** not run yet");
}

TEST(RenderReportMarkdownTest, EscapesPipesInTableCells) {
  JobReport r = SampleReport();
  r.kernels[0].name = "concat|split 4x4";
  r.kernels[0].family = "a|b";
  r.kernels[0].params = {{"layout", "row|col"}};
  const std::string md = RenderReportMarkdown(r);
  const std::string row = LineWith(md, "| 1 | ");
  EXPECT_NE(row.find("`concat\\|split 4x4` | `a\\|b` |"), std::string::npos) << row;
  // Eleven columns: twelve unescaped bars, however many the names hold.
  size_t bars = 0;
  for (size_t i = 0; i < row.size(); ++i) bars += row[i] == '|' && (i == 0 || row[i - 1] != '\\');
  EXPECT_EQ(bars, 12u) << row;
  EXPECT_NE(md.find("| `layout` | `row\\|col` |"), std::string::npos) << md;
}

TEST(RenderReportMarkdownTest, KeepsNamesWithBackticksAndAngleBracketsInert) {
  JobReport r = SampleReport();
  r.name = "model <b>";
  r.kernels[0].name = "odd`name";
  const std::string md = RenderReportMarkdown(r);
  EXPECT_NE(md.find("# Kernel search report: model &lt;b> (job 7)"), std::string::npos) << md;
  EXPECT_NE(md.find("``odd`name``"), std::string::npos) << md;
}

TEST(RenderReportMarkdownTest, DescribesEachWinnerAndListsKernelsWithout) {
  const std::string md = RenderReportMarkdown(SampleReport());
  const size_t gemm = md.find("### 1. `gemm+gelu_tanh 128x768x3072 f32`");
  ASSERT_NE(gemm, std::string::npos) << md;
  const size_t softmax = md.find("### 2. `softmax 12x128x128 f32`");
  ASSERT_NE(softmax, std::string::npos) << md;
  const std::string gemm_section = md.substr(gemm, softmax - gemm);
  EXPECT_NE(gemm_section.find("`gemm_blas`"), std::string::npos);
  EXPECT_NE(gemm_section.find("| `tile_m` | `64` |"), std::string::npos) << gemm_section;
  EXPECT_NE(gemm_section.find("| `unroll` | `4` |"), std::string::npos);
  EXPECT_NE(gemm_section.find("Blocks the product in 64-row tiles"), std::string::npos);
  EXPECT_NE(gemm_section.find("`kernels/01-gemm_gelu_tanh.cpp`"), std::string::npos);
  EXPECT_NE(gemm_section.find("kept by the end-to-end check"), std::string::npos);
  EXPECT_NE(gemm_section.find("**Stopped:** reached 82% of speed-of-light"), std::string::npos);
  EXPECT_NE(gemm_section.find("812.4 µs → 351.7 µs"), std::string::npos) << gemm_section;

  const std::string softmax_section = md.substr(softmax);
  EXPECT_NE(softmax_section.find("dropped by the end-to-end check: max error 3e-2"),
            std::string::npos)
      << softmax_section;
  EXPECT_NE(softmax_section.find("No parameters."), std::string::npos);

  EXPECT_EQ(md.find("### 3."), std::string::npos);
  const size_t without = md.find("## Kernels without a winner");
  ASSERT_NE(without, std::string::npos);
  EXPECT_NE(md.find("- Rank 3: `layernorm 128x768 f32` (failed): every candidate failed to "
                    "compile; 10 candidates tried, 10 failed",
                    without),
            std::string::npos)
      << md;
}

TEST(RenderReportMarkdownTest, HandlesAJobWithNoKernels) {
  JobReport r;
  r.job_id = 3;
  r.name = "empty";
  const std::string md = RenderReportMarkdown(r);
  EXPECT_NE(md.find("No kernels were selected for search."), std::string::npos) << md;
  EXPECT_NE(md.find("not measured"), std::string::npos);
  EXPECT_EQ(md.find("## Winners"), std::string::npos);
  EXPECT_EQ(md.find("## Kernels without a winner"), std::string::npos);
}

TEST(RenderSpeedupSvgTest, DrawsOneLabelledBarPerWinner) {
  const std::string svg = RenderSpeedupSvg(SampleReport());
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find(">#1 gemm+gelu_tanh 128x768x3072 f32<"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">2.31x<"), std::string::npos);
  EXPECT_NE(svg.find(">1.50x, dropped<"), std::string::npos);
  EXPECT_EQ(svg.find("layernorm"), std::string::npos);
  EXPECT_EQ(Count(svg, "<rect "), 3u);                         // the background and two bars
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);  // the 1x reference line
  EXPECT_NE(svg.find(">1x<"), std::string::npos);
  EXPECT_EQ(svg.find("log scale"), std::string::npos);
}

TEST(RenderSpeedupSvgTest, UsesALogScaleWhenSpeedupsSpanMoreThanTenfold) {
  JobReport r = SampleReport();
  r.kernels[1].speedup = 40;
  const std::string svg = RenderSpeedupSvg(r);
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_NE(svg.find("log scale"), std::string::npos);
  EXPECT_NE(svg.find(">10x<"), std::string::npos);
  EXPECT_NE(svg.find(">100x<"), std::string::npos);
}

TEST(RenderSpeedupSvgTest, EscapesAndTruncatesLabels) {
  JobReport r = SampleReport();
  r.kernels[0].name = "a<b & \"c\" 'd' >e";
  r.kernels[1].name = "µ-kernel " + std::string(60, 'x') + " tail";
  const std::string svg = RenderSpeedupSvg(r);
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot; &apos;d&apos; &gt;e"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("a<b"), std::string::npos);
  // 36 characters, counted as code points: 'µ' is two bytes and one character.
  const std::string label = ">#2 µ-kernel " + std::string(23, 'x') + "…<";
  EXPECT_NE(svg.find(label), std::string::npos) << svg;
  EXPECT_NE(svg.find("xxxx tail: 1.50x</title>"), std::string::npos);  // the tooltip keeps it all
}

TEST(RenderSpeedupSvgTest, SaysSoWhenNoKernelHasAWinner) {
  JobReport r = SampleReport();
  r.kernels = {LayernormFailed()};
  for (const JobReport& report : {r, JobReport{}}) {
    const std::string svg = RenderSpeedupSvg(report);
    EXPECT_EQ(WellFormedError(svg), "") << svg;
    EXPECT_NE(svg.find("xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
    EXPECT_NE(svg.find("no kernels with a verified winner yet"), std::string::npos) << svg;
  }
}

TEST(RenderProgressSvgTest, DrawsOneStepLinePerKernelWithALegend) {
  const std::string svg = RenderProgressSvg(SampleReport());
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(Count(svg, "<path "), 2u) << svg;
  EXPECT_NE(svg.find("stroke=\"#4e79a7\""), std::string::npos);
  EXPECT_NE(svg.find("stroke=\"#f28e2b\""), std::string::npos);
  EXPECT_NE(svg.find(">#1 gemm+gelu_tanh 128x768x307… (2.31x)<"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">#2 softmax 12x128x128 f32 (1.50x)<"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("layernorm"), std::string::npos);
  EXPECT_NE(svg.find(">search time (s)<"), std::string::npos);
  EXPECT_NE(svg.find(">best speedup<"), std::string::npos);
  EXPECT_NE(svg.find(">400<"), std::string::npos);  // the last time tick
  // Steps: horizontal then vertical moves.
  EXPECT_NE(svg.find(" H"), std::string::npos);
  EXPECT_NE(svg.find(" V"), std::string::npos);
}

TEST(RenderProgressSvgTest, EscapesNamesAndSkipsBadPoints) {
  JobReport r = SampleReport();
  r.kernels[0].name = "x<&>y";
  r.kernels[1].progress = {{-1, 2}, {5, 0}};
  const std::string svg = RenderProgressSvg(r);
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_NE(svg.find("#1 x&lt;&amp;&gt;y (2.31x)"), std::string::npos) << svg;
  EXPECT_EQ(Count(svg, "<path "), 1u);
}

TEST(RenderProgressSvgTest, TellsLinesApartPastThePalette) {
  JobReport r;
  for (int i = 1; i <= 12; ++i) {
    ReportKernel k = GemmWinner();
    k.rank = i;
    k.name = "kernel " + std::to_string(i);
    r.kernels.push_back(k);
  }
  const std::string svg = RenderProgressSvg(r);
  EXPECT_EQ(WellFormedError(svg), "") << svg;
  EXPECT_EQ(Count(svg, "<path "), 12u);
  EXPECT_EQ(Count(svg, "stroke-dasharray=\"6 3\""), 4u);  // two lines, two legend swatches
  EXPECT_NE(svg.find(">#12 kernel 12 (2.31x)<"), std::string::npos);
}

TEST(RenderProgressSvgTest, SaysSoWithoutProgress) {
  JobReport r = SampleReport();
  for (ReportKernel& k : r.kernels) k.progress.clear();
  for (const JobReport& report : {r, JobReport{}}) {
    const std::string svg = RenderProgressSvg(report);
    EXPECT_EQ(WellFormedError(svg), "") << svg;
    EXPECT_NE(svg.find("no search progress yet"), std::string::npos) << svg;
  }
}

}  // namespace
}  // namespace kfleet::coordinator
