#include "messages/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/files.h"
#include "messages/transport.h"

namespace kfleet::msg {
namespace {

using std::chrono::milliseconds;

// The example keys of zmq_curve(7): two matched pairs full of characters YAML treats as syntax.
constexpr char kServerPublic[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
constexpr char kServerSecret[] = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
constexpr char kClientPublic[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
constexpr char kClientSecret[] = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

int FileMode(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

ClientCredentials ExampleCredentials() {
  return {"gpu-7", "tcp://coord.example:7600", kServerPublic, {kClientPublic, kClientSecret}};
}

TEST(CurveKeysTest, GeneratedPairsAreValidAndDistinct) {
  Result<CurveKeyPair> first = GenerateCurveKeyPair();
  Result<CurveKeyPair> second = GenerateCurveKeyPair();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(IsZ85Key(first->public_key));
  EXPECT_TRUE(IsZ85Key(first->secret_key));
  EXPECT_NE(first->public_key, second->public_key);
  EXPECT_NE(first->secret_key, first->public_key);

  Result<std::string> derived = CurvePublicKey(first->secret_key);
  ASSERT_TRUE(derived.ok()) << derived.status().ToString();
  EXPECT_EQ(*derived, first->public_key);
}

TEST(CurveKeysTest, PublicKeyOfKnownSecret) {
  Result<std::string> server = CurvePublicKey(kServerSecret);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(*server, kServerPublic);
  Result<std::string> client = CurvePublicKey(kClientSecret);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ(*client, kClientPublic);

  Result<std::string> bad = CurvePublicKey("too short");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("expected 40 Z85 characters"), std::string::npos);
}

TEST(CurveKeysTest, IsZ85KeyChecksLengthAlphabetAndValue) {
  EXPECT_TRUE(IsZ85Key(kServerPublic));
  EXPECT_FALSE(IsZ85Key(""));
  EXPECT_FALSE(IsZ85Key(std::string(kServerPublic).substr(0, 39)));
  EXPECT_FALSE(IsZ85Key(std::string(kServerPublic) + "a"));
  std::string outside_alphabet = kServerPublic;
  outside_alphabet[3] = '~';
  EXPECT_FALSE(IsZ85Key(outside_alphabet));
  std::string with_quote = kServerPublic;
  with_quote[0] = '\'';
  EXPECT_FALSE(IsZ85Key(with_quote));
  // Valid characters, but "#####" is 85^5 - 1, which does not fit in the 32 bits it encodes.
  EXPECT_FALSE(IsZ85Key(std::string(40, '#')));
}

class CredentialsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "kfleet-curve-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // Writes `text` as gpu-7.key and returns the load error's message ("" when it loaded).
  std::string LoadError(const std::string& text) {
    const std::filesystem::path path = dir_ / "gpu-7.key";
    EXPECT_TRUE(WriteFileAtomic(path, text, 0600).ok());
    Result<ClientCredentials> loaded = LoadClientCredentials(path);
    if (loaded.ok()) return "";
    EXPECT_EQ(loaded.status().code(), ErrorCode::kInvalidArgument);
    return loaded.status().message();
  }

  std::string ValidText() {
    std::string text = "name: gpu-7\ncoordinator: tcp://coord.example:7600\n";
    text += "server_public_key: '" + std::string(kServerPublic) + "'\n";
    text += "public_key: '" + std::string(kClientPublic) + "'\n";
    text += "secret_key: '" + std::string(kClientSecret) + "'\n";
    return text;
  }

  std::filesystem::path dir_;
};

TEST_F(CredentialsFileTest, SaveAndLoadRoundTrip) {
  const std::filesystem::path path = dir_ / "gpu-7.key";
  const ClientCredentials saved = ExampleCredentials();
  ASSERT_TRUE(SaveClientCredentials(path, saved).ok());
  EXPECT_EQ(FileMode(path), 0600);
  Result<std::string> text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->rfind("# kfleet credentials for gpu-7: keep this file secret\n", 0), 0u) << *text;

  Result<ClientCredentials> loaded = LoadClientCredentials(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->name, saved.name);
  EXPECT_EQ(loaded->endpoint, saved.endpoint);
  EXPECT_EQ(loaded->server_public_key, saved.server_public_key);
  EXPECT_EQ(loaded->keys.public_key, saved.keys.public_key);
  EXPECT_EQ(loaded->keys.secret_key, saved.keys.secret_key);
}

TEST_F(CredentialsFileTest, FileReadableByOthersStillLoads) {
  const std::filesystem::path path = dir_ / "shared.key";
  ASSERT_TRUE(WriteFileAtomic(path, ValidText(), 0644).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  Result<ClientCredentials> loaded = LoadClientCredentials(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->name, "gpu-7");
}

TEST_F(CredentialsFileTest, BadKeyIsNamedWithFileAndKey) {
  std::string text = ValidText();
  text.replace(text.find(kClientSecret), 40, "not-a-key");
  const std::string error = LoadError(text);
  EXPECT_NE(error.find("gpu-7.key: secret_key: not a CurveZMQ key (expected 40 Z85 characters)"),
            std::string::npos)
      << error;
}

TEST_F(CredentialsFileTest, MissingKeysAreEachNamed) {
  const std::string error = LoadError("name: gpu-7\ncoordinator: tcp://h:7600\n");
  EXPECT_NE(error.find("gpu-7.key: missing key 'server_public_key'"), std::string::npos) << error;
  EXPECT_NE(error.find("missing key 'public_key'"), std::string::npos) << error;
  EXPECT_NE(error.find("missing key 'secret_key'"), std::string::npos) << error;
  EXPECT_NE(LoadError("").find("missing key 'name'"), std::string::npos);
}

TEST_F(CredentialsFileTest, MalformedYamlUnknownKeysAndMismatchedPairsAreRefused) {
  EXPECT_NE(LoadError("name: [unclosed\n").find("not valid YAML"), std::string::npos);
  EXPECT_NE(LoadError("just text\n").find("expected a mapping"), std::string::npos);
  EXPECT_NE(LoadError(ValidText() + "secret_kee: x\n").find("unknown key 'secret_kee'"),
            std::string::npos);
  std::string mismatched = ValidText();
  mismatched.replace(mismatched.find(kClientPublic), 40, kServerPublic);
  EXPECT_NE(LoadError(mismatched).find("public_key does not belong to secret_key"),
            std::string::npos);
}

TEST_F(CredentialsFileTest, MissingFileNamesThePath) {
  Result<ClientCredentials> loaded = LoadClientCredentials(dir_ / "absent.key");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("absent.key"), std::string::npos);
}

TEST_F(CredentialsFileTest, SaveRefusesWhatItCouldNotLoad) {
  ClientCredentials bad_key = ExampleCredentials();
  bad_key.keys.secret_key = "short";
  const Status status = SaveClientCredentials(dir_ / "x.key", bad_key);
  EXPECT_EQ(status.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(status.message().find("secret_key"), std::string::npos) << status.ToString();

  ClientCredentials bad_endpoint = ExampleCredentials();
  bad_endpoint.endpoint = "tcp://h:1\nsecret_key: x";
  EXPECT_EQ(SaveClientCredentials(dir_ / "x.key", bad_endpoint).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.key"));
}

// A CURVE server and client in one context, with no ZAP handler: libzmq checks the mechanism and
// the server key only, and no User-Id is set.
class CurveSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ConfigureSocket(router_, {}).ok());
    ASSERT_TRUE(UseCurveServer(router_, kServerSecret, "kfleet-test").ok());
    router_.bind("tcp://127.0.0.1:0");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }

  zmq::socket_t Client(const ClientCredentials& credentials) {
    zmq::socket_t dealer(context_, zmq::socket_type::dealer);
    EXPECT_TRUE(ConfigureSocket(dealer, {}).ok());
    EXPECT_TRUE(UseCurveClient(dealer, credentials).ok());
    dealer.connect(endpoint_);
    return dealer;
  }

  // Sends a heartbeat and waits up to `timeout` for a message at the router.
  Result<std::optional<ReceivedMessage>> RoundTrip(zmq::socket_t& dealer, milliseconds timeout) {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<Heartbeat>().setSequence(7);
    // Queued even before the handshake ends: DEALERs create their pipe at connect.
    EXPECT_TRUE(Send<Heartbeat>(dealer, builder).ok());
    std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, timeout) == 0) return std::optional<ReceivedMessage>();
    return Receive(router_, true);
  }

  zmq::context_t context_;
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::string endpoint_;
};

TEST_F(CurveSocketTest, RoundTripWithoutZapHasNoUserId) {
  zmq::socket_t dealer = Client(ExampleCredentials());
  Result<std::optional<ReceivedMessage>> received = RoundTrip(dealer, milliseconds(2000));
  ASSERT_TRUE(received.ok()) << received.status().ToString();
  ASSERT_TRUE(received->has_value()) << "the CURVE handshake did not complete";
  EXPECT_TRUE((*received)->message.Is<Heartbeat>());
  EXPECT_EQ((*received)->user_id, "");
}

TEST_F(CurveSocketTest, WrongServerKeyNeverGetsThrough) {
  ClientCredentials wrong = ExampleCredentials();
  wrong.server_public_key = kClientPublic;
  zmq::socket_t dealer = Client(wrong);
  Result<std::optional<ReceivedMessage>> received = RoundTrip(dealer, milliseconds(300));
  ASSERT_TRUE(received.ok()) << received.status().ToString();
  EXPECT_FALSE(received->has_value());
}

TEST_F(CurveSocketTest, InvalidSettingsAreRefusedBeforeTheSocket) {
  zmq::socket_t dealer(context_, zmq::socket_type::dealer);
  ClientCredentials bad = ExampleCredentials();
  bad.server_public_key = "nope";
  EXPECT_EQ(UseCurveClient(dealer, bad).code(), ErrorCode::kInvalidArgument);
  zmq::socket_t server(context_, zmq::socket_type::router);
  EXPECT_EQ(UseCurveServer(server, "nope", "kfleet-test").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(UseCurveServer(server, kServerSecret, "").code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace kfleet::msg
