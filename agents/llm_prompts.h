// What the LLM agent's roles say to the model, and how the Conductor routes a failed test.
//   Designer (`plan`): spec, target, roofline, knowledge, parents with their timings -> a sketch.
//   Coder (`code`): sketch, the kernel ABI, knowledge, retrieved examples (and, on a retry, the
//     failed source with the compiler's complaint) -> one complete source file.
//   Conductor: a failed candidate -> back to the Coder (compile errors, API misuse, no usable
//     code) or to the Designer (wrong results, crashes, timeouts, nondeterminism), with advice.
// Pure functions: the worker's plan / code tasks call them and the client (llm_client.h).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "agents/llm_client.h"
#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::agents {

// One `## ` section of a knowledge document (configs/knowledge/<backend>/*.md) and the families
// its tag line names ("families: all" or "families: gemm, conv").
struct KnowledgeSection {
  std::string document;  // file name without .md: "basics", "pitfalls"
  std::string title;
  std::vector<std::string> families;
  std::string text;  // the heading and body, without the tag line
};

// Every section of every document of `backend` under `root` (configs/knowledge), documents in
// name order. NotFound naming the folder when the backend has none; InvalidArgument naming the
// file and line for a heading without its tag line.
Result<std::vector<KnowledgeSection>> LoadKnowledge(const std::filesystem::path& root,
                                                    std::string_view backend);

// The documents compiled into kfleet (configs/knowledge at build time); NotFound for a backend
// without any.
Result<std::vector<KnowledgeSection>> BuiltinKnowledge(std::string_view backend);
// What the agent uses: the folder $KFLEET_KNOWLEDGE_DIR when set (a user's own documents, read at
// run time), else the built-in ones.
Result<std::vector<KnowledgeSection>> KnowledgeFor(std::string_view backend);

// A spec family ("gemm+gelu_tanh", "conv+add+relu", "layernorm", "attention") as the knowledge
// tags name it: elementwise, rownorm, reduce, gemm, conv, attention or pool.
std::string FamilyClass(std::string_view spec_family);

// The sections for `family_class` (and "all"), in document order, within `max_chars`: later
// sections of the least general documents are dropped first (basics, then the rest by name).
std::string TrimKnowledge(const std::vector<KnowledgeSection>& sections,
                          std::string_view family_class, size_t max_chars);

// A kernel spec in words for a prompt: inputs and outputs with dtypes and shapes, then each op
// with its attributes.
std::string DescribeSpecGraph(const planner::Graph& spec);

struct SpecBrief {
  std::string name;     // "conv+relu 8x64x56x56 w64x64x3x3 bf16"
  std::string family;   // the planner's family
  std::string backend;  // "cpu", "cuda", "hip"
  std::string graph;    // DescribeSpecGraph
  double baseline_us = 0;
  double sol_us = 0;   // speed-of-light floor from the roofline
  std::string target;  // the device in words: name, arch, SMs, memory, bandwidth
};

// A candidate already tried, for the Designer.
struct ParentBrief {
  std::string agent;  // "template:cuda_gemm_lt", "llm:<model>"
  std::string plan;   // its sketch or its parameters
  double median_us = 0;
  double speedup = 0;
  std::string failure;  // "failed at smoke: 12 elements outside tolerance ...", empty if it ran
};

struct DesignerInput {
  SpecBrief spec;
  std::string knowledge;  // TrimKnowledge
  std::vector<ParentBrief> parents;
  std::string advice;  // the Conductor's, when this redesigns a failed candidate
  int island = 0;      // which island the plan is for, of `islands`
  int islands = 1;
};
std::vector<ChatMessage> DesignerMessages(const DesignerInput& input);

struct CoderInput {
  SpecBrief spec;
  std::string sketch;
  std::string abi_header;  // include/kfleet/kernel.h
  std::string knowledge;
  std::vector<std::string>
      examples;                 // 1-3 complete kernels: the best of the family / nearest shapes
  std::string previous_source;  // on a retry after a compile error or a static-check refusal
  std::string feedback;         // the Conductor's excerpt of what went wrong
};
std::vector<ChatMessage> CoderMessages(const CoderInput& input);

enum class FailureRoute { kCoder, kDesigner };

struct ConductorVerdict {
  FailureRoute route = FailureRoute::kDesigner;
  std::string category;  // "compile", "static_check", "no_code", "wrong_result", "crash", ...
  std::string advice;    // one or two sentences for the next role
  std::string excerpt;   // the evidence: compiler errors, the failing check
};

// Where a failed candidate goes next. `stage` is the harness stage that failed ("compile",
// "smoke", "shape_sweep", "stability", "determinism", "profile") or the agent's own
// ("extract", "static_check"); `reason` is its one-line summary; `log` the compiler's output.
ConductorVerdict RouteFailure(std::string_view stage, std::string_view reason,
                              std::string_view log);

// The compiler's error lines with a line of context each, at most `max_lines` lines.
std::string CompileErrorExcerpt(std::string_view log, size_t max_lines = 40);

}  // namespace kfleet::agents
