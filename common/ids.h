// Identifiers and content hashes. Randomness goes through RandomSource so tests can fix it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kfleet {

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual void Fill(std::span<uint8_t> out) = 0;
};

// Cryptographically strong bytes from the operating system (libsodium). Thread-safe.
RandomSource& SystemRandom();

// A deterministic source for tests (splitmix64 over a seed).
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  void Fill(std::span<uint8_t> out) override;

 private:
  uint64_t state_;
};

// "prefix-" followed by 16 lowercase base32 characters (80 random bits), e.g. "req-k3j5x0...".
std::string NewId(std::string_view prefix, RandomSource& random = SystemRandom());

// Lowercase hex SHA-256 of `bytes` (64 characters): the address of a content-addressed blob.
std::string Sha256Hex(std::string_view bytes);

// Incremental SHA-256 for data that arrives in pieces (large model files).
class Sha256 {
 public:
  Sha256();
  void Update(std::string_view bytes);
  std::string FinishHex();

 private:
  alignas(64) unsigned char state_[128];  // crypto_hash_sha256_state, opaque here
};

bool IsSha256Hex(std::string_view text);

}  // namespace kfleet
