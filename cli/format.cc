#include "cli/format.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "common/log.h"

namespace kfleet::cli {
namespace {

using nlohmann::json;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// "3.2": one decimal, for sizes and seconds.
std::string OneDecimal(double value) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.1f", value);
  return text;
}

// "12.2.0" -> "12.2", "13.0.88" -> "13.0", "14" -> "14".
std::string MajorMinor(std::string_view version) {
  const size_t first = version.find('.');
  if (first == std::string_view::npos) return std::string(version);
  return std::string(version.substr(0, version.find('.', first + 1)));
}

void EraseAll(std::string& text, std::string_view what) {
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at)) {
    text.erase(at, what.size());
  }
}

json SlotsJson(msg::Slots::Reader slots) {
  return {{"cpu", slots.getCpu()},
          {"gpu_exclusive", slots.getGpuExclusive()},
          {"compile", slots.getCompile()}};
}

json CapabilitiesJson(msg::Capabilities::Reader capabilities) {
  msg::CpuInfo::Reader cpu = capabilities.getCpu();
  json features = json::array();
  for (capnp::Text::Reader feature : cpu.getFeatures()) features.push_back(Text(feature));
  json gpus = json::array();
  for (msg::Device::Reader device : capabilities.getGpus()) {
    gpus.push_back({{"backend", BackendName(device.getBackend())},
                    {"index", device.getIndex()},
                    {"name", Text(device.getName())},
                    {"arch", Text(device.getArch())},
                    {"memory_bytes", device.getMemoryBytes()},
                    {"compute_units", device.getComputeUnits()},
                    {"clock_mhz", device.getClockMhz()},
                    {"memory_clock_mhz", device.getMemoryClockMhz()},
                    {"driver_version", Text(device.getDriverVersion())}});
  }
  json toolchains = json::array();
  for (msg::Toolchain::Reader toolchain : capabilities.getToolchains()) {
    toolchains.push_back({{"name", Text(toolchain.getName())},
                          {"version", Text(toolchain.getVersion())},
                          {"path", Text(toolchain.getPath())}});
  }
  return {{"node_name", Text(capabilities.getNodeName())},
          {"hostname", Text(capabilities.getHostname())},
          {"worker_version", Text(capabilities.getWorkerVersion())},
          {"cpu",
           {{"model", Text(cpu.getModel())},
            {"cores", cpu.getCores()},
            {"threads", cpu.getThreads()},
            {"features", std::move(features)},
            {"memory_bytes", cpu.getMemoryBytes()}}},
          {"gpus", std::move(gpus)},
          {"toolchains", std::move(toolchains)},
          {"slots", SlotsJson(capabilities.getSlots())}};
}

}  // namespace

std::string FormatAge(int64_t now_us, int64_t then_us) {
  if (then_us == 0) return "never";
  const int64_t seconds = (now_us - then_us) / 1'000'000;
  // A clock a little ahead on the coordinator's machine must not read as "-2s ago".
  if (seconds < 1) return "just now";
  if (seconds < 60) return std::to_string(seconds) + "s ago";
  if (seconds < 3600) return std::to_string(seconds / 60) + "m ago";
  if (seconds < 86'400) return std::to_string(seconds / 3600) + "h ago";
  return std::to_string(seconds / 86'400) + "d ago";
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  // Round first, so 1023.96 KiB reads "1.0 MiB" rather than "1024.0 KiB".
  while (value >= 1023.95 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  return OneDecimal(value) + " " + kUnits[unit];
}

std::string FormatDuration(int64_t duration_us) {
  const int64_t ms = std::max<int64_t>(duration_us, 0) / 1000;
  if (ms < 1000) return std::to_string(ms) + " ms";
  if (ms < 60'000) return OneDecimal(static_cast<double>(ms) / 1000.0) + " s";
  char text[32];
  const int64_t seconds = ms / 1000;
  if (seconds < 3600) {
    std::snprintf(text, sizeof(text), "%lldm %02llds", static_cast<long long>(seconds / 60),
                  static_cast<long long>(seconds % 60));
  } else {
    std::snprintf(text, sizeof(text), "%lldh %02lldm", static_cast<long long>(seconds / 3600),
                  static_cast<long long>(seconds / 60 % 60));
  }
  return text;
}

std::string FormatClockTime(int64_t unix_us) {
  const time_t seconds = static_cast<time_t>(unix_us / 1'000'000);
  struct tm local {};
  char text[16];
  if (localtime_r(&seconds, &local) == nullptr ||
      std::strftime(text, sizeof(text), "%H:%M:%S", &local) == 0) {
    return std::to_string(unix_us / 1'000'000);
  }
  return text;
}

std::string_view BackendName(msg::Backend backend) {
  switch (backend) {
    case msg::Backend::CPU:
      return "cpu";
    case msg::Backend::CUDA:
      return "cuda";
    case msg::Backend::HIP:
      return "hip";
  }
  return "unknown";
}

std::string DeviceSummary(msg::Capabilities::Reader capabilities) {
  std::vector<std::pair<std::string, int>> kinds;  // description, count; in probe order
  for (msg::Device::Reader device : capabilities.getGpus()) {
    std::string description = Text(device.getName());
    if (description.empty()) description = std::string(BackendName(device.getBackend())) + " GPU";
    description += " (";
    if (device.getArch().size() > 0) description += Text(device.getArch()) + ", ";
    description += FormatBytes(device.getMemoryBytes()) + ")";
    auto same = std::find_if(kinds.begin(), kinds.end(),
                             [&](const auto& kind) { return kind.first == description; });
    if (same != kinds.end()) {
      ++same->second;
    } else {
      kinds.emplace_back(std::move(description), 1);
    }
  }
  if (kinds.empty()) return "cpu only";
  std::string out;
  for (const auto& [description, count] : kinds) {
    if (!out.empty()) out += ", ";
    out += std::to_string(count) + "x " + description;
  }
  return out;
}

std::string CpuSummary(msg::CpuInfo::Reader cpu) {
  std::string model = Text(cpu.getModel());
  for (std::string_view mark : {"(R)", "(r)", "(TM)", "(tm)"}) EraseAll(model, mark);
  if (const size_t at = model.find('@'); at != std::string::npos) model.erase(at);
  std::string shortened;
  size_t start = 0;
  while (start < model.size()) {
    size_t end = model.find(' ', start);
    if (end == std::string::npos) end = model.size();
    const std::string_view word = std::string_view(model).substr(start, end - start);
    start = end + 1;
    if (word.empty() || word == "CPU" || word == "Processor" || word.ends_with("-Core") ||
        word.ends_with("-core")) {
      continue;
    }
    if (!shortened.empty()) shortened += ' ';
    shortened += word;
  }
  if (shortened.empty()) shortened = "unknown CPU";
  const uint32_t cores = cpu.getCores();
  return shortened + ", " + std::to_string(cores) + (cores == 1 ? " core" : " cores");
}

std::string ToolchainSummary(capnp::List<msg::Toolchain>::Reader toolchains) {
  std::string out;
  for (msg::Toolchain::Reader toolchain : toolchains) {
    if (!out.empty()) out += ", ";
    out += Text(toolchain.getName());
    const std::string version = MajorMinor(std::string_view(toolchain.getVersion().cStr()));
    if (!version.empty()) out += " " + version;
  }
  return out.empty() ? "none" : out;
}

std::string SlotsSummary(msg::Slots::Reader used, msg::Slots::Reader total) {
  return std::to_string(used.getCpu()) + "/" + std::to_string(total.getCpu()) + " " +
         std::to_string(used.getGpuExclusive()) + "/" + std::to_string(total.getGpuExclusive()) +
         " " + std::to_string(used.getCompile()) + "/" + std::to_string(total.getCompile());
}

bool IsFinishedState(std::string_view state) {
  return state == "done" || state == "failed" || state == "cancelled";
}

std::string ProgressFraction(msg::JobProgress::Reader progress) {
  return std::to_string(progress.getTasksDone()) + "/" + std::to_string(progress.getTasksTotal());
}

std::string ProgressBar(msg::JobProgress::Reader progress, int width) {
  const uint64_t total = progress.getTasksTotal();
  const uint64_t finished =
      std::min<uint64_t>(uint64_t{progress.getTasksDone()} + progress.getTasksFailed(), total);
  const auto filled =
      static_cast<int>(total == 0 ? 0 : finished * static_cast<uint64_t>(width) / total);
  return "[" + std::string(static_cast<size_t>(filled), '#') +
         std::string(static_cast<size_t>(width - filled), '-') + "] " + ProgressFraction(progress) +
         " done, " + std::to_string(progress.getRetries()) + " retried, " +
         std::to_string(progress.getTasksFailed()) + " failed";
}

std::string EventDetails(std::string_view kind, std::string_view data_json) {
  std::string line(kind);
  const nlohmann::ordered_json data =
      nlohmann::ordered_json::parse(data_json, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded() || !data.is_object()) {
    if (!data_json.empty()) line += " " + log::QuoteValue(data_json);
    return line;
  }
  auto append = [&](const std::string& key, const nlohmann::ordered_json& value) {
    line += " " + key + "=" +
            log::QuoteValue(value.is_string() ? value.get<std::string>() : value.dump());
  };
  // The identifiers a reader scans for lead, whatever order the coordinator wrote.
  static constexpr std::string_view kLeading[] = {"task", "node", "attempt"};
  for (std::string_view key : kLeading) {
    if (auto it = data.find(key); it != data.end()) append(std::string(key), *it);
  }
  for (const auto& [key, value] : data.items()) {
    if (std::find(std::begin(kLeading), std::end(kLeading), key) != std::end(kLeading)) continue;
    append(key, value);
  }
  return line;
}

json JobJson(msg::JobSummary::Reader job) {
  msg::JobProgress::Reader progress = job.getProgress();
  return {{"id", job.getId()},
          {"name", Text(job.getName())},
          {"kind", Text(job.getKind())},
          {"state", Text(job.getState())},
          {"target", BackendName(job.getTarget())},
          {"progress",
           {{"total", progress.getTasksTotal()},
            {"done", progress.getTasksDone()},
            {"failed", progress.getTasksFailed()},
            {"retries", progress.getRetries()}}},
          {"created_us", job.getCreatedUs()},
          {"updated_us", job.getUpdatedUs()},
          {"error", Text(job.getError())},
          {"phase", Text(job.getPhase())},
          {"agent", Text(job.getAgent())},
          {"llm",
           {{"model", Text(job.getLlm().getModel())},
            {"calls", job.getLlm().getCalls()},
            {"failed_calls", job.getLlm().getFailedCalls()},
            {"prompt_tokens", job.getLlm().getPromptTokens()},
            {"completion_tokens", job.getLlm().getCompletionTokens()},
            {"cost_usd", job.getLlm().getCostUsd()},
            {"budget_usd", job.getLlm().getBudgetUsd()}}}};
}

namespace {

std::string Tokens(uint64_t n) {
  if (n >= 1'000'000) return fmt::format("{:.1f}M", static_cast<double>(n) / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}k", static_cast<double>(n) / 1e3);
  return std::to_string(n);
}

}  // namespace

std::string FormatLlmUsage(msg::LlmUsage::Reader usage) {
  if (usage.getCalls() == 0 && usage.getModel().size() == 0) return {};
  std::string text = fmt::format(
      "model {}: {} requests ({} without an answer), {} tokens in, {} out, ${:.4f}",
      Text(usage.getModel()), usage.getCalls(), usage.getFailedCalls(),
      Tokens(usage.getPromptTokens()), Tokens(usage.getCompletionTokens()), usage.getCostUsd());
  if (usage.getBudgetUsd() > 0) text += fmt::format(" of ${:.2f}", usage.getBudgetUsd());
  return text;
}

json NodeJson(msg::NodeInfo::Reader node) {
  return {{"name", Text(node.getName())},
          {"state", Text(node.getState())},
          {"address", Text(node.getAddress())},
          {"last_heartbeat_us", node.getLastHeartbeatUs()},
          {"slots_used", SlotsJson(node.getSlotsUsed())},
          {"capabilities", CapabilitiesJson(node.getCapabilities())}};
}

json KernelJson(msg::KernelJobSummary::Reader kernel) {
  return {{"id", kernel.getId()},
          {"name", Text(kernel.getName())},
          {"count", kernel.getCount()},
          {"baseline_us", kernel.getBaselineUs()},
          {"sol_us", kernel.getSolUs()},
          {"expected_saving_us", kernel.getExpectedSavingUs()},
          {"best_us", kernel.getBestUs()},
          {"state", Text(kernel.getState())},
          {"family", Text(kernel.getFamily())},
          {"share", kernel.getShare()},
          {"speedup", kernel.getSpeedup()},
          {"template", Text(kernel.getTemplate())},
          {"candidates", kernel.getCandidates()},
          {"failed_candidates", kernel.getFailedCandidates()},
          {"budget_ms", kernel.getBudgetMs()},
          {"spent_ms", kernel.getSpentMs()},
          {"verified", kernel.getVerified()},
          {"note", Text(kernel.getNote())}};
}

json EventJson(msg::Event::Reader event) {
  const std::string data_text = Text(event.getData());
  json data = json::parse(data_text, nullptr, /*allow_exceptions=*/false);
  if (data.is_discarded()) data = data_text;
  return {{"id", event.getId()},
          {"job", event.getJobId()},
          {"ts_us", event.getTsUs()},
          {"kind", Text(event.getKind())},
          {"data", std::move(data)}};
}

nlohmann::json CountersJson(msg::CoordinatorCounters::Reader counters) {
  return {{"worker_messages", counters.getWorkerMessages()},
          {"client_messages", counters.getClientMessages()},
          {"malformed_dropped", counters.getMalformedDropped()},
          {"version_mismatches", counters.getVersionMismatches()},
          {"send_failures", counters.getSendFailures()},
          {"failed_batches", counters.getFailedBatches()},
          {"nodes_connected", counters.getNodesConnected()},
          {"leases", counters.getLeases()},
          {"started_us", counters.getStartedUs()}};
}

std::string CountersLine(msg::CoordinatorCounters::Reader counters) {
  std::string line = "coordinator: " + std::to_string(counters.getNodesConnected()) +
                     " node(s) connected, " + std::to_string(counters.getLeases()) +
                     " task(s) running";
  if (counters.getMalformedDropped() > 0) {
    line += ", " + std::to_string(counters.getMalformedDropped()) + " malformed message(s) dropped";
  }
  if (counters.getFailedBatches() > 0) {
    line += ", " + std::to_string(counters.getFailedBatches()) + " failed transaction(s)";
  }
  return line + "\n";
}

}  // namespace kfleet::cli
