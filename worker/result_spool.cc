#include "worker/result_spool.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <system_error>

#include "common/files.h"
#include "common/log.h"

namespace kfleet::worker {
namespace {

constexpr std::string_view kSuffix = ".result";
// WriteFileAtomic's temporary files are named "<path>.tmp-<id>".
constexpr std::string_view kTemporaryMarker = ".result.tmp-";
// The largest file a valid result can be: a header and a body at the frame cap.
constexpr size_t kMaxFileBytes = msg::kHeaderBytes + msg::DecodeLimits{}.max_body_bytes;

// "12-3.result" -> {12, 3}.
std::optional<TaskKey> ParseName(std::string_view name) {
  if (!name.ends_with(kSuffix)) return std::nullopt;
  name.remove_suffix(kSuffix.size());
  const size_t dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  TaskKey key;
  const std::string_view task = name.substr(0, dash);
  const std::string_view attempt = name.substr(dash + 1);
  auto [task_end, task_error] =
      std::from_chars(task.data(), task.data() + task.size(), key.task_id);
  auto [attempt_end, attempt_error] =
      std::from_chars(attempt.data(), attempt.data() + attempt.size(), key.attempt);
  if (task.empty() || attempt.empty() || task_error != std::errc() ||
      attempt_error != std::errc() || task_end != task.data() + task.size() ||
      attempt_end != attempt.data() + attempt.size()) {
    return std::nullopt;
  }
  return key;
}

void MoveAside(const std::filesystem::path& path, const Status& why) {
  std::filesystem::path aside = path;
  aside += ".corrupt";
  std::error_code ec;
  std::filesystem::rename(path, aside, ec);
  if (ec) {
    log::Error("spool.corrupt_result")
        .Kv("file", path.string())
        .Kv("problem", why.message())
        .Kv("rename_error", ec.message());
    return;
  }
  log::Warn("spool.corrupt_result")
      .Kv("file", path.string())
      .Kv("moved_to", aside.string())
      .Kv("problem", why.message());
}

}  // namespace

Result<ResultSpool> ResultSpool::Open(std::filesystem::path dir) {
  KF_RETURN_IF_ERROR(MakeDirs(dir, /*private_dir=*/true).WithContext("opening the result spool"));
  return ResultSpool(std::move(dir));
}

std::filesystem::path ResultSpool::PathOf(const TaskKey& key) const {
  return dir_ /
         (std::to_string(key.task_id) + "-" + std::to_string(key.attempt) + std::string(kSuffix));
}

Status ResultSpool::Write(const TaskKey& key, const msg::EncodedFrames& frames) {
  std::string bytes = frames.header;
  bytes += frames.BodyBytes();
  return WriteFileAtomic(PathOf(key), bytes, 0600).WithContext("spooling a task result");
}

Status ResultSpool::Remove(const TaskKey& key) {
  const std::filesystem::path path = PathOf(key);
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (ec) return IoError("remove acknowledged result " + path.string() + ": " + ec.message());
  return Status::Ok();
}

Result<SpooledResult> ResultSpool::Load(const std::filesystem::path& path,
                                        const TaskKey& key) const {
  KF_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, kMaxFileBytes));
  if (bytes.size() < msg::kHeaderBytes) {
    return Corruption("file is " + std::to_string(bytes.size()) + " bytes, shorter than a header");
  }
  const std::string_view view(bytes);
  KF_ASSIGN_OR_RETURN(msg::DecodedMessage message, msg::Decode(view.substr(0, msg::kHeaderBytes),
                                                               view.substr(msg::kHeaderBytes)));
  KF_ASSIGN_OR_RETURN(msg::TaskResult::Reader result, message.Root<msg::TaskResult>());
  if (result.getTaskId() != key.task_id || result.getAttempt() != key.attempt) {
    return Corruption("holds the result of task " + std::to_string(result.getTaskId()) +
                      " attempt " + std::to_string(result.getAttempt()) + ", not the one named");
  }
  return SpooledResult{key, std::move(message)};
}

Result<std::vector<SpooledResult>> ResultSpool::List() {
  std::vector<SpooledResult> results;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::filesystem::path path = it->path();
    const std::string name = path.filename().string();
    if (name.find(kTemporaryMarker) != std::string::npos) {
      // An interrupted write: the result it was writing was never sent, so nothing expects it.
      std::error_code remove_error;
      std::filesystem::remove(path, remove_error);
      log::Info("spool.removed_partial_write")
          .Kv("file", path.string())
          .Kv("error", remove_error ? remove_error.message() : "none");
      continue;
    }
    if (!name.ends_with(kSuffix)) continue;  // *.corrupt and anything else a person left here
    const std::optional<TaskKey> key = ParseName(name);
    if (!key) {
      MoveAside(path, Corruption("the name is not <task id>-<attempt>.result"));
      continue;
    }
    Result<SpooledResult> loaded = Load(path, *key);
    if (!loaded.ok()) {
      MoveAside(path, loaded.status());
      continue;
    }
    results.push_back(std::move(loaded).value());
  }
  if (ec) return IoError("list the result spool " + dir_.string() + ": " + ec.message());
  std::sort(results.begin(), results.end(),
            [](const SpooledResult& a, const SpooledResult& b) { return a.key < b.key; });
  return results;
}

}  // namespace kfleet::worker
