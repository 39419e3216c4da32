#include "worker/echo_task.h"

#include <capnp/message.h>
#include <kj/exception.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <thread>

#include "common/ids.h"

namespace kfleet::worker {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string Short(double value) {
  std::ostringstream text;
  text.precision(3);
  text << value;
  return text.str();
}

std::string_view DataView(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

// "draw 0.12 < fail rate 0.2": the band the draw fell into, so a surprising outcome explains
// itself.
std::string Explain(const msg::EchoPayload::Reader& payload, const EchoDraw& draw) {
  const double fail = payload.getFailRate();
  const double crash = fail + payload.getCrashRate();
  const double hang = crash + payload.getHangRate();
  std::string text = "draw " + Short(draw.u) + " < ";
  switch (draw.action) {
    case EchoAction::kFail: return text + "fail rate " + Short(fail);
    case EchoAction::kCrash: return text + "fail + crash rate " + Short(crash);
    case EchoAction::kHang: return text + "fail + crash + hang rate " + Short(hang);
    case EchoAction::kAnswer: break;
  }
  return "draw " + Short(draw.u) + " >= " + Short(hang);
}

Status FailError(const msg::EchoPayload::Reader& payload, const EchoDraw& draw) {
  return FailedPrecondition("echo: asked to fail (" + Explain(payload, draw) + ")");
}

[[noreturn]] void Crash(const msg::EchoPayload::Reader& payload, const EchoDraw& draw) {
  std::fprintf(stderr, "echo: asked to crash (%s)\n", Explain(payload, draw).c_str());
  // A deliberate crash must not leave a core file in the work directory.
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) {
    std::fprintf(stderr, "echo: cannot disable core dumps: %s\n", std::strerror(errno));
  }
  ::raise(SIGSEGV);
  // Only reached when SIGSEGV is blocked or ignored; end the process the next-best way.
  std::abort();
}

[[noreturn]] void Hang(const msg::EchoPayload::Reader& payload, const EchoDraw& draw) {
  std::fprintf(stderr, "echo: asked to hang (%s)\n", Explain(payload, draw).c_str());
  std::fflush(stderr);
  while (true) ::pause();
}

}  // namespace

EchoDraw DrawEcho(const msg::EchoPayload::Reader& payload, uint64_t task_id, uint32_t attempt) {
  uint64_t hash = SplitMix64(payload.getSeed());
  hash = SplitMix64(hash ^ task_id);
  hash = SplitMix64(hash ^ attempt);
  EchoDraw draw;
  draw.u = static_cast<double>(hash >> 11) * 0x1.0p-53;  // the top 53 bits, exactly representable
  const double fail = payload.getFailRate();
  const double crash = fail + payload.getCrashRate();
  const double hang = crash + payload.getHangRate();
  if (draw.u < fail) {
    draw.action = EchoAction::kFail;
  } else if (draw.u < crash) {
    draw.action = EchoAction::kCrash;
  } else if (draw.u < hang) {
    draw.action = EchoAction::kHang;
  }
  return draw;
}

Result<std::string> RunEcho(const msg::EchoPayload::Reader& payload, uint64_t task_id,
                            uint32_t attempt) {
  const EchoDraw draw = DrawEcho(payload, task_id, attempt);
  std::this_thread::sleep_for(std::chrono::milliseconds(payload.getDelayMs()));
  switch (draw.action) {
    case EchoAction::kFail: return FailError(payload, draw);
    case EchoAction::kCrash: Crash(payload, draw);
    case EchoAction::kHang: Hang(payload, draw);
    case EchoAction::kAnswer: break;
  }
  return Sha256Hex(DataView(payload.getData()));
}

Result<std::string> AnswerEchoInProcess(const msg::EchoPayload::Reader& payload, uint64_t task_id,
                                        uint32_t attempt) {
  const EchoDraw draw = DrawEcho(payload, task_id, attempt);
  switch (draw.action) {
    case EchoAction::kFail: return FailError(payload, draw);
    case EchoAction::kCrash:
      return FailedPrecondition("echo: asked to crash (" + Explain(payload, draw) +
                                "); the in-process executor reports a crash as a failure");
    case EchoAction::kHang:
      return FailedPrecondition("echo: asked to hang (" + Explain(payload, draw) +
                                "); the in-process executor reports a hang as a failure");
    case EchoAction::kAnswer: break;
  }
  return Sha256Hex(DataView(payload.getData()));
}

std::string BuildEchoPayload(const EchoSpec& spec) {
  capnp::MallocMessageBuilder builder;
  msg::EchoPayload::Builder payload = builder.initRoot<msg::EchoPayload>();
  payload.setDelayMs(spec.delay_ms);
  payload.setFailRate(spec.fail_rate);
  payload.setCrashRate(spec.crash_rate);
  payload.setHangRate(spec.hang_rate);
  payload.setSeed(spec.seed);
  payload.setData(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(spec.data.data()),
                                      spec.data.size()));
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  const kj::ArrayPtr<const char> bytes = words.asChars();
  return std::string(bytes.begin(), bytes.size());
}

msg::EchoPayload::Reader EchoPayloadMessage::root() const {
  return reader_->getRoot<msg::EchoPayload>();
}

Result<EchoPayloadMessage> DecodeEchoPayload(std::string_view bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return Corruption("echo payload is " + std::to_string(bytes.size()) +
                      " bytes; a Cap'n Proto message is a nonzero multiple of 8");
  }
  EchoPayloadMessage message;
  // Copying also aligns the words, whatever the alignment of the Assign's data.
  message.words_ = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(message.words_.begin(), bytes.data(), bytes.size());
  try {
    capnp::ReaderOptions checking;
    checking.traversalLimitInWords = 2 * message.words_.size();
    checking.nestingLimit = 8;
    capnp::FlatArrayMessageReader check(message.words_.asPtr(), checking);
    if (check.getEnd() != message.words_.end()) {
      return Corruption("echo payload has bytes after the end of its Cap'n Proto message");
    }
    // Reading the one pointer field walks everything the payload holds.
    [[maybe_unused]] capnp::Data::Reader data = check.getRoot<msg::EchoPayload>().getData();
  } catch (const kj::Exception& e) {
    return Corruption(std::string("echo payload is not a valid EchoPayload message: ") +
                      e.getDescription().cStr());
  }
  // Validated above; later reads of the same words must not run into the traversal budget.
  capnp::ReaderOptions trusted;
  trusted.traversalLimitInWords = std::numeric_limits<uint64_t>::max();
  message.reader_ =
      std::make_unique<capnp::FlatArrayMessageReader>(message.words_.asPtr(), trusted);
  return message;
}

}  // namespace kfleet::worker
