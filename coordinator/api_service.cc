#include "coordinator/api_service.h"

#include <capnp/serialize.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/ids.h"
#include "common/log.h"
#include "coordinator/llm_search.h"

namespace kfleet::coordinator {
namespace {

using nlohmann::json;

constexpr uint32_t kMaxEchoTasks = 1'000'000;
constexpr uint32_t kMaxEchoPayloadBytes = 1 << 20;
constexpr size_t kMaxFailuresShown = 20;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

msg::Backend ToWire(storage::Backend backend) {
  switch (backend) {
    case storage::Backend::kCuda:
      return msg::Backend::CUDA;
    case storage::Backend::kHip:
      return msg::Backend::HIP;
    default:
      return msg::Backend::CPU;
  }
}

storage::Backend FromWire(msg::Backend backend) {
  switch (backend) {
    case msg::Backend::CUDA:
      return storage::Backend::kCuda;
    case msg::Backend::HIP:
      return storage::Backend::kHip;
    default:
      return storage::Backend::kCpu;
  }
}

// The echo payload of task `index`: its data is reproducible from the job's seed.
std::string EchoPayloadBytes(msg::EchoSpec::Reader spec, uint32_t index) {
  capnp::MallocMessageBuilder builder;
  msg::EchoPayload::Builder payload = builder.initRoot<msg::EchoPayload>();
  payload.setDelayMs(spec.getDelayMs());
  payload.setFailRate(spec.getFailRate());
  payload.setCrashRate(spec.getCrashRate());
  payload.setHangRate(spec.getHangRate());
  payload.setSeed(spec.getSeed());
  capnp::Data::Builder data = payload.initData(spec.getPayloadBytes());
  SeededRandom random(spec.getSeed() * 0x9e3779b97f4a7c15ULL + index);
  random.Fill({data.begin(), data.size()});
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  return std::string(words.asChars().begin(), words.asChars().size());
}

Status ValidateEcho(msg::EchoSpec::Reader spec) {
  if (spec.getTasks() == 0 || spec.getTasks() > kMaxEchoTasks) {
    return InvalidArgument("echo needs between 1 and " + std::to_string(kMaxEchoTasks) +
                           " tasks, got " + std::to_string(spec.getTasks()));
  }
  if (spec.getPayloadBytes() > kMaxEchoPayloadBytes) {
    return InvalidArgument("echo payload is at most " + std::to_string(kMaxEchoPayloadBytes) +
                           " bytes, got " + std::to_string(spec.getPayloadBytes()));
  }
  const float rates[] = {spec.getFailRate(), spec.getCrashRate(), spec.getHangRate()};
  float sum = 0;
  for (float rate : rates) {
    if (!std::isfinite(rate) || rate < 0 || rate > 1) {
      return InvalidArgument("fail, crash and hang rates must be between 0 and 1");
    }
    sum += rate;
  }
  if (sum > 1.0001f) return InvalidArgument("fail + crash + hang rates add up to more than 1");
  return Status::Ok();
}

}  // namespace

std::string ApiErrorCode(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kAlreadyExists:
      return "already_exists";
    case ErrorCode::kFailedPrecondition:
      return "failed_precondition";
    case ErrorCode::kPermissionDenied:
      return "permission_denied";
    case ErrorCode::kResourceExhausted:
      return "resource_exhausted";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kDeadlineExceeded:
      return "deadline_exceeded";
    default:
      return "internal";
  }
}

ApiService::ApiService(storage::Store& store, Scheduler& scheduler, Conductor& conductor,
                       Outbox& outbox, NodeKeys& keys, Clock& clock, const CoordinatorStats& stats,
                       const ApiOptions& options)
    : store_(store),
      scheduler_(scheduler),
      conductor_(conductor),
      outbox_(outbox),
      keys_(keys),
      clock_(clock),
      stats_(stats),
      options_(options) {}

void ApiService::ReplyError(const std::string& routing_id, const Status& status) {
  msg::ApiError::Builder error = outbox_.Add<msg::ApiError>(Channel::kClients, routing_id);
  error.setCode(ApiErrorCode(status.code()));
  error.setMessage(status.message());
}

Status ApiService::Handle(const std::string& routing_id, const msg::DecodedMessage& request) {
  switch (request.type()) {
    case msg::MessageType::SUBMIT_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto submit, request.Root<msg::SubmitRequest>());
      return Submit(routing_id, submit);
    }
    case msg::MessageType::STATUS_REQUEST:
      return JobStatus(routing_id);
    case msg::MessageType::WATCH_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto watch_request, request.Root<msg::WatchRequest>());
      const auto job_id = static_cast<int64_t>(watch_request.getJobId());
      KF_RETURN_IF_ERROR(store_.jobs().Get(job_id).status());
      const uint32_t wait_ms = std::min(watch_request.getWaitMs(), options_.max_watch_wait_ms);
      Watch watch{routing_id, job_id, static_cast<int64_t>(watch_request.getAfterEventId()),
                  clock_.MonotonicUs() + int64_t{wait_ms} * 1000};
      KF_ASSIGN_OR_RETURN(bool answered, TryAnswer(watch, wait_ms == 0));
      if (!answered) watches_.push_back(std::move(watch));
      return Status::Ok();
    }
    case msg::MessageType::NODES_REQUEST:
      return Nodes(routing_id);
    case msg::MessageType::NODE_ACTION_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto action, request.Root<msg::NodeActionRequest>());
      return NodeAction(routing_id, action);
    }
    case msg::MessageType::INVITE_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto invite, request.Root<msg::InviteRequest>());
      return Invite(routing_id, invite);
    }
    case msg::MessageType::CANCEL_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto cancel, request.Root<msg::CancelRequest>());
      return Cancel(routing_id, cancel);
    }
    case msg::MessageType::SHOW_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto show, request.Root<msg::ShowRequest>());
      return Show(routing_id, show);
    }
    case msg::MessageType::EXPORT_REQUEST: {
      KF_ASSIGN_OR_RETURN(auto export_request, request.Root<msg::ExportRequest>());
      KF_ASSIGN_OR_RETURN(std::vector<ExportedFile> files,
                          conductor_.Export(static_cast<int64_t>(export_request.getJobId())));
      msg::ExportReply::Builder reply =
          outbox_.Add<msg::ExportReply>(Channel::kClients, routing_id);
      auto list = reply.initFiles(static_cast<unsigned>(files.size()));
      for (size_t i = 0; i < files.size(); ++i) {
        list[static_cast<unsigned>(i)].setPath(files[i].path);
        list[static_cast<unsigned>(i)].setData(kj::arrayPtr(
            reinterpret_cast<const kj::byte*>(files[i].data.data()), files[i].data.size()));
      }
      return Status::Ok();
    }
    default:
      return InvalidArgument(std::string(msg::MessageTypeName(request.type())) +
                             " is not a request this API answers");
  }
}

Status ApiService::Submit(const std::string& routing_id, msg::SubmitRequest::Reader request) {
  if (request.isModel()) {
    ModelSubmission submission;
    submission.name = Text(request.getName());
    submission.file_name = Text(request.getModel().getFileName());
    capnp::Data::Reader bytes = request.getModel().getBytes();
    submission.bytes.assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
    submission.target = FromWire(request.getTarget());
    submission.budget_ms = static_cast<int64_t>(request.getBudgetMs());
    submission.top = request.getTop();
    submission.dtype = Text(request.getDtype());
    submission.priority = request.getPriority();
    submission.agent = Text(request.getAgent());
    submission.llm_json = Text(request.getLlm());
    submission.budget_usd = request.getBudgetUsd();
    KF_ASSIGN_OR_RETURN(int64_t job_id, conductor_.SubmitModel(submission));
    KF_RETURN_IF_ERROR(scheduler_.JobSubmitted(job_id));
    outbox_.Add<msg::SubmitReply>(Channel::kClients, routing_id)
        .setJobId(static_cast<uint64_t>(job_id));
    return Status::Ok();
  }
  msg::EchoSpec::Reader spec = request.getEcho();
  KF_RETURN_IF_ERROR(ValidateEcho(spec));
  if (request.getTarget() != msg::Backend::CPU) {
    return InvalidArgument("echo tasks run on CPU slots; submit them with target cpu");
  }
  storage::NewJob job;
  job.kind = storage::JobKind::kDiag;
  job.name = Text(request.getName());
  if (job.name.empty()) job.name = "echo x" + std::to_string(spec.getTasks());
  job.target = FromWire(request.getTarget());
  job.priority = request.getPriority();
  job.budget_ms = static_cast<int64_t>(request.getBudgetMs());
  job.options_json =
      json{{"tasks", spec.getTasks()},        {"delay_ms", spec.getDelayMs()},
           {"fail_rate", spec.getFailRate()}, {"crash_rate", spec.getCrashRate()},
           {"hang_rate", spec.getHangRate()}, {"payload_bytes", spec.getPayloadBytes()},
           {"seed", spec.getSeed()}}
          .dump();
  KF_ASSIGN_OR_RETURN(int64_t job_id, store_.jobs().Create(job));

  const int64_t timeout_ms =
      spec.getTimeoutMs() > 0 ? spec.getTimeoutMs() : int64_t{spec.getDelayMs()} + 30'000;
  std::vector<storage::NewTask> tasks;
  tasks.reserve(spec.getTasks());
  for (uint32_t i = 0; i < spec.getTasks(); ++i) {
    storage::NewTask task;
    task.job_id = job_id;
    task.kind = storage::TaskKind::kEcho;
    task.priority = job.priority;
    task.backend = storage::Backend::kCpu;
    task.payload = EchoPayloadBytes(spec, i);
    task.timeout_ms = timeout_ms;
    task.max_attempts = options_.max_attempts;
    tasks.push_back(std::move(task));
  }
  KF_RETURN_IF_ERROR(store_.tasks().EnqueueMany(tasks).status());
  KF_RETURN_IF_ERROR(store_.events()
                         .Append(job_id, "job.submitted",
                                 json{{"name", job.name}, {"tasks", spec.getTasks()}}.dump())
                         .status());
  KF_RETURN_IF_ERROR(scheduler_.JobSubmitted(job_id));
  log::Info("job.submitted").Kv("job", job_id).Kv("kind", "diag").Kv("tasks", spec.getTasks());
  outbox_.Add<msg::SubmitReply>(Channel::kClients, routing_id)
      .setJobId(static_cast<uint64_t>(job_id));
  return Status::Ok();
}

Status ApiService::FillJob(const storage::JobRow& job, msg::JobSummary::Builder out) {
  KF_ASSIGN_OR_RETURN(storage::TaskCounts counts, store_.tasks().CountsByState(job.id));
  KF_ASSIGN_OR_RETURN(int64_t retries, store_.tasks().RetryCount(job.id));
  out.setId(static_cast<uint64_t>(job.id));
  out.setName(job.name);
  out.setKind(std::string(storage::Name(job.kind)));
  out.setState(std::string(storage::Name(job.state)));
  out.setTarget(ToWire(job.target));
  out.setCreatedUs(job.created_us);
  out.setUpdatedUs(job.updated_us);
  out.setError(job.error);
  out.setPhase(job.phase);
  msg::JobProgress::Builder progress = out.initProgress();
  progress.setTasksTotal(static_cast<uint32_t>(counts.queued + counts.leased + counts.done +
                                               counts.failed + counts.cancelled));
  progress.setTasksDone(static_cast<uint32_t>(counts.done));
  progress.setTasksFailed(static_cast<uint32_t>(counts.failed));
  progress.setRetries(static_cast<uint32_t>(retries));
  if (job.kind == storage::JobKind::kModel) {
    const json options = json::parse(job.options_json, nullptr, /*allow_exceptions=*/false);
    const JobAgent agent = JobAgentOf(options.is_object() ? options : json::object());
    out.setAgent(std::string(SearchAgentName(agent.agent)));
    KF_ASSIGN_OR_RETURN(storage::LlmSpend spend, store_.llm_calls().SpendByJob(job.id));
    msg::LlmUsage::Builder usage = out.initLlm();
    usage.setModel(agent.model);
    usage.setCalls(static_cast<uint32_t>(spend.calls));
    usage.setFailedCalls(static_cast<uint32_t>(spend.failed_calls));
    usage.setPromptTokens(static_cast<uint64_t>(spend.prompt_tokens));
    usage.setCompletionTokens(static_cast<uint64_t>(spend.completion_tokens));
    usage.setCostUsd(spend.cost_usd);
    usage.setBudgetUsd(agent.budget_usd);
  }
  return Status::Ok();
}

Status ApiService::JobStatus(const std::string& routing_id) {
  KF_ASSIGN_OR_RETURN(std::vector<storage::JobRow> jobs, store_.jobs().List());
  msg::StatusReply::Builder status = outbox_.Add<msg::StatusReply>(Channel::kClients, routing_id);
  auto list = status.initJobs(static_cast<unsigned>(jobs.size()));
  for (size_t i = 0; i < jobs.size(); ++i) {
    KF_RETURN_IF_ERROR(FillJob(jobs[i], list[static_cast<unsigned>(i)]));
  }
  msg::CoordinatorCounters::Builder counters = status.initCoordinator();
  counters.setWorkerMessages(stats_.worker_messages);
  counters.setClientMessages(stats_.client_messages);
  counters.setMalformedDropped(stats_.malformed_dropped);
  counters.setVersionMismatches(stats_.version_mismatches);
  counters.setSendFailures(stats_.send_failures);
  counters.setFailedBatches(stats_.failed_batches);
  counters.setNodesConnected(static_cast<uint32_t>(scheduler_.session_count()));
  counters.setLeases(static_cast<uint32_t>(scheduler_.lease_count()));
  counters.setStartedUs(stats_.started_us);
  return Status::Ok();
}

Status ApiService::Nodes(const std::string& routing_id) {
  KF_ASSIGN_OR_RETURN(std::vector<storage::NodeRow> nodes, store_.nodes().List());
  msg::NodesReply::Builder reply = outbox_.Add<msg::NodesReply>(Channel::kClients, routing_id);
  auto list = reply.initNodes(static_cast<unsigned>(nodes.size()));
  for (size_t i = 0; i < nodes.size(); ++i) {
    const storage::NodeRow& node = nodes[i];
    msg::NodeInfo::Builder info = list[static_cast<unsigned>(i)];
    info.setName(node.name);
    info.setAddress(node.hostname);
    std::optional<SessionView> session = scheduler_.ViewOf(node.id);
    std::string state(storage::Name(node.state));
    if (!session.has_value() && node.state == storage::NodeState::kOnline) state = "disconnected";
    info.setState(state);
    info.setLastHeartbeatUs(session.has_value() ? clock_.NowUs() - session->last_heard_age_ms * 1000
                                                : node.last_heartbeat_us);
    msg::Slots::Builder used = info.initSlotsUsed();
    if (session.has_value()) {
      used.setCpu(static_cast<uint32_t>(session->slots_used[static_cast<int>(SlotClass::kCpu)]));
      used.setGpuExclusive(
          static_cast<uint32_t>(session->slots_used[static_cast<int>(SlotClass::kGpuExclusive)]));
      used.setCompile(
          static_cast<uint32_t>(session->slots_used[static_cast<int>(SlotClass::kCompile)]));
    }
    if (node.capabilities.empty() || node.capabilities.size() % sizeof(capnp::word) != 0) continue;
    // Stored by this coordinator from a validated Register, so it is well formed.
    auto words = kj::heapArray<capnp::word>(node.capabilities.size() / sizeof(capnp::word));
    std::memcpy(words.begin(), node.capabilities.data(), node.capabilities.size());
    capnp::FlatArrayMessageReader stored(words);
    info.setCapabilities(stored.getRoot<msg::Capabilities>());
  }
  return Status::Ok();
}

Status ApiService::NodeAction(const std::string& routing_id,
                              msg::NodeActionRequest::Reader request) {
  const std::string name = Text(request.getName());
  std::string message;
  switch (request.getAction()) {
    case msg::NodeAction::DRAIN:
      KF_RETURN_IF_ERROR(scheduler_.Drain(name));
      message = "node " + name + " is draining: it finishes its tasks and gets no new ones";
      break;
    case msg::NodeAction::REMOVE:
      KF_RETURN_IF_ERROR(scheduler_.Remove(name, "removed by an operator", /*revoked=*/false));
      message = "node " + name +
                " removed; its tasks were requeued. Starting its worker again "
                "re-adds it";
      break;
    case msg::NodeAction::REVOKE: {
      KF_RETURN_IF_ERROR(keys_.Revoke(name));
      Status removed = scheduler_.Remove(name, "key revoked by an operator", /*revoked=*/true);
      if (!removed.ok() && removed.code() != ErrorCode::kNotFound) return removed;
      message = "node " + name + " revoked: its key no longer connects";
      break;
    }
  }
  outbox_.Add<msg::NodeActionReply>(Channel::kClients, routing_id).setMessage(message);
  return Status::Ok();
}

Status ApiService::Invite(const std::string& routing_id, msg::InviteRequest::Reader request) {
  KF_ASSIGN_OR_RETURN(NodeInvitation invitation, keys_.Invite(Text(request.getName())));
  msg::InviteReply::Builder reply = outbox_.Add<msg::InviteReply>(Channel::kClients, routing_id);
  reply.setCommand(invitation.command);
  reply.setKeyPath(invitation.key_path);
  reply.setPublicKey(invitation.public_key);
  return store_.events()
      .Append(std::nullopt, "node.invited", json{{"node", Text(request.getName())}}.dump())
      .status();
}

Status ApiService::Cancel(const std::string& routing_id, msg::CancelRequest::Reader request) {
  KF_ASSIGN_OR_RETURN(int64_t cancelled,
                      scheduler_.CancelJob(static_cast<int64_t>(request.getJobId())));
  conductor_.JobCancelled(static_cast<int64_t>(request.getJobId()));
  outbox_.Add<msg::CancelReply>(Channel::kClients, routing_id)
      .setCancelledTasks(static_cast<uint32_t>(cancelled));
  return Status::Ok();
}

Status ApiService::Show(const std::string& routing_id, msg::ShowRequest::Reader request) {
  KF_ASSIGN_OR_RETURN(storage::JobRow job,
                      store_.jobs().Get(static_cast<int64_t>(request.getJobId())));
  KF_ASSIGN_OR_RETURN(std::vector<storage::KernelJobRow> kernels,
                      store_.kernel_jobs().ListByJob(job.id));
  KF_ASSIGN_OR_RETURN(std::vector<storage::EventRow> events,
                      store_.events().ListAfter(job.id, 0, 100'000));
  std::vector<std::string> failures;
  for (const storage::EventRow& event : events) {
    if (event.kind != "task.retry" && event.kind != "task.failed") continue;
    json data = json::parse(event.data_json, nullptr, /*allow_exceptions=*/false);
    if (data.is_discarded()) continue;
    failures.push_back("task " + std::to_string(data.value("task", int64_t{0})) + " attempt " +
                       std::to_string(data.value("attempt", int64_t{0})) + " " +
                       data.value("outcome", std::string()) + ": " +
                       data.value("reason", std::string()));
  }
  if (failures.size() > kMaxFailuresShown) {
    failures.erase(failures.begin(), failures.end() - kMaxFailuresShown);
  }
  msg::ShowReply::Builder reply = outbox_.Add<msg::ShowReply>(Channel::kClients, routing_id);
  KF_RETURN_IF_ERROR(FillJob(job, reply.initJob()));
  std::optional<JobReport> report;
  if (job.kind == storage::JobKind::kModel) {
    KF_ASSIGN_OR_RETURN(report, conductor_.BuildReport(job.id));
    reply.setDevice(report->device);
    reply.setBaselineModelUs(report->baseline_model_ms * 1000);
    reply.setProjectedSpeedup(report->projected_speedup);
    reply.setMeasuredSpeedup(report->measured_speedup);
    reply.setVerifyNote(report->verify_note);
    reply.setBudgetMs(static_cast<uint64_t>(job.budget_ms));
    reply.setSearchElapsedMs(static_cast<uint64_t>(std::max(0.0, report->elapsed_s * 1000)));
  }
  auto kernel_list = reply.initKernels(static_cast<unsigned>(kernels.size()));
  for (size_t i = 0; i < kernels.size(); ++i) {
    msg::KernelJobSummary::Builder out = kernel_list[static_cast<unsigned>(i)];
    out.setId(static_cast<uint64_t>(kernels[i].id));
    out.setName(kernels[i].name);
    out.setCount(static_cast<uint32_t>(kernels[i].count));
    out.setBaselineUs(kernels[i].baseline_us);
    out.setSolUs(kernels[i].sol_us);
    out.setExpectedSavingUs(kernels[i].expected_saving_us);
    out.setState(std::string(storage::Name(kernels[i].state)));
    out.setFamily(kernels[i].family);
    out.setShare(kernels[i].share);
    out.setNote(kernels[i].note);
    out.setBudgetMs(static_cast<uint64_t>(kernels[i].budget_ms));
    // Only model jobs have kernel jobs, and BuildReport lists them in the same order.
    if (report.has_value() && i < report->kernels.size()) {
      const ReportKernel& r = report->kernels[i];
      out.setCandidates(static_cast<uint32_t>(r.candidates));
      out.setFailedCandidates(static_cast<uint32_t>(r.failed));
      out.setSpentMs(static_cast<uint64_t>(r.spent_ms));
      out.setBestUs(r.best_us);
      out.setSpeedup(r.speedup);
      out.setTemplate(r.template_name);
      out.setVerified(r.verified);
    }
  }
  auto failure_list = reply.initAttemptFailures(static_cast<unsigned>(failures.size()));
  for (size_t i = 0; i < failures.size(); ++i) {
    failure_list.set(static_cast<unsigned>(i), failures[i]);
  }
  return Status::Ok();
}

Result<bool> ApiService::TryAnswer(const Watch& watch, bool force) {
  KF_ASSIGN_OR_RETURN(std::vector<storage::EventRow> events,
                      store_.events().ListAfter(watch.job_id, watch.after_event_id, 1000));
  KF_ASSIGN_OR_RETURN(storage::JobRow job, store_.jobs().Get(watch.job_id));
  const bool finished = job.finished_us.has_value();
  if (events.empty() && !force && !finished && clock_.MonotonicUs() < watch.deadline_us) {
    return false;
  }
  msg::WatchReply::Builder reply =
      outbox_.Add<msg::WatchReply>(Channel::kClients, watch.routing_id);
  KF_RETURN_IF_ERROR(FillJob(job, reply.initJob()));
  auto list = reply.initEvents(static_cast<unsigned>(events.size()));
  for (size_t i = 0; i < events.size(); ++i) {
    msg::Event::Builder out = list[static_cast<unsigned>(i)];
    out.setId(static_cast<uint64_t>(events[i].id));
    out.setJobId(static_cast<uint64_t>(events[i].job_id.value_or(0)));
    out.setTsUs(events[i].ts_us);
    out.setKind(events[i].kind);
    out.setData(events[i].data_json);
  }
  return true;
}

Status ApiService::ServeWatches() {
  std::vector<Watch> waiting;
  for (size_t i = 0; i < watches_.size(); ++i) {
    Result<bool> answered = TryAnswer(watches_[i], /*force=*/false);
    if (!answered.ok()) {
      // Keep every watch not yet answered; the caller retries on its next turn.
      waiting.insert(waiting.end(), watches_.begin() + static_cast<std::ptrdiff_t>(i),
                     watches_.end());
      watches_ = std::move(waiting);
      return answered.status();
    }
    if (!*answered) waiting.push_back(watches_[i]);
  }
  watches_ = std::move(waiting);
  return Status::Ok();
}

}  // namespace kfleet::coordinator
