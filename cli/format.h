// How coordinator replies read: short human text for tables and one JSON shape per message for
// --json. Pure functions of their inputs (the caller passes the current time), so tests pin them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "messages/api.capnp.h"
#include "messages/protocol.capnp.h"

namespace kfleet::cli {

// "just now", "3s ago", "5m ago", "2h ago", "4d ago"; "never" for a zero timestamp.
std::string FormatAge(int64_t now_us, int64_t then_us);
// "512 B", "64.0 KiB", "139.8 GiB" (powers of 1024).
std::string FormatBytes(uint64_t bytes);
// "850 ms", "3.2 s", "4m 05s", "2h 10m".
std::string FormatDuration(int64_t duration_us);
// "12:03:04" in local time.
std::string FormatClockTime(int64_t unix_us);

std::string_view BackendName(msg::Backend backend);
// "1x NVIDIA H200 (sm_90, 139.8 GiB)", identical devices counted together; "cpu only" without any.
std::string DeviceSummary(msg::Capabilities::Reader capabilities);
// "AMD EPYC 9654, 96 cores": the model without trademarks, clock and core-count words.
std::string CpuSummary(msg::CpuInfo::Reader cpu);
// "g++ 12.2, nvcc 13.0": major.minor of each compiler; "none" without any.
std::string ToolchainSummary(capnp::List<msg::Toolchain>::Reader toolchains);
// "1/2 0/1 0/2": used/total slots for cpu, gpu (exclusive) and compile.
std::string SlotsSummary(msg::Slots::Reader used, msg::Slots::Reader total);

// "done", "failed" and "cancelled" jobs change no more.
bool IsFinishedState(std::string_view state);
// "37/100".
std::string ProgressFraction(msg::JobProgress::Reader progress);
// "[#######-------------] 37/100 done, 2 retried, 0 failed": done and failed tasks fill the bar.
std::string ProgressBar(msg::JobProgress::Reader progress, int width);
// "task.retry task=17 attempt=1 outcome=crashed reason="killed by signal 11"": the event's kind,
// then its JSON data as key=value (task, node and attempt first).
std::string EventDetails(std::string_view kind, std::string_view data_json);

nlohmann::json JobJson(msg::JobSummary::Reader job);
// The LLM agent's use so far: "model M: 12 requests (1 without an answer), 48.1k tokens in,
// 9.6k out, $0.0213 of $5.00"; empty when the job made no request and names no model.
std::string FormatLlmUsage(msg::LlmUsage::Reader usage);
nlohmann::json NodeJson(msg::NodeInfo::Reader node);
nlohmann::json KernelJson(msg::KernelJobSummary::Reader kernel);
// The data is parsed into JSON; data that is not valid JSON stays a string.
nlohmann::json EventJson(msg::Event::Reader event);

// The coordinator's counters from a StatusReply: JSON, and one line for people (with what was
// dropped only when something was).
nlohmann::json CountersJson(msg::CoordinatorCounters::Reader counters);
std::string CountersLine(msg::CoordinatorCounters::Reader counters);

}  // namespace kfleet::cli
