// The kernel search from the command line:
//  - `kfleet submit MODEL`: sends a model to a running coordinator.
//  - `kfleet export JOB DIR`: writes a model job's report, sources and library.
//  - `kfleet run MODEL`: the whole flow on this machine: a coordinator in this process, local
//    kfleet-worker processes, live progress, and the report at the end.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agents/llm_client.h"
#include "agents/llm_config.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "cli/search_view.h"
#include "common/files.h"
#include "common/log.h"
#include "common/temp_dir.h"
#include "coordinator/coordinator.h"
#include "planner/onnx_import.h"

extern char** environ;

namespace kfleet::cli {
namespace {

using nlohmann::json;

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

struct SearchFlags {
  std::string model;
  std::string target = "cpu";
  std::string dtype;
  std::string budget = "10m";
  uint32_t top = 0;
  std::string name;
  double priority = 0;
  bool json = false;
  // export
  uint64_t job_id = 0;
  std::string dir;
  // run
  std::string out;
  std::string state;
  int workers = 1;
  int cpu_slots = 0;
  // the agent
  std::string agent = "template";
  std::string llm_config;
  std::string llm_endpoint;
  std::string llm_model;
  std::string llm_dialect;
  std::string llm_key_env;
  std::string llm_record;
  std::string llm_replay;
  double budget_usd = 0;
};

// The file a recorded run keeps its model's name in, so that a replay needs no server to ask.
constexpr std::string_view kRecordedModelFile = "model.txt";

// The LLM settings of a submission as JSON (agents::LlmConfig), from --llm-config and the
// --llm-* flags over it; empty for the template agent. A run that names only the endpoint asks
// the server which model it serves. `local_workers`: the workers run here with this environment,
// so a key variable that is unset here is an error now rather than in every request.
Result<std::string> LlmSettings(const SearchFlags& flags, bool local_workers) {
  const bool any_llm_flag = !flags.llm_config.empty() || !flags.llm_endpoint.empty() ||
                            !flags.llm_model.empty() || !flags.llm_record.empty() ||
                            !flags.llm_replay.empty() || !flags.llm_dialect.empty() ||
                            !flags.llm_key_env.empty() || flags.budget_usd > 0;
  if (flags.agent == "template") {
    if (any_llm_flag) {
      return InvalidArgument(
          "the --llm-* and --budget-usd options are for --agent llm or --agent hybrid");
    }
    return std::string();
  }
  if (!flags.llm_record.empty() && !flags.llm_replay.empty()) {
    return InvalidArgument("--llm-record and --llm-replay exclude each other");
  }
  agents::LlmConfig config;
  if (!flags.llm_config.empty()) {
    KF_ASSIGN_OR_RETURN(config, agents::LoadLlmConfig(flags.llm_config));
  }
  if (!flags.llm_endpoint.empty()) config.endpoint = flags.llm_endpoint;
  if (!flags.llm_model.empty()) config.model = flags.llm_model;
  if (!flags.llm_dialect.empty()) config.dialect = flags.llm_dialect;
  if (!flags.llm_key_env.empty()) config.api_key_env = flags.llm_key_env;
  if (!flags.llm_replay.empty()) {
    const std::filesystem::path dir = std::filesystem::absolute(flags.llm_replay);
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
      return NotFound("--llm-replay " + dir.string() + " is not a folder of recorded answers");
    }
    config.record_dir = dir.string();
    config.replay = true;
    // Nothing is sent anywhere; the endpoint only has to be well formed.
    if (config.endpoint.empty()) config.endpoint = "http://replay.invalid/v1";
    if (config.model.empty()) {
      Result<std::string> recorded = ReadFile(dir / std::string(kRecordedModelFile));
      if (recorded.ok()) {
        config.model = *recorded;
        while (!config.model.empty() && config.model.back() == '\n') config.model.pop_back();
      }
    }
  }
  if (config.endpoint.empty()) {
    return InvalidArgument(fmt::format(
        "--agent {} needs a language model: --llm-endpoint URL (an OpenAI-compatible server such "
        "as vLLM, Ollama, llama.cpp's server, SGLang or a hosted API) or --llm-config FILE",
        flags.agent));
  }
  if (config.model.empty()) {
    if (!config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://")) {
      return InvalidArgument("--llm-endpoint must be an http:// or https:// URL, got '" +
                             config.endpoint + "'");
    }
    Result<std::string> model = agents::DiscoverModel(config);
    if (!model.ok()) {
      return model.status().WithContext("no --llm-model given, and asking the server failed");
    }
    config.model = *model;
    std::cerr << "kfleet: using model " << config.model << " served at " << config.endpoint << "\n";
  }
  if (!flags.llm_record.empty()) {
    const std::filesystem::path dir = std::filesystem::absolute(flags.llm_record);
    KF_RETURN_IF_ERROR(MakeDirs(dir));
    KF_RETURN_IF_ERROR(WriteFileAtomic(dir / std::string(kRecordedModelFile), config.model + "\n"));
    config.record_dir = dir.string();
  }
  KF_RETURN_IF_ERROR(agents::ValidateLlmConfig(config, "the LLM settings"));
  // A key named but unset fails every request: say so now, not after the search started.
  if (local_workers && !config.replay) KF_RETURN_IF_ERROR(config.ApiKey().status());
  return agents::LlmConfigToJson(config);
}

// The model's bytes: ONNX, or the ONNX text form (.onnxtxt) converted.
Result<std::string> ReadModel(const std::string& path) {
  KF_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  if (bytes.empty()) return InvalidArgument(path + " is empty");
  if (path.ends_with(".onnxtxt")) {
    Result<std::string> converted = planner::OnnxTextToModelBytes(bytes);
    if (!converted.ok()) return converted.status().WithContext(path);
    return converted;
  }
  return bytes;
}

msg::Backend ParseTarget(const std::string& target) {
  if (target == "cpu") return msg::Backend::CPU;
  if (target == "cuda") return msg::Backend::CUDA;
  if (target == "hip") return msg::Backend::HIP;
  ExitOnError(InvalidArgument("--target must be cpu, cuda or hip, got '" + target + "'"));
  return msg::Backend::CPU;
}

uint64_t Submit(Client& client, const SearchFlags& flags, const std::string& llm_json) {
  Result<std::string> bytes = ReadModel(flags.model);
  ExitOnError(bytes.status());
  int64_t budget_ms = 0;
  if (!ParseDurationMs(flags.budget, &budget_ms)) {
    ExitOnError(InvalidArgument("--budget takes a duration like 90s, 10m or 1h30m, got '" +
                                flags.budget + "'"));
  }
  capnp::MallocMessageBuilder request;
  msg::SubmitRequest::Builder submit = request.initRoot<msg::SubmitRequest>();
  const std::string file_name = std::filesystem::path(flags.model).filename().string();
  submit.setName(flags.name.empty() ? file_name : flags.name);
  submit.setTarget(ParseTarget(flags.target));
  submit.setBudgetMs(static_cast<uint64_t>(budget_ms));
  submit.setPriority(flags.priority);
  submit.setTop(flags.top);
  submit.setDtype(flags.dtype);
  submit.setAgent(flags.agent);
  submit.setLlm(llm_json);
  submit.setBudgetUsd(flags.budget_usd);
  auto model = submit.initModel();
  model.setFileName(file_name);
  model.setBytes(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes->data()), bytes->size()));
  Result<Answer<msg::SubmitReply>> reply =
      client.Call<msg::SubmitRequest, msg::SubmitReply>(request);
  ExitOnError(reply.status().WithContext("submitting " + flags.model));
  return reply->root.getJobId();
}

// Writes the export under `dir`; returns the files written.
Result<std::vector<std::string>> WriteExport(Client& client, uint64_t job_id,
                                             const std::filesystem::path& dir) {
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::ExportRequest>().setJobId(job_id);
  KF_ASSIGN_OR_RETURN(auto reply, (client.Call<msg::ExportRequest, msg::ExportReply>(request)));
  std::vector<std::string> written;
  for (msg::ExportFile::Reader file : reply.root.getFiles()) {
    const std::filesystem::path relative(Text(file.getPath()));
    bool safe = !relative.empty() && relative.is_relative();
    for (const auto& part : relative) safe = safe && part != "..";
    if (!safe) {
      return Internal("the coordinator sent an export path outside the directory: " +
                      relative.string());
    }
    const std::filesystem::path target = dir / relative;
    KF_RETURN_IF_ERROR(MakeDirs(target.parent_path()));
    capnp::Data::Reader data = file.getData();
    KF_RETURN_IF_ERROR(WriteFileAtomic(
        target, std::string_view(reinterpret_cast<const char*>(data.begin()), data.size()),
        relative.extension() == ".so" ? 0755 : 0644));
    written.push_back(relative.string());
  }
  return written;
}

Answer<msg::ShowReply> ShowOrExit(Client& client, uint64_t job_id) {
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::ShowRequest>().setJobId(job_id);
  Result<Answer<msg::ShowReply>> reply = client.Call<msg::ShowRequest, msg::ShowReply>(request);
  ExitOnError(reply.status());
  return std::move(reply).value();
}

// Events worth a line in the live view.
bool Notable(const std::string& kind) {
  return kind == "job.phase" || kind == "kernel.best" || kind == "kernel.done" ||
         kind == "job.verified" || kind == "job.finished" || kind == "task.failed" ||
         kind == "plan.failed" || kind == "candidate.routed" || kind == "llm.budget";
}

// A child process (a local worker) killed and reaped when this goes away.
class Child {
 public:
  static Result<Child> Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    const int error = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      return IoError("starting " + argv[0] + ": " + std::strerror(error));
    }
    return Child(pid);
  }
  Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, 0)) {}
  Child& operator=(Child&&) = delete;
  ~Child() { Stop(); }

  // SIGTERM (a worker says goodbye and stops its tasks), then SIGKILL after a grace period.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
  bool Exited() {
    if (pid_ <= 0) return true;
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = 0;
      return true;
    }
    return false;
  }

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

// kfleet-worker beside this binary, or in the build tree's worker/ directory.
std::filesystem::path WorkerBinary() {
  if (const char* env = std::getenv("KFLEET_WORKER"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  for (const std::filesystem::path& candidate :
       {self.parent_path() / "kfleet-worker", self.parent_path() / "../worker/kfleet-worker"}) {
    if (std::filesystem::exists(candidate, ec)) return candidate.lexically_normal();
  }
  return "kfleet-worker";
}

void RunCommand(const SearchFlags& flags) {
  // Read and check the model and the LLM settings before starting anything.
  ExitOnError(ReadModel(flags.model).status());
  Result<std::string> llm_json = LlmSettings(flags, /*local_workers=*/true);
  ExitOnError(llm_json.status());
  std::optional<TempDir> temp;
  std::filesystem::path state = flags.state;
  if (state.empty()) {
    Result<TempDir> made = TempDir::Create("kfleet-run");
    ExitOnError(made.status());
    temp.emplace(std::move(made).value());
    state = temp->path();
  }
  ExitOnError(MakeDirs(state));
  state = std::filesystem::absolute(state);
  const std::filesystem::path out =
      flags.out.empty()
          ? std::filesystem::path("kfleet-out") / std::filesystem::path(flags.model).stem()
          : std::filesystem::path(flags.out);

  // The embedded coordinator logs to a file: the terminal shows the progress view.
  ExitOnError(log::Init({log::Level::kInfo, (state / "kfleetd.log").string()}));
  coordinator::CoordinatorOptions options;
  options.state_dir = state;
  options.listen = "ipc://" + (state / "workers.sock").string();
  options.api = "ipc://" + (state / "api.sock").string();
  options.insecure = true;
  options.write_user_cli_config = false;
  options.synchronous = storage::SyncMode::kNormal;
  Result<std::unique_ptr<coordinator::Coordinator>> started =
      coordinator::Coordinator::Start(options);
  ExitOnError(started.status());
  std::unique_ptr<coordinator::Coordinator> daemon = std::move(started).value();
  std::atomic<bool> stop{false};
  Status served = Status::Ok();
  std::thread serving([&] { served = daemon->Run(stop); });
  auto shutdown = [&] {
    stop = true;
    if (serving.joinable()) serving.join();
  };

  std::vector<Child> workers;
  const std::filesystem::path worker_binary = WorkerBinary();
  for (int i = 0; i < flags.workers; ++i) {
    const std::string name = "local-" + std::to_string(i + 1);
    std::vector<std::string> argv = {worker_binary.string(),
                                     "--join",
                                     daemon->worker_endpoint(),
                                     "--insecure",
                                     "--name",
                                     name,
                                     "--work-dir",
                                     (state / name).string()};
    if (flags.cpu_slots > 0) {
      argv.push_back("--cpu-slots");
      argv.push_back(std::to_string(flags.cpu_slots));
    }
    Result<Child> child = Child::Spawn(argv, (state / (name + ".log")).string());
    if (!child.ok()) {
      shutdown();
      ExitOnError(
          child.status().WithContext("is kfleet-worker installed beside kfleet? "
                                     "(or set KFLEET_WORKER)"));
    }
    workers.push_back(std::move(child).value());
  }

  Connection connection;
  connection.endpoint = daemon->api_endpoint();
  Result<Client> opened = Client::Open(connection, 60'000);
  ExitOnError(opened.status());
  Client client = std::move(opened).value();
  const uint64_t job_id = Submit(client, flags, *llm_json);
  ExitOnError(CatchInterrupts());

  const bool terminal = isatty(STDERR_FILENO) == 1 && !flags.json;
  std::cerr << "kfleet run: job " << job_id << " on " << flags.workers << " local worker(s); "
            << "state in " << state.string() << "\n";
  uint64_t cursor = 0;
  std::deque<std::string> recent;
  int drawn_lines = 0;
  auto last_line = std::chrono::steady_clock::now();
  std::string final_state;
  while (true) {
    if (Interrupted()) {
      capnp::MallocMessageBuilder cancel;
      cancel.initRoot<msg::CancelRequest>().setJobId(job_id);
      (void)client.Call<msg::CancelRequest, msg::CancelReply>(cancel);
      std::cerr << "\nkfleet run: interrupted; job cancelled\n";
      workers.clear();
      shutdown();
      throw CLI::RuntimeError(kExitInterrupted);
    }
    capnp::MallocMessageBuilder watch_request;
    msg::WatchRequest::Builder watch = watch_request.initRoot<msg::WatchRequest>();
    watch.setJobId(job_id);
    watch.setAfterEventId(cursor);
    watch.setWaitMs(1000);
    Result<Answer<msg::WatchReply>> events =
        client.Call<msg::WatchRequest, msg::WatchReply>(watch_request, 60'000);
    if (!events.ok() && Interrupted()) continue;
    ExitOnError(events.status());
    for (msg::Event::Reader event : events->root.getEvents()) {
      cursor = std::max(cursor, event.getId());
      const std::string kind = Text(event.getKind());
      if (!Notable(kind)) continue;
      const std::string line =
          FormatClockTime(event.getTsUs()) + " " + EventDetails(kind, Text(event.getData()));
      if (terminal) {
        recent.push_back(line);
        if (recent.size() > 6) recent.pop_front();
      } else if (!flags.json) {
        std::cerr << line << "\n";
      }
    }
    const std::string state_name = Text(events->root.getJob().getState());
    const bool finished = IsFinishedState(state_name);
    const auto now = std::chrono::steady_clock::now();
    if (terminal || finished || now - last_line > std::chrono::seconds(30)) {
      Answer<msg::ShowReply> shown = ShowOrExit(client, job_id);
      std::string view = FormatModelJob(shown.root);
      if (terminal) {
        for (const std::string& line : recent) view += line + "\n";
        // Redraw in place: move up over the previous drawing and clear it.
        if (drawn_lines > 0) std::cerr << "\x1b[" << drawn_lines << "F\x1b[J";
        std::cerr << view << std::flush;
        drawn_lines = static_cast<int>(std::count(view.begin(), view.end(), '\n'));
      } else if (!flags.json && !finished) {
        std::cerr << "  ... " << Text(shown.root.getJob().getPhase()) << ", "
                  << shown.root.getSearchElapsedMs() / 1000 << " s\n";
      }
      last_line = now;
    }
    if (finished) {
      final_state = state_name;
      break;
    }
    bool any_worker = false;
    for (Child& worker : workers) any_worker = any_worker || !worker.Exited();
    if (!any_worker) {
      shutdown();
      ExitOnError(Internal("every local worker exited; see the logs in " + state.string()));
    }
  }

  Answer<msg::ShowReply> shown = ShowOrExit(client, job_id);
  Result<std::vector<std::string>> written = WriteExport(client, job_id, out);
  workers.clear();
  shutdown();
  if (flags.json) {
    json result = ModelJobJson(shown.root);
    result["out"] = out.string();
    if (written.ok()) result["files"] = *written;
    std::cout << result.dump(2) << "\n";
  } else {
    if (!terminal) std::cout << FormatModelJob(shown.root);
    if (written.ok()) {
      std::cout << "\nreport: " << (out / "report.md").string() << " (" << written->size()
                << " files in " << out.string() << ")\n";
    }
  }
  ExitOnError(written.status().WithContext("exporting the results"));
  ExitOnError(served);
  if (final_state != "done") throw CLI::RuntimeError(1);
}

}  // namespace

void RegisterSearchCommands(CLI::App& app, std::shared_ptr<const ClientFlags> client_flags) {
  auto flags = std::make_shared<SearchFlags>();
  auto add_model_flags = [&](CLI::App* command) {
    command->add_option("model", flags->model, "ONNX model (.onnx, or ONNX text .onnxtxt)")
        ->required();
    command
        ->add_option("--target", flags->target,
                     "cpu, or cuda (kernels for the NVIDIA GPUs of the workers; hip later)")
        ->check(CLI::IsMember({"cpu", "cuda", "hip"}))
        ->capture_default_str();
    command->add_option("--dtype", flags->dtype,
                        "Precision the model runs in: fp32, fp16 or bf16 (default: as exported)");
    command->add_option("--budget", flags->budget, "Search wall time: 90s, 10m, 1h30m")
        ->capture_default_str();
    command->add_option("--top", flags->top,
                        "Kernel jobs to search, best expected saving first (default 5)");
    command->add_option("--name", flags->name, "Label for listings (default: the file name)");
    command->add_flag("--json", flags->json, "Print JSON instead of text");
    command
        ->add_option("--agent", flags->agent,
                     "Who writes kernels: template (built-in templates, offline), llm (a "
                     "language model: Designer, Coder, Conductor) or hybrid (templates seed, the "
                     "LLM refines)")
        ->check(CLI::IsMember({"template", "llm", "hybrid"}))
        ->capture_default_str();
    command->add_option("--llm-config", flags->llm_config,
                        "LLM settings file (see configs/llm.yaml); the flags below override it");
    command->add_option("--llm-endpoint", flags->llm_endpoint,
                        "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1");
    command->add_option("--llm-model", flags->llm_model,
                        "Model name (default: the first the endpoint lists)");
    command->add_option("--llm-dialect", flags->llm_dialect, "openai or anthropic")
        ->check(CLI::IsMember({"openai", "anthropic"}));
    command->add_option("--llm-key-env", flags->llm_key_env,
                        "Environment variable holding the API key (the key is never stored)");
    command->add_option("--llm-record", flags->llm_record,
                        "Record every LLM answer in this folder (for --llm-replay)");
    command->add_option("--llm-replay", flags->llm_replay,
                        "Answer LLM requests only from a recorded folder: offline, reproducible");
    command
        ->add_option("--budget-usd", flags->budget_usd,
                     "The most the LLM may cost for this job, in dollars (0: no limit)")
        ->check(CLI::NonNegativeNumber);
  };

  CLI::App* submit = app.add_subcommand("submit", "Send a model to the coordinator for search");
  add_model_flags(submit);
  submit->add_option("--priority", flags->priority, "Higher runs first among jobs");
  submit->callback([flags, client_flags] {
    Result<std::string> llm_json = LlmSettings(*flags, /*local_workers=*/false);
    ExitOnError(llm_json.status());
    Client client = ConnectOrExit(*client_flags);
    const uint64_t job_id = Submit(client, *flags, *llm_json);
    if (flags->json) {
      std::cout << json{{"job", job_id}}.dump() << "\n";
    } else {
      std::cout << "submitted job " << job_id << ": follow it with `kfleet watch " << job_id
                << "` or `kfleet show " << job_id << "`\n";
    }
  });

  CLI::App* export_command =
      app.add_subcommand("export", "Write a model job's report, kernel sources and library");
  export_command->add_option("job", flags->job_id, "Job id")->required();
  export_command->add_option("dir", flags->dir, "Directory to write into")->required();
  export_command->callback([flags, client_flags] {
    Client client = ConnectOrExit(*client_flags);
    Result<std::vector<std::string>> written = WriteExport(client, flags->job_id, flags->dir);
    ExitOnError(written.status());
    for (const std::string& file : *written) {
      std::cout << (std::filesystem::path(flags->dir) / file).string() << "\n";
    }
  });

  CLI::App* run = app.add_subcommand(
      "run", "Search a model on this machine: coordinator and worker here, report at the end");
  add_model_flags(run);
  run->add_option("--out", flags->out, "Where the report goes (default kfleet-out/MODEL)");
  run->add_option("--state", flags->state, "Keep the coordinator's state here (default: temp)");
  run->add_option("--workers", flags->workers, "Local worker processes")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  run->add_option("--cpu-slots", flags->cpu_slots, "CPU slots per worker (default: cores)");
  run->callback([flags] { RunCommand(*flags); });
}

}  // namespace kfleet::cli
