#include "worker/probe.h"

#include "common/subprocess.h"

#include <unistd.h>

#include <array>

#include "worker/probe_util.h"

namespace kfleet::worker {
namespace {

// Compilers and GPU tools print kilobytes; rocminfo on an 8-GPU node prints about 100 KB.
constexpr size_t kMaxOutputBytes = size_t{16} << 20;

std::string FirstLine(std::string_view text) {
  return std::string(probe_util::Trim(text.substr(0, text.find('\n'))));
}

}  // namespace

Result<std::string> SystemCommandRunner::Run(const std::vector<std::string>& argv, int timeout_ms) {
  if (argv.empty()) return InvalidArgument("no program to run");
  if (timeout_ms <= 0) {
    return InvalidArgument("timeout must be positive, got " + std::to_string(timeout_ms) + " ms");
  }
  ProcessSpec spec;
  spec.argv = argv;
  spec.timeout_ms = timeout_ms;
  spec.max_output_bytes = kMaxOutputBytes;
  KF_ASSIGN_OR_RETURN(ProcessResult result, SystemProcessRunner().Run(spec));
  if (result.timed_out) {
    return DeadlineExceeded(argv[0] + ": still running after " + std::to_string(timeout_ms) +
                            " ms");
  }
  if (result.stdout_truncated) {
    return ResourceExhausted(argv[0] + ": printed more than " + std::to_string(kMaxOutputBytes) +
                             " bytes");
  }
  if (!result.Succeeded()) {
    return Unavailable(argv[0] + ": " + result.Describe() +
                       (result.stdout_bytes.empty() ? "" : ": " + FirstLine(result.stdout_bytes)));
  }
  return std::move(result.stdout_bytes);
}

NodeProbe ProbeNode(const ProbeOptions& options) {
  NodeProbe probe;
  std::array<char, 256> hostname{};
  if (::gethostname(hostname.data(), hostname.size() - 1) == 0) {
    probe.hostname = hostname.data();
  } else {
    probe.notes.push_back(ErrnoError("gethostname", errno).ToString());
  }
  probe.cpu = ProbeCpu(options, probe.notes);
  if (options.probe_gpus) {
    probe.gpus = ProbeNvidiaGpus(options, probe.notes);
    for (GpuInfo& gpu : ProbeAmdGpus(options, probe.notes)) probe.gpus.push_back(std::move(gpu));
  }
  if (options.probe_toolchains) probe.toolchains = ProbeToolchains(options, probe.notes);
  return probe;
}

}  // namespace kfleet::worker
