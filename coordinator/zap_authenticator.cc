#include "coordinator/zap_authenticator.h"

#include <zmq.h>

#include <array>
#include <cerrno>
#include <exception>
#include <map>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "common/ids.h"
#include "common/log.h"

namespace kfleet::coordinator {
namespace {

constexpr std::string_view kZapVersion = "1.0";
// version, request id, domain, address, identity, mechanism, then the mechanism's credentials.
constexpr size_t kZapHeaderFrames = 6;
// CURVE sends one credential frame; anything much longer is malformed and not worth keeping.
constexpr size_t kMaxRequestFrames = 16;
constexpr size_t kCurveKeyBytes = 32;
constexpr size_t kLoggedKeyChars = 8;  // enough to tell keys apart, too little to be the key

// Retries EINTR so a signal cannot leave the REP socket between its receive and its send.
bool RecvPart(zmq::socket_t& socket, zmq::message_t& part) {
  while (true) {
    try {
      return socket.recv(part, zmq::recv_flags::dontwait).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

void SendPart(zmq::socket_t& socket, std::string_view bytes, bool more) {
  const zmq::send_flags flags =
      more ? zmq::send_flags::dontwait | zmq::send_flags::sndmore : zmq::send_flags::dontwait;
  while (true) {
    try {
      // libzmq gives each ZAP requester an unbounded pipe, so a refusal here is a libzmq fault.
      if (!socket.send(zmq::const_buffer(bytes.data(), bytes.size()), flags)) {
        throw std::runtime_error("ZeroMQ refused a frame of a ZAP reply");
      }
      return;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

}  // namespace

struct ZapAuthenticator::Decision {
  bool accepted = false;
  std::string reason;   // the status text: "OK" or why the handshake was refused
  std::string user_id;  // the key's name when accepted
  std::string domain;
  std::string address;
  std::string key_prefix;
};

ZapAuthenticator::ZapAuthenticator(zmq::context_t& context) : context_(context) {}

ZapAuthenticator::~ZapAuthenticator() { Stop(); }

Status ZapAuthenticator::Start() {
  if (thread_.joinable() || running_.load()) {
    return FailedPrecondition("the ZAP handler is running already");
  }
  const std::string endpoint(kZapEndpoint);
  try {
    zap_socket_.emplace(context_, zmq::socket_type::rep);
    zap_socket_->set(zmq::sockopt::linger, 0);
    zap_socket_->bind(endpoint);
  } catch (const zmq::error_t& e) {
    zap_socket_.reset();
    if (e.num() == EADDRINUSE) {
      return AlreadyExists("another ZAP handler is bound at " + endpoint +
                           " in this ZeroMQ context already");
    }
    return IoError("binding the ZAP handler at " + endpoint + ": " + e.what());
  }
  // A private PAIR lets Stop() wake the thread at once, however long the poll would wait.
  const std::string control = "inproc://" + NewId("kfleet-zap-control");
  try {
    control_in_.emplace(context_, zmq::socket_type::pair);
    control_in_->set(zmq::sockopt::linger, 0);
    control_in_->bind(control);
    control_out_.emplace(context_, zmq::socket_type::pair);
    control_out_->set(zmq::sockopt::linger, 0);
    control_out_->connect(control);
  } catch (const zmq::error_t& e) {
    CloseSockets();
    return IoError("creating the ZAP handler's control socket: " + std::string(e.what()));
  }
  failed_.store(false);
  running_.store(true);
  try {
    thread_ = std::thread([this] { Serve(); });
  } catch (const std::system_error& e) {
    running_.store(false);
    CloseSockets();
    return Unavailable("starting the ZAP handler thread: " + std::string(e.what()));
  }
  log::Info("zap.started").Kv("endpoint", endpoint);
  return Status::Ok();
}

void ZapAuthenticator::Stop() {
  if (thread_.joinable()) {
    // When the signal cannot be sent, the thread has failed already and exits on its own.
    try {
      if (!control_out_->send(zmq::str_buffer("stop"), zmq::send_flags::dontwait)) {
        log::Debug("zap.stop_signal_not_sent").Kv("reason", "control queue closed");
      }
    } catch (const zmq::error_t& e) {
      log::Debug("zap.stop_signal_not_sent").Kv("reason", e.what());
    }
    thread_.join();
    log::Info("zap.stopped").Kv("accepted", accepted_.load()).Kv("denied", denied_.load());
  }
  running_.store(false);
  CloseSockets();
}

void ZapAuthenticator::CloseSockets() {
  zap_socket_.reset();
  control_in_.reset();
  control_out_.reset();
}

void ZapAuthenticator::SetAuthorized(AuthorizedKeys keys) {
  std::lock_guard<std::mutex> lock(keys_mutex_);
  keys_ = std::move(keys);
}

void ZapAuthenticator::Serve() {
  try {
    while (true) {
      std::vector<zmq::pollitem_t> items = {{zap_socket_->handle(), 0, ZMQ_POLLIN, 0},
                                            {control_in_->handle(), 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (items[1].revents & ZMQ_POLLIN) return;
      if (items[0].revents & ZMQ_POLLIN) Answer();
    }
  } catch (const zmq::error_t& e) {
    failed_.store(true);
    // A terminating context waits for every socket to close. Otherwise the socket stays bound but
    // unanswered until Stop(), so handshakes time out instead of passing unchecked.
    if (e.num() == ETERM) {
      log::Error("zap.failed").Kv("error", e.what()).Kv("effect", "ZeroMQ context shut down");
      zap_socket_->close();
      control_in_->close();
      return;
    }
    log::Error("zap.failed").Kv("error", e.what()).Kv("effect", "CURVE handshakes now time out");
  } catch (const std::exception& e) {
    log::Error("zap.failed").Kv("error", e.what()).Kv("effect", "CURVE handshakes now time out");
    failed_.store(true);
  }
}

void ZapAuthenticator::Answer() {
  std::vector<zmq::message_t> request;
  size_t frames = 0;
  zmq::message_t part;
  if (!RecvPart(*zap_socket_, part)) return;
  while (true) {
    ++frames;
    const bool more = part.more();
    if (request.size() < kMaxRequestFrames) request.push_back(std::move(part));
    if (!more) break;
    // ZeroMQ delivers multipart messages whole, so the remaining parts are already here.
    if (!RecvPart(*zap_socket_, part)) {
      throw std::runtime_error("ZeroMQ delivered part of a ZAP request");
    }
  }
  Decision decision;
  if (frames > kMaxRequestFrames) {
    decision.reason = "malformed ZAP request: " + std::to_string(frames) + " frames";
  } else {
    decision = Decide(request);
  }

  const std::string request_id = request.size() > 1 ? request[1].to_string() : std::string();
  SendPart(*zap_socket_, kZapVersion, true);
  SendPart(*zap_socket_, request_id, true);
  SendPart(*zap_socket_, decision.accepted ? "200" : "400", true);
  SendPart(*zap_socket_, decision.reason, true);
  SendPart(*zap_socket_, decision.user_id, true);
  SendPart(*zap_socket_, "", false);  // metadata: none

  if (decision.accepted) {
    accepted_.fetch_add(1);
    log::Debug("zap.accepted")
        .Kv("domain", decision.domain)
        .Kv("address", decision.address)
        .Kv("user", decision.user_id);
    return;
  }
  denied_.fetch_add(1);
  log::Warn("zap.denied")
      .Kv("domain", decision.domain)
      .Kv("address", decision.address)
      .Kv("key", decision.key_prefix)
      .Kv("reason", decision.reason);
}

ZapAuthenticator::Decision ZapAuthenticator::Decide(const std::vector<zmq::message_t>& request) {
  Decision decision;
  if (request.size() < kZapHeaderFrames) {
    decision.reason = "malformed ZAP request: " + std::to_string(request.size()) +
                      " frames, expected at least " + std::to_string(kZapHeaderFrames);
    return decision;
  }
  decision.domain = request[2].to_string();
  decision.address = request[3].to_string();
  if (request[0].to_string_view() != kZapVersion) {
    decision.reason = "unsupported ZAP version '" + request[0].to_string() + "', expected 1.0";
    return decision;
  }
  const std::string mechanism = request[5].to_string();
  if (mechanism != "CURVE") {
    decision.reason = "mechanism " + mechanism + " is not allowed: kfleet endpoints need CURVE";
    return decision;
  }
  if (request.size() != kZapHeaderFrames + 1 || request[6].size() != kCurveKeyBytes) {
    decision.reason = "malformed CURVE credentials: expected one 32-byte public key";
    return decision;
  }
  std::array<char, 41> z85{};
  if (!zmq_z85_encode(z85.data(), request[6].data<uint8_t>(), kCurveKeyBytes)) {
    decision.reason = "malformed CURVE credentials: key does not encode as Z85";
    return decision;
  }
  const std::string key(z85.data());
  decision.key_prefix = key.substr(0, kLoggedKeyChars);

  std::lock_guard<std::mutex> lock(keys_mutex_);
  const std::map<std::string, std::string>* authorized = nullptr;
  if (decision.domain == kWorkersZapDomain) authorized = &keys_.workers;
  if (decision.domain == kClientsZapDomain) authorized = &keys_.clients;
  if (!authorized) {
    decision.reason = "unknown ZAP domain '" + decision.domain + "'";
    return decision;
  }
  const auto it = authorized->find(key);
  if (it == authorized->end()) {
    decision.reason = "key is not authorized in " + decision.domain;
    return decision;
  }
  decision.accepted = true;
  decision.reason = "OK";
  decision.user_id = it->second;
  return decision;
}

}  // namespace kfleet::coordinator
