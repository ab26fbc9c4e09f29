// Push claim records (store/remote/push_claim.h): the value format a gc
// reads from the names object, one test per rule of the parser.
#include "store/remote/push_claim.h"

#include <gtest/gtest.h>

namespace pstore {
namespace {

ClaimRecord Sample() {
  ClaimRecord r;
  r.id = std::string(32, 'a');
  r.digest = HashBytes("manifest", 8);
  r.renewed = 1796540000;
  r.pid = 4242;
  r.host = "node-7";
  return r;
}

TEST(ClaimRecord, FormatThenParseRoundTrips) {
  ClaimRecord r = Sample();
  std::string v = r.Format();
  EXPECT_EQ(v, "pstore-claim 1 " + r.digest.Hex() + " 1796540000 4242 node-7");
  auto back = ClaimRecord::Parse(r.id, v);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->digest, r.digest);
  EXPECT_EQ(back->renewed, r.renewed);
  EXPECT_EQ(back->pid, r.pid);
  EXPECT_EQ(back->host, r.host);
  EXPECT_EQ(back->value, v);
  EXPECT_EQ(back->Xattr(), "claim." + r.id);
  EXPECT_EQ(back->Object(), "p." + r.id);
}

TEST(ClaimRecord, RefusesAnotherMagic) {
  ClaimRecord r = Sample();
  std::string v = r.Format();
  v[11] = 'n';  // "pstore-clain"
  EXPECT_FALSE(ClaimRecord::Parse(r.id, v).has_value());
}

TEST(ClaimRecord, RefusesAnotherVersion) {
  ClaimRecord r = Sample();
  std::string v = r.Format();
  v[13] = '2';
  EXPECT_FALSE(ClaimRecord::Parse(r.id, v).has_value());
}

TEST(ClaimRecord, RefusesABadDigest) {
  ClaimRecord r = Sample();
  EXPECT_FALSE(
      ClaimRecord::Parse(r.id, "pstore-claim 1 nothex 1796540000 4242 node-7").has_value());
  EXPECT_FALSE(ClaimRecord::Parse(
                   r.id, "pstore-claim 1 " + r.digest.Hex().substr(1) + " 1796540000 4242 node-7")
                   .has_value());
}

TEST(ClaimRecord, RefusesMissingFields) {
  ClaimRecord r = Sample();
  EXPECT_FALSE(ClaimRecord::Parse(r.id, "pstore-claim 1 " + r.digest.Hex() + " 1796540000 4242")
                   .has_value());
  EXPECT_FALSE(ClaimRecord::Parse(r.id, "").has_value());
}

TEST(ClaimRecord, RefusesANonNumericTime) {
  ClaimRecord r = Sample();
  EXPECT_FALSE(ClaimRecord::Parse(r.id, "pstore-claim 1 " + r.digest.Hex() + " soon 4242 node-7")
                   .has_value());
}

TEST(ClaimRecord, RefusesAnIdOfTheWrongLength) {
  ClaimRecord r = Sample();
  EXPECT_FALSE(ClaimRecord::Parse("abc", r.Format()).has_value());
}

}  // namespace
}  // namespace pstore
