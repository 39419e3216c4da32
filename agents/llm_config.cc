#include "agents/llm_config.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdlib>

#include "common/config.h"
#include "common/files.h"

namespace kfleet::agents {
namespace {

bool ValidEnvName(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) != 0) return false;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  }
  return true;
}

Result<LlmConfig> Read(ConfigReader& reader, const std::string& source) {
  LlmConfig c;
  c.endpoint = reader.String("endpoint", "");
  c.dialect = reader.Enum("dialect", "openai", {"openai", "anthropic"});
  c.model = reader.String("model", "");
  c.api_key_env = reader.String("api_key_env", "");
  c.max_tokens = reader.Int("max_tokens", c.max_tokens, 16, 1'000'000);
  c.timeout_ms = reader.DurationMs("timeout", c.timeout_ms, 1'000, 3'600'000);
  c.retries = reader.Int("retries", c.retries, 0, 20);
  c.backoff_ms = reader.DurationMs("backoff", c.backoff_ms, 0, 600'000);
  c.concurrency = reader.Int("concurrency", c.concurrency, 1, 256);
  c.tokens_per_minute = reader.Int("tokens_per_minute", 0, 0, 1'000'000'000);
  c.price_input_per_mtok = reader.Double("price.input_per_mtok", 0, 0, 1e6);
  c.price_output_per_mtok = reader.Double("price.output_per_mtok", 0, 0, 1e6);
  c.temperature_designer = reader.Double("temperature.designer", c.temperature_designer, 0, 2);
  c.temperature_coder = reader.Double("temperature.coder", c.temperature_coder, 0, 2);
  c.temperature_conductor = reader.Double("temperature.conductor", c.temperature_conductor, 0, 2);
  KF_RETURN_IF_ERROR(reader.Finish());
  if (!c.endpoint.starts_with("http://") && !c.endpoint.starts_with("https://")) {
    return InvalidArgument(fmt::format(
        "{}: endpoint must be an http:// or https:// URL such as http://127.0.0.1:8000/v1; got "
        "'{}'",
        source, c.endpoint));
  }
  while (c.endpoint.ends_with('/')) c.endpoint.pop_back();
  if (c.model.empty()) {
    return InvalidArgument(fmt::format(
        "{}: model is required (the name the server knows the model by, as in its /v1/models)",
        source));
  }
  if (!c.api_key_env.empty() && !ValidEnvName(c.api_key_env)) {
    return InvalidArgument(fmt::format(
        "{}: api_key_env names the environment variable that holds the key (such as "
        "OPENAI_API_KEY), not the key itself; '{}' is not a variable name",
        source, c.api_key_env.size() > 12 ? c.api_key_env.substr(0, 4) + "..." : c.api_key_env));
  }
  return c;
}

}  // namespace

Result<std::string> LlmConfig::ApiKey() const {
  if (api_key_env.empty()) return std::string();
  const char* value = std::getenv(api_key_env.c_str());
  if (value == nullptr || *value == '\0') {
    return FailedPrecondition(
        fmt::format("the LLM endpoint's key is read from ${}, which is not set in this environment",
                    api_key_env));
  }
  return std::string(value);
}

std::string LlmConfig::Describe() const {
  return fmt::format("{} ({} API), model {}, {}", endpoint, dialect, model,
                     api_key_env.empty() ? "no key" : "key from $" + api_key_env);
}

double LlmConfig::Cost(int64_t input_tokens, int64_t output_tokens) const {
  return (static_cast<double>(input_tokens) * price_input_per_mtok +
          static_cast<double>(output_tokens) * price_output_per_mtok) /
         1e6;
}

Result<LlmConfig> ParseLlmConfig(std::string_view yaml, std::string source) {
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadString(yaml, source));
  return Read(reader, source);
}

Result<LlmConfig> LoadLlmConfig(const std::filesystem::path& path) {
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadFile(path));
  return Read(reader, path.string());
}

}  // namespace kfleet::agents
