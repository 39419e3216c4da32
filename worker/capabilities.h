// What a worker tells the coordinator it can do (Register.capabilities), from its probe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "messages/protocol.capnp.h"
#include "worker/probe.h"

namespace kfleet::worker {

// How many tasks of each slot class run at once. The coordinator places a task in a class by its
// requirements (see SlotClassOf), and the worker counts the same way.
struct SlotCounts {
  uint32_t cpu = 1;
  uint32_t gpu_exclusive = 0;
  uint32_t compile = 1;
};

enum class SlotClass { kCpu = 0, kGpuExclusive = 1, kCompile = 2 };
inline constexpr int kSlotClassCount = 3;

// An exclusive device for timing runs, a compile slot for other GPU work, a CPU slot otherwise:
// the coordinator's rule (coordinator/scheduler.h SlotFor).
SlotClass SlotClassOf(msg::Requirements::Reader requirements);
uint32_t SlotsOf(const SlotCounts& slots, SlotClass slot_class);
// "cpu", "gpu-exclusive", "compile".
std::string_view SlotClassName(SlotClass slot_class);

// The defaults kfleet-worker uses: CPU slots and compile slots = physical cores (at least 1),
// one exclusive slot per GPU.
SlotCounts DefaultSlots(const NodeProbe& probe);

void FillCapabilities(msg::Capabilities::Builder capabilities, const NodeProbe& probe,
                      const SlotCounts& slots, const std::string& node_name,
                      const std::string& worker_version);

// "2 CPU slots, 1 GPU (NVIDIA H200 sm_90)", for the line the worker prints when it starts.
std::string DescribeNode(const NodeProbe& probe, const SlotCounts& slots);

}  // namespace kfleet::worker
