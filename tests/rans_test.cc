#include "tests/legacy_rans_encoder.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace pstore::rans {
namespace {

std::vector<uint8_t> Skewed(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::geometric_distribution<int> g(0.3);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(std::min(g(rng) + 100, 255));
  return v;
}

std::string EncodeO0(const std::vector<uint8_t>& v, Table* t) {
  uint32_t h[256] = {};
  for (uint8_t b : v) h[b]++;
  Normalize(h, t);
  std::string out;
  WriteTable(&out, *t);
  EncodeBody(v.data(), nullptr, v.size(), t, &out);
  return out;
}

Status DecodeO0(const std::string& s, size_t n, std::vector<uint8_t>* out) {
  Reader r(s);
  Table t;
  if (!ReadTable(&r, &t)) return Status::Corruption("table");
  out->assign(n, 0);
  PageVector<uint32_t> scratch;
  return DecodeBody(&r, nullptr, n, &t, 1, out->data(), &scratch);
}

TEST(Rans, NormalizeSumsToScaleAndKeepsEverySymbol) {
  uint32_t h[256] = {};
  h[0] = 1000000;
  for (int s = 1; s < 256; s++) h[s] = 1;
  Table t;
  Normalize(h, &t);
  uint32_t sum = 0;
  for (int s = 0; s < 256; s++) {
    EXPECT_GE(t.freq[s], 1) << s;
    sum += t.freq[s];
  }
  EXPECT_EQ(sum, kProbScale);
  EXPECT_EQ(t.nsym, 256);
}

TEST(Rans, TableRoundTripsAndTableBytesIsExact) {
  for (int nsym : {1, 2, 31, 32, 33, 200, 256}) {
    uint32_t h[256] = {};
    for (int s = 0; s < nsym; s++) h[(s * 7) % 256] = uint32_t(1 + s * s);
    Table t, u;
    Normalize(h, &t);
    std::string out;
    WriteTable(&out, t);
    EXPECT_EQ(out.size(), TableBytes(t));
    Reader r(out);
    ASSERT_TRUE(ReadTable(&r, &u));
    EXPECT_TRUE(r.empty());
    for (int s = 0; s < 256; s++) EXPECT_EQ(t.freq[s], u.freq[s]);
  }
}

TEST(Rans, RoundTripsEveryLengthAcrossLaneAndVectorBoundaries) {
  for (size_t n : {size_t(1), size_t(2), size_t(31), size_t(255), size_t(256), size_t(257),
                   size_t(8191), size_t(8192), size_t(8193), size_t(8192 + 31), size_t(100000)}) {
    auto v = Skewed(n, uint32_t(n));
    Table t;
    std::string enc = EncodeO0(v, &t);
    std::vector<uint8_t> dec;
    ASSERT_TRUE(DecodeO0(enc, n, &dec).ok()) << n;
    EXPECT_EQ(dec, v) << n;
  }
}

TEST(Rans, SingleSymbolTableCostsNoWords) {
  std::vector<uint8_t> v(50000, 42);
  Table t;
  std::string enc = EncodeO0(v, &t);
  EXPECT_LT(enc.size(), 200u);
  std::vector<uint8_t> dec;
  ASSERT_TRUE(DecodeO0(enc, v.size(), &dec).ok());
  EXPECT_EQ(dec, v);
}

TEST(Rans, ContextCodingRoundTrips) {
  std::mt19937 rng(7);
  const size_t n = 70001;
  std::vector<uint8_t> ctx(n), sym(n);
  uint32_t h[4][256] = {};
  for (size_t i = 0; i < n; i++) {
    ctx[i] = uint8_t(rng() % 4);
    sym[i] = uint8_t(ctx[i] * 50 + rng() % (ctx[i] + 3));
    h[ctx[i]][sym[i]]++;
  }
  Table tables[4];
  for (int c = 0; c < 4; c++) Normalize(h[c], &tables[c]);
  std::string out;
  EncodeBody(sym.data(), ctx.data(), n, tables, &out);
  Reader r(out);
  std::vector<uint8_t> dec(n);
  PageVector<uint32_t> scratch;
  ASSERT_TRUE(DecodeBody(&r, ctx.data(), n, tables, 4, dec.data(), &scratch).ok());
  EXPECT_EQ(dec, sym);
}

TEST(Rans, EveryFlippedByteIsAnErrorOrTheSameBytes) {
  auto v = Skewed(20000, 3);
  Table t;
  std::string enc = EncodeO0(v, &t);
  int errors = 0;
  for (size_t i = 0; i < enc.size(); i += 7) {
    std::string bad = enc;
    bad[i] ^= 0x5a;
    std::vector<uint8_t> dec;
    Status s = DecodeO0(bad, v.size(), &dec);
    if (!s.ok()) errors++;
  }
  EXPECT_GT(errors, 0);
}

TEST(Rans, TruncatedStreamsFail) {
  auto v = Skewed(20000, 4);
  Table t;
  std::string enc = EncodeO0(v, &t);
  for (size_t cut : {size_t(0), size_t(1), enc.size() / 2, enc.size() - 2, enc.size() - 1}) {
    std::vector<uint8_t> dec;
    EXPECT_FALSE(DecodeO0(enc.substr(0, cut), v.size(), &dec).ok()) << cut;
  }
}

TEST(Rans, ReadTableRejectsBadTables) {
  auto reject = [](std::string s) {
    Reader r(s);
    Table t;
    return !ReadTable(&r, &t);
  };
  EXPECT_TRUE(reject(std::string("\x03\x05\x04\x06\x01\x01", 6)));  // symbols not ascending
  EXPECT_TRUE(reject(std::string("\x02\x01\x02\xff\x1f", 5)));      // first freq takes all 4096
  EXPECT_TRUE(reject(std::string("\x81\x02", 2)));                  // more than 256 symbols
  EXPECT_TRUE(reject(std::string("\x05\x01", 2)));                  // truncated symbol list
}

}  // namespace
}  // namespace pstore::rans
