#include "worker/kernel_tasks.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agents/search.h"
#include "common/files.h"
#include "common/temp_dir.h"
#include "eval/device.h"
#include "eval/launcher.h"
#include "eval/model_verify.h"
#include "eval/report.h"
#include "planner/cost_model.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"
#include "tests/test_binaries.h"
#include "worker/task_runner.h"

namespace kfleet::worker {
namespace {

std::string DataPath(const std::string& relative) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/" + relative;
}

std::string ReadData(const std::string& relative) {
  Result<std::string> text = ReadFile(DataPath(relative));
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.value_or("");
}

// ONNX bytes of an .onnxtxt file under tests/data.
std::string OnnxBytes(const std::string& relative) {
  Result<std::string> bytes = planner::OnnxTextToModelBytes(ReadData(relative));
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.value_or("");
}

capnp::Data::Reader AsData(const std::string& bytes) {
  return {reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()};
}

constexpr char kLayerNormSpec[] = "specs/layernorm_128x1024.onnxtxt";
constexpr char kModel[] = "models/worker_mlp_layernorm.onnxtxt";

// GPU tests skip, saying why, where device 0 cannot run CUDA kernels.
#define KF_REQUIRE_GPU()                                                             \
  do {                                                                               \
    const Status kf_gpu = eval::CheckDevice("cuda", 0);                              \
    if (!kf_gpu.ok()) GTEST_SKIP() << "no usable CUDA device: " << kf_gpu.message(); \
  } while (false)

// The harness binary, the kernel compile cache and the CPU calibration cache are the suite's own:
// set once (the calibration then runs once), restored afterwards.
class KernelTasks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<TempDir> dir = TempDir::Create("kfleet-kernel-tasks-suite");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    suite_dir_.emplace(std::move(*dir));
    Override("KFLEET_HARNESS", kfleet::testing::TestBinary("kfleet-harness", KFLEET_HARNESS_PATH));
    Override("KFLEET_CACHE_DIR", (suite_dir_->path() / "kernels").string());
    Override("XDG_CACHE_HOME", (suite_dir_->path() / "cache").string());
  }

  static void TearDownTestSuite() {
    for (const auto& [name, value] : saved_env_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    saved_env_.clear();
    suite_dir_.reset();
  }

  void SetUp() override {
    Result<TempDir> dir = TempDir::Create("kfleet-kernel-task");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    scratch_.emplace(std::move(*dir));
    context_.scratch_dir = scratch_->path();
  }

  Result<std::string> Run(std::string_view kind, std::string_view payload) {
    return RunKernelTask(kind, payload, context_);
  }

  std::string Plan(const std::string& spec, uint32_t count,
                   const std::vector<msg::Proposal::Reader>& history = {},
                   const std::string& backend = "") {
    capnp::MallocMessageBuilder builder;
    msg::PlanRequest::Builder request = builder.initRoot<msg::PlanRequest>();
    request.setSpecOnnx(AsData(spec));
    request.setBackend(backend);
    request.setCount(count);
    request.setSeed(7);
    auto tried = request.initHistory(static_cast<capnp::uint>(history.size()));
    for (size_t i = 0; i < history.size(); ++i) {
      msg::CandidateOutcome::Builder outcome = tried[static_cast<capnp::uint>(i)];
      outcome.setId(i + 1);
      outcome.setTemplate(history[i].getTemplate());
      outcome.setParams(history[i].getParams());
      outcome.setState("profiled");
      outcome.setSpeedup(1.0 + static_cast<double>(i));
    }
    return msg::EncodePayload(builder);
  }

  std::string Eval(const std::string& kernel_file, bool profile, const std::string& backend = "") {
    capnp::MallocMessageBuilder builder;
    msg::EvalRequest::Builder request =
        profile ? builder.initRoot<msg::ProfileRequest>().initCandidate()
                : builder.initRoot<msg::EvalRequest>();
    const std::string spec = OnnxBytes(kLayerNormSpec);
    request.setSpecOnnx(AsData(spec));
    request.setBackend(backend);
    request.setSource(ReadData("kernels/" + kernel_file));
    request.setCandidateId(3);
    request.setSeed(5);
    request.setProfile(profile);
    return msg::EncodePayload(builder);
  }

  // The EvalReply's report, after checking that its verdict matches the reply's.
  eval::EvalReport ReportOf(const Result<std::string>& output) {
    EXPECT_TRUE(output.ok()) << output.status().ToString();
    if (!output.ok()) return {};
    Result<msg::Payload<msg::EvalReply>> reply = msg::DecodePayload<msg::EvalReply>(*output);
    EXPECT_TRUE(reply.ok()) << reply.status().ToString();
    if (!reply.ok()) return {};
    Result<eval::EvalReport> report =
        eval::ReportFromJson(nlohmann::json::parse(reply->root().getReportJson().cStr()));
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    if (!report.ok()) return {};
    EXPECT_EQ(reply->root().getPassed(), report->passed);
    return *report;
  }

  KernelTaskContext context_;

 private:
  static void Override(const std::string& name, const std::string& value) {
    const char* old = std::getenv(name.c_str());
    saved_env_.emplace_back(name, old != nullptr ? std::optional<std::string>(old) : std::nullopt);
    ::setenv(name.c_str(), value.c_str(), 1);
  }

  static inline std::optional<TempDir> suite_dir_;
  static inline std::vector<std::pair<std::string, std::optional<std::string>>> saved_env_;
  std::optional<TempDir> scratch_;
};

std::string Describe(const eval::EvalReport& report) {
  return report.failed_stage + ": " + report.reason + "\n" + report.compile.log;
}

TEST_F(KernelTasks, MalformedPayloadsAreErrorsNotCrashes) {
  capnp::MallocMessageBuilder plan;
  plan.initRoot<msg::PlanRequest>().initHistory(2)[0].setTemplate("rownorm");
  const std::string plan_bytes = msg::EncodePayload(plan);
  const std::vector<std::string> payloads = {
      "",
      "garbage",
      std::string(16, '\xff'),
      plan_bytes.substr(0, plan_bytes.size() - 8),  // cut short
      plan_bytes + std::string(8, '\0'),            // bytes after the message
  };
  for (const char* kind : {"plan", "code", "test", "profile"}) {
    for (const std::string& payload : payloads) {
      const Result<std::string> output = Run(kind, payload);
      ASSERT_FALSE(output.ok()) << kind << " accepted " << payload.size() << " bytes";
      EXPECT_EQ(output.status().code(), ErrorCode::kCorruption) << output.status().ToString();
    }
  }
  // A PlanRequest read as a CodeRequest: its history list sits where `template` (Text) should be.
  const Result<std::string> code = Run("code", plan_bytes);
  ASSERT_FALSE(code.ok());
  EXPECT_EQ(code.status().code(), ErrorCode::kCorruption) << code.status().ToString();
  EXPECT_NE(code.status().message().find("CodeRequest"), std::string::npos)
      << code.status().ToString();

  // Well-formed, but nothing to work on.
  capnp::MallocMessageBuilder empty;
  empty.initRoot<msg::ProfileRequest>();
  const Result<std::string> profile = Run("profile", msg::EncodePayload(empty));
  ASSERT_FALSE(profile.ok());
  EXPECT_NE(profile.status().message().find("no kernel spec"), std::string::npos)
      << profile.status().ToString();
  EXPECT_FALSE(Run("train", plan_bytes).ok());
  EXPECT_FALSE(IsKernelTaskKind("echo"));
  EXPECT_TRUE(IsKernelTaskKind("profile"));
}

TEST_F(KernelTasks, PlanProposesDistinctCandidatesAndSkipsHistory) {
  const std::string spec = OnnxBytes(kLayerNormSpec);
  const Result<std::string> first = Run("plan", Plan(spec, 4));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  Result<msg::Payload<msg::PlanReply>> reply = msg::DecodePayload<msg::PlanReply>(*first);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  std::vector<msg::Proposal::Reader> proposals;
  std::set<std::string> keys;
  for (const msg::Proposal::Reader proposal : reply->root().getProposals()) {
    EXPECT_GT(proposal.getTemplate().size(), 0u);
    EXPECT_GT(proposal.getParams().size(), 0u) << proposal.getTemplate().cStr();
    Result<agents::Params> params = ReadParams(proposal.getParams());
    ASSERT_TRUE(params.ok()) << params.status().ToString();
    EXPECT_TRUE(keys.insert(agents::CandidateKey(proposal.getTemplate().cStr(), *params)).second)
        << "proposed twice: " << agents::CandidateKey(proposal.getTemplate().cStr(), *params);
    proposals.push_back(proposal);
  }
  ASSERT_FALSE(proposals.empty());
  EXPECT_LE(proposals.size(), 4u);

  // With those as history, the next round proposes none of them again.
  const Result<std::string> second = Run("plan", Plan(spec, 4, proposals));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  Result<msg::Payload<msg::PlanReply>> again = msg::DecodePayload<msg::PlanReply>(*second);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  for (const msg::Proposal::Reader proposal : again->root().getProposals()) {
    Result<agents::Params> params = ReadParams(proposal.getParams());
    ASSERT_TRUE(params.ok()) << params.status().ToString();
    EXPECT_EQ(keys.count(agents::CandidateKey(proposal.getTemplate().cStr(), *params)), 0u)
        << "proposed again: " << agents::CandidateKey(proposal.getTemplate().cStr(), *params);
  }
}

TEST_F(KernelTasks, PlanRejectsAnUnknownCandidateState) {
  capnp::MallocMessageBuilder builder;
  msg::PlanRequest::Builder request = builder.initRoot<msg::PlanRequest>();
  const std::string spec = OnnxBytes(kLayerNormSpec);
  request.setSpecOnnx(AsData(spec));
  request.setCount(2);
  request.initHistory(1)[0].setState("lost");
  const Result<std::string> output = Run("plan", msg::EncodePayload(builder));
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(output.status().message().find("'lost'"), std::string::npos)
      << output.status().ToString();
}

// Template names and parameters of a PlanReply, as text, for comparing two plans.
std::vector<std::string> ProposalKeys(const std::string& output) {
  Result<msg::Payload<msg::PlanReply>> reply = msg::DecodePayload<msg::PlanReply>(output);
  EXPECT_TRUE(reply.ok()) << reply.status().ToString();
  if (!reply.ok()) return {};
  std::vector<std::string> keys;
  for (const msg::Proposal::Reader proposal : reply->root().getProposals()) {
    Result<agents::Params> params = ReadParams(proposal.getParams());
    EXPECT_TRUE(params.ok()) << params.status().ToString();
    keys.push_back(agents::CandidateKey(proposal.getTemplate().cStr(), params.value_or({})));
  }
  return keys;
}

TEST_F(KernelTasks, PlanUsesTheRequestsBackendFamilies) {
  const std::string spec = OnnxBytes(kLayerNormSpec);
  // No backend (a coordinator that predates the field) plans for the CPU.
  const Result<std::string> unnamed = Run("plan", Plan(spec, 4, {}, ""));
  const Result<std::string> cpu = Run("plan", Plan(spec, 4, {}, "cpu"));
  ASSERT_TRUE(unnamed.ok()) << unnamed.status().ToString();
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_FALSE(ProposalKeys(*cpu).empty());
  EXPECT_EQ(ProposalKeys(*unnamed), ProposalKeys(*cpu));

  // CUDA proposes CUDA templates only; while none of them supports the spec, the plan fails
  // with every CUDA family's reason.
  const Result<std::string> cuda = Run("plan", Plan(spec, 4, {}, "cuda"));
  if (cuda.ok()) {
    for (const std::string& key : ProposalKeys(*cuda)) {
      EXPECT_TRUE(key.starts_with("cuda_")) << key;
    }
  } else {
    EXPECT_EQ(cuda.status().code(), ErrorCode::kFailedPrecondition) << cuda.status().ToString();
    EXPECT_NE(cuda.status().message().find("cuda_rownorm"), std::string::npos)
        << cuda.status().ToString();
    EXPECT_EQ(cuda.status().message().find("gemm_blas"), std::string::npos)
        << "a CPU family was asked: " << cuda.status().ToString();
  }

  const Result<std::string> bogus = Run("plan", Plan(spec, 4, {}, "bogus"));
  ASSERT_FALSE(bogus.ok());
  EXPECT_EQ(bogus.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bogus.status().message().find("'bogus'"), std::string::npos)
      << bogus.status().ToString();
}

// The first template that supports the spec and its default parameters.
struct TemplatePoint {
  std::string name;
  agents::Params params;
};

TemplatePoint DefaultPoint(const std::string& spec_bytes) {
  Result<planner::Graph> graph = planner::ImportOnnxBytes(spec_bytes, "spec", "", {});
  EXPECT_TRUE(graph.ok()) << graph.status().ToString();
  if (!graph.ok()) return {};
  Result<agents::SpecView> spec = agents::AnalyzeSpec(*graph);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  if (!spec.ok()) return {};
  for (const auto& family : agents::CpuTemplateFamilies()) {
    if (family->Supports(*spec).ok()) {
      return {std::string(family->name()), agents::DefaultParams(family->Space(*spec))};
    }
  }
  ADD_FAILURE() << "no template supports the spec";
  return {};
}

std::string CodeRequest(const std::string& spec, const std::string& name,
                        const agents::Params& params, const std::string& backend = "") {
  capnp::MallocMessageBuilder builder;
  msg::CodeRequest::Builder request = builder.initRoot<msg::CodeRequest>();
  request.setSpecOnnx(AsData(spec));
  request.setBackend(backend);
  request.setTemplate(name);
  WriteParams(params, request.initParams(static_cast<capnp::uint>(params.size())));
  return msg::EncodePayload(builder);
}

TEST_F(KernelTasks, CodeRendersTheNamedTemplate) {
  const std::string spec = OnnxBytes(kLayerNormSpec);
  const TemplatePoint point = DefaultPoint(spec);
  ASSERT_FALSE(point.name.empty());
  const Result<std::string> output = Run("code", CodeRequest(spec, point.name, point.params));
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  Result<msg::Payload<msg::CodeReply>> reply = msg::DecodePayload<msg::CodeReply>(*output);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_NE(std::string(reply->root().getSource().cStr()).find("kf_kernel_run"), std::string::npos);
  EXPECT_GT(reply->root().getExplanation().size(), 0u);

  const Result<std::string> unknown = Run("code", CodeRequest(spec, "no_such_template", {}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find(point.name), std::string::npos)
      << "the error lists the templates there are: " << unknown.status().ToString();

  agents::Params bad = point.params;
  bad.begin()->second = "not-a-value";
  EXPECT_FALSE(Run("code", CodeRequest(spec, point.name, bad)).ok());
}

TEST_F(KernelTasks, CodeLooksTheTemplateUpAmongTheBackendsFamilies) {
  const std::string spec = OnnxBytes(kLayerNormSpec);
  const TemplatePoint point = DefaultPoint(spec);
  ASSERT_FALSE(point.name.empty());
  EXPECT_TRUE(Run("code", CodeRequest(spec, point.name, point.params, "cpu")).ok());
  // A CPU template is no CUDA one: the error lists the CUDA families.
  const Result<std::string> cuda = Run("code", CodeRequest(spec, point.name, point.params, "cuda"));
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(cuda.status().message().find("cuda_rownorm"), std::string::npos)
      << cuda.status().ToString();
  const Result<std::string> bogus =
      Run("code", CodeRequest(spec, point.name, point.params, "bogus"));
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("'bogus'"), std::string::npos)
      << bogus.status().ToString();
}

// Runs `code` in a real `kfleet-worker run-task` child, as the worker daemon does.
TEST_F(KernelTasks, WorkerBinaryRunsAKernelTask) {
  Result<std::shared_ptr<WakeupFd>> wakeup = WakeupFd::Create();
  ASSERT_TRUE(wakeup.ok()) << wakeup.status().ToString();
  ProcessExecutorOptions options;
  options.program = kfleet::testing::TestBinary("kfleet-worker", KFLEET_WORKER_BINARY);
  ProcessTaskExecutor executor(options, *wakeup);
  ASSERT_TRUE(executor.Runs("code"));

  const std::string spec = OnnxBytes(kLayerNormSpec);
  const TemplatePoint point = DefaultPoint(spec);
  AssignedTask task;
  task.key = {11, 1};
  task.kind = "code";
  task.timeout_ms = 60'000;
  task.device = 1;  // passed as run-task --device; a code task has no use for it
  task.payload = CodeRequest(spec, point.name, point.params);
  ASSERT_TRUE(executor.Start(task).ok());
  std::vector<FinishedTask> finished;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (finished.empty() && std::chrono::steady_clock::now() < deadline) {
    pollfd fd{executor.wakeup().fd(), POLLIN, 0};
    ASSERT_GE(::poll(&fd, 1, 50), 0);
    executor.wakeup().Drain();
    finished = executor.TakeFinished();
  }
  ASSERT_EQ(finished.size(), 1u);
  ASSERT_EQ(finished[0].outcome, msg::Outcome::OK) << finished[0].error;
  Result<msg::Payload<msg::CodeReply>> reply =
      msg::DecodePayload<msg::CodeReply>(finished[0].output);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_NE(std::string(reply->root().getSource().cStr()).find("kf_kernel_run"), std::string::npos);
}

TEST_F(KernelTasks, TestPassesAGoodKernelAndFailsAPlantedBug) {
  eval::EvalReport good = ReportOf(Run("test", Eval("layernorm_good.cpp", false)));
  EXPECT_TRUE(good.passed) << Describe(good);
  EXPECT_TRUE(good.StageFor(eval::Stage::kShapeSweep).ran);
  EXPECT_FALSE(good.profile.has_value());

  // Right on rows of 1024, wrong on any other length: only the shape sweep can catch it.
  eval::EvalReport bug = ReportOf(Run("test", Eval("bug_wrong_non_pow2.cpp", false)));
  EXPECT_FALSE(bug.passed);
  EXPECT_EQ(bug.failed_stage, "shape_sweep") << Describe(bug);
}

TEST_F(KernelTasks, EvaluationRefusesAnUnknownBackend) {
  const Result<std::string> output = Run("test", Eval("layernorm_good.cpp", false, "bogus"));
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(output.status().message().find("backend 'bogus'"), std::string::npos)
      << output.status().ToString();
}

TEST_F(KernelTasks, CudaTestRunsTheKernelOnTheAssignedGpu) {
  KF_REQUIRE_GPU();
  context_.timeout_ms = 300'000;
  eval::EvalReport good = ReportOf(Run("test", Eval("cuda/layernorm_good.cu", false, "cuda")));
  EXPECT_TRUE(good.passed) << Describe(good);
  EXPECT_EQ(good.device.rfind("cuda:0 ", 0), 0u) << good.device;
  eval::EvalReport unwritten = ReportOf(Run("test", Eval("cuda/bug_unwritten.cu", false, "cuda")));
  EXPECT_FALSE(unwritten.passed);
}

TEST_F(KernelTasks, CandidateProfileTimesWithoutTheTestStages) {
  context_.timeout_ms = 120'000;
  eval::EvalReport report = ReportOf(Run("profile", Eval("layernorm_good.cpp", true)));
  ASSERT_TRUE(report.passed) << Describe(report);
  ASSERT_TRUE(report.profile.has_value());
  EXPECT_GT(report.profile->speedup, 0);
  EXPECT_GT(report.profile->candidate.median_us, 0);
  EXPECT_TRUE(report.StageFor(eval::Stage::kSmoke).ran);
  for (eval::Stage skipped :
       {eval::Stage::kShapeSweep, eval::Stage::kStability, eval::Stage::kDeterminism}) {
    EXPECT_FALSE(report.StageFor(skipped).ran) << eval::StageName(skipped);
  }
  EXPECT_EQ(report.device.rfind("cpu: ", 0), 0u) << report.device;
}

TEST_F(KernelTasks, ModelProfileTimesEveryNode) {
  const std::string model = OnnxBytes(kModel);
  capnp::MallocMessageBuilder builder;
  msg::ModelProfileRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initModel();
  request.setModel(AsData(model));
  request.setReps(3);
  request.setSeed(2);
  const Result<std::string> output = Run("profile", msg::EncodePayload(builder));
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  Result<msg::Payload<msg::ModelProfileReply>> reply =
      msg::DecodePayload<msg::ModelProfileReply>(*output);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();

  Result<planner::Graph> graph = planner::ImportOnnxBytes(model, "model", "", {});
  ASSERT_TRUE(graph.ok()) << graph.status().ToString();
  const auto nodes = reply->root().getNodes();
  ASSERT_EQ(nodes.size(), graph->nodes.size());
  for (size_t i = 0; i < graph->nodes.size(); ++i) {
    EXPECT_EQ(nodes[static_cast<capnp::uint>(i)].getName().cStr(), graph->nodes[i].name);
    if (!planner::NodeCost(*graph, static_cast<int>(i)).free) {
      EXPECT_GT(nodes[static_cast<capnp::uint>(i)].getUs(), 0) << graph->nodes[i].name;
    }
  }
  EXPECT_GT(reply->root().getTotalUs(), 0);
  EXPECT_GT(reply->root().getLogicalCores(), 0u);
  EXPECT_GT(reply->root().getCopyBytesPerS(), 0);
  EXPECT_GT(reply->root().getMatmulFlopsPerS(), 0);
  EXPECT_EQ(std::string(reply->root().getDevice().cStr()).rfind("cpu: ", 0), 0u);
}

// A fake `kfleet-harness --check-device`: records what it was asked and answers as told.
class FakeDeviceCheck final : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec, const std::atomic<bool>*) override {
    argv.push_back(spec.argv);
    ProcessResult result;
    result.exit_code = healthy ? 0 : 1;
    if (!healthy) result.stderr_bytes = "kfleet-harness: the device is unusable: Xid 79\n";
    return result;
  }
  bool healthy = true;
  std::vector<std::vector<std::string>> argv;
};

TEST_F(KernelTasks, AGpuThatLostItsContextIsCheckedInAFreshProcess) {
  eval::EvalReport report;
  report.reason = "the kernel raised a CUDA error: illegal address (the device context is lost)";
  FakeDeviceCheck check;
  EXPECT_TRUE(CheckGpuAfterEvaluation(report, 3, check).ok());
  ASSERT_EQ(check.argv.size(), 1u);
  EXPECT_EQ(check.argv[0], (std::vector<std::string>{eval::HarnessPath().string(), "--check-device",
                                                     "--backend", "cuda", "--device", "3"}));

  check.healthy = false;
  const Status broken = CheckGpuAfterEvaluation(report, 3, check);
  EXPECT_EQ(broken.code(), ErrorCode::kUnavailable) << broken.ToString();
  EXPECT_NE(broken.message().find("GPU 3 is unusable"), std::string::npos) << broken.ToString();
  EXPECT_NE(broken.message().find("Xid 79"), std::string::npos) << broken.ToString();

  // A kernel that failed without taking the context along leaves the GPU alone.
  report.reason = "smoke: output y[3] is 0, expected 1.5";
  EXPECT_TRUE(CheckGpuAfterEvaluation(report, 3, check).ok());
  EXPECT_EQ(check.argv.size(), 2u);

  // The real harness agrees with this process about device 0.
  report.reason = "the kernel raised a CUDA error: x (the device context is lost)";
  const Status real = CheckGpuAfterEvaluation(report, 0);
  EXPECT_EQ(real.ok(), eval::CheckDevice("cuda", 0).ok()) << real.ToString();
  if (!real.ok()) {
    EXPECT_EQ(real.code(), ErrorCode::kUnavailable) << real.ToString();
  }
}

std::string ModelProfileRequest(const std::string& model, const std::string& backend,
                                const std::string& dtype) {
  capnp::MallocMessageBuilder builder;
  msg::ModelProfileRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initModel();
  request.setModel(AsData(model));
  request.setReps(3);
  request.setSeed(2);
  request.setBackend(backend);
  request.setDtype(dtype);
  return msg::EncodePayload(builder);
}

TEST_F(KernelTasks, ModelProfileTakesTheRequestsDtypeAndRefusesBadFields) {
  const std::string model = OnnxBytes(kModel);
  const Result<std::string> half = Run("profile", ModelProfileRequest(model, "cpu", "fp16"));
  ASSERT_TRUE(half.ok()) << half.status().ToString();
  Result<msg::Payload<msg::ModelProfileReply>> reply =
      msg::DecodePayload<msg::ModelProfileReply>(*half);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_EQ(reply->root().getNodes().size(), 3u);
  EXPECT_GT(reply->root().getTotalUs(), 0);

  const Result<std::string> int_dtype = Run("profile", ModelProfileRequest(model, "cpu", "int8"));
  ASSERT_FALSE(int_dtype.ok());
  EXPECT_EQ(int_dtype.status().code(), ErrorCode::kInvalidArgument);
  const Result<std::string> bogus = Run("profile", ModelProfileRequest(model, "bogus", ""));
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("backend 'bogus'"), std::string::npos)
      << bogus.status().ToString();
}

TEST_F(KernelTasks, CudaModelProfileTimesEveryNodeOnTheGpu) {
  KF_REQUIRE_GPU();
  const std::string model = OnnxBytes(kModel);
  for (const char* dtype : {"", "fp16"}) {
    SCOPED_TRACE(std::string("dtype '") + dtype + "'");
    const Result<std::string> output = Run("profile", ModelProfileRequest(model, "cuda", dtype));
    ASSERT_TRUE(output.ok()) << output.status().ToString();
    Result<msg::Payload<msg::ModelProfileReply>> reply =
        msg::DecodePayload<msg::ModelProfileReply>(*output);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    const auto nodes = reply->root().getNodes();
    ASSERT_EQ(nodes.size(), 3u);  // MatMul, Relu, LayerNormalization: every one a kernel
    for (const msg::NodeTime::Reader node : nodes) {
      EXPECT_GT(node.getUs(), 0) << node.getName().cStr();
    }
    EXPECT_GT(reply->root().getTotalUs(), 0);
    EXPECT_EQ(std::string(reply->root().getDevice().cStr()).rfind("cuda:0 ", 0), 0u)
        << reply->root().getDevice().cStr();
    // The CPU's calibration is no business of a GPU profile.
    EXPECT_EQ(reply->root().getLogicalCores(), 0u);
    EXPECT_EQ(reply->root().getCopyBytesPerS(), 0);
    EXPECT_EQ(reply->root().getMatmulFlopsPerS(), 0);
  }
}

TEST_F(KernelTasks, CudaVerifyWithoutKernelsIsTheBaseline) {
  KF_REQUIRE_GPU();
  capnp::MallocMessageBuilder builder;
  msg::VerifyRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initVerify();
  const std::string model = OnnxBytes(kModel);
  request.setModel(AsData(model));
  request.setReps(3);
  request.setSeed(4);
  request.setBackend("cuda");
  const Result<std::string> output = Run("profile", msg::EncodePayload(builder));
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  Result<msg::Payload<msg::VerifyReply>> reply = msg::DecodePayload<msg::VerifyReply>(*output);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  Result<eval::ModelVerifyReport> report =
      eval::ModelVerifyReportFromJson(reply->root().getReportJson().cStr());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->outputs_match);
  EXPECT_TRUE(report->kernels.empty());
  EXPECT_GT(report->baseline_ms, 0);
  EXPECT_EQ(report->swapped_ms, report->baseline_ms);
  EXPECT_EQ(report->speedup, 1);
  EXPECT_EQ(reply->root().getLibrary().size(), 0u);
}

TEST_F(KernelTasks, VerifySwapsAKernelIntoTheModel) {
  const std::string model = OnnxBytes(kModel);
  Result<planner::Graph> graph = planner::ImportOnnxBytes(model, "model", "", {});
  ASSERT_TRUE(graph.ok()) << graph.status().ToString();
  Result<planner::DeviceModel> cpu = planner::DeviceCatalog::Builtin().Find("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  Result<planner::PlannedModel> planned = planner::PlanGraph(std::move(*graph), *cpu, {});
  ASSERT_TRUE(planned.ok()) << planned.status().ToString();
  std::string layernorm_hash;
  for (const planner::KernelJobPlan& job : planned->plan.jobs) {
    if (job.spec.family == "layernorm") layernorm_hash = job.spec.hash;
  }
  ASSERT_FALSE(layernorm_hash.empty()) << "the model has no layernorm group";

  capnp::MallocMessageBuilder builder;
  msg::VerifyRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initVerify();
  request.setModel(AsData(model));
  request.setReps(3);
  request.setSeed(4);
  msg::VerifyKernel::Builder kernel = request.initKernels(1)[0];
  kernel.setSpecHash(layernorm_hash);
  kernel.setName("layernorm 128x1024 f32");
  kernel.setSource(ReadData("kernels/layernorm_good.cpp"));
  kernel.setSymbol("kf_k1_run");
  const Result<std::string> output = Run("profile", msg::EncodePayload(builder));
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  Result<msg::Payload<msg::VerifyReply>> reply = msg::DecodePayload<msg::VerifyReply>(*output);
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  Result<eval::ModelVerifyReport> report =
      eval::ModelVerifyReportFromJson(reply->root().getReportJson().cStr());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->kernels.size(), 1u);
  EXPECT_TRUE(report->kernels[0].kept) << report->kernels[0].reason;
  EXPECT_EQ(report->kernels[0].occurrences, 1);
  EXPECT_TRUE(report->outputs_match);
  EXPECT_GT(reply->root().getLibrary().size(), 0u);
  EXPECT_NE(std::string(reply->root().getHeader().cStr()).find("kf_k1_run"), std::string::npos);
}

}  // namespace
}  // namespace kfleet::worker
