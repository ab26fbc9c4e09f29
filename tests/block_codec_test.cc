// The block transform (codec/block_transform.h) through the chunk codec:
// quantized blocks at every phase, length and profile round-trip, frames say
// their layout, damaged layouts are corruption errors.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "tests/quant_blocks.h"
#include "tests/test_bytes.h"

namespace pstore {
namespace {

constexpr BlockLayout kQ8_0{34, 0, 1}, kQ4_0{18, 0, 1}, kQ4K{144, 0, 2}, kQ6K{210, 208, 1};
const Profile kAllProfiles[] = {Profile::kRaw, Profile::kLz4, Profile::kZstd, Profile::kFast,
                                Profile::kDense};

// Weight-like floats quantized into Q8_0 or Q4_0 blocks: about n bytes of them.
std::vector<uint8_t> QuantizedWeights(const BlockLayout& l, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> x((n / l.bytes + 1) * 32);
  for (float& f : x) f = nd(rng);
  auto q = l.bytes == kQ4_0.bytes ? quant::QuantQ4_0(x) : quant::QuantQ8_0(x);
  q.resize(n);
  return q;
}

TEST(BlockCodec, RoundTripsEveryLayoutPhaseLengthAndProfile) {
  ChunkDecoder dec;
  for (const BlockLayout& l : {kQ8_0, kQ4_0, kQ4K, kQ6K}) {
    for (uint32_t phase : {0u, 1u, 17u, l.bytes - 1}) {
      for (size_t n : {size_t(0), size_t(1), size_t(l.bytes - 1), size_t(l.bytes),
                       size_t(3 * l.bytes + 5), size_t(70000)}) {
        auto raw = QuantizedWeights(l.bytes == kQ4_0.bytes ? kQ4_0 : kQ8_0, n, uint32_t(n + phase));
        const ChunkType type{DType::kU8, {l, phase}};
        uint64_t lens[kMaxStreams];
        BlockStreamLengths(type.block, n, lens);
        for (Profile p : kAllProfiles) {
          SCOPED_TRACE(std::to_string(l.bytes) + " bytes, phase " + std::to_string(phase) +
                       ", length " + std::to_string(n) + ", " + std::string(ProfileName(p)));
          const std::string frame = EncodeWith(raw, type, p);
          auto info = InspectFrame(frame, n);
          ASSERT_TRUE(info.ok()) << info.status().ToString();
          const bool split = p != Profile::kRaw && lens[0] > 0;
          EXPECT_EQ(info->transform, split ? Transform::kBlockScales : Transform::kNone);
          if (split) {
            EXPECT_EQ(info->block.layout.bytes, l.bytes);
            EXPECT_EQ(info->block.layout.scale_offset, l.scale_offset);
            EXPECT_EQ(info->block.layout.scales, l.scales);
            EXPECT_EQ(info->block.phase, phase);
          }
          std::vector<uint8_t> out(n);
          Status s = dec.Decode(frame, HashBytes(raw.data(), n), out);
          ASSERT_TRUE(s.ok()) << s.ToString();
          EXPECT_EQ(out, raw);
        }
      }
    }
  }
}

TEST(BlockCodec, SplitPutsEachScaleInTheScaleStreams) {
  // Blocks whose scale bytes are 0xA0 + block and whose other bytes are 7:
  // the scale streams hold only scale bytes, the rest stream only 7s.
  const BlockParams b{kQ6K, 0};
  std::vector<uint8_t> raw(3 * kQ6K.bytes, 7);
  for (int i = 0; i < 3; i++) {
    raw[i * kQ6K.bytes + 208] = uint8_t(0xA0 + i);
    raw[i * kQ6K.bytes + 209] = uint8_t(0xB0 + i);
  }
  uint64_t lens[kMaxStreams];
  BlockStreamLengths(b, raw.size(), lens);
  ASSERT_EQ(lens[0], 3u);
  ASSERT_EQ(lens[2], raw.size() - 6);
  std::vector<uint8_t> hi(3), lo(3), rest(static_cast<size_t>(lens[2]));
  uint8_t* s[3] = {hi.data(), lo.data(), rest.data()};
  SplitBlocks(b, raw.data(), raw.size(), s);
  EXPECT_EQ(hi, (std::vector<uint8_t>{0xB0, 0xB1, 0xB2}));
  EXPECT_EQ(lo, (std::vector<uint8_t>{0xA0, 0xA1, 0xA2}));
  EXPECT_EQ(rest, std::vector<uint8_t>(rest.size(), 7));
}

TEST(BlockCodec, QuantsAreStoredRawOrLz4AndScalesCoded) {
  // Every profile but raw: the quants go raw or LZ4 (both decode faster than
  // a file reads; no entropy coder), the
  // scales' high bytes (sign and exponent) are coded below their size (by an
  // entropy coder: LZ4, which finds only repeats, may leave them raw).
  for (const BlockLayout& l : {kQ8_0, kQ4_0}) {
    auto raw = QuantizedWeights(l, 256 << 10, 3);
    const ChunkType type{DType::kU8, {l, 0}};
    uint64_t lens[kMaxStreams];
    BlockStreamLengths(type.block, raw.size(), lens);
    for (Profile p : {Profile::kLz4, Profile::kZstd, Profile::kFast, Profile::kDense}) {
      auto info = InspectFrame(EncodeWith(raw, type, p), raw.size());
      ASSERT_TRUE(info.ok());
      ASSERT_EQ(info->coders.size(), 3u);
      EXPECT_TRUE(info->coders[2] == Coder::kRaw || info->coders[2] == Coder::kLz4)
          << ProfileName(p) << ": " << CoderName(info->coders[2]);
      EXPECT_LE(info->stream_bytes[2], lens[2]);
      if (p != Profile::kLz4) {
        EXPECT_LT(info->stream_bytes[0], lens[0] * 3 / 4) << ProfileName(p);
      }
    }
  }
}

TEST(BlockCodec, DamagedLayoutsAreCorruption) {
  auto raw = QuantizedWeights(kQ8_0, 5000, 9);
  const std::string good = EncodeWith(raw, ChunkType{DType::kU8, {kQ8_0, 0}}, Profile::kDense);
  // Byte 0: version and transform; then the block bytes (34, one varint
  // byte), the scale offset, the scale count, the phase.
  ASSERT_EQ(uint8_t(good[0]), uint8_t(kFrameVersion | uint8_t(Transform::kBlockScales) << 4));
  ASSERT_EQ(good.substr(1, 4), std::string("\x22\x00\x01\x00", 4));
  ChunkDecoder dec;
  std::vector<uint8_t> out(raw.size());
  const ChunkKey key = HashBytes(raw.data(), raw.size());
  struct Damage {
    size_t at;
    uint8_t value;
  };
  for (Damage d : {Damage{1, 0}, Damage{1, 1}, Damage{2, 33}, Damage{3, 0}, Damage{3, 18},
                   Damage{4, 34}, Damage{1, 0x80}}) {
    std::string bad = good;
    bad[d.at] = char(d.value);
    Status s = dec.Decode(bad, key, out);
    EXPECT_TRUE(s.IsCorruption()) << "byte " << d.at << " = " << int(d.value) << ": "
                                  << s.ToString();
  }
  // A block that is all scales (2 bytes, one scale at 0) leaves no quant
  // bytes: refused as a layout, never decoded (a fresh decoder has no
  // buffer for the empty rest stream).
  {
    const std::string all_scales("\xd4\x02\x00\x01\x00\x00\x01\x78\x78\x7a", 10);
    ChunkDecoder fresh;
    std::vector<uint8_t> two(2);
    Status s = fresh.Decode(all_scales, HashBytes(two.data(), two.size()), two);
    EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  }
  // Only version 4 has the transform.
  std::string v3 = good;
  v3[0] = char(kFrameVersion3);
  v3.insert(1, 1, char(Transform::kBlockScales));
  EXPECT_TRUE(dec.Decode(v3, key, out).IsCorruption());
}

TEST(BlockCodec, FlippedBytesNeverYieldWrongBytes) {
  auto raw = QuantizedWeights(kQ4_0, 20000, 11);
  const ChunkKey key = HashBytes(raw.data(), raw.size());
  ChunkDecoder dec;
  std::vector<uint8_t> out(raw.size());
  for (Profile p : {Profile::kFast, Profile::kDense, Profile::kZstd}) {
    const std::string good = EncodeWith(raw, ChunkType{DType::kU8, {kQ4_0, 5}}, p);
    for (size_t at = 0; at < good.size(); at += 1 + good.size() / 97) {
      std::string bad = good;
      bad[at] = char(bad[at] ^ 0x10);
      Status s = dec.Decode(bad, key, out);
      if (s.ok()) {
        EXPECT_EQ(out, raw);
      }
    }
  }
}

}  // namespace
}  // namespace pstore
