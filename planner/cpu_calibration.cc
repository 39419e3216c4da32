#include "planner/cpu_calibration.h"

#include <cblas.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/files.h"
#include "common/log.h"

namespace kfleet::planner {
namespace {

// Copy buffers per side: past the last-level cache of most parts, and growing with the thread
// count on the many-core ones, so the copy measures memory rather than cache.
constexpr size_t kMinCopyBytes = size_t{64} << 20;
constexpr size_t kCopyBytesPerThread = size_t{2} << 20;
// Rounds are a few ms each; the best of many rides out a VM's stolen time slices.
constexpr int kCopyRounds = 12;

// The blocked loop: each thread multiplies its own matrices, 3 x 576 KiB that stay in its L2 / L3
// share, so the rate is the cores' arithmetic, not memory.
constexpr int kMatmulN = 384;
constexpr int kTileRows = 6;
constexpr int kTileCols = 32;
static_assert(kMatmulN % kTileRows == 0 && kMatmulN % kTileCols == 0);
constexpr int kMatmulRounds = 4;
// The OpenBLAS product: A is kBlasInner square, each thread owns kBlasColumnsPerThread columns.
constexpr int kBlasInner = 1024;
constexpr int kBlasColumnsPerThread = 256;
// Each round is short (a few ms); the best of many rides out a VM's stolen time slices.
constexpr int kBlasRounds = 16;
// Stored with a calibration; a cache measured another way is measured again.
constexpr std::string_view kMethod = "copy + max(blocked matmul, openblas sgemm column blocks)";

std::string CpuModel() {
  Result<std::string> cpuinfo = ReadFile("/proc/cpuinfo", size_t{16} << 20);
  if (cpuinfo.ok()) {
    std::istringstream lines(*cpuinfo);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("model name")) continue;
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      const size_t start = line.find_first_not_of(" \t", colon + 1);
      if (start != std::string::npos) return line.substr(start);
    }
  }
  return "unknown cpu";
}

int LogicalCores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

std::string IsoUtc(int64_t unix_us) {
  const std::time_t seconds = static_cast<std::time_t>(unix_us / 1'000'000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// Runs work(thread, round) on `threads` threads for `rounds` rounds and returns each round's wall
// time in seconds. The threads start once and wait for each round's signal, so thread start-up is
// never timed.
Result<std::vector<double>> TimeRounds(int threads, int rounds,
                                       const std::function<void(int, int)>& work) {
  std::vector<std::unique_ptr<std::latch>> start;
  std::vector<std::unique_ptr<std::latch>> done;
  for (int round = 0; round < rounds; ++round) {
    start.push_back(std::make_unique<std::latch>(1));
    done.push_back(std::make_unique<std::latch>(threads));
  }
  // Set when not every thread could start: the ones that did still count down, idle.
  std::atomic<bool> abandoned = false;
  std::string start_error;
  std::vector<std::jthread> workers;
  for (int t = 0; t < threads; ++t) {
    try {
      workers.emplace_back([&, t] {
        for (int round = 0; round < rounds; ++round) {
          start[round]->wait();
          if (!abandoned.load()) work(t, round);
          done[round]->count_down();
        }
      });
    } catch (const std::system_error& e) {
      abandoned = true;
      start_error = e.what();
      for (auto& latch : done) latch->count_down(threads - t);
      break;
    }
  }
  std::vector<double> seconds;
  for (int round = 0; round < rounds; ++round) {
    const int64_t start_us = SystemClock().MonotonicUs();
    start[round]->count_down();
    done[round]->wait();
    seconds.push_back(static_cast<double>(SystemClock().MonotonicUs() - start_us) * 1e-6);
  }
  if (abandoned) {
    return ResourceExhausted("could not start " + std::to_string(threads) +
                             " measuring threads: " + start_error);
  }
  return seconds;
}

// The fastest of the rounds after the first, which faults pages in and warms caches.
Result<double> BestTimedRound(const std::vector<double>& seconds) {
  const double best = *std::min_element(seconds.begin() + 1, seconds.end());
  if (best <= 0) return Internal("a calibration round took no measurable time");
  return best;
}

Result<double> MeasureCopyBytesPerS(int threads) {
  const size_t slice = std::max(kMinCopyBytes / threads, kCopyBytesPerThread);
  const size_t total = slice * static_cast<size_t>(threads);
  std::unique_ptr<char[]> src;
  std::unique_ptr<char[]> dst;
  try {
    // Left untouched here so each thread's first touch places its pages near it.
    src = std::make_unique_for_overwrite<char[]>(total);
    dst = std::make_unique_for_overwrite<char[]>(total);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("cannot allocate " + std::to_string(2 * total >> 20) +
                             " MiB for the copy measurement");
  }
  KF_ASSIGN_OR_RETURN(std::vector<double> seconds,
                      TimeRounds(threads, 1 + kCopyRounds, [&](int t, int round) {
                        char* s = src.get() + static_cast<size_t>(t) * slice;
                        char* d = dst.get() + static_cast<size_t>(t) * slice;
                        if (round == 0) {
                          std::memset(s, 1, slice);
                          std::memset(d, 0, slice);
                        } else {
                          std::memcpy(d, s, slice);
                        }
                      }));
  KF_ASSIGN_OR_RETURN(double best_s, BestTimedRound(seconds));
  return 2 * static_cast<double>(total) / best_s;  // every byte is read once and written once
}

// C = A * B, row-major kMatmulN x kMatmulN. A kTileRows x kTileCols tile of C stays in registers
// while k runs; the kTileCols-wide panel of B (48 KiB) stays in cache across all row tiles.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// One copy per SIMD width, chosen when the program loads: a tuned BLAS uses this CPU's widest
// vectors too, and the default x86-64 target stops at SSE2.
__attribute__((target_clones("avx512f", "arch=haswell", "default")))
#endif
void MultiplyBlocked(const float* a, const float* b, float* c) {
  for (int j0 = 0; j0 < kMatmulN; j0 += kTileCols) {
    for (int i0 = 0; i0 < kMatmulN; i0 += kTileRows) {
      float acc[kTileRows][kTileCols] = {};
      for (int k = 0; k < kMatmulN; ++k) {
        const float* b_row = b + k * kMatmulN + j0;
        for (int r = 0; r < kTileRows; ++r) {
          const float a_rk = a[(i0 + r) * kMatmulN + k];
          for (int col = 0; col < kTileCols; ++col) acc[r][col] += a_rk * b_row[col];
        }
      }
      for (int r = 0; r < kTileRows; ++r) {
        std::memcpy(c + (i0 + r) * kMatmulN + j0, acc[r], sizeof(acc[r]));
      }
    }
  }
}

Result<double> MeasureBlockedMatmulFlopsPerS(int threads) {
  constexpr size_t kElements = size_t{kMatmulN} * kMatmulN;
  // Per thread: A, B and C back to back.
  std::vector<std::unique_ptr<float[]>> matrices;
  try {
    for (int t = 0; t < threads; ++t) {
      matrices.push_back(std::make_unique_for_overwrite<float[]>(3 * kElements));
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("cannot allocate the matmul measurement's matrices");
  }
  KF_ASSIGN_OR_RETURN(std::vector<double> seconds,
                      TimeRounds(threads, 1 + kMatmulRounds, [&](int t, int round) {
                        float* a = matrices[t].get();
                        float* b = a + kElements;
                        if (round == 0) {
                          // Small values: no overflow and no denormals in the sums.
                          for (size_t i = 0; i < 2 * kElements; ++i) {
                            a[i] = static_cast<float>(i % 13) * 0.01f;
                          }
                        }
                        MultiplyBlocked(a, b, b + kElements);
                      }));
  // Reading C keeps the multiplications live and catches a kernel that produced garbage.
  for (const auto& m : matrices) {
    const float* c = m.get() + 2 * kElements;
    if (!std::isfinite(c[0]) || !std::isfinite(c[kElements - 1])) {
      return Internal("the calibration matmul produced a non-finite result");
    }
  }
  KF_ASSIGN_OR_RETURN(double best_s, BestTimedRound(seconds));
  const double flops_per_thread = 2.0 * kMatmulN * kMatmulN * kMatmulN;
  return flops_per_thread * threads / best_s;
}

// One product split the way the baseline executor and kernels split theirs: every thread
// multiplies the shared A by its own block of B's columns with a one-thread OpenBLAS sgemm.
Result<double> MeasureBlasMatmulFlopsPerS(int threads) {
  // Our threads split the work; OpenBLAS's own pool would only compete with them.
  openblas_set_num_threads(1);
  const size_t n = size_t{kBlasColumnsPerThread} * static_cast<size_t>(threads);
  std::unique_ptr<float[]> a;
  std::unique_ptr<float[]> b;
  std::unique_ptr<float[]> c;
  try {
    a = std::make_unique<float[]>(size_t{kBlasInner} * kBlasInner);
    b = std::make_unique<float[]>(size_t{kBlasInner} * n);
    c = std::make_unique<float[]>(size_t{kBlasInner} * n);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("cannot allocate the OpenBLAS matmul measurement's matrices");
  }
  // Small values: no overflow and no denormals in the sums.
  for (size_t i = 0; i < size_t{kBlasInner} * kBlasInner; ++i) {
    a[i] = static_cast<float>(i % 13) * 0.01f;
  }
  for (size_t i = 0; i < size_t{kBlasInner} * n; ++i) b[i] = static_cast<float>(i % 7) * 0.01f;
  const int ldb = static_cast<int>(n);
  KF_ASSIGN_OR_RETURN(std::vector<double> seconds,
                      TimeRounds(threads, 1 + kBlasRounds, [&](int t, int) {
                        const size_t first = size_t{kBlasColumnsPerThread} * static_cast<size_t>(t);
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kBlasInner,
                                    kBlasColumnsPerThread, kBlasInner, 1.0f, a.get(), kBlasInner,
                                    b.get() + first, ldb, 0.0f, c.get() + first, ldb);
                      }));
  if (!std::isfinite(c[0]) || !std::isfinite(c[size_t{kBlasInner} * n - 1])) {
    return Internal("the calibration matmul produced a non-finite result");
  }
  KF_ASSIGN_OR_RETURN(double best_s, BestTimedRound(seconds));
  return 2.0 * kBlasInner * kBlasInner * static_cast<double>(n) / best_s;
}

// The faster of the two: a tuned BLAS wins on most machines, a plain blocked loop where the
// BLAS build is generic or its threads contend; the floor is what this CPU can reach.
Result<double> MeasureMatmulFlopsPerS(int threads) {
  KF_ASSIGN_OR_RETURN(double blocked, MeasureBlockedMatmulFlopsPerS(threads));
  KF_ASSIGN_OR_RETURN(double blas, MeasureBlasMatmulFlopsPerS(threads));
  return std::max(blocked, blas);
}

std::string CacheYaml(const CpuCalibration& cal) {
  YAML::Emitter out;
  out << YAML::Comment("Written by kfleet calibrate cpu; delete it to measure again.");
  out << YAML::BeginMap;
  out << YAML::Key << "cpu_model" << YAML::Value << YAML::DoubleQuoted << cal.cpu_model;
  out << YAML::Key << "logical_cores" << YAML::Value << cal.logical_cores;
  out << YAML::Key << "copy_bytes_per_s" << YAML::Value << cal.copy_bytes_per_s;
  out << YAML::Key << "matmul_flops_per_s" << YAML::Value << cal.matmul_flops_per_s;
  out << YAML::Key << "measured_at" << YAML::Value << cal.measured_at;
  out << YAML::Key << "method" << YAML::Value << YAML::DoubleQuoted << std::string(kMethod);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Result<CpuCalibration> ReadCache(const std::string& path) {
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadFile(path));
  CpuCalibration cal;
  cal.cpu_model = reader.String("cpu_model", "");
  cal.logical_cores = static_cast<int>(reader.Int("logical_cores", 0, 1, 1 << 20));
  constexpr double kMax = std::numeric_limits<double>::max();
  cal.copy_bytes_per_s = reader.Double("copy_bytes_per_s", 0, 1, kMax);
  cal.matmul_flops_per_s = reader.Double("matmul_flops_per_s", 0, 1, kMax);
  cal.measured_at = reader.String("measured_at", "");
  cal.method = reader.String("method", "");
  KF_RETURN_IF_ERROR(reader.Finish());
  if (cal.cpu_model.empty() || cal.logical_cores == 0 || cal.copy_bytes_per_s == 0 ||
      cal.matmul_flops_per_s == 0 || cal.measured_at.empty()) {
    return Corruption(path +
                      ": a calibration needs cpu_model, logical_cores, copy_bytes_per_s, "
                      "matmul_flops_per_s and measured_at");
  }
  return cal;
}

Status WriteCache(const std::string& path, const CpuCalibration& cal) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) KF_RETURN_IF_ERROR(MakeDirs(parent));
  return WriteFileAtomic(path, CacheYaml(cal));
}

}  // namespace

Result<CpuCalibration> CalibrateCpu() {
  CpuCalibration cal;
  cal.cpu_model = CpuModel();
  cal.logical_cores = LogicalCores();
  KF_ASSIGN_OR_RETURN(cal.copy_bytes_per_s, MeasureCopyBytesPerS(cal.logical_cores));
  // The result is cached for good, so one burst of other work on the machine must not stick: the
  // matmul rate is the best of two passes a moment apart (a worker once cached half the real
  // rate). The copy is measured once: a second pass over just-touched buffers reads twice the
  // bandwidth the first one, and any kernel, sees.
  for (int pass = 0; pass < 2; ++pass) {
    if (pass > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    KF_ASSIGN_OR_RETURN(const double matmul, MeasureMatmulFlopsPerS(cal.logical_cores));
    cal.matmul_flops_per_s = std::max(cal.matmul_flops_per_s, matmul);
  }
  cal.measured_at = IsoUtc(SystemClock().NowUs());
  cal.method = std::string(kMethod);
  return cal;
}

std::string DefaultCalibrationCachePath() {
  // XDG: an empty or relative XDG_CACHE_HOME is to be ignored.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/kfleet/cpu-calibration.yaml";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') {
    return std::string(home) + "/.cache/kfleet/cpu-calibration.yaml";
  }
  return "/tmp/kfleet-" + std::to_string(::getuid()) + "-cpu-calibration.yaml";
}

Result<CpuCalibration> LoadOrCalibrateCpu(const std::string& cache_path, bool force) {
  std::string reason = "forced";
  if (!force) {
    Result<CpuCalibration> cached = ReadCache(cache_path);
    if (!cached.ok()) {
      std::error_code error;
      reason = std::filesystem::exists(cache_path, error) ? cached.status().message() : "no cache";
    } else if (cached->method != kMethod) {
      reason = "cache was measured by an older method";
    } else if (cached->cpu_model != CpuModel() || cached->logical_cores != LogicalCores()) {
      reason = "cache is for " + cached->cpu_model + " with " +
               std::to_string(cached->logical_cores) + " logical cores";
    } else {
      cached->from_cache = true;
      return cached;
    }
  }
  log::Info("cpu_calibration.measure").Kv("cache", cache_path).Kv("reason", reason);
  KF_ASSIGN_OR_RETURN(CpuCalibration cal, CalibrateCpu());
  const Status written = WriteCache(cache_path, cal);
  if (!written.ok()) {
    log::Warn("cpu_calibration.cache_not_written").Kv("cache", cache_path).Kv("error", written);
  }
  return cal;
}

DeviceModel CpuDeviceFromCalibration(const DeviceModel& generic_cpu, const CpuCalibration& cal) {
  DeviceModel d = generic_cpu;
  const double matmul = cal.matmul_flops_per_s;
  d.name = cal.cpu_model;
  d.memory_bytes_per_s = cal.copy_bytes_per_s;
  d.matrix_flops_per_s = {{DType::kF32, matmul},
                          {DType::kF16, matmul},
                          {DType::kBF16, matmul},
                          {DType::kF64, matmul / 2}};
  d.vector_flops_per_s = {{DType::kF32, matmul / 2}, {DType::kF64, matmul / 4}};
  d.compute_units = cal.logical_cores;
  d.source = "calibrated " + cal.measured_at.substr(0, 10) + " on " + cal.cpu_model;
  return d;
}

}  // namespace kfleet::planner
