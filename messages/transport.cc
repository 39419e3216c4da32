#include "messages/transport.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "messages/curve.h"

namespace kfleet::msg {
namespace {

constexpr size_t kMaxParts = 3;  // routing id, header, body

Status SocketError(std::string_view what, const zmq::error_t& e) {
  return IoError(std::string(what) + ": " + e.what());
}

// False when there is nothing to read. Retries EINTR so a signal cannot split a multipart message.
bool ReceivePart(zmq::socket_t& socket, zmq::message_t& part) {
  while (true) {
    try {
      return socket.recv(part, zmq::recv_flags::dontwait).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

// Routing ids are binary (ZeroMQ makes up 5 bytes unless the peer sets one); hex prints them.
std::string PeerName(const zmq::message_t& routing_id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (const char c : routing_id.to_string_view()) {
    hex.push_back(kDigits[static_cast<uint8_t>(c) >> 4]);
    hex.push_back(kDigits[static_cast<uint8_t>(c) & 0xf]);
  }
  return "from peer 0x" + hex;
}

}  // namespace

Status ConfigureSocket(zmq::socket_t& socket, const DecodeLimits& limits) {
  const auto max_frame_bytes = static_cast<int64_t>(
      std::min<uint64_t>(limits.max_body_bytes, std::numeric_limits<int64_t>::max()));
  try {
    socket.set(zmq::sockopt::maxmsgsize, max_frame_bytes);
    socket.set(zmq::sockopt::linger, 0);
  } catch (const zmq::error_t& e) {
    return SocketError("configuring socket", e);
  }
  return Status::Ok();
}

Status Send(zmq::socket_t& socket, MessageType type, capnp::MessageBuilder& builder,
            std::string_view routing_id) {
  const EncodedFrames frames = Encode(type, builder);
  std::array<std::string_view, kMaxParts> parts;
  size_t count = 0;
  if (!routing_id.empty()) parts[count++] = routing_id;
  parts[count++] = frames.header;
  parts[count++] = frames.BodyBytes();

  const std::string name(MessageTypeName(type));
  try {
    for (size_t i = 0; i < count; ++i) {
      const zmq::send_flags flags = i + 1 < count
                                        ? zmq::send_flags::dontwait | zmq::send_flags::sndmore
                                        : zmq::send_flags::dontwait;
      if (socket.send(zmq::const_buffer(parts[i].data(), parts[i].size()), flags)) continue;
      // ZeroMQ checks capacity on a message's first part only; a later refusal is a bug there.
      if (i > 0) return Internal("ZeroMQ refused part " + std::to_string(i) + " of " + name);
      return Unavailable("cannot send " + name + " now: no connected peer or its queue is full");
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) {
      return Unavailable("cannot send " + name + ": routing id is not connected");
    }
    return SocketError("sending " + name, e);
  }
  return Status::Ok();
}

namespace {

// Every part of one multipart message, however many; nullopt when nothing was waiting.
struct RawMessage {
  std::array<zmq::message_t, kMaxParts> parts;
  size_t count = 0;
};

Result<std::optional<RawMessage>> ReceiveParts(zmq::socket_t& socket) {
  RawMessage raw;
  try {
    zmq::message_t part;
    if (!ReceivePart(socket, part)) return std::optional<RawMessage>();
    while (true) {
      const bool more = part.more();
      if (raw.count < raw.parts.size()) raw.parts[raw.count] = std::move(part);
      ++raw.count;
      if (!more) break;
      // ZeroMQ delivers multipart messages whole, so the remaining parts are already here.
      if (!ReceivePart(socket, part)) return Internal("ZeroMQ delivered a partial message");
    }
  } catch (const zmq::error_t& e) {
    return SocketError("receiving", e);
  }
  return std::optional<RawMessage>(std::move(raw));
}

Result<DecodedMessage> DecodeParts(const RawMessage& raw, bool with_routing_id,
                                   const DecodeLimits& limits) {
  const size_t expected = with_routing_id ? 3 : 2;
  if (raw.count != expected) {
    return InvalidArgument("message has " + std::to_string(raw.count) + " parts, expected " +
                           std::to_string(expected) +
                           (with_routing_id ? " (routing id, header, body)" : " (header, body)"));
  }
  return Decode(raw.parts[expected - 2].to_string_view(), raw.parts[expected - 1].to_string_view(),
                limits);
}

// A kfleet header of another protocol version: the sender deserves a reply it can log.
bool IsOtherVersion(const RawMessage& raw, bool with_routing_id) {
  const size_t header_index = with_routing_id ? 1 : 0;
  if (raw.count <= header_index) return false;
  const std::string_view header = raw.parts[header_index].to_string_view();
  if (header.size() != kHeaderBytes || !header.starts_with(kMagic)) return false;
  const uint16_t version = static_cast<uint16_t>(static_cast<uint8_t>(header[4]) |
                                                 (static_cast<uint8_t>(header[5]) << 8));
  return version != kProtocolVersion;
}

}  // namespace

Result<std::optional<ReceivedMessage>> Receive(zmq::socket_t& socket, bool with_routing_id,
                                               const DecodeLimits& limits) {
  KF_ASSIGN_OR_RETURN(std::optional<RawMessage> raw, ReceiveParts(socket));
  if (!raw.has_value()) return std::optional<ReceivedMessage>();
  const std::string peer = with_routing_id ? PeerName(raw->parts[0]) : "from peer";
  Result<DecodedMessage> decoded = DecodeParts(*raw, with_routing_id, limits);
  if (!decoded.ok()) return decoded.status().WithContext(peer);
  const size_t header_index = with_routing_id ? 1 : 0;
  ReceivedMessage received{with_routing_id ? raw->parts[0].to_string() : std::string(),
                           PeerUserId(raw->parts[header_index]), std::move(decoded).value()};
  return std::optional<ReceivedMessage>(std::move(received));
}

Result<std::optional<PeerMessage>> ReceiveFromPeer(zmq::socket_t& router,
                                                   const DecodeLimits& limits) {
  KF_ASSIGN_OR_RETURN(std::optional<RawMessage> raw, ReceiveParts(router));
  if (!raw.has_value()) return std::optional<PeerMessage>();
  Result<DecodedMessage> decoded = DecodeParts(*raw, /*with_routing_id=*/true, limits);
  if (!decoded.ok()) decoded = decoded.status().WithContext(PeerName(raw->parts[0]));
  PeerMessage message{raw->parts[0].to_string(),
                      raw->count > 1 ? PeerUserId(raw->parts[1]) : std::string(),
                      std::move(decoded), IsOtherVersion(*raw, /*with_routing_id=*/true)};
  return std::optional<PeerMessage>(std::move(message));
}

}  // namespace kfleet::msg
