#include "agents/llm_prompts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <system_error>
#include <variant>

#include "common/files.h"

namespace kfleet::agents {

// configs/knowledge, compiled in (cmake/EmbedKnowledge.cmake): (backend, document, text) triples.
extern const char* const kBuiltinKnowledge[];
extern const int kBuiltinKnowledgeEntries;

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTagPrefix = "families:";

std::string_view Trim(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r") - begin + 1);
}

std::vector<std::string> SplitTags(std::string_view tags) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= tags.size()) {
    size_t comma = tags.find(',', pos);
    if (comma == std::string_view::npos) comma = tags.size();
    const std::string_view tag = Trim(tags.substr(pos, comma - pos));
    if (!tag.empty()) out.emplace_back(tag);
    pos = comma + 1;
  }
  return out;
}

// `label` names the document in errors (its path, or "builtin cuda/basics.md").
Status ParseDocument(const std::string& document, const std::string& label, std::string_view text,
                     std::vector<KnowledgeSection>* sections) {
  KnowledgeSection* current = nullptr;
  bool expect_tag = false;
  int line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    ++line_number;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (expect_tag) {
      const std::string_view trimmed = Trim(line);
      if (!trimmed.starts_with(kTagPrefix)) {
        return InvalidArgument(fmt::format(
            "{}:{}: the line after a '## ' heading must name its families ('families: all' or "
            "'families: gemm, conv')",
            label, line_number));
      }
      current->families = SplitTags(trimmed.substr(kTagPrefix.size()));
      expect_tag = false;
      continue;
    }
    if (line.starts_with("## ")) {
      sections->push_back({document, std::string(Trim(line.substr(3))), {}, ""});
      current = &sections->back();
      current->text = std::string(line) + "\n";
      expect_tag = true;
      continue;
    }
    if (current != nullptr) {
      current->text.append(line);
      current->text.push_back('\n');
    }
  }
  if (expect_tag) {
    return InvalidArgument(
        fmt::format("{}:{}: the last heading has no families line", label, line_number));
  }
  return Status::Ok();
}

bool Matches(const KnowledgeSection& section, std::string_view family_class) {
  return std::any_of(section.families.begin(), section.families.end(),
                     [&](const std::string& f) { return f == "all" || f == family_class; });
}

std::string AttributeText(const planner::AttributeValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return "\"" + v + "\"";
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>> ||
                             std::is_same_v<T, std::vector<double>>) {
          return fmt::format("[{}]", fmt::join(v, ","));
        } else {
          return fmt::format("{}", v);
        }
      },
      value);
}

std::string ValueText(const planner::Graph& g, int id) {
  if (id < 0) return "-";
  const planner::Value& v = g.values[id];
  std::string text = fmt::format("{} {}{}", v.name, planner::DTypeName(v.dtype),
                                 v.has_shape ? planner::ShapeToString(v.shape) : "[?]");
  if (v.kind == planner::ValueKind::kConstant && v.constant.has_value()) {
    const auto& c = *v.constant;
    const size_t n = c.floats.size() + c.ints.size();
    if (n == 1) {
      text +=
          c.floats.empty() ? fmt::format(" = {}", c.ints[0]) : fmt::format(" = {:g}", c.floats[0]);
    } else {
      text += fmt::format(" (constant, {} values)", n);
    }
  }
  return text;
}

std::string SpecSection(const SpecBrief& spec) {
  std::string s = fmt::format(
      "Kernel job: {} (family {}), backend {}.\nTarget: {}\nBaseline (what the model runs "
      "today): {:.1f} us. Speed-of-light floor from the roofline: {:.2f} us.\n\nThe computation "
      "(ONNX ops; every shape may change at run time in the tests, so read shapes from the "
      "tensors):\n{}",
      spec.name, spec.family, spec.backend, spec.target.empty() ? "(not probed)" : spec.target,
      spec.baseline_us, spec.sol_us, spec.graph);
  return s;
}

// The first error lines of an nvcc / g++ log carry the useful part: "file:line:col: error: ...".
bool IsErrorLine(std::string_view line) {
  return line.find("error") != std::string_view::npos ||
         line.find("undefined reference") != std::string_view::npos;
}

}  // namespace

Result<std::vector<KnowledgeSection>> LoadKnowledge(const fs::path& root,
                                                    std::string_view backend) {
  const fs::path dir = root / std::string(backend);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return NotFound(fmt::format(
        "no knowledge documents for backend '{}': {} is not a folder (add Markdown documents "
        "there to teach the LLM agent a backend)",
        backend, dir.string()));
  }
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".md") files.push_back(entry.path());
  }
  if (ec) return IoError(fmt::format("list {}: {}", dir.string(), ec.message()));
  std::sort(files.begin(), files.end());
  std::vector<KnowledgeSection> sections;
  for (const fs::path& file : files) {
    KF_ASSIGN_OR_RETURN(std::string text, ReadFile(file, size_t{1} << 22));
    KF_RETURN_IF_ERROR(ParseDocument(file.stem().string(), file.string(), text, &sections));
  }
  return sections;
}

Result<std::vector<KnowledgeSection>> BuiltinKnowledge(std::string_view backend) {
  std::vector<KnowledgeSection> sections;
  bool any = false;
  for (int i = 0; i + 2 < kBuiltinKnowledgeEntries; i += 3) {
    if (backend != kBuiltinKnowledge[i]) continue;
    any = true;
    const std::string document = kBuiltinKnowledge[i + 1];
    KF_RETURN_IF_ERROR(ParseDocument(document, fmt::format("builtin {}/{}.md", backend, document),
                                     kBuiltinKnowledge[i + 2], &sections));
  }
  if (!any) {
    return NotFound(fmt::format(
        "no knowledge documents for backend '{}' are built in (set KFLEET_KNOWLEDGE_DIR to a "
        "folder with a {}/ folder of Markdown documents)",
        backend, backend));
  }
  return sections;
}

Result<std::vector<KnowledgeSection>> KnowledgeFor(std::string_view backend) {
  const char* dir = std::getenv("KFLEET_KNOWLEDGE_DIR");
  if (dir != nullptr && *dir != '\0') return LoadKnowledge(dir, backend);
  return BuiltinKnowledge(backend);
}

std::string FamilyClass(std::string_view family) {
  const std::string_view head = family.substr(0, family.find('+'));
  if (head == "gemm" || head == "matmul") return "gemm";
  if (head.starts_with("conv")) return "conv";
  if (head == "attention") return "attention";
  if (head == "pool" || head.ends_with("pool")) return "pool";
  if (head == "reduce") return "reduce";
  if (head == "layernorm" || head == "rmsnorm" || head == "softmax" || head == "logsoftmax" ||
      head == "rownorm" || head == "normalization") {
    return "rownorm";
  }
  return "elementwise";
}

std::string TrimKnowledge(const std::vector<KnowledgeSection>& sections,
                          std::string_view family_class, size_t max_chars) {
  std::vector<const KnowledgeSection*> kept;
  for (const KnowledgeSection& section : sections) {
    if (Matches(section, family_class)) kept.push_back(&section);
  }
  const auto render = [&kept] {
    std::string out;
    std::string document;
    for (const KnowledgeSection* s : kept) {
      if (s->document != document) {
        document = s->document;
        out += fmt::format("# {}\n", document);
      }
      out += s->text;
      out += "\n";
    }
    return out;
  };
  // Over the limit: drop the last section not from "basics", so every document keeps its first
  // (most general) sections longest and the basics go last.
  std::string out = render();
  while (!kept.empty() && out.size() > max_chars) {
    size_t victim = kept.size() - 1;
    for (size_t i = kept.size(); i-- > 0;) {
      if (kept[i]->document != "basics") {
        victim = i;
        break;
      }
    }
    kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(victim));
    out = render();
  }
  return out;
}

std::string DescribeSpecGraph(const planner::Graph& g) {
  std::string s = "Inputs (in0, in1, ... are the kernel's in[0], in[1], ...):\n";
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    s += fmt::format("  in[{}]: {}\n", i, ValueText(g, g.inputs[i]));
  }
  s += "Outputs:\n";
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    s += fmt::format("  out[{}]: {}\n", i, ValueText(g, g.outputs[i]));
  }
  s += "Ops, in order:\n";
  for (const planner::Node& node : g.nodes) {
    std::vector<std::string> ins;
    for (int v : node.inputs) ins.push_back(v < 0 ? "-" : g.values[v].name);
    std::vector<std::string> outs;
    for (int v : node.outputs) {
      if (v >= 0) outs.push_back(ValueText(g, v));
    }
    std::vector<std::string> attrs;
    for (const auto& [name, value] : node.attributes) {
      attrs.push_back(name + "=" + AttributeText(value));
    }
    s += fmt::format("  {}({}){} -> {}\n", node.op_type, fmt::join(ins, ", "),
                     attrs.empty() ? "" : fmt::format(" {{{}}}", fmt::join(attrs, ", ")),
                     fmt::join(outs, ", "));
  }
  return s;
}

std::vector<ChatMessage> DesignerMessages(const DesignerInput& in) {
  std::string system = fmt::format(
      "You are the designer in kfleet, a system that writes faster {} kernels for parts of ML "
      "models. You do not write code. You write a short plan (at most 25 lines) that a coder "
      "will implement as one source file: how the work is split over threads / blocks, how data "
      "moves through memory (what is loaded once, what stays in registers or shared memory), "
      "tiling and vector widths, how the fused ops are applied, and which library calls (if "
      "any) to make. Say why you expect it to beat the baseline, and name the risk to test "
      "first.\n\nKnowledge for this backend:\n{}",
      in.spec.backend, in.knowledge);
  std::string user = SpecSection(in.spec);
  if (!in.parents.empty()) {
    user += "\nCandidates tried so far (best first):\n";
    for (const ParentBrief& p : in.parents) {
      user += fmt::format("- {}: {}", p.agent,
                          p.failure.empty() ? fmt::format("{:.1f} us ({:.2f}x the baseline)",
                                                          p.median_us, p.speedup)
                                            : p.failure);
      user += fmt::format("\n  plan: {}\n", p.plan);
    }
    user += "Propose something different from the failed ones and better than the best.\n";
  }
  if (!in.advice.empty()) user += "\nWhat went wrong last time: " + in.advice + "\n";
  if (in.islands > 1) {
    user +=
        fmt::format("\nThe search runs {} islands in parallel and this plan is for island {}: {}\n",
                    in.islands, in.island,
                    in.island == 0 ? "prefer the simplest design that can be fast"
                                   : "prefer a bolder design than the obvious one");
  }
  user += "\nWrite the plan now.";
  return {{"system", system}, {"user", user}};
}

std::vector<ChatMessage> CoderMessages(const CoderInput& in) {
  std::string system = fmt::format(
      "You are the coder in kfleet. You write one complete {} source file that implements the "
      "plan you are given under kfleet's kernel ABI: it defines extern \"C\" int "
      "kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out, void* "
      "stream), reads every shape from the tensors, checks dtypes and ranks, and returns "
      "KF_OK or an error code. The file must not read files, spawn processes, open sockets, "
      "read clocks, sleep, or call into kfleet: such sources are rejected before compiling. "
      "Answer with the file in one fenced code block and nothing after it.\n\nThe ABI header "
      "(kfleet/kernel.h):\n```c\n{}```\n\nKnowledge for this backend:\n{}",
      in.spec.backend == "cpu"    ? "C++17"
      : in.spec.backend == "cuda" ? "CUDA C++17"
                                  : "HIP C++17",
      in.abi_header, in.knowledge);
  std::string user = SpecSection(in.spec);
  user += "\nThe plan:\n" + in.sketch + "\n";
  for (size_t i = 0; i < in.examples.size(); ++i) {
    user += fmt::format("\nA kernel that works for a similar job (example {}):\n```\n{}```\n",
                        i + 1, in.examples[i]);
  }
  if (!in.previous_source.empty()) {
    user += "\nYour previous file:\n```\n" + in.previous_source + "```\n";
  }
  if (!in.feedback.empty()) user += "\nWhat to fix:\n" + in.feedback + "\n";
  user += "\nWrite the complete file now.";
  return {{"system", system}, {"user", user}};
}

std::string CompileErrorExcerpt(std::string_view log, size_t max_lines) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < log.size()) {
    size_t end = log.find('\n', pos);
    if (end == std::string_view::npos) end = log.size();
    lines.push_back(log.substr(pos, end - pos));
    pos = end + 1;
  }
  std::vector<bool> keep(lines.size(), false);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!IsErrorLine(lines[i])) continue;
    keep[i] = true;
    if (i + 1 < lines.size()) keep[i + 1] = true;  // nvcc prints the source line after
  }
  std::string out;
  size_t kept = 0;
  for (size_t i = 0; i < lines.size() && kept < max_lines; ++i) {
    if (!keep[i]) continue;
    out.append(lines[i]);
    out.push_back('\n');
    ++kept;
  }
  if (out.empty()) {
    // No line says "error": the tail says the most (a linker or driver message).
    const size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
    for (size_t i = first; i < lines.size(); ++i) {
      out.append(lines[i]);
      out.push_back('\n');
    }
  }
  return out;
}

ConductorVerdict RouteFailure(std::string_view stage, std::string_view reason,
                              std::string_view log) {
  ConductorVerdict v;
  const auto contains = [&reason](std::string_view what) {
    return reason.find(what) != std::string_view::npos;
  };
  if (stage == "compile") {
    v.route = FailureRoute::kCoder;
    v.category = "compile";
    v.excerpt = CompileErrorExcerpt(log);
    v.advice =
        "The file does not compile. Fix the errors below and keep the plan; check headers, "
        "types and the ABI's names.";
    return v;
  }
  if (stage == "static_check") {
    v.route = FailureRoute::kCoder;
    v.category = "static_check";
    v.excerpt = std::string(reason);
    v.advice = "The file uses something kernels may not; remove it and compute from the inputs.";
    return v;
  }
  if (stage == "extract") {
    v.route = FailureRoute::kCoder;
    v.category = contains("cut off") ? "truncated" : "no_code";
    v.excerpt = std::string(reason);
    v.advice = v.category == "truncated"
                   ? "The answer was cut off by the token limit: write a shorter file (fewer "
                     "variants, no long comments) in one code block."
                   : "No usable source came back: answer with one complete file defining "
                     "kf_kernel_run in one fenced code block.";
    return v;
  }
  v.route = FailureRoute::kDesigner;
  v.excerpt = std::string(reason);
  if (contains("illegal") || contains("signal") || contains("crash") || contains("fault") ||
      contains("killed") || contains("sticky")) {
    v.category = "crash";
    v.advice = fmt::format(
        "The kernel crashed at the {} stage (an out-of-bounds access or a bad launch): bound "
        "every index by the run-time sizes, including odd and small shapes.",
        stage);
  } else if (contains("timed out") || contains("timeout") || contains("deadline")) {
    v.category = "timeout";
    v.advice =
        "The kernel did not finish in time: check loop bounds and synchronization (a "
        "barrier not every thread reaches hangs), and the amount of work per thread.";
  } else if (stage == "determinism" || contains("differs between runs")) {
    v.category = "nondeterministic";
    v.advice =
        "Results differ between runs: make reductions fixed-order (no float atomics, "
        "no thread-count-dependent partial sums).";
  } else if (contains("tolerance") || contains("mismatch") || contains("wrong") ||
             contains("NaN") || contains("Inf")) {
    v.category = "wrong_result";
    v.advice = fmt::format(
        "The results are wrong at the {} stage: check broadcasting, the order of the fused "
        "ops, and the indexing for the shapes that stage uses; accumulate in f32.",
        stage);
  } else if (contains("KF_ERR_UNSUPPORTED_SHAPE") || contains("unsupported")) {
    v.category = "unsupported_shape";
    v.advice =
        "The kernel refused a shape the tests use: it must handle every size the "
        "shapes may take, not only the profiled one.";
  } else {
    v.category = "failed";
    v.advice = fmt::format("The kernel failed at the {} stage; see the evidence.", stage);
  }
  return v;
}

}  // namespace kfleet::agents
