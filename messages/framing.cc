#include "messages/framing.h"

#include <capnp/schema.h>
#include <kj/exception.h>

#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace kfleet::msg {
namespace {

#define KF_COUNT_MESSAGE_TYPE_(Struct, Type) +1
constexpr size_t kMessageTypeCount = 0 KF_MESSAGE_TYPES(KF_COUNT_MESSAGE_TYPE_);
#undef KF_COUNT_MESSAGE_TYPE_
static_assert(kMessageTypeCount == static_cast<size_t>(MessageType::EXPORT_REPLY) + 1,
              "KF_MESSAGE_TYPES must list every MessageType");

// Root schema of each message type, indexed by ordinal.
capnp::StructSchema RootSchema(MessageType type) {
  static const std::array<capnp::StructSchema, kMessageTypeCount> schemas = [] {
    std::array<capnp::StructSchema, kMessageTypeCount> table;
#define KF_ADD_SCHEMA_(Struct, Type) \
  table[static_cast<size_t>(MessageType::Type)] = capnp::Schema::from<Struct>();
    KF_MESSAGE_TYPES(KF_ADD_SCHEMA_)
#undef KF_ADD_SCHEMA_
    return table;
  }();
  return schemas[static_cast<size_t>(type)];
}

void WriteU16(std::string& out, size_t at, uint16_t value) {
  out[at] = static_cast<char>(value & 0xff);
  out[at + 1] = static_cast<char>(value >> 8);
}

uint16_t ReadU16(std::string_view in, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(in[at]) |
                               (static_cast<uint8_t>(in[at + 1]) << 8));
}

void ReadValue(const capnp::DynamicValue::Reader& value);

// Reads every field the schema defines (only the active union member), the same way generated
// accessors do, so any type mismatch or bad pointer throws here rather than in the caller.
void ReadStruct(const capnp::DynamicStruct::Reader& reader) {
  for (const capnp::StructSchema::Field& field : reader.getSchema().getNonUnionFields()) {
    ReadValue(reader.get(field));
  }
  KJ_IF_MAYBE (active, reader.which()) {
    ReadValue(reader.get(*active));
  }
}

void ReadValue(const capnp::DynamicValue::Reader& value) {
  switch (value.getType()) {
    case capnp::DynamicValue::STRUCT:
      ReadStruct(value.as<capnp::DynamicStruct>());
      break;
    case capnp::DynamicValue::LIST: {
      capnp::DynamicList::Reader list = value.as<capnp::DynamicList>();
      switch (list.getSchema().whichElementType()) {
        case capnp::schema::Type::TEXT:
        case capnp::schema::Type::DATA:
        case capnp::schema::Type::LIST:
        case capnp::schema::Type::STRUCT:
          for (const capnp::DynamicValue::Reader& element : list) ReadValue(element);
          break;
        default:
          break;  // Primitive elements were bounds-checked as a whole by get().
      }
      break;
    }
    default:
      break;  // Scalars, enums, text and data were fully checked by get().
  }
}

// Cap'n Proto's description can quote peer bytes (even NUL); keep the message printable.
std::string PrintableDescription(const kj::Exception& e) {
  const kj::StringPtr description = e.getDescription();
  std::string text(description.begin(), description.size());
  for (char& c : text) {
    if (c < ' ' || c > '~') c = '?';
  }
  return text;
}

capnp::ReaderOptions MakeReaderOptions(uint64_t traversal_limit_words, int nesting_limit) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = traversal_limit_words;
  options.nestingLimit = nesting_limit;
  return options;
}

// Two walks: the pointer walk covers every object, including fields this build does not know
// (a deep copy touches those); the schema walk checks that known fields have the expected shape.
// A message built by Cap'n Proto costs at most its own size per walk (our schemas have no lists
// of empty elements), so a budget of two body sizes refuses overlapping pointers and
// phantom lists that would make a small body expensive to read.
Status ValidateBody(MessageType type, kj::ArrayPtr<const capnp::word> words,
                    const DecodeLimits& limits) {
  const std::string name(MessageTypeName(type));
  capnp::FlatArrayMessageReader reader(words,
                                       MakeReaderOptions(2 * words.size(), limits.nesting_limit));
  if (reader.getEnd() != words.end()) {
    const size_t extra_bytes =
        static_cast<size_t>(words.end() - reader.getEnd()) * sizeof(capnp::word);
    return Corruption(name + " body has " + std::to_string(extra_bytes) +
                      " bytes after the end of its Cap'n Proto message");
  }
  const capnp::AnyPointer::Reader root = reader.getRoot<capnp::AnyPointer>();
  if (root.targetSize().capCount != 0) {
    return Corruption(name + " body carries capability pointers, which kfleet never sends");
  }
  ReadStruct(root.getAs<capnp::DynamicStruct>(RootSchema(type)));
  return Status::Ok();
}

}  // namespace

std::string_view MessageTypeName(MessageType type) {
  const capnp::EnumSchema::EnumerantList enumerants =
      capnp::Schema::from<MessageType>().getEnumerants();
  const auto ordinal = static_cast<uint16_t>(type);
  if (ordinal >= enumerants.size()) return "unknown";
  const capnp::Text::Reader name = enumerants[ordinal].getProto().getName();
  return {name.cStr(), name.size()};
}

EncodedFrames Encode(MessageType type, capnp::MessageBuilder& builder) {
  EncodedFrames frames;
  frames.header.assign(kHeaderBytes, '\0');
  frames.header.replace(0, kMagic.size(), kMagic);
  WriteU16(frames.header, 4, kProtocolVersion);
  WriteU16(frames.header, 6, static_cast<uint16_t>(type));
  frames.body = capnp::messageToFlatArray(builder);
  return frames;
}

DecodedMessage::DecodedMessage(MessageType type, uint16_t version, kj::Array<capnp::word> words,
                               int nesting_limit)
    : type_(type), version_(version), words_(kj::mv(words)) {
  // Decode has already read every reachable word within its budget; re-reads are the caller's
  // own cost, so this reader must not fail them.
  reader_ = std::make_unique<capnp::FlatArrayMessageReader>(
      words_.asPtr(), MakeReaderOptions(std::numeric_limits<uint64_t>::max(), nesting_limit));
}

capnp::DynamicStruct::Reader DecodedMessage::DynamicRoot() const {
  return reader_->getRoot<capnp::DynamicStruct>(RootSchema(type_));
}

Status DecodedMessage::WrongType(MessageType wanted) const {
  return InvalidArgument("message is " + std::string(MessageTypeName(type_)) + ", not " +
                         std::string(MessageTypeName(wanted)));
}

Result<DecodedMessage> Decode(std::string_view header, std::string_view body,
                              const DecodeLimits& limits) {
  if (header.size() != kHeaderBytes) {
    return InvalidArgument("frame header is " + std::to_string(header.size()) +
                           " bytes, expected " + std::to_string(kHeaderBytes));
  }
  if (header.substr(0, kMagic.size()) != kMagic) {
    return InvalidArgument("frame header does not start with \"KFLT\"; the peer is not kfleet");
  }
  const uint16_t version = ReadU16(header, 4);
  if (version != kProtocolVersion) {
    return FailedPrecondition("peer speaks protocol version " + std::to_string(version) +
                           ", this build speaks " + std::to_string(kProtocolVersion) +
                           "; run the same kfleet release on both sides");
  }
  const uint16_t ordinal = ReadU16(header, 6);
  if (ordinal >= kMessageTypeCount) {
    return InvalidArgument("unknown message type " + std::to_string(ordinal) +
                           " (this build knows 0.." + std::to_string(kMessageTypeCount - 1) +
                           "); the peer may run a newer kfleet");
  }
  const auto type = static_cast<MessageType>(ordinal);
  const std::string name(MessageTypeName(type));
  if (body.size() > limits.max_body_bytes) {
    return ResourceExhausted(name + " body is " + std::to_string(body.size()) +
                             " bytes, over the limit of " + std::to_string(limits.max_body_bytes));
  }
  if (body.empty() || body.size() % sizeof(capnp::word) != 0) {
    return InvalidArgument(name + " body is " + std::to_string(body.size()) +
                           " bytes; a Cap'n Proto message is a nonzero multiple of 8");
  }
  // Copying also aligns the words, whatever the alignment of the received buffer.
  auto words = kj::heapArray<capnp::word>(body.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), body.data(), body.size());
  try {
    KF_RETURN_IF_ERROR(ValidateBody(type, words, limits));
    return DecodedMessage(type, version, kj::mv(words), limits.nesting_limit);
  } catch (const kj::Exception& e) {
    return Corruption(name + " body is not a valid message: " + PrintableDescription(e));
  }
}

}  // namespace kfleet::msg
