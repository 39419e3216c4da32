// `kfleet status | show JOB | cancel JOB | watch JOB`: jobs as the coordinator sees them.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "cli/search_view.h"
#include "common/clock.h"

namespace kfleet::cli {
namespace {

// How long the coordinator may hold a watch when nothing happens.
constexpr uint32_t kWatchWaitMs = 10'000;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

std::string Microseconds(double us) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", us);
  return text;
}

// "12 tasks", "1 task".
std::string Tasks(uint64_t count) {
  return std::to_string(count) + (count == 1 ? " task" : " tasks");
}

void ShowStatus(const ClientFlags& flags, bool as_json) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::StatusRequest>();
  Result<Answer<msg::StatusReply>> reply =
      client.Call<msg::StatusRequest, msg::StatusReply>(request);
  ExitOnError(reply.status());
  auto jobs = reply->root.getJobs();

  msg::CoordinatorCounters::Reader counters = reply->root.getCoordinator();
  if (as_json) {
    nlohmann::json out = nlohmann::json::array();
    for (msg::JobSummary::Reader job : jobs) out.push_back(JobJson(job));
    std::cout
        << nlohmann::json{{"jobs", std::move(out)}, {"coordinator", CountersJson(counters)}}.dump(2)
        << "\n";
    return;
  }
  const std::string footer = CountersLine(counters);
  if (jobs.size() == 0) {
    std::cout << "no jobs yet: start one with `kfleet diag echo --tasks 100`\n" << footer;
    return;
  }
  const int64_t now_us = SystemClock().NowUs();
  std::vector<std::vector<std::string>> rows = {
      {"id", "name", "kind", "state", "progress", "failed", "retries", "age"}};
  for (msg::JobSummary::Reader job : jobs) {
    msg::JobProgress::Reader progress = job.getProgress();
    rows.push_back({std::to_string(job.getId()), Text(job.getName()), Text(job.getKind()),
                    Text(job.getState()), ProgressFraction(progress),
                    std::to_string(progress.getTasksFailed()),
                    std::to_string(progress.getRetries()), FormatAge(now_us, job.getCreatedUs())});
  }
  std::cout << FormatTable(rows) << footer;
}

void ShowJob(const ClientFlags& flags, uint64_t job_id, bool as_json) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::ShowRequest>().setJobId(job_id);
  Result<Answer<msg::ShowReply>> reply = client.Call<msg::ShowRequest, msg::ShowReply>(request);
  ExitOnError(reply.status());
  msg::JobSummary::Reader job = reply->root.getJob();
  auto kernels = reply->root.getKernels();
  auto failures = reply->root.getAttemptFailures();

  if (Text(job.getKind()) == "model") {
    if (as_json) {
      std::cout << ModelJobJson(reply->root).dump(2) << "\n";
      return;
    }
    std::cout << "job " << job.getId() << ": " << Text(job.getName()) << " (model on "
              << BackendName(job.getTarget()) << ")\n"
              << FormatModelJob(reply->root);
    if (failures.size() > 0) {
      std::cout << "\nrecent attempt failures:\n";
      for (capnp::Text::Reader failure : failures) std::cout << "  " << Text(failure) << "\n";
    }
    return;
  }
  if (as_json) {
    nlohmann::json kernel_list = nlohmann::json::array();
    for (msg::KernelJobSummary::Reader kernel : kernels) kernel_list.push_back(KernelJson(kernel));
    nlohmann::json failure_list = nlohmann::json::array();
    for (capnp::Text::Reader failure : failures) failure_list.push_back(Text(failure));
    std::cout << nlohmann::json{{"job", JobJson(job)},
                                {"kernels", std::move(kernel_list)},
                                {"attempt_failures", std::move(failure_list)}}
                     .dump(2)
              << "\n";
    return;
  }
  const int64_t now_us = SystemClock().NowUs();
  msg::JobProgress::Reader progress = job.getProgress();
  std::cout << "job " << job.getId() << ": " << Text(job.getName()) << " (" << Text(job.getKind())
            << " on " << BackendName(job.getTarget()) << ")\n";
  std::vector<std::vector<std::string>> summary = {
      {"state", Text(job.getState())},
      {"progress", ProgressFraction(progress) + " done, " +
                       std::to_string(progress.getTasksFailed()) + " failed, " +
                       std::to_string(progress.getRetries()) + " retries"},
      {"created", FormatAge(now_us, job.getCreatedUs())},
      {"updated", FormatAge(now_us, job.getUpdatedUs())},
  };
  if (job.getError().size() > 0) summary.push_back({"error", Text(job.getError())});
  std::cout << FormatTable(summary);

  if (kernels.size() > 0) {
    std::vector<std::vector<std::string>> rows = {{"rank", "name", "count", "baseline us", "SOL us",
                                                   "expected saving us", "best us", "state"}};
    int rank = 0;
    for (msg::KernelJobSummary::Reader kernel : kernels) {
      rows.push_back({std::to_string(++rank), Text(kernel.getName()),
                      std::to_string(kernel.getCount()), Microseconds(kernel.getBaselineUs()),
                      Microseconds(kernel.getSolUs()), Microseconds(kernel.getExpectedSavingUs()),
                      kernel.getBestUs() > 0 ? Microseconds(kernel.getBestUs()) : "-",
                      Text(kernel.getState())});
    }
    std::cout << "\nkernels, ranked by expected saving:\n" << FormatTable(rows);
  }
  if (failures.size() > 0) {
    std::cout << "\nrecent attempt failures:\n";
    for (capnp::Text::Reader failure : failures) std::cout << "  " << Text(failure) << "\n";
  }
}

void CancelJob(const ClientFlags& flags, uint64_t job_id) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::CancelRequest>().setJobId(job_id);
  Result<Answer<msg::CancelReply>> reply =
      client.Call<msg::CancelRequest, msg::CancelReply>(request);
  ExitOnError(reply.status());
  std::cout << "cancelled job " << job_id << " (" << Tasks(reply->root.getCancelledTasks())
            << ")\n";
}

void WatchJob(const ClientFlags& flags, uint64_t job_id, bool as_json) {
  Client client = ConnectOrExit(flags);
  ExitOnError(CatchInterrupts());
  uint64_t cursor = 0;
  uint32_t llm_calls_shown = 0;
  while (true) {
    capnp::MallocMessageBuilder request;
    msg::WatchRequest::Builder watch = request.initRoot<msg::WatchRequest>();
    watch.setJobId(job_id);
    watch.setAfterEventId(cursor);
    watch.setWaitMs(kWatchWaitMs);
    Result<Answer<msg::WatchReply>> reply = client.Call<msg::WatchRequest, msg::WatchReply>(
        request, int64_t{kWatchWaitMs} + client.timeout_ms());
    if (!reply.ok() && Interrupted()) throw CLI::RuntimeError(kExitInterrupted);
    ExitOnError(reply.status());

    auto events = reply->root.getEvents();
    for (msg::Event::Reader event : events) {
      cursor = std::max(cursor, event.getId());
      if (as_json) {
        std::cout << EventJson(event).dump() << "\n";
      } else {
        std::cout << FormatClockTime(event.getTsUs()) << " "
                  << EventDetails(Text(event.getKind()), Text(event.getData())) << "\n";
      }
    }
    msg::JobSummary::Reader job = reply->root.getJob();
    // The LLM's tokens and cost so far, whenever they changed.
    if (job.getLlm().getCalls() != llm_calls_shown) {
      llm_calls_shown = job.getLlm().getCalls();
      if (as_json) {
        std::cout << nlohmann::json{{"llm", JobJson(job)["llm"]}}.dump() << "\n";
      } else {
        std::cout << FormatClockTime(job.getUpdatedUs()) << " llm " << FormatLlmUsage(job.getLlm())
                  << "\n";
      }
    }
    std::cout.flush();
    // A finished job's watch is answered at once; an empty answer means every event is printed.
    if (!IsFinishedState(Text(job.getState())) || events.size() > 0) continue;

    if (as_json) {
      std::cout << nlohmann::json{{"job", JobJson(job)}}.dump() << "\n";
    } else {
      msg::JobProgress::Reader progress = job.getProgress();
      std::cout << "job " << job_id << " " << Text(job.getState()) << ": "
                << ProgressFraction(progress) << " done, " << progress.getTasksFailed()
                << " failed, " << progress.getRetries() << " retries, "
                << FormatDuration(job.getUpdatedUs() - job.getCreatedUs()) << "\n";
    }
    if (Text(job.getState()) != "done") throw CLI::RuntimeError(1);
    return;
  }
}

struct JobFlags {
  bool status_json = false;
  bool show_json = false;
  bool watch_json = false;
  uint64_t job_id = 0;
};

}  // namespace

void RegisterJobCommands(CLI::App& app, std::shared_ptr<const ClientFlags> client_flags) {
  auto flags = std::make_shared<JobFlags>();
  // CLI11's own range check would print the whole uint64 range; this says what an id looks like.
  const CLI::Validator job_id_check(
      [](std::string& text) -> std::string {
        const bool digits = !text.empty() && text.size() <= 19 &&
                            text.find_first_not_of("0123456789") == std::string::npos;
        if (digits && std::stoull(text) > 0) return "";
        return "expected a job id such as 12 (see `kfleet status`), got '" + text + "'";
      },
      "", "job id");
  auto add_job_id = [&](CLI::App* command) {
    command->add_option("job", flags->job_id, "Job id, as `kfleet status` lists it")
        ->required()
        ->type_name("JOB")
        ->check(job_id_check);
  };

  CLI::App* status = app.add_subcommand("status", "List jobs: state, progress, failures, age");
  status->add_flag("--json", flags->status_json, "Print JSON instead of a table");
  status->callback([flags, client_flags] { ShowStatus(*client_flags, flags->status_json); });

  CLI::App* show =
      app.add_subcommand("show", "Show one job: summary, ranked kernels, recent attempt failures");
  add_job_id(show);
  show->add_flag("--json", flags->show_json, "Print JSON instead of text");
  show->callback(
      [flags, client_flags] { ShowJob(*client_flags, flags->job_id, flags->show_json); });

  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job's queued and running tasks");
  add_job_id(cancel);
  cancel->callback([flags, client_flags] { CancelJob(*client_flags, flags->job_id); });

  CLI::App* watch = app.add_subcommand(
      "watch", "Print a job's events as they happen until it finishes (Ctrl-C stops watching)");
  add_job_id(watch);
  watch->add_flag("--json", flags->watch_json, "Print one JSON object per event");
  watch->callback(
      [flags, client_flags] { WatchJob(*client_flags, flags->job_id, flags->watch_json); });
}

}  // namespace kfleet::cli
