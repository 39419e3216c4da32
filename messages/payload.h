// Task payloads and outputs (Assign.payload, TaskResult.output): one unpacked Cap'n Proto message
// as flat bytes. Decoding copies into aligned words and reads every field once against the root
// type's schema, under a traversal limit linear in the size, so a corrupt or hostile payload is a
// Corruption here and reading any field of root() later cannot throw.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kfleet::msg {

// One unpacked flat-array message.
std::string EncodePayload(capnp::MessageBuilder& builder);

// A checked message of type T that owns its words.
template <typename T>
class Payload {
 public:
  typename T::Reader root() const { return reader_->template getRoot<T>(); }

 private:
  template <typename U>
  friend Result<Payload<U>> DecodePayload(std::string_view bytes);
  explicit Payload(kj::Array<capnp::word> words);

  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;  // reads words_
};

namespace internal {
// The bytes as aligned words holding one whole message whose root is a valid `schema` struct;
// Corruption (never an exception) otherwise.
Result<kj::Array<capnp::word>> CheckPayload(std::string_view bytes, capnp::StructSchema schema);
// A reader of words CheckPayload accepted, without a traversal limit: they were walked already.
std::unique_ptr<capnp::FlatArrayMessageReader> TrustedReader(kj::ArrayPtr<const capnp::word> words);
}  // namespace internal

// Corruption naming T when `bytes` is not a whole, valid message of type T.
template <typename T>
Result<Payload<T>> DecodePayload(std::string_view bytes) {
  KF_ASSIGN_OR_RETURN(kj::Array<capnp::word> words,
                      internal::CheckPayload(bytes, capnp::Schema::from<T>()));
  return Payload<T>(std::move(words));
}

template <typename T>
Payload<T>::Payload(kj::Array<capnp::word> words)
    : words_(std::move(words)), reader_(internal::TrustedReader(words_.asPtr())) {}

}  // namespace kfleet::msg
