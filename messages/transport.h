// Sends and receives framed messages over ZeroMQ. DEALER sockets (worker, CLI) carry
// [header, body]; ROUTER sockets (coordinator) carry [routing id, header, body].
// Nothing here blocks or throws: ZeroMQ errors come back as Status values.
#pragma once

#include <capnp/message.h>

#include <optional>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"
#include "messages/framing.h"

namespace kfleet::msg {

struct ReceivedMessage {
  std::string routing_id;  // the peer's ROUTER identity; empty on a DEALER socket
  std::string user_id;     // the ZAP User-Id (CURVE key's name); empty without a ZAP handler
  DecodedMessage message;
};

// Sets ZMQ_MAXMSGSIZE to limits.max_body_bytes, so ZeroMQ drops a peer that sends a larger frame
// before it is buffered, and ZMQ_LINGER to 0, so closing never waits on unsent messages.
[[nodiscard]] Status ConfigureSocket(zmq::socket_t& socket, const DecodeLimits& limits);

// Queues [routing_id,] header, body without blocking; the routing id frame is sent only when
// routing_id is non-empty (ROUTER sockets). Unavailable when ZeroMQ cannot take the message now
// (no connected peer, high-water mark reached); IoError for other socket errors.
[[nodiscard]] Status Send(zmq::socket_t& socket, MessageType type, capnp::MessageBuilder& builder,
                          std::string_view routing_id = {});
template <typename T>
[[nodiscard]] Status Send(zmq::socket_t& socket, capnp::MessageBuilder& builder,
                          std::string_view routing_id = {}) {
  return Send(socket, MessageTypeOf<T>::value, builder, routing_id);
}

// Takes one multipart message without blocking and always consumes all of its parts, so a
// malformed message never desyncs the socket. std::nullopt: nothing to read. An error: the
// message was malformed (wrong part count, or Decode's error; the caller counts and drops it) or
// IoError when the socket itself failed.
[[nodiscard]] Result<std::optional<ReceivedMessage>> Receive(zmq::socket_t& socket,
                                                             bool with_routing_id,
                                                             const DecodeLimits& limits = {});

// A message from a ROUTER socket with the sender's identity kept even when it is malformed, so
// the receiver can answer the peer (a Reject to a worker of another protocol version, an
// apiError to a client).
struct PeerMessage {
  std::string routing_id;
  std::string user_id;             // ZAP User-Id; empty without CURVE
  Result<DecodedMessage> message;  // the decoded message, or why it could not be decoded
  bool version_mismatch = false;   // a kfleet header of another protocol version
};

// Like Receive on a ROUTER socket, except that only a socket failure is an error Status; a
// malformed message comes back as a PeerMessage whose `message` holds the error.
[[nodiscard]] Result<std::optional<PeerMessage>> ReceiveFromPeer(zmq::socket_t& router,
                                                                 const DecodeLimits& limits = {});

}  // namespace kfleet::msg
