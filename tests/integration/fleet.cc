#include "tests/integration/fleet.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <regex>
#include <sstream>
#include <thread>

#include "common/files.h"
#include "common/subprocess.h"
#include "tests/test_binaries.h"

namespace kfleet::testing {
namespace {

std::filesystem::path MakeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      (std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "kfleet-it-XXXXXX")
          .string();
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace

nlohmann::json CliResult::Json() const {
  return nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
}

Fleet::Fleet(std::string extra_config) : dir_(MakeTempDir()), extra_config_(std::move(extra_config)) {
  EXPECT_FALSE(dir_.empty());
  std::filesystem::create_directories(dir_ / "home");
  std::filesystem::create_directories(dir_ / "logs");
}

Fleet::~Fleet() {
  store_.reset();
  workers_.clear();
  coordinator_.reset();
  if (::testing::Test::HasFailure()) {
    std::cerr << "kept the test's directory for inspection: " << dir_ << "\n";
  } else {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void Fleet::StartCoordinator() {
  const std::string listen = worker_endpoint_.empty() ? "tcp://127.0.0.1:0" : worker_endpoint_;
  const std::string api = api_endpoint_.empty() ? "tcp://127.0.0.1:0" : api_endpoint_;
  std::vector<std::string> argv = {TestBinary("kfleetd", KFLEET_KFLEETD), "--state", state_dir().string(), "--listen",
                                   listen, "--api", api, "--heartbeat-ms",
                                   std::to_string(kHeartbeatMs), "--liveness",
                                   std::to_string(kLiveness)};
  if (!extra_config_.empty()) {
    ASSERT_TRUE(WriteFileAtomic(dir_ / "coordinator.yaml", extra_config_).ok());
    argv.insert(argv.end(), {"--config", (dir_ / "coordinator.yaml").string()});
  }
  auto started = DaemonProcess::Start(argv, {"HOME=" + (dir_ / "home").string()},
                                      dir_ / "logs" / "kfleetd.log");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  coordinator_ = std::make_unique<DaemonProcess>(std::move(started).value());
  // The log is appended across restarts: wait for one more "serving" line than before.
  const size_t starts_before = starts_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (CountOf(coordinator_->Log(), "kfleetd: serving workers on") <= starts_before) {
    ASSERT_TRUE(coordinator_->Running()) << coordinator_->Log();
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << coordinator_->Log();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ++starts_;
  std::smatch match;
  const std::string log = coordinator_->Log();
  const std::regex line("serving workers on (\\S+) and clients on (\\S+) ");
  std::string last_match;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    worker_endpoint_ = (*it)[1];
    api_endpoint_ = (*it)[2];
  }
  ASSERT_FALSE(worker_endpoint_.empty()) << log;
}

CliResult Fleet::Cli(const std::vector<std::string>& args, int timeout_ms) {
  ProcessSpec spec;
  spec.argv = {TestBinary("kfleet", KFLEET_CLI)};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  // Caches (calibration, profiles, kernels) in the test's own home, whatever the caller's
  // environment points them at.
  const std::string cache = (dir_ / "home" / ".cache").string();
  spec.env = {"KFLEET_CLI_CONFIG=" + (state_dir() / "cli.yaml").string(),
              "HOME=" + (dir_ / "home").string(), "XDG_CACHE_HOME=" + cache,
              "KFLEET_CACHE_DIR=" + cache + "/kfleet"};
  spec.timeout_ms = timeout_ms;
  CliResult out;
  Result<ProcessResult> run = SystemProcessRunner().Run(spec);
  EXPECT_TRUE(run.ok()) << run.status().ToString();
  if (!run.ok()) return out;
  out.exit_code = run->term_signal == 0 ? run->exit_code : 128 + run->term_signal;
  out.out = run->stdout_bytes;
  out.err = run->stderr_bytes;
  return out;
}

std::filesystem::path Fleet::Invite(const std::string& name) {
  CliResult invite = Cli({"nodes", "invite", name, "--json"});
  EXPECT_EQ(invite.exit_code, 0) << invite.err;
  nlohmann::json reply = invite.Json();
  EXPECT_TRUE(reply.is_object()) << invite.out;
  return reply.is_object() ? std::filesystem::path(reply.value("key_path", std::string()))
                           : std::filesystem::path();
}

std::filesystem::path Fleet::AddWorker(const std::string& name, int cpu_slots) {
  // Starts the worker with exactly the command `kfleet nodes invite` printed, as a user would.
  CliResult invite = Cli({"nodes", "invite", name, "--json"});
  EXPECT_EQ(invite.exit_code, 0) << invite.err;
  nlohmann::json reply = invite.Json();
  const std::string command = reply.is_object() ? reply.value("command", std::string()) : "";
  std::vector<std::string> argv;
  std::istringstream words(command);
  for (std::string word; words >> word;) argv.push_back(word);
  EXPECT_EQ(argv.size(), 5u) << command;
  if (argv.size() != 5u || argv[0] != "kfleet-worker") return {};
  argv[0] = TestBinary("kfleet-worker", KFLEET_WORKER);
  argv.insert(argv.end(), {"--cpu-slots", std::to_string(cpu_slots), "--work-dir",
                           (dir_ / "work" / name).string(), "--log-level", "debug"});
  const std::filesystem::path key = reply.value("key_path", std::string());
  auto started = DaemonProcess::Start(argv, {"HOME=" + (dir_ / "home").string()},
                                      dir_ / "logs" / (name + ".log"));
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  if (started.ok()) workers_[name] = std::make_unique<DaemonProcess>(std::move(started).value());
  return key;
}

bool Fleet::WaitForNodes(size_t count, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    CliResult nodes = Cli({"nodes", "--json"});
    nlohmann::json reply = nodes.Json();
    if (reply.is_object()) {
      size_t online = 0;
      for (const auto& node : reply["nodes"]) {
        if (node.value("state", "") == "online") ++online;
      }
      if (online == count) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

storage::Store& Fleet::Store() {
  if (!store_) {
    auto opened = storage::Store::Open(state_dir());
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }
  return *store_;
}

}  // namespace kfleet::testing
