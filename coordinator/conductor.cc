#include "coordinator/conductor.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "agents/llm_config.h"
#include "agents/llm_prompts.h"
#include "agents/search.h"
#include "agents/template_family.h"
#include "common/log.h"
#include "coordinator/llm_search.h"
#include "eval/model_verify.h"
#include "eval/report.h"
#include "eval/toolchain.h"
#include "messages/kernel.capnp.h"
#include "messages/payload.h"
#include "planner/cpu_calibration.h"
#include "planner/plan.h"

namespace kfleet::coordinator {
namespace {

using nlohmann::json;
using storage::CandidateRow;
using storage::CandidateState;
using storage::JobRow;
using storage::KernelJobRow;
using storage::KernelJobState;
using storage::TaskKind;
using storage::TaskRow;
using storage::TaskState;

// Task time limits: rendering and planning are quick; a test compiles and runs several stages.
constexpr int64_t kPlanTimeoutMs = 120'000;
constexpr int64_t kCodeTimeoutMs = 120'000;
constexpr int64_t kTestTimeoutMs = 600'000;
constexpr int64_t kProfileTimeoutMs = 600'000;
constexpr int64_t kModelTimeoutMs = 1'800'000;

// Priorities within a job: finish what is started before starting more, and time the model
// first and last.
constexpr double kModelBonus = 4;
constexpr double kProfileBonus = 3;
constexpr double kTestBonus = 2;
constexpr double kCodeBonus = 1;
constexpr double kPlanBonus = 0.5;

constexpr std::string_view kPhaseProfiling = "profiling";
constexpr std::string_view kPhaseSearching = "searching";
constexpr std::string_view kPhaseVerifying = "verifying";
constexpr std::string_view kPhaseFinished = "finished";

json ParseObject(const std::string& text) {
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_object() ? parsed : json::object();
}

capnp::Data::Reader DataOf(std::string_view bytes) {
  return {reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()};
}

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

std::string DataString(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

json ParamsJson(capnp::List<msg::Param>::Reader params) {
  json out = json::object();
  for (msg::Param::Reader p : params) out[Text(p.getName())] = Text(p.getValue());
  return out;
}

agents::Params ParamsFromJson(const std::string& text) {
  agents::Params params;
  const json object = ParseObject(text);
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (it.value().is_string()) params[it.key()] = it.value().get<std::string>();
  }
  return params;
}

void SetParams(capnp::List<msg::Param>::Builder out, const agents::Params& params) {
  unsigned i = 0;
  for (const auto& [name, value] : params) {
    out[i].setName(name);
    out[i].setValue(value);
    ++i;
  }
}

// One line, at most `limit` characters: errors go into events and tables.
std::string OneLine(std::string text, size_t limit = 300) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  if (text.size() > limit) text = text.substr(0, limit - 3) + "...";
  return text;
}

double CandidateSolFraction(const KernelJobRow& kernel_job, const CandidateRow& candidate) {
  if (!candidate.median_us.has_value() || *candidate.median_us <= 0) return 0;
  return kernel_job.sol_us / *candidate.median_us;
}

std::string Seconds(double s) { return fmt::format("{:.0f} s", s); }

// File-name-safe form of a kernel name: "gemm+gelu_tanh 128x768x3072 f32" -> "gemm-gelu_tanh-...".
std::string Slug(const std::string& name) {
  std::string out;
  for (char c : name) {
    const bool keep = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == 'x';
    if (keep) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.substr(0, 60);
}

// What the LLM's prompts say about a kernel job besides its spec.
void FillBrief(const JobRow& job, const KernelJobRow& kernel_job, msg::LlmBrief::Builder brief) {
  brief.setKernelName(kernel_job.name);
  brief.setBaselineUs(kernel_job.baseline_us);
  brief.setSolUs(kernel_job.sol_us);
  brief.setTarget(ParseObject(job.summary_json).value("device", std::string()));
}

std::string KernelSymbol(int64_t kernel_job_id) {
  return "kf_k" + std::to_string(kernel_job_id) + "_run";
}

}  // namespace

Conductor::Conductor(storage::Store& store, Scheduler& scheduler, Clock& clock,
                     const ConductorOptions& options)
    : store_(store), scheduler_(scheduler), clock_(clock), options_(options) {}

void Conductor::TaskEnded(int64_t task_id, int64_t job_id) {
  if (active_jobs_.count(job_id)) ended_.push_back(task_id);
}

void Conductor::JobCancelled(int64_t job_id) { active_jobs_.erase(job_id); }

Status Conductor::Event(int64_t job_id, std::string_view kind, const std::string& data_json) {
  return store_.events().Append(job_id, kind, data_json).status();
}

Status Conductor::Enqueue(const JobRow& job, TaskKind kind, std::optional<int64_t> kernel_job_id,
                          std::optional<int64_t> candidate_id, std::string payload,
                          double priority_bonus, int64_t timeout_ms, bool exclusive) {
  // Kernel jobs share the fleet: one that has spent more of its budget goes behind the others
  // (by up to most of one priority step), so a kernel job with slow tests cannot starve the rest.
  if (kernel_job_id.has_value()) {
    KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(*kernel_job_id));
    KF_ASSIGN_OR_RETURN(int64_t spent_us,
                        store_.tasks().KernelJobAttemptMicros(*kernel_job_id, clock_.NowUs()));
    if (kernel_job.budget_ms > 0) {
      const double spent =
          static_cast<double>(spent_us) / 1000.0 / static_cast<double>(kernel_job.budget_ms);
      priority_bonus -= 0.9 * std::min(1.0, spent);
    }
  }
  storage::NewTask task;
  task.job_id = job.id;
  task.kernel_job_id = kernel_job_id;
  task.candidate_id = candidate_id;
  task.kind = kind;
  task.priority = job.priority + priority_bonus;
  // Planning and rendering are CPU work whatever the target: any worker's CPU slot will do.
  task.backend =
      kind == TaskKind::kPlan || kind == TaskKind::kCode ? storage::Backend::kCpu : job.target;
  task.exclusive_device = exclusive;
  task.payload = std::move(payload);
  task.timeout_ms = timeout_ms;
  task.max_attempts = options_.max_attempts;
  KF_RETURN_IF_ERROR(store_.tasks().Enqueue(task).status());
  return scheduler_.JobSubmitted(job.id);
}

Result<int64_t> Conductor::SubmitModel(const ModelSubmission& submission) {
  if (submission.target == storage::Backend::kHip) {
    return FailedPrecondition(
        "this coordinator searches kernels for the cpu and cuda targets; hip search arrives with "
        "its backend (`kfleet plan MODEL --target mi300x` ranks a model for an AMD GPU)");
  }
  if (submission.bytes.empty()) return InvalidArgument("the model file is empty");
  planner::ImportOptions import;
  KF_ASSIGN_OR_RETURN(import.compute_dtype, planner::ParseComputeDtype(submission.dtype));
  // A corrupt or unsupported model is refused here, before anything is stored or queued.
  KF_ASSIGN_OR_RETURN(planner::Graph graph,
                      planner::ImportOnnxBytes(submission.bytes, submission.file_name, "", import));
  KF_ASSIGN_OR_RETURN(const SearchAgent agent, ParseSearchAgent(submission.agent));
  std::string llm_description;
  if (agent != SearchAgent::kTemplate) {
    if (submission.llm_json.empty()) {
      return InvalidArgument(fmt::format(
          "the {} agent needs a language model: give --llm-endpoint URL or --llm-config FILE",
          SearchAgentName(agent)));
    }
    Result<agents::LlmConfig> llm = agents::LlmConfigFromJson(submission.llm_json);
    if (!llm.ok()) return llm.status();
    llm_description = llm->Describe();
  }
  if (submission.budget_usd < 0 || !std::isfinite(submission.budget_usd)) {
    return InvalidArgument("the money budget must be a positive amount");
  }
  const int64_t top = submission.top > 0 ? submission.top : options_.default_top;
  const int64_t budget_ms =
      submission.budget_ms > 0 ? submission.budget_ms : options_.default_budget_ms;

  KF_ASSIGN_OR_RETURN(std::string hash, store_.blobs().Put(submission.bytes));
  KF_ASSIGN_OR_RETURN(int64_t model_id,
                      store_.models().Create({submission.file_name, hash, "onnx"}));
  storage::NewJob new_job;
  new_job.kind = storage::JobKind::kModel;
  new_job.name = submission.name.empty() ? submission.file_name : submission.name;
  new_job.model_id = model_id;
  new_job.target = submission.target;
  new_job.priority = submission.priority;
  new_job.budget_ms = budget_ms;
  new_job.options_json =
      json{{"top", top},
           {"file", submission.file_name},
           {"nodes", graph.nodes.size()},
           {"dtype", submission.dtype},
           {"agent", SearchAgentName(agent)},
           {"llm", agent == SearchAgent::kTemplate ? std::string() : submission.llm_json},
           {"budget_usd", submission.budget_usd}}
          .dump();
  new_job.phase = std::string(kPhaseProfiling);
  KF_ASSIGN_OR_RETURN(int64_t job_id, store_.jobs().Create(new_job));
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));

  capnp::MallocMessageBuilder builder;
  msg::ModelProfileRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initModel();
  request.setModel(DataOf(submission.bytes));
  request.setReps(static_cast<uint32_t>(options_.model_reps));
  request.setSeed(options_.seed);
  request.setBackend(std::string(storage::Name(job.target)));
  request.setDtype(submission.dtype);
  KF_RETURN_IF_ERROR(Enqueue(job, TaskKind::kProfile, std::nullopt, std::nullopt,
                             msg::EncodePayload(builder), kModelBonus, kModelTimeoutMs,
                             /*exclusive=*/true));
  KF_RETURN_IF_ERROR(
      Event(job_id, "job.submitted",
            json{{"name", new_job.name},
                 {"model", submission.file_name},
                 {"nodes", graph.nodes.size()},
                 {"budget_ms", budget_ms},
                 {"top", top},
                 {"target", storage::Name(job.target)},
                 {"dtype", submission.dtype.empty() ? "as exported" : submission.dtype},
                 {"agent", SearchAgentName(agent)},
                 {"llm", llm_description},
                 {"budget_usd", submission.budget_usd}}
                .dump()));
  KF_RETURN_IF_ERROR(Event(job_id, "job.phase", json{{"phase", kPhaseProfiling}}.dump()));
  active_jobs_.insert(job_id);
  log::Info("job.submitted").Kv("job", job_id).Kv("kind", "model").Kv("model", new_job.name);
  return job_id;
}

Status Conductor::Recover() {
  KF_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.jobs().List());
  for (const JobRow& job : jobs) {
    if (job.kind != storage::JobKind::kModel || job.finished_us.has_value()) continue;
    active_jobs_.insert(job.id);
    touched_jobs_.insert(job.id);
    KF_ASSIGN_OR_RETURN(std::vector<KernelJobRow> kernels, store_.kernel_jobs().ListByJob(job.id));
    for (const KernelJobRow& k : kernels) {
      if (k.state == KernelJobState::kSearching) touched_kernel_jobs_.insert(k.id);
    }
  }
  if (!active_jobs_.empty()) {
    log::Info("conductor.resumed").Kv("jobs", static_cast<int64_t>(active_jobs_.size()));
  }
  return Status::Ok();
}

Status Conductor::Resync() {
  ended_.clear();
  active_jobs_.clear();
  touched_kernel_jobs_.clear();
  touched_jobs_.clear();
  return Recover();
}

Status Conductor::Advance() {
  for (int64_t task_id : std::exchange(ended_, {})) {
    KF_ASSIGN_OR_RETURN(TaskRow task, store_.tasks().Get(task_id));
    KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(task.job_id));
    if (job.finished_us.has_value()) continue;
    Status applied = Status::Ok();
    if (task.kind == TaskKind::kProfile && !task.candidate_id.has_value()) {
      applied = job.phase == kPhaseVerifying ? OnVerified(job, task) : OnModelProfiled(job, task);
    } else if (task.kind == TaskKind::kPlan) {
      applied = OnPlanned(task);
    } else if (task.kind == TaskKind::kCode) {
      applied = OnCoded(task);
    } else if (task.kind == TaskKind::kTest) {
      applied = OnTested(task);
    } else if (task.kind == TaskKind::kProfile) {
      applied = OnCandidateProfiled(task);
    }
    KF_RETURN_IF_ERROR(applied);
    if (task.kernel_job_id.has_value()) touched_kernel_jobs_.insert(*task.kernel_job_id);
  }

  // Wall-clock budgets: a job past its search time starts nothing new.
  const int64_t now = clock_.MonotonicUs();
  if (now >= next_timer_us_) {
    next_timer_us_ = now + options_.timer_interval_ms * 1000;
    for (int64_t job_id : active_jobs_) {
      KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));
      if (job.phase != kPhaseSearching) continue;
      const json summary = ParseObject(job.summary_json);
      const int64_t started = summary.value("search_started_us", int64_t{0});
      if (clock_.NowUs() - started < job.budget_ms * 1000) continue;
      // Work not started yet is dropped; what runs finishes, then each kernel job stops.
      KF_ASSIGN_OR_RETURN(std::vector<KernelJobRow> kernels,
                          store_.kernel_jobs().ListByJob(job_id));
      for (const KernelJobRow& k : kernels) {
        if (k.state != KernelJobState::kSearching) continue;
        KF_RETURN_IF_ERROR(store_.tasks().CancelQueuedOfKernelJob(k.id).status());
        touched_kernel_jobs_.insert(k.id);
      }
    }
  }

  for (int64_t kernel_job_id : std::exchange(touched_kernel_jobs_, {})) {
    KF_RETURN_IF_ERROR(NextRound(kernel_job_id));
  }
  for (int64_t job_id : std::exchange(touched_jobs_, {})) {
    KF_RETURN_IF_ERROR(MaybeFinishSearch(job_id));
  }
  return Status::Ok();
}

Result<std::string> Conductor::ModelBytes(const JobRow& job) {
  if (!job.model_id.has_value())
    return Internal("model job " + std::to_string(job.id) + " has no model");
  KF_ASSIGN_OR_RETURN(storage::ModelRow model, store_.models().Get(*job.model_id));
  return store_.blobs().Get(model.blob_hash, storage::BlobCheck::kSizeAndHash);
}

Status Conductor::FailJob(int64_t job_id, const std::string& error) {
  KF_ASSIGN_OR_RETURN(bool changed,
                      store_.jobs().SetState(job_id, storage::JobState::kFailed, error));
  active_jobs_.erase(job_id);
  if (!changed) return Status::Ok();
  log::Warn("job.failed").Kv("job", job_id).Kv("error", error);
  return Event(job_id, "job.finished", json{{"state", "failed"}, {"error", error}}.dump());
}

Status Conductor::FinishJob(int64_t job_id) {
  KF_RETURN_IF_ERROR(store_.jobs().SetPhase(job_id, kPhaseFinished).status());
  KF_ASSIGN_OR_RETURN(bool changed, store_.jobs().SetState(job_id, storage::JobState::kDone));
  active_jobs_.erase(job_id);
  if (!changed) return Status::Ok();
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));
  const json summary = ParseObject(job.summary_json);
  log::Info("job.finished").Kv("job", job_id).Kv("state", "done");
  return Event(job_id, "job.finished",
               json{{"state", "done"},
                    {"projected_speedup", summary.value("projected_speedup", 1.0)},
                    {"measured_speedup", summary.value("measured_speedup", 0.0)}}
                   .dump());
}

namespace {

std::string ToUpper(std::string text) {
  for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// The device the plan's roofline uses: this CPU as the worker calibrated it, or the catalog's
// entry for the GPU the worker measured on (matched by name: "NVIDIA H200" -> h200).
Result<planner::DeviceModel> PlanningDevice(const JobRow& job,
                                            msg::ModelProfileReply::Reader profile) {
  const planner::DeviceCatalog& catalog = planner::DeviceCatalog::Builtin();
  if (job.target == storage::Backend::kCpu) {
    planner::CpuCalibration calibration;
    calibration.cpu_model = Text(profile.getCpuModel());
    calibration.logical_cores = static_cast<int>(profile.getLogicalCores());
    calibration.copy_bytes_per_s = profile.getCopyBytesPerS();
    calibration.matmul_flops_per_s = profile.getMatmulFlopsPerS();
    KF_ASSIGN_OR_RETURN(planner::DeviceModel generic, catalog.Find("cpu"));
    if (calibration.copy_bytes_per_s > 0 && calibration.matmul_flops_per_s > 0) {
      return planner::CpuDeviceFromCalibration(generic, calibration);
    }
    return generic;
  }
  const std::string measured = ToUpper(Text(profile.getDevice()));
  const std::string backend(storage::Name(job.target));
  std::optional<planner::DeviceModel> fallback;
  for (const std::string& id : catalog.Ids()) {
    KF_ASSIGN_OR_RETURN(planner::DeviceModel device, catalog.Find(id));
    if (device.backend != backend) continue;
    if (measured.find(ToUpper(id)) != std::string::npos) return device;
    if (!fallback) fallback = device;
  }
  if (!fallback) return NotFound("the device catalog has no " + backend + " device");
  log::Warn("conductor.device_unknown")
      .Kv("job", job.id)
      .Kv("device", Text(profile.getDevice()))
      .Kv("using", fallback->id);
  return *fallback;
}

}  // namespace

Status Conductor::OnModelProfiled(const JobRow& job, const TaskRow& task) {
  if (task.state != TaskState::kDone) {
    return FailJob(job.id, "measuring the model's baseline failed: " + OneLine(task.error));
  }
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::ModelProfileReply>(task.result));
  msg::ModelProfileReply::Reader profile = reply.root();

  KF_ASSIGN_OR_RETURN(planner::DeviceModel device, PlanningDevice(job, profile));
  planner::PlanOptions plan_options;
  for (msg::NodeTime::Reader node : profile.getNodes()) {
    plan_options.measured_node_s[Text(node.getName())] = node.getUs() * 1e-6;
  }
  KF_ASSIGN_OR_RETURN(std::string bytes, ModelBytes(job));
  planner::ImportOptions import;
  KF_ASSIGN_OR_RETURN(
      import.compute_dtype,
      planner::ParseComputeDtype(ParseObject(job.options_json).value("dtype", std::string())));
  Result<planner::Graph> graph = planner::ImportOnnxBytes(bytes, job.name, "", import);
  if (!graph.ok()) return FailJob(job.id, "importing the model: " + graph.status().message());
  Result<planner::PlannedModel> planned =
      planner::PlanGraph(std::move(*graph), device, plan_options);
  if (!planned.ok()) return FailJob(job.id, "planning the model: " + planned.status().message());
  const planner::ModelPlan& plan = planned->plan;

  const int64_t top = ParseObject(job.options_json).value("top", int64_t{options_.default_top});
  const std::string backend(storage::Name(job.target));
  KF_ASSIGN_OR_RETURN(const std::vector<std::unique_ptr<agents::TemplateFamily>> families,
                      agents::TemplateFamiliesFor(backend));
  // The LLM agent writes kernels no template covers.
  const bool llm_writes_any =
      JobAgentOf(ParseObject(job.options_json)).agent != SearchAgent::kTemplate;
  // Which kernel jobs the templates (or the LLM) can implement, in rank order; the first `top`
  // are searched.
  std::vector<std::string> unsupported(plan.jobs.size());
  std::vector<bool> searched(plan.jobs.size(), false);
  double searched_saving = 0;
  int64_t searched_count = 0;
  for (size_t i = 0; i < plan.jobs.size() && searched_count < top; ++i) {
    const planner::KernelJobPlan& kernel = plan.jobs[i];
    Result<planner::Graph> spec =
        planner::ImportOnnxBytes(kernel.spec.onnx_model, kernel.spec.name, "", {});
    Status fits = spec.status();
    if (fits.ok()) {
      Result<agents::SpecView> view = agents::AnalyzeSpec(*spec);
      fits = view.status();
      if (fits.ok() && !llm_writes_any) {
        fits = agents::SupportingTemplates(*view, families).status();
      }
    }
    if (!fits.ok()) {
      unsupported[i] = fmt::format("no {} template fits: {}", backend == "cuda" ? "CUDA" : "CPU",
                                   OneLine(fits.message(), 400));
      continue;
    }
    searched[i] = true;
    searched_saving += std::max(kernel.expected_saving_s, 0.0);
    ++searched_count;
  }
  // The job's wall time, times the slots that run in parallel, split by expected saving.
  const int64_t parallel = std::max<int64_t>(1, scheduler_.TotalSlots(SlotClass::kCpu));
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    const planner::KernelJobPlan& kernel = plan.jobs[i];
    storage::NewKernelJob row;
    row.job_id = job.id;
    row.name = kernel.spec.name;
    row.spec_hash = kernel.spec.hash;
    row.spec = kernel.spec.onnx_model;
    row.count = kernel.count;
    row.baseline_us = kernel.baseline_s * 1e6;
    row.sol_us = kernel.sol_s * 1e6;
    row.expected_saving_us = kernel.expected_saving_s * 1e6;
    row.rank = static_cast<int64_t>(i);
    row.family = kernel.spec.family;
    row.share = kernel.share;
    if (searched[i]) {
      const double fraction = searched_saving > 0
                                  ? std::max(kernel.expected_saving_s, 0.0) / searched_saving
                                  : 1.0 / static_cast<double>(searched_count);
      // Every searched job gets at least a quarter of an even share, so that a small expected
      // saving still buys a few rounds.
      const double total = static_cast<double>(job.budget_ms * parallel);
      const double floor = total / (4.0 * static_cast<double>(searched_count));
      row.budget_ms =
          std::max<int64_t>(1000, static_cast<int64_t>(std::max(total * fraction, floor)));
      row.state = KernelJobState::kSearching;
    } else if (!unsupported[i].empty()) {
      row.state = KernelJobState::kFailed;
      row.note = unsupported[i];
    } else {
      row.state = KernelJobState::kDone;
      row.note = fmt::format("not searched: outside the top {} by expected saving", top);
    }
    KF_ASSIGN_OR_RETURN(int64_t id, store_.kernel_jobs().Create(row));
    if (searched[i]) touched_kernel_jobs_.insert(id);
  }

  json what_if = json::array();
  for (const planner::WhatIf& w : plan.what_if)
    what_if.push_back({{"top", w.top}, {"speedup", w.speedup}});
  const json summary = {
      {"device", Text(profile.getDevice())}, {"baseline_model_us", profile.getTotalUs()},
      {"model_us", plan.model_s * 1e6},      {"time_source", planner::TimeSourceName(plan.source)},
      {"kernel_jobs", plan.jobs.size()},     {"opaque_jobs", plan.opaque_jobs.size()},
      {"searched", searched_count},          {"what_if", what_if},
      {"search_started_us", clock_.NowUs()}};
  KF_RETURN_IF_ERROR(store_.jobs().SetSummary(job.id, summary.dump()));
  KF_RETURN_IF_ERROR(store_.jobs().SetPhase(job.id, kPhaseSearching).status());
  KF_RETURN_IF_ERROR(Event(job.id, "job.phase",
                           json{{"phase", kPhaseSearching},
                                {"baseline_model_us", profile.getTotalUs()},
                                {"kernel_jobs", plan.jobs.size()},
                                {"searched", searched_count}}
                               .dump()));
  touched_jobs_.insert(job.id);
  return Status::Ok();
}

Status Conductor::StopKernelJob(const KernelJobRow& kernel_job, const std::string& note) {
  KernelJobState state = KernelJobState::kDone;
  std::string why = note;
  if (!kernel_job.best_candidate_id.has_value()) {
    state = KernelJobState::kFailed;
    KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> candidates,
                        store_.candidates().ListByKernelJob(kernel_job.id));
    const bool any_judged = std::any_of(candidates.begin(), candidates.end(), [](const auto& c) {
      return c.state == CandidateState::kFailed || c.state == CandidateState::kPassed;
    });
    why = (any_judged ? "no candidate passed the tests; " : "no candidate was tested in time; ") +
          note;
  }
  KF_RETURN_IF_ERROR(store_.kernel_jobs().Finish(kernel_job.id, state, why).status());
  touched_jobs_.insert(kernel_job.job_id);
  json data = {{"kernel", kernel_job.name},
               {"kernel_job", kernel_job.id},
               {"state", storage::Name(state)},
               {"note", why}};
  if (kernel_job.best_candidate_id.has_value()) {
    KF_ASSIGN_OR_RETURN(CandidateRow best, store_.candidates().Get(*kernel_job.best_candidate_id));
    data["speedup"] = best.speedup.value_or(0);
  }
  return Event(kernel_job.job_id, "kernel.done", data.dump());
}

Status Conductor::NextRound(int64_t kernel_job_id) {
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(kernel_job_id));
  if (kernel_job.state != KernelJobState::kSearching) return Status::Ok();
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(kernel_job.job_id));
  if (job.finished_us.has_value()) return Status::Ok();
  KF_ASSIGN_OR_RETURN(bool open, store_.tasks().HasOpenKernelJobTasks(kernel_job_id));
  if (open) return Status::Ok();

  KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> candidates,
                      store_.candidates().ListByKernelJob(kernel_job_id));
  const json summary = ParseObject(job.summary_json);
  const int64_t started_us = summary.value("search_started_us", int64_t{0});
  KF_ASSIGN_OR_RETURN(int64_t spent_us,
                      store_.tasks().KernelJobAttemptMicros(kernel_job_id, clock_.NowUs()));
  double best = 0;
  double best_sol = 0;
  // The best before the last `plateau_rounds` rounds, to see whether they gained anything.
  double best_before = 0;
  int64_t last_round_count = 0;
  for (const CandidateRow& c : candidates) {
    if (c.round == kernel_job.rounds - 1) ++last_round_count;
    if (c.state != CandidateState::kProfiled || !c.speedup.has_value()) continue;
    if (*c.speedup > best) {
      best = *c.speedup;
      best_sol = CandidateSolFraction(kernel_job, c);
    }
    if (c.round < kernel_job.rounds - options_.plateau_rounds)
      best_before = std::max(best_before, *c.speedup);
  }

  const JobAgent agent = JobAgentOf(ParseObject(job.options_json));
  bool llm_on = agent.agent != SearchAgent::kTemplate;
  std::string llm_spent;
  double llm_cost = 0;
  if (llm_on) {
    KF_ASSIGN_OR_RETURN(storage::LlmSpend spend, store_.llm_calls().SpendByJob(job.id));
    llm_cost = spend.cost_usd;
    if (agent.budget_usd > 0 && spend.cost_usd >= agent.budget_usd) {
      llm_on = false;
      llm_spent = fmt::format("the LLM budget of ${:.2f} is spent (${:.2f})", agent.budget_usd,
                              spend.cost_usd);
    }
  }

  std::string stop;
  if (clock_.NowUs() - started_us >= job.budget_ms * 1000) {
    stop = "the job's search time (" + Seconds(job.budget_ms / 1000.0) + ") ran out";
  } else if (spent_us >= kernel_job.budget_ms * 1000) {
    stop = "its budget of " + Seconds(kernel_job.budget_ms / 1000.0) + " of task time is spent";
  } else if (agent.agent == SearchAgent::kLlm && !llm_on) {
    stop = llm_spent;
  } else if (best_sol >= options_.stop_sol_fraction && best_sol <= 1.0) {
    // Above 1 the floor itself is wrong (a calibration taken on a busy machine): keep going.
    stop = fmt::format("reached {:.0f}% of speed-of-light", best_sol * 100);
  } else if (static_cast<int64_t>(candidates.size()) >= options_.max_candidates) {
    stop = fmt::format("tried {} candidates, the most per kernel", candidates.size());
  } else if (kernel_job.rounds > 0 && last_round_count == 0) {
    stop = agent.agent == SearchAgent::kTemplate ? "the templates' parameter space is exhausted"
           : agent.agent == SearchAgent::kLlm
               ? "the LLM proposed nothing in the last round (see the plan.failed events)"
               : "neither the templates nor the LLM proposed anything in the last round";
  } else if (kernel_job.rounds >= options_.plateau_rounds && best_before > 0 &&
             best <= best_before * (1 + options_.noise)) {
    stop = fmt::format("no gain above {:.0f}% in the last {} rounds", options_.noise * 100,
                       options_.plateau_rounds);
  }
  if (!stop.empty()) return StopKernelJob(kernel_job, stop);

  KF_ASSIGN_OR_RETURN(int64_t round, store_.kernel_jobs().StartRound(kernel_job_id));
  const bool migrate =
      round > 0 && options_.migrate_every > 0 && round % options_.migrate_every == 0;
  // Hybrid: the templates seed round 0 and the LLM joins from round 1, with their best as
  // parents; a spec no template fits gets only the LLM, from the start.
  bool templates = agent.agent == SearchAgent::kTemplate;
  if (agent.agent == SearchAgent::kHybrid) {
    Result<planner::Graph> spec =
        planner::ImportOnnxBytes(kernel_job.spec, kernel_job.name, "", {});
    KF_ASSIGN_OR_RETURN(const std::vector<std::unique_ptr<agents::TemplateFamily>> families,
                        agents::TemplateFamiliesFor(storage::Name(job.target)));
    Result<agents::SpecView> view =
        spec.ok() ? agents::AnalyzeSpec(*spec) : Result<agents::SpecView>(spec.status());
    templates = view.ok() && agents::SupportingTemplates(*view, families).ok();
  }
  const bool llm_round = llm_on && (agent.agent == SearchAgent::kLlm || round > 0 || !templates);
  if (!llm_spent.empty() && agent.agent == SearchAgent::kHybrid) {
    KF_RETURN_IF_ERROR(
        Event(job.id, "llm.budget", json{{"kernel", kernel_job.name}, {"note", llm_spent}}.dump()));
  }
  for (int island = 0; island < options_.islands; ++island) {
    PlanTask plan;
    plan.island = island;
    plan.round = round;
    plan.migrate = migrate;
    if (templates) {
      plan.count = options_.per_island;
      KF_RETURN_IF_ERROR(EnqueuePlan(job, agent, kernel_job, candidates, plan));
    }
    if (llm_round) {
      plan.llm = true;
      plan.count = options_.llm_per_island;
      KF_RETURN_IF_ERROR(EnqueuePlan(job, agent, kernel_job, candidates, plan));
    }
  }
  json round_event = {{"kernel", kernel_job.name},
                      {"kernel_job", kernel_job_id},
                      {"round", round},
                      {"candidates", candidates.size()},
                      {"best_speedup", best},
                      {"migrate", migrate},
                      {"agent", llm_round ? (templates ? "hybrid" : "llm") : "template"}};
  if (agent.agent != SearchAgent::kTemplate) round_event["llm_cost_usd"] = llm_cost;
  return Event(job.id, "kernel.round", round_event.dump());
}

Status Conductor::EnqueuePlan(const JobRow& job, const JobAgent& agent,
                              const KernelJobRow& kernel_job,
                              const std::vector<CandidateRow>& candidates, const PlanTask& plan) {
  capnp::MallocMessageBuilder builder;
  msg::PlanRequest::Builder request = builder.initRoot<msg::PlanRequest>();
  request.setSpecOnnx(DataOf(kernel_job.spec));
  request.setIsland(static_cast<uint32_t>(plan.island));
  request.setRound(static_cast<uint32_t>(plan.round));
  request.setCount(static_cast<uint32_t>(plan.count));
  request.setSeed(options_.seed * 1'000'003 + static_cast<uint64_t>(kernel_job.id));
  request.setMigrate(plan.migrate);
  request.setBackend(std::string(storage::Name(job.target)));
  auto history = request.initHistory(static_cast<unsigned>(candidates.size()));
  for (size_t i = 0; i < candidates.size(); ++i) {
    const CandidateRow& c = candidates[i];
    msg::CandidateOutcome::Builder out = history[static_cast<unsigned>(i)];
    out.setId(static_cast<uint64_t>(c.id));
    out.setIsland(static_cast<uint32_t>(c.island));
    out.setTemplate(c.template_name);
    const agents::Params params = ParamsFromJson(c.params_json);
    SetParams(out.initParams(static_cast<unsigned>(params.size())), params);
    const char* state = c.state == CandidateState::kProfiled ? "profiled"
                        : c.state == CandidateState::kPassed ? "passed"
                        : c.state == CandidateState::kFailed ? "failed"
                                                             : "pending";
    out.setState(state);
    out.setFailedStage(c.failed_stage);
    out.setSpeedup(c.speedup.value_or(0));
    out.setAgent(c.agent);
    out.setPlan(c.plan);
    out.setMedianUs(c.median_us.value_or(0));
    out.setFailure(OneLine(c.error, 400));
  }
  if (plan.llm) {
    request.setAgent("llm");
    request.setLlm(agent.llm_json);
    FillBrief(job, kernel_job, request.initBrief());
    request.setAdvice(plan.advice);
    request.setRedesignOf(static_cast<uint64_t>(plan.redesign_of));
    request.setIslands(static_cast<uint32_t>(options_.islands));
  }
  const int64_t timeout_ms =
      plan.llm ? LlmTaskTimeoutMs(agent.llm_json, plan.count, kPlanTimeoutMs) : kPlanTimeoutMs;
  return Enqueue(job, TaskKind::kPlan, kernel_job.id, std::nullopt, msg::EncodePayload(builder),
                 kPlanBonus, timeout_ms);
}

Status Conductor::EnqueueLlmCode(const JobRow& job, const JobAgent& agent,
                                 const KernelJobRow& kernel_job, int64_t candidate_id,
                                 const std::string& sketch, const std::string& previous_source,
                                 const std::string& feedback) {
  KF_ASSIGN_OR_RETURN(std::vector<std::string> examples,
                      RetrieveExamples(store_, kernel_job, job.target,
                                       static_cast<size_t>(std::max(options_.llm_examples, 0))));
  capnp::MallocMessageBuilder builder;
  msg::CodeRequest::Builder code = builder.initRoot<msg::CodeRequest>();
  code.setSpecOnnx(DataOf(kernel_job.spec));
  code.setTemplate("llm");
  code.initParams(0);
  code.setBackend(std::string(storage::Name(job.target)));
  code.setAgent("llm");
  code.setLlm(agent.llm_json);
  FillBrief(job, kernel_job, code.initBrief());
  code.setSketch(sketch);
  auto list = code.initExamples(static_cast<unsigned>(examples.size()));
  for (size_t i = 0; i < examples.size(); ++i) list.set(static_cast<unsigned>(i), examples[i]);
  code.setPreviousSource(previous_source);
  code.setFeedback(feedback);
  return Enqueue(job, TaskKind::kCode, kernel_job.id, candidate_id, msg::EncodePayload(builder),
                 kCodeBonus, LlmTaskTimeoutMs(agent.llm_json, 1, kCodeTimeoutMs));
}

Status Conductor::OnPlanned(const TaskRow& task) {
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(*task.kernel_job_id));
  KF_ASSIGN_OR_RETURN(auto request, msg::DecodePayload<msg::PlanRequest>(task.payload));
  const int64_t island = request.root().getIsland();
  const int64_t round = request.root().getRound();
  const bool llm = Text(request.root().getAgent()) == "llm";
  if (task.state != TaskState::kDone) {
    return Event(task.job_id, "plan.failed",
                 json{{"kernel", kernel_job.name},
                      {"island", island},
                      {"agent", llm ? "llm" : "template"},
                      {"error", OneLine(task.error)}}
                     .dump());
  }
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::PlanReply>(task.result));
  KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> existing,
                      store_.candidates().ListByKernelJob(kernel_job.id));
  std::set<std::string> keys;
  for (const CandidateRow& c : existing) {
    keys.insert(agents::CandidateKey(c.template_name, ParamsFromJson(c.params_json)));
  }
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(task.job_id));
  const JobAgent agent = JobAgentOf(ParseObject(job.options_json));
  std::vector<int64_t> created;
  for (msg::Proposal::Reader proposal : reply.root().getProposals()) {
    const std::string template_name = Text(proposal.getTemplate());
    const json params = ParamsJson(proposal.getParams());
    agents::Params as_map;
    for (const auto& [name, value] : params.items()) as_map[name] = value.get<std::string>();
    // Islands plan in parallel: the same point from two of them is evaluated once. Sketches
    // differ in words, so the LLM's candidates are told apart by their sources instead.
    if (!llm && !keys.insert(agents::CandidateKey(template_name, as_map)).second) continue;
    json parents = json::array();
    for (uint64_t parent : proposal.getParents()) parents.push_back(parent);
    storage::NewCandidate candidate;
    candidate.kernel_job_id = kernel_job.id;
    candidate.island = island;
    candidate.parents_json = parents.dump();
    candidate.agent = llm ? LlmCandidateAgent(agent) : "template";
    candidate.plan = Text(proposal.getNote());
    candidate.params_json = params.dump();
    candidate.round = round;
    candidate.template_name = llm ? "llm" : template_name;
    KF_ASSIGN_OR_RETURN(int64_t candidate_id, store_.candidates().Create(candidate));
    created.push_back(candidate_id);

    if (llm) {
      KF_RETURN_IF_ERROR(
          EnqueueLlmCode(job, agent, kernel_job, candidate_id, candidate.plan, "", ""));
      continue;
    }
    capnp::MallocMessageBuilder builder;
    msg::CodeRequest::Builder code = builder.initRoot<msg::CodeRequest>();
    code.setSpecOnnx(DataOf(kernel_job.spec));
    code.setTemplate(template_name);
    code.setParams(proposal.getParams());
    code.setBackend(std::string(storage::Name(job.target)));
    KF_RETURN_IF_ERROR(Enqueue(job, TaskKind::kCode, kernel_job.id, candidate_id,
                               msg::EncodePayload(builder), kCodeBonus, kCodeTimeoutMs));
  }
  if (!llm) return Status::Ok();
  // The Designer's calls belong to the candidate they made, when there is one.
  const auto calls = reply.root().getLlmCalls();
  KF_RETURN_IF_ERROR(RecordLlmCalls(
      store_, job.id, kernel_job.id,
      created.size() == 1 ? std::optional<int64_t>(created[0]) : std::nullopt, calls));
  if (!created.empty()) return Status::Ok();
  std::string why = "the Designer proposed nothing";
  for (msg::LlmCallRecord::Reader call : calls) {
    if (!call.getOk() || Text(call.getOutcome()) == "empty") {
      why = Text(call.getError()).empty() ? "the Designer answered with nothing"
                                          : Text(call.getError());
    }
  }
  return Event(job.id, "plan.failed",
               json{{"kernel", kernel_job.name},
                    {"island", island},
                    {"agent", "llm"},
                    {"error", OneLine(why)}}
                   .dump());
}

Status Conductor::CandidateFailed(int64_t candidate_id, std::string_view stage,
                                  std::string_view error, std::string_view report) {
  KF_RETURN_IF_ERROR(
      store_.candidates().RecordFailure(candidate_id, stage, error, report).status());
  KF_ASSIGN_OR_RETURN(CandidateRow candidate, store_.candidates().Get(candidate_id));
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(candidate.kernel_job_id));
  KF_RETURN_IF_ERROR(Event(kernel_job.job_id, "candidate.failed",
                           json{{"kernel", kernel_job.name},
                                {"candidate", candidate_id},
                                {"template", candidate.template_name},
                                {"agent", candidate.agent},
                                {"stage", stage},
                                {"error", OneLine(std::string(error), 200)}}
                               .dump()));
  if (!IsLlmCandidate(candidate)) return Status::Ok();
  return RouteLlmFailure(candidate, stage, error, report);
}

Status Conductor::RouteLlmFailure(const CandidateRow& failed, std::string_view stage,
                                  std::string_view reason, std::string_view report) {
  // Failures of the task itself (a worker error, no answer from the endpoint) and duplicates are
  // not the kernel's: nothing to fix, the next round tries again.
  if (stage == "code" || stage == "test" || stage == "llm" || stage == "duplicate") {
    return Status::Ok();
  }
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(failed.kernel_job_id));
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(kernel_job.job_id));
  if (job.finished_us.has_value() || kernel_job.state != KernelJobState::kSearching) {
    return Status::Ok();
  }
  const json summary = ParseObject(job.summary_json);
  if (clock_.NowUs() - summary.value("search_started_us", int64_t{0}) >= job.budget_ms * 1000) {
    return Status::Ok();
  }
  const JobAgent agent = JobAgentOf(ParseObject(job.options_json));
  if (agent.budget_usd > 0) {
    KF_ASSIGN_OR_RETURN(storage::LlmSpend spend, store_.llm_calls().SpendByJob(job.id));
    if (spend.cost_usd >= agent.budget_usd) return Status::Ok();
  }
  KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> candidates,
                      store_.candidates().ListByKernelJob(kernel_job.id));
  const int attempts = LineageAttempts(candidates, failed);
  const json evaluation = ParseObject(std::string(report));
  const std::string log = evaluation.value("compile", json::object()).value("log", std::string());
  const agents::ConductorVerdict verdict = agents::RouteFailure(stage, reason, log);
  const bool coder = verdict.route == agents::FailureRoute::kCoder;
  json routed = {
      {"kernel", kernel_job.name},    {"candidate", failed.id}, {"stage", stage},
      {"category", verdict.category}, {"attempt", attempts},    {"advice", verdict.advice}};
  if (attempts >= options_.llm_max_attempts) {
    routed["route"] = "none";
    routed["note"] = fmt::format("{} attempts, the most per lineage", attempts);
    return Event(job.id, "candidate.routed", routed.dump());
  }
  routed["route"] = coder ? "coder" : "designer";
  KF_RETURN_IF_ERROR(Event(job.id, "candidate.routed", routed.dump()));
  const std::string evidence = OneLine(verdict.excerpt, 4000);
  if (!coder) {
    PlanTask plan;
    plan.island = static_cast<int>(failed.island);
    plan.round = failed.round;
    plan.llm = true;
    plan.count = 1;
    plan.advice = verdict.advice + (evidence.empty() ? "" : " Evidence: " + evidence);
    plan.redesign_of = failed.id;
    return EnqueuePlan(job, agent, kernel_job, candidates, plan);
  }
  storage::NewCandidate retry;
  retry.kernel_job_id = kernel_job.id;
  retry.island = failed.island;
  retry.parents_json = json::array({failed.id}).dump();
  retry.agent = failed.agent;
  retry.plan = failed.plan;
  retry.round = failed.round;
  retry.template_name = failed.template_name;
  KF_ASSIGN_OR_RETURN(int64_t retry_id, store_.candidates().Create(retry));
  std::string previous;
  if (failed.source_hash.has_value()) {
    KF_ASSIGN_OR_RETURN(previous, store_.blobs().Get(*failed.source_hash));
  }
  // The excerpt keeps its lines: compiler errors read badly on one line.
  const std::string feedback =
      verdict.advice + (verdict.excerpt.empty() ? "" : "\n" + verdict.excerpt);
  return EnqueueLlmCode(job, agent, kernel_job, retry_id, failed.plan, previous, feedback);
}

Status Conductor::OnCoded(const TaskRow& task) {
  const int64_t candidate_id = *task.candidate_id;
  if (task.state != TaskState::kDone) return CandidateFailed(candidate_id, "code", task.error);
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::CodeReply>(task.result));
  KF_ASSIGN_OR_RETURN(CandidateRow candidate, store_.candidates().Get(candidate_id));
  KF_RETURN_IF_ERROR(RecordLlmCalls(store_, task.job_id, candidate.kernel_job_id, candidate_id,
                                    reply.root().getLlmCalls()));
  const std::string source = Text(reply.root().getSource());
  const std::string failed_stage = Text(reply.root().getFailedStage());
  if (!failed_stage.empty()) {
    // Kept so that the Coder's next attempt sees what it wrote.
    if (!source.empty()) {
      KF_ASSIGN_OR_RETURN(std::string hash, store_.blobs().Put(source));
      KF_RETURN_IF_ERROR(store_.candidates().SetSource(candidate_id, hash).status());
    }
    return CandidateFailed(candidate_id, failed_stage, Text(reply.root().getFailure()));
  }
  KF_ASSIGN_OR_RETURN(std::string hash, store_.blobs().Put(source));
  KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> siblings,
                      store_.candidates().ListByKernelJob(candidate.kernel_job_id));
  for (const CandidateRow& other : siblings) {
    if (other.id != candidate_id && other.source_hash == hash) {
      return CandidateFailed(candidate_id, "duplicate",
                             "renders the same source as candidate " + std::to_string(other.id));
    }
  }
  const std::string explanation = Text(reply.root().getExplanation());
  // An LLM candidate's plan is its sketch already.
  if (!explanation.empty() && !IsLlmCandidate(candidate)) {
    KF_RETURN_IF_ERROR(store_.candidates()
                           .SetPlan(candidate_id, explanation + " [" + candidate.plan + "]")
                           .status());
  }
  KF_RETURN_IF_ERROR(store_.candidates().SetSource(candidate_id, hash).status());
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(candidate.kernel_job_id));
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(task.job_id));
  capnp::MallocMessageBuilder builder;
  msg::EvalRequest::Builder request = builder.initRoot<msg::EvalRequest>();
  request.setSpecOnnx(DataOf(kernel_job.spec));
  request.setSource(source);
  request.setCandidateId(static_cast<uint64_t>(candidate_id));
  request.setSeed(options_.seed + static_cast<uint64_t>(candidate_id));
  request.setSolUs(kernel_job.sol_us);
  request.setProfile(false);
  request.setBackend(std::string(storage::Name(job.target)));
  return Enqueue(job, TaskKind::kTest, kernel_job.id, candidate_id, msg::EncodePayload(builder),
                 kTestBonus, kTestTimeoutMs);
}

Status Conductor::OnTested(const TaskRow& task) {
  const int64_t candidate_id = *task.candidate_id;
  if (task.state != TaskState::kDone) return CandidateFailed(candidate_id, "test", task.error);
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::EvalReply>(task.result));
  const std::string report_json = Text(reply.root().getReportJson());
  if (!reply.root().getPassed()) {
    const json report = ParseObject(report_json);
    return CandidateFailed(candidate_id, report.value("failed_stage", std::string("test")),
                           report.value("reason", std::string("failed a test stage")), report_json);
  }
  KF_RETURN_IF_ERROR(store_.candidates().RecordTest(candidate_id, true, report_json).status());
  KF_ASSIGN_OR_RETURN(auto request, msg::DecodePayload<msg::EvalRequest>(task.payload));
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(task.job_id));
  capnp::MallocMessageBuilder builder;
  msg::EvalRequest::Builder profile = builder.initRoot<msg::ProfileRequest>().initCandidate();
  profile.setSpecOnnx(request.root().getSpecOnnx());
  profile.setSource(request.root().getSource());
  profile.setCandidateId(request.root().getCandidateId());
  profile.setSeed(request.root().getSeed());
  profile.setSolUs(request.root().getSolUs());
  profile.setProfile(true);
  profile.setBackend(request.root().getBackend());
  return Enqueue(job, TaskKind::kProfile, task.kernel_job_id, candidate_id,
                 msg::EncodePayload(builder), kProfileBonus, kProfileTimeoutMs, /*exclusive=*/true);
}

Status Conductor::OnCandidateProfiled(const TaskRow& task) {
  const int64_t candidate_id = *task.candidate_id;
  if (task.state != TaskState::kDone) return CandidateFailed(candidate_id, "profile", task.error);
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::EvalReply>(task.result));
  const std::string report_json = Text(reply.root().getReportJson());
  const json report = ParseObject(report_json);
  const json profile = report.value("profile", json::object());
  const double speedup = profile.value("speedup", 0.0);
  const double median_us = profile.value("candidate", json::object()).value("median_us", 0.0);
  if (!reply.root().getPassed() || speedup <= 0 || median_us <= 0) {
    return CandidateFailed(candidate_id, report.value("failed_stage", std::string("profile")),
                           report.value("reason", std::string("no timing in the profile report")),
                           report_json);
  }
  KF_RETURN_IF_ERROR(
      store_.candidates().RecordProfile(candidate_id, report_json, median_us, speedup).status());
  KF_ASSIGN_OR_RETURN(KernelJobRow kernel_job, store_.kernel_jobs().Get(*task.kernel_job_id));
  double best = 0;
  if (kernel_job.best_candidate_id.has_value()) {
    KF_ASSIGN_OR_RETURN(CandidateRow current,
                        store_.candidates().Get(*kernel_job.best_candidate_id));
    best = current.speedup.value_or(0);
  }
  if (speedup <= best) return Status::Ok();
  KF_RETURN_IF_ERROR(store_.kernel_jobs().SetBest(kernel_job.id, candidate_id).status());
  KF_ASSIGN_OR_RETURN(CandidateRow candidate, store_.candidates().Get(candidate_id));
  return Event(task.job_id, "kernel.best",
               json{{"kernel", kernel_job.name},
                    {"kernel_job", kernel_job.id},
                    {"candidate", candidate_id},
                    {"template", candidate.template_name},
                    {"speedup", speedup},
                    {"median_us", median_us},
                    {"sol_fraction", kernel_job.sol_us / median_us}}
                   .dump());
}

Status Conductor::MaybeFinishSearch(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));
  if (job.finished_us.has_value() || job.phase != kPhaseSearching) return Status::Ok();
  KF_ASSIGN_OR_RETURN(std::vector<KernelJobRow> kernels, store_.kernel_jobs().ListByJob(job_id));
  for (const KernelJobRow& k : kernels) {
    if (k.state == KernelJobState::kSearching || k.state == KernelJobState::kPending) {
      return Status::Ok();
    }
  }
  json summary = ParseObject(job.summary_json);
  // Amdahl with what the search found: each winner's profiled speedup on its share.
  const double model_us = summary.value("model_us", 0.0);
  double saved_us = 0;
  capnp::MallocMessageBuilder builder;
  msg::VerifyRequest::Builder request = builder.initRoot<msg::ProfileRequest>().initVerify();
  std::vector<std::pair<const KernelJobRow*, std::string>> winners;
  for (const KernelJobRow& k : kernels) {
    if (!k.best_candidate_id.has_value()) continue;
    KF_ASSIGN_OR_RETURN(CandidateRow best, store_.candidates().Get(*k.best_candidate_id));
    const double speedup = best.speedup.value_or(0);
    if (speedup < options_.min_speedup || !best.source_hash.has_value()) continue;
    saved_us += static_cast<double>(k.count) * k.baseline_us * (1 - 1 / speedup);
    KF_ASSIGN_OR_RETURN(std::string source, store_.blobs().Get(*best.source_hash));
    winners.push_back({&k, std::move(source)});
  }
  summary["projected_speedup"] =
      model_us > saved_us && model_us > 0 ? model_us / (model_us - saved_us) : 1.0;
  KF_RETURN_IF_ERROR(store_.jobs().SetSummary(job_id, summary.dump()));
  if (winners.empty()) {
    summary["verify_note"] = "no kernel beat the baseline by 2%: nothing to swap in";
    KF_RETURN_IF_ERROR(store_.jobs().SetSummary(job_id, summary.dump()));
    return FinishJob(job_id);
  }
  auto list = request.initKernels(static_cast<unsigned>(winners.size()));
  for (size_t i = 0; i < winners.size(); ++i) {
    msg::VerifyKernel::Builder out = list[static_cast<unsigned>(i)];
    out.setSpecHash(winners[i].first->spec_hash);
    out.setName(winners[i].first->name);
    out.setSource(winners[i].second);
    out.setSymbol(KernelSymbol(winners[i].first->id));
  }
  KF_ASSIGN_OR_RETURN(std::string model, ModelBytes(job));
  request.setModel(DataOf(model));
  request.setReps(static_cast<uint32_t>(options_.model_reps));
  request.setSeed(options_.seed);
  request.setBackend(std::string(storage::Name(job.target)));
  request.setDtype(ParseObject(job.options_json).value("dtype", std::string()));
  KF_RETURN_IF_ERROR(store_.jobs().SetPhase(job_id, kPhaseVerifying).status());
  KF_RETURN_IF_ERROR(Event(job_id, "job.phase",
                           json{{"phase", kPhaseVerifying},
                                {"kernels", winners.size()},
                                {"projected_speedup", summary["projected_speedup"]}}
                               .dump()));
  return Enqueue(job, TaskKind::kProfile, std::nullopt, std::nullopt, msg::EncodePayload(builder),
                 kModelBonus, kModelTimeoutMs, /*exclusive=*/true);
}

Status Conductor::OnVerified(const JobRow& job, const TaskRow& task) {
  json summary = ParseObject(job.summary_json);
  if (task.state != TaskState::kDone) {
    summary["verify_note"] = "the end-to-end check did not run: " + OneLine(task.error);
    KF_RETURN_IF_ERROR(store_.jobs().SetSummary(job.id, summary.dump()));
    return FailJob(job.id, "end-to-end verification failed: " + OneLine(task.error));
  }
  KF_ASSIGN_OR_RETURN(auto reply, msg::DecodePayload<msg::VerifyReply>(task.result));
  Result<eval::ModelVerifyReport> report =
      eval::ModelVerifyReportFromJson(Text(reply.root().getReportJson()));
  if (!report.ok())
    return FailJob(job.id, "reading the end-to-end report: " + report.status().message());
  json verdicts = json::object();
  int kept = 0;
  for (const eval::KernelVerdict& v : report->kernels) {
    verdicts[v.spec_hash] = {
        {"kept", v.kept}, {"reason", v.reason}, {"occurrences", v.occurrences}};
    if (v.kept) ++kept;
  }
  summary["verdicts"] = verdicts;
  summary["measured_speedup"] = report->outputs_match && kept > 0 ? report->speedup : 1.0;
  summary["baseline_ms"] = report->baseline_ms;
  summary["swapped_ms"] = report->swapped_ms;
  summary["verify_note"] =
      kept == 0
          ? std::string("every kernel was dropped by the end-to-end check")
          : fmt::format("{} of {} kernels kept; outputs match the baseline (max error {:.2g})",
                        kept, report->kernels.size(), report->max_error);
  if (reply.root().getLibrary().size() > 0) {
    KF_ASSIGN_OR_RETURN(std::string hash,
                        store_.blobs().Put(DataString(reply.root().getLibrary())));
    summary["library_blob"] = hash;
    summary["header"] = Text(reply.root().getHeader());
  }
  KF_RETURN_IF_ERROR(store_.jobs().SetSummary(job.id, summary.dump()));
  KF_RETURN_IF_ERROR(Event(job.id, "job.verified",
                           json{{"measured_speedup", summary["measured_speedup"]},
                                {"baseline_ms", report->baseline_ms},
                                {"swapped_ms", report->swapped_ms},
                                {"kept", kept}}
                               .dump()));
  return FinishJob(job.id);
}

Result<JobReport> Conductor::BuildReport(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));
  const json summary = ParseObject(job.summary_json);
  JobReport report;
  report.job_id = job.id;
  report.name = job.name;
  report.target = std::string(storage::Name(job.target));
  report.device = summary.value("device", std::string());
  report.state = std::string(storage::Name(job.state));
  report.phase = job.phase;
  report.error = job.error;
  report.budget_s = static_cast<double>(job.budget_ms) / 1000;
  const int64_t started_us = summary.value("search_started_us", int64_t{0});
  if (started_us > 0) {
    const int64_t end_us = job.finished_us.value_or(clock_.NowUs());
    report.elapsed_s = static_cast<double>(end_us - started_us) / 1e6;
  }
  // After the end-to-end check, its own baseline run is the one the measured speedup divides.
  report.baseline_model_ms = summary.contains("baseline_ms")
                                 ? summary.value("baseline_ms", 0.0)
                                 : summary.value("baseline_model_us", 0.0) / 1000;
  report.projected_speedup = summary.value("projected_speedup", 1.0);
  report.measured_speedup = summary.value("measured_speedup", 0.0);
  report.swapped_model_ms = summary.value("swapped_ms", 0.0);
  report.verify_note = summary.value("verify_note", std::string());
  const json verdicts = summary.value("verdicts", json::object());
  const JobAgent agent = JobAgentOf(ParseObject(job.options_json));
  report.agent = std::string(SearchAgentName(agent.agent));
  report.llm_model = agent.model;
  report.llm_budget_usd = agent.budget_usd;
  KF_ASSIGN_OR_RETURN(storage::LlmSpend spend, store_.llm_calls().SpendByJob(job_id));
  report.llm_calls = spend.calls;
  report.llm_failed_calls = spend.failed_calls;
  report.llm_prompt_tokens = spend.prompt_tokens;
  report.llm_completion_tokens = spend.completion_tokens;
  report.llm_cost_usd = spend.cost_usd;

  KF_ASSIGN_OR_RETURN(std::vector<KernelJobRow> kernels, store_.kernel_jobs().ListByJob(job_id));
  for (const KernelJobRow& k : kernels) {
    ReportKernel out;
    out.rank = k.rank + 1;
    out.name = k.name;
    out.family = k.family;
    out.count = k.count;
    out.share = k.share;
    out.baseline_us = k.baseline_us;
    out.sol_us = k.sol_us;
    out.state = std::string(storage::Name(k.state));
    out.note = k.note;
    KF_ASSIGN_OR_RETURN(int64_t spent_us,
                        store_.tasks().KernelJobAttemptMicros(k.id, clock_.NowUs()));
    out.spent_ms = spent_us / 1000;
    KF_ASSIGN_OR_RETURN(std::vector<CandidateRow> candidates,
                        store_.candidates().ListByKernelJob(k.id));
    out.candidates = static_cast<int64_t>(candidates.size());
    std::vector<const CandidateRow*> profiled;
    for (const CandidateRow& c : candidates) {
      if (c.state == CandidateState::kFailed) ++out.failed;
      if (c.state == CandidateState::kProfiled && c.speedup.has_value()) profiled.push_back(&c);
    }
    std::sort(profiled.begin(), profiled.end(), [](const CandidateRow* a, const CandidateRow* b) {
      return a->updated_us < b->updated_us;
    });
    double best_so_far = 0;
    for (const CandidateRow* c : profiled) {
      if (*c->speedup <= best_so_far) continue;
      best_so_far = *c->speedup;
      out.progress.push_back({static_cast<double>(c->updated_us - started_us) / 1e6, best_so_far});
    }
    if (k.best_candidate_id.has_value()) {
      KF_ASSIGN_OR_RETURN(CandidateRow best, store_.candidates().Get(*k.best_candidate_id));
      out.template_name = best.template_name;
      out.agent = best.agent;
      out.best_us = best.median_us.value_or(0);
      out.speedup = best.speedup.value_or(0);
      out.explanation = best.plan;
      for (const auto& [name, value] : ParamsFromJson(best.params_json)) out.params[name] = value;
      out.source_path = fmt::format("kernels/{:02d}-{}.{}", out.rank, Slug(k.name),
                                    job.target == storage::Backend::kCpu ? "cpp" : "cu");
    }
    if (verdicts.contains(k.spec_hash)) {
      const json& v = verdicts[k.spec_hash];
      out.verified = v.value("kept", false);
      out.verify_note = v.value("reason", std::string());
    }
    report.kernels.push_back(std::move(out));
  }
  return report;
}

Result<std::vector<ExportedFile>> Conductor::Export(int64_t job_id) {
  KF_ASSIGN_OR_RETURN(JobRow job, store_.jobs().Get(job_id));
  if (job.kind != storage::JobKind::kModel) {
    return FailedPrecondition("job " + std::to_string(job_id) +
                              " has no kernels to export: only model jobs produce kernels");
  }
  KF_ASSIGN_OR_RETURN(JobReport report, BuildReport(job_id));
  std::vector<ExportedFile> files;
  files.push_back({"report.md", RenderReportMarkdown(report)});
  files.push_back({"speedup.svg", RenderSpeedupSvg(report)});
  files.push_back({"progress.svg", RenderProgressSvg(report)});
  KF_ASSIGN_OR_RETURN(std::vector<KernelJobRow> kernels, store_.kernel_jobs().ListByJob(job_id));
  json winners = json::array();
  for (size_t i = 0; i < kernels.size(); ++i) {
    const KernelJobRow& k = kernels[i];
    const ReportKernel& r = report.kernels[i];
    if (!k.best_candidate_id.has_value()) continue;
    KF_ASSIGN_OR_RETURN(CandidateRow best, store_.candidates().Get(*k.best_candidate_id));
    if (!best.source_hash.has_value()) continue;
    KF_ASSIGN_OR_RETURN(std::string source, store_.blobs().Get(*best.source_hash));
    files.push_back({r.source_path, std::move(source)});
    winners.push_back({{"kernel", k.name},
                       {"spec_hash", k.spec_hash},
                       {"source", r.source_path},
                       {"symbol", KernelSymbol(k.id)},
                       {"template", best.template_name},
                       {"agent", best.agent},
                       {"params", ParseObject(best.params_json)},
                       {"speedup", best.speedup.value_or(0)},
                       {"median_us", best.median_us.value_or(0)},
                       {"verified", r.verified}});
  }
  const json summary = ParseObject(job.summary_json);
  if (summary.contains("library_blob")) {
    KF_ASSIGN_OR_RETURN(std::string library,
                        store_.blobs().Get(summary["library_blob"].get<std::string>()));
    files.push_back({"lib/libkfleet_kernels.so", std::move(library)});
    files.push_back({"include/kfleet_kernels.h", summary.value("header", std::string())});
    files.push_back({"include/kfleet/kernel.h", std::string(eval::KernelAbiHeader())});
  }
  files.push_back({"kernels.json", json{{"job", job_id}, {"kernels", winners}}.dump(2) + "\n"});
  return files;
}

}  // namespace kfleet::coordinator
