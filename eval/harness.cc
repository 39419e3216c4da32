#include "eval/harness.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <random>

#include "eval/device.h"
#include "eval/spec_variants.h"
#include "runtime/baseline.h"
#include "runtime/feeds.h"
#include "runtime/reference.h"

namespace kfleet::eval {
namespace {

using runtime::Distribution;
using runtime::Tensor;
using runtime::TensorMap;
using Clock = std::chrono::steady_clock;

constexpr Distribution kDistributions[] = {Distribution::kNormal, Distribution::kUniform,
                                           Distribution::kBimodal};

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string DescribeInputs(const planner::Graph& graph) {
  std::vector<std::string> parts;
  for (int v : graph.inputs) {
    const planner::Value& value = graph.values[v];
    parts.push_back(fmt::format("{} {}{}", value.name, planner::DTypeName(value.dtype),
                                planner::ShapeToString(value.shape)));
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}

// First element where two same-shaped tensors differ bitwise, or -1.
int64_t FirstDifference(const Tensor& a, const Tensor& b) {
  const auto width = static_cast<size_t>(planner::DTypeBytes(a.dtype()));
  const auto* pa = static_cast<const unsigned char*>(a.data());
  const auto* pb = static_cast<const unsigned char*>(b.data());
  for (int64_t i = 0; i < a.elements(); ++i) {
    if (std::memcmp(pa + i * width, pb + i * width, width) != 0) return i;
  }
  return -1;
}

int64_t CountDifferences(const Tensor& a, const Tensor& b) {
  const auto width = static_cast<size_t>(planner::DTypeBytes(a.dtype()));
  const auto* pa = static_cast<const unsigned char*>(a.data());
  const auto* pb = static_cast<const unsigned char*>(b.data());
  int64_t n = 0;
  for (int64_t i = 0; i < a.elements(); ++i) {
    n += std::memcmp(pa + i * width, pb + i * width, width) != 0 ? 1 : 0;
  }
  return n;
}

double Median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Trial {
  TrialResult result;
  std::vector<Tensor> outputs;
};

class Evaluator {
 public:
  Evaluator(std::string_view spec_onnx, const planner::Graph& spec, const KernelLibrary& kernel,
            EvalDevice& device, const HarnessOptions& options, CallObserver* observer)
      : spec_onnx_(spec_onnx),
        spec_(spec),
        kernel_(kernel),
        device_(device),
        options_(options),
        observer_(observer),
        report_(EmptyReport()) {}

  EvalReport Run() {
    report_.seed = options_.seed;
    for (int v : spec_.outputs) {
      const planner::DType dtype = spec_.values[v].dtype;
      const std::string name(planner::DTypeName(dtype));
      bool listed = false;
      for (const ToleranceInfo& t : report_.tolerances) listed |= t.dtype == name;
      if (listed) continue;
      const Tolerance t = options_.tolerances.For(dtype);
      report_.tolerances.push_back(
          {name, t.rtol, t.min_matched_ratio, t.rtol * options_.tolerances.stability_factor});
    }
    for (Stage done : {Stage::kCompile, Stage::kLoad}) {
      report_.StageFor(done).ran = true;
      report_.StageFor(done).passed = true;
    }
    bool tested = RunStage(Stage::kSmoke, [this] { return Smoke(); });
    if (options_.tests) {
      tested = tested && RunStage(Stage::kShapeSweep, [this] { return Sweep(); }) &&
               RunStage(Stage::kStability, [this] { return Stability(); }) &&
               RunStage(Stage::kDeterminism, [this] { return Determinism(); });
    } else {
      MarkTestStagesSkipped(report_);
    }
    if (tested && options_.profile) RunStage(Stage::kProfile, [this] { return Profile(); });
    Finish();
    return std::move(report_);
  }

 private:
  bool Requested(Stage stage) const {
    switch (stage) {
      case Stage::kShapeSweep:
      case Stage::kStability:
      case Stage::kDeterminism:
        return options_.tests;
      case Stage::kProfile:
        return options_.profile;
      default:
        return true;
    }
  }

  // EvalReport::Finish over the stages asked for: one left out on purpose is not a failure.
  void Finish() {
    report_.passed = report_.failed_stage.empty();
    for (const StageResult& s : report_.stages) {
      if (!Requested(s.stage) || (s.ran && s.passed)) continue;
      if (report_.passed) {
        report_.failed_stage = std::string(StageName(s.stage));
        report_.reason = s.ran ? s.message : "the stage did not run";
      }
      report_.passed = false;
    }
  }

  bool RunStage(Stage stage, const std::function<bool()>& body) {
    StageResult& s = report_.StageFor(stage);
    const Clock::time_point start = Clock::now();
    s.ran = true;
    const bool ok = body();
    StageResult& after = report_.StageFor(stage);
    after.seconds = SecondsSince(start);
    after.passed = ok;
    return ok;
  }

  Result<TensorMap> Feeds(const planner::Graph& graph, uint64_t seed, Distribution distribution,
                          double scale) {
    runtime::FeedOptions feed;
    feed.seed = seed;
    feed.distribution = distribution;
    feed.scale = scale;
    feed.include_weights = false;
    return runtime::MakeRandomFeeds(graph, feed);
  }

  // Every floating element multiplied by large_scale, 1 or small_scale at random: magnitudes
  // that differ by a million within one tensor.
  void MixScales(const planner::Graph& graph, TensorMap& feeds, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const double factors[] = {options_.small_scale, 1.0, options_.large_scale};
    for (int v : graph.inputs) {
      Tensor& t = feeds.at(v);
      if (!planner::IsFloat(t.dtype())) continue;
      for (int64_t i = 0; i < t.elements(); ++i) {
        t.SetDouble(i, t.GetDouble(i) * factors[rng() % 3]);
      }
    }
  }

  Trial RunTrial(Stage stage, const planner::Graph& graph, const TensorMap& feeds,
                 const std::string& label, double tolerance_factor) {
    Trial trial;
    trial.result.label = label;
    trial.result.shapes = DescribeInputs(graph);
    auto fail = [&](std::string message) {
      trial.result.passed = false;
      trial.result.message = std::move(message);
      return std::move(trial);
    };
    Result<TensorMap> reference = runtime::RunReference(graph, feeds);
    if (!reference.ok()) {
      return fail("the float64 reference could not run: " + reference.status().message());
    }
    // The kernel gets copies; `feeds` stays as it was, to catch a kernel writing its inputs.
    std::vector<Tensor> inputs;
    for (int v : graph.inputs) inputs.push_back(feeds.at(v));
    for (int v : graph.outputs) {
      trial.outputs.emplace_back(graph.values[v].dtype, graph.values[v].shape);
      Poison(trial.outputs.back());
    }
    if (observer_ != nullptr) observer_->BeginCall(stage, label);
    bool fatal = false;
    const Result<int> called = device_.Call(kernel_, inputs, trial.outputs, &fatal);
    if (observer_ != nullptr) observer_->EndCall();
    if (!called.ok()) return fail(called.status().message());
    const int status = *called;
    if (status != 0) return fail("kf_kernel_run returned " + KernelStatusName(status));
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& before = feeds.at(graph.inputs[i]);
      const int64_t at = FirstDifference(before, inputs[i]);
      if (at >= 0) {
        const std::string& name = graph.values[graph.inputs[i]].name;
        return fail(fmt::format(
            "the kernel wrote into its input: {} changed from {:.8g} to {:.8g} ({} elements "
            "changed); inputs are read-only",
            ElementName(name, inputs[i].shape(), at), before.GetDouble(at), inputs[i].GetDouble(at),
            CountDifferences(before, inputs[i])));
      }
    }
    trial.result.passed = true;
    for (size_t i = 0; i < trial.outputs.size(); ++i) {
      const int v = graph.outputs[i];
      Tolerance tolerance = options_.tolerances.For(graph.values[v].dtype);
      tolerance.rtol *= tolerance_factor;
      const CompareResult c =
          CompareOutput(graph.values[v].name, trial.outputs[i], reference->at(v), tolerance);
      trial.result.max_abs_error = std::max(trial.result.max_abs_error, c.max_abs_error);
      trial.result.max_rel_error = std::max(trial.result.max_rel_error, c.max_rel_error);
      trial.result.matched_ratio = std::min(trial.result.matched_ratio, c.matched_ratio);
      if (!c.passed && trial.result.passed) {
        trial.result.passed = false;
        trial.result.message = c.message;
      }
    }
    return trial;
  }

  // Records the trial; on failure fails the stage with the trial's message and where it came
  // from.
  bool Record(Stage stage, Trial& trial) {
    report_.StageFor(stage).trials.push_back(trial.result);
    if (trial.result.passed) return true;
    report_.Fail(stage, fmt::format("{} [trial: {}; inputs {}]", trial.result.message,
                                    trial.result.label, trial.result.shapes));
    return false;
  }

  bool FeedsOrFail(Stage stage, const Result<TensorMap>& feeds) {
    if (feeds.ok()) return true;
    report_.Fail(stage, "could not make inputs: " + feeds.status().message());
    return false;
  }

  uint64_t NextSeed() { return options_.seed * 1000 + next_seed_++; }

  bool Smoke() {
    std::vector<Tensor> previous;
    for (int i = 0; i < options_.smoke_trials; ++i) {
      const uint64_t seed = NextSeed();
      const Distribution d = kDistributions[i % std::size(kDistributions)];
      Result<TensorMap> feeds = Feeds(spec_, seed, d, 1.0);
      if (!FeedsOrFail(Stage::kSmoke, feeds)) return false;
      Trial trial = RunTrial(Stage::kSmoke, spec_, *feeds,
                             fmt::format("seed {}, {}", seed, DistributionName(d)), 1.0);
      if (!trial.result.passed && !previous.empty()) {
        bool same = previous.size() == trial.outputs.size();
        for (size_t o = 0; same && o < previous.size(); ++o) {
          same = runtime::BitwiseEqual(previous[o], trial.outputs[o]);
        }
        if (same) {
          trial.result.message +=
              "; the output is bit-for-bit the previous trial's although the inputs differ: "
              "results kept across calls?";
        }
      }
      if (!Record(Stage::kSmoke, trial)) return false;
      previous = std::move(trial.outputs);
    }
    return true;
  }

  bool Sweep() {
    Result<std::vector<ShapeVariant>> variants =
        MakeShapeVariants(spec_onnx_, spec_, options_.max_sweep_shapes);
    if (!variants.ok()) {
      report_.StageFor(Stage::kShapeSweep).message =
          "no shape variants: " + variants.status().message();
      return true;
    }
    variants_ = std::move(*variants);
    if (variants_.empty()) {
      report_.StageFor(Stage::kShapeSweep).message =
          "no size of this spec can change (fixed shapes in its ops); only the profiled shape "
          "was tested";
      return true;
    }
    for (size_t i = 0; i < variants_.size(); ++i) {
      const uint64_t seed = NextSeed();
      const Distribution d = kDistributions[i % std::size(kDistributions)];
      Result<TensorMap> feeds = Feeds(variants_[i].graph, seed, d, 1.0);
      if (!FeedsOrFail(Stage::kShapeSweep, feeds)) return false;
      Trial trial = RunTrial(
          Stage::kShapeSweep, variants_[i].graph, *feeds,
          fmt::format("{}, seed {}, {}", variants_[i].label, seed, DistributionName(d)), 1.0);
      if (!Record(Stage::kShapeSweep, trial)) return false;
    }
    return true;
  }

  bool Stability() {
    const double factor = options_.tolerances.stability_factor;
    struct Case {
      std::string name;
      double scale;
      bool mixed;
    };
    const Case cases[] = {
        {fmt::format("large (x{:g})", options_.large_scale), options_.large_scale, false},
        {fmt::format("small (x{:g})", options_.small_scale), options_.small_scale, false},
        {fmt::format("mixed (x{:g}, x1, x{:g} per element)", options_.small_scale,
                     options_.large_scale),
         1.0, true}};
    for (const Case& c : cases) {
      const uint64_t seed = NextSeed();
      Result<TensorMap> feeds = Feeds(spec_, seed, Distribution::kNormal, c.scale);
      if (!FeedsOrFail(Stage::kStability, feeds)) return false;
      if (c.mixed) MixScales(spec_, *feeds, seed);
      Trial trial = RunTrial(Stage::kStability, spec_, *feeds,
                             fmt::format("{}, seed {}", c.name, seed), factor);
      if (!Record(Stage::kStability, trial)) return false;
    }
    return true;
  }

  bool Determinism() {
    const uint64_t seed = NextSeed();
    Result<TensorMap> feeds = Feeds(spec_, seed, Distribution::kNormal, 1.0);
    if (!FeedsOrFail(Stage::kDeterminism, feeds)) return false;
    Trial first =
        RunTrial(Stage::kDeterminism, spec_, *feeds, fmt::format("run 1, seed {}", seed), 1.0);
    if (!Record(Stage::kDeterminism, first)) return false;
    for (int run = 2; run <= 3; ++run) {
      Trial again = RunTrial(Stage::kDeterminism, spec_, *feeds,
                             fmt::format("run {}, seed {}", run, seed), 1.0);
      if (again.result.passed) {
        for (size_t o = 0; o < first.outputs.size(); ++o) {
          const int64_t at = FirstDifference(first.outputs[o], again.outputs[o]);
          if (at < 0) continue;
          const std::string& name = spec_.values[spec_.outputs[o]].name;
          again.result.passed = false;
          again.result.message = fmt::format(
              "run {} differs from run 1 on the same inputs in {} elements of {} (first {}: "
              "{:.9g} vs {:.9g}); results must be bitwise reproducible (fixed reduction order)",
              run, CountDifferences(first.outputs[o], again.outputs[o]), name,
              ElementName(name, first.outputs[o].shape(), at), again.outputs[o].GetDouble(at),
              first.outputs[o].GetDouble(at));
          break;
        }
      }
      if (!Record(Stage::kDeterminism, again)) return false;
    }
    return true;
  }

  // One thing being timed and its samples.
  struct Timed {
    TimedSubject* subject = nullptr;
    std::vector<double> samples_us;
    int status = 0;
    Status error = Status::Ok();
  };

  static TimingStats Stats(std::vector<double> samples) {
    std::sort(samples.begin(), samples.end());
    TimingStats stats;
    stats.reps = static_cast<int>(samples.size());
    stats.median_us = samples[samples.size() / 2];
    stats.min_us = samples.front();
    stats.max_us = samples.back();
    stats.p90_us = samples[std::min(samples.size() - 1, samples.size() * 9 / 10)];
    return stats;
  }

  // One timed call of subject `i` (the candidate is watched by the observer); false when it
  // failed, with its status or error kept.
  bool TimeOne(Timed& t, bool candidate) {
    if (candidate && observer_ != nullptr) observer_->BeginCall(Stage::kProfile, "timed call");
    Result<double> us = t.subject->TimeOnce(&t.status);
    if (candidate && observer_ != nullptr) observer_->EndCall();
    if (!us.ok()) {
      t.error = us.status();
      return false;
    }
    if (t.status != 0) return false;
    t.samples_us.push_back(*us);
    return true;
  }

  // Times the subjects in alternation (A, B, A, B, ...), each call after a cache flush, so that
  // whatever else the machine does affects them alike. Stops when every median moved less than
  // 0.5% over the last min_reps repetitions, at max_reps, or when the budget (per subject) is
  // spent. Returns the index of a subject whose call failed, or -1.
  int TimeInterleaved(std::vector<Timed*> subjects) {
    for (size_t i = 0; i < subjects.size(); ++i) {
      for (int warm = 0; warm < 2; ++warm) {
        if (!TimeOne(*subjects[i], i == 0)) return static_cast<int>(i);
      }
      subjects[i]->samples_us.clear();
    }
    const Clock::time_point start = Clock::now();
    const double budget_s = options_.profile_budget_s * static_cast<double>(subjects.size());
    std::vector<double> previous(subjects.size(), 0.0);
    for (int n = 1;; ++n) {
      for (size_t i = 0; i < subjects.size(); ++i) {
        if (!TimeOne(*subjects[i], i == 0)) return static_cast<int>(i);
      }
      if (n >= options_.max_reps) break;
      if (n < options_.min_reps) continue;
      if (SecondsSince(start) >= budget_s) break;
      if (n % options_.min_reps != 0) continue;
      bool stable = true;
      for (size_t i = 0; i < subjects.size(); ++i) {
        const double median = Median(subjects[i]->samples_us);
        stable = stable && previous[i] > 0 && std::fabs(median - previous[i]) <= 0.005 * median;
        previous[i] = median;
      }
      if (stable) break;
    }
    return -1;
  }

  bool Profile() {
    ProfileResult& p = report_.profile.emplace();
    p.sol_us = options_.sol_us;
    p.flush_bytes = device_.flush_bytes();
    // On a GPU the inputs rotate over several sets, so no call finds the previous call's data
    // in a cache the flush missed; host memory keeps one set (a model's weights can be large).
    const int sets = device_.backend() == "cpu" ? 1 : 3;
    std::vector<TensorMap> feed_sets;
    std::vector<std::vector<Tensor>> input_sets;
    for (int s = 0; s < sets; ++s) {
      Result<TensorMap> feeds = Feeds(spec_, NextSeed(), Distribution::kNormal, 1.0);
      if (!FeedsOrFail(Stage::kProfile, feeds)) return false;
      std::vector<Tensor>& inputs = input_sets.emplace_back();
      for (int v : spec_.inputs) inputs.push_back(feeds->at(v));
      feed_sets.push_back(std::move(*feeds));
    }
    std::vector<Tensor> outputs;
    for (int v : spec_.outputs) outputs.emplace_back(spec_.values[v].dtype, spec_.values[v].shape);
    Result<std::unique_ptr<TimedSubject>> candidate_subject =
        device_.TimedKernel(kernel_, input_sets, outputs);
    if (!candidate_subject.ok()) {
      report_.Fail(Stage::kProfile, "could not prepare the candidate for timing: " +
                                        candidate_subject.status().message());
      return false;
    }
    Result<std::unique_ptr<TimedSubject>> baseline_subject =
        device_.TimedBaseline(spec_, feed_sets);
    if (!baseline_subject.ok()) {
      report_.Fail(Stage::kProfile, "the baseline executor cannot run this spec: " +
                                        baseline_subject.status().message());
      return false;
    }
    Timed candidate;
    candidate.subject = candidate_subject->get();
    Timed base;
    base.subject = baseline_subject->get();
    const int failed = TimeInterleaved({&candidate, &base});
    if (failed == 0) {
      report_.Fail(Stage::kProfile, candidate.error.ok()
                                        ? "kf_kernel_run returned " +
                                              KernelStatusName(candidate.status) +
                                              " while being timed"
                                        : candidate.error.message() + " while being timed");
      return false;
    }
    if (failed == 1) {
      report_.Fail(Stage::kProfile, "the baseline executor failed: " + base.error.message());
      return false;
    }
    p.candidate = Stats(candidate.samples_us);
    p.baseline = Stats(base.samples_us);
    TensorMap baseline_out;
    size_t set = 0;
    const Status fetched = base.subject->LastOutputs(&baseline_out, &set);
    p.baseline_check = fetched.ok() ? CheckBaseline(feed_sets.at(set), baseline_out)
                                    : "could not read the baseline's outputs: " + fetched.message();
    p.speedup = p.baseline.median_us / std::max(p.candidate.median_us, 1e-3);
    if (p.sol_us > 0) p.sol_fraction = p.sol_us / std::max(p.candidate.median_us, 1e-3);

    std::vector<std::string> suspicious;
    if (p.speedup > options_.suspicious_speedup) {
      suspicious.push_back(
          fmt::format("speedup {:.1f}x is above {:g}x", p.speedup, options_.suspicious_speedup));
    }
    if (p.sol_us > 0 && p.candidate.median_us < p.sol_us) {
      suspicious.push_back(fmt::format("{:.2f} us is under the speed-of-light floor {:.2f} us",
                                       p.candidate.median_us, p.sol_us));
    }
    if (suspicious.empty()) return true;
    p.flagged = true;
    return Recheck(fmt::format("{}", fmt::join(suspicious, "; ")));
  }

  std::string CheckBaseline(const TensorMap& feeds, const TensorMap& baseline_out) {
    Result<TensorMap> reference = runtime::RunReference(spec_, feeds);
    if (!reference.ok()) return "reference failed: " + reference.status().message();
    for (int v : spec_.outputs) {
      auto it = baseline_out.find(v);
      if (it == baseline_out.end()) return "the baseline produced no " + spec_.values[v].name;
      const CompareResult c = CompareOutput(spec_.values[v].name, it->second, reference->at(v),
                                            options_.tolerances.For(spec_.values[v].dtype));
      if (!c.passed) return c.message;
    }
    return "ok";
  }

  // A result too good to be true counts only after fresh inputs and a changed shape pass again.
  bool Recheck(const std::string& why) {
    ProfileResult& p = *report_.profile;
    std::vector<std::string> checked;
    const uint64_t seed = NextSeed();
    Result<TensorMap> feeds = Feeds(spec_, seed, Distribution::kUniform, 1.0);
    if (!FeedsOrFail(Stage::kProfile, feeds)) return false;
    Trial fresh = RunTrial(Stage::kProfile, spec_, *feeds,
                           fmt::format("recheck, fresh inputs, seed {}", seed), 1.0);
    if (!Record(Stage::kProfile, fresh)) {
      p.note = why + "; the recheck failed";
      return false;
    }
    checked.push_back(fmt::format("fresh inputs (seed {})", seed));
    if (variants_.empty() && !options_.tests) {
      // The shape sweep did not run here, so the changed shape is made now.
      Result<std::vector<ShapeVariant>> variants =
          MakeShapeVariants(spec_onnx_, spec_, options_.max_sweep_shapes);
      if (variants.ok()) variants_ = std::move(*variants);
    }
    if (!variants_.empty()) {
      const ShapeVariant& variant = variants_.back();
      const uint64_t vseed = NextSeed();
      Result<TensorMap> vfeeds = Feeds(variant.graph, vseed, Distribution::kBimodal, 1.0);
      if (!FeedsOrFail(Stage::kProfile, vfeeds)) return false;
      Trial changed = RunTrial(Stage::kProfile, variant.graph, *vfeeds,
                               fmt::format("recheck, {}, seed {}", variant.label, vseed), 1.0);
      if (!Record(Stage::kProfile, changed)) {
        p.note = why + "; the recheck failed";
        return false;
      }
      checked.push_back("shape " + variant.label);
    }
    p.note = fmt::format("{}; rechecked with {}: correct, so it counts", why,
                         fmt::join(checked, " and "));
    return true;
  }

  std::string_view spec_onnx_;
  const planner::Graph& spec_;
  const KernelLibrary& kernel_;
  EvalDevice& device_;
  const HarnessOptions& options_;
  CallObserver* observer_;
  EvalReport report_;
  std::vector<ShapeVariant> variants_;
  uint64_t next_seed_ = 1;
};

int64_t ReadCacheSize(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty()) return 0;
  int64_t multiplier = 1;
  if (text.back() == 'K') multiplier = 1024;
  if (text.back() == 'M') multiplier = 1024 * 1024;
  if (multiplier != 1) text.pop_back();
  try {
    return std::stoll(text) * multiplier;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

void MarkTestStagesSkipped(EvalReport& report) {
  for (Stage stage : {Stage::kShapeSweep, Stage::kStability, Stage::kDeterminism}) {
    StageResult& s = report.StageFor(stage);
    s.ran = false;
    s.passed = false;
    s.trials.clear();
    s.message = "skipped: profiling only (the candidate's test task runs this stage)";
  }
}

int64_t DefaultFlushBytes() {
  int64_t largest = 0;
  for (int index = 0; index < 8; ++index) {
    largest = std::max(largest, ReadCacheSize(fmt::format(
                                    "/sys/devices/system/cpu/cpu0/cache/index{}/size", index)));
  }
  return std::max<int64_t>(2 * largest, int64_t{32} << 20);
}

EvalReport EvaluateKernel(std::string_view spec_onnx, const planner::Graph& spec,
                          const KernelLibrary& kernel, const HarnessOptions& options,
                          CallObserver* observer) {
  Result<std::unique_ptr<EvalDevice>> device =
      MakeEvalDevice(options.backend, options.device, options.flush_bytes);
  if (!device.ok()) {
    EvalReport report = EmptyReport();
    report.seed = options.seed;
    report.StageFor(Stage::kCompile).ran = true;
    report.StageFor(Stage::kCompile).passed = true;
    report.Fail(Stage::kLoad, "the device cannot be used: " + device.status().message());
    report.passed = false;
    return report;
  }
  EvalReport report = Evaluator(spec_onnx, spec, kernel, **device, options, observer).Run();
  report.device = (*device)->Describe();
  return report;
}

}  // namespace kfleet::eval
