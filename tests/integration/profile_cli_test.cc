// `kfleet profile` and the stored profile `kfleet plan --target cpu` picks up, as a user runs
// them: the real binary, no daemon, a scratch HOME (so a scratch ~/.cache/kfleet).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/fleet.h"

namespace kfleet::testing {
namespace {

namespace fs = std::filesystem;

std::string Model(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

// Profiles `file` once and checks every node got a time; returns the stored profile's path.
std::string ProfileTimesEveryNode(Fleet& fleet, const std::string& file, size_t nodes) {
  CliResult profile =
      fleet.Cli({"profile", Model(file), "--reps", "1", "--warmup", "0", "--json"}, 300'000);
  EXPECT_EQ(profile.exit_code, 0) << profile.err;
  nlohmann::json j = profile.Json();
  EXPECT_TRUE(j.is_object()) << profile.out;
  if (!j.is_object()) return "";
  EXPECT_EQ(j["target"]["id"], "cpu");
  EXPECT_EQ(j["reps"], 1);
  EXPECT_EQ(j["nodes"].size(), nodes);
  std::set<std::string> ops;
  double sum_us = 0;
  for (const auto& node : j["nodes"]) {
    EXPECT_TRUE(node["name"].is_string());
    EXPECT_GE(node["us"].get<double>(), 0.0) << node["name"];
    EXPECT_GE(node["floor_us"].get<double>(), 0.0) << node["name"];
    sum_us += node["us"].get<double>();
    ops.insert(node["op"].get<std::string>());
  }
  EXPECT_NEAR(j["model_time_us"].get<double>(), sum_us, 1e-6 * sum_us);
  EXPECT_GT(j["end_to_end_us"].get<double>(), 0.0);
  EXPECT_EQ(j["op_types"].size(), ops.size());
  const std::string stored = j["profile"].is_string() ? j["profile"].get<std::string>() : "";
  EXPECT_TRUE(fs::exists(stored)) << stored;
  EXPECT_EQ(fs::path(stored).parent_path(), fleet.dir() / "home/.cache/kfleet/profiles");
  return stored;
}

TEST(ProfileCliTest, Gpt2ProfileIsStoredAndPlanUsesIt) {
  Fleet fleet;  // only for its scratch directory and CLI runner: no daemon starts
  const std::string stored = ProfileTimesEveryNode(fleet, "gpt2-small_b1s128.onnx", 455);

  CliResult plan =
      fleet.Cli({"plan", Model("gpt2-small_b1s128.onnx"), "--target", "cpu", "--json"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  nlohmann::json j = plan.Json();
  EXPECT_EQ(j["time_source"], "measured");
  EXPECT_EQ(j["profile"], stored);
  EXPECT_TRUE(j["profile_measured_at"].is_string());

  CliResult table = fleet.Cli({"plan", Model("gpt2-small_b1s128.onnx"), "--top", "3"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("times   measured by kfleet profile on"), std::string::npos)
      << table.out;

  CliResult roofline = fleet.Cli({"plan", Model("gpt2-small_b1s128.onnx"), "--roofline", "--json"});
  ASSERT_EQ(roofline.exit_code, 0) << roofline.err;
  EXPECT_EQ(roofline.Json()["time_source"], "roofline");
  EXPECT_TRUE(roofline.Json()["profile"].is_null());

  // Another dtype is another graph: the fp32 profile does not apply to it.
  CliResult bf16 =
      fleet.Cli({"plan", Model("gpt2-small_b1s128.onnx"), "--dtype", "bf16", "--json"});
  ASSERT_EQ(bf16.exit_code, 0) << bf16.err;
  EXPECT_EQ(bf16.Json()["time_source"], "roofline");
}

TEST(ProfileCliTest, Resnet50TableShowsTopNodesAndOpTypes) {
  Fleet fleet;
  ProfileTimesEveryNode(fleet, "resnet50_b8.onnx", 122);
  CliResult table = fleet.Cli({"profile", Model("resnet50_b8.onnx"), "--reps", "1", "--warmup", "0",
                               "--top", "4", "--no-store"},
                              300'000);
  ASSERT_EQ(table.exit_code, 0) << table.err;
  for (const char* text : {"top 4 nodes", "by op type", "Conv", "floor/measured", "end to end"}) {
    EXPECT_NE(table.out.find(text), std::string::npos) << text << " in\n" << table.out;
  }
  EXPECT_EQ(table.out.find("stored"), std::string::npos) << table.out;
}

TEST(ProfileCliTest, BadInputIsOneErrorLine) {
  Fleet fleet;
  const fs::path junk = fleet.dir() / "junk.onnx";
  ASSERT_TRUE(fs::copy_file(Model("gpt2-small_b1s128.onnx"), junk));
  fs::resize_file(junk, 3000);
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const Case cases[] = {
      {{"profile", junk.string()}, 1, "junk.onnx: not an ONNX model"},
      {{"profile", (fleet.dir() / "none.onnx").string()}, 1, "No such file"},
      {{"profile", Model("resnet50_b8.onnx"), "--target", "h200"}, 2, "NVIDIA backend"},
      {{"profile", Model("resnet50_b8.onnx"), "--dim", "batch"}, 2, "expected NAME=VALUE"},
      {{"profile", Model("resnet50_b8.onnx"), "--reps", "0"}, 2, "--reps"},
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

TEST(ProfileCliTest, EmittedSpecsHaveMetadataBesideThem) {
  Fleet fleet;
  const fs::path specs = fleet.dir() / "specs";
  CliResult plan = fleet.Cli(
      {"plan", Model("tinygpt2_1.onnx"), "--target", "mi300x", "--emit-specs", specs.string()});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  int models = 0;
  for (const auto& entry : fs::directory_iterator(specs)) {
    if (entry.path().extension() != ".onnx") continue;
    ++models;
    fs::path meta = entry.path();
    meta.replace_extension(".json");
    ASSERT_TRUE(fs::exists(meta)) << meta;
    std::ifstream in(meta);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    ASSERT_TRUE(j.is_object()) << meta;
    for (const char* key : {"name", "family", "hash", "count", "rank", "inputs", "outputs", "ops",
                            "flops", "bytes", "baseline_us", "floor_us", "share",
                            "expected_saving_us", "anchors", "target", "time_source", "spec"}) {
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << meta;
    }
    EXPECT_EQ(j["target"], "mi300x");
    EXPECT_EQ(j["spec"], entry.path().filename().string());
    const int rank = j["rank"].get<int>();
    EXPECT_EQ(meta.filename().string().substr(0, 3),
              (rank < 10 ? "0" : "") + std::to_string(rank) + "-");
  }
  EXPECT_EQ(models, 9);
}

}  // namespace
}  // namespace kfleet::testing
