// Roofline cost model: device peak rates (configs/devices.yaml, embedded in the binary), FLOPs and
// minimum bytes per node and per fused group, baseline (unfused, one launch per op) estimates and
// the speed-of-light floor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::planner {

struct DeviceModel {
  std::string id;       // "h200": what --target takes
  std::string name;     // "NVIDIA H200 SXM 141GB"
  std::string backend;  // "cuda", "hip" or "cpu"
  // Peak floating-point operations per second by dtype: matrix units (tensor cores, MFMA, AMX or
  // the SIMD FMA path of a tuned GEMM) and plain vector ALUs. A dtype that is missing falls back to
  // f32's rate.
  std::map<DType, double> matrix_flops_per_s;
  std::map<DType, double> vector_flops_per_s;
  double memory_bytes_per_s = 0;
  int64_t l2_bytes = 0;
  int64_t compute_units = 0;     // SMs, CUs or cores
  double launch_overhead_s = 0;  // per kernel launch
  // Fractions of peak an unfused eager baseline reaches (vendor GEMM / elementwise kernels).
  double baseline_matrix_efficiency = 0.6;
  double baseline_memory_efficiency = 0.7;
  std::string source;  // "devices.yaml", "calibrated on this machine 2026-11-21", ...

  double MatrixFlopsPerS(DType dtype) const;
  double VectorFlopsPerS(DType dtype) const;
};

class DeviceCatalog {
 public:
  // YAML with a `devices:` map (see configs/devices.yaml). `origin` names the file in errors.
  static Result<DeviceCatalog> Parse(std::string_view yaml_text, std::string_view origin);
  // The catalog compiled into the binary from configs/devices.yaml.
  static const DeviceCatalog& Builtin();

  // NotFound lists the known ids.
  Result<DeviceModel> Find(std::string_view id) const;
  std::vector<std::string> Ids() const;
  // Adds or replaces a device (the calibrated CPU).
  void Put(DeviceModel device);

 private:
  std::map<std::string, DeviceModel, std::less<>> devices_;
};

struct OpCost {
  double flops = 0;
  double bytes = 0;     // this node alone: every input read once, every output written once
  bool matrix = false;  // runs on matrix units (MatMul, Gemm, Conv, ConvTranspose)
  bool free = false;    // a view or metadata op: no kernel, no time (Reshape, Squeeze, Shape...)
  DType dtype = DType::kF32;  // the dtype that picks the peak rate
};

OpCost NodeCost(const Graph& graph, int node);

// A fused group: FLOPs summed over its nodes; bytes are the minimum a fused kernel moves (each
// value entering the group read once, each value leaving it written once; constants free).
OpCost GroupCost(const Graph& graph, const std::vector<int>& nodes);

// max(flops / peak, bytes / bandwidth) at peak rates: the speed-of-light time, no launch.
double SpeedOfLightSeconds(const DeviceModel& device, const OpCost& cost);

// What an eager framework spends on these nodes unfused: each non-free node is one kernel at the
// baseline efficiencies plus one launch overhead.
double BaselineSeconds(const DeviceModel& device, const Graph& graph,
                       const std::vector<int>& nodes);

}  // namespace kfleet::planner
