#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <initializer_list>
#include <set>
#include <utility>

#include "worker/probe.h"

#include "common/files.h"
#include "worker/probe_util.h"

namespace kfleet::worker {
namespace {

using probe_util::ForEachLine;
using probe_util::LeadingHex;
using probe_util::LeadingUint;
using probe_util::SplitKeyValue;
using probe_util::SplitWords;

// The extensions kernel templates choose between, in the order they are reported.
constexpr std::array<std::string_view, 11> kX86Features = {
    "sse4_2",   "avx",         "avx2",        "fma",      "avx512f", "avx512bw",
    "avx512vl", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"};
constexpr std::array<std::string_view, 5> kArmFeatures = {"asimd", "sve", "sve2", "bf16", "i8mm"};

struct ArmCore {
  uint64_t implementer;
  uint64_t part;
  std::string_view name;
};

// aarch64 cpuinfo has no model name, only MIDR fields; numbers from Linux's asm/cputype.h.
constexpr std::array<ArmCore, 8> kArmCores = {{
    {0x41, 0xd0c, "ARM Neoverse-N1"},
    {0x41, 0xd40, "ARM Neoverse-V1"},
    {0x41, 0xd49, "ARM Neoverse-N2"},
    {0x41, 0xd4f, "ARM Neoverse-V2"},
    {0x41, 0xd84, "ARM Neoverse-V3"},
    {0x41, 0xd8e, "ARM Neoverse-N3"},
    {0x46, 0x001, "Fujitsu A64FX"},
    {0xc0, 0xac3, "AmpereOne"},
}};

std::string HexString(uint64_t value) {
  std::array<char, 16> digits;  // enough for any uint64_t in base 16
  auto [end, error] = std::to_chars(digits.data(), digits.data() + digits.size(), value, 16);
  if (error != std::errc()) return "?";
  return "0x" + std::string(digits.data(), end);
}

std::string ArmModelName(uint64_t implementer, uint64_t part) {
  for (const ArmCore& core : kArmCores) {
    if (core.implementer == implementer && core.part == part) return std::string(core.name);
  }
  return "CPU implementer " + HexString(implementer) + " part " + HexString(part);
}

template <size_t N>
std::vector<std::string> KnownFeatures(const std::array<std::string_view, N>& known,
                                       const std::vector<std::string>& flags) {
  std::vector<std::string> features;
  for (std::string_view feature : known) {
    if (std::find(flags.begin(), flags.end(), feature) != flags.end()) {
      features.emplace_back(feature);
    }
  }
  return features;
}


std::string ArchFromMachine(std::string_view machine) {
  if (machine == "x86_64") return "x86-64";
  if (machine == "arm64") return "aarch64";
  return std::string(machine);
}

}  // namespace

std::string X86PsabiLevel(const std::vector<std::string>& cpuinfo_flags) {
  auto has_all = [&](std::initializer_list<std::string_view> needed) {
    return std::all_of(needed.begin(), needed.end(), [&](std::string_view flag) {
      return std::find(cpuinfo_flags.begin(), cpuinfo_flags.end(), flag) != cpuinfo_flags.end();
    });
  };
  // Linux's names for the psABI's requirements: pni is SSE3, abm is LZCNT.
  if (!has_all({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})) return "x86-64";
  if (!has_all({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})) {
    return "x86-64-v2";
  }
  if (!has_all({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})) return "x86-64-v3";
  return "x86-64-v4";
}

CpuInfo ParseCpuInfo(std::string_view cpuinfo, std::string_view meminfo) {
  CpuInfo cpu;
  std::set<std::pair<std::string, std::string>> physical_cores;  // (physical id, core id)
  std::string physical_id;                                       // of the processor being read
  std::vector<std::string> flags;                                // of the first processor
  bool arm = false;
  std::optional<uint64_t> implementer;
  std::optional<uint64_t> part;
  ForEachLine(cpuinfo, [&](std::string_view line) {
    std::optional<probe_util::KeyValue> field = SplitKeyValue(line);
    if (!field) return;
    const auto& [key, value] = *field;
    if (key == "processor") {
      ++cpu.threads;
      physical_id.clear();
    } else if (key == "model name" && cpu.model.empty()) {
      cpu.model = value;
    } else if (key == "physical id") {
      physical_id = value;
    } else if (key == "core id") {
      physical_cores.emplace(physical_id, value);
    } else if ((key == "flags" || key == "Features") && flags.empty()) {
      for (std::string_view word : SplitWords(value)) flags.emplace_back(word);
      arm = key == "Features";
    } else if (key == "CPU implementer" && !implementer) {
      implementer = LeadingHex(value);
    } else if (key == "CPU part" && !part) {
      part = LeadingHex(value);
    }
  });
  // Without core ids (aarch64, some hypervisors) every logical processor counts as a core.
  cpu.cores = physical_cores.empty()
                  ? cpu.threads
                  : std::min(cpu.threads, static_cast<uint32_t>(physical_cores.size()));
  if (arm) {
    cpu.arch = "aarch64";
    cpu.features = KnownFeatures(kArmFeatures, flags);
    if (cpu.model.empty() && implementer && part) cpu.model = ArmModelName(*implementer, *part);
  } else if (!flags.empty()) {
    cpu.arch = X86PsabiLevel(flags);
    cpu.features = KnownFeatures(kX86Features, flags);
  }
  ForEachLine(meminfo, [&](std::string_view line) {
    std::optional<probe_util::KeyValue> field = SplitKeyValue(line);
    if (!field || field->key != "MemTotal") return;
    std::optional<uint64_t> kib = LeadingUint(field->value);  // meminfo's "kB" are KiB
    if (kib) cpu.memory_bytes = *kib * 1024;
  });
  return cpu;
}

CpuInfo ProbeCpu(const ProbeOptions& options, std::vector<std::string>& notes) {
  Result<std::string> cpuinfo = ReadFile(options.proc_dir / "cpuinfo", size_t{64} << 20);
  Result<std::string> meminfo = ReadFile(options.proc_dir / "meminfo", size_t{64} << 20);
  CpuInfo cpu = ParseCpuInfo(cpuinfo.ok() ? std::string_view(*cpuinfo) : std::string_view(),
                             meminfo.ok() ? std::string_view(*meminfo) : std::string_view());
  if (cpu.threads == 0) {
    std::string why = cpuinfo.ok() ? "cpuinfo lists no processor" : cpuinfo.status().ToString();
    long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0) {
      cpu.threads = static_cast<uint32_t>(online);
      cpu.cores = cpu.threads;
      notes.push_back("cpu: " + why + "; thread count from sysconf, cores taken to equal threads");
    } else {
      notes.push_back("cpu: " + why + ", and sysconf does not know the processor count either");
    }
  }
  if (cpu.memory_bytes == 0) {
    std::string why = meminfo.ok() ? "meminfo has no MemTotal" : meminfo.status().ToString();
    long pages = ::sysconf(_SC_PHYS_PAGES);
    long page_bytes = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_bytes > 0) {
      cpu.memory_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_bytes);
      notes.push_back("cpu: " + why + "; memory size from sysconf");
    } else {
      notes.push_back("cpu: " + why + ", and sysconf does not know the memory size either");
    }
  }
  if (cpu.arch.empty()) {
    struct utsname system {};
    if (::uname(&system) == 0) {
      cpu.arch = ArchFromMachine(system.machine);
      notes.push_back(
          "cpu: no instruction-set flags in cpuinfo; arch from uname, features unknown");
    } else {
      notes.push_back("cpu: no instruction-set flags in cpuinfo and uname failed: arch unknown");
    }
  }
  return cpu;
}

}  // namespace kfleet::worker
