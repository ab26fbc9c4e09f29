#include "codec/chunk_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace pstore {
namespace {

const DType kAllTypes[] = {DType::kBool, DType::kU8,   DType::kI8,  DType::kF8_E5M2,
                           DType::kF8_E4M3, DType::kI16, DType::kU16, DType::kF16,
                           DType::kBF16, DType::kI32,  DType::kU32, DType::kF32,
                           DType::kF64,  DType::kI64,  DType::kU64};
const Profile kAllProfiles[] = {Profile::kRaw, Profile::kLz4, Profile::kZstd, Profile::kFast,
                                Profile::kDense};

// Weight-like bytes for dtype: normal values around 0 with a given scale.
std::vector<uint8_t> WeightLike(DType t, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<uint8_t> v(n);
  size_t w = DTypeSize(t);
  for (size_t i = 0; i + w <= n; i += w) {
    float f = nd(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    switch (t) {
      case DType::kF32: std::memcpy(&v[i], &bits, 4); break;
      case DType::kBF16: {
        uint16_t h = uint16_t(bits >> 16);
        std::memcpy(&v[i], &h, 2);
        break;
      }
      case DType::kF16: {
        _Float16 h = _Float16(f);
        std::memcpy(&v[i], &h, 2);
        break;
      }
      case DType::kF64: {
        double d = f;
        std::memcpy(&v[i], &d, 8);
        break;
      }
      default:
        for (size_t k = 0; k < w; k++) v[i + k] = uint8_t(k == 0 ? int(f * 400) : 0);
    }
  }
  for (size_t i = n - n % w; i < n; i++) v[i] = uint8_t(rng());
  return v;
}

std::vector<uint8_t> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

void ExpectRoundTrip(const std::vector<uint8_t>& raw, DType t, Profile p) {
  EncodeOptions opt;
  opt.profile = p;
  ChunkEncoder enc(opt);
  ChunkDecoder dec;
  std::string frame;
  enc.Encode(raw, t, &frame);
  std::vector<uint8_t> out(raw.size(), 0xee);
  Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
  ASSERT_TRUE(s.ok()) << s.ToString() << " dtype " << DTypeName(t) << " profile "
                      << ProfileName(p) << " len " << raw.size();
  ASSERT_EQ(out, raw) << DTypeName(t) << " " << ProfileName(p) << " " << raw.size();
}

TEST(ChunkCodec, RoundTripsEveryDtypeProfileAndAwkwardLength) {
  for (DType t : kAllTypes)
    for (Profile p : kAllProfiles)
      for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(64), size_t(1001),
                       size_t(4096), size_t(65537), size_t(262144), size_t(300000)}) {
        ExpectRoundTrip(WeightLike(t, n, uint32_t(n)), t, p);
      }
}

TEST(ChunkCodec, RoundTripsIncompressibleAndConstantChunks) {
  for (DType t : kAllTypes)
    for (Profile p : kAllProfiles) {
      ExpectRoundTrip(Random(200000, 1), t, p);
      ExpectRoundTrip(std::vector<uint8_t>(131072, 0), t, p);
      ExpectRoundTrip(std::vector<uint8_t>(131072, 0xff), t, p);
    }
}

TEST(ChunkCodec, RoundTripsSpecialFloatValues) {
  std::vector<float> f32 = {0.f, -0.f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f,
                            1e-40f, 3.4e38f, -3.4e38f, 1.f, -1.f};
  std::vector<uint8_t> raw;
  for (int rep = 0; rep < 5000; rep++)
    for (float f : f32) {
      uint8_t b[4];
      std::memcpy(b, &f, 4);
      raw.insert(raw.end(), b, b + 4);
    }
  uint32_t nan_payload = 0x7fc12345u;  // a NaN with a payload must survive bit for bit
  raw.insert(raw.end(), reinterpret_cast<uint8_t*>(&nan_payload),
             reinterpret_cast<uint8_t*>(&nan_payload) + 4);
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8_E4M3, DType::kF8_E5M2})
    for (Profile p : kAllProfiles) ExpectRoundTrip(raw, t, p);
}

TEST(ChunkCodec, EveryEightBitFloatValueRoundTrips) {
  std::vector<uint8_t> raw;
  for (int rep = 0; rep < 300; rep++)
    for (int b = 0; b < 256; b++) raw.push_back(uint8_t(b));
  for (DType t : {DType::kF8_E4M3, DType::kF8_E5M2})
    for (Profile p : kAllProfiles) ExpectRoundTrip(raw, t, p);
}

TEST(ChunkCodec, DenseShrinksWeightLikeData) {
  auto raw = WeightLike(DType::kBF16, 1 << 20, 9);
  ChunkEncoder enc(EncodeOptions{});
  std::string frame;
  enc.Encode(raw, DType::kBF16, &frame);
  EXPECT_LT(frame.size(), raw.size() * 3 / 4);
  auto info = InspectFrame(frame);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, kFrameVersion);
  EXPECT_TRUE(info->transform == Transform::kBF16 || info->transform == Transform::kBF16X);
  EXPECT_EQ(info->raw_len, raw.size());
}

TEST(ChunkCodec, IncompressibleStreamsAreStoredRaw) {
  auto raw = Random(100000, 5);
  ChunkEncoder enc(EncodeOptions{});
  std::string frame;
  enc.Encode(raw, DType::kU8, &frame);
  EXPECT_LE(frame.size(), raw.size() + 16);
  EXPECT_EQ(InspectFrame(frame)->coders[0], Coder::kRaw);
}

TEST(ChunkCodec, VersionOneFramesStayReadable) {
  ChunkEncoder enc(EncodeOptions{});
  ChunkDecoder dec;
  for (DType t : {DType::kF16, DType::kF32, DType::kU8, DType::kBF16})
    for (Coder c : {Coder::kRaw, Coder::kLz4, Coder::kZstd}) {
      auto raw = WeightLike(t, 100000, 2);
      std::string frame;
      enc.EncodeV1ForTesting(raw, t, c, &frame);
      EXPECT_EQ(InspectFrame(frame)->version, kFrameVersion1);
      std::vector<uint8_t> out(raw.size());
      ASSERT_TRUE(dec.Decode(frame, HashBytes(raw.data(), raw.size()), out).ok());
      EXPECT_EQ(out, raw);
    }
}

TEST(ChunkCodec, WrongKeyIsCorruption) {
  auto raw = WeightLike(DType::kF16, 5000, 3);
  ChunkEncoder enc(EncodeOptions{});
  ChunkDecoder dec;
  std::string frame;
  enc.Encode(raw, DType::kF16, &frame);
  std::vector<uint8_t> out(raw.size());
  ChunkKey wrong = HashBytes(raw.data(), raw.size() - 1);
  Status s = dec.Decode(frame, wrong, out);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST(ChunkCodec, WrongExpectedLengthIsCorruption) {
  auto raw = WeightLike(DType::kF16, 5000, 3);
  ChunkEncoder enc(EncodeOptions{});
  ChunkDecoder dec;
  std::string frame;
  enc.Encode(raw, DType::kF16, &frame);
  std::vector<uint8_t> out(raw.size() + 2);
  EXPECT_TRUE(dec.Decode(frame, HashBytes(raw.data(), raw.size()), out).IsCorruption());
}

// Every single-byte change and every truncation of a frame either fails to
// decode or, through the hash check, is reported as corruption: never the
// wrong bytes, never a crash.
TEST(ChunkCodec, CorruptedFramesNeverYieldWrongBytes) {
  for (Profile p : kAllProfiles)
    for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kU8}) {
      auto raw = WeightLike(t, 40000, 11);
      EncodeOptions opt;
      opt.profile = p;
      ChunkEncoder enc(opt);
      ChunkDecoder dec;
      std::string frame;
      enc.Encode(raw, t, &frame);
      ChunkKey key = HashBytes(raw.data(), raw.size());
      std::vector<uint8_t> out(raw.size());
      std::mt19937 rng(1);
      for (int trial = 0; trial < 300; trial++) {
        std::string bad = frame;
        size_t at = rng() % bad.size();
        bad[at] = char(bad[at] ^ (1 + rng() % 255));
        EXPECT_FALSE(dec.Decode(bad, key, out).ok()) << "flip at " << at;
      }
      for (size_t cut = 0; cut < frame.size(); cut += 1 + frame.size() / 50)
        EXPECT_FALSE(dec.Decode(frame.substr(0, cut), key, out).ok());
    }
}

TEST(ChunkCodec, GarbageFramesAreRejectedWithoutCrashing) {
  ChunkDecoder dec;
  std::vector<uint8_t> out(1000);
  for (uint32_t seed = 0; seed < 2000; seed++) {
    auto g = Random(1 + seed % 300, seed);
    if (!g.empty()) g[0] = uint8_t(1 + seed % 2);  // a valid version byte, garbage after
    std::string frame(g.begin(), g.end());
    (void)dec.DecodeUnchecked(frame, out);
  }
}

TEST(ChunkCodec, ProfilesAndCodersHaveStableNames) {
  for (Profile p : kAllProfiles) EXPECT_EQ(ProfileFromName(ProfileName(p)), p);
  EXPECT_EQ(ProfileFromName("nope"), std::nullopt);
  EXPECT_EQ(CoderName(Coder::kRansCtx), "rans-ctx");
}

}  // namespace
}  // namespace pstore
