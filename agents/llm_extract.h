// Pulling the kernel source out of an LLM's answer (the Coder role). Answers come as one fenced
// block, several (a sketch, the kernel, a usage example), prose around them, no fences at all, or
// cut off by the token limit; each is either one source file or a failure that says which.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kfleet::agents {

enum class ExtractFailure {
  kNone,
  kNoCode,     // nothing that looks like a source file
  kNoEntry,    // code, but no block defines kf_kernel_run
  kTruncated,  // the answer ends inside a code block (the token limit cut it)
};

struct ExtractedSource {
  std::string source;  // empty on failure
  std::string info;    // the chosen block's info string ("cuda", "cpp", ...), may be empty
  int blocks = 0;      // fenced blocks found
  ExtractFailure failure = ExtractFailure::kNone;
  std::string reason;  // for people and the Conductor, on failure
};

// The source file in `answer`: the fenced block (``` or ~~~) that defines kf_kernel_run (the last
// one when several do: answers revise), or without any fence, the text from its first
// `#include` line when it defines kf_kernel_run. A final block left open is a truncation unless
// an earlier closed block already defines the entry point.
ExtractedSource ExtractKernelSource(std::string_view answer);

std::string_view ExtractFailureName(ExtractFailure failure);

}  // namespace kfleet::agents
