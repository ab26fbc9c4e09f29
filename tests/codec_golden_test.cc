// The frames the encoder writes must not change without a new format version:
// every profile over a fixed set of inputs (weight-like floats of each dtype,
// quantised integers, few-valued, repetitive, constant, incompressible and
// short chunks) is encoded, and the XXH3-128 of all the frames is compared to
// the value recorded when those frames were last known good. A change of
// coder choice, table layout, lane count or header byte changes the digest.
// Every frame also decodes back to its input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "common/coding.h"
#include "tests/quant_blocks.h"

namespace pstore {
namespace {

// Normal values of the given scale in dtype t (integers: scaled to +-127).
std::vector<uint8_t> Normal(DType t, size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<uint8_t> v(n);
  const size_t w = DTypeSize(t);
  for (size_t i = 0; i + w <= n; i += w) {
    const float f = nd(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    switch (t) {
      case DType::kF32:
        std::memcpy(&v[i], &bits, 4);
        break;
      case DType::kBF16: {
        const uint16_t h = uint16_t(bits >> 16);
        std::memcpy(&v[i], &h, 2);
        break;
      }
      case DType::kF16: {
        const _Float16 h = _Float16(f);
        std::memcpy(&v[i], &h, 2);
        break;
      }
      case DType::kF64: {
        const double d = f;
        std::memcpy(&v[i], &d, 8);
        break;
      }
      default:
        v[i] = uint8_t(int(std::lround(f * 127 / (4 * scale))));
    }
  }
  for (size_t i = n - n % w; i < n; i++) v[i] = uint8_t(rng());
  return v;
}

struct Input {
  DType dtype;
  std::vector<uint8_t> bytes;
};

std::vector<Input> Inputs() {
  std::vector<Input> in;
  std::mt19937 rng(7);
  for (DType t : {DType::kBF16, DType::kF32, DType::kF16, DType::kF64, DType::kF8_E4M3,
                  DType::kF8_E5M2, DType::kI8, DType::kI32, DType::kU8})
    for (size_t n : {size_t(1) << 18, size_t(4099)})
      for (float scale : {0.02f, 3.0f})
        in.push_back({t, Normal(t, n, scale, uint32_t(n) ^ uint32_t(t))});
  // F16 weights quantised to 64 levels: the low byte depends on the exponent.
  std::vector<uint8_t> quant(1 << 18);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (size_t i = 0; i + 2 <= quant.size(); i += 2) {
    const _Float16 h = _Float16(std::round(std::clamp(nd(rng) * 8.f, -31.f, 31.f)) * 0.05f / 8);
    std::memcpy(&quant[i], &h, 2);
  }
  in.push_back({DType::kF16, quant});
  std::vector<uint8_t> few(200000), rep(150000), uni(300000), cst(70000, 0x3c);
  for (auto& b : few) b = uint8_t(rng() % 11);
  for (size_t i = 0; i < rep.size(); i++) rep[i] = uint8_t(i % 997 < 500 ? rng() % 7 : i % 251);
  std::vector<uint8_t> pattern(1000);
  for (auto& b : pattern) b = uint8_t(rng());
  for (size_t i = 0; i < rep.size(); i++)
    if (i % 3000 >= 1000) rep[i] = pattern[i % 1000];
  for (auto& b : uni) b = uint8_t(rng());
  for (DType t : {DType::kU8, DType::kBF16}) {
    in.push_back({t, few});
    in.push_back({t, rep});
    in.push_back({t, uni});
    in.push_back({t, cst});
  }
  for (size_t n : {0, 1, 2, 3, 17, 64, 255}) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(rng() % 5);
    in.push_back({DType::kBF16, v});
  }
  return in;
}

TEST(CodecGolden, FramesAreTheBytesRecordedForEachProfile) {
  const std::vector<Input> inputs = Inputs();
  // Per profile, recorded from the encoder; a change here is a format change.
  const struct {
    Profile profile;
    const char* digest;
  } kExpected[] = {
      {Profile::kRaw, "e8e0a6d0ce913b3ce4b3d3a0d7e76f28"},
      {Profile::kLz4, "f22517c00579561591f7f6f01519d746"},
      {Profile::kZstd, "700b348c07fb5b776abb46d7e9df04b7"},
      {Profile::kFast, "f02a839aa09699b417e0eee7936e84a7"},
      {Profile::kDense, "699c9b0fefa0df62a08246ea31ca674f"},
  };
  ChunkDecoder dec;
  std::set<Coder> used;
  for (const auto& e : kExpected) {
    EncodeOptions opt;
    opt.profile = e.profile;
    ChunkEncoder enc(opt);
    std::string all, frame;
    for (const Input& in : inputs) {
      enc.Encode(in.bytes, in.dtype, &frame);
      PutVarint(&all, frame.size());
      all += frame;
      auto info = InspectFrame(frame, in.bytes.size());
      ASSERT_TRUE(info.ok()) << info.status().ToString();
      used.insert(info->coders.begin(), info->coders.end());
      std::vector<uint8_t> out(in.bytes.size());
      Status s = dec.Decode(frame, HashBytes(in.bytes.data(), in.bytes.size()), out);
      ASSERT_TRUE(s.ok()) << s.ToString() << " " << ProfileName(e.profile) << " "
                          << DTypeName(in.dtype) << " " << in.bytes.size();
    }
    EXPECT_EQ(HashBytes(all.data(), all.size()).Hex(), e.digest)
        << "profile " << ProfileName(e.profile) << ", " << all.size() << " bytes of frames";
  }
  // The inputs reach every coder the encoder writes.
  for (Coder c : {Coder::kRaw, Coder::kConst, Coder::kLz4, Coder::kZstd, Coder::kRans2,
                  Coder::kRans2Ctx, Coder::kBits, Coder::kRans2Carry, Coder::kBitsTail})
    EXPECT_TRUE(used.count(c)) << CoderName(c) << " is not covered";
}

// The block transform's frames: Q8_0 and Q4_0 blocks of weight-like values,
// chunks starting at a block boundary and inside a block, a chunk of no whole
// block, and all-zero blocks.
TEST(CodecGolden, BlockFramesAreTheBytesRecordedForEachProfile) {
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> x(32 * 3000);
  for (float& f : x) f = nd(rng);
  const std::vector<uint8_t> q8 = quant::QuantQ8_0(x), q4 = quant::QuantQ4_0(x);
  struct BlockInput {
    std::vector<uint8_t> bytes;
    BlockParams block;
  };
  const BlockLayout k8{34, 0, 1}, k4{18, 0, 1};
  const std::vector<BlockInput> inputs = {
      {q8, {k8, 0}},
      {std::vector<uint8_t>(q8.begin() + 30, q8.begin() + 70030), {k8, 30}},
      {q4, {k4, 0}},
      {std::vector<uint8_t>(q4.begin() + 7, q4.end()), {k4, 7}},
      {std::vector<uint8_t>(q8.begin() + 1, q8.begin() + 20), {k8, 1}},
      {std::vector<uint8_t>(34 * 100, 0), {k8, 0}},
  };
  const struct {
    Profile profile;
    const char* digest;
  } kExpected[] = {
      {Profile::kRaw, "1713ad28f36ec7b5649ec64a3d66b622"},
      {Profile::kLz4, "8fb6c688d49b532da44ff9bfb79db900"},
      {Profile::kZstd, "0177f6b9ddef8fdb66714af79e2584f7"},
      {Profile::kFast, "db366ade0be4f67d9ba417268bfafe73"},
      {Profile::kDense, "db366ade0be4f67d9ba417268bfafe73"},
  };
  ChunkDecoder dec;
  for (const auto& e : kExpected) {
    EncodeOptions opt;
    opt.profile = e.profile;
    ChunkEncoder enc(opt);
    std::string all, frame;
    for (const BlockInput& in : inputs) {
      enc.Encode(in.bytes, ChunkType{DType::kU8, in.block}, &frame);
      PutVarint(&all, frame.size());
      all += frame;
      std::vector<uint8_t> out(in.bytes.size());
      Status s = dec.Decode(frame, HashBytes(in.bytes.data(), in.bytes.size()), out);
      ASSERT_TRUE(s.ok()) << s.ToString() << " " << ProfileName(e.profile);
    }
    EXPECT_EQ(HashBytes(all.data(), all.size()).Hex(), e.digest)
        << "profile " << ProfileName(e.profile) << ", " << all.size() << " bytes of frames";
  }
}

}  // namespace
}  // namespace pstore
