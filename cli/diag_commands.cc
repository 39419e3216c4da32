// `kfleet diag echo`: a synthetic job that exercises the fleet (scheduling, retries, timeouts)
// without a model, with live progress and a throughput summary.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "common/clock.h"

namespace kfleet::cli {
namespace {

constexpr int kBarWidth = 20;
// A terminal redraws its progress line often; a log file gets a line now and then.
constexpr uint32_t kTerminalRefreshMs = 250;
constexpr uint32_t kLogRefreshMs = 1000;
constexpr int64_t kLogLineEveryUs = 2'000'000;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

struct EchoFlags {
  uint32_t tasks = 0;
  uint32_t delay_ms = 0;
  float fail_rate = 0;
  float crash_rate = 0;
  float hang_rate = 0;
  uint32_t payload_bytes = 0;
  uint32_t timeout_ms = 0;
  uint64_t seed = 0;
  double priority = 0;
  bool no_wait = false;
  bool json = false;
};

uint64_t SubmitEcho(Client& client, const EchoFlags& flags) {
  capnp::MallocMessageBuilder request;
  msg::SubmitRequest::Builder submit = request.initRoot<msg::SubmitRequest>();
  submit.setTarget(msg::Backend::CPU);
  submit.setPriority(flags.priority);
  msg::EchoSpec::Builder echo = submit.initEcho();
  echo.setTasks(flags.tasks);
  echo.setDelayMs(flags.delay_ms);
  echo.setFailRate(flags.fail_rate);
  echo.setCrashRate(flags.crash_rate);
  echo.setHangRate(flags.hang_rate);
  echo.setPayloadBytes(flags.payload_bytes);
  echo.setTimeoutMs(flags.timeout_ms);
  echo.setSeed(flags.seed);
  Result<Answer<msg::SubmitReply>> reply =
      client.Call<msg::SubmitRequest, msg::SubmitReply>(request);
  ExitOnError(reply.status().WithContext("submitting the echo job"));
  return reply->root.getJobId();
}

// Follows the job until it finishes, drawing progress on stderr; returns the last watch answer.
Answer<msg::WatchReply> WaitForJob(Client& client, uint64_t job_id) {
  const bool terminal = isatty(STDERR_FILENO) == 1;
  const uint32_t wait_ms = terminal ? kTerminalRefreshMs : kLogRefreshMs;
  uint64_t cursor = 0;
  int64_t last_line_us = 0;
  while (true) {
    capnp::MallocMessageBuilder request;
    msg::WatchRequest::Builder watch = request.initRoot<msg::WatchRequest>();
    watch.setJobId(job_id);
    watch.setAfterEventId(cursor);
    watch.setWaitMs(wait_ms);
    Result<Answer<msg::WatchReply>> reply = client.Call<msg::WatchRequest, msg::WatchReply>(
        request, int64_t{wait_ms} + client.timeout_ms());
    if (!reply.ok() && Interrupted()) {
      if (terminal) std::cerr << "\n";
      std::cerr << "kfleet: stopped waiting; echo job " << job_id << " goes on: `kfleet watch "
                << job_id << "` follows it, `kfleet cancel " << job_id << "` stops it\n";
      throw CLI::RuntimeError(kExitInterrupted);
    }
    if (!reply.ok() && terminal) std::cerr << "\n";
    ExitOnError(reply.status().WithContext("following echo job " + std::to_string(job_id)));

    for (msg::Event::Reader event : reply->root.getEvents()) {
      cursor = std::max(cursor, event.getId());
    }
    msg::JobSummary::Reader job = reply->root.getJob();
    const bool finished = IsFinishedState(Text(job.getState()));
    const std::string bar = ProgressBar(job.getProgress(), kBarWidth);
    const int64_t now_us = SystemClock().MonotonicUs();
    if (terminal) {
      // \r and "erase to end of line" redraw the same line in place.
      std::cerr << "\r" << bar << "\x1b[K" << (finished ? "\n" : "") << std::flush;
    } else if (finished || now_us - last_line_us >= kLogLineEveryUs) {
      std::cerr << bar << "\n";
      last_line_us = now_us;
    }
    if (finished) return std::move(reply).value();
  }
}

void RunEcho(const ClientFlags& client_flags, const EchoFlags& flags) {
  Client client = ConnectOrExit(client_flags);
  const uint64_t job_id = SubmitEcho(client, flags);
  if (flags.no_wait) {
    if (flags.json) {
      std::cout << nlohmann::json{{"job", job_id}}.dump() << "\n";
    } else {
      std::cout << "submitted echo job " << job_id << " (" << flags.tasks
                << " tasks): follow it with `kfleet watch " << job_id << "`\n";
    }
    return;
  }
  ExitOnError(CatchInterrupts());
  const int64_t started_us = SystemClock().MonotonicUs();
  Answer<msg::WatchReply> last = WaitForJob(client, job_id);
  msg::JobSummary::Reader job = last.root.getJob();
  msg::JobProgress::Reader progress = job.getProgress();

  // The coordinator's own timestamps leave out this client's polling; they are the job's time.
  int64_t elapsed_us = job.getUpdatedUs() - job.getCreatedUs();
  if (elapsed_us <= 0) elapsed_us = SystemClock().MonotonicUs() - started_us;
  const uint64_t finished = uint64_t{progress.getTasksDone()} + progress.getTasksFailed();
  const double tasks_per_s =
      static_cast<double>(finished) / (static_cast<double>(std::max<int64_t>(elapsed_us, 1)) / 1e6);
  const std::string state = Text(job.getState());

  if (flags.json) {
    std::cout << nlohmann::json{{"job", job_id},
                                {"state", state},
                                {"tasks", progress.getTasksTotal()},
                                {"done", progress.getTasksDone()},
                                {"failed", progress.getTasksFailed()},
                                {"retries", progress.getRetries()},
                                {"elapsed_s", static_cast<double>(elapsed_us) / 1e6},
                                {"tasks_per_s", tasks_per_s}}
                     .dump()
              << "\n";
  } else {
    char rate[32];
    std::snprintf(rate, sizeof(rate), tasks_per_s < 10 ? "%.1f" : "%.0f", tasks_per_s);
    std::cout << "echo job " << job_id << (state == "cancelled" ? " (cancelled)" : "") << ": "
              << progress.getTasksTotal() << " tasks, " << progress.getTasksDone() << " done, "
              << progress.getTasksFailed() << " failed, " << progress.getRetries() << " retries, "
              << FormatDuration(elapsed_us) << " (" << rate << " tasks/s)\n";
  }
  if (state == "done") return;
  std::cerr << "kfleet: echo job " << job_id << " " << state
            << (job.getError().size() > 0 ? ": " + Text(job.getError()) : std::string())
            << "; `kfleet show " << job_id << "` lists the attempt failures\n";
  throw CLI::RuntimeError(1);
}

}  // namespace

void RegisterDiagCommands(CLI::App& app, std::shared_ptr<const ClientFlags> client_flags) {
  CLI::App* diag = app.add_subcommand("diag", "Exercise the fleet with synthetic jobs");
  diag->require_subcommand(1);

  auto flags = std::make_shared<EchoFlags>();
  CLI::App* echo = diag->add_subcommand(
      "echo",
      "Run N echo tasks on the workers' CPU slots (each sleeps, then hashes its payload), "
      "optionally failing, crashing or hanging some, and report throughput");
  echo->add_option("--tasks", flags->tasks, "Number of echo tasks")
      ->required()
      ->check(CLI::Range(uint32_t{1}, uint32_t{1'000'000}));
  echo->add_option("--delay-ms", flags->delay_ms, "Time each task sleeps")->capture_default_str();
  echo->add_option("--fail-rate", flags->fail_rate, "Chance (0..1) that an attempt reports failure")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  echo->add_option("--crash-rate", flags->crash_rate,
                   "Chance (0..1) that an attempt crashes its process")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  echo->add_option("--hang-rate", flags->hang_rate,
                   "Chance (0..1) that an attempt hangs until its timeout")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  echo->add_option("--payload-bytes", flags->payload_bytes,
                   "Size of each task's payload (at most 1 MiB)")
      ->check(CLI::Range(uint32_t{0}, uint32_t{1} << 20))
      ->capture_default_str();
  echo->add_option("--task-timeout-ms", flags->timeout_ms,
                   "Wall-clock limit per task attempt; 0 means the delay plus 30 s")
      ->capture_default_str();
  echo->add_option("--seed", flags->seed,
                   "Seed of the fail / crash / hang draws, so a run can be repeated")
      ->capture_default_str();
  echo->add_option("--priority", flags->priority, "Higher runs first among jobs")
      ->capture_default_str();
  echo->add_flag("--no-wait", flags->no_wait, "Print the job id and return at once");
  echo->add_flag("--json", flags->json, "Print the summary as JSON");
  echo->callback([flags, client_flags] { RunEcho(*client_flags, *flags); });
}

}  // namespace kfleet::cli
