#include "worker/kernel_tasks.h"

#include <capnp/dynamic.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <limits>
#include <vector>

#include "agents/llm_agent.h"
#include "agents/llm_config.h"
#include "agents/search.h"
#include "common/files.h"
#include "eval/device.h"
#include "eval/harness.h"
#include "eval/launcher.h"
#include "eval/model_verify.h"
#include "eval/report.h"
#include "eval/toolchain.h"
#include "planner/cpu_calibration.h"
#include "planner/onnx_import.h"
#include "runtime/baseline.h"
#include "runtime/feeds.h"

namespace kfleet::worker {
namespace {

// Random weights around the scale of trained ones, as `kfleet profile` runs a model: activations
// stay in a normal range through many layers, so the timings are representative.
constexpr double kModelFeedScale = 0.05;
constexpr int kDefaultModelReps = 5;
constexpr int kModelWarmupRuns = 1;
// A plan asks for a handful of proposals; a count beyond this is a damaged request.
constexpr uint32_t kMaxProposals = 1024;
// What the harness's device report says when a kernel's fault took the CUDA context with it.
constexpr std::string_view kContextLost = "context is lost";
// `kfleet-harness --check-device` starts the CUDA runtime and runs one probe kernel.
constexpr int64_t kDeviceCheckTimeoutMs = 60'000;

std::string_view DataView(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

std::string_view TextView(capnp::Text::Reader text) { return {text.begin(), text.size()}; }

std::string TextString(capnp::Text::Reader text) { return std::string(TextView(text)); }

capnp::Data::Reader BytesData(std::string_view bytes) {
  return {reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()};
}

Result<planner::Graph> ImportSpec(capnp::Data::Reader spec_onnx) {
  if (spec_onnx.size() == 0) return InvalidArgument("the request carries no kernel spec");
  return planner::ImportOnnxBytes(DataView(spec_onnx), "kernel spec", "", {});
}

// `dtype` as `kfleet plan --dtype` takes it: empty = as exported.
Result<planner::Graph> ImportModel(capnp::Data::Reader model, capnp::Text::Reader dtype) {
  if (model.size() == 0) return InvalidArgument("the request carries no model");
  planner::ImportOptions options;
  KF_ASSIGN_OR_RETURN(options.compute_dtype, planner::ParseComputeDtype(TextView(dtype)));
  return planner::ImportOnnxBytes(DataView(model), "model", "", options);
}

// A request's backend: "cpu" (also for an empty field, from a coordinator that predates it) or
// "cuda".
Result<std::string> BackendOf(capnp::Text::Reader text) {
  const std::string_view backend = TextView(text);
  if (backend.empty() || backend == "cpu") return std::string("cpu");
  if (backend == "cuda") return std::string("cuda");
  return InvalidArgument(fmt::format("backend '{}' is not one of cpu, cuda", backend));
}

Result<int> ToInt(uint32_t value, std::string_view what) {
  if (value > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
    return InvalidArgument(fmt::format("{} {} is out of range", what, value));
  }
  return static_cast<int>(value);
}

Result<agents::TriedState> ParseTriedState(std::string_view text, uint64_t id) {
  if (text == "pending") return agents::TriedState::kPending;
  if (text == "failed") return agents::TriedState::kFailed;
  if (text == "passed") return agents::TriedState::kPassed;
  if (text == "profiled") return agents::TriedState::kProfiled;
  return InvalidArgument(fmt::format(
      "candidate {}: state '{}' is not one of pending, failed, passed, profiled", id, text));
}

Result<agents::TriedCandidate> ToTriedCandidate(msg::CandidateOutcome::Reader outcome) {
  agents::TriedCandidate tried;
  if (outcome.getId() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return InvalidArgument(fmt::format("candidate id {} is out of range", outcome.getId()));
  }
  tried.id = static_cast<int64_t>(outcome.getId());
  KF_ASSIGN_OR_RETURN(tried.island, ToInt(outcome.getIsland(), "island"));
  tried.template_name = TextString(outcome.getTemplate());
  KF_ASSIGN_OR_RETURN(tried.params, ReadParams(outcome.getParams()));
  KF_ASSIGN_OR_RETURN(tried.state, ParseTriedState(TextView(outcome.getState()), outcome.getId()));
  tried.failed_stage = TextString(outcome.getFailedStage());
  tried.speedup = outcome.getSpeedup();
  return tried;
}

// ---- The LLM agent's plan and code tasks -------------------------------------------------------

bool IsLlmAgent(capnp::Text::Reader agent) { return TextView(agent) == "llm"; }

Result<std::unique_ptr<agents::LlmClient>> MakeLlmClient(capnp::Text::Reader settings) {
  if (settings.size() == 0) {
    return InvalidArgument("the request asks for the LLM agent but carries no LLM settings");
  }
  KF_ASSIGN_OR_RETURN(agents::LlmConfig config, agents::LlmConfigFromJson(TextView(settings)));
  agents::LlmClientOptions options;
  options.record_dir = config.record_dir;
  options.replay = config.replay;
  return std::make_unique<agents::LlmClient>(std::move(config), std::move(options));
}

agents::SpecBrief BriefOf(const planner::Graph& graph, const agents::SpecView& spec,
                          msg::LlmBrief::Reader brief, const std::string& backend) {
  agents::SpecBrief out;
  out.name = TextString(brief.getKernelName());
  out.family = spec.family;
  out.backend = backend;
  out.graph = agents::DescribeSpecGraph(graph);
  out.baseline_us = brief.getBaselineUs();
  out.sol_us = brief.getSolUs();
  out.target = TextString(brief.getTarget());
  return out;
}

Result<std::string> KnowledgeText(const std::string& backend, const agents::SpecView& spec) {
  KF_ASSIGN_OR_RETURN(const std::vector<agents::KnowledgeSection> sections,
                      agents::KnowledgeFor(backend));
  return agents::TrimKnowledge(sections, agents::FamilyClass(spec.family),
                               agents::kMaxKnowledgeChars);
}

void WriteCalls(const std::vector<agents::LlmCallNote>& calls,
                capnp::List<msg::LlmCallRecord>::Builder out) {
  for (size_t i = 0; i < calls.size() && i < out.size(); ++i) {
    const agents::LlmCallNote& from = calls[i];
    msg::LlmCallRecord::Builder to = out[static_cast<capnp::uint>(i)];
    to.setRole(from.role);
    to.setModel(from.model);
    to.setPromptTokens(from.prompt_tokens);
    to.setCompletionTokens(from.completion_tokens);
    to.setCostUsd(from.cost);
    to.setLatencyMs(from.latency_ms);
    to.setOk(from.ok);
    to.setOutcome(from.outcome);
    to.setError(from.error);
  }
}

// What the Designer hears about a candidate tried before.
agents::ParentBrief ParentOf(msg::CandidateOutcome::Reader outcome) {
  agents::ParentBrief parent;
  const std::string agent = TextString(outcome.getAgent());
  const std::string name = TextString(outcome.getTemplate());
  parent.agent = agent.empty() || agent == "template" ? "template " + name : agent;
  parent.plan = TextString(outcome.getPlan());
  if (parent.plan.empty() || parent.agent.starts_with("template")) {
    std::vector<std::string> params;
    for (const msg::Param::Reader p : outcome.getParams()) {
      params.push_back(TextString(p.getName()) + "=" + TextString(p.getValue()));
    }
    parent.plan =
        fmt::format("{} with {}", name,
                    params.empty() ? "defaults" : fmt::format("{}", fmt::join(params, ", ")));
  }
  if (parent.plan.size() > 800) parent.plan = parent.plan.substr(0, 800) + " [...]";
  parent.median_us = outcome.getMedianUs();
  parent.speedup = outcome.getSpeedup();
  if (TextView(outcome.getState()) == "failed") {
    parent.failure = fmt::format("failed at {}: {}", TextView(outcome.getFailedStage()),
                                 TextView(outcome.getFailure()));
  }
  return parent;
}

// The Designer's parents: the best profiled candidates of the island (of every island when the
// round migrates), and the candidate being redesigned with its failure.
constexpr size_t kDesignerParents = 3;
constexpr size_t kDesignerFailures = 2;

Result<std::string> RunLlmPlan(msg::PlanRequest::Reader request, const planner::Graph& graph,
                               const agents::SpecView& spec) {
  KF_ASSIGN_OR_RETURN(const std::string backend, BackendOf(request.getBackend()));
  KF_ASSIGN_OR_RETURN(std::unique_ptr<agents::LlmClient> client, MakeLlmClient(request.getLlm()));
  agents::DesignerInput input;
  input.spec = BriefOf(graph, spec, request.getBrief(), backend);
  KF_ASSIGN_OR_RETURN(input.knowledge, KnowledgeText(backend, spec));
  input.advice = TextString(request.getAdvice());
  input.island = static_cast<int>(request.getIsland());
  input.islands = static_cast<int>(std::max<uint32_t>(request.getIslands(), 1));

  std::vector<msg::CandidateOutcome::Reader> profiled;
  std::vector<uint64_t> parent_ids;
  for (const msg::CandidateOutcome::Reader outcome : request.getHistory()) {
    if (outcome.getId() == request.getRedesignOf() && request.getRedesignOf() != 0) continue;
    if (TextView(outcome.getState()) != "profiled") continue;
    if (!request.getMigrate() && outcome.getIsland() != request.getIsland()) continue;
    profiled.push_back(outcome);
  }
  std::stable_sort(profiled.begin(), profiled.end(),
                   [](const auto& a, const auto& b) { return a.getSpeedup() > b.getSpeedup(); });
  for (size_t i = 0; i < profiled.size() && i < kDesignerParents; ++i) {
    input.parents.push_back(ParentOf(profiled[i]));
    parent_ids.push_back(profiled[i].getId());
  }
  // The island's latest failures too, so the next sketch avoids them (duplicates and calls
  // that got no answer say nothing about the design).
  std::vector<msg::CandidateOutcome::Reader> failed;
  for (const msg::CandidateOutcome::Reader outcome : request.getHistory()) {
    const std::string_view stage = TextView(outcome.getFailedStage());
    if (TextView(outcome.getState()) != "failed" || stage == "duplicate" || stage == "llm" ||
        outcome.getIsland() != request.getIsland() || outcome.getId() == request.getRedesignOf()) {
      continue;
    }
    failed.push_back(outcome);
  }
  for (size_t i = 0; i < failed.size() && i < kDesignerFailures; ++i) {
    input.parents.push_back(ParentOf(failed[failed.size() - 1 - i]));
  }
  if (request.getRedesignOf() != 0) {
    for (const msg::CandidateOutcome::Reader outcome : request.getHistory()) {
      if (outcome.getId() != request.getRedesignOf()) continue;
      input.parents.push_back(ParentOf(outcome));
      parent_ids.insert(parent_ids.begin(), outcome.getId());
    }
  }

  std::vector<std::string> sketches;
  std::vector<agents::LlmCallNote> calls;
  for (uint32_t i = 0; i < request.getCount(); ++i) {
    agents::DesignResult design = agents::Design(*client, input);
    calls.push_back(design.call);
    if (design.sketch.empty()) break;  // the next request would fail the same way
    if (std::find(sketches.begin(), sketches.end(), design.sketch) == sketches.end()) {
      sketches.push_back(std::move(design.sketch));
    }
  }

  capnp::MallocMessageBuilder builder;
  msg::PlanReply::Builder reply = builder.initRoot<msg::PlanReply>();
  auto out = reply.initProposals(static_cast<capnp::uint>(sketches.size()));
  for (size_t i = 0; i < sketches.size(); ++i) {
    msg::Proposal::Builder to = out[static_cast<capnp::uint>(i)];
    to.setTemplate("llm");
    to.initParams(0);
    auto parents = to.initParents(static_cast<capnp::uint>(parent_ids.size()));
    for (size_t p = 0; p < parent_ids.size(); ++p) {
      parents.set(static_cast<capnp::uint>(p), parent_ids[p]);
    }
    to.setNote(sketches[i]);
  }
  WriteCalls(calls, reply.initLlmCalls(static_cast<capnp::uint>(calls.size())));
  return msg::EncodePayload(builder);
}

Result<std::string> RunLlmCode(msg::CodeRequest::Reader request, const planner::Graph& graph,
                               const agents::SpecView& spec) {
  KF_ASSIGN_OR_RETURN(const std::string backend, BackendOf(request.getBackend()));
  KF_ASSIGN_OR_RETURN(std::unique_ptr<agents::LlmClient> client, MakeLlmClient(request.getLlm()));
  agents::CoderInput input;
  input.spec = BriefOf(graph, spec, request.getBrief(), backend);
  input.sketch = TextString(request.getSketch());
  input.abi_header = std::string(eval::KernelAbiHeader());
  KF_ASSIGN_OR_RETURN(input.knowledge, KnowledgeText(backend, spec));
  for (const capnp::Text::Reader example : request.getExamples()) {
    input.examples.push_back(TextString(example));
  }
  input.previous_source = TextString(request.getPreviousSource());
  input.feedback = TextString(request.getFeedback());
  const agents::CodeResult code = agents::Code(*client, input);

  capnp::MallocMessageBuilder builder;
  msg::CodeReply::Builder reply = builder.initRoot<msg::CodeReply>();
  reply.setSource(code.source);
  const std::string_view sketch = input.sketch;
  reply.setExplanation(std::string(sketch.substr(0, std::min(sketch.find('\n'), size_t{200}))));
  reply.setFailedStage(code.failed_stage);
  reply.setFailure(code.failure);
  WriteCalls({code.call}, reply.initLlmCalls(1));
  return msg::EncodePayload(builder);
}

Result<std::string> RunPlan(std::string_view payload) {
  KF_ASSIGN_OR_RETURN(msg::Payload<msg::PlanRequest> message,
                      msg::DecodePayload<msg::PlanRequest>(payload));
  const msg::PlanRequest::Reader request = message.root();
  if (request.getCount() > kMaxProposals) {
    return InvalidArgument(
        fmt::format("{} proposals asked for; at most {}", request.getCount(), kMaxProposals));
  }
  KF_ASSIGN_OR_RETURN(const planner::Graph graph, ImportSpec(request.getSpecOnnx()));
  KF_ASSIGN_OR_RETURN(const agents::SpecView spec, agents::AnalyzeSpec(graph));
  if (IsLlmAgent(request.getAgent())) return RunLlmPlan(request, graph, spec);

  agents::ProposalRequest proposal;
  KF_ASSIGN_OR_RETURN(proposal.island, ToInt(request.getIsland(), "island"));
  KF_ASSIGN_OR_RETURN(proposal.round, ToInt(request.getRound(), "round"));
  proposal.count = static_cast<int>(request.getCount());
  proposal.seed = request.getSeed();
  proposal.migrate = request.getMigrate();
  for (const msg::CandidateOutcome::Reader outcome : request.getHistory()) {
    KF_ASSIGN_OR_RETURN(agents::TriedCandidate tried, ToTriedCandidate(outcome));
    proposal.history.push_back(std::move(tried));
  }
  for (const capnp::Text::Reader name : request.getTemplates()) {
    proposal.templates.push_back(TextString(name));
  }
  KF_ASSIGN_OR_RETURN(const std::vector<std::unique_ptr<agents::TemplateFamily>> families,
                      agents::TemplateFamiliesFor(TextView(request.getBackend())));
  KF_ASSIGN_OR_RETURN(const std::vector<agents::Proposal> proposals,
                      agents::ProposeCandidates(spec, families, proposal));

  capnp::MallocMessageBuilder builder;
  auto out =
      builder.initRoot<msg::PlanReply>().initProposals(static_cast<capnp::uint>(proposals.size()));
  for (size_t i = 0; i < proposals.size(); ++i) {
    const agents::Proposal& from = proposals[i];
    msg::Proposal::Builder to = out[static_cast<capnp::uint>(i)];
    to.setTemplate(from.template_name);
    WriteParams(from.params, to.initParams(static_cast<capnp::uint>(from.params.size())));
    auto parents = to.initParents(static_cast<capnp::uint>(from.parents.size()));
    for (size_t p = 0; p < from.parents.size(); ++p) {
      parents.set(static_cast<capnp::uint>(p), static_cast<uint64_t>(from.parents[p]));
    }
    to.setNote(from.note);
  }
  return msg::EncodePayload(builder);
}

Result<std::string> RunCode(std::string_view payload) {
  KF_ASSIGN_OR_RETURN(msg::Payload<msg::CodeRequest> message,
                      msg::DecodePayload<msg::CodeRequest>(payload));
  const msg::CodeRequest::Reader request = message.root();
  KF_ASSIGN_OR_RETURN(const planner::Graph graph, ImportSpec(request.getSpecOnnx()));
  KF_ASSIGN_OR_RETURN(const agents::SpecView spec, agents::AnalyzeSpec(graph));
  if (IsLlmAgent(request.getAgent())) return RunLlmCode(request, graph, spec);
  KF_ASSIGN_OR_RETURN(const agents::Params params, ReadParams(request.getParams()));
  const std::string_view wanted = TextView(request.getTemplate());
  KF_ASSIGN_OR_RETURN(const std::vector<std::unique_ptr<agents::TemplateFamily>> families,
                      agents::TemplateFamiliesFor(TextView(request.getBackend())));
  const agents::TemplateFamily* family = nullptr;
  std::vector<std::string_view> known;
  for (const std::unique_ptr<agents::TemplateFamily>& candidate : families) {
    if (candidate->name() == wanted) family = candidate.get();
    known.push_back(candidate->name());
  }
  if (family == nullptr) {
    return InvalidArgument(fmt::format("no template family '{}' (this worker has: {})", wanted,
                                       fmt::join(known, ", ")));
  }
  // Render's contract holds only for a spec the family supports.
  KF_RETURN_IF_ERROR(family->Supports(spec).WithContext(fmt::format("template {}", wanted)));
  KF_ASSIGN_OR_RETURN(const agents::RenderedKernel kernel, family->Render(spec, params));

  capnp::MallocMessageBuilder builder;
  msg::CodeReply::Builder reply = builder.initRoot<msg::CodeReply>();
  reply.setSource(kernel.source);
  reply.setExplanation(kernel.explanation);
  return msg::EncodePayload(builder);
}

Result<planner::CpuCalibration> WorkerCalibration() {
  return planner::LoadOrCalibrateCpu(planner::DefaultCalibrationCachePath(), /*force=*/false);
}

std::string DeviceText(const planner::CpuCalibration& calibration) {
  return fmt::format("cpu: {}, {} cores", calibration.cpu_model, calibration.logical_cores);
}

// Compile and harness share the task's limit, less a margin for the reply, so that an evaluation
// that runs long comes back as a report ("ran past its limit") instead of a killed task.
void FitUnderTaskTimeout(int64_t task_timeout_ms, eval::CompileOptions& compile,
                         eval::LaunchOptions& launch) {
  if (task_timeout_ms <= 0) return;
  const int64_t margin_ms = std::min<int64_t>(5'000, task_timeout_ms / 10);
  const int64_t budget_ms = std::max<int64_t>(task_timeout_ms - margin_ms, 2);
  compile.timeout_ms = std::max<int64_t>(std::min(compile.timeout_ms, budget_ms / 3), 1);
  launch.timeout_ms = std::max<int64_t>(budget_ms - compile.timeout_ms, 1);
}

// `profile` false: compile + the test stages. True: compile + smoke + profile, the test stages
// left to the candidate's test task.
Result<std::string> RunEvaluation(msg::EvalRequest::Reader request, bool profile,
                                  const KernelTaskContext& context) {
  if (request.getSpecOnnx().size() == 0) {
    return InvalidArgument("the request carries no kernel spec");
  }
  KF_ASSIGN_OR_RETURN(const std::string backend, BackendOf(request.getBackend()));
  const std::filesystem::path spec_path = context.scratch_dir / "spec.onnx";
  KF_RETURN_IF_ERROR(WriteFileAtomic(spec_path, DataView(request.getSpecOnnx())));

  eval::CompileOptions compile;
  eval::LaunchOptions launch;
  eval::HarnessOptions harness;
  launch.threads = context.threads;
  harness.backend = backend;
  if (backend == "cuda") {
    KF_ASSIGN_OR_RETURN(const eval::CudaDeviceSummary gpu,
                        eval::DescribeCudaDevice(context.device));
    compile = eval::CudaCompileOptions(gpu.arch);
    launch.device = gpu.description;
    harness.device = context.device;
  } else {
    KF_ASSIGN_OR_RETURN(const planner::CpuCalibration calibration, WorkerCalibration());
    launch.device = DeviceText(calibration);
  }
  FitUnderTaskTimeout(context.timeout_ms, compile, launch);
  harness.seed = request.getSeed();
  harness.sol_us = request.getSolUs();
  harness.profile = profile;
  harness.tests = !profile;
  KF_ASSIGN_OR_RETURN(
      std::unique_ptr<eval::Toolchain> toolchain,
      backend == "cuda" ? eval::MakeCudaToolchain(compile) : eval::MakeCpuToolchain(compile));
  KF_ASSIGN_OR_RETURN(
      eval::EvalReport report,
      eval::EvaluateSource(spec_path, TextView(request.getSource()), *toolchain, harness, launch));
  // The scratch path is gone once the task ends; the coordinator knows the spec by its job.
  report.spec = "spec.onnx";
  if (backend == "cuda") {
    KF_RETURN_IF_ERROR(CheckGpuAfterEvaluation(report, context.device));
  }

  capnp::MallocMessageBuilder builder;
  msg::EvalReply::Builder reply = builder.initRoot<msg::EvalReply>();
  reply.setPassed(report.passed);
  reply.setReportJson(eval::ToJson(report).dump());
  return msg::EncodePayload(builder);
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// Whole runs of a GPU model: one warm-up, then the median of `reps` event-timed launches (feeds
// uploaded once, nothing copied back, no per-node events in the way). RunTimed's wall time would
// count the host copies of every input, weight and output, and the sum of its node times would
// miss the gaps between launches that eager execution pays.
Result<double> MedianGpuRunUs(runtime::BaselineExecutor& executor, const runtime::TensorMap& feeds,
                              int reps) {
  KF_ASSIGN_OR_RETURN(std::unique_ptr<eval::ModelRunTimer> timer,
                      eval::MakeModelRunTimer("cuda", executor, feeds));
  std::vector<double> run_us;
  for (int run = 0; run < kModelWarmupRuns + reps; ++run) {
    KF_ASSIGN_OR_RETURN(const double us, timer->TimeRunUs());
    if (run >= kModelWarmupRuns) run_us.push_back(us);
  }
  return Median(run_us);
}

// The same measurement as `kfleet profile`: warm-up, then `reps` timed runs on random inputs and
// weights; every node's median and the median of whole runs. On a GPU node times are CUDA-event
// times (RunTimed) and whole runs are timed apart (MedianGpuRunUs).
Result<std::string> RunModelProfile(msg::ModelProfileRequest::Reader request,
                                    const KernelTaskContext& context) {
  KF_ASSIGN_OR_RETURN(const std::string backend, BackendOf(request.getBackend()));
  KF_ASSIGN_OR_RETURN(const planner::Graph graph,
                      ImportModel(request.getModel(), request.getDtype()));
  KF_ASSIGN_OR_RETURN(const int requested_reps, ToInt(request.getReps(), "reps"));
  const int reps = requested_reps > 0 ? requested_reps : kDefaultModelReps;
  runtime::FeedOptions feed_options;
  feed_options.seed = request.getSeed();
  feed_options.scale = kModelFeedScale;
  feed_options.include_weights = true;
  KF_ASSIGN_OR_RETURN(const runtime::TensorMap feeds,
                      runtime::MakeRandomFeeds(graph, feed_options));
  runtime::BaselineOptions options;
  options.threads = context.threads;
  KF_ASSIGN_OR_RETURN(std::unique_ptr<runtime::BaselineExecutor> executor,
                      eval::MakeBaselineExecutor(backend, graph, options, context.device));
  // The CPU is calibrated before the runs: a first-time calibration must not compete with them
  // for cores.
  planner::CpuCalibration calibration;
  std::string device;
  if (backend == "cuda") {
    KF_ASSIGN_OR_RETURN(const eval::CudaDeviceSummary gpu,
                        eval::DescribeCudaDevice(context.device));
    device = gpu.description;
  } else {
    KF_ASSIGN_OR_RETURN(calibration, WorkerCalibration());
    device = DeviceText(calibration);
  }

  std::vector<std::vector<double>> node_us(graph.nodes.size());
  std::vector<double> run_us;
  runtime::TensorMap outputs;
  std::vector<double> node_seconds;
  for (int run = 0; run < kModelWarmupRuns + reps; ++run) {
    const auto start = std::chrono::steady_clock::now();
    KF_RETURN_IF_ERROR(executor->RunTimed(feeds, &outputs, &node_seconds));
    const double wall_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    if (run < kModelWarmupRuns) continue;
    run_us.push_back(wall_us);
    for (size_t i = 0; i < node_seconds.size() && i < node_us.size(); ++i) {
      node_us[i].push_back(node_seconds[i] * 1e6);
    }
  }
  double total_us = Median(run_us);
  if (backend == "cuda") {
    KF_ASSIGN_OR_RETURN(total_us, MedianGpuRunUs(*executor, feeds, reps));
  }

  capnp::MallocMessageBuilder builder;
  msg::ModelProfileReply::Builder reply = builder.initRoot<msg::ModelProfileReply>();
  auto nodes = reply.initNodes(static_cast<capnp::uint>(graph.nodes.size()));
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    nodes[static_cast<capnp::uint>(i)].setName(graph.nodes[i].name);
    nodes[static_cast<capnp::uint>(i)].setUs(Median(node_us[i]));
  }
  reply.setTotalUs(total_us);
  reply.setDevice(device);
  // The CPU's calibration feeds the CPU cost model; a GPU profile leaves it unset (0).
  if (backend == "cpu") {
    reply.setCpuModel(calibration.cpu_model);
    reply.setLogicalCores(static_cast<uint32_t>(std::max(calibration.logical_cores, 0)));
    reply.setCopyBytesPerS(calibration.copy_bytes_per_s);
    reply.setMatmulFlopsPerS(calibration.matmul_flops_per_s);
  }
  return msg::EncodePayload(builder);
}

Result<std::string> RunVerify(msg::VerifyRequest::Reader request,
                              const KernelTaskContext& context) {
  KF_ASSIGN_OR_RETURN(const std::string backend, BackendOf(request.getBackend()));
  // The kernels' spec hashes were taken on the model imported in the job's dtype.
  KF_ASSIGN_OR_RETURN(const planner::Graph graph,
                      ImportModel(request.getModel(), request.getDtype()));
  std::vector<eval::SwapKernel> kernels;
  for (const msg::VerifyKernel::Reader kernel : request.getKernels()) {
    kernels.push_back({TextString(kernel.getSpecHash()), TextString(kernel.getName()),
                       TextString(kernel.getSource()), TextString(kernel.getSymbol())});
  }
  eval::VerifyOptions options;
  options.seed = request.getSeed();
  KF_ASSIGN_OR_RETURN(const int reps, ToInt(request.getReps(), "reps"));
  if (reps > 0) options.reps = reps;
  options.threads = context.threads;
  options.backend = backend;
  options.device = context.device;
  if (backend == "cuda") {
    KF_ASSIGN_OR_RETURN(const eval::CudaDeviceSummary gpu,
                        eval::DescribeCudaDevice(context.device));
    options.compile = eval::CudaCompileOptions(gpu.arch);
  }
  options.work_dir = context.scratch_dir / "verify";
  KF_RETURN_IF_ERROR(MakeDirs(options.work_dir, /*private_dir=*/true));
  KF_ASSIGN_OR_RETURN(const eval::ModelVerifyReport report,
                      eval::VerifyModel(graph, kernels, options));

  std::string library;
  if (!report.library.empty()) {
    KF_ASSIGN_OR_RETURN(library, ReadFile(report.library));
  }
  capnp::MallocMessageBuilder builder;
  msg::VerifyReply::Builder reply = builder.initRoot<msg::VerifyReply>();
  reply.setReportJson(eval::ToJson(report));
  reply.setLibrary(BytesData(library));
  reply.setHeader(report.header);
  return msg::EncodePayload(builder);
}

Result<std::string> RunProfile(std::string_view payload, const KernelTaskContext& context) {
  KF_ASSIGN_OR_RETURN(msg::Payload<msg::ProfileRequest> message,
                      msg::DecodePayload<msg::ProfileRequest>(payload));
  const msg::ProfileRequest::Reader request = message.root();
  switch (request.which()) {
    case msg::ProfileRequest::CANDIDATE:
      return RunEvaluation(request.getCandidate(), /*profile=*/true, context);
    case msg::ProfileRequest::MODEL:
      return RunModelProfile(request.getModel(), context);
    case msg::ProfileRequest::VERIFY:
      return RunVerify(request.getVerify(), context);
  }
  return InvalidArgument(
      "profile: the request is none of candidate, model or verify (from a newer coordinator?)");
}

Result<std::string> Dispatch(std::string_view kind, std::string_view payload,
                             const KernelTaskContext& context) {
  if (kind == "plan") return RunPlan(payload);
  if (kind == "code") return RunCode(payload);
  if (kind == "test") {
    KF_ASSIGN_OR_RETURN(msg::Payload<msg::EvalRequest> message,
                        msg::DecodePayload<msg::EvalRequest>(payload));
    return RunEvaluation(message.root(), /*profile=*/false, context);
  }
  if (kind == "profile") return RunProfile(payload, context);
  return InvalidArgument(fmt::format("'{}' is not a kernel task kind", kind));
}

}  // namespace

bool IsKernelTaskKind(std::string_view kind) {
  return kind == "plan" || kind == "code" || kind == "test" || kind == "profile";
}

Result<std::string> RunKernelTask(std::string_view kind, std::string_view payload,
                                  const KernelTaskContext& context) {
  // Decoding already turned damaged payloads into errors; this catches what the libraries below
  // may still throw (a capnp builder limit, std::bad_alloc), so no exception leaves the task.
  try {
    Result<std::string> output = Dispatch(kind, payload, context);
    if (!output.ok()) return output.status().WithContext(kind);
    return output;
  } catch (const kj::Exception& e) {
    return Internal(fmt::format("{}: {}", kind, e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return Internal(fmt::format("{}: {}", kind, e.what()));
  }
}

Status CheckGpuAfterEvaluation(const eval::EvalReport& report, int device, ProcessRunner& runner) {
  if (report.reason.find(kContextLost) == std::string::npos) return Status::Ok();
  ProcessSpec spec;
  spec.argv = {eval::HarnessPath().string(), "--check-device", "--backend", "cuda", "--device",
               std::to_string(device)};
  spec.timeout_ms = kDeviceCheckTimeoutMs;
  KF_ASSIGN_OR_RETURN(const ProcessResult check, runner.Run(spec));
  if (check.Succeeded()) return Status::Ok();
  std::string why = check.stderr_bytes;
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  return Unavailable(fmt::format(
      "GPU {} is unusable: the candidate's kernel faulted ({}), and a device check in a fresh "
      "process then failed ({}{}{})",
      device, report.reason, check.Describe(), why.empty() ? "" : ": ", why));
}

Result<agents::Params> ReadParams(capnp::List<msg::Param>::Reader params) {
  agents::Params out;
  for (const msg::Param::Reader param : params) {
    const std::string name = TextString(param.getName());
    if (!out.emplace(name, TextString(param.getValue())).second) {
      return InvalidArgument(fmt::format("parameter '{}' is given twice", name));
    }
  }
  return out;
}

void WriteParams(const agents::Params& params, capnp::List<msg::Param>::Builder out) {
  capnp::uint i = 0;
  for (const auto& [name, value] : params) {
    if (i >= out.size()) break;
    out[i].setName(name);
    out[i].setValue(value);
    ++i;
  }
}

}  // namespace kfleet::worker
