// libFuzzer target: the first 8 bytes are the header frame, the rest the body frame. A decoded
// message must survive a full read (stringify) and a deep copy without an exception.
#include <capnp/message.h>
#include <kj/string.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "messages/framing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string_view header = input.substr(0, kfleet::msg::kHeaderBytes);
  const std::string_view body = input.substr(header.size());
  kfleet::Result<kfleet::msg::DecodedMessage> decoded = kfleet::msg::Decode(header, body);
  if (!decoded.ok()) return 0;
  const capnp::DynamicStruct::Reader root = decoded->DynamicRoot();
  kj::str(root);
  capnp::MallocMessageBuilder copy;
  copy.setRoot(root);
  return 0;
}
