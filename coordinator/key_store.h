// The coordinator's CurveZMQ keys and the public keys it authorizes, kept as files under
// STATE/keys/ (mode 0700) so that an operator can read them, and add or remove a key by hand:
//   server.key, server.pub      kfleetd's own key pair; made on first open, kept across restarts
//   workers/NAME.pub            an authorized worker key (40 Z85 characters); NAME is its User-Id
//   clients/NAME.pub            an authorized client (CLI) key
//   revoked/workers/NAME.pub    a worker key after `kfleet nodes revoke NAME`
//   invites/NAME.key            the credential file `kfleet nodes invite NAME` minted
// and STATE/client.key, the local CLI's credential file.
//
// Not thread-safe: the daemon's event loop owns the store and hands Snapshot() copies to the ZAP
// thread (ZapAuthenticator::SetAuthorized).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "messages/curve.h"

namespace kfleet::coordinator {

// What the ZAP handler admits, per domain: Z85 public key -> the name the key was issued for.
struct AuthorizedKeys {
  std::map<std::string, std::string> workers;
  std::map<std::string, std::string> clients;
};

// A freshly minted worker key: the credentials and the file (0600) that carries them.
struct Invitation {
  msg::ClientCredentials credentials;
  std::filesystem::path file;  // STATE/keys/invites/NAME.key
};

// The name the local CLI's key is authorized under (clients/local.pub).
inline constexpr std::string_view kLocalClientName = "local";

// Worker and client names: [A-Za-z0-9][A-Za-z0-9._-]{0,63}. They become file names and User-Ids.
[[nodiscard]] Status ValidateKeyName(std::string_view name);

class KeyStore {
 public:
  // Creates STATE/keys/ and the server key pair on first use, then loads the authorized keys.
  [[nodiscard]] static Result<KeyStore> Open(const std::filesystem::path& state_dir);

  // STATE/client.key: where EnsureLocalClient writes the CLI's credentials.
  static std::filesystem::path LocalClientFile(const std::filesystem::path& state_dir);

  // Mints a key pair for worker `name`, writes invites/NAME.key and then authorizes the key
  // (workers/NAME.pub). AlreadyExists when `name` is authorized already.
  [[nodiscard]] Result<Invitation> InviteWorker(std::string_view name,
                                                std::string_view coordinator_endpoint);
  // Moves workers/NAME.pub to revoked/workers/ and deletes the invite file. NotFound when `name`
  // is not authorized. Connections already made stay up: the caller drops the node's session.
  [[nodiscard]] Status RevokeWorker(std::string_view name);
  // The local CLI's credentials (name "local"), made on first call and reused afterwards; the
  // endpoint is rewritten when it changed. A damaged or mismatched pair is replaced.
  [[nodiscard]] Result<msg::ClientCredentials> EnsureLocalClient(std::string_view api_endpoint);

  // Re-reads workers/*.pub and clients/*.pub. A file with a bad name or key, or a key already
  // listed under another name, is skipped with a warning; only an unreadable directory fails.
  [[nodiscard]] Status Reload();

  const std::string& ServerPublicKey() const { return server_keys_.public_key; }
  const std::string& ServerSecretKey() const { return server_keys_.secret_key; }
  // Authorized worker names, sorted.
  std::vector<std::string> WorkerNames() const;
  AuthorizedKeys Snapshot() const;

 private:
  KeyStore(std::filesystem::path state_dir, msg::CurveKeyPair server_keys);

  std::filesystem::path state_dir_;
  std::filesystem::path keys_dir_;
  msg::CurveKeyPair server_keys_;
  std::map<std::string, std::string> worker_keys_;  // name -> Z85 public key
  std::map<std::string, std::string> client_keys_;  // name -> Z85 public key
};

}  // namespace kfleet::coordinator
