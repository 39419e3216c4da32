#include "agents/llm_agent.h"

#include <fmt/format.h>

#include <cmath>

#include "agents/llm_extract.h"
#include "agents/source_check.h"

namespace kfleet::agents {
namespace {

LlmCallNote NoteFor(const LlmClient& client, std::string_view role) {
  LlmCallNote note;
  note.role = std::string(role);
  note.model = client.config().model;
  return note;
}

void NoteAnswer(const ChatAnswer& answer, LlmCallNote* note) {
  note->ok = true;
  note->prompt_tokens = answer.input_tokens;
  note->completion_tokens = answer.output_tokens;
  note->cost = answer.cost;
  note->latency_ms = static_cast<int64_t>(std::llround(answer.latency_s * 1000));
  note->outcome = answer.replayed ? "replayed" : "ok";
  // An answer after retries is recorded with what the failed attempts met (429, 5xx, timeouts).
  if (!answer.retried_for.empty()) {
    note->outcome = "retried";
    for (const std::string& problem : answer.retried_for) {
      if (!note->error.empty()) note->error += "; ";
      note->error += problem;
    }
  }
}

std::string Trimmed(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  return std::string(text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1));
}

// One request: the answer, with `note` filled either way.
Result<ChatAnswer> Ask(LlmClient& client, std::vector<ChatMessage> messages, double temperature,
                       LlmCallNote* note) {
  ChatRequest request;
  request.messages = std::move(messages);
  request.temperature = temperature;
  Result<ChatAnswer> answer = client.Chat(request);
  if (answer.ok()) {
    NoteAnswer(*answer, note);
  } else {
    note->outcome = CallOutcome(answer.status());
    note->error = answer.status().message();
  }
  return answer;
}

}  // namespace

std::string CallOutcome(const Status& status) {
  switch (status.code()) {
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kInvalidArgument:
      return "refused";
    case ErrorCode::kCorruption:
      return "malformed";
    case ErrorCode::kNotFound:
      return "replay_miss";
    case ErrorCode::kFailedPrecondition:
      return "no_key";
    default:
      return "error";
  }
}

DesignResult Design(LlmClient& client, const DesignerInput& input) {
  DesignResult result;
  result.call = NoteFor(client, "designer");
  const Result<ChatAnswer> answer =
      Ask(client, DesignerMessages(input), client.config().temperature_designer, &result.call);
  if (!answer.ok()) {
    result.failure = "the Designer's request failed: " + answer.status().message();
    return result;
  }
  result.sketch = Trimmed(answer->content);
  if (result.sketch.empty()) {
    result.call.outcome = "empty";
    result.failure = "the Designer answered with nothing";
    return result;
  }
  // A sketch cut by the token limit still says what to build; the outcome says it was cut.
  if (answer->truncated) result.call.outcome = "truncated";
  if (result.sketch.size() > kMaxSketchChars) {
    result.sketch = result.sketch.substr(0, kMaxSketchChars) + "\n[cut]";
  }
  return result;
}

CodeResult Code(LlmClient& client, const CoderInput& input) {
  CodeResult result;
  result.call = NoteFor(client, "coder");
  const Result<ChatAnswer> answer =
      Ask(client, CoderMessages(input), client.config().temperature_coder, &result.call);
  if (!answer.ok()) {
    result.failed_stage = "llm";
    result.failure = "the Coder's request failed: " + answer.status().message();
    return result;
  }
  ExtractedSource extracted = ExtractKernelSource(answer->content);
  if (extracted.failure == ExtractFailure::kNone && answer->truncated && extracted.source.empty()) {
    extracted.failure = ExtractFailure::kTruncated;
  }
  if (extracted.failure != ExtractFailure::kNone) {
    result.call.outcome = std::string(ExtractFailureName(extracted.failure));
    result.failed_stage = "extract";
    result.failure = extracted.reason;
    return result;
  }
  result.source = std::move(extracted.source);
  if (Status checked = CheckAgentSource(result.source); !checked.ok()) {
    result.call.outcome = "static_check";
    result.failed_stage = "static_check";
    result.failure = checked.message();
  }
  return result;
}

}  // namespace kfleet::agents
