// Frames kfleet messages: an 8-byte header (magic, protocol version, message type) and a Cap'n
// Proto body. Decode never trusts the peer: it checks the header and walks the whole body, so a
// decoded message can be read without Cap'n Proto throwing.
#pragma once

#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "messages/api.capnp.h"
#include "messages/protocol.capnp.h"

namespace kfleet::msg {

// Bumped on any incompatible change to framing or schemas; peers must match exactly.
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kHeaderBytes = 8;
inline constexpr std::string_view kMagic = "KFLT";

// Every root struct and its header type. The list drives MessageTypeOf and Decode's schema table.
// clang-format off
#define KF_MESSAGE_TYPES(X)                  \
  X(Register, REGISTER)                      \
  X(Welcome, WELCOME)                        \
  X(Reject, REJECT)                          \
  X(Heartbeat, HEARTBEAT)                    \
  X(Assign, ASSIGN)                          \
  X(Progress, PROGRESS)                      \
  X(TaskResult, RESULT)                      \
  X(Ack, ACK)                                \
  X(Cancel, CANCEL)                          \
  X(Drain, DRAIN)                            \
  X(Bye, BYE)                                \
  X(ApiError, API_ERROR)                     \
  X(SubmitRequest, SUBMIT_REQUEST)           \
  X(SubmitReply, SUBMIT_REPLY)               \
  X(StatusRequest, STATUS_REQUEST)           \
  X(StatusReply, STATUS_REPLY)               \
  X(WatchRequest, WATCH_REQUEST)             \
  X(WatchReply, WATCH_REPLY)                 \
  X(NodesRequest, NODES_REQUEST)             \
  X(NodesReply, NODES_REPLY)                 \
  X(NodeActionRequest, NODE_ACTION_REQUEST)  \
  X(NodeActionReply, NODE_ACTION_REPLY)      \
  X(InviteRequest, INVITE_REQUEST)           \
  X(InviteReply, INVITE_REPLY)               \
  X(CancelRequest, CANCEL_REQUEST)           \
  X(CancelReply, CANCEL_REPLY)               \
  X(ShowRequest, SHOW_REQUEST)               \
  X(ShowReply, SHOW_REPLY)                   \
  X(ExportRequest, EXPORT_REQUEST)           \
  X(ExportReply, EXPORT_REPLY)
// clang-format on

// MessageTypeOf<Register>::value == MessageType::REGISTER. Undefined for structs that are not
// message roots, so Encode<T> / Root<T> on them does not compile.
template <typename T>
struct MessageTypeOf;
#define KF_MESSAGE_TYPE_OF_(Struct, Type)                   \
  template <>                                               \
  struct MessageTypeOf<Struct> {                            \
    static constexpr MessageType value = MessageType::Type; \
  };
KF_MESSAGE_TYPES(KF_MESSAGE_TYPE_OF_)
#undef KF_MESSAGE_TYPE_OF_

// The schema name ("register", "apiError"), or "unknown" for an ordinal this build does not know.
std::string_view MessageTypeName(MessageType type);

// Validation reads each body word at most once per walk (see framing.cc), so the work Decode and
// later readers do is linear in the body size; these caps bound the rest.
struct DecodeLimits {
  // Larger bodies are refused before parsing (ResourceExhausted); also the ZeroMQ frame cap.
  size_t max_body_bytes = size_t{64} << 20;
  // Pointer depth; our schemas nest a few levels, so deeper means a hostile message.
  int nesting_limit = 64;
};

struct EncodedFrames {
  std::string header;           // kHeaderBytes bytes
  kj::Array<capnp::word> body;  // flat-array (unpacked) Cap'n Proto message

  std::string_view BodyBytes() const {
    auto bytes = body.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
  }
};

[[nodiscard]] EncodedFrames Encode(MessageType type, capnp::MessageBuilder& builder);
template <typename T>
[[nodiscard]] EncodedFrames Encode(capnp::MessageBuilder& builder) {
  return Encode(MessageTypeOf<T>::value, builder);
}

// A validated message. Owns an aligned copy of the body, so it outlives the received frames.
class DecodedMessage {
 public:
  MessageType type() const { return type_; }
  uint16_t version() const { return version_; }

  template <typename T>
  bool Is() const {
    return type_ == MessageTypeOf<T>::value;
  }

  // The root as T; an error when the header names another type (its body was validated as that).
  template <typename T>
  [[nodiscard]] Result<typename T::Reader> Root() const {
    if (!Is<T>()) return WrongType(MessageTypeOf<T>::value);
    return reader_->getRoot<T>();
  }

  // The root as the header's schema, for generic code (logging, tests).
  capnp::DynamicStruct::Reader DynamicRoot() const;

 private:
  friend Result<DecodedMessage> Decode(std::string_view, std::string_view, const DecodeLimits&);
  DecodedMessage(MessageType type, uint16_t version, kj::Array<capnp::word> words,
                 int nesting_limit);
  Status WrongType(MessageType wanted) const;

  MessageType type_;
  uint16_t version_;
  kj::Array<capnp::word> words_;  // heap storage; reader_ points into it, so moves keep it valid
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

// Checks both frames against the limits. A frame of another protocol version is
// FailedPrecondition (the peer must be upgraded, retrying will not help); a bad header or body
// size is InvalidArgument, a body over
// max_body_bytes is ResourceExhausted, a body that is not a valid message of the header's type is
// Corruption. Never throws.
[[nodiscard]] Result<DecodedMessage> Decode(std::string_view header, std::string_view body,
                                            const DecodeLimits& limits = {});

}  // namespace kfleet::msg
