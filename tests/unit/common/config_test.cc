#include "common/config.h"

#include <gtest/gtest.h>

namespace kfleet {
namespace {

ConfigReader Load(std::string_view text) {
  Result<ConfigReader> reader = ConfigReader::LoadString(text, "test.yaml");
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  return std::move(reader).value();
}

TEST(ConfigTest, MissingKeysYieldDefaults) {
  ConfigReader reader = Load("");
  EXPECT_EQ(reader.String("listen", "tcp://0.0.0.0:7600"), "tcp://0.0.0.0:7600");
  EXPECT_EQ(reader.Int("slots", 4, 1, 64), 4);
  EXPECT_TRUE(reader.Finish().ok());
}

TEST(ConfigTest, ReadsNestedTypedValues) {
  ConfigReader reader = Load(R"(
listen: tcp://127.0.0.1:9000
heartbeat:
  interval: 250ms
  liveness: 7
store:
  synchronous: normal
  max_blob: 64MiB
ratio: 0.5
insecure: yes
toolchains: [g++, nvcc]
)");
  EXPECT_EQ(reader.String("listen", ""), "tcp://127.0.0.1:9000");
  EXPECT_EQ(reader.DurationMs("heartbeat.interval", 1000, 10, 60000), 250);
  EXPECT_EQ(reader.Int("heartbeat.liveness", 5, 1, 100), 7);
  EXPECT_EQ(reader.Enum("store.synchronous", "full", {"full", "normal"}), "normal");
  EXPECT_EQ(reader.Bytes("store.max_blob", 0, 0, int64_t{1} << 40), int64_t{64} << 20);
  EXPECT_DOUBLE_EQ(reader.Double("ratio", 1.0, 0.0, 1.0), 0.5);
  EXPECT_TRUE(reader.Bool("insecure", false));
  EXPECT_EQ(reader.StringList("toolchains", {}), (std::vector<std::string>{"g++", "nvcc"}));
  EXPECT_TRUE(reader.Finish().ok()) << reader.Finish().ToString();
}

TEST(ConfigTest, BadValueNamesFileLineKeyAndProblem) {
  ConfigReader reader = Load("heartbeat:\n  interval: fast\n  liveness: 0\n");
  EXPECT_EQ(reader.DurationMs("heartbeat.interval", 1000, 10, 60000), 1000);
  EXPECT_EQ(reader.Int("heartbeat.liveness", 5, 1, 100), 5);
  Status status = reader.Finish();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.message().find("test.yaml:2:13: heartbeat.interval: expected a duration"),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("test.yaml:3:13: heartbeat.liveness: expected an integer in [1, "
                                  "100], got '0'"),
            std::string::npos)
      << status.message();
}

TEST(ConfigTest, UnknownKeyIsReportedWithSuggestion) {
  ConfigReader reader = Load("heartbeat:\n  intervall: 2s\n");
  reader.DurationMs("heartbeat.interval", 1000, 10, 60000);
  Status status = reader.Finish();
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("unknown key 'heartbeat.intervall' (did you mean "
                                  "'heartbeat.interval'?)"),
            std::string::npos)
      << status.message();
}

TEST(ConfigTest, OutOfRangeDurationAndBadEnum) {
  ConfigReader reader = Load("timeout: 2h\nmode: turbo\nsize: 12 parsecs\n");
  EXPECT_EQ(reader.DurationMs("timeout", 1000, 0, 60'000), 1000);
  EXPECT_EQ(reader.Enum("mode", "full", {"full", "normal"}), "full");
  EXPECT_EQ(reader.Bytes("size", 1, 0, 100), 1);
  std::string message = reader.Finish().message();
  EXPECT_NE(message.find("duration '2h' is outside"), std::string::npos) << message;
  EXPECT_NE(message.find("expected one of full, normal, got 'turbo'"), std::string::npos);
  EXPECT_NE(message.find("expected a size"), std::string::npos);
}

TEST(ConfigTest, ListWhereScalarExpected) {
  ConfigReader reader = Load("listen: [a, b]\n");
  EXPECT_EQ(reader.String("listen", "x"), "x");
  EXPECT_NE(reader.Finish().message().find("expected a single value"), std::string::npos);
}

TEST(ConfigTest, SyntaxErrorNamesPosition) {
  Result<ConfigReader> reader = ConfigReader::LoadString("a: [1, 2\nb: c\n", "broken.yaml");
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("broken.yaml:"), std::string::npos);
  EXPECT_NE(reader.status().message().find("not valid YAML"), std::string::npos);
}

TEST(ConfigTest, TopLevelMustBeAMapping) {
  Result<ConfigReader> reader = ConfigReader::LoadString("- a\n- b\n", "list.yaml");
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("mapping"), std::string::npos);
}

TEST(ConfigTest, MissingFileIsAClearError) {
  Result<ConfigReader> reader = ConfigReader::LoadFile("/nonexistent/kfleet.yaml");
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("reading config: open /nonexistent/kfleet.yaml"),
            std::string::npos)
      << reader.status().message();
}

TEST(ConfigTest, ParsesDurationsAndSizes) {
  EXPECT_EQ(*ParseDurationMs("1500"), 1500);
  EXPECT_EQ(*ParseDurationMs("2s"), 2000);
  EXPECT_EQ(*ParseDurationMs("5m"), 300000);
  EXPECT_EQ(*ParseDurationMs("2h"), 7200000);
  EXPECT_FALSE(ParseDurationMs("2 weeks").ok());
  EXPECT_FALSE(ParseDurationMs("-1s").ok());
  EXPECT_FALSE(ParseDurationMs("99999999999999999d").ok());
  EXPECT_EQ(*ParseBytes("4096"), 4096);
  EXPECT_EQ(*ParseBytes("2GiB"), int64_t{2} << 30);
  EXPECT_EQ(*ParseBytes("10MB"), 10'000'000);
  EXPECT_FALSE(ParseBytes("lots").ok());
}

}  // namespace
}  // namespace kfleet
