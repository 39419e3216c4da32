// kfleet eval: a user brings a kernel source for a spec and gets the full test and profile report,
// the same evaluation the workers run on candidates.
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/output.h"
#include "common/files.h"
#include "common/temp_dir.h"
#include "eval/device.h"
#include "eval/eval_config.h"
#include "eval/launcher.h"
#include "eval/toolchain.h"
#include "planner/cost_model.h"
#include "planner/cpu_calibration.h"
#include "planner/onnx_import.h"

namespace kfleet::cli {
namespace {

struct EvalFlags {
  std::string spec;
  std::string source;
  std::string backend = "cpu";
  int device = 0;
  std::string config;
  std::string cache_dir;
  uint64_t seed = 1;
  int threads = 0;
  bool no_profile = false;
  bool json = false;
};

// The speed-of-light floor of the spec on this CPU and what the report calls the device.
Result<std::pair<double, std::string>> CpuFloor(const planner::Graph& spec) {
  KF_ASSIGN_OR_RETURN(planner::CpuCalibration cal,
                      planner::LoadOrCalibrateCpu(planner::DefaultCalibrationCachePath(),
                                                  /*force=*/false));
  KF_ASSIGN_OR_RETURN(planner::DeviceModel cpu, planner::DeviceCatalog::Builtin().Find("cpu"));
  cpu = planner::CpuDeviceFromCalibration(cpu, cal);
  std::vector<int> nodes(spec.nodes.size());
  std::iota(nodes.begin(), nodes.end(), 0);
  const double floor_s = planner::SpeedOfLightSeconds(cpu, planner::GroupCost(spec, nodes));
  return std::make_pair(floor_s * 1e6,
                        fmt::format("cpu: {}, {} threads", cal.cpu_model, cal.logical_cores));
}

void RunEval(const EvalFlags& flags) {
  if (flags.backend != "cpu" && flags.backend != "cuda") {
    ExitOnError(InvalidArgument(fmt::format(
        "--backend {}: cpu and cuda can evaluate kernels; the HIP harness comes with its backend",
        flags.backend)));
  }
  Result<eval::EvalConfig> config = eval::LoadEvalConfig(flags.config);
  ExitOnError(config.status().WithContext("--config"));
  Result<std::string> source = ReadFile(flags.source);
  ExitOnError(source.status().WithContext("--source"));
  // A spec in ONNX text form (hand-written) becomes a binary model for the harness.
  std::string spec_path = flags.spec;
  std::optional<TempDir> converted;
  if (std::filesystem::path(flags.spec).extension() == ".onnxtxt") {
    Result<std::string> text = ReadFile(flags.spec);
    ExitOnError(text.status().WithContext("--spec"));
    Result<std::string> bytes = planner::OnnxTextToModelBytes(*text);
    ExitOnError(bytes.status().WithContext("--spec " + flags.spec));
    Result<TempDir> dir = TempDir::Create("kfleet-spec");
    ExitOnError(dir.status());
    converted.emplace(std::move(*dir));
    spec_path = (converted->path() / "spec.onnx").string();
    ExitOnError(WriteFileAtomic(spec_path, *bytes));
  }
  Result<planner::Graph> spec = planner::ImportOnnxFile(spec_path, {});
  ExitOnError(spec.status().WithContext("--spec"));
  for (const planner::Node& node : spec->nodes) {
    if (!node.supported) {
      ExitOnError(
          InvalidArgument(fmt::format("--spec {}: {} is not supported: {}", flags.spec,
                                      planner::DescribeNode(node), node.unsupported_reason)));
    }
  }
  eval::HarnessOptions harness = config->harness;
  eval::LaunchOptions launch = config->launch;
  harness.seed = flags.seed;
  harness.profile = !flags.no_profile;
  launch.threads = flags.threads;
  harness.backend = flags.backend;
  harness.device = flags.device;
  eval::CompileOptions compile;
  if (!flags.cache_dir.empty()) compile.cache_dir = flags.cache_dir;
  Result<std::unique_ptr<eval::Toolchain>> toolchain = Internal("no toolchain chosen");
  if (flags.backend == "cuda") {
    Result<eval::CudaDeviceSummary> gpu = eval::DescribeCudaDevice(flags.device);
    ExitOnError(gpu.status().WithContext(fmt::format("--backend cuda --device {}", flags.device)));
    launch.device = gpu->description;
    compile.compiler = "nvcc";
    compile.flags = eval::DefaultCudaFlags(gpu->arch);
    toolchain = eval::MakeCudaToolchain(compile);
  } else {
    Result<std::pair<double, std::string>> floor = CpuFloor(*spec);
    ExitOnError(floor.status().WithContext("calibrating this CPU"));
    harness.sol_us = floor->first;
    launch.device = floor->second;
    toolchain = eval::MakeCpuToolchain(compile);
  }
  ExitOnError(toolchain.status());
  if (!flags.json) std::cerr << "evaluating " << flags.source << " on " << flags.spec << "...\n";
  Result<eval::EvalReport> report =
      eval::EvaluateSource(spec_path, *source, **toolchain, harness, launch);
  ExitOnError(report.status());
  report->spec = flags.spec;
  if (flags.json) {
    std::cout << eval::ToJson(*report).dump(2) << "\n";
  } else {
    std::cout << eval::FormatReport(*report);
  }
  if (!report->passed) throw CLI::RuntimeError(1);
}

}  // namespace

void RegisterEvalCommands(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Test and time a kernel source against a kernel spec (compile, smoke, shape sweep, "
      "stability, determinism, profile); exit code 0 only if every stage passed");
  cmd->add_option(
         "--spec", flags->spec,
         "kernel spec: standalone ONNX (kfleet plan --emit-specs), or ONNX text (.onnxtxt)")
      ->required();
  cmd->add_option("--source", flags->source, "kernel source implementing kfleet/kernel.h")
      ->required();
  cmd->add_option("--backend", flags->backend,
                  "cpu (host memory, CPU baseline) or cuda (a GPU: nvcc, CUDA baseline, CUDA "
                  "events)");
  cmd->add_option("--device", flags->device, "GPU index for --backend cuda (default 0)");
  cmd->add_option("--config", flags->config, "evaluation settings (see configs/eval.yaml)");
  cmd->add_option("--cache-dir", flags->cache_dir, "compile cache (default ~/.cache/kfleet)");
  cmd->add_option("--seed", flags->seed, "seed of every random input (a report can be replayed)");
  cmd->add_option("--threads", flags->threads, "threads for kernel and baseline (0 = all cores)");
  cmd->add_flag("--no-profile", flags->no_profile, "run the test stages only");
  cmd->add_flag("--json", flags->json, "print the report as JSON");
  cmd->callback([flags] { RunEval(*flags); });
}

}  // namespace kfleet::cli
