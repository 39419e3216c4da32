#include "messages/payload.h"

#include <capnp/dynamic.h>
#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace kfleet::msg {
namespace {

// Reads every field of a checked message once, so a pointer of the wrong kind (a struct where the
// schema has Text) throws here, inside the decoder's try, and never later.
void WalkValue(const capnp::DynamicValue::Reader& value);

void WalkStruct(const capnp::DynamicStruct::Reader& record) {
  for (const capnp::StructSchema::Field field : record.getSchema().getNonUnionFields()) {
    WalkValue(record.get(field));
  }
  const kj::Maybe<capnp::StructSchema::Field> active = record.which();
  KJ_IF_MAYBE (field, active) {
    WalkValue(record.get(*field));
  }
}

void WalkValue(const capnp::DynamicValue::Reader& value) {
  switch (value.getType()) {
    case capnp::DynamicValue::STRUCT:
      WalkStruct(value.as<capnp::DynamicStruct>());
      break;
    case capnp::DynamicValue::LIST:
      for (const capnp::DynamicValue::Reader element : value.as<capnp::DynamicList>()) {
        WalkValue(element);
      }
      break;
    default:
      break;
  }
}

}  // namespace

std::string EncodePayload(capnp::MessageBuilder& builder) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  const kj::ArrayPtr<const char> bytes = words.asChars();
  return std::string(bytes.begin(), bytes.size());
}

namespace internal {

Result<kj::Array<capnp::word>> CheckPayload(std::string_view bytes, capnp::StructSchema schema) {
  const std::string_view name = schema.getShortDisplayName().cStr();
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return Corruption(fmt::format(
        "{} is {} bytes; a Cap'n Proto message is a nonzero multiple of 8", name, bytes.size()));
  }
  // Copying also aligns the words, whatever the alignment of the bytes given.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  try {
    capnp::ReaderOptions checking;
    // Linear in the size, so a message whose pointers share objects cannot multiply the work;
    // the constant covers zero-sized objects, which count one word each.
    checking.traversalLimitInWords = 4 * words.size() + 64;
    checking.nestingLimit = 16;
    capnp::FlatArrayMessageReader check(words.asPtr(), checking);
    if (check.getEnd() != words.end()) {
      return Corruption(fmt::format("{} has bytes after the end of its Cap'n Proto message", name));
    }
    WalkStruct(check.getRoot<capnp::DynamicStruct>(schema));
  } catch (const kj::Exception& e) {
    return Corruption(fmt::format("not a valid {} message: {}", name, e.getDescription().cStr()));
  }
  return words;
}

std::unique_ptr<capnp::FlatArrayMessageReader> TrustedReader(
    kj::ArrayPtr<const capnp::word> words) {
  capnp::ReaderOptions trusted;
  trusted.traversalLimitInWords = std::numeric_limits<uint64_t>::max();
  return std::make_unique<capnp::FlatArrayMessageReader>(words, trusted);
}

}  // namespace internal
}  // namespace kfleet::msg
