// The LLM agent's worker-side steps, each one request to the model:
//  - Design: the Designer's sketch for one new candidate (a `plan` task with agent "llm").
//  - Code: the Coder's source file for a sketch (a `code` task), pulled out of the answer and
//    put through the static check.
// Every request is reported as an LlmCallNote, the row the store's llm_calls keeps, whether it
// worked or not: a failed request, an answer without usable code or a refused source is a
// recorded outcome, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agents/llm_client.h"
#include "agents/llm_prompts.h"
#include "common/status.h"

namespace kfleet::agents {

struct LlmCallNote {
  std::string role;  // "designer", "coder"
  std::string model;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double cost = 0;
  int64_t latency_ms = 0;
  bool ok = false;      // an answer came back
  std::string outcome;  // "ok", "replayed", "truncated", "empty", "no_code", "no_entry",
                        // "static_check", "unavailable", "refused", "malformed",
                        // "replay_miss", "no_key", "error"
  std::string error;
};

// The outcome word for a request that got no answer.
std::string CallOutcome(const Status& status);

struct DesignResult {
  std::string sketch;   // empty when there is none
  std::string failure;  // why not
  LlmCallNote call;
};
DesignResult Design(LlmClient& client, const DesignerInput& input);

struct CodeResult {
  std::string source;        // the extracted file; kept when the static check refused it
  std::string failed_stage;  // "" usable, "llm" no answer, "extract" no usable code,
                             // "static_check" refused
  std::string failure;       // why, for the Conductor
  LlmCallNote call;
};
CodeResult Code(LlmClient& client, const CoderInput& input);

// The longest sketch kept: a Designer that writes an essay is cut here.
inline constexpr size_t kMaxSketchChars = 4000;
// The knowledge pasted into one prompt.
inline constexpr size_t kMaxKnowledgeChars = 12000;

}  // namespace kfleet::agents
