#include "common/log.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/files.h"

namespace kfleet::log {
namespace {

TEST(LogTest, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(QuoteValue("gpu-7"), "gpu-7");
  EXPECT_EQ(QuoteValue(""), "\"\"");
  EXPECT_EQ(QuoteValue("two words"), "\"two words\"");
  EXPECT_EQ(QuoteValue("a=b"), "\"a=b\"");
  EXPECT_EQ(QuoteValue("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
  EXPECT_EQ(QuoteValue(std::string("\x01", 1)), "\"\\x01\"");
}

TEST(LogTest, ParsesLevels) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseLevel("warning"), Level::kWarn);
  Result<Level> bad = ParseLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("loud"), std::string::npos);
}

TEST(LogTest, WritesOneStructuredLinePerEvent) {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("kfleet-log-test-" + std::to_string(getpid()));
  ASSERT_TRUE(Init({.level = Level::kInfo, .file = path.string()}).ok());
  Info("task.assigned").Kv("task", 12).Kv("node", "gpu 7").Kv("exclusive", true);
  Debug("hidden").Kv("x", 1);
  Error("task.failed").Kv("status", NotFound("no such task"));
  ASSERT_TRUE(Init({}).ok());  // back to stderr; closes the file sink

  Result<std::string> text = ReadFile(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find(" info task.assigned task=12 node=\"gpu 7\" exclusive=true\n"),
            std::string::npos)
      << *text;
  EXPECT_EQ(text->find("hidden"), std::string::npos);
  EXPECT_NE(text->find(" error task.failed status=\"not found: no such task\"\n"),
            std::string::npos)
      << *text;
  // Timestamps are UTC, ISO 8601, millisecond precision.
  EXPECT_EQ(text->at(10), 'T');
  EXPECT_EQ(text->at(23), 'Z');
}

TEST(LogTest, UnwritableFileIsAnError) {
  Status status = Init({.level = Level::kInfo, .file = "/proc/definitely/not/here.log"});
  EXPECT_EQ(status.code(), ErrorCode::kIoError);
}

}  // namespace
}  // namespace kfleet::log
