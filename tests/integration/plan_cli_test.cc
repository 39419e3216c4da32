// `kfleet plan` and `kfleet calibrate cpu` as a user runs them: the real binary, no daemon.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

std::string Model(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

TEST(PlanCliTest, JsonListsEveryJobWithItsAmdahlTerms) {
  Fleet fleet;  // only for its scratch directory and CLI runner: no daemon starts
  CliResult plan =
      fleet.Cli({"plan", Model("gpt2-small_b1s128.onnx"), "--target", "h200", "--json"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  nlohmann::json j = plan.Json();
  ASSERT_TRUE(j.is_object()) << plan.out;
  EXPECT_EQ(j["target"]["id"], "h200");
  EXPECT_EQ(j["time_source"], "roofline");
  EXPECT_EQ(j["model"]["nodes"], 455);
  ASSERT_EQ(j["jobs"].size(), 11u);
  double share = 0;
  double previous_saving = 1e300;
  for (const auto& job : j["jobs"]) {
    for (const char* key : {"name", "family", "hash", "count", "ops", "inputs", "outputs", "flops",
                            "bytes", "baseline_us", "floor_us", "share", "expected_speedup",
                            "expected_saving_us", "time_source", "anchors", "rank"}) {
      EXPECT_TRUE(job.contains(key)) << key << " missing in " << job["name"];
    }
    EXPECT_FALSE(job["inputs"][0]["shape"].empty());
    EXPECT_LE(job["expected_saving_us"].get<double>(), previous_saving);
    previous_saving = job["expected_saving_us"].get<double>();
    share += job["share"].get<double>();
  }
  EXPECT_NEAR(share, 1.0, 1e-9);
  EXPECT_EQ(j["what_if"].back()["jobs"], "all");
}

TEST(PlanCliTest, TableNamesTheTargetAndTheTopJobs) {
  Fleet fleet;
  CliResult plan = fleet.Cli(
      {"plan", Model("resnet50_b8.onnx"), "--target", "a100", "--dtype", "bf16", "--top", "3"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_NE(plan.out.find("target  a100"), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("conv+add+relu"), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("24 more jobs"), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("what-if end-to-end speedup"), std::string::npos) << plan.out;
}

TEST(PlanCliTest, TorchProfilerTraceMakesTheTimesMeasured) {
  Fleet fleet;
  CliResult plan =
      fleet.Cli({"plan", Model("resnet50_b8.onnx"), "--target", "h200", "--dtype", "fp16",
                 "--profile", Model("resnet50_fp16_torch_trace.json"), "--json"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  nlohmann::json j = plan.Json();
  EXPECT_EQ(j["time_source"], "measured");
  // The trace's GPU kernels add up to 1.45 ms.
  EXPECT_NEAR(j["model_time_us"].get<double>(), 1454, 5);
}

TEST(PlanCliTest, EmittedSpecsAreModelsThatPlanOnTheirOwn) {
  Fleet fleet;
  const std::filesystem::path specs = fleet.dir() / "specs";
  CliResult plan = fleet.Cli(
      {"plan", Model("tinygpt2_1.onnx"), "--target", "mi300x", "--emit-specs", specs.string()});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(specs)) {
    if (entry.path().extension() != ".onnx") continue;  // the .json metadata beside each
    ++files;
    CliResult again = fleet.Cli({"plan", entry.path().string(), "--target", "mi300x", "--json"});
    ASSERT_EQ(again.exit_code, 0) << entry.path() << ": " << again.err;
    EXPECT_EQ(again.Json()["jobs"].size() + again.Json()["opaque_jobs"].size(), 1u) << entry.path();
  }
  EXPECT_EQ(files, 9);
}

TEST(PlanCliTest, CpuTargetCalibratesOnceAndCaches) {
  Fleet fleet;
  CliResult plan = fleet.Cli({"plan", Model("tinygpt2_1.onnx"), "--json"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  nlohmann::json j = plan.Json();
  EXPECT_EQ(j["target"]["id"], "cpu");
  EXPECT_NE(j["target"]["source"].get<std::string>().find("calibrated"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(fleet.dir() / "home/.cache/kfleet/cpu-calibration.yaml"));

  CliResult cal = fleet.Cli({"calibrate", "cpu", "--json"});
  ASSERT_EQ(cal.exit_code, 0) << cal.err;
  nlohmann::json c = cal.Json();
  ASSERT_TRUE(c.is_object()) << cal.out;
  EXPECT_GT(c["copy_gb_per_s"].get<double>(), 0);
  EXPECT_GT(c["matmul_gflops"].get<double>(), 0);
  EXPECT_EQ(c["from_cache"], true);
}

TEST(PlanCliTest, BadInputIsOneErrorLineAndAUsageExitCode) {
  Fleet fleet;
  const std::filesystem::path junk = fleet.dir() / "junk.onnx";
  ASSERT_TRUE(std::filesystem::copy_file(Model("gpt2-small_b1s128.onnx"), junk));
  std::filesystem::resize_file(junk, 3000);
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const Case cases[] = {
      {{"plan", junk.string(), "--target", "h200"}, 2, "junk.onnx: not an ONNX model"},
      {{"plan", (fleet.dir() / "none.onnx").string()}, 1, "No such file"},
      {{"plan", Model("resnet50_b8.onnx"), "--target", "h300"}, 1, "known targets are"},
      {{"plan", Model("resnet50_b8.onnx"), "--dim", "batch"}, 2, "expected NAME=VALUE"},
      {{"plan", Model("resnet50_b8.onnx"), "--dtype", "int8"}, 2, "floating type"},
  };
  for (const Case& c : cases) {
    CliResult r = fleet.Cli(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args[1] << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
    EXPECT_EQ(r.err.rfind("kfleet: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace kfleet::testing
