// `kfleet calibrate cpu`: measures this machine's memory bandwidth (a large copy) and matrix rate
// (a blocked float32 matmul on every core) so the generic CPU device has real numbers. Results are
// cached per CPU model and core count.
#pragma once

#include <string>

#include "common/status.h"
#include "planner/cost_model.h"

namespace kfleet::planner {

struct CpuCalibration {
  std::string cpu_model;  // from /proc/cpuinfo
  int logical_cores = 0;
  double copy_bytes_per_s = 0;    // read + write bytes per second
  double matmul_flops_per_s = 0;  // float32
  std::string measured_at;        // ISO 8601 UTC
  std::string method;             // how it was measured; a cache from another method is stale
  bool from_cache = false;        // set by LoadOrCalibrateCpu; not stored in the cache
};

// Runs the measurements; takes well under a second.
Result<CpuCalibration> CalibrateCpu();

// $XDG_CACHE_HOME/kfleet/cpu-calibration.yaml, else ~/.cache/kfleet/cpu-calibration.yaml.
std::string DefaultCalibrationCachePath();

// The cached calibration for this CPU, or a fresh one (written to the cache) when there is none,
// it belongs to another CPU (model or logical core count), it cannot be read, or `force` is set.
// A cache that cannot be written is logged, not an error: the fresh numbers are still good.
Result<CpuCalibration> LoadOrCalibrateCpu(const std::string& cache_path, bool force);

// The catalog's generic "cpu" device with this calibration's rates: memory bandwidth is the copy
// rate, matrix f32 (and f16 / bf16, which CPUs without AMX compute in f32) the matmul rate, f64
// half of it; vector f32 is half the matmul rate, on the assumption that elementwise code issues a
// plain multiply or add (1 FLOP per lane) where a GEMM issues fused multiply-adds (2 per lane).
DeviceModel CpuDeviceFromCalibration(const DeviceModel& generic_cpu, const CpuCalibration& cal);

}  // namespace kfleet::planner
