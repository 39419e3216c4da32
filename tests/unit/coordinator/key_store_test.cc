#include "coordinator/key_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/files.h"

namespace kfleet::coordinator {
namespace {

namespace fs = std::filesystem;

int FileMode(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

std::string Contents(const fs::path& path) {
  Result<std::string> text = ReadFile(path);
  return text.ok() ? *text : "<" + text.status().ToString() + ">";
}

class KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kfleet-keys-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    state_ = pattern;
    keys_ = state_ / "keys";
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(state_, ignored);
  }

  KeyStore Open() {
    Result<KeyStore> store = KeyStore::Open(state_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return std::move(store).value();
  }

  fs::path state_;
  fs::path keys_;
};

TEST_F(KeyStoreTest, FirstOpenCreatesServerKeysAndReopenKeepsThem) {
  std::string public_key;
  std::string secret_key;
  {
    KeyStore store = Open();
    public_key = store.ServerPublicKey();
    secret_key = store.ServerSecretKey();
  }
  EXPECT_TRUE(msg::IsZ85Key(public_key));
  EXPECT_EQ(*msg::CurvePublicKey(secret_key), public_key);
  EXPECT_EQ(FileMode(keys_), 0700);
  EXPECT_EQ(FileMode(keys_ / "server.key"), 0600);
  EXPECT_NE(Contents(keys_ / "server.key").find(secret_key), std::string::npos);
  EXPECT_EQ(Contents(keys_ / "server.pub"), public_key + "\n");

  KeyStore reopened = Open();
  EXPECT_EQ(reopened.ServerPublicKey(), public_key);
  EXPECT_EQ(reopened.ServerSecretKey(), secret_key);
}

TEST_F(KeyStoreTest, ServerPubIsRebuiltFromTheSecretKey) {
  const std::string public_key = Open().ServerPublicKey();
  ASSERT_TRUE(fs::remove(keys_ / "server.pub"));
  EXPECT_EQ(Open().ServerPublicKey(), public_key);
  EXPECT_EQ(Contents(keys_ / "server.pub"), public_key + "\n");
}

TEST_F(KeyStoreTest, DamagedServerKeyIsReportedNotReplaced) {
  { KeyStore store = Open(); }
  ASSERT_TRUE(WriteFileAtomic(keys_ / "server.key", "secret_key: garbage\n", 0600).ok());
  Result<KeyStore> store = KeyStore::Open(state_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), ErrorCode::kCorruption);
  EXPECT_NE(store.status().message().find("server.key: secret_key: not a CurveZMQ key"),
            std::string::npos)
      << store.status().ToString();
}

TEST_F(KeyStoreTest, InviteWritesCredentialsAndAuthorizesTheKey) {
  KeyStore store = Open();
  Result<Invitation> invitation = store.InviteWorker("gpu-7", "tcp://coord.example:7600");
  ASSERT_TRUE(invitation.ok()) << invitation.status().ToString();
  EXPECT_EQ(invitation->file, keys_ / "invites" / "gpu-7.key");
  EXPECT_EQ(FileMode(invitation->file), 0600);
  EXPECT_EQ(Contents(keys_ / "workers" / "gpu-7.pub"),
            invitation->credentials.keys.public_key + "\n");

  Result<msg::ClientCredentials> loaded = msg::LoadClientCredentials(invitation->file);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->name, "gpu-7");
  EXPECT_EQ(loaded->endpoint, "tcp://coord.example:7600");
  EXPECT_EQ(loaded->server_public_key, store.ServerPublicKey());
  EXPECT_EQ(loaded->keys.secret_key, invitation->credentials.keys.secret_key);
  EXPECT_EQ(store.WorkerNames(), std::vector<std::string>{"gpu-7"});
}

TEST_F(KeyStoreTest, DuplicateInviteIsRefusedWithTheWayOut) {
  KeyStore store = Open();
  ASSERT_TRUE(store.InviteWorker("gpu-7", "tcp://h:7600").ok());
  const std::string first = Contents(keys_ / "invites" / "gpu-7.key");
  Result<Invitation> again = store.InviteWorker("gpu-7", "tcp://h:7600");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find("kfleet nodes revoke gpu-7"), std::string::npos)
      << again.status().ToString();
  EXPECT_NE(again.status().message().find((keys_ / "invites" / "gpu-7.key").string()),
            std::string::npos);
  EXPECT_EQ(Contents(keys_ / "invites" / "gpu-7.key"), first);
}

TEST_F(KeyStoreTest, BadNamesAndEndpointsAreRefused) {
  KeyStore store = Open();
  const std::vector<std::string> bad_names = {"",      ".hidden", "-dash", "a/b",
                                              "../up", "sp ace",  "tab\t", std::string(65, 'a')};
  for (const std::string& name : bad_names) {
    Result<Invitation> invitation = store.InviteWorker(name, "tcp://h:7600");
    ASSERT_FALSE(invitation.ok()) << "'" << name << "'";
    EXPECT_EQ(invitation.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(invitation.status().message().find("letters, digits"), std::string::npos);
  }
  EXPECT_TRUE(store.InviteWorker(std::string(64, 'a'), "tcp://h:7600").ok());
  EXPECT_TRUE(store.InviteWorker("node_1.rack-2", "tcp://h:7600").ok());
  EXPECT_EQ(store.InviteWorker("gpu-8", "coord:7600").status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(store.WorkerNames().size(), 2u);
}

TEST_F(KeyStoreTest, RevokeMovesTheKeyAndDeletesTheInvite) {
  KeyStore store = Open();
  Result<Invitation> invitation = store.InviteWorker("gpu-7", "tcp://h:7600");
  ASSERT_TRUE(invitation.ok());
  const std::string public_key = invitation->credentials.keys.public_key;

  ASSERT_TRUE(store.RevokeWorker("gpu-7").ok());
  EXPECT_FALSE(fs::exists(keys_ / "workers" / "gpu-7.pub"));
  EXPECT_FALSE(fs::exists(invitation->file));
  EXPECT_EQ(Contents(keys_ / "revoked" / "workers" / "gpu-7.pub"), public_key + "\n");
  EXPECT_TRUE(store.WorkerNames().empty());
  EXPECT_TRUE(store.Snapshot().workers.empty());
  EXPECT_TRUE(Open().WorkerNames().empty());

  EXPECT_EQ(store.RevokeWorker("gpu-7").code(), ErrorCode::kNotFound);
  EXPECT_EQ(store.RevokeWorker("never-seen").code(), ErrorCode::kNotFound);
  // A revoked name can be invited again, with a new key.
  Result<Invitation> again = store.InviteWorker("gpu-7", "tcp://h:7600");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_NE(again->credentials.keys.public_key, public_key);
}

TEST_F(KeyStoreTest, EnsureLocalClientIsIdempotentAndFollowsTheEndpoint) {
  KeyStore store = Open();
  Result<msg::ClientCredentials> first = store.EnsureLocalClient("tcp://127.0.0.1:7601");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const fs::path file = KeyStore::LocalClientFile(state_);
  EXPECT_EQ(file, state_ / "client.key");
  EXPECT_EQ(FileMode(file), 0600);
  EXPECT_EQ(first->name, "local");
  EXPECT_EQ(first->server_public_key, store.ServerPublicKey());
  EXPECT_EQ(Contents(keys_ / "clients" / "local.pub"), first->keys.public_key + "\n");

  Result<msg::ClientCredentials> second = store.EnsureLocalClient("tcp://127.0.0.1:7601");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->keys.secret_key, first->keys.secret_key);

  KeyStore reopened = Open();
  Result<msg::ClientCredentials> moved = reopened.EnsureLocalClient("tcp://127.0.0.1:9999");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->keys.secret_key, first->keys.secret_key);
  EXPECT_EQ(msg::LoadClientCredentials(file)->endpoint, "tcp://127.0.0.1:9999");

  // A damaged file is replaced by a new pair, and the new key is the authorized one.
  ASSERT_TRUE(WriteFileAtomic(file, "name: local\n", 0600).ok());
  Result<msg::ClientCredentials> replaced = reopened.EnsureLocalClient("tcp://127.0.0.1:9999");
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  EXPECT_NE(replaced->keys.secret_key, first->keys.secret_key);
  EXPECT_EQ(reopened.Snapshot().clients.count(replaced->keys.public_key), 1u);
  EXPECT_EQ(reopened.Snapshot().clients.count(first->keys.public_key), 0u);
}

TEST_F(KeyStoreTest, ReloadPicksUpKeysDroppedInAndSkipsBadOnes) {
  KeyStore store = Open();
  Result<msg::CurveKeyPair> dropped = msg::GenerateCurveKeyPair();
  ASSERT_TRUE(dropped.ok());
  ASSERT_TRUE(WriteFileAtomic(keys_ / "workers" / "cpu-3.pub", dropped->public_key + "\n").ok());
  ASSERT_TRUE(WriteFileAtomic(keys_ / "workers" / "broken.pub", "not a key\n").ok());
  ASSERT_TRUE(WriteFileAtomic(keys_ / "workers" / "bad name.pub", dropped->public_key).ok());
  ASSERT_TRUE(WriteFileAtomic(keys_ / "workers" / "twin.pub", dropped->public_key).ok());
  ASSERT_TRUE(WriteFileAtomic(keys_ / "workers" / "README", "not a .pub file").ok());
  EXPECT_TRUE(store.WorkerNames().empty());

  ASSERT_TRUE(store.Reload().ok());
  EXPECT_EQ(store.WorkerNames(), std::vector<std::string>{"cpu-3"});
  EXPECT_EQ(store.Snapshot().workers.at(dropped->public_key), "cpu-3");

  // Deleting the file by hand de-authorizes on the next reload.
  ASSERT_TRUE(fs::remove(keys_ / "workers" / "cpu-3.pub"));
  ASSERT_TRUE(store.Reload().ok());
  EXPECT_EQ(store.WorkerNames(), std::vector<std::string>{"twin"});
}

TEST_F(KeyStoreTest, SnapshotMapsKeysToNamesPerDomain) {
  KeyStore store = Open();
  Result<Invitation> a = store.InviteWorker("a", "tcp://h:7600");
  Result<Invitation> b = store.InviteWorker("b", "tcp://h:7600");
  Result<msg::ClientCredentials> local = store.EnsureLocalClient("tcp://127.0.0.1:7601");
  ASSERT_TRUE(a.ok() && b.ok() && local.ok());

  const AuthorizedKeys snapshot = store.Snapshot();
  EXPECT_EQ(snapshot.workers.size(), 2u);
  EXPECT_EQ(snapshot.workers.at(a->credentials.keys.public_key), "a");
  EXPECT_EQ(snapshot.workers.at(b->credentials.keys.public_key), "b");
  EXPECT_EQ(snapshot.clients.size(), 1u);
  EXPECT_EQ(snapshot.clients.at(local->keys.public_key), "local");
  EXPECT_EQ(snapshot.workers.count(local->keys.public_key), 0u);
  EXPECT_EQ(snapshot.clients.count(a->credentials.keys.public_key), 0u);

  const AuthorizedKeys reloaded = Open().Snapshot();
  EXPECT_EQ(reloaded.workers, snapshot.workers);
  EXPECT_EQ(reloaded.clients, snapshot.clients);
}

}  // namespace
}  // namespace kfleet::coordinator
