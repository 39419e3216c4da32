#include "common/ids.h"

#include <gtest/gtest.h>

#include <set>

namespace kfleet {
namespace {

TEST(IdsTest, NewIdHasPrefixAndSixteenBase32Chars) {
  std::string id = NewId("req");
  ASSERT_EQ(id.size(), 4u + 16u);
  EXPECT_EQ(id.substr(0, 4), "req-");
  for (char c : id.substr(4)) {
    EXPECT_NE(std::string("0123456789abcdefghjkmnpqrstvwxyz").find(c), std::string::npos) << c;
  }
}

TEST(IdsTest, SystemIdsDoNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) EXPECT_TRUE(seen.insert(NewId("x")).second);
}

TEST(IdsTest, SeededRandomIsReproducible) {
  SeededRandom a(42), b(42), c(43);
  std::string id_a = NewId("t", a);
  EXPECT_EQ(id_a, NewId("t", b));
  EXPECT_NE(id_a, NewId("t", c));
}

TEST(IdsTest, Sha256MatchesKnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(IdsTest, IncrementalSha256EqualsOneShot) {
  std::string data(100000, 'k');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  Sha256 hash;
  for (size_t offset = 0; offset < data.size(); offset += 777) {
    hash.Update(std::string_view(data).substr(offset, 777));
  }
  EXPECT_EQ(hash.FinishHex(), Sha256Hex(data));
}

TEST(IdsTest, IsSha256HexChecksShape) {
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("x")));
  EXPECT_FALSE(IsSha256Hex("abc"));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'G')));
  EXPECT_FALSE(IsSha256Hex("../" + std::string(61, 'a')));
}

}  // namespace
}  // namespace kfleet
