// Messages the coordinator decided to send while handling a batch. They leave only after the
// batch's transaction commits, so no worker or client ever hears of a state change (an Ack, an
// Assign, a reply) that could still roll back.
#pragma once

#include <capnp/message.h>

#include <memory>
#include <string>
#include <vector>

#include "messages/framing.h"

namespace kfleet::coordinator {

enum class Channel { kWorkers, kClients };

struct OutgoingMessage {
  Channel channel;
  std::string routing_id;
  msg::MessageType type;
  std::unique_ptr<capnp::MallocMessageBuilder> body;
};

class Outbox {
 public:
  // Starts a message of root type T to `routing_id`; fill the returned builder.
  template <typename T>
  typename T::Builder Add(Channel channel, std::string routing_id) {
    auto body = std::make_unique<capnp::MallocMessageBuilder>();
    typename T::Builder root = body->initRoot<T>();
    messages_.push_back(
        {channel, std::move(routing_id), msg::MessageTypeOf<T>::value, std::move(body)});
    return root;
  }

  std::vector<OutgoingMessage> Take() { return std::exchange(messages_, {}); }
  void Clear() { messages_.clear(); }
  // Drops the messages added after the first `size` (those of a request that rolled back).
  void Truncate(size_t size) {
    if (size < messages_.size()) messages_.resize(size);
  }
  size_t size() const { return messages_.size(); }

 private:
  std::vector<OutgoingMessage> messages_;
};

}  // namespace kfleet::coordinator
