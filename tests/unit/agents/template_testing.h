// Helpers for template tests: specs from ONNX text or from the bundled models, and the full
// evaluation (compile + sandboxed harness) of a rendered kernel.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "agents/template_family.h"
#include "common/files.h"
#include "common/temp_dir.h"
#include "eval/device.h"
#include "eval/launcher.h"
#include "eval/toolchain.h"
#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"
#include "tests/test_binaries.h"

namespace kfleet::agents::testing {

// A spec kept alive with its graph: SpecView points into `graph`.
struct Spec {
  std::string name;
  std::string bytes;  // serialized ONNX model
  planner::Graph graph;
  SpecView view;
};

inline std::unique_ptr<Spec> SpecFromBytes(std::string name, std::string bytes) {
  auto spec = std::make_unique<Spec>();
  spec->name = std::move(name);
  spec->bytes = std::move(bytes);
  Result<planner::Graph> graph = planner::ImportOnnxBytes(spec->bytes, spec->name, "", {});
  EXPECT_TRUE(graph.ok()) << graph.status().ToString();
  if (!graph.ok()) return nullptr;
  spec->graph = std::move(*graph);
  Result<SpecView> view = AnalyzeSpec(spec->graph);
  EXPECT_TRUE(view.ok()) << spec->name << ": " << view.status().ToString();
  if (!view.ok()) return nullptr;
  spec->view = *view;
  return spec;
}

// `text` in onnx::OnnxParser syntax.
inline std::unique_ptr<Spec> SpecFromText(std::string name, const std::string& text) {
  Result<std::string> bytes = planner::OnnxTextToModelBytes(text);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  if (!bytes.ok()) return nullptr;
  return SpecFromBytes(std::move(name), std::move(*bytes));
}

// A hand-written spec from tests/data/specs.
inline std::unique_ptr<Spec> SpecFromFile(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  const std::string path = std::string(root != nullptr ? root : "tests/data") + "/specs/" + file;
  Result<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? SpecFromText(file, *text) : nullptr;
}

inline std::string ModelPath(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

// Every kernel job's spec of a bundled model (planned for the h200 roofline: the specs do not
// depend on the target), in rank order.
inline std::vector<std::unique_ptr<Spec>> ModelSpecs(const std::string& file,
                                                     std::optional<planner::DType> dtype = {}) {
  std::vector<std::unique_ptr<Spec>> specs;
  planner::ImportOptions import;
  import.compute_dtype = dtype;
  Result<planner::DeviceModel> device = planner::DeviceCatalog::Builtin().Find("h200");
  EXPECT_TRUE(device.ok());
  Result<planner::PlannedModel> planned =
      planner::PlanOnnxFile(ModelPath(file), import, *device, {});
  EXPECT_TRUE(planned.ok()) << planned.status().ToString();
  if (!planned.ok()) return specs;
  for (const auto& job : planned->plan.jobs) {
    std::unique_ptr<Spec> spec = SpecFromBytes(job.spec.name, job.spec.onnx_model);
    if (spec != nullptr) specs.push_back(std::move(spec));
  }
  return specs;
}

// The spec named `name` among `specs` (a test failure listing the names when there is none).
inline const Spec* FindSpec(const std::vector<std::unique_ptr<Spec>>& specs,
                            const std::string& name) {
  for (const auto& spec : specs) {
    if (spec->name == name) return spec.get();
  }
  std::string names;
  for (const auto& spec : specs) names += "'" + spec->name + "' ";
  ADD_FAILURE() << "no spec named '" << name << "' among " << names;
  return nullptr;
}

// Compiles `source` and runs the sandboxed harness on it: the same evaluation a candidate gets.
// Test stages only unless `profile`.
class Evaluator {
 public:
  Evaluator() {
    Result<TempDir> dir = TempDir::Create("kfleet-agents-test");
    EXPECT_TRUE(dir.ok());
    dir_ = std::make_unique<TempDir>(std::move(*dir));
    eval::CompileOptions compile;
    compile.cache_dir = dir_->path() / "cache";
    Result<std::unique_ptr<eval::Toolchain>> toolchain = eval::MakeCpuToolchain(compile);
    EXPECT_TRUE(toolchain.ok()) << toolchain.status().ToString();
    toolchain_ = std::move(*toolchain);
  }

  eval::EvalReport Evaluate(const Spec& spec, const std::string& source, bool profile = false) {
    const std::filesystem::path spec_path = dir_->path() / "spec.onnx";
    EXPECT_TRUE(WriteFileAtomic(spec_path, spec.bytes).ok());
    eval::HarnessOptions harness;
    harness.profile = profile;
    harness.profile_budget_s = 0.3;
    eval::LaunchOptions launch;
    launch.harness = kfleet::testing::TestBinary("kfleet-harness", KFLEET_HARNESS_PATH);
    launch.call_timeout_ms = 10'000;
    launch.timeout_ms = 120'000;
    Result<eval::EvalReport> report =
        eval::EvaluateSource(spec_path, source, *toolchain_, harness, launch);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : eval::EvalReport{};
  }

 private:
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<eval::Toolchain> toolchain_;
};

// Renders `params`, evaluates, and expects every stage to pass (with the compiler output and the
// failure in the message otherwise).
inline void ExpectRenderedKernelPasses(Evaluator& evaluator, const TemplateFamily& family,
                                       const Spec& spec, const Params& params) {
  Result<RenderedKernel> kernel = family.Render(spec.view, params);
  ASSERT_TRUE(kernel.ok()) << family.name() << " on " << spec.name << ": "
                           << kernel.status().ToString();
  eval::EvalReport report = evaluator.Evaluate(spec, kernel->source);
  std::string params_text;
  for (const auto& [k, v] : params) params_text += k + "=" + v + " ";
  EXPECT_TRUE(report.passed) << family.name() << " on " << spec.name << " with " << params_text
                             << ": failed at " << report.failed_stage << ": " << report.reason
                             << "\n"
                             << report.compile.log << "\n--- source ---\n"
                             << kernel->source;
}

// The CUDA side: renders compile with nvcc wherever nvcc is (CI has it, no GPU), and run through
// the sandboxed harness on device 0 where a GPU is usable.
class CudaEvaluator {
 public:
  CudaEvaluator() {
    Result<TempDir> dir = TempDir::Create("kfleet-agents-cuda-test");
    EXPECT_TRUE(dir.ok());
    dir_ = std::make_unique<TempDir>(std::move(*dir));
    gpu_ = eval::CheckDevice("cuda", 0);
    std::string arch = "sm_90";  // what CI compiles for without a GPU
    if (gpu_.ok()) {
      Result<eval::CudaDeviceSummary> summary = eval::DescribeCudaDevice(0);
      if (summary.ok()) arch = summary->arch;
    }
    eval::CompileOptions compile = eval::CudaCompileOptions(arch);
    compile.cache_dir = dir_->path() / "cache";
    Result<std::unique_ptr<eval::Toolchain>> toolchain = eval::MakeCudaToolchain(compile);
    nvcc_ = toolchain.status();
    if (toolchain.ok()) toolchain_ = std::move(*toolchain);
  }
  // Why nothing can be compiled here (no nvcc), or Ok.
  const Status& nvcc() const { return nvcc_; }
  // Why no kernel can run here (no GPU), or Ok.
  const Status& gpu() const { return gpu_; }

  // Compiles only; the log on failure.
  eval::CompiledKernel Compile(const std::string& source) {
    Result<eval::CompiledKernel> compiled = toolchain_->Compile(source);
    EXPECT_TRUE(compiled.ok()) << compiled.status().ToString();
    return compiled.ok() ? *compiled : eval::CompiledKernel{};
  }

  eval::EvalReport Evaluate(const Spec& spec, const std::string& source, bool profile = false) {
    const std::filesystem::path spec_path = dir_->path() / "spec.onnx";
    EXPECT_TRUE(WriteFileAtomic(spec_path, spec.bytes).ok());
    eval::HarnessOptions harness;
    harness.backend = "cuda";
    harness.profile = profile;
    harness.profile_budget_s = 0.3;
    eval::LaunchOptions launch;
    launch.harness = kfleet::testing::TestBinary("kfleet-harness", KFLEET_HARNESS_PATH);
    launch.call_timeout_ms = 10'000;
    launch.timeout_ms = 120'000;
    Result<eval::EvalReport> report =
        eval::EvaluateSource(spec_path, source, *toolchain_, harness, launch);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : eval::EvalReport{};
  }

 private:
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<eval::Toolchain> toolchain_;
  Status nvcc_ = Status::Ok();
  Status gpu_ = Status::Ok();
};

// Renders `params` and compiles the source with nvcc (skipping the test without nvcc); where a
// GPU is usable also evaluates it and expects every test stage to pass.
inline void ExpectCudaKernelPasses(CudaEvaluator& evaluator, const TemplateFamily& family,
                                   const Spec& spec, const Params& params) {
  std::string params_text;
  for (const auto& [k, v] : params) params_text += k + "=" + v + " ";
  Result<RenderedKernel> kernel = family.Render(spec.view, params);
  ASSERT_TRUE(kernel.ok()) << family.name() << " on " << spec.name << " [" << params_text
                           << "]: " << kernel.status().ToString();
  if (!evaluator.nvcc().ok()) GTEST_SKIP() << "no nvcc: " << evaluator.nvcc().message();
  eval::CompiledKernel compiled = evaluator.Compile(kernel->source);
  ASSERT_TRUE(compiled.ok) << family.name() << " on " << spec.name << " [" << params_text
                           << "] does not compile:\n"
                           << compiled.log << "\n"
                           << kernel->source;
  if (!evaluator.gpu().ok()) return;  // compiled; nothing to run it on here
  eval::EvalReport report = evaluator.Evaluate(spec, kernel->source);
  EXPECT_TRUE(report.passed) << family.name() << " on " << spec.name << " [" << params_text
                             << "] failed at " << report.failed_stage << ": " << report.reason;
}

}  // namespace kfleet::agents::testing
