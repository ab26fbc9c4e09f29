// Every stream coder of the registry (codec/coders/coder.h) through the same
// inputs: empty, one byte, incompressible, long, and its payloads truncated or
// with flipped bytes. A coder that takes an input must give it back exactly;
// a truncated payload must be a corruption error; a flipped one must never
// crash nor write past the stream (an error or other bytes are both fine: the
// chunk's key check catches the latter).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec/bitpack.h"
#include "codec/coders/carry.h"
#include "codec/coders/coder.h"
#include "tests/test_bytes.h"

namespace pstore {
namespace {

// Exponent-like bytes (few values, peaked) for stream 0 of a BF16 chunk.
std::vector<uint8_t> Peaked(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::geometric_distribution<int> g(0.3);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(120 + std::min(g(rng), 9));
  return v;
}

// What it takes to code a stream with coder c: the arguments, and for the
// decoder the streams before it (stream 1 of BF16: its context source).
struct Case {
  Coder coder;
  const uint8_t* s;
  size_t m;
  std::vector<uint8_t> source;  // stream 0, for the context and carrying coders
  rans2::Order0Plan plan;
  StreamEncodeArgs enc;
  StreamDecodeArgs dec;
  TransformInfo info;
};

void Prepare(Case* c) {
  c->info = *GetTransformInfo(Transform::kBF16);
  c->enc.transform = c->dec.transform = Transform::kBF16;
  c->dec.info = &c->info;
  c->dec.stream = 1;
  c->source = Peaked(c->m, uint32_t(c->m) + 1);
  uint32_t hist[256] = {};
  for (size_t i = 0; i < c->m; i++) hist[c->s[i]]++;
  if (c->m) rans2::PlanOrder0(c->m, hist, kMaxLanesLog2, false, &c->plan);
  c->enc.plan = &c->plan;
  c->enc.bits = std::max(1, BitsNeeded(c->s, c->m));
  c->enc.ctx_source = c->source.data();
  c->enc.ctx_groups = 4;
  c->enc.ctx_base = 120;
  c->enc.carry_bits = CarryWidth(Transform::kBF16);
}

// Encodes c's stream; for the carrying pair, rans2-carry codes the stream
// as stream 0 and carries the source's tail, then bits-tail codes the source.
// Returns false when the coder does not take the input.
bool Encode(Case* c, CoderEncodeScratch* scratch, std::string* carrier, std::string* out) {
  const StreamCoder& coder = CoderFor(c->coder);
  if (c->coder == Coder::kBitsTail) {
    StreamEncodeArgs a = c->enc;
    a.carry = c->source.data();
    if (c->m == 0 || !CoderFor(Coder::kRans2Carry).TryEncode(c->s, c->m, a, scratch, carrier))
      return false;
    a.carry_lanes_log2 = c->plan.lanes_log2;
    return coder.TryEncode(c->source.data(), c->m, a, scratch, out);
  }
  StreamEncodeArgs a = c->enc;
  if (c->coder == Coder::kRans2Carry) a.carry = c->source.data();
  return coder.TryEncode(c->s, c->m, a, scratch, out);
}

// Decodes payload into out (c->m bytes, with a guard byte after them).
Status Decode(Case* c, const std::string& carrier, const std::string& payload,
              std::vector<uint8_t>* out) {
  CoderDecodeScratch scratch;
  out->assign(c->m + 1, 0xa5);
  const uint8_t* decoded[1] = {c->source.data()};
  c->dec.decoded = decoded;
  if (c->coder == Coder::kBitsTail) {
    std::vector<uint8_t> s0(c->m);
    PSTORE_RETURN_IF_ERROR(
        CoderFor(Coder::kRans2Carry).Decode(carrier, c->m, s0.data(), c->dec, &scratch));
  }
  return CoderFor(c->coder).Decode(payload, c->m, out->data(), c->dec, &scratch);
}

TEST(CoderConformance, EveryIdHasItsCoder) {
  for (int id = 0; id <= 255; id++) {
    const StreamCoder* c = CoderFor(uint8_t(id));
    if (id > kMaxCoderId) {
      EXPECT_EQ(c, nullptr) << id;
      continue;
    }
    ASSERT_NE(c, nullptr) << id;
    EXPECT_EQ(int(c->id()), id);
    EXPECT_NE(c->name(), "?") << id;
  }
}

TEST(CoderConformance, EveryCoderOnEveryInput) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs = {
      {"empty", {}},
      {"one byte", {7}},
      {"incompressible", Random(100000, 1)},
      {"long", Peaked(3 << 20, 2)},
      {"constant", std::vector<uint8_t>(5000, 0x42)},
  };
  std::mt19937 rng(5);
  for (int id = 0; id <= kMaxCoderId; id++) {
    int taken = 0;
    for (auto& [what, bytes] : inputs) {
      Case c;
      c.coder = Coder(id);
      c.s = bytes.data();
      c.m = bytes.size();
      Prepare(&c);
      CoderEncodeScratch scratch;
      std::string carrier, payload;
      if (!Encode(&c, &scratch, &carrier, &payload)) continue;
      taken++;
      const std::vector<uint8_t>& want = c.coder == Coder::kBitsTail ? c.source : bytes;
      std::vector<uint8_t> out;
      Status s = Decode(&c, carrier, payload, &out);
      ASSERT_TRUE(s.ok()) << CoderName(c.coder) << " " << what << ": " << s.ToString();
      EXPECT_TRUE(std::equal(want.begin(), want.end(), out.begin()))
          << CoderName(c.coder) << " " << what;
      EXPECT_EQ(out.back(), 0xa5) << CoderName(c.coder) << " wrote past the stream";
      if (c.m == 0) continue;
      // Truncated: always an error.
      if (!payload.empty()) {
        Status t = Decode(&c, carrier, payload.substr(0, payload.size() - 1), &out);
        EXPECT_TRUE(t.IsCorruption()) << CoderName(c.coder) << " " << what << ": " << t.ToString();
      }
      // Flipped bytes: an error or other bytes, within the stream.
      for (int trial = 0; trial < 40 && !payload.empty(); trial++) {
        std::string bad = payload;
        bad[rng() % bad.size()] ^= char(1 << (rng() % 8));
        Status f = Decode(&c, carrier, bad, &out);
        EXPECT_TRUE(f.ok() || f.IsCorruption()) << f.ToString();
        EXPECT_EQ(out.back(), 0xa5) << CoderName(c.coder) << " wrote past the stream";
      }
    }
    // Every coder the encoder writes takes some of these inputs; the
    // first-format rANS coders (read only) take none.
    if (Coder(id) == Coder::kRans || Coder(id) == Coder::kRansCtx)
      EXPECT_EQ(taken, 0) << CoderName(Coder(id));
    else
      EXPECT_GT(taken, 0) << CoderName(Coder(id));
  }
}

TEST(CoderConformance, GarbageNeverCrashesADecoder) {
  std::mt19937 rng(9);
  for (int id = 0; id <= kMaxCoderId; id++)
    for (size_t len : {size_t(0), size_t(1), size_t(3), size_t(40), size_t(700)})
      for (size_t m : {size_t(1), size_t(100), size_t(5000)}) {
        Case c;
        c.coder = Coder(id);
        std::vector<uint8_t> zeros(m);
        c.s = zeros.data();
        c.m = m;
        Prepare(&c);
        std::string garbage(len, '\0');
        for (auto& ch : garbage) ch = char(rng());
        std::vector<uint8_t> out;
        Status s = Decode(&c, garbage, garbage, &out);
        EXPECT_TRUE(s.ok() || s.IsCorruption()) << CoderName(c.coder) << ": " << s.ToString();
        EXPECT_EQ(out.back(), 0xa5) << CoderName(c.coder) << " wrote past the stream";
      }
}

}  // namespace
}  // namespace pstore
