#include "messages/curve.h"

#include <sys/stat.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/files.h"
#include "common/log.h"

namespace kfleet::msg {
namespace {

constexpr size_t kZ85KeyChars = 40;
constexpr size_t kBinaryKeyBytes = 32;
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr std::string_view kNotAKey = "not a CurveZMQ key (expected 40 Z85 characters)";
// Credential files are a few hundred bytes; anything much larger is not one.
constexpr size_t kMaxCredentialFileBytes = 64 * 1024;

Status CurveAvailable() {
  if (zmq_has("curve") == 1) return Status::Ok();
  return FailedPrecondition(
      "this libzmq was built without CURVE support; install a libzmq built with libsodium "
      "(Debian: libzmq5)");
}

Status SocketError(std::string_view what, const zmq::error_t& e) {
  return IoError(std::string(what) + ": " + e.what());
}

// Z85 keys use characters YAML treats as syntax ('&', '*', '#', ': '); single quotes make any
// of them literal, and a quote inside is written twice.
std::string YamlQuoted(std::string_view text) {
  std::string out = "'";
  for (const char c : text) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

bool HasControlCharacter(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// A credential file holds a secret key; others being able to read it is worth a warning, not a
// refusal (the key may have been copied by hand on purpose).
void WarnIfReadableByOthers(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) return;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  log::Warn("credentials.readable_by_others")
      .Kv("file", path.string())
      .Kv("mode", mode)
      .Kv("fix", "chmod 600 " + path.string());
}

}  // namespace

Result<CurveKeyPair> GenerateCurveKeyPair() {
  KF_RETURN_IF_ERROR(CurveAvailable());
  std::array<char, kZ85KeyChars + 1> public_key{};
  std::array<char, kZ85KeyChars + 1> secret_key{};
  if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0) {
    return Internal(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()));
  }
  return CurveKeyPair{std::string(public_key.data(), kZ85KeyChars),
                      std::string(secret_key.data(), kZ85KeyChars)};
}

Result<std::string> CurvePublicKey(std::string_view secret_key) {
  KF_RETURN_IF_ERROR(CurveAvailable());
  if (!IsZ85Key(secret_key)) return InvalidArgument("secret key: " + std::string(kNotAKey));
  const std::string secret(secret_key);  // zmq_curve_public wants a NUL-terminated string
  std::array<char, kZ85KeyChars + 1> public_key{};
  if (zmq_curve_public(public_key.data(), secret.c_str()) != 0) {
    return Internal(std::string("zmq_curve_public failed: ") + zmq_strerror(zmq_errno()));
  }
  return std::string(public_key.data(), kZ85KeyChars);
}

bool IsZ85Key(std::string_view key) {
  if (key.size() != kZ85KeyChars) return false;
  for (const char c : key) {
    if (kZ85Alphabet.find(c) == std::string_view::npos) return false;
  }
  // Every 5 characters must also encode a value below 2^32.
  const std::string text(key);
  std::array<uint8_t, kBinaryKeyBytes> binary{};
  return zmq_z85_decode(binary.data(), text.c_str()) != nullptr;
}

Result<ClientCredentials> LoadClientCredentials(const std::filesystem::path& path) {
  Result<std::string> text = ReadFile(path, kMaxCredentialFileBytes);
  if (!text.ok()) return text.status().WithContext("reading credentials");
  WarnIfReadableByOthers(path);
  const std::string source = path.string();
  KF_ASSIGN_OR_RETURN(ConfigReader reader, ConfigReader::LoadString(*text, source));

  std::vector<std::string> problems;
  auto required = [&](std::string_view key) {
    if (!reader.Has(key)) {
      problems.push_back(source + ": missing key '" + std::string(key) + "'");
      return std::string();
    }
    std::string value = reader.String(key, "");
    if (value.empty()) problems.push_back(source + ": " + std::string(key) + ": is empty");
    return value;
  };
  auto required_key = [&](std::string_view key) {
    std::string value = required(key);
    if (!value.empty() && !IsZ85Key(value)) {
      problems.push_back(source + ": " + std::string(key) + ": " + std::string(kNotAKey));
    }
    return value;
  };
  ClientCredentials credentials;
  credentials.name = required("name");
  credentials.endpoint = required("coordinator");
  credentials.server_public_key = required_key("server_public_key");
  credentials.keys.public_key = required_key("public_key");
  credentials.keys.secret_key = required_key("secret_key");
  const Status finished = reader.Finish();
  if (!finished.ok()) problems.push_back(finished.message());

  if (problems.empty()) {
    // A hand-edited file with a mismatched pair would fail the handshake with no useful error.
    KF_ASSIGN_OR_RETURN(std::string derived, CurvePublicKey(credentials.keys.secret_key));
    if (derived != credentials.keys.public_key) {
      problems.push_back(source + ": public_key does not belong to secret_key");
    }
  }
  if (!problems.empty()) {
    std::string message;
    for (const std::string& problem : problems) message += (message.empty() ? "" : "\n") + problem;
    message +=
        "\n(a credential file has name, coordinator, server_public_key, public_key and "
        "secret_key; `kfleet nodes invite NAME` writes a new one)";
    return InvalidArgument(std::move(message));
  }
  return credentials;
}

Status SaveClientCredentials(const std::filesystem::path& path,
                             const ClientCredentials& credentials) {
  const std::string where = "saving credentials " + path.string() + ": ";
  if (credentials.name.empty() || HasControlCharacter(credentials.name)) {
    return InvalidArgument(where + "name must be non-empty printable text");
  }
  if (credentials.endpoint.empty() || HasControlCharacter(credentials.endpoint)) {
    return InvalidArgument(where + "coordinator endpoint must be non-empty printable text");
  }
  const std::pair<std::string_view, const std::string*> keys[] = {
      {"server_public_key", &credentials.server_public_key},
      {"public_key", &credentials.keys.public_key},
      {"secret_key", &credentials.keys.secret_key}};
  for (const auto& [key, value] : keys) {
    if (!IsZ85Key(*value)) {
      return InvalidArgument(where + std::string(key) + ": " + std::string(kNotAKey));
    }
  }
  std::string text = "# kfleet credentials for " + credentials.name + ": keep this file secret\n";
  text += "name: " + YamlQuoted(credentials.name) + "\n";
  text += "coordinator: " + YamlQuoted(credentials.endpoint) + "\n";
  for (const auto& [key, value] : keys) text += std::string(key) + ": " + YamlQuoted(*value) + "\n";
  return WriteFileAtomic(path, text, 0600);
}

Status UseCurveClient(zmq::socket_t& socket, const ClientCredentials& credentials) {
  KF_RETURN_IF_ERROR(CurveAvailable());
  if (!IsZ85Key(credentials.server_public_key) || !IsZ85Key(credentials.keys.public_key) ||
      !IsZ85Key(credentials.keys.secret_key)) {
    return InvalidArgument("credentials for '" + credentials.name + "': " + std::string(kNotAKey));
  }
  try {
    socket.set(zmq::sockopt::curve_serverkey, credentials.server_public_key);
    socket.set(zmq::sockopt::curve_publickey, credentials.keys.public_key);
    socket.set(zmq::sockopt::curve_secretkey, credentials.keys.secret_key);
  } catch (const zmq::error_t& e) {
    return SocketError("configuring CURVE client", e);
  }
  return Status::Ok();
}

Status UseCurveServer(zmq::socket_t& socket, std::string_view secret_key,
                      std::string_view zap_domain) {
  KF_RETURN_IF_ERROR(CurveAvailable());
  if (!IsZ85Key(secret_key)) return InvalidArgument("server secret key: " + std::string(kNotAKey));
  // An empty domain would still reach the ZAP handler, but nobody could tell which policy applies.
  if (zap_domain.empty()) return InvalidArgument("a CURVE server needs a ZAP domain");
  try {
    socket.set(zmq::sockopt::curve_server, true);
    socket.set(zmq::sockopt::curve_secretkey, secret_key);
    socket.set(zmq::sockopt::zap_domain, zap_domain);
  } catch (const zmq::error_t& e) {
    return SocketError("configuring CURVE server", e);
  }
  return Status::Ok();
}

std::string PeerUserId(const zmq::message_t& message) {
  // NULL (errno EINVAL) when the connection has no ZAP user id, e.g. without a ZAP handler.
  const char* user_id = zmq_msg_gets(message.handle(), "User-Id");
  return user_id ? std::string(user_id) : std::string();
}

}  // namespace kfleet::msg
