#include "agents/llm_config.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

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
  KF_RETURN_IF_ERROR(ValidateLlmConfig(c, source));
  return c;
}

}  // namespace

Status ValidateLlmConfig(LlmConfig& config, std::string_view source) {
  if (!config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://")) {
    return InvalidArgument(fmt::format(
        "{}: endpoint must be an http:// or https:// URL such as http://127.0.0.1:8000/v1; got "
        "'{}'",
        source, config.endpoint));
  }
  while (config.endpoint.ends_with('/')) config.endpoint.pop_back();
  if (config.model.empty()) {
    return InvalidArgument(fmt::format(
        "{}: model is required (the name the server knows the model by, as in its /v1/models)",
        source));
  }
  if (!config.api_key_env.empty() && !ValidEnvName(config.api_key_env)) {
    return InvalidArgument(
        fmt::format("{}: api_key_env names the environment variable that holds the key (such as "
                    "OPENAI_API_KEY), not the key itself; '{}' is not a variable name",
                    source,
                    config.api_key_env.size() > 12 ? config.api_key_env.substr(0, 4) + "..."
                                                   : config.api_key_env));
  }
  return Status::Ok();
}

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

std::string LlmConfigToJson(const LlmConfig& c) {
  return nlohmann::json{{"endpoint", c.endpoint},
                        {"dialect", c.dialect},
                        {"model", c.model},
                        {"api_key_env", c.api_key_env},
                        {"max_tokens", c.max_tokens},
                        {"timeout_ms", c.timeout_ms},
                        {"retries", c.retries},
                        {"backoff_ms", c.backoff_ms},
                        {"concurrency", c.concurrency},
                        {"tokens_per_minute", c.tokens_per_minute},
                        {"price_input_per_mtok", c.price_input_per_mtok},
                        {"price_output_per_mtok", c.price_output_per_mtok},
                        {"temperature_designer", c.temperature_designer},
                        {"temperature_coder", c.temperature_coder},
                        {"temperature_conductor", c.temperature_conductor},
                        {"record_dir", c.record_dir},
                        {"replay", c.replay}}
      .dump();
}

Result<LlmConfig> LlmConfigFromJson(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return InvalidArgument("the LLM settings are not a JSON object");
  LlmConfig c;
  try {
    c.endpoint = j.value("endpoint", c.endpoint);
    c.dialect = j.value("dialect", c.dialect);
    c.model = j.value("model", c.model);
    c.api_key_env = j.value("api_key_env", c.api_key_env);
    c.max_tokens = j.value("max_tokens", c.max_tokens);
    c.timeout_ms = j.value("timeout_ms", c.timeout_ms);
    c.retries = j.value("retries", c.retries);
    c.backoff_ms = j.value("backoff_ms", c.backoff_ms);
    c.concurrency = j.value("concurrency", c.concurrency);
    c.tokens_per_minute = j.value("tokens_per_minute", c.tokens_per_minute);
    c.price_input_per_mtok = j.value("price_input_per_mtok", c.price_input_per_mtok);
    c.price_output_per_mtok = j.value("price_output_per_mtok", c.price_output_per_mtok);
    c.temperature_designer = j.value("temperature_designer", c.temperature_designer);
    c.temperature_coder = j.value("temperature_coder", c.temperature_coder);
    c.temperature_conductor = j.value("temperature_conductor", c.temperature_conductor);
    c.record_dir = j.value("record_dir", c.record_dir);
    c.replay = j.value("replay", c.replay);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(
        fmt::format("the LLM settings have a field of the wrong type: {}", e.what()));
  }
  if (c.dialect != "openai" && c.dialect != "anthropic") {
    return InvalidArgument(fmt::format("dialect '{}' is not one of openai, anthropic", c.dialect));
  }
  if (c.max_tokens < 16 || c.timeout_ms < 1 || c.retries < 0 || c.backoff_ms < 0 ||
      c.concurrency < 1 || c.tokens_per_minute < 0) {
    return InvalidArgument("the LLM settings have a limit out of range");
  }
  KF_RETURN_IF_ERROR(ValidateLlmConfig(c, "the LLM settings"));
  return c;
}

}  // namespace kfleet::agents
