// The kernel search end to end with real processes: `kfleet run` on a small model, and a model
// job through kfleetd and two workers that survives a killed worker and a killed coordinator.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "common/files.h"
#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

std::string ModelPath() {
  return std::string(std::getenv("KFLEET_TEST_DATA")) + "/models/mlp_block.onnxtxt";
}

bool WaitUntil(const std::function<bool()>& condition, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return condition();
}

int64_t SubmitModel(Fleet& fleet, const std::string& budget) {
  CliResult submitted =
      fleet.Cli({"submit", ModelPath(), "--budget", budget, "--top", "2", "--json"});
  EXPECT_EQ(submitted.exit_code, 0) << submitted.out << submitted.err;
  nlohmann::json out = submitted.Json();
  return out.is_object() ? out.value("job", int64_t{0}) : 0;
}

int64_t CandidatesOf(Fleet& fleet, int64_t job) {
  auto kernels = fleet.Store().kernel_jobs().ListByJob(job);
  if (!kernels.ok()) return 0;
  int64_t n = 0;
  for (const auto& k : *kernels) {
    auto candidates = fleet.Store().candidates().ListByKernelJob(k.id);
    if (candidates.ok()) n += static_cast<int64_t>(candidates->size());
  }
  return n;
}

nlohmann::json WaitForJob(Fleet& fleet, int64_t job, int timeout_ms) {
  nlohmann::json shown;
  WaitUntil(
      [&] {
        shown = fleet.Cli({"show", std::to_string(job), "--json"}).Json();
        if (!shown.is_object()) return false;
        const std::string state = shown["job"].value("state", "");
        return state == "done" || state == "failed" || state == "cancelled";
      },
      timeout_ms);
  return shown;
}

// What every finished search must show: the phases ran, kernels were found and checked, and no
// rendered source was evaluated twice.
void ExpectFinishedSearch(Fleet& fleet, int64_t job, const nlohmann::json& shown) {
  ASSERT_TRUE(shown.is_object());
  EXPECT_EQ(shown["job"].value("state", ""), "done") << shown.dump(2);
  EXPECT_EQ(shown["job"].value("phase", ""), "finished");
  EXPECT_GT(shown.value("baseline_model_us", 0.0), 0);
  EXPECT_GT(shown.value("measured_speedup", 0.0), 0) << shown.dump(2);
  int verified = 0;
  for (const auto& kernel : shown["kernels"]) verified += kernel.value("verified", false) ? 1 : 0;
  EXPECT_GE(verified, 1) << shown.dump(2);

  auto kernels = fleet.Store().kernel_jobs().ListByJob(job);
  ASSERT_TRUE(kernels.ok());
  for (const auto& k : *kernels) {
    auto candidates = fleet.Store().candidates().ListByKernelJob(k.id);
    ASSERT_TRUE(candidates.ok());
    std::set<std::string> tested_sources;
    for (const auto& c : *candidates) {
      if (!c.source_hash.has_value() || c.failed_stage == "duplicate") continue;
      EXPECT_TRUE(tested_sources.insert(*c.source_hash).second)
          << "candidate " << c.id << " repeats a source already evaluated";
    }
  }
}

TEST(SearchTest, RunOnASmallModelFinishesWithVerifiedKernelsAndAReport) {
  Fleet fleet;  // only for its scratch directory and CLI environment (HOME, caches)
  const std::filesystem::path out = fleet.dir() / "out";
  CliResult run = fleet.Cli({"run", ModelPath(), "--budget", "45s", "--top", "2", "--json", "--out",
                             out.string(), "--state", (fleet.dir() / "run-state").string()},
                            400'000);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  nlohmann::json result = run.Json();
  ASSERT_TRUE(result.is_object()) << run.out;
  EXPECT_EQ(result["job"].value("state", ""), "done") << run.out;
  EXPECT_GT(result.value("measured_speedup", 0.0), 0) << run.out;
  EXPECT_GT(result.value("projected_speedup", 0.0), 0);
  int verified = 0;
  for (const auto& kernel : result["kernels"]) {
    if (!kernel.value("verified", false)) continue;
    ++verified;
    EXPECT_GT(kernel.value("speedup", 0.0), 1.0) << kernel.dump();
    EXPECT_GT(kernel.value("candidates", 0), 0);
  }
  EXPECT_GE(verified, 1) << run.out;
  for (const char* file :
       {"report.md", "speedup.svg", "progress.svg", "kernels.json", "lib/libkfleet_kernels.so",
        "include/kfleet_kernels.h", "include/kfleet/kernel.h"}) {
    EXPECT_TRUE(std::filesystem::exists(out / file)) << file;
  }
  const std::string report = *ReadFile(out / "report.md");
  EXPECT_NE(report.find("Measured end-to-end speedup"), std::string::npos) << report;
  EXPECT_NE(report.find("mlp_block"), std::string::npos);
  bool any_source = false;
  for (const auto& entry : std::filesystem::directory_iterator(out / "kernels")) {
    any_source |= entry.path().extension() == ".cpp";
  }
  EXPECT_TRUE(any_source);
}

TEST(SearchTest, AModelJobSurvivesAKilledWorkerAndAKilledCoordinator) {
  Fleet fleet;
  fleet.StartCoordinator();
  fleet.AddWorker("w1", 1);
  fleet.AddWorker("w2", 1);
  ASSERT_TRUE(fleet.WaitForNodes(2));
  const int64_t job = SubmitModel(fleet, "50s");
  ASSERT_GT(job, 0);

  // Mid-search: a worker dies with its tasks.
  ASSERT_TRUE(WaitUntil([&] { return CandidatesOf(fleet, job) >= 2; }, 120'000));
  fleet.worker("w2").Signal(SIGKILL);

  // Later the coordinator dies too; the search resumes from the store.
  const int64_t before = CandidatesOf(fleet, job);
  ASSERT_TRUE(WaitUntil([&] { return CandidatesOf(fleet, job) > before; }, 120'000));
  fleet.coordinator().Signal(SIGKILL);
  ASSERT_TRUE(fleet.coordinator().Wait(std::chrono::seconds(5)).has_value());
  fleet.StartCoordinator();
  EXPECT_TRUE(fleet.coordinator().WaitForLog("conductor.resumed", std::chrono::seconds(10)))
      << fleet.coordinator().Log();

  nlohmann::json shown = WaitForJob(fleet, job, 400'000);
  ExpectFinishedSearch(fleet, job, shown);
  EXPECT_TRUE(fleet.worker("w1").Running());

  // The export of the finished job carries the winners and the combined library.
  const std::filesystem::path out = fleet.dir() / "export";
  CliResult exported = fleet.Cli({"export", std::to_string(job), out.string()});
  EXPECT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  EXPECT_TRUE(std::filesystem::exists(out / "report.md"));
  EXPECT_TRUE(std::filesystem::exists(out / "lib/libkfleet_kernels.so"));
}

TEST(SearchTest, ACorruptModelIsRefusedWithAClearError) {
  Fleet fleet;
  fleet.StartCoordinator();
  const std::filesystem::path bad = fleet.dir() / "bad.onnx";
  ASSERT_TRUE(WriteFileAtomic(bad, "this is not a protobuf").ok());
  CliResult submitted = fleet.Cli({"submit", bad.string(), "--budget", "30s"});
  EXPECT_NE(submitted.exit_code, 0);
  EXPECT_NE(submitted.err.find("bad.onnx"), std::string::npos) << submitted.err;
  CliResult listed = fleet.Cli({"status", "--json"});
  EXPECT_EQ(listed.Json()["jobs"].size(), 0u) << "nothing is stored for a refused model";
  CliResult amd = fleet.Cli({"submit", ModelPath(), "--target", "hip"});
  EXPECT_NE(amd.exit_code, 0);
  EXPECT_NE(amd.err.find("cpu and cuda targets"), std::string::npos) << amd.err;
  CliResult half = fleet.Cli({"submit", ModelPath(), "--dtype", "int8"});
  EXPECT_NE(half.exit_code, 0);
  EXPECT_NE(half.err.find("--dtype"), std::string::npos) << half.err;
  EXPECT_EQ(fleet.Cli({"status", "--json"}).Json()["jobs"].size(), 0u);
}

}  // namespace
}  // namespace kfleet::testing
