#include "coordinator/key_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include "common/config.h"
#include "common/files.h"
#include "common/log.h"

namespace kfleet::coordinator {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxNameChars = 64;
constexpr size_t kMaxKeyFileBytes = 4096;

std::string Trimmed(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const size_t end = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(begin, end - begin + 1));
}

Result<bool> Exists(const fs::path& path) {
  std::error_code ec;
  const bool exists = fs::exists(path, ec);
  if (ec) return IoError("stat " + path.string() + ": " + ec.message());
  return exists;
}

// A revocation must survive a crash, so the directory entries it changed are synced.
Status FsyncDir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open directory " + dir.string(), errno);
  const int rc = ::fsync(fd);
  const int fsync_errno = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync directory " + dir.string(), fsync_errno);
  return Status::Ok();
}

Status ValidateEndpoint(std::string_view endpoint) {
  if (endpoint.find("://") != std::string_view::npos &&
      endpoint.find('\n') == std::string_view::npos) {
    return Status::Ok();
  }
  return InvalidArgument("endpoint '" + std::string(endpoint) +
                         "' is not a ZeroMQ endpoint such as tcp://coord.example:7600");
}

Result<std::string> ReadPublicKey(const fs::path& path) {
  KF_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxKeyFileBytes));
  std::string key = Trimmed(text);
  if (!msg::IsZ85Key(key)) {
    return InvalidArgument(path.string() +
                           ": not a CurveZMQ public key (expected 40 Z85 characters)");
  }
  return key;
}

Status WritePublicKey(const fs::path& path, std::string_view key) {
  return WriteFileAtomic(path, std::string(key) + "\n", 0644);
}

// Reads DIR/*.pub into name -> key. Bad files are skipped with a warning, so that one mistyped
// file an operator dropped in does not lock every other node out.
Result<std::map<std::string, std::string>> LoadKeyDir(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".pub" && it->is_regular_file(ec)) files.push_back(it->path());
  }
  if (ec) return IoError("list " + dir.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());  // a duplicate key keeps the same owner on every load

  std::map<std::string, std::string> keys;
  std::map<std::string, std::string> owners;  // key -> name
  for (const fs::path& file : files) {
    const std::string name = file.stem().string();
    Status valid = ValidateKeyName(name);
    Result<std::string> key = valid.ok() ? ReadPublicKey(file) : Result<std::string>(valid);
    if (!key.ok()) {
      log::Warn("keys.skipped").Kv("file", file.string()).Kv("reason", key.status().message());
      continue;
    }
    const auto [owner, inserted] = owners.emplace(*key, name);
    if (!inserted) {
      log::Warn("keys.skipped")
          .Kv("file", file.string())
          .Kv("reason", "the same key is already authorized as '" + owner->second + "'");
      continue;
    }
    keys.emplace(name, std::move(key).value());
  }
  return keys;
}

// server.key holds the secret key; server.pub is derived from it and rewritten if it is missing
// or does not match (the secret key is the identity workers trust).
Result<msg::CurveKeyPair> LoadOrCreateServerKeys(const fs::path& keys_dir) {
  const fs::path secret_path = keys_dir / "server.key";
  const fs::path public_path = keys_dir / "server.pub";
  msg::CurveKeyPair keys;
  KF_ASSIGN_OR_RETURN(const bool has_secret, Exists(secret_path));
  if (has_secret) {
    KF_ASSIGN_OR_RETURN(std::string text, ReadFile(secret_path, kMaxKeyFileBytes));
    KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadString(text, secret_path.string()));
    keys.secret_key = reader.String("secret_key", "");
    KF_RETURN_IF_ERROR(reader.Finish());
    if (!msg::IsZ85Key(keys.secret_key)) {
      return Corruption(secret_path.string() +
                        ": secret_key: not a CurveZMQ key (expected 40 Z85 characters); restore "
                        "the file from a backup, or delete server.key and server.pub to make a "
                        "new identity (every worker then needs a new invite)");
    }
    KF_ASSIGN_OR_RETURN(keys.public_key, msg::CurvePublicKey(keys.secret_key));
  } else {
    KF_ASSIGN_OR_RETURN(keys, msg::GenerateCurveKeyPair());
    const std::string text =
        "# kfleetd's CurveZMQ secret key: keep this file secret\nsecret_key: '" + keys.secret_key +
        "'\n";
    KF_RETURN_IF_ERROR(WriteFileAtomic(secret_path, text, 0600));
    log::Info("keys.server_created").Kv("file", secret_path.string());
  }

  KF_ASSIGN_OR_RETURN(const bool has_public, Exists(public_path));
  if (has_public) {
    Result<std::string> stored = ReadPublicKey(public_path);
    if (stored.ok() && *stored == keys.public_key) return keys;
    log::Warn("keys.server_pub_rewritten")
        .Kv("file", public_path.string())
        .Kv("reason", stored.ok() ? "it did not match server.key" : stored.status().message());
  }
  KF_RETURN_IF_ERROR(WritePublicKey(public_path, keys.public_key));
  return keys;
}

}  // namespace

Status ValidateKeyName(std::string_view name) {
  auto allowed = [](char c, bool first) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    return alnum || (!first && (c == '.' || c == '_' || c == '-'));
  };
  bool ok = !name.empty() && name.size() <= kMaxNameChars;
  for (size_t i = 0; ok && i < name.size(); ++i) ok = allowed(name[i], i == 0);
  if (ok) return Status::Ok();
  return InvalidArgument("invalid name '" + std::string(name) +
                         "': use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit");
}

KeyStore::KeyStore(fs::path state_dir, msg::CurveKeyPair server_keys)
    : state_dir_(std::move(state_dir)),
      keys_dir_(state_dir_ / "keys"),
      server_keys_(std::move(server_keys)) {}

Result<KeyStore> KeyStore::Open(const fs::path& state_dir) {
  const fs::path keys_dir = state_dir / "keys";
  for (const fs::path& dir : {keys_dir, keys_dir / "workers", keys_dir / "clients",
                              keys_dir / "invites", keys_dir / "revoked" / "workers"}) {
    KF_RETURN_IF_ERROR(MakeDirs(dir, /*private_dir=*/true).WithContext("opening key store"));
  }
  Result<msg::CurveKeyPair> server_keys = LoadOrCreateServerKeys(keys_dir);
  if (!server_keys.ok()) return server_keys.status().WithContext("opening key store");
  KeyStore store(state_dir, std::move(server_keys).value());
  KF_RETURN_IF_ERROR(store.Reload().WithContext("opening key store"));
  return store;
}

fs::path KeyStore::LocalClientFile(const fs::path& state_dir) { return state_dir / "client.key"; }

Status KeyStore::Reload() {
  KF_ASSIGN_OR_RETURN(auto workers, LoadKeyDir(keys_dir_ / "workers"));
  KF_ASSIGN_OR_RETURN(auto clients, LoadKeyDir(keys_dir_ / "clients"));
  worker_keys_ = std::move(workers);
  client_keys_ = std::move(clients);
  return Status::Ok();
}

Result<Invitation> KeyStore::InviteWorker(std::string_view name,
                                          std::string_view coordinator_endpoint) {
  KF_RETURN_IF_ERROR(ValidateKeyName(name));
  KF_RETURN_IF_ERROR(ValidateEndpoint(coordinator_endpoint));
  const std::string file_name(name);
  const fs::path public_path = keys_dir_ / "workers" / (file_name + ".pub");
  const fs::path invite_path = keys_dir_ / "invites" / (file_name + ".key");

  KF_ASSIGN_OR_RETURN(const bool authorized, Exists(public_path));
  if (authorized) {
    KF_ASSIGN_OR_RETURN(const bool has_invite, Exists(invite_path));
    const std::string revoke = "run `kfleet nodes revoke " + file_name + "` first for a new key";
    const std::string way_out =
        has_invite ? "use its credential file " + invite_path.string() + ", or " + revoke
                   : "its key was added by hand; " + revoke;
    return AlreadyExists("worker '" + file_name + "' is already authorized (" +
                         public_path.string() + "): " + way_out);
  }

  KF_ASSIGN_OR_RETURN(msg::CurveKeyPair keys, msg::GenerateCurveKeyPair());
  Invitation invitation{
      {file_name, std::string(coordinator_endpoint), server_keys_.public_key, std::move(keys)},
      invite_path};
  // The credential file comes first: an authorized key whose secret was never written would
  // block the name until revoked.
  KF_RETURN_IF_ERROR(msg::SaveClientCredentials(invite_path, invitation.credentials));
  const std::string& public_key = invitation.credentials.keys.public_key;
  if (Status written = WritePublicKey(public_path, public_key); !written.ok()) {
    std::error_code ignored;  // the invite is unusable anyway; the next invite overwrites it
    fs::remove(invite_path, ignored);
    return written;
  }
  worker_keys_[file_name] = public_key;
  log::Info("keys.worker_invited")
      .Kv("worker", file_name)
      .Kv("key", public_key.substr(0, 8))
      .Kv("file", invite_path.string());
  return invitation;
}

Status KeyStore::RevokeWorker(std::string_view name) {
  KF_RETURN_IF_ERROR(ValidateKeyName(name));
  const std::string file_name(name);
  const fs::path workers_dir = keys_dir_ / "workers";
  const fs::path revoked_dir = keys_dir_ / "revoked" / "workers";
  const fs::path public_path = workers_dir / (file_name + ".pub");
  KF_ASSIGN_OR_RETURN(const bool authorized, Exists(public_path));
  if (!authorized) {
    return NotFound("no authorized worker named '" + file_name + "' (" + public_path.string() +
                    " does not exist; `kfleet nodes` lists the nodes)");
  }
  const fs::path revoked_path = revoked_dir / (file_name + ".pub");
  if (::rename(public_path.c_str(), revoked_path.c_str()) != 0) {
    return ErrnoError("rename " + public_path.string() + " to " + revoked_path.string(), errno);
  }
  worker_keys_.erase(file_name);
  KF_RETURN_IF_ERROR(FsyncDir(workers_dir));
  KF_RETURN_IF_ERROR(FsyncDir(revoked_dir));
  // The invite's secret key can no longer get in; keeping it around only invites confusion.
  const fs::path invite_path = keys_dir_ / "invites" / (file_name + ".key");
  if (::unlink(invite_path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError("delete " + invite_path.string(), errno);
  }
  log::Info("keys.worker_revoked").Kv("worker", file_name).Kv("moved_to", revoked_path.string());
  return Status::Ok();
}

Result<msg::ClientCredentials> KeyStore::EnsureLocalClient(std::string_view api_endpoint) {
  KF_RETURN_IF_ERROR(ValidateEndpoint(api_endpoint));
  const std::string name(kLocalClientName);
  const fs::path file = LocalClientFile(state_dir_);
  const fs::path public_path = keys_dir_ / "clients" / (name + ".pub");

  KF_ASSIGN_OR_RETURN(const bool has_file, Exists(file));
  KF_ASSIGN_OR_RETURN(const bool has_public, Exists(public_path));
  if (has_file && has_public) {
    Result<msg::ClientCredentials> existing = msg::LoadClientCredentials(file);
    Result<std::string> authorized = ReadPublicKey(public_path);
    std::string problem;
    if (!existing.ok()) {
      problem = existing.status().message();
    } else if (!authorized.ok()) {
      problem = authorized.status().message();
    } else if (existing->keys.public_key != *authorized) {
      problem = file.string() + " does not hold the key in " + public_path.string();
    } else if (existing->server_public_key != server_keys_.public_key || existing->name != name) {
      problem = file.string() + " was issued for another coordinator or name";
    }
    if (problem.empty()) {
      if (existing->endpoint != api_endpoint) {
        existing->endpoint = std::string(api_endpoint);
        KF_RETURN_IF_ERROR(msg::SaveClientCredentials(file, *existing));
      }
      client_keys_[name] = *authorized;
      return std::move(existing).value();
    }
    log::Warn("keys.local_client_replaced").Kv("file", file.string()).Kv("reason", problem);
  }

  KF_ASSIGN_OR_RETURN(msg::CurveKeyPair keys, msg::GenerateCurveKeyPair());
  msg::ClientCredentials credentials{name, std::string(api_endpoint), server_keys_.public_key,
                                     std::move(keys)};
  KF_RETURN_IF_ERROR(msg::SaveClientCredentials(file, credentials));
  KF_RETURN_IF_ERROR(WritePublicKey(public_path, credentials.keys.public_key));
  client_keys_[name] = credentials.keys.public_key;
  return credentials;
}

std::vector<std::string> KeyStore::WorkerNames() const {
  std::vector<std::string> names;
  names.reserve(worker_keys_.size());
  for (const auto& [name, key] : worker_keys_) names.push_back(name);
  return names;
}

AuthorizedKeys KeyStore::Snapshot() const {
  AuthorizedKeys snapshot;
  for (const auto& [name, key] : worker_keys_) snapshot.workers.emplace(key, name);
  for (const auto& [name, key] : client_keys_) snapshot.clients.emplace(key, name);
  return snapshot;
}

}  // namespace kfleet::coordinator
