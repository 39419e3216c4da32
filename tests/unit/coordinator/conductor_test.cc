// The conductor against a real store and a fake clock: workers are played by the test, which
// leases each task and completes it with a hand-made output.
#include "coordinator/conductor.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "agents/llm_config.h"
#include "agents/search.h"
#include "common/files.h"
#include "messages/kernel.capnp.h"
#include "messages/payload.h"
#include "planner/onnx_import.h"
#include "tests/unit/storage/test_util.h"

namespace kfleet::coordinator {
namespace {

using storage::TaskKind;
using storage::TaskRow;
using storage::TaskState;

std::string ModelBytes() {
  const std::string path =
      std::string(std::getenv("KFLEET_TEST_DATA")) + "/models/mlp_block.onnxtxt";
  Result<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  Result<std::string> bytes = planner::OnnxTextToModelBytes(*text);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return *bytes;
}

class ConductorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = storage::Store::Open(dir_.path() / "state", {}, clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    scheduler_ = std::make_unique<Scheduler>(*store_, clock_, outbox_,
                                             SchedulerOptions{100, 5, 500, 1000, 60'000, 512});
    conductor_ = std::make_unique<Conductor>(*store_, *scheduler_, clock_, ConductorOptions{});
    scheduler_->SetTaskEndObserver(conductor_.get());
    storage::NodeRegistration node;
    node.name = "w1";
    auto id = store_->nodes().Upsert(node);
    ASSERT_TRUE(id.ok());
    node_id_ = *id;
  }

  // Open tasks of `kind`, oldest first.
  std::vector<TaskRow> Queued(int64_t job, TaskKind kind) {
    std::vector<TaskRow> out;
    auto tasks = store_->tasks().ListByJob(job);
    EXPECT_TRUE(tasks.ok());
    for (TaskRow& task : *tasks) {
      if (task.kind == kind && task.state == TaskState::kQueued) out.push_back(std::move(task));
    }
    return out;
  }

  // Plays the worker: leases the task, records `output` and lets the conductor react.
  void Complete(const TaskRow& task, const std::string& output) {
    auto attempt = store_->tasks().Lease(task.id, node_id_, clock_.NowUs() + 60'000'000);
    ASSERT_TRUE(attempt.ok() && attempt->has_value());
    auto done = store_->tasks().Complete(task.id, **attempt, output);
    ASSERT_TRUE(done.ok() && *done);
    conductor_->TaskEnded(task.id, task.job_id);
    Status advanced = conductor_->Advance();
    ASSERT_TRUE(advanced.ok()) << advanced.ToString();
  }

  int64_t Submit(int64_t budget_ms = 60'000, storage::Backend target = storage::Backend::kCpu,
                 std::string dtype = "") {
    ModelSubmission submission;
    submission.file_name = "mlp_block.onnx";
    submission.bytes = ModelBytes();
    submission.budget_ms = budget_ms;
    submission.target = target;
    submission.dtype = std::move(dtype);
    auto job = conductor_->SubmitModel(submission);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    return *job;
  }

  // Completes the baseline profile: slow matmuls, a slower LayerNorm than its floor, cheap rest.
  void ProfileBaseline(int64_t job, const std::string& device = "cpu: test") {
    std::vector<TaskRow> profiles = Queued(job, TaskKind::kProfile);
    ASSERT_EQ(profiles.size(), 1u);
    auto graph = planner::ImportOnnxBytes(ModelBytes(), "model", "", {});
    ASSERT_TRUE(graph.ok());
    capnp::MallocMessageBuilder builder;
    msg::ModelProfileReply::Builder reply = builder.initRoot<msg::ModelProfileReply>();
    auto nodes = reply.initNodes(static_cast<unsigned>(graph->nodes.size()));
    for (size_t i = 0; i < graph->nodes.size(); ++i) {
      nodes[static_cast<unsigned>(i)].setName(graph->nodes[i].name);
      const std::string& op = graph->nodes[i].op_type;
      nodes[static_cast<unsigned>(i)].setUs(op == "MatMul"               ? 900
                                            : op == "LayerNormalization" ? 200
                                                                         : 20);
    }
    reply.setTotalUs(10.0 * static_cast<double>(graph->nodes.size()));
    reply.setDevice(device);
    reply.setCpuModel("test cpu");
    reply.setLogicalCores(2);
    reply.setCopyBytesPerS(20e9);
    reply.setMatmulFlopsPerS(200e9);
    Complete(profiles[0], msg::EncodePayload(builder));
  }

  storage::testing::TempDir dir_;
  FakeClock clock_;
  Outbox outbox_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Conductor> conductor_;
  int64_t node_id_ = 0;
};

TEST_F(ConductorTest, ACorruptModelIsRefusedAndNothingIsStored) {
  ModelSubmission submission;
  submission.file_name = "broken.onnx";
  submission.bytes = "definitely not a protobuf";
  auto job = conductor_->SubmitModel(submission);
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("broken.onnx"), std::string::npos);
  EXPECT_TRUE(store_->jobs().List()->empty());
}

TEST_F(ConductorTest, ACudaJobMeasuresOnTheGpuAndPlansOnAnyCpu) {
  const int64_t job = Submit(60'000, storage::Backend::kCuda, "bf16");
  std::vector<TaskRow> profiles = Queued(job, TaskKind::kProfile);
  ASSERT_EQ(profiles.size(), 1u);
  EXPECT_EQ(profiles[0].backend, storage::Backend::kCuda);
  EXPECT_TRUE(profiles[0].exclusive_device);
  auto request = msg::DecodePayload<msg::ProfileRequest>(profiles[0].payload);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(std::string(request->root().getModel().getBackend().cStr()), "cuda");
  EXPECT_EQ(std::string(request->root().getModel().getDtype().cStr()), "bf16");

  ProfileBaseline(job, "cuda:0 NVIDIA H200 (sm_90, 132 SMs, 60 MiB L2)");
  auto kernels = store_->kernel_jobs().ListByJob(job);
  ASSERT_TRUE(kernels.ok());
  ASSERT_FALSE(kernels->empty());
  std::vector<TaskRow> plans = Queued(job, TaskKind::kPlan);
  ASSERT_FALSE(plans.empty()) << "no CUDA template fits the MLP block";
  for (const TaskRow& plan : plans) {
    EXPECT_EQ(plan.backend, storage::Backend::kCpu);
    auto payload = msg::DecodePayload<msg::PlanRequest>(plan.payload);
    ASSERT_TRUE(payload.ok());
    EXPECT_EQ(std::string(payload->root().getBackend().cStr()), "cuda");
    // The spec is the bf16 model's: its inputs are bf16 tensors.
    auto spec = planner::ImportOnnxBytes(
        std::string_view(reinterpret_cast<const char*>(payload->root().getSpecOnnx().begin()),
                         payload->root().getSpecOnnx().size()),
        "spec", "", {});
    ASSERT_TRUE(spec.ok());
    EXPECT_EQ(spec->values[spec->inputs[0]].dtype, planner::DType::kBF16);
  }
}

TEST_F(ConductorTest, AHipJobAndANonFloatDtypeAreRefused) {
  ModelSubmission submission;
  submission.file_name = "mlp_block.onnx";
  submission.bytes = ModelBytes();
  submission.target = storage::Backend::kHip;
  EXPECT_FALSE(conductor_->SubmitModel(submission).ok());
  submission.target = storage::Backend::kCuda;
  submission.dtype = "int8";
  Result<int64_t> refused = conductor_->SubmitModel(submission);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("--dtype"), std::string::npos);
  EXPECT_TRUE(store_->jobs().List()->empty());
}

TEST_F(ConductorTest, BudgetSplitFollowsExpectedSaving) {
  const int64_t job = Submit(/*budget_ms=*/60'000);
  ProfileBaseline(job);
  auto kernels = store_->kernel_jobs().ListByJob(job);
  ASSERT_TRUE(kernels.ok());
  ASSERT_EQ(kernels->size(), 3u);  // layernorm, gemm+bias+gelu, gemm+bias+add
  double saving_sum = 0;
  int64_t budget_sum = 0;
  for (const auto& k : *kernels) {
    EXPECT_EQ(k.state, storage::KernelJobState::kSearching) << k.name;
    saving_sum += k.expected_saving_us;
    budget_sum += k.budget_ms;
  }
  // No worker is connected: one slot's worth, the job's wall time, split by expected saving, with
  // a quarter of an even share as the floor.
  const double floor = 60'000.0 / (4 * 3);
  double expected_sum = 0;
  for (const auto& k : *kernels) {
    const double expected = std::max(floor, 60'000 * k.expected_saving_us / saving_sum);
    expected_sum += expected;
    EXPECT_NEAR(static_cast<double>(k.budget_ms), expected, 2) << k.name;
  }
  EXPECT_NEAR(static_cast<double>(budget_sum), expected_sum, 3);
  // The largest expected saving gets the largest budget.
  const auto most = std::max_element(kernels->begin(), kernels->end(), [](auto& a, auto& b) {
    return a.expected_saving_us < b.expected_saving_us;
  });
  for (const auto& k : *kernels) EXPECT_LE(k.budget_ms, most->budget_ms);
  // Round 0 started: one plan task per island for every kernel job.
  EXPECT_EQ(Queued(job, TaskKind::kPlan).size(), 2 * kernels->size());
  auto loaded = store_->jobs().Get(job);
  EXPECT_EQ(loaded->phase, "searching");
}

TEST_F(ConductorTest, TheSameCandidateOrSourceIsNeverEvaluatedTwice) {
  const int64_t job = Submit();
  ProfileBaseline(job);
  std::vector<TaskRow> plans = Queued(job, TaskKind::kPlan);
  ASSERT_FALSE(plans.empty());
  const int64_t kernel_job = *plans[0].kernel_job_id;
  auto request = msg::DecodePayload<msg::PlanRequest>(plans[0].payload);
  ASSERT_TRUE(request.ok());

  // Two islands propose the same point, and one island proposes two points that render alike.
  auto reply_with = [](const std::vector<std::pair<std::string, std::string>>& points) {
    capnp::MallocMessageBuilder builder;
    auto proposals =
        builder.initRoot<msg::PlanReply>().initProposals(static_cast<unsigned>(points.size()));
    for (size_t i = 0; i < points.size(); ++i) {
      proposals[static_cast<unsigned>(i)].setTemplate("fake");
      auto params = proposals[static_cast<unsigned>(i)].initParams(1);
      params[0].setName(points[i].first);
      params[0].setValue(points[i].second);
    }
    return msg::EncodePayload(builder);
  };
  std::vector<TaskRow> same_job_plans;
  for (const TaskRow& plan : plans) {
    if (plan.kernel_job_id == kernel_job) same_job_plans.push_back(plan);
  }
  ASSERT_EQ(same_job_plans.size(), 2u);
  Complete(same_job_plans[0], reply_with({{"a", "1"}, {"a", "2"}}));
  Complete(same_job_plans[1], reply_with({{"a", "1"}}));
  auto candidates = store_->candidates().ListByKernelJob(kernel_job);
  ASSERT_EQ(candidates->size(), 2u) << "the repeated point became one candidate";

  std::vector<TaskRow> codes;
  for (TaskRow& task : Queued(job, TaskKind::kCode)) {
    if (task.kernel_job_id == kernel_job) codes.push_back(std::move(task));
  }
  ASSERT_EQ(codes.size(), 2u);
  auto code_reply = [](const std::string& source) {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<msg::CodeReply>().setSource(source);
    return msg::EncodePayload(builder);
  };
  Complete(codes[0], code_reply("int kf_kernel_run() { return 0; }"));
  Complete(codes[1], code_reply("int kf_kernel_run() { return 0; }"));
  candidates = store_->candidates().ListByKernelJob(kernel_job);
  int duplicates = 0;
  for (const auto& c : *candidates) duplicates += c.failed_stage == "duplicate" ? 1 : 0;
  EXPECT_EQ(duplicates, 1);
  int tests = 0;
  for (const TaskRow& task : Queued(job, TaskKind::kTest)) {
    tests += task.kernel_job_id == kernel_job ? 1 : 0;
  }
  EXPECT_EQ(tests, 1) << "only the first of two identical sources is tested";
}

TEST_F(ConductorTest, AFailedTestGoesBackToPlanWithItsStageAndTheSearchStopsWhenExhausted) {
  const int64_t job = Submit();
  ProfileBaseline(job);
  // Every plan of round 0 proposes nothing except one point for the first kernel job's island 0.
  std::vector<TaskRow> plans = Queued(job, TaskKind::kPlan);
  const int64_t kernel_job = *plans[0].kernel_job_id;
  for (const TaskRow& plan : plans) {
    capnp::MallocMessageBuilder builder;
    auto proposals =
        builder.initRoot<msg::PlanReply>().initProposals(plan.id == plans[0].id ? 1 : 0);
    if (plan.id == plans[0].id) {
      proposals[0].setTemplate("fake");
      proposals[0].initParams(0);
    }
    Complete(plan, msg::EncodePayload(builder));
  }
  std::vector<TaskRow> codes = Queued(job, TaskKind::kCode);
  ASSERT_EQ(codes.size(), 1u);
  {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<msg::CodeReply>().setSource("wrong kernel");
    Complete(codes[0], msg::EncodePayload(builder));
  }
  std::vector<TaskRow> tests = Queued(job, TaskKind::kTest);
  ASSERT_EQ(tests.size(), 1u);
  {
    capnp::MallocMessageBuilder builder;
    msg::EvalReply::Builder reply = builder.initRoot<msg::EvalReply>();
    reply.setPassed(false);
    reply.setReportJson(
        nlohmann::json{{"passed", false}, {"failed_stage", "smoke"}, {"reason", "wrong at [3]"}}
            .dump());
    Complete(tests[0], msg::EncodePayload(builder));
  }
  auto candidates = store_->candidates().ListByKernelJob(kernel_job);
  ASSERT_EQ(candidates->size(), 1u);
  EXPECT_EQ((*candidates)[0].failed_stage, "smoke");
  EXPECT_EQ((*candidates)[0].error, "wrong at [3]");

  // Round 1's plan carries the failure in its history.
  std::vector<TaskRow> next;
  for (TaskRow& plan : Queued(job, TaskKind::kPlan)) {
    if (plan.kernel_job_id == kernel_job) next.push_back(std::move(plan));
  }
  ASSERT_EQ(next.size(), 2u);
  auto request = msg::DecodePayload<msg::PlanRequest>(next[0].payload);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->root().getRound(), 1u);
  ASSERT_EQ(request->root().getHistory().size(), 1u);
  EXPECT_EQ(std::string(request->root().getHistory()[0].getFailedStage().cStr()), "smoke");

  // The other kernel jobs proposed nothing in round 0: their space is exhausted, and with no
  // candidate passing they end as failed with that reason.
  auto all = store_->kernel_jobs().ListByJob(job);
  ASSERT_TRUE(all.ok());
  for (const auto& k : *all) {
    if (k.id == kernel_job) continue;
    EXPECT_EQ(k.state, storage::KernelJobState::kFailed) << k.name;
    EXPECT_NE(k.note.find("exhausted"), std::string::npos) << k.note;
  }
}

TEST_F(ConductorTest,
       WhenTheSearchTimeRunsOutQueuedWorkIsDroppedAndVerificationIsSkippedWithoutWinners) {
  const int64_t job = Submit(/*budget_ms=*/10'000);
  ProfileBaseline(job);
  ASSERT_FALSE(Queued(job, TaskKind::kPlan).empty());
  clock_.AdvanceMs(11'000);
  ASSERT_TRUE(conductor_->Advance().ok());
  EXPECT_TRUE(Queued(job, TaskKind::kPlan).empty()) << "queued plans are cancelled";
  auto kernels = store_->kernel_jobs().ListByJob(job);
  ASSERT_TRUE(kernels.ok());
  for (const auto& k : *kernels) {
    EXPECT_NE(k.state, storage::KernelJobState::kSearching) << k.name;
    EXPECT_NE(k.note.find("ran out"), std::string::npos) << k.note;
  }
  // No kernel beat the baseline: the job ends without an end-to-end run, and says why.
  auto finished = store_->jobs().Get(job);
  ASSERT_TRUE(finished.ok());
  EXPECT_EQ(finished->state, storage::JobState::kDone);
  EXPECT_NE(finished->summary_json.find("nothing to swap in"), std::string::npos);
}

// ---- The LLM agent ---------------------------------------------------------------------------

std::string LlmJson() {
  agents::LlmConfig config;
  config.endpoint = "http://127.0.0.1:9/v1";
  config.model = "test-coder";
  config.price_input_per_mtok = 1.0;
  return agents::LlmConfigToJson(config);
}

std::string Str(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

void AddCall(capnp::List<msg::LlmCallRecord>::Builder calls, unsigned i, const char* role,
             const char* outcome, double cost = 0.0001) {
  calls[i].setRole(role);
  calls[i].setModel("test-coder");
  calls[i].setPromptTokens(100);
  calls[i].setCompletionTokens(50);
  calls[i].setCostUsd(cost);
  calls[i].setOk(true);
  calls[i].setOutcome(outcome);
}

std::string SketchReply(const std::vector<uint64_t>& parents, double cost = 0.0001) {
  capnp::MallocMessageBuilder builder;
  msg::PlanReply::Builder reply = builder.initRoot<msg::PlanReply>();
  auto proposal = reply.initProposals(1)[0];
  proposal.setTemplate("llm");
  proposal.initParams(0);
  auto list = proposal.initParents(static_cast<unsigned>(parents.size()));
  for (size_t i = 0; i < parents.size(); ++i) list.set(static_cast<unsigned>(i), parents[i]);
  proposal.setNote("SKETCH: one pass");
  AddCall(reply.initLlmCalls(1), 0, "designer", "ok", cost);
  return msg::EncodePayload(builder);
}

std::string CoderReply(const std::string& source, const std::string& failed_stage = "",
                       const std::string& failure = "") {
  capnp::MallocMessageBuilder builder;
  msg::CodeReply::Builder reply = builder.initRoot<msg::CodeReply>();
  reply.setSource(source);
  reply.setFailedStage(failed_stage);
  reply.setFailure(failure);
  AddCall(reply.initLlmCalls(1), 0, "coder", failed_stage.empty() ? "ok" : "no_code");
  return msg::EncodePayload(builder);
}

std::string FailedTest(const nlohmann::json& report) {
  capnp::MallocMessageBuilder builder;
  msg::EvalReply::Builder reply = builder.initRoot<msg::EvalReply>();
  reply.setPassed(false);
  reply.setReportJson(report.dump());
  return msg::EncodePayload(builder);
}

TEST_F(ConductorTest, AnLlmJobNeedsAModelAndAsksTheDesignerOncePerIsland) {
  ModelSubmission submission;
  submission.file_name = "mlp_block.onnx";
  submission.bytes = ModelBytes();
  submission.agent = "llm";
  Result<int64_t> refused = conductor_->SubmitModel(submission);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("--llm-endpoint"), std::string::npos);
  submission.agent = "robot";
  EXPECT_FALSE(conductor_->SubmitModel(submission).ok());
  EXPECT_TRUE(store_->jobs().List()->empty());

  submission.agent = "llm";
  submission.llm_json = LlmJson();
  Result<int64_t> job = conductor_->SubmitModel(submission);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ProfileBaseline(*job);
  std::vector<TaskRow> plans = Queued(*job, TaskKind::kPlan);
  auto kernels = store_->kernel_jobs().ListByJob(*job);
  ASSERT_EQ(plans.size(), kernels->size() * 2) << "one Designer task per island per kernel job";
  for (const TaskRow& plan : plans) {
    auto request = msg::DecodePayload<msg::PlanRequest>(plan.payload);
    ASSERT_TRUE(request.ok());
    EXPECT_EQ(Str(request->root().getAgent()), "llm");
    EXPECT_EQ(request->root().getCount(), 1u);
    EXPECT_EQ(request->root().getIslands(), 2u);
    EXPECT_FALSE(Str(request->root().getBrief().getKernelName()).empty());
    EXPECT_GT(request->root().getBrief().getBaselineUs(), 0);
    EXPECT_EQ(Str(request->root().getBrief().getTarget()), "cpu: test");
    Result<agents::LlmConfig> settings = agents::LlmConfigFromJson(Str(request->root().getLlm()));
    ASSERT_TRUE(settings.ok());
    EXPECT_EQ(settings->model, "test-coder");
    // Room for every attempt of the request, not the templates' two minutes.
    EXPECT_GT(plan.timeout_ms, 120'000);
  }
}

TEST_F(ConductorTest, EachLlmFailureGoesBackToTheCoderOrTheDesignerUntilTheLineageLimit) {
  ModelSubmission submission;
  submission.file_name = "mlp_block.onnx";
  submission.bytes = ModelBytes();
  submission.agent = "llm";
  submission.llm_json = LlmJson();
  const int64_t job = *conductor_->SubmitModel(submission);
  ProfileBaseline(job);
  std::vector<TaskRow> plans = Queued(job, TaskKind::kPlan);
  const int64_t kernel_job = *plans[0].kernel_job_id;
  // The first Designer task sketches; every other proposes nothing.
  for (const TaskRow& plan : plans) {
    if (plan.id == plans[0].id) {
      Complete(plan, SketchReply({}));
    } else {
      capnp::MallocMessageBuilder empty;
      empty.initRoot<msg::PlanReply>().initProposals(0);
      Complete(plan, msg::EncodePayload(empty));
    }
  }
  const auto code_request = [&](const TaskRow& task) {
    auto request = msg::DecodePayload<msg::CodeRequest>(task.payload);
    EXPECT_TRUE(request.ok());
    return request;
  };
  std::vector<TaskRow> codes = Queued(job, TaskKind::kCode);
  ASSERT_EQ(codes.size(), 1u);
  {
    auto request = code_request(codes[0]);
    EXPECT_EQ(Str(request->root().getAgent()), "llm");
    EXPECT_EQ(Str(request->root().getSketch()), "SKETCH: one pass");
    EXPECT_EQ(Str(request->root().getFeedback()), "");
  }
  const int64_t first = *codes[0].candidate_id;
  auto candidate = store_->candidates().Get(first);
  EXPECT_EQ(candidate->agent, "llm:test-coder");
  EXPECT_EQ(candidate->plan, "SKETCH: one pass");

  // 1. No code in the answer -> the Coder again, told so.
  Complete(codes[0], CoderReply("", "extract", "the answer has no code block"));
  EXPECT_EQ(store_->candidates().Get(first)->failed_stage, "extract");
  codes = Queued(job, TaskKind::kCode);
  ASSERT_EQ(codes.size(), 1u);
  EXPECT_NE(Str(code_request(codes[0])->root().getFeedback()).find("No usable source"),
            std::string::npos);
  const int64_t second = *codes[0].candidate_id;
  EXPECT_EQ(store_->candidates().Get(second)->parents_json, "[" + std::to_string(first) + "]");

  // 2. A compile error -> the Coder, with the file and the compiler's error lines.
  Complete(codes[0], CoderReply("int broken = ;"));
  std::vector<TaskRow> tests = Queued(job, TaskKind::kTest);
  ASSERT_EQ(tests.size(), 1u);
  Complete(tests[0],
           FailedTest({{"passed", false},
                       {"failed_stage", "compile"},
                       {"reason", "the source does not compile"},
                       {"compile", {{"log", "kernel.cpp:1:14: error: expected ';'\n"}}}}));
  codes = Queued(job, TaskKind::kCode);
  ASSERT_EQ(codes.size(), 1u);
  {
    auto request = code_request(codes[0]);
    EXPECT_EQ(Str(request->root().getPreviousSource()), "int broken = ;");
    EXPECT_NE(Str(request->root().getFeedback()).find("kernel.cpp:1:14: error"), std::string::npos);
  }
  const int64_t third = *codes[0].candidate_id;

  // 3. A wrong result -> the Designer, with the failed candidate and the advice.
  Complete(codes[0], CoderReply("float wrong;"));
  tests = Queued(job, TaskKind::kTest);
  ASSERT_EQ(tests.size(), 1u);
  Complete(tests[0], FailedTest({{"passed", false},
                                 {"failed_stage", "smoke"},
                                 {"reason", "5 of 10 elements outside tolerance"}}));
  std::vector<TaskRow> redesigns;
  for (TaskRow& plan : Queued(job, TaskKind::kPlan)) {
    if (plan.kernel_job_id == kernel_job) redesigns.push_back(std::move(plan));
  }
  ASSERT_EQ(redesigns.size(), 1u);
  {
    auto request = msg::DecodePayload<msg::PlanRequest>(redesigns[0].payload);
    ASSERT_TRUE(request.ok());
    EXPECT_EQ(request->root().getRedesignOf(), static_cast<uint64_t>(third));
    EXPECT_NE(Str(request->root().getAdvice()).find("wrong"), std::string::npos);
    EXPECT_EQ(request->root().getIsland(), 0u);
  }

  // 4. The fourth attempt of the lineage fails too: the lineage ends there.
  Complete(redesigns[0], SketchReply({static_cast<uint64_t>(third)}));
  codes = Queued(job, TaskKind::kCode);
  ASSERT_EQ(codes.size(), 1u);
  Complete(codes[0], CoderReply("", "extract", "the answer has no code block"));
  EXPECT_TRUE(Queued(job, TaskKind::kCode).empty());

  std::map<std::string, int> routes;
  auto events = store_->events().ListAfter(job, 0, 10'000);
  for (const auto& event : *events) {
    if (event.kind != "candidate.routed") continue;
    const auto data = nlohmann::json::parse(event.data_json);
    ++routes[data.value("category", "") + "->" + data.value("route", "")];
  }
  EXPECT_EQ(routes["no_code->coder"], 1);
  EXPECT_EQ(routes["compile->coder"], 1);
  EXPECT_EQ(routes["wrong_result->designer"], 1);
  EXPECT_EQ(routes["no_code->none"], 1);
  // Every call the tasks reported is stored, with its candidate.
  auto calls = store_->llm_calls().ListByJob(job);
  ASSERT_TRUE(calls.ok());
  EXPECT_EQ(calls->size(), 6u);  // 2 sketches, 4 coder answers
  for (const auto& call : *calls) EXPECT_TRUE(call.call.candidate_id.has_value());
  auto spend = store_->llm_calls().SpendByJob(job);
  EXPECT_EQ(spend->prompt_tokens, 600);
}

TEST_F(ConductorTest, AnLlmSearchStopsWhenItsMoneyBudgetIsSpent) {
  ModelSubmission submission;
  submission.file_name = "mlp_block.onnx";
  submission.bytes = ModelBytes();
  submission.agent = "llm";
  submission.llm_json = LlmJson();
  submission.budget_usd = 0.03;
  const int64_t job = *conductor_->SubmitModel(submission);
  ProfileBaseline(job);
  for (const TaskRow& plan : Queued(job, TaskKind::kPlan)) {
    capnp::MallocMessageBuilder builder;
    msg::PlanReply::Builder reply = builder.initRoot<msg::PlanReply>();
    reply.initProposals(0);
    AddCall(reply.initLlmCalls(1), 0, "designer", "empty", 0.02);
    Complete(plan, msg::EncodePayload(builder));
  }
  auto kernels = store_->kernel_jobs().ListByJob(job);
  ASSERT_TRUE(kernels.ok());
  for (const auto& k : *kernels) {
    EXPECT_NE(k.state, storage::KernelJobState::kSearching) << k.name;
    EXPECT_NE(k.note.find("LLM budget of $0.03 is spent"), std::string::npos) << k.note;
  }
  auto report = conductor_->BuildReport(job);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->agent, "llm");
  EXPECT_NEAR(report->llm_cost_usd, 0.02 * static_cast<double>(kernels->size() * 2), 1e-9);
}

}  // namespace
}  // namespace kfleet::coordinator
