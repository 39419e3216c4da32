#include "worker/echo_task.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "common/ids.h"

namespace kfleet::worker {
namespace {

EchoPayloadMessage Payload(const EchoSpec& spec) {
  Result<EchoPayloadMessage> decoded = DecodeEchoPayload(BuildEchoPayload(spec));
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  return std::move(decoded).value();
}

TEST(EchoTaskTest, DrawIsDeterministicPerSeedTaskAndAttempt) {
  EchoSpec spec;
  spec.seed = 42;
  const EchoPayloadMessage payload = Payload(spec);
  const double u = DrawEcho(payload.root(), 7, 1).u;
  EXPECT_EQ(DrawEcho(payload.root(), 7, 1).u, u);
  EXPECT_NE(DrawEcho(payload.root(), 7, 2).u, u);
  EXPECT_NE(DrawEcho(payload.root(), 8, 1).u, u);
  spec.seed = 43;
  EXPECT_NE(DrawEcho(Payload(spec).root(), 7, 1).u, u);
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
}

TEST(EchoTaskTest, DrawsFallIntoTheRateBands) {
  EchoSpec spec;
  spec.fail_rate = 0.2f;
  spec.crash_rate = 0.1f;
  spec.hang_rate = 0.05f;
  spec.seed = 9;
  const EchoPayloadMessage payload = Payload(spec);
  int counts[4] = {0, 0, 0, 0};
  constexpr int kDraws = 20000;
  for (uint64_t task = 0; task < kDraws; ++task) {
    const EchoDraw draw = DrawEcho(payload.root(), task, 1);
    ++counts[static_cast<int>(draw.action)];
    // The action is exactly the band u falls in.
    switch (draw.action) {
      case EchoAction::kFail: EXPECT_LT(draw.u, 0.2); break;
      case EchoAction::kCrash: EXPECT_TRUE(draw.u >= 0.2 && draw.u < 0.3); break;
      case EchoAction::kHang: EXPECT_TRUE(draw.u >= 0.3 && draw.u < 0.35); break;
      case EchoAction::kAnswer: EXPECT_GE(draw.u, 0.35); break;
    }
  }
  EXPECT_NEAR(counts[static_cast<int>(EchoAction::kFail)] / double{kDraws}, 0.2, 0.02);
  EXPECT_NEAR(counts[static_cast<int>(EchoAction::kCrash)] / double{kDraws}, 0.1, 0.02);
  EXPECT_NEAR(counts[static_cast<int>(EchoAction::kHang)] / double{kDraws}, 0.05, 0.02);
  EXPECT_NEAR(counts[static_cast<int>(EchoAction::kAnswer)] / double{kDraws}, 0.65, 0.02);
}

TEST(EchoTaskTest, AnswerIsTheSha256OfTheData) {
  EchoSpec spec;
  spec.data = "abc";
  Result<std::string> output = RunEcho(Payload(spec).root(), 1, 1);
  ASSERT_TRUE(output.ok()) << output.status().ToString();
  EXPECT_EQ(*output, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  spec.data = std::string("\0binary\xff", 8);
  output = AnswerEchoInProcess(Payload(spec).root(), 1, 1);
  ASSERT_TRUE(output.ok());
  EXPECT_EQ(*output, Sha256Hex(spec.data));
}

TEST(EchoTaskTest, SleepsTheDelayFirst) {
  EchoSpec spec;
  spec.delay_ms = 60;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(RunEcho(Payload(spec).root(), 1, 1).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(60));
}

TEST(EchoTaskTest, FailureSaysWhichDrawAndRate) {
  EchoSpec spec;
  spec.fail_rate = 1.0f;
  Result<std::string> output = RunEcho(Payload(spec).root(), 3, 1);
  ASSERT_FALSE(output.ok());
  EXPECT_EQ(output.status().message().rfind("echo: asked to fail (draw 0.", 0), 0u)
      << output.status().message();
  EXPECT_NE(output.status().message().find(" < fail rate 1)"), std::string::npos)
      << output.status().message();
}

TEST(EchoTaskTest, InProcessCrashAndHangBecomeErrors) {
  EchoSpec spec;
  spec.crash_rate = 1.0f;
  Result<std::string> crash = AnswerEchoInProcess(Payload(spec).root(), 1, 1);
  ASSERT_FALSE(crash.ok());
  EXPECT_NE(crash.status().message().find("asked to crash"), std::string::npos);
  spec.crash_rate = 0;
  spec.hang_rate = 1.0f;
  Result<std::string> hang = AnswerEchoInProcess(Payload(spec).root(), 1, 1);
  ASSERT_FALSE(hang.ok());
  EXPECT_NE(hang.status().message().find("asked to hang"), std::string::npos);
}

TEST(EchoTaskTest, PayloadRoundTrips) {
  EchoSpec spec{250, 0.25f, 0.125f, 0.0625f, 77, "payload"};
  const EchoPayloadMessage payload = Payload(spec);
  msg::EchoPayload::Reader root = payload.root();
  EXPECT_EQ(root.getDelayMs(), 250u);
  EXPECT_EQ(root.getFailRate(), 0.25f);
  EXPECT_EQ(root.getCrashRate(), 0.125f);
  EXPECT_EQ(root.getHangRate(), 0.0625f);
  EXPECT_EQ(root.getSeed(), 77u);
  EXPECT_EQ(
      std::string(reinterpret_cast<const char*>(root.getData().begin()), root.getData().size()),
      "payload");
}

TEST(EchoTaskTest, DecodeRefusesWhatIsNotAPayload) {
  EXPECT_EQ(DecodeEchoPayload("").status().code(), ErrorCode::kCorruption);
  EXPECT_EQ(DecodeEchoPayload("1234567").status().code(), ErrorCode::kCorruption);
  // A segment table that promises more words than there are.
  EXPECT_EQ(DecodeEchoPayload(std::string("\0\0\0\0\xff\0\0\0", 8)).status().code(),
            ErrorCode::kCorruption);
  EchoSpec spec;
  spec.data = "x";
  const std::string valid = BuildEchoPayload(spec);
  EXPECT_EQ(DecodeEchoPayload(valid + std::string(8, '\0')).status().code(),
            ErrorCode::kCorruption);
  // The data pointer (segment table, root pointer, 3 data words, then it) aimed past the end.
  std::string broken = valid;
  broken[8 + 8 * 4 + 3] = '\x7f';
  EXPECT_EQ(DecodeEchoPayload(broken).status().code(), ErrorCode::kCorruption);
}

}  // namespace
}  // namespace kfleet::worker
