// What the commands that take a model (`kfleet plan`, `kfleet profile`) share: parsing --dim and
// --dtype, resolving --target to a device, and the number formats their tables use.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/status.h"
#include "planner/cost_model.h"
#include "planner/cpu_calibration.h"
#include "planner/graph.h"
#include "planner/onnx_import.h"

namespace kfleet::cli {

// `--dim NAME=VALUE` bindings.
inline Result<std::map<std::string, int64_t>> ParseDims(const std::vector<std::string>& dims) {
  std::map<std::string, int64_t> bound;
  for (const std::string& d : dims) {
    size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == d.size()) {
      return InvalidArgument(fmt::format("--dim '{}': expected NAME=VALUE, e.g. batch=8", d));
    }
    std::string name = d.substr(0, eq);
    std::string text = d.substr(eq + 1);
    char* end = nullptr;
    long long value = std::strtoll(text.c_str(), &end, 10);
    if (*end != '\0' || value <= 0) {
      return InvalidArgument(
          fmt::format("--dim {}: '{}' is not a positive whole number", name, text));
    }
    bound[name] = value;
  }
  return bound;
}

// `--dtype`: empty means as exported; otherwise a floating dtype the model is converted to.
inline Result<std::optional<planner::DType>> ParseComputeDtype(const std::string& text) {
  return planner::ParseComputeDtype(text);
}

// The target device: the built-in catalog, overridden by `devices_path` (a catalog file) when
// given, and for "cpu" this machine's calibrated rates (measured once, then cached).
inline Result<planner::DeviceModel> ResolveTarget(const std::string& target,
                                                  const std::string& devices_path) {
  planner::DeviceCatalog catalog = planner::DeviceCatalog::Builtin();
  if (!devices_path.empty()) {
    KF_ASSIGN_OR_RETURN(std::string text, ReadFile(devices_path));
    KF_ASSIGN_OR_RETURN(planner::DeviceCatalog extra,
                        planner::DeviceCatalog::Parse(text, devices_path));
    for (const std::string& id : extra.Ids()) {
      KF_ASSIGN_OR_RETURN(planner::DeviceModel device, extra.Find(id));
      catalog.Put(std::move(device));
    }
  }
  KF_ASSIGN_OR_RETURN(planner::DeviceModel device, catalog.Find(target));
  if (target == "cpu" && devices_path.empty()) {
    KF_ASSIGN_OR_RETURN(planner::CpuCalibration cal,
                        planner::LoadOrCalibrateCpu(planner::DefaultCalibrationCachePath(),
                                                    /*force=*/false));
    device = planner::CpuDeviceFromCalibration(device, cal);
  }
  return device;
}

// "812 ns", "41.2 us", "3.07 ms", "1.25 s".
inline std::string FormatSeconds(double s) {
  if (s < 1e-6) return fmt::format("{:.0f} ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.2f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

// "32.4 GFLOP", "1.2 TFLOP", "512 kFLOP".
inline std::string FormatFlops(double flops) {
  if (flops >= 1e12) return fmt::format("{:.2f} TFLOP", flops / 1e12);
  if (flops >= 1e9) return fmt::format("{:.2f} GFLOP", flops / 1e9);
  if (flops >= 1e6) return fmt::format("{:.1f} MFLOP", flops / 1e6);
  if (flops >= 1e3) return fmt::format("{:.1f} kFLOP", flops / 1e3);
  return fmt::format("{:.0f} FLOP", flops);
}

}  // namespace kfleet::cli
