#include "messages/framing.h"

#include <capnp/message.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>
#include <kj/string.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/files.h"
#include "messages/kernel.capnp.h"

namespace kfleet::msg {
namespace {

// Sets every field to a non-default value, so a round trip that drops or mixes up a field shows.
// `union_choice` picks which member of each union is set.
class SampleFiller {
 public:
  explicit SampleFiller(uint32_t union_choice) : union_choice_(union_choice) {}

  void FillStruct(capnp::DynamicStruct::Builder builder) {
    const capnp::StructSchema schema = builder.getSchema();
    for (const capnp::StructSchema::Field& field : schema.getNonUnionFields()) {
      FillField(builder, field);
    }
    const capnp::StructSchema::FieldSubset members = schema.getUnionFields();
    if (members.size() > 0) FillField(builder, members[union_choice_ % members.size()]);
  }

 private:
  void FillField(capnp::DynamicStruct::Builder builder, capnp::StructSchema::Field field) {
    const capnp::Type type = field.getType();
    if (type.isStruct()) {
      FillStruct(builder.init(field).as<capnp::DynamicStruct>());
    } else if (type.isList()) {
      FillList(builder.init(field, 2).as<capnp::DynamicList>());
    } else if (type.isText()) {
      builder.set(field, capnp::Text::Reader(kj::str("text-", next_++)));
    } else if (type.isData()) {
      builder.set(field, capnp::Data::Reader(kBytes, sizeof(kBytes)));
    } else if (!type.isVoid()) {
      builder.set(field, Scalar(type));
    }
  }

  void FillList(capnp::DynamicList::Builder list) {
    const capnp::Type element = list.getSchema().getElementType();
    for (uint32_t i = 0; i < list.size(); ++i) {
      if (element.isStruct()) {
        FillStruct(list[i].as<capnp::DynamicStruct>());
      } else if (element.isText()) {
        list.set(i, capnp::Text::Reader(kj::str("item-", next_++)));
      } else {
        list.set(i, Scalar(element));
      }
    }
  }

  capnp::DynamicValue::Reader Scalar(const capnp::Type& type) {
    const int64_t n = next_++ % 100 + 1;
    if (type.isBool()) return true;
    if (type.isFloat32() || type.isFloat64()) return static_cast<double>(n) + 0.5;
    if (type.isEnum()) {
      const capnp::EnumSchema schema = type.asEnum();
      return capnp::DynamicEnum(schema.getEnumerants()[schema.getEnumerants().size() - 1]);
    }
    return n;
  }

  static constexpr kj::byte kBytes[] = {0x00, 0xff, 0x7f, 0x80, 'k'};
  uint32_t union_choice_;
  int64_t next_ = 1;
};

template <typename T>
void FillSample(capnp::MallocMessageBuilder& builder, uint32_t union_choice) {
  SampleFiller(union_choice)
      .FillStruct(builder.initRoot<capnp::DynamicStruct>(capnp::Schema::from<T>()));
}

struct SampleFrames {
  std::string name;  // "register-0": type and union choice
  std::string header;
  std::string body;
};

std::vector<SampleFrames> AllSamples() {
  std::vector<SampleFrames> samples;
  for (uint32_t choice = 0; choice < 2; ++choice) {
#define KF_ADD_SAMPLE_(Struct, Type)                                                     \
  {                                                                                      \
    capnp::MallocMessageBuilder builder;                                                 \
    FillSample<Struct>(builder, choice);                                                 \
    const EncodedFrames frames = Encode<Struct>(builder);                                \
    samples.push_back(                                                                   \
        {std::string(MessageTypeName(MessageType::Type)) + "-" + std::to_string(choice), \
         frames.header, std::string(frames.BodyBytes())});                               \
  }
    KF_MESSAGE_TYPES(KF_ADD_SAMPLE_)
#undef KF_ADD_SAMPLE_
  }
  return samples;
}

std::string Str(const auto& reader) { return kj::str(reader).cStr(); }

// Reads the whole message twice over: every field (stringify) and every pointer (deep copy).
void ReadEverything(const DecodedMessage& message) {
  const capnp::DynamicStruct::Reader root = message.DynamicRoot();
  kj::str(root);
  capnp::MallocMessageBuilder copy;
  copy.setRoot(root);
}

template <typename T>
void ExpectRoundTrip(uint32_t union_choice) {
  SCOPED_TRACE(std::string(MessageTypeName(MessageTypeOf<T>::value)));
  capnp::MallocMessageBuilder builder;
  FillSample<T>(builder, union_choice);
  const EncodedFrames frames = Encode<T>(builder);
  ASSERT_EQ(frames.header.size(), kHeaderBytes);

  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->type(), MessageTypeOf<T>::value);
  EXPECT_EQ(decoded->version(), kProtocolVersion);
  EXPECT_TRUE(decoded->Is<T>());
  Result<typename T::Reader> root = decoded->Root<T>();
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(Str(*root), Str(builder.getRoot<T>().asReader()));
}

TEST(FramingTest, EveryMessageTypeRoundTrips) {
  for (uint32_t choice = 0; choice < 2; ++choice) {
#define KF_ROUND_TRIP_(Struct, Type) ExpectRoundTrip<Struct>(choice);
    KF_MESSAGE_TYPES(KF_ROUND_TRIP_)
#undef KF_ROUND_TRIP_
  }
}

TEST(FramingTest, MessageTypeListCoversTheSchemaEnum) {
  std::set<MessageType> listed;
#define KF_LIST_TYPE_(Struct, Type) listed.insert(MessageTypeOf<Struct>::value);
  KF_MESSAGE_TYPES(KF_LIST_TYPE_)
#undef KF_LIST_TYPE_
  EXPECT_EQ(listed.size(), capnp::Schema::from<MessageType>().getEnumerants().size());
}

TEST(FramingTest, MessageTypeNames) {
  EXPECT_EQ(MessageTypeName(MessageType::REGISTER), "register");
  EXPECT_EQ(MessageTypeName(MessageType::API_ERROR), "apiError");
  EXPECT_EQ(MessageTypeName(MessageType::EXPORT_REPLY), "exportReply");
  EXPECT_EQ(MessageTypeName(static_cast<MessageType>(999)), "unknown");
}

TEST(FramingTest, HeaderLayoutIsLittleEndian) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<Heartbeat>();
  const EncodedFrames frames = Encode<Heartbeat>(builder);
  EXPECT_EQ(frames.header, std::string("KFLT\x01\x00\x03\x00", 8));
}

TEST(FramingTest, TypedFieldsSurviveRoundTrip) {
  capnp::MallocMessageBuilder builder;
  Register::Builder reg = builder.initRoot<Register>();
  reg.setProtocolVersion(kProtocolVersion);
  Capabilities::Builder caps = reg.initCapabilities();
  caps.setNodeName("gpu-7");
  caps.getCpu().initFeatures(2).set(1, "avx512f");
  Device::Builder gpu = caps.initGpus(1)[0];
  gpu.setBackend(Backend::HIP);
  gpu.setArch("gfx90a");
  gpu.setMemoryBytes(uint64_t{64} << 30);
  caps.getSlots().setGpuExclusive(1);
  TaskRef::Builder running = reg.initRunningTasks(1)[0];
  running.setTaskId(12);
  running.setAttempt(3);
  const EncodedFrames frames = Encode<Register>(builder);

  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  Result<Register::Reader> root = decoded->Root<Register>();
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->getProtocolVersion(), kProtocolVersion);
  EXPECT_EQ(Str(root->getCapabilities().getNodeName()), "gpu-7");
  EXPECT_EQ(Str(root->getCapabilities().getCpu().getFeatures()[1]), "avx512f");
  ASSERT_EQ(root->getCapabilities().getGpus().size(), 1u);
  EXPECT_EQ(root->getCapabilities().getGpus()[0].getBackend(), Backend::HIP);
  EXPECT_EQ(Str(root->getCapabilities().getGpus()[0].getArch()), "gfx90a");
  EXPECT_EQ(root->getCapabilities().getGpus()[0].getMemoryBytes(), uint64_t{64} << 30);
  EXPECT_EQ(root->getCapabilities().getSlots().getGpuExclusive(), 1u);
  EXPECT_EQ(root->getRunningTasks()[0].getTaskId(), 12u);
  EXPECT_EQ(root->getRunningTasks()[0].getAttempt(), 3u);
  EXPECT_EQ(root->getFinishedTasks().size(), 0u);
}

TEST(FramingTest, SubmitUnionMembersRoundTrip) {
  capnp::MallocMessageBuilder builder;
  SubmitRequest::Builder submit = builder.initRoot<SubmitRequest>();
  submit.setTarget(Backend::CUDA);
  submit.initEcho().setTasks(40);
  EncodedFrames frames = Encode<SubmitRequest>(builder);
  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok());
  Result<SubmitRequest::Reader> echo = decoded->Root<SubmitRequest>();
  ASSERT_TRUE(echo.ok());
  ASSERT_EQ(echo->which(), SubmitRequest::ECHO);
  EXPECT_EQ(echo->getEcho().getTasks(), 40u);

  submit.initModel().setFileName("model.onnx");
  frames = Encode<SubmitRequest>(builder);
  decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok());
  Result<SubmitRequest::Reader> model = decoded->Root<SubmitRequest>();
  ASSERT_TRUE(model.ok());
  ASSERT_EQ(model->which(), SubmitRequest::MODEL);
  EXPECT_EQ(Str(model->getModel().getFileName()), "model.onnx");
}

TEST(FramingTest, KernelPayloadTravelsInsideAssign) {
  capnp::MallocMessageBuilder spec_builder;
  SampleFiller(0).FillStruct(
      spec_builder.initRoot<capnp::DynamicStruct>(capnp::Schema::from<KernelSpec>()));
  const kj::Array<capnp::word> spec_words = capnp::messageToFlatArray(spec_builder);

  capnp::MallocMessageBuilder builder;
  builder.initRoot<Assign>().setPayload(spec_words.asBytes());
  const EncodedFrames frames = Encode<Assign>(builder);
  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok());
  const capnp::Data::Reader payload = decoded->Root<Assign>()->getPayload();
  EXPECT_EQ(payload, spec_words.asBytes());
}

TEST(FramingTest, LargeMessagesFitTheReadBudget) {
  capnp::MallocMessageBuilder builder;
  capnp::List<ExportFile>::Builder files = builder.initRoot<ExportReply>().initFiles(2000);
  for (uint32_t i = 0; i < files.size(); ++i) {
    files[i].setPath(kj::str("kernels/k", i, ".cu"));
    files[i].initData(1 + i % 1500);
  }
  const EncodedFrames frames = Encode<ExportReply>(builder);
  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->Root<ExportReply>()->getFiles().size(), 2000u);
}

TEST(FramingTest, RootOfAnotherTypeIsAnError) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<Heartbeat>().setSequence(7);
  const EncodedFrames frames = Encode<Heartbeat>(builder);
  Result<DecodedMessage> decoded = Decode(frames.header, frames.BodyBytes());
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->Is<Register>());
  Result<Register::Reader> wrong = decoded->Root<Register>();
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(wrong.status().message(), "message is heartbeat, not register");
}

// ---- Header ---------------------------------------------------------------------------------

class FramingHeaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<Bye>().setReason("done");
    frames_ = Encode<Bye>(builder);
  }

  Status DecodeWithHeader(const std::string& header) {
    return Decode(header, frames_.BodyBytes()).status();
  }

  EncodedFrames frames_;
};

TEST_F(FramingHeaderTest, WrongSizesAreRejected) {
  for (const std::string& header :
       {std::string(), frames_.header.substr(0, 7), frames_.header + "x"}) {
    const Status status = DecodeWithHeader(header);
    EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument) << header.size();
    EXPECT_NE(status.message().find("expected 8"), std::string::npos) << status.message();
  }
}

TEST_F(FramingHeaderTest, WrongMagicIsRejected) {
  std::string header = frames_.header;
  header[3] = 'X';
  const Status status = DecodeWithHeader(header);
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.message().find("KFLT"), std::string::npos) << status.message();
}

TEST_F(FramingHeaderTest, WrongVersionNamesBothVersions) {
  std::string header = frames_.header;
  header[4] = 2;
  const Status status = DecodeWithHeader(header);
  EXPECT_EQ(status.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("version 2"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("speaks 1"), std::string::npos) << status.message();
}

TEST_F(FramingHeaderTest, UnknownTypeIsRejected) {
  for (const uint16_t ordinal : {uint16_t{30}, uint16_t{0xffff}}) {
    std::string header = frames_.header;
    header[6] = static_cast<char>(ordinal & 0xff);
    header[7] = static_cast<char>(ordinal >> 8);
    const Status status = DecodeWithHeader(header);
    EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(status.message().find("unknown message type " + std::to_string(ordinal)),
              std::string::npos)
        << status.message();
  }
}

// ---- Body -----------------------------------------------------------------------------------

// Cap'n Proto wire words, for hand-made hostile bodies.
std::string Words(const std::vector<uint64_t>& words) {
  std::string bytes;
  for (const uint64_t word : words) {
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((word >> (8 * i)) & 0xff));
  }
  return bytes;
}

// Segment table of a one-segment message.
uint64_t OneSegment(uint32_t words) { return uint64_t{words} << 32; }

// A struct pointer `offset` words past its own end.
uint64_t StructPointer(uint32_t offset, uint16_t data_words, uint16_t pointers) {
  return (uint64_t{offset} << 2) | (uint64_t{data_words} << 32) | (uint64_t{pointers} << 48);
}

// A list pointer `offset` words past its own end; size_code is Cap'n Proto's element size.
uint64_t ListPointer(uint32_t offset, uint32_t size_code, uint32_t count) {
  return 1 | (uint64_t{offset} << 2) | (uint64_t{size_code} << 32) | (uint64_t{count} << 35);
}

std::string HeaderFor(MessageType type) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<StatusRequest>();
  std::string header = Encode(MessageType::STATUS_REQUEST, builder).header;
  header[6] = static_cast<char>(static_cast<uint16_t>(type) & 0xff);
  header[7] = static_cast<char>(static_cast<uint16_t>(type) >> 8);
  return header;
}

SampleFrames RegisterSample() { return AllSamples().front(); }

void ExpectError(const Result<DecodedMessage>& decoded, ErrorCode code, std::string_view words) {
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), code) << decoded.status().ToString();
  EXPECT_NE(decoded.status().message().find(words), std::string::npos)
      << decoded.status().ToString();
}

TEST(FramingBodyTest, BadSizesAreRejected) {
  const SampleFrames sample = RegisterSample();
  ExpectError(Decode(sample.header, ""), ErrorCode::kInvalidArgument, "register body is 0 bytes");
  ExpectError(Decode(sample.header, sample.body.substr(0, 12)), ErrorCode::kInvalidArgument,
              "multiple of 8");

  DecodeLimits limits;
  limits.max_body_bytes = sample.body.size() - 8;
  ExpectError(Decode(sample.header, sample.body, limits), ErrorCode::kResourceExhausted,
              "over the limit");
  limits.max_body_bytes = sample.body.size();
  EXPECT_TRUE(Decode(sample.header, sample.body, limits).ok());
}

TEST(FramingBodyTest, GarbageIsRejected) {
  ExpectError(Decode(HeaderFor(MessageType::REGISTER), std::string(256, '\xab')),
              ErrorCode::kCorruption, "register body is not a valid message");
}

TEST(FramingBodyTest, EveryTruncationIsRejected) {
  const SampleFrames sample = RegisterSample();
  for (size_t size = 0; size < sample.body.size(); size += 8) {
    EXPECT_FALSE(Decode(sample.header, sample.body.substr(0, size)).ok()) << size;
  }
}

TEST(FramingBodyTest, TrailingBytesAreRejected) {
  const SampleFrames sample = RegisterSample();
  ExpectError(Decode(sample.header, sample.body + std::string(8, '\0')), ErrorCode::kCorruption,
              "8 bytes after the end");
}

TEST(FramingBodyTest, HugeSegmentTableIsRejected) {
  const std::string header = HeaderFor(MessageType::STATUS_REQUEST);
  ExpectError(Decode(header, Words({OneSegment(0xffffffff), 0})), ErrorCode::kCorruption, "");
  ExpectError(Decode(header, Words({0xfffffffe, 0})), ErrorCode::kCorruption, "");
}

TEST(FramingBodyTest, OutOfBoundsPointersAreRejected) {
  const std::string header = HeaderFor(MessageType::STATUS_REQUEST);
  ExpectError(Decode(header, Words({OneSegment(1), StructPointer(1000, 1, 0)})),
              ErrorCode::kCorruption, "out-of-bounds");
  // In a pointer field this build does not know: caught by the pointer walk.
  ExpectError(
      Decode(header, Words({OneSegment(2), StructPointer(0, 0, 1), StructPointer(1000, 1, 0)})),
      ErrorCode::kCorruption, "out-of-bounds");
}

TEST(FramingBodyTest, FieldOfTheWrongShapeIsRejected) {
  // Heartbeat.runningTasks holds a struct pointer instead of a list: valid pointers, wrong schema.
  const std::string body =
      Words({OneSegment(5), StructPointer(0, 2, 1), 1, 2, StructPointer(0, 1, 0), 3});
  ExpectError(Decode(HeaderFor(MessageType::HEARTBEAT), body), ErrorCode::kCorruption,
              "heartbeat body is not a valid message");
  EXPECT_TRUE(Decode(HeaderFor(MessageType::STATUS_REQUEST), body).ok());
}

TEST(FramingBodyTest, TextWithoutNulIsRejected) {
  const std::string body = Words({OneSegment(3), StructPointer(0, 0, 1), ListPointer(0, 2, 3),
                                  0x636261});  // "abc" with no NUL inside the list
  ExpectError(Decode(HeaderFor(MessageType::BYE), body), ErrorCode::kCorruption, "NUL");
}

TEST(FramingBodyTest, CapabilityPointerIsRejected) {
  const std::string body = Words({OneSegment(2), StructPointer(0, 0, 1), 3});
  ExpectError(Decode(HeaderFor(MessageType::STATUS_REQUEST), body), ErrorCode::kCorruption,
              "capability");
}

// A chain of structs, each holding one pointer to the next.
std::string PointerChain(uint32_t depth) {
  std::vector<uint64_t> words = {OneSegment(depth + 1)};
  for (uint32_t i = 0; i < depth; ++i) words.push_back(StructPointer(0, 0, 1));
  words.push_back(0);
  return Words(words);
}

TEST(FramingBodyTest, NestingBeyondTheLimitIsRejected) {
  const std::string header = HeaderFor(MessageType::STATUS_REQUEST);
  EXPECT_TRUE(Decode(header, PointerChain(10)).ok());
  ExpectError(Decode(header, PointerChain(100)), ErrorCode::kCorruption, "deeply-nested");

  const SampleFrames sample = RegisterSample();
  DecodeLimits limits;
  limits.nesting_limit = 2;
  ExpectError(Decode(sample.header, sample.body, limits), ErrorCode::kCorruption, "deeply-nested");
}

TEST(FramingBodyTest, SharedPointersCannotAmplifyWork) {
  // Each level's two pointers both target the next level: 2^40 paths through 83 words.
  constexpr uint32_t kLevels = 40;
  std::vector<uint64_t> words = {OneSegment(2 * kLevels + 3), StructPointer(0, 0, 2)};
  for (uint32_t i = 0; i < kLevels; ++i) {
    words.push_back(StructPointer(1, 0, 2));
    words.push_back(StructPointer(0, 0, 2));
  }
  words.push_back(0);
  words.push_back(0);
  const auto start = std::chrono::steady_clock::now();
  ExpectError(Decode(HeaderFor(MessageType::STATUS_REQUEST), Words(words)), ErrorCode::kCorruption,
              "traversal limit");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(FramingBodyTest, ZeroSizedListElementsCannotAmplifyWork) {
  // Heartbeat.runningTasks as 2^23 zero-sized structs in one word (found by frame_fuzz).
  const uint64_t tag = uint64_t{1} << 23 << 2;
  const std::string body =
      Words({OneSegment(5), StructPointer(0, 2, 1), 1, 2, ListPointer(0, 7, 0), tag});
  ExpectError(Decode(HeaderFor(MessageType::HEARTBEAT), body), ErrorCode::kCorruption,
              "traversal limit");
}

TEST(FramingBodyTest, UnalignedBodyIsCopiedAndDecodes) {
  const SampleFrames sample = RegisterSample();
  std::string storage = " " + sample.body;
  const std::string_view unaligned(storage.data() + 1, sample.body.size());
  Result<DecodedMessage> decoded = Decode(sample.header, unaligned);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  storage.assign(storage.size(), '\0');  // the decoded message owns its copy
  Result<DecodedMessage> original = Decode(sample.header, sample.body);
  ASSERT_TRUE(original.ok());
  EXPECT_EQ(Str(decoded->DynamicRoot()), Str(original->DynamicRoot()));
}

// ---- Mutations ------------------------------------------------------------------------------

void Mutate(std::mt19937_64& rng, std::string& header, std::string& body) {
  const auto below = [&rng](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(below(4));
  for (int edit = 0; edit < edits; ++edit) {
    switch (below(8)) {
      case 0:
      case 1:
      case 2:  // Bit flip: mostly keeps the structure, so many of these still decode.
        if (!body.empty()) body[below(body.size())] ^= static_cast<char>(1 << below(8));
        break;
      case 3:  // A random word over an aligned slot: pointers, sizes, counts.
        if (body.size() >= 8) {
          const uint64_t word = rng();
          body.replace(below(body.size() / 8) * 8, 8, reinterpret_cast<const char*>(&word), 8);
        }
        break;
      case 4:  // Truncation, aligned or not.
        body.resize(below(2) == 0 ? below(body.size() / 8 + 1) * 8 : below(body.size() + 1));
        break;
      case 5: {  // Insertion of random bytes, usually whole words.
        const size_t count = below(2) == 0 ? 8 * (1 + below(3)) : 1 + below(15);
        std::string bytes;
        for (size_t i = 0; i < count; ++i) bytes.push_back(static_cast<char>(rng()));
        body.insert(below(body.size() + 1), bytes);
        break;
      }
      case 6:  // Segment table count or size.
        if (body.size() >= 8) body[below(8)] = static_cast<char>(rng());
        break;
      default:  // Header byte.
        header[below(header.size())] ^= static_cast<char>(1 << below(8));
        break;
    }
  }
}

TEST(FramingPropertyTest, MutatedFramesDecodeToValuesAndReadSafely) {
  const std::vector<SampleFrames> samples = AllSamples();
  std::mt19937_64 rng(20251120);
  int decoded_ok = 0;
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    const SampleFrames& sample = samples[rng() % samples.size()];
    std::string header = sample.header;
    std::string body = sample.body;
    Mutate(rng, header, body);
    Result<DecodedMessage> decoded = Decode(header, body);
    if (!decoded.ok()) {
      ++rejected;
      continue;
    }
    ++decoded_ok;
    EXPECT_NO_THROW(ReadEverything(*decoded)) << sample.name << " iteration " << i;
  }
  EXPECT_GT(decoded_ok, 1000);
  EXPECT_GT(rejected, 2000);
}

// scripts/fuzz.sh runs this with KFLEET_FUZZ_SEEDS_DIR set to seed the fuzzer's corpus with one
// valid frame pair (header then body, as frame_fuzz splits its input) per type and union choice.
TEST(FuzzSeeds, WrittenWhenRequested) {
  const char* dir = std::getenv("KFLEET_FUZZ_SEEDS_DIR");
  if (dir == nullptr) GTEST_SKIP() << "KFLEET_FUZZ_SEEDS_DIR is not set";
  ASSERT_TRUE(MakeDirs(dir).ok());
  for (const SampleFrames& sample : AllSamples()) {
    const Status written =
        WriteFileAtomic(std::filesystem::path(dir) / sample.name, sample.header + sample.body);
    ASSERT_TRUE(written.ok()) << written.ToString();
  }
}

}  // namespace
}  // namespace kfleet::msg
