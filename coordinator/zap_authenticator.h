// kfleetd's ZAP handler (ZeroMQ RFC 27): decides which CURVE clients may complete a handshake
// with the daemon's server sockets. It fails closed:
// - Start() binds inproc://zeromq.zap.01 synchronously, and the daemon binds its CURVE sockets
//   only after it succeeded (libzmq 4.3 admits every CURVE client when no handler is bound);
// - every request that is not CURVE, in a known domain, with an authorized key gets status 400;
// - if the handler thread fails, it keeps its socket bound but unanswered, so handshakes time out
//   instead of passing, and healthy() turns false for the daemon to exit on.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "coordinator/key_store.h"

namespace kfleet::coordinator {

// The ZAP domains of kfleetd's two server sockets (msg::UseCurveServer).
inline constexpr std::string_view kWorkersZapDomain = "kfleet-workers";
inline constexpr std::string_view kClientsZapDomain = "kfleet-clients";
inline constexpr std::string_view kZapEndpoint = "inproc://zeromq.zap.01";

class ZapAuthenticator {
 public:
  // `context` must be the one the server sockets live in (ZAP is per context) and must outlive
  // this object.
  explicit ZapAuthenticator(zmq::context_t& context);
  ~ZapAuthenticator();  // Stop()
  ZapAuthenticator(const ZapAuthenticator&) = delete;
  ZapAuthenticator& operator=(const ZapAuthenticator&) = delete;

  // Binds the ZAP endpoint and starts answering. AlreadyExists when another handler holds the
  // endpoint in this context; FailedPrecondition when this one is running already.
  [[nodiscard]] Status Start();
  // Stops the thread and unbinds; prompt (a message on an inproc control socket wakes the thread).
  void Stop();

  // Replaces the keys admitted from now on; handshakes already done are not revisited.
  void SetAuthorized(AuthorizedKeys keys);

  // True while the handler thread is answering requests.
  bool healthy() const { return running_.load() && !failed_.load(); }
  uint64_t accepted() const { return accepted_.load(); }
  uint64_t denied() const { return denied_.load(); }

 private:
  struct Decision;
  void Serve();
  void CloseSockets();
  void Answer();
  Decision Decide(const std::vector<zmq::message_t>& request);

  zmq::context_t& context_;
  // The thread uses zap_socket_ and control_in_ while it runs; Start() and Stop() touch them only
  // before it starts and after it is joined. control_out_ belongs to the caller's thread.
  std::optional<zmq::socket_t> zap_socket_;
  std::optional<zmq::socket_t> control_in_;
  std::optional<zmq::socket_t> control_out_;
  std::thread thread_;

  std::mutex keys_mutex_;
  AuthorizedKeys keys_;  // guarded by keys_mutex_

  std::atomic<bool> running_{false};
  std::atomic<bool> failed_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> denied_{0};
};

}  // namespace kfleet::coordinator
