#include "cli/client.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/config.h"
#include "messages/curve.h"
#include "messages/transport.h"

namespace kfleet::cli {
namespace {

// Polling in slices bounds how late a Ctrl-C that lands just before zmq_poll is noticed.
constexpr int64_t kPollSliceMs = 200;
constexpr int kMonitoredEvents = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

volatile std::sig_atomic_t g_interrupted = 0;

void OnInterrupt(int) { g_interrupted = 1; }

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

}  // namespace

ClientEnvironment ClientEnvironment::FromProcess() {
  ClientEnvironment environment;
  if (const char* config = std::getenv("KFLEET_CLI_CONFIG")) environment.cli_config = config;
  if (const char* home = std::getenv("HOME")) environment.home = home;
  return environment;
}

Result<Connection> ResolveConnection(const ClientFlags& flags,
                                     const ClientEnvironment& environment) {
  std::filesystem::path config;
  std::string named_by;  // empty for the default location, which may be absent
  if (!flags.cli_config.empty()) {
    config = flags.cli_config;
    named_by = "--cli-config";
  } else if (!environment.cli_config.empty()) {
    config = environment.cli_config;
    named_by = "KFLEET_CLI_CONFIG";
  } else if (!environment.home.empty()) {
    config = std::filesystem::path(environment.home) / ".config/kfleet/cli.yaml";
  }

  Connection connection;
  std::string file_endpoint;
  std::filesystem::path file_credentials;
  std::error_code ec;
  const bool config_exists = !config.empty() && std::filesystem::exists(config, ec);
  if (ec) return IoError("cannot look at " + config.string() + ": " + ec.message());
  if (config_exists) {
    KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadFile(config));
    file_endpoint = reader.String("coordinator", "");
    file_credentials = reader.String("credentials", "");
    KF_RETURN_IF_ERROR(reader.Finish());
    if (!file_credentials.empty() && file_credentials.is_relative()) {
      file_credentials = config.parent_path() / file_credentials;
    }
    connection.config_file = config.string();
  } else if (!named_by.empty()) {
    return InvalidArgument(config.string() + " (named by " + named_by +
                           "): no such file; kfleetd writes STATE/cli.yaml when it starts");
  }

  connection.endpoint = !flags.coordinator.empty() ? flags.coordinator
                        : !file_endpoint.empty()   ? file_endpoint
                                                   : std::string(kDefaultCoordinator);
  if (!flags.credentials.empty()) {
    connection.credentials = flags.credentials;
    connection.credentials_origin = "--credentials";
  } else if (!file_credentials.empty()) {
    connection.credentials = file_credentials;
    connection.credentials_origin = "credentials: in " + connection.config_file;
  }
  return connection;
}

Status ApiErrorStatus(std::string_view code, std::string_view message) {
  static constexpr std::pair<std::string_view, ErrorCode> kCodes[] = {
      {"invalid_argument", ErrorCode::kInvalidArgument},
      {"not_found", ErrorCode::kNotFound},
      {"already_exists", ErrorCode::kAlreadyExists},
      {"failed_precondition", ErrorCode::kFailedPrecondition},
      {"permission_denied", ErrorCode::kPermissionDenied},
      {"resource_exhausted", ErrorCode::kResourceExhausted},
      {"deadline_exceeded", ErrorCode::kDeadlineExceeded},
      {"unavailable", ErrorCode::kUnavailable},
      {"cancelled", ErrorCode::kCancelled},
      {"internal", ErrorCode::kInternal},
  };
  std::string text = message.empty()
                         ? "the coordinator reported " + std::string(code) + " without a message"
                         : std::string(message);
  for (const auto& [name, error_code] : kCodes) {
    if (name == code) return Status(error_code, std::move(text));
  }
  return Internal(text + " (error code '" + std::string(code) + "' is unknown to this kfleet)");
}

std::string FormatTimeout(int64_t timeout_ms) {
  if (timeout_ms < 1000) return std::to_string(timeout_ms) + " ms";
  if (timeout_ms % 1000 == 0) return std::to_string(timeout_ms / 1000) + " s";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f s", static_cast<double>(timeout_ms) / 1000.0);
  return text;
}

Status CatchInterrupts() {
  struct sigaction action {};
  action.sa_handler = OnInterrupt;
  // No SA_RESTART: zmq_poll must return EINTR. SA_RESETHAND: a second Ctrl-C kills.
  action.sa_flags = SA_RESETHAND;
  if (sigemptyset(&action.sa_mask) != 0 || sigaction(SIGINT, &action, nullptr) != 0) {
    return ErrnoError("installing the Ctrl-C handler", errno);
  }
  return Status::Ok();
}

bool Interrupted() { return g_interrupted != 0; }

struct Client::State {
  std::string endpoint;
  std::filesystem::path credentials_file;
  std::optional<msg::ClientCredentials> credentials;
  int64_t timeout_ms = kDefaultTimeoutMs;

  // Declared before the sockets, so it is destroyed after them.
  zmq::context_t context;
  std::optional<zmq::socket_t> socket;
  std::optional<zmq::socket_t> monitor;  // the socket's connection events
  // What the monitor has seen on the current socket, to tell "nothing listens" from "refused".
  bool connected = false;
  bool handshake_done = false;

  Status Connect();
  void Reset();
  Status ReadMonitor();
  Status HandshakeFailed(uint16_t event, uint32_t value) const;
  Status NoAnswer(int64_t waited_ms) const;
};

Status Client::State::Connect() {
  static std::atomic<uint64_t> monitors{0};
  const std::string monitor_address = "inproc://kfleet-cli-monitor-" + std::to_string(++monitors);
  try {
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    KF_RETURN_IF_ERROR(msg::ConfigureSocket(dealer, {}));
    if (credentials.has_value()) KF_RETURN_IF_ERROR(msg::UseCurveClient(dealer, *credentials));
    if (zmq_socket_monitor(dealer.handle(), monitor_address.c_str(), kMonitoredEvents) != 0) {
      return IoError(std::string("watching the connection to ") + endpoint + ": " +
                     zmq_strerror(zmq_errno()));
    }
    zmq::socket_t events(context, zmq::socket_type::pair);
    events.set(zmq::sockopt::linger, 0);
    events.connect(monitor_address);
    try {
      dealer.connect(endpoint);
    } catch (const zmq::error_t& e) {
      return InvalidArgument("cannot connect to " + endpoint + ": " + e.what() +
                             " (expected tcp://HOST:PORT with a host name that resolves, or "
                             "ipc://PATH)");
    }
    socket = std::move(dealer);
    monitor = std::move(events);
  } catch (const zmq::error_t& e) {
    return IoError("setting up the connection to " + endpoint + ": " + e.what());
  }
  connected = false;
  handshake_done = false;
  return Status::Ok();
}

// After a timeout a late reply could still arrive; a fresh socket makes sure it is never taken for
// the answer to the next request.
void Client::State::Reset() {
  socket.reset();
  monitor.reset();
}

Status Client::State::ReadMonitor() {
  while (true) {
    zmq::message_t event;
    zmq::message_t address;
    try {
      if (!monitor->recv(event, zmq::recv_flags::dontwait)) return Status::Ok();
      // Each event is [6-byte event and value, endpoint]; the second part is already here.
      if (event.more() && !monitor->recv(address, zmq::recv_flags::dontwait)) {
        return Internal("ZeroMQ delivered a partial monitor event");
      }
    } catch (const zmq::error_t& e) {
      return IoError(std::string("reading connection events: ") + e.what());
    }
    if (event.size() < sizeof(uint16_t) + sizeof(uint32_t)) continue;
    uint16_t kind = 0;
    uint32_t value = 0;
    std::memcpy(&kind, event.data(), sizeof(kind));
    std::memcpy(&value, static_cast<const char*>(event.data()) + sizeof(kind), sizeof(value));
    if (kind == ZMQ_EVENT_CONNECTED) connected = true;
    if (kind == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) handshake_done = true;
    if (kind == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || kind == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
      return HandshakeFailed(kind, value);
    }
  }
}

Status Client::State::HandshakeFailed(uint16_t event, uint32_t value) const {
  const std::string at = "the coordinator at " + endpoint;
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    return PermissionDenied(at + " refused this client's key (from " + credentials_file.string() +
                            "): use the credentials that kfleetd wrote (STATE/client.key, named "
                            "in STATE/cli.yaml), or have your key authorized there");
  }
  if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH && !credentials.has_value()) {
    return PermissionDenied(at +
                            " uses CurveZMQ, so it requires credentials and none were given: pass "
                            "--credentials STATE/client.key or --cli-config STATE/cli.yaml "
                            "(kfleetd writes both)");
  }
  if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
    const std::string given = credentials_file.string();
    return FailedPrecondition(at +
                              " runs without security (--insecure) but credentials were given (" +
                              given + "): leave out --credentials, or set `credentials: \"\"`");
  }
  char code[16];
  std::snprintf(code, sizeof(code), "0x%08x", value);
  return Unavailable("the handshake with " + at + " failed (ZeroMQ protocol error " + code +
                     "): is " + endpoint + " a kfleetd API endpoint (kfleetd --api)?");
}

Status Client::State::NoAnswer(int64_t waited_ms) const {
  std::string message = "no answer from the coordinator at " + endpoint + " within " +
                        FormatTimeout(waited_ms) +
                        ": is kfleetd running? (start it with `kfleetd --state DIR`)";
  if (handshake_done) {
    message += "; something at " + endpoint +
               " accepted the connection but did not answer: if it is kfleetd, its log says "
               "what keeps it busy";
  } else if (connected && !credentials.has_value()) {
    message +=
        "; a connection was made but the handshake did not finish: if the coordinator uses "
        "CurveZMQ it requires credentials: pass --credentials STATE/client.key or --cli-config "
        "STATE/cli.yaml";
  } else if (connected && credentials.has_value()) {
    // Which side notices a security mismatch first is a race, so this may be a coordinator
    // running --insecure that closed the connection before saying why.
    message +=
        "; a connection was made but the CurveZMQ handshake did not finish: are the "
        "credentials in " +
        credentials_file.string() +
        " for this coordinator, and does it run with CurveZMQ (not --insecure)?";
  }
  return Unavailable(message);
}

Result<Client> Client::Open(const Connection& connection, int64_t timeout_ms) {
  auto state = std::make_unique<State>();
  state->endpoint = connection.endpoint;
  state->credentials_file = connection.credentials;
  state->timeout_ms = timeout_ms;
  if (!connection.credentials.empty()) {
    Result<msg::ClientCredentials> credentials = msg::LoadClientCredentials(connection.credentials);
    if (!credentials.ok()) {
      return Status(credentials.status().code(), credentials.status().message() + " (named by " +
                                                     connection.credentials_origin + ")");
    }
    state->credentials = std::move(credentials).value();
  }
  return Client(std::move(state));
}

Client::Client(std::unique_ptr<State> state) : state_(std::move(state)) {}
Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

const std::string& Client::endpoint() const { return state_->endpoint; }
int64_t Client::timeout_ms() const { return state_->timeout_ms; }

Result<msg::DecodedMessage> Client::CallRaw(msg::MessageType request_type,
                                            capnp::MessageBuilder& request,
                                            msg::MessageType reply_type, int64_t timeout_ms) {
  State& state = *state_;
  if (!state.socket.has_value()) KF_RETURN_IF_ERROR(state.Connect());
  const std::string request_name(msg::MessageTypeName(request_type));
  Status sent = msg::Send(*state.socket, request_type, request);
  if (!sent.ok()) {
    state.Reset();
    return sent.WithContext("sending " + request_name + " to " + state.endpoint);
  }

  const int64_t deadline_us = SystemClock().MonotonicUs() + timeout_ms * 1000;
  while (true) {
    if (Interrupted()) {
      state.Reset();
      return Cancelled("interrupted");
    }
    const int64_t left_ms = (deadline_us - SystemClock().MonotonicUs() + 999) / 1000;
    if (left_ms <= 0) {
      Status no_answer = state.NoAnswer(timeout_ms);
      state.Reset();
      return no_answer;
    }
    std::vector<zmq::pollitem_t> items = {{state.socket->handle(), 0, ZMQ_POLLIN, 0},
                                          {state.monitor->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, std::chrono::milliseconds(std::min(left_ms, kPollSliceMs)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      state.Reset();
      return IoError(std::string("waiting for the coordinator's answer: ") + e.what());
    }
    if ((items[1].revents & ZMQ_POLLIN) != 0) {
      Status handshake = state.ReadMonitor();
      if (!handshake.ok()) {
        state.Reset();
        return handshake;
      }
    }
    if ((items[0].revents & ZMQ_POLLIN) == 0) continue;

    Result<std::optional<msg::ReceivedMessage>> received = msg::Receive(*state.socket, false);
    if (!received.ok()) {
      state.Reset();
      if (received.status().code() == ErrorCode::kIoError) return received.status();
      return Corruption("the coordinator at " + state.endpoint + " sent a reply to " +
                        request_name + " that this kfleet cannot read (" +
                        received.status().message() +
                        "): are kfleet and kfleetd the same version?");
    }
    if (!received->has_value()) continue;
    msg::DecodedMessage reply = std::move(**received).message;
    if (reply.Is<msg::ApiError>()) {
      KF_ASSIGN_OR_RETURN(msg::ApiError::Reader error, reply.Root<msg::ApiError>());
      return ApiErrorStatus(Text(error.getCode()), Text(error.getMessage()));
    }
    if (reply.type() != reply_type) {
      state.Reset();
      return Internal("the coordinator at " + state.endpoint + " answered " + request_name +
                      " with " + std::string(msg::MessageTypeName(reply.type())) + ", expected " +
                      std::string(msg::MessageTypeName(reply_type)));
    }
    return reply;
  }
}

}  // namespace kfleet::cli
