// How the CLI finds and talks to kfleetd: settings from flags, a cli.yaml or the local default,
// and one request / one reply over a DEALER socket (CurveZMQ when credentials are given).
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "messages/framing.h"

namespace kfleet::cli {

inline constexpr std::string_view kDefaultCoordinator = "tcp://127.0.0.1:7601";
inline constexpr int64_t kDefaultTimeoutMs = 10'000;

// The global flags every coordinator command shares; empty strings mean "not given".
struct ClientFlags {
  std::string coordinator;  // --coordinator ENDPOINT
  std::string credentials;  // --credentials FILE
  std::string cli_config;   // --cli-config FILE
  int64_t timeout_ms = kDefaultTimeoutMs;
};

// What the process environment contributes, passed in so tests need not touch the real one.
struct ClientEnvironment {
  std::string cli_config;  // $KFLEET_CLI_CONFIG
  std::string home;        // $HOME
  static ClientEnvironment FromProcess();
};

struct Connection {
  std::string endpoint;
  std::filesystem::path credentials;  // empty: NULL mechanism (a coordinator run with --insecure)
  std::string credentials_origin;     // "--credentials" or the config file that named them
  std::string config_file;            // the cli.yaml read, or empty when none was
};

// Each setting comes from its flag, else from the config file (--cli-config, else
// $KFLEET_CLI_CONFIG, else ~/.config/kfleet/cli.yaml when it exists), else the default: the local
// coordinator without credentials. A relative credentials path is taken from the config file's
// directory. A named config file that is missing, bad YAML or an unknown key is InvalidArgument
// naming the file (and line).
[[nodiscard]] Result<Connection> ResolveConnection(const ClientFlags& flags,
                                                   const ClientEnvironment& environment);

// An apiError's code and message as a Status: "not_found" -> kNotFound, ...; a code this build does
// not know is kInternal, keeping the message.
Status ApiErrorStatus(std::string_view code, std::string_view message);

// "10 s", "250 ms", "1.5 s": timeouts in messages.
std::string FormatTimeout(int64_t timeout_ms);

// Ctrl-C during a call makes it return Cancelled instead of killing the process, so commands can
// end quietly; a second Ctrl-C kills as usual.
[[nodiscard]] Status CatchInterrupts();
bool Interrupted();

// A decoded reply and its typed root, which stays valid while the Answer lives.
template <typename T>
struct Answer {
  msg::DecodedMessage message;
  typename T::Reader root;
};

class Client {
 public:
  // Loads the credentials, if any; the socket connects on the first call.
  [[nodiscard]] static Result<Client> Open(const Connection& connection, int64_t timeout_ms);
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  const std::string& endpoint() const;
  int64_t timeout_ms() const;

  // Sends `request` and waits up to `timeout_ms` for the reply of `reply_type`. An apiError comes
  // back as its Status (ApiErrorStatus); no reply in time is Unavailable with a hint to start
  // kfleetd; a reply of another type is Internal; Ctrl-C is Cancelled.
  [[nodiscard]] Result<msg::DecodedMessage> CallRaw(msg::MessageType request_type,
                                                    capnp::MessageBuilder& request,
                                                    msg::MessageType reply_type,
                                                    int64_t timeout_ms);

  template <typename Request, typename Reply>
  [[nodiscard]] Result<Answer<Reply>> Call(capnp::MessageBuilder& request,
                                           std::optional<int64_t> timeout_ms = std::nullopt) {
    KF_ASSIGN_OR_RETURN(
        msg::DecodedMessage message,
        CallRaw(msg::MessageTypeOf<Request>::value, request, msg::MessageTypeOf<Reply>::value,
                timeout_ms.value_or(this->timeout_ms())));
    KF_ASSIGN_OR_RETURN(typename Reply::Reader root, message.Root<Reply>());
    // The root points into the message's heap copy, so moving the message keeps it valid.
    return Answer<Reply>{std::move(message), root};
  }

 private:
  struct State;
  explicit Client(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kfleet::cli
