// Finished task results kept on disk until the coordinator acknowledges them, so neither a lost
// connection nor a worker restart loses a result (protocol.md, "Tasks"). One file per attempt:
//   DIR/<task id>-<attempt>.result
// holding the TaskResult message exactly as framed on the wire: the 8-byte header frame followed
// by the body frame. A file is written (atomically) before its result is first sent and removed
// when the Ack arrives.
#pragma once

#include <filesystem>
#include <vector>

#include "common/status.h"
#include "messages/framing.h"
#include "worker/task_runner.h"

namespace kfleet::worker {

struct SpooledResult {
  TaskKey key;
  msg::DecodedMessage message;  // a validated TaskResult
};

class ResultSpool {
 public:
  // Creates `dir` (mode 0700) when missing.
  [[nodiscard]] static Result<ResultSpool> Open(std::filesystem::path dir);

  // `frames` must hold a TaskResult for `key` (msg::Encode<msg::TaskResult>).
  [[nodiscard]] Status Write(const TaskKey& key, const msg::EncodedFrames& frames);
  // Removing a result that is not there is not an error: the Ack may come twice.
  [[nodiscard]] Status Remove(const TaskKey& key);
  // Every result on disk, ordered by key. A file that cannot be read as the result its name
  // says is renamed to `<name>.corrupt` with a warning and left out; temporary files of an
  // interrupted write are deleted. Fails only when the directory cannot be read.
  [[nodiscard]] Result<std::vector<SpooledResult>> List();

  std::filesystem::path PathOf(const TaskKey& key) const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  explicit ResultSpool(std::filesystem::path dir) : dir_(std::move(dir)) {}
  // The result in `path` or why it is unusable.
  Result<SpooledResult> Load(const std::filesystem::path& path, const TaskKey& key) const;

  std::filesystem::path dir_;
};

}  // namespace kfleet::worker
