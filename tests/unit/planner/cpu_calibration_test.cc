#include "planner/cpu_calibration.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include "common/files.h"
#include "common/temp_dir.h"

namespace kfleet::planner {
namespace {

TEST(CalibrationTest, MeasuresPositiveRates) {
  Result<CpuCalibration> cal = CalibrateCpu();
  ASSERT_TRUE(cal.ok()) << cal.status().ToString();
  EXPECT_FALSE(cal->cpu_model.empty());
  EXPECT_EQ(cal->logical_cores,
            static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_GT(cal->copy_bytes_per_s, 0);
  EXPECT_GT(cal->matmul_flops_per_s, 0);
  EXPECT_TRUE(std::regex_match(cal->measured_at, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << cal->measured_at;
  EXPECT_FALSE(cal->from_cache);
}

class CalibrationCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-calibration-test");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_.emplace(std::move(dir).value());
    // A directory that does not exist yet: the cache creates it.
    path_ = (dir_->path() / "cache" / "kfleet" / "cpu-calibration.yaml").string();
  }

  // Calibrates into the cache and returns the measurement.
  CpuCalibration Fresh() {
    Result<CpuCalibration> cal = LoadOrCalibrateCpu(path_, /*force=*/false);
    EXPECT_TRUE(cal.ok()) << cal.status().ToString();
    EXPECT_FALSE(cal->from_cache);
    return cal.value_or(CpuCalibration{});
  }

  bool LoadsFromCache() {
    Result<CpuCalibration> cal = LoadOrCalibrateCpu(path_, /*force=*/false);
    EXPECT_TRUE(cal.ok()) << cal.status().ToString();
    return cal.ok() && cal->from_cache;
  }

  void WriteCache(const std::string& text) { ASSERT_TRUE(WriteFileAtomic(path_, text).ok()); }

  std::optional<TempDir> dir_;
  std::string path_;
};

TEST_F(CalibrationCacheTest, SecondCallReadsTheCache) {
  CpuCalibration first = Fresh();
  ASSERT_TRUE(std::filesystem::exists(path_));
  Result<CpuCalibration> second = LoadOrCalibrateCpu(path_, false);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(second->from_cache);
  EXPECT_EQ(second->cpu_model, first.cpu_model);
  EXPECT_EQ(second->logical_cores, first.logical_cores);
  EXPECT_DOUBLE_EQ(second->copy_bytes_per_s, first.copy_bytes_per_s);
  EXPECT_DOUBLE_EQ(second->matmul_flops_per_s, first.matmul_flops_per_s);
  EXPECT_EQ(second->measured_at, first.measured_at);
}

TEST_F(CalibrationCacheTest, ForceMeasuresAgain) {
  Fresh();
  Result<CpuCalibration> forced = LoadOrCalibrateCpu(path_, /*force=*/true);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  EXPECT_FALSE(forced->from_cache);
  EXPECT_TRUE(LoadsFromCache());
}

TEST_F(CalibrationCacheTest, CorruptCacheIsMeasuredAgainAndOverwritten) {
  Fresh();
  for (const char* corrupt : {"cpu_model: [unterminated\n", "just a string\n",
                              "cpu_model: x\nlogical_cores: many\n", ""}) {
    SCOPED_TRACE(corrupt);
    WriteCache(corrupt);
    EXPECT_FALSE(LoadsFromCache());
    EXPECT_TRUE(LoadsFromCache());  // the fresh measurement replaced it
  }
}

TEST_F(CalibrationCacheTest, AnotherCpuIsMeasuredAgain) {
  CpuCalibration mine = Fresh();
  const std::string rates =
      "copy_bytes_per_s: 1e10\nmatmul_flops_per_s: 1e11\n"
      "measured_at: 2020-01-01T00:00:00Z\nmethod: \"" +
      mine.method + "\"\n";
  WriteCache("cpu_model: \"Imaginary CPU 9000\"\nlogical_cores: " +
             std::to_string(mine.logical_cores) + "\n" + rates);
  EXPECT_FALSE(LoadsFromCache());
  Result<std::string> text = ReadFile(path_);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->find("Imaginary"), std::string::npos);

  WriteCache("cpu_model: \"" + mine.cpu_model +
             "\"\nlogical_cores: " + std::to_string(mine.logical_cores + 1) + "\n" + rates);
  EXPECT_FALSE(LoadsFromCache());

  // A calibration measured another way (before matmul went through OpenBLAS) is stale.
  WriteCache("cpu_model: \"" + mine.cpu_model + "\"\nlogical_cores: " +
             std::to_string(mine.logical_cores) +
             "\ncopy_bytes_per_s: 1e10\nmatmul_flops_per_s: 1e11\n"
             "measured_at: 2020-01-01T00:00:00Z\n");
  EXPECT_FALSE(LoadsFromCache());

  // The same file with this CPU's model and cores is used as is.
  WriteCache("cpu_model: \"" + mine.cpu_model +
             "\"\nlogical_cores: " + std::to_string(mine.logical_cores) + "\n" + rates);
  Result<CpuCalibration> cached = LoadOrCalibrateCpu(path_, false);
  ASSERT_TRUE(cached.ok());
  EXPECT_TRUE(cached->from_cache);
  EXPECT_DOUBLE_EQ(cached->copy_bytes_per_s, 1e10);
  EXPECT_DOUBLE_EQ(cached->matmul_flops_per_s, 1e11);
}

TEST_F(CalibrationCacheTest, UnwritableCacheStillReturnsTheMeasurement) {
  // A regular file where the cache's directory should be.
  const std::filesystem::path blocker = dir_->path() / "blocker";
  ASSERT_TRUE(WriteFileAtomic(blocker, "x").ok());
  Result<CpuCalibration> cal = LoadOrCalibrateCpu((blocker / "cal.yaml").string(), false);
  ASSERT_TRUE(cal.ok()) << cal.status().ToString();
  EXPECT_GT(cal->matmul_flops_per_s, 0);
}

TEST(CalibrationTest, CpuDeviceTakesTheMeasuredRates) {
  Result<DeviceModel> generic = DeviceCatalog::Builtin().Find("cpu");
  ASSERT_TRUE(generic.ok());
  CpuCalibration cal;
  cal.cpu_model = "Imaginary CPU 9000";
  cal.logical_cores = 12;
  cal.copy_bytes_per_s = 40e9;
  cal.matmul_flops_per_s = 800e9;
  cal.measured_at = "2026-11-21T10:00:00Z";
  DeviceModel d = CpuDeviceFromCalibration(*generic, cal);
  EXPECT_EQ(d.id, "cpu");
  EXPECT_EQ(d.backend, "cpu");
  EXPECT_DOUBLE_EQ(d.memory_bytes_per_s, 40e9);
  EXPECT_DOUBLE_EQ(d.MatrixFlopsPerS(DType::kF32), 800e9);
  EXPECT_DOUBLE_EQ(d.MatrixFlopsPerS(DType::kBF16), 800e9);
  EXPECT_DOUBLE_EQ(d.MatrixFlopsPerS(DType::kF64), 400e9);
  EXPECT_DOUBLE_EQ(d.VectorFlopsPerS(DType::kF32), 400e9);
  EXPECT_DOUBLE_EQ(d.VectorFlopsPerS(DType::kF16), 400e9);
  EXPECT_EQ(d.compute_units, 12);
  EXPECT_EQ(d.launch_overhead_s, generic->launch_overhead_s);
  EXPECT_EQ(d.source, "calibrated 2026-11-21 on Imaginary CPU 9000");
}

TEST(CalibrationTest, DefaultCachePathFollowsXdg) {
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::optional<std::string> saved =
      old_xdg ? std::optional<std::string>(old_xdg) : std::nullopt;
  ::setenv("XDG_CACHE_HOME", "/var/cache/someone", 1);
  EXPECT_EQ(DefaultCalibrationCachePath(), "/var/cache/someone/kfleet/cpu-calibration.yaml");
  ::setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  EXPECT_NE(DefaultCalibrationCachePath().find("kfleet"), std::string::npos);
  EXPECT_EQ(DefaultCalibrationCachePath().find("relative"), std::string::npos);
  if (saved) {
    ::setenv("XDG_CACHE_HOME", saved->c_str(), 1);
  } else {
    ::unsetenv("XDG_CACHE_HOME");
  }
}

}  // namespace
}  // namespace kfleet::planner
