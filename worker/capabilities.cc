#include "worker/capabilities.h"

#include <algorithm>

namespace kfleet::worker {
namespace {

msg::Backend ToBackend(const std::string& backend) {
  if (backend == "cuda") return msg::Backend::CUDA;
  if (backend == "hip") return msg::Backend::HIP;
  return msg::Backend::CPU;
}

}  // namespace

SlotClass SlotClassOf(msg::Requirements::Reader requirements) {
  const bool cpu = requirements.getBackend() == msg::Backend::CPU;
  // Timing on the CPU takes a CPU slot; the coordinator keeps the rest of the node idle meanwhile.
  if (requirements.getExclusiveDevice()) return cpu ? SlotClass::kCpu : SlotClass::kGpuExclusive;
  if (!cpu) return SlotClass::kCompile;
  return SlotClass::kCpu;
}

uint32_t SlotsOf(const SlotCounts& slots, SlotClass slot_class) {
  switch (slot_class) {
    case SlotClass::kCpu:
      return slots.cpu;
    case SlotClass::kGpuExclusive:
      return slots.gpu_exclusive;
    case SlotClass::kCompile:
      return slots.compile;
  }
  return 0;
}

std::string_view SlotClassName(SlotClass slot_class) {
  switch (slot_class) {
    case SlotClass::kCpu:
      return "cpu";
    case SlotClass::kGpuExclusive:
      return "gpu-exclusive";
    case SlotClass::kCompile:
      return "compile";
  }
  return "unknown";
}

SlotCounts DefaultSlots(const NodeProbe& probe) {
  SlotCounts slots;
  slots.cpu = std::max<uint32_t>(probe.cpu.cores, 1);
  slots.gpu_exclusive = static_cast<uint32_t>(probe.gpus.size());
  slots.compile = slots.cpu;
  return slots;
}

void FillCapabilities(msg::Capabilities::Builder capabilities, const NodeProbe& probe,
                      const SlotCounts& slots, const std::string& node_name,
                      const std::string& worker_version) {
  capabilities.setNodeName(node_name);
  capabilities.setHostname(probe.hostname);
  capabilities.setWorkerVersion(worker_version);

  msg::CpuInfo::Builder cpu = capabilities.initCpu();
  cpu.setModel(probe.cpu.model);
  cpu.setCores(probe.cpu.cores);
  cpu.setThreads(probe.cpu.threads);
  cpu.setMemoryBytes(probe.cpu.memory_bytes);
  capnp::List<capnp::Text>::Builder features =
      cpu.initFeatures(static_cast<unsigned>(probe.cpu.features.size()));
  for (size_t i = 0; i < probe.cpu.features.size(); ++i) {
    features.set(static_cast<unsigned>(i), probe.cpu.features[i]);
  }

  capnp::List<msg::Device>::Builder gpus =
      capabilities.initGpus(static_cast<unsigned>(probe.gpus.size()));
  for (size_t i = 0; i < probe.gpus.size(); ++i) {
    const GpuInfo& gpu = probe.gpus[i];
    msg::Device::Builder device = gpus[static_cast<unsigned>(i)];
    device.setBackend(ToBackend(gpu.backend));
    device.setIndex(gpu.index);
    device.setName(gpu.name);
    device.setArch(gpu.arch);
    device.setMemoryBytes(gpu.memory_bytes);
    device.setComputeUnits(gpu.compute_units);
    device.setClockMhz(gpu.clock_mhz);
    device.setMemoryClockMhz(gpu.memory_clock_mhz);
    device.setDriverVersion(gpu.driver_version);
  }

  capnp::List<msg::Toolchain>::Builder toolchains =
      capabilities.initToolchains(static_cast<unsigned>(probe.toolchains.size()));
  for (size_t i = 0; i < probe.toolchains.size(); ++i) {
    msg::Toolchain::Builder toolchain = toolchains[static_cast<unsigned>(i)];
    toolchain.setName(probe.toolchains[i].name);
    toolchain.setVersion(probe.toolchains[i].version);
    toolchain.setPath(probe.toolchains[i].path);
  }

  msg::Slots::Builder slot_counts = capabilities.initSlots();
  slot_counts.setCpu(slots.cpu);
  slot_counts.setGpuExclusive(slots.gpu_exclusive);
  slot_counts.setCompile(slots.compile);
}

std::string DescribeNode(const NodeProbe& probe, const SlotCounts& slots) {
  std::string text = std::to_string(slots.cpu) + (slots.cpu == 1 ? " CPU slot, " : " CPU slots, ");
  if (probe.gpus.empty()) return text + "no GPU";
  text += std::to_string(probe.gpus.size()) + (probe.gpus.size() == 1 ? " GPU (" : " GPUs (");
  for (size_t i = 0; i < probe.gpus.size(); ++i) {
    if (i > 0) text += ", ";
    text += probe.gpus[i].name + " " + probe.gpus[i].arch;
  }
  return text + ")";
}

}  // namespace kfleet::worker
