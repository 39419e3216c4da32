// kfleet-probe: prints what the worker's probe finds on this machine, to check it on real
// hardware. JSON by default, a short table with --text.
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "worker/probe.h"

namespace {

using kfleet::worker::NodeProbe;

nlohmann::ordered_json ToJson(const NodeProbe& probe) {
  nlohmann::ordered_json json;
  json["hostname"] = probe.hostname;
  json["cpu"] = {{"model", probe.cpu.model},
                 {"cores", probe.cpu.cores},
                 {"threads", probe.cpu.threads},
                 {"features", probe.cpu.features},
                 {"memory_bytes", probe.cpu.memory_bytes},
                 {"arch", probe.cpu.arch}};
  json["gpus"] = nlohmann::ordered_json::array();
  for (const auto& gpu : probe.gpus) {
    json["gpus"].push_back({{"backend", gpu.backend},
                            {"index", gpu.index},
                            {"name", gpu.name},
                            {"arch", gpu.arch},
                            {"memory_bytes", gpu.memory_bytes},
                            {"compute_units", gpu.compute_units},
                            {"clock_mhz", gpu.clock_mhz},
                            {"memory_clock_mhz", gpu.memory_clock_mhz},
                            {"l2_bytes", gpu.l2_bytes},
                            {"memory_bus_bits", gpu.memory_bus_bits},
                            {"driver_version", gpu.driver_version}});
  }
  json["toolchains"] = nlohmann::ordered_json::array();
  for (const auto& toolchain : probe.toolchains) {
    json["toolchains"].push_back(
        {{"name", toolchain.name}, {"version", toolchain.version}, {"path", toolchain.path}});
  }
  json["notes"] = probe.notes;
  return json;
}

std::string GiB(uint64_t bytes) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << static_cast<double>(bytes) / (1u << 30) << " GiB";
  return text.str();
}

void PrintText(const NodeProbe& probe) {
  std::cout << "host       " << probe.hostname << "\n";
  std::cout << "cpu        " << probe.cpu.model << ", " << probe.cpu.cores << " cores / "
            << probe.cpu.threads << " threads, " << GiB(probe.cpu.memory_bytes) << ", "
            << probe.cpu.arch << "\n";
  std::cout << "features  ";
  for (const std::string& feature : probe.cpu.features) std::cout << " " << feature;
  std::cout << "\n";
  for (const auto& gpu : probe.gpus) {
    std::cout << "gpu " << gpu.index << (gpu.index < 10 ? "      " : "     ") << gpu.backend << " "
              << gpu.name << ", " << gpu.arch << ", " << GiB(gpu.memory_bytes) << ", "
              << gpu.compute_units << " CUs/SMs, " << gpu.clock_mhz << " / " << gpu.memory_clock_mhz
              << " MHz, " << (gpu.l2_bytes >> 20) << " MiB L2, " << gpu.memory_bus_bits
              << "-bit bus, driver " << gpu.driver_version << "\n";
  }
  for (const auto& toolchain : probe.toolchains) {
    std::cout << "toolchain  " << toolchain.name << " " << toolchain.version << " ("
              << toolchain.path << ")\n";
  }
  for (const std::string& note : probe.notes) std::cout << "note       " << note << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  bool text = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--text") {
      text = true;
    } else {
      std::cerr
          << "usage: kfleet-probe [--text]\n"
             "Prints this machine's CPU, GPUs and compilers as the kfleet worker sees them.\n";
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  NodeProbe probe = kfleet::worker::ProbeNode(kfleet::worker::ProbeOptions{});
  if (text) {
    PrintText(probe);
  } else {
    std::cout << ToJson(probe).dump(2) << "\n";
  }
  return std::cout.good() ? 0 : 1;
}
