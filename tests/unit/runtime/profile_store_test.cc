#include "runtime/profile_store.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "common/files.h"
#include "common/ids.h"
#include "common/temp_dir.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::runtime {
namespace {

namespace fs = std::filesystem;

// Sets or unsets an environment variable for one test and puts it back afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    if (value == nullptr) {
      EXPECT_EQ(::unsetenv(name), 0);
    } else {
      EXPECT_EQ(::setenv(name, value, 1), 0);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      EXPECT_EQ(::setenv(name_, old_->c_str(), 1), 0);
    } else {
      EXPECT_EQ(::unsetenv(name_), 0);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

StoredProfile SampleProfile() {
  StoredProfile p;
  p.key.model_sha256 = Sha256Hex("model bytes");
  p.key.dtype = "f16";
  p.key.dims = {{"batch", 8}};
  p.model = "/models/m.onnx";
  p.node_us = {{"node_a", 12.5}, {"node_b", 3.25}};
  p.end_to_end_us = 16.0;
  p.cpu_model = "Test CPU";
  p.threads = 2;
  p.reps = 5;
  p.measured_at = "2026-11-21T10:00:00Z";
  return p;
}

TEST(ProfileStoreTest, SaveThenFindRoundTrips) {
  Result<TempDir> dir = TempDir::Create("profiles");
  ASSERT_TRUE(dir.ok());
  const StoredProfile p = SampleProfile();
  Result<std::string> path = SaveProfile(dir->path().string(), p);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(fs::path(*path).filename(), p.key.Hex() + ".json");

  Result<std::optional<StoredProfile>> found = FindStoredProfile(dir->path().string(), p.key);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_TRUE(found->has_value());
  const StoredProfile& q = **found;
  EXPECT_EQ(q.path, *path);
  EXPECT_EQ(q.key.model_sha256, p.key.model_sha256);
  EXPECT_EQ(q.key.dtype, "f16");
  EXPECT_EQ(q.key.dims, p.key.dims);
  EXPECT_EQ(q.node_us, p.node_us);
  EXPECT_EQ(q.end_to_end_us, 16.0);
  EXPECT_EQ(q.model, "/models/m.onnx");
  EXPECT_EQ(q.cpu_model, "Test CPU");
  EXPECT_EQ(q.threads, 2);
  EXPECT_EQ(q.reps, 5);
  EXPECT_EQ(q.measured_at, "2026-11-21T10:00:00Z");
}

TEST(ProfileStoreTest, KeyCoversModelDtypeDimsAndTarget) {
  Result<TempDir> dir = TempDir::Create("profiles");
  ASSERT_TRUE(dir.ok());
  const StoredProfile p = SampleProfile();
  ASSERT_TRUE(SaveProfile(dir->path().string(), p).ok());
  ProfileKey other = p.key;
  other.dtype.clear();
  ProfileKey other_dims = p.key;
  other_dims.dims["batch"] = 4;
  ProfileKey other_model = p.key;
  other_model.model_sha256 = Sha256Hex("other bytes");
  ProfileKey other_target = p.key;
  other_target.target = "h200";
  for (const ProfileKey& key : {other, other_dims, other_model, other_target}) {
    EXPECT_NE(key.Hex(), p.key.Hex());
    Result<std::optional<StoredProfile>> found = FindStoredProfile(dir->path().string(), key);
    ASSERT_TRUE(found.ok());
    EXPECT_FALSE(found->has_value());
  }
}

TEST(ProfileStoreTest, AsExportedDtypeIsSpelledOut) {
  Result<TempDir> dir = TempDir::Create("profiles");
  ASSERT_TRUE(dir.ok());
  StoredProfile p = SampleProfile();
  p.key.dtype.clear();
  Result<std::string> path = SaveProfile(dir->path().string(), p);
  ASSERT_TRUE(path.ok());
  Result<std::string> text = ReadFile(*path);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("\"dtype\": \"as exported\""), std::string::npos) << *text;
  Result<StoredProfile> loaded = LoadProfile(*path);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->key.dtype, "");
}

TEST(ProfileStoreTest, CorruptFilesAreNamedErrors) {
  Result<TempDir> dir = TempDir::Create("profiles");
  ASSERT_TRUE(dir.ok());
  const StoredProfile p = SampleProfile();
  const std::string path = (dir->path() / (p.key.Hex() + ".json")).string();
  ASSERT_TRUE(WriteFileAtomic(path, "{not json").ok());
  Result<std::optional<StoredProfile>> found = FindStoredProfile(dir->path().string(), p.key);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(found.status().message().find(path), std::string::npos);

  ASSERT_TRUE(WriteFileAtomic(path, R"({"node_us": {"a": -1}})").ok());
  EXPECT_FALSE(LoadProfile(path).ok());

  // A file under one key that holds another key's profile is not silently used.
  StoredProfile elsewhere = p;
  elsewhere.key.dims["batch"] = 2;
  Result<std::string> saved = SaveProfile(dir->path().string(), elsewhere);
  ASSERT_TRUE(saved.ok());
  fs::rename(*saved, path);
  found = FindStoredProfile(dir->path().string(), p.key);
  ASSERT_FALSE(found.ok());
  EXPECT_NE(found.status().message().find("another model"), std::string::npos);
}

TEST(ProfileStoreTest, NodeTimesReadBackThroughThePlanner) {
  Result<TempDir> dir = TempDir::Create("profiles");
  ASSERT_TRUE(dir.ok());
  Result<planner::Graph> g = planner::ImportOnnxText(
      R"(<ir_version: 8, opset_import: ["" : 17]> g (float[4] x) => (float[4] y) { y = Relu(x) })",
      {});
  ASSERT_TRUE(g.ok());
  StoredProfile p = SampleProfile();
  p.node_us = {{g->nodes[0].name, 42.0}};
  Result<std::string> path = SaveProfile(dir->path().string(), p);
  ASSERT_TRUE(path.ok());
  Result<std::map<std::string, double>> seconds = planner::LoadNodeProfile(*path, *g);
  ASSERT_TRUE(seconds.ok()) << seconds.status().ToString();
  EXPECT_DOUBLE_EQ(seconds->at(g->nodes[0].name), 42e-6);
}

TEST(ProfileStoreTest, ModelHashIsTheFileHash) {
  const std::string model = planner::import_testing::TestModelPath("resnet50_b8.onnx");
  Result<std::string> hash = ModelSha256(model);
  ASSERT_TRUE(hash.ok()) << hash.status().ToString();
  Result<std::string> bytes = ReadFile(model);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*hash, Sha256Hex(*bytes));
  EXPECT_FALSE(ModelSha256("/nonexistent/model.onnx").ok());
}

TEST(ProfileStoreTest, DefaultDirFollowsKfleetThenXdgThenHome) {
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", "/srv/kfleet-cache");
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DefaultProfileDir(), "/srv/kfleet-cache/profiles");
  }
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", nullptr);
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(DefaultProfileDir(), "/xdg/kfleet/profiles");
  }
  {
    ScopedEnv kfleet("KFLEET_CACHE_DIR", "");
    ScopedEnv xdg("XDG_CACHE_HOME", "relative/ignored");
    EXPECT_EQ(DefaultProfileDir(), "/home/someone/.cache/kfleet/profiles");
  }
}

}  // namespace
}  // namespace kfleet::runtime
