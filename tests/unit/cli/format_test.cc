// Human-readable text and JSON shapes of coordinator replies.
#include "cli/format.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "cli/output.h"

namespace kfleet::cli {
namespace {

constexpr int64_t kNowUs = 1'700'000'000'000'000;
constexpr int64_t kSecondUs = 1'000'000;
constexpr uint64_t kH200Bytes = 150'110'126'080;  // 139.8 GiB

void AddGpu(capnp::List<msg::Device>::Builder gpus, unsigned index, const char* name,
            const char* arch, uint64_t memory_bytes) {
  msg::Device::Builder device = gpus[index];
  device.setBackend(msg::Backend::CUDA);
  device.setIndex(index);
  device.setName(name);
  device.setArch(arch);
  device.setMemoryBytes(memory_bytes);
}

TEST(FormatTest, Ages) {
  EXPECT_EQ(FormatAge(kNowUs, 0), "never");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs), "just now");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs + 2 * kSecondUs), "just now");  // clock skew
  EXPECT_EQ(FormatAge(kNowUs, kNowUs - 3 * kSecondUs), "3s ago");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs - 59 * kSecondUs), "59s ago");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs - 5 * 60 * kSecondUs), "5m ago");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs - 2 * 3600 * kSecondUs - 1), "2h ago");
  EXPECT_EQ(FormatAge(kNowUs, kNowUs - 3 * 86'400 * kSecondUs), "3d ago");
}

TEST(FormatTest, Sizes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes((uint64_t{1} << 20) - 1), "1.0 MiB");
  EXPECT_EQ(FormatBytes(kH200Bytes), "139.8 GiB");
  EXPECT_EQ(FormatBytes(uint64_t{2} << 40), "2.0 TiB");
}

TEST(FormatTest, Durations) {
  EXPECT_EQ(FormatDuration(-5), "0 ms");
  EXPECT_EQ(FormatDuration(850'000), "850 ms");
  EXPECT_EQ(FormatDuration(3'240'000), "3.2 s");
  EXPECT_EQ(FormatDuration(245 * kSecondUs), "4m 05s");
  EXPECT_EQ(FormatDuration((2 * 3600 + 10 * 60 + 7) * kSecondUs), "2h 10m");
}

TEST(FormatTest, DeviceSummaryCountsIdenticalDevices) {
  capnp::MallocMessageBuilder builder;
  msg::Capabilities::Builder capabilities = builder.initRoot<msg::Capabilities>();
  EXPECT_EQ(DeviceSummary(capabilities.asReader()), "cpu only");

  auto gpus = capabilities.initGpus(3);
  AddGpu(gpus, 0, "NVIDIA H200", "sm_90", kH200Bytes);
  AddGpu(gpus, 1, "NVIDIA H200", "sm_90", kH200Bytes);
  AddGpu(gpus, 2, "NVIDIA L4", "sm_89", uint64_t{24} << 30);
  EXPECT_EQ(DeviceSummary(capabilities.asReader()),
            "2x NVIDIA H200 (sm_90, 139.8 GiB), 1x NVIDIA L4 (sm_89, 24.0 GiB)");
}

TEST(FormatTest, CpuSummaryDropsMarketingWords) {
  capnp::MallocMessageBuilder builder;
  msg::CpuInfo::Builder cpu = builder.initRoot<msg::CpuInfo>();
  cpu.setModel("AMD EPYC");
  cpu.setCores(2);
  EXPECT_EQ(CpuSummary(cpu.asReader()), "AMD EPYC, 2 cores");
  cpu.setModel("AMD EPYC 9654 96-Core Processor");
  cpu.setCores(96);
  EXPECT_EQ(CpuSummary(cpu.asReader()), "AMD EPYC 9654, 96 cores");
  cpu.setModel("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz");
  cpu.setCores(1);
  EXPECT_EQ(CpuSummary(cpu.asReader()), "Intel Xeon Platinum 8480+, 1 core");
  cpu.setModel("");
  EXPECT_EQ(CpuSummary(cpu.asReader()), "unknown CPU, 1 core");
}

TEST(FormatTest, ToolchainsShowMajorAndMinor) {
  capnp::MallocMessageBuilder builder;
  msg::Capabilities::Builder capabilities = builder.initRoot<msg::Capabilities>();
  EXPECT_EQ(ToolchainSummary(capabilities.asReader().getToolchains()), "none");
  auto toolchains = capabilities.initToolchains(3);
  toolchains[0].setName("g++");
  toolchains[0].setVersion("12.2.0");
  toolchains[1].setName("nvcc");
  toolchains[1].setVersion("13.0.88");
  toolchains[2].setName("hipcc");
  EXPECT_EQ(ToolchainSummary(capabilities.asReader().getToolchains()),
            "g++ 12.2, nvcc 13.0, hipcc");
}

TEST(FormatTest, SlotsUsedOverTotal) {
  capnp::MallocMessageBuilder used_builder;
  msg::Slots::Builder used = used_builder.initRoot<msg::Slots>();
  used.setCpu(1);
  capnp::MallocMessageBuilder total_builder;
  msg::Slots::Builder total = total_builder.initRoot<msg::Slots>();
  total.setCpu(2);
  total.setGpuExclusive(1);
  total.setCompile(2);
  EXPECT_EQ(SlotsSummary(used.asReader(), total.asReader()), "1/2 0/1 0/2");
}

TEST(FormatTest, ProgressBarFillsWithFinishedTasks) {
  capnp::MallocMessageBuilder builder;
  msg::JobProgress::Builder progress = builder.initRoot<msg::JobProgress>();
  EXPECT_EQ(ProgressBar(progress.asReader(), 10), "[----------] 0/0 done, 0 retried, 0 failed");
  progress.setTasksTotal(100);
  progress.setTasksDone(37);
  progress.setTasksFailed(3);
  progress.setRetries(2);
  EXPECT_EQ(ProgressBar(progress.asReader(), 10), "[####------] 37/100 done, 2 retried, 3 failed");
  progress.setTasksDone(97);
  EXPECT_EQ(ProgressBar(progress.asReader(), 10), "[##########] 97/100 done, 2 retried, 3 failed");
}

TEST(FormatTest, EventDetailsLeadWithIdentifiers) {
  EXPECT_EQ(
      EventDetails("task.retry",
                   R"({"attempt":1,"outcome":"crashed","reason":"killed by signal 11","task":17})"),
      R"(task.retry task=17 attempt=1 outcome=crashed reason="killed by signal 11")");
  EXPECT_EQ(EventDetails("job.running", "{}"), "job.running");
  EXPECT_EQ(EventDetails("odd", "not json"), R"(odd "not json")");
  // Nested values are JSON text, quoted like any value with quotes in it.
  EXPECT_EQ(EventDetails("nested", R"({"a":{"b":1}})"), R"(nested a="{\"b\":1}")");
}

TEST(FormatTest, FinishedStates) {
  EXPECT_TRUE(IsFinishedState("done"));
  EXPECT_TRUE(IsFinishedState("failed"));
  EXPECT_TRUE(IsFinishedState("cancelled"));
  EXPECT_FALSE(IsFinishedState("running"));
  EXPECT_FALSE(IsFinishedState("queued"));
}

TEST(FormatTest, NodeJsonCarriesCapabilities) {
  capnp::MallocMessageBuilder builder;
  msg::NodeInfo::Builder node = builder.initRoot<msg::NodeInfo>();
  node.setName("gpu-7");
  node.setState("online");
  node.setLastHeartbeatUs(kNowUs);
  node.initSlotsUsed().setCpu(1);
  msg::Capabilities::Builder capabilities = node.initCapabilities();
  capabilities.initCpu().setCores(2);
  AddGpu(capabilities.initGpus(1), 0, "NVIDIA H200", "sm_90", kH200Bytes);
  const nlohmann::json json = NodeJson(node.asReader());
  EXPECT_EQ(json["name"], "gpu-7");
  EXPECT_EQ(json["slots_used"]["cpu"], 1);
  EXPECT_EQ(json["capabilities"]["cpu"]["cores"], 2);
  EXPECT_EQ(json["capabilities"]["gpus"][0]["arch"], "sm_90");
  EXPECT_EQ(json["capabilities"]["gpus"][0]["backend"], "cuda");
  EXPECT_EQ(json["capabilities"]["gpus"][0]["memory_bytes"], kH200Bytes);
}

TEST(FormatTest, EventJsonParsesData) {
  capnp::MallocMessageBuilder builder;
  msg::Event::Builder event = builder.initRoot<msg::Event>();
  event.setId(9);
  event.setJobId(3);
  event.setKind("task.retry");
  event.setData(R"({"task":17})");
  nlohmann::json json = EventJson(event.asReader());
  EXPECT_EQ(json["data"]["task"], 17);
  EXPECT_EQ(json["job"], 3);
  event.setData("oops");
  EXPECT_EQ(EventJson(event.asReader())["data"], "oops");
}

TEST(FormatTest, ExitCodes) {
  EXPECT_EQ(ExitCodeFor(Status::Ok()), 0);
  EXPECT_EQ(ExitCodeFor(NotFound("x")), 1);
  EXPECT_EQ(ExitCodeFor(InvalidArgument("x")), 2);
  EXPECT_EQ(ExitCodeFor(Unavailable("x")), 3);
}

}  // namespace
}  // namespace kfleet::cli
