#include "common/ids.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>

namespace kfleet {
namespace {

class SodiumRandom final : public RandomSource {
 public:
  SodiumRandom() {
    // sodium_init is idempotent and thread-safe; failure means no entropy source at all.
    if (sodium_init() < 0) std::abort();
  }
  void Fill(std::span<uint8_t> out) override { randombytes_buf(out.data(), out.size()); }
};

constexpr char kBase32[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford: no i, l, o, u

std::string ToHex(const unsigned char* bytes, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

}  // namespace

static_assert(sizeof(crypto_hash_sha256_state) <= 128, "Sha256 state buffer too small");

RandomSource& SystemRandom() {
  static SodiumRandom random;
  return random;
}

void SeededRandom::Fill(std::span<uint8_t> out) {
  for (uint8_t& byte : out) {
    state_ += 0x9e3779b97f4a7c15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    byte = static_cast<uint8_t>(z ^ (z >> 31));
  }
}

std::string NewId(std::string_view prefix, RandomSource& random) {
  uint8_t bytes[10];
  random.Fill(bytes);
  std::string id(prefix);
  id += '-';
  // 80 bits -> 16 characters of 5 bits each.
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 5; ++i) hi = (hi << 8) | bytes[i];
  for (int i = 5; i < 10; ++i) lo = (lo << 8) | bytes[i];
  for (int shift = 35; shift >= 0; shift -= 5) id += kBase32[(hi >> shift) & 31];
  for (int shift = 35; shift >= 0; shift -= 5) id += kBase32[(lo >> shift) & 31];
  return id;
}

std::string Sha256Hex(std::string_view bytes) {
  Sha256 hash;
  hash.Update(bytes);
  return hash.FinishHex();
}

Sha256::Sha256() {
  SystemRandom();  // ensures sodium_init ran
  crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_));
}

void Sha256::Update(std::string_view bytes) {
  crypto_hash_sha256_update(reinterpret_cast<crypto_hash_sha256_state*>(state_),
                            reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

std::string Sha256::FinishHex() {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_), digest);
  return ToHex(digest, sizeof(digest));
}

bool IsSha256Hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace kfleet
