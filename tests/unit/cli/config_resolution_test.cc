// Where the CLI finds its coordinator: flags, then a cli.yaml, then the local default.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/client.h"

namespace kfleet::cli {
namespace {

class ConfigResolutionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmpdir = std::getenv("TMPDIR");
    std::filesystem::path parent = (tmpdir != nullptr && *tmpdir != '\0') ? tmpdir : "/tmp";
    std::string pattern = (parent / "kfleet-cli-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    environment_.home = (dir_ / "home").string();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::filesystem::path Write(const std::filesystem::path& relative, const std::string& text) {
    const std::filesystem::path path = dir_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path;
  }
  std::filesystem::path WriteHomeConfig(const std::string& text) {
    return Write("home/.config/kfleet/cli.yaml", text);
  }

  std::filesystem::path dir_;
  ClientEnvironment environment_;
  ClientFlags flags_;
};

TEST_F(ConfigResolutionTest, DefaultsToTheLocalInsecureCoordinator) {
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->endpoint, "tcp://127.0.0.1:7601");
  EXPECT_TRUE(connection->credentials.empty());
  EXPECT_TRUE(connection->config_file.empty());
}

TEST_F(ConfigResolutionTest, ReadsTheUserConfigThatKfleetdWrites) {
  const auto config = WriteHomeConfig(
      "# Written by kfleetd\ncoordinator: tcp://127.0.0.1:7651\ncredentials: "
      "\"/state/client.key\"\n");
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->endpoint, "tcp://127.0.0.1:7651");
  EXPECT_EQ(connection->credentials, "/state/client.key");
  EXPECT_EQ(connection->credentials_origin, "credentials: in " + config.string());
  EXPECT_EQ(connection->config_file, config.string());
}

TEST_F(ConfigResolutionTest, EmptyCredentialsMeanInsecure) {
  WriteHomeConfig("coordinator: tcp://127.0.0.1:7651\ncredentials: \"\"\n");
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_TRUE(connection->credentials.empty());
}

TEST_F(ConfigResolutionTest, RelativeCredentialsAreBesideTheConfig) {
  const auto config = Write("state/cli.yaml", "credentials: client.key\n");
  flags_.cli_config = config.string();
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->credentials, dir_ / "state/client.key");
  EXPECT_EQ(connection->endpoint, "tcp://127.0.0.1:7601");
}

TEST_F(ConfigResolutionTest, EnvironmentBeatsTheUserConfig) {
  WriteHomeConfig("coordinator: tcp://127.0.0.1:1111\n");
  environment_.cli_config = Write("env.yaml", "coordinator: tcp://127.0.0.1:2222\n").string();
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->endpoint, "tcp://127.0.0.1:2222");
}

TEST_F(ConfigResolutionTest, CliConfigFlagBeatsTheEnvironment) {
  environment_.cli_config = Write("env.yaml", "coordinator: tcp://127.0.0.1:2222\n").string();
  flags_.cli_config = Write("flag.yaml", "coordinator: tcp://127.0.0.1:3333\n").string();
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->endpoint, "tcp://127.0.0.1:3333");
}

TEST_F(ConfigResolutionTest, FlagsBeatTheConfigFile) {
  WriteHomeConfig("coordinator: tcp://127.0.0.1:1111\ncredentials: /file.key\n");
  flags_.coordinator = "tcp://10.0.0.1:7601";
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->endpoint, "tcp://10.0.0.1:7601");
  EXPECT_EQ(connection->credentials, "/file.key");  // each setting falls back on its own

  flags_.credentials = "/flag.key";
  connection = ResolveConnection(flags_, environment_);
  ASSERT_TRUE(connection.ok()) << connection.status().ToString();
  EXPECT_EQ(connection->credentials, "/flag.key");
  EXPECT_EQ(connection->credentials_origin, "--credentials");
}

TEST_F(ConfigResolutionTest, NamedConfigThatIsMissingIsAnError) {
  flags_.cli_config = (dir_ / "nope.yaml").string();
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(connection.status().message().find("nope.yaml"), std::string::npos);
  EXPECT_NE(connection.status().message().find("--cli-config"), std::string::npos);

  flags_.cli_config.clear();
  environment_.cli_config = (dir_ / "gone.yaml").string();
  connection = ResolveConnection(flags_, environment_);
  ASSERT_FALSE(connection.ok());
  EXPECT_NE(connection.status().message().find("KFLEET_CLI_CONFIG"), std::string::npos);
}

TEST_F(ConfigResolutionTest, UnknownKeyNamesFileAndLine) {
  const auto config = WriteHomeConfig("coordinator: tcp://127.0.0.1:7651\ncredential: x.key\n");
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), ErrorCode::kInvalidArgument);
  const std::string& message = connection.status().message();
  EXPECT_NE(message.find(config.string() + ":2:"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key 'credential'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'credentials'"), std::string::npos) << message;
}

TEST_F(ConfigResolutionTest, BadYamlNamesFileAndLine) {
  const auto config = WriteHomeConfig("coordinator: tcp://127.0.0.1:7651\ncredentials: [x\n");
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(connection.status().message().find(config.string() + ":"), std::string::npos)
      << connection.status().message();
  EXPECT_NE(connection.status().message().find("not valid YAML"), std::string::npos);
}

TEST_F(ConfigResolutionTest, ListWhereAnEndpointBelongsIsAnError) {
  const auto config = WriteHomeConfig("coordinator: [a, b]\n");
  Result<Connection> connection = ResolveConnection(flags_, environment_);
  ASSERT_FALSE(connection.ok());
  EXPECT_NE(connection.status().message().find(config.string() + ":1:"), std::string::npos)
      << connection.status().message();
}

}  // namespace
}  // namespace kfleet::cli
