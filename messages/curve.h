// CurveZMQ keys and the credential files that carry them.
//
// A credential file is what `kfleet nodes invite NAME` hands to a worker (and what kfleetd writes
// for the local CLI): YAML, mode 0600,
//   name: gpu-7
//   coordinator: tcp://coord.example:7600
//   server_public_key: <40 Z85 characters>
//   public_key: <40 Z85 characters>
//   secret_key: <40 Z85 characters>
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/status.h"

namespace kfleet::msg {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// A fresh key pair from libzmq (zmq_curve_keypair).
[[nodiscard]] Result<CurveKeyPair> GenerateCurveKeyPair();
// The public key that belongs to `secret_key` (zmq_curve_public).
[[nodiscard]] Result<std::string> CurvePublicKey(std::string_view secret_key);
// 40 characters of the Z85 alphabet, decoding to 32 bytes.
bool IsZ85Key(std::string_view key);

struct ClientCredentials {
  std::string name;               // node or client name the key was issued for
  std::string endpoint;           // coordinator endpoint to connect to
  std::string server_public_key;  // the coordinator's CURVE public key
  CurveKeyPair keys;              // this client's key pair
};

[[nodiscard]] Result<ClientCredentials> LoadClientCredentials(const std::filesystem::path& path);
// Written atomically with mode 0600.
[[nodiscard]] Status SaveClientCredentials(const std::filesystem::path& path,
                                           const ClientCredentials& credentials);

// Makes `socket` a CURVE client of the server named in `credentials`. Call before connect.
[[nodiscard]] Status UseCurveClient(zmq::socket_t& socket, const ClientCredentials& credentials);
// Makes `socket` a CURVE server with `secret_key`, authenticated through the ZAP handler under
// `zap_domain`. Call before bind.
[[nodiscard]] Status UseCurveServer(zmq::socket_t& socket, std::string_view secret_key,
                                    std::string_view zap_domain);

// The ZAP User-Id of the peer that sent `message` (the key's name), or "" when none.
std::string PeerUserId(const zmq::message_t& message);

}  // namespace kfleet::msg
