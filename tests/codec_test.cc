#include "codec/chunk_codec.h"

#include "codec/bitpack.h"
#include "codec/rans2.h"
#include "common/coding.h"
#include "tests/legacy_frames.h"
#include "tests/legacy_rans_encoder.h"
#include "tests/test_bytes.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

// Clang says it sanitizes through __has_feature, not GCC's __SANITIZE_* macros.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define PSTORE_CLANG_SANITIZER 1
#endif
#endif
#ifndef PSTORE_CLANG_SANITIZER
#define PSTORE_CLANG_SANITIZER 0
#endif

namespace pstore {
namespace {

const DType kAllTypes[] = {DType::kBool, DType::kU8,  DType::kI8,  DType::kF8_E5M2, DType::kF8_E4M3,
                           DType::kI16,  DType::kU16, DType::kF16, DType::kBF16,    DType::kI32,
                           DType::kU32,  DType::kF32, DType::kF64, DType::kI64,     DType::kU64};
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
      case DType::kF32:
        std::memcpy(&v[i], &bits, 4);
        break;
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

// raw's frame with profile p.
std::string EncodeWith(const std::vector<uint8_t>& raw, DType t, Profile p) {
  return EncodeWith(raw, ChunkType{t, {}}, p);
}

// frame (of any version) decodes to raw.
void ExpectDecodesTo(const std::string& frame, const std::vector<uint8_t>& raw) {
  ChunkDecoder dec;
  std::vector<uint8_t> out(raw.size());
  Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, raw);
}

void ExpectRoundTrip(const std::vector<uint8_t>& raw, DType t, Profile p) {
  ChunkDecoder dec;
  std::string frame = EncodeWith(raw, t, p);
  std::vector<uint8_t> out(raw.size(), 0xee);
  Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
  ASSERT_TRUE(s.ok()) << s.ToString() << " dtype " << DTypeName(t) << " profile " << ProfileName(p)
                      << " len " << raw.size();
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

TEST(ChunkCodec, NoFrameIsLongerThanMaxFrameBytes) {
  // Incompressible bytes give every version its longest frame.
  for (size_t n :
       {size_t(0), size_t(1), size_t(4096), size_t(65536), size_t(1) << 20, size_t(4) << 20}) {
    const std::vector<uint8_t> raw = Random(n, uint32_t(n + 7));
    for (DType t : {DType::kU8, DType::kBF16, DType::kF32, DType::kF64}) {
      for (Profile p : kAllProfiles) {
        EXPECT_LE(EncodeWith(raw, t, p).size(), MaxFrameBytes(n))
            << DTypeName(t) << " " << ProfileName(p) << " " << n;
      }
      for (Coder c : {Coder::kRaw, Coder::kLz4, Coder::kZstd}) {
        EXPECT_LE(EncodeVersion1Frame(raw, t, c).size(), MaxFrameBytes(n))
            << "version 1, " << DTypeName(t) << " " << n;
      }
    }
  }
  EXPECT_LT(MaxFrameBytes(4u << 20), (4u << 20) + (64u << 10));
}

TEST(ChunkCodec, RoundTripsSpecialFloatValues) {
  std::vector<float> f32 = {0.f,     -0.f,   INFINITY, -INFINITY, NAN, -NAN, 1e-45f,
                            -1e-45f, 1e-40f, 3.4e38f,  -3.4e38f,  1.f, -1.f};
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
  EXPECT_FALSE(InspectFrame(frame).ok());  // version 4 needs the raw length
  auto info = InspectFrame(frame, raw.size());
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
  EXPECT_EQ(InspectFrame(frame, raw.size())->coders[0], Coder::kRaw);
}

TEST(ChunkCodec, VersionOneFramesStayReadable) {
  ChunkDecoder dec;
  for (DType t : {DType::kF16, DType::kF32, DType::kU8, DType::kBF16})
    for (Coder c : {Coder::kRaw, Coder::kLz4, Coder::kZstd}) {
      auto raw = WeightLike(t, 100000, 2);
      std::string frame = EncodeVersion1Frame(raw, t, c);
      EXPECT_EQ(InspectFrame(frame)->version, kFrameVersion1);
      std::vector<uint8_t> out(raw.size());
      ASSERT_TRUE(dec.Decode(frame, HashBytes(raw.data(), raw.size()), out).ok());
      EXPECT_EQ(out, raw);
    }
}

// The same streams under a version-2 header (every coder and length written).
std::string ToVersion2(const std::string& v4, size_t raw_len) {
  auto info = InspectFrame(v4, raw_len);
  EXPECT_TRUE(info.ok());
  size_t payload_bytes = 0;
  for (uint64_t b : info->stream_bytes) payload_bytes += b;
  std::string v2;
  v2.push_back(char(kFrameVersion2));
  v2.push_back(char(info->transform));
  PutVarint(&v2, info->raw_len);
  for (size_t j = 0; j < info->coders.size(); j++) {
    v2.push_back(char(info->coders[j]));
    PutVarint(&v2, info->stream_bytes[j]);
  }
  v2.append(v4, v4.size() - payload_bytes, payload_bytes);
  return v2;
}

// The same frame under a version-3 header: version and transform bytes and the
// raw length, then the same coders, lengths and payloads.
std::string ToVersion3(const std::string& v4, size_t raw_len) {
  EXPECT_EQ(uint8_t(v4[0]) & 15, kFrameVersion);
  std::string v3;
  v3.push_back(char(kFrameVersion3));
  v3.push_back(char(uint8_t(v4[0]) >> 4));
  PutVarint(&v3, raw_len);
  v3.append(v4, 1, std::string::npos);
  return v3;
}

TEST(ChunkCodec, VersionThreeFramesStayReadable) {
  for (Profile p : kAllProfiles)
    for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kU8, DType::kF8_E4M3})
      for (size_t n : {size_t(0), size_t(60), size_t(70000)}) {
        auto raw = WeightLike(t, n, 6);
        std::string frame = EncodeWith(raw, t, p);
        auto info = InspectFrame(frame, raw.size());
        ASSERT_TRUE(info.ok());
        if (HasWindowBias(info->transform)) continue;  // not in version 3
        std::string v3 = ToVersion3(frame, raw.size());
        EXPECT_EQ(InspectFrame(v3)->version, kFrameVersion3);
        EXPECT_EQ(InspectFrame(v3)->raw_len, raw.size());
        ExpectDecodesTo(v3, raw);
        EXPECT_LT(frame.size(), v3.size());
      }
}

TEST(ChunkCodec, WindowedTransformsRoundTripAndStayInVersionFour) {
  // Exponents 60..100 for BF16 and F32: outside the fixed window, within a
  // shifted one.
  for (DType t : {DType::kBF16, DType::kF32}) {
    auto raw = WeightLike(t, 30000 * DTypeSize(t), 14);
    const size_t w = DTypeSize(t);
    for (size_t i = 0; i < raw.size(); i += 97 * w) {
      float tiny = std::ldexp(1.0f, -60);  // exponent 67
      uint32_t bits;
      std::memcpy(&bits, &tiny, 4);
      if (w == 4)
        std::memcpy(&raw[i], &bits, 4);
      else {
        uint16_t h = uint16_t(bits >> 16);
        std::memcpy(&raw[i], &h, 2);
      }
    }
    ChunkEncoder enc(EncodeOptions{});
    std::string frame;
    enc.Encode(raw, t, &frame);
    auto info = InspectFrame(frame, raw.size());
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->transform, w == 4 ? Transform::kF32W : Transform::kBF16W);
    EXPECT_EQ(info->window_bias, 66);
    ExpectRoundTrip(raw, t, Profile::kDense);
    ExpectRoundTrip(raw, t, Profile::kFast);  // fast keeps the plain split
    ChunkDecoder dec;
    ChunkKey key = HashBytes(raw.data(), raw.size());
    std::vector<uint8_t> out(raw.size());
    // A bias past 192 is rejected; any other bias decodes to other bytes.
    std::string bad = frame;
    bad[1] = char(193);
    EXPECT_TRUE(dec.Decode(bad, key, out).IsCorruption());
    bad[1] = char(65);
    EXPECT_TRUE(dec.Decode(bad, key, out).IsCorruption());
    // Version 3 cannot hold a windowed transform.
    std::string v3 = ToVersion3(frame, raw.size());
    EXPECT_TRUE(dec.Decode(v3, key, out).IsCorruption());
  }
}

TEST(ChunkCodec, VersionTwoFramesStayReadable) {
  for (Profile p : kAllProfiles)
    for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kU8, DType::kF8_E4M3}) {
      auto raw = WeightLike(t, 70000, 5);
      std::string frame = EncodeWith(raw, t, p);
      EXPECT_EQ(InspectFrame(frame, raw.size())->version, kFrameVersion);
      std::string v2 = ToVersion2(frame, raw.size());
      EXPECT_EQ(InspectFrame(v2)->version, kFrameVersion2);
      ExpectDecodesTo(v2, raw);
      EXPECT_LE(frame.size(), v2.size());
    }
}

TEST(ChunkCodec, VersionFourHeaderRejectsStrayCoderNibbles) {
  auto raw = WeightLike(DType::kU8, 1000, 5);  // one stream: the high nibble must be 0
  ChunkEncoder enc(EncodeOptions{});
  std::string frame;
  enc.Encode(raw, DType::kU8, &frame);
  ASSERT_EQ(uint8_t(frame[0]), kFrameVersion);  // transform 0
  size_t at = 1;
  std::string bad = frame;
  bad[at] = char(uint8_t(bad[at]) | 0x20);
  ChunkDecoder dec;
  std::vector<uint8_t> out(raw.size());
  EXPECT_TRUE(dec.Decode(bad, HashBytes(raw.data(), raw.size()), out).IsCorruption());
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
    for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kU8, DType::kF8_E4M3}) {
      auto raw = WeightLike(t, 40000, 11);
      ChunkDecoder dec;
      std::string frame = EncodeWith(raw, t, p);
      ChunkKey key = HashBytes(raw.data(), raw.size());
      std::vector<uint8_t> out(raw.size());
      std::mt19937 rng(1);
      for (int trial = 0; trial < 300; trial++) {
        std::string bad = frame;
        size_t at = rng() % bad.size();
        bad[at] = char(bad[at] ^ (1 + rng() % 255));
        // A flip of a bit nothing reads (e.g. the unused high bits of an
        // 8-bit float's exponent byte) may decode to the right bytes.
        if (dec.Decode(bad, key, out).ok()) {
          EXPECT_EQ(out, raw) << "flip at " << at;
        }
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

TEST(ChunkCodec, RoundTripsEveryShortLength) {
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kF8_E5M2, DType::kU16})
    for (Profile p : {Profile::kFast, Profile::kDense})
      for (size_t n = 0; n <= 700; n++) ExpectRoundTrip(WeightLike(t, n, uint32_t(n * 7)), t, p);
}

TEST(ChunkCodec, RoundTripsChunksOfSeveralMegabytes) {
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32})
    for (Profile p : {Profile::kFast, Profile::kDense})
      ExpectRoundTrip(WeightLike(t, (5 << 20) / 2 + 6, 17), t, p);
}

// A decoder's scratch is chunk-sized; taken from malloc on a loader thread it
// stays in that thread's arena after the load (docs/pager.md, "Memory a
// loader keeps"). So decoding takes no more from malloc than a small amount,
// whatever the chunk's size, and all of it is given back by ReleaseMemory.
TEST(ChunkCodec, DecodingTakesNoChunkSizedBufferFromMalloc) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || PSTORE_CLANG_SANITIZER
  GTEST_SKIP() << "malloc is the sanitizer's here, and mallinfo2 does not count it";
#else
  auto in_use = [] {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32}) {
    // Zstandard's context is mapped like the buffers.
    for (Profile p : {Profile::kFast, Profile::kDense, Profile::kZstd}) {
      auto raw = WeightLike(t, 1 << 20, 9);
      std::string frame = EncodeWith(raw, ChunkType{t, {}}, p);
      auto info = InspectFrame(frame, raw.size());
      ASSERT_TRUE(info.ok());
      if (p == Profile::kZstd) {
        ASSERT_NE(std::count(info->coders.begin(), info->coders.end(), Coder::kZstd), 0);
      }
      std::vector<uint8_t> out(raw.size());
      const ChunkKey key = HashBytes(raw.data(), raw.size());
      ChunkDecoder dec;
      const size_t before = in_use();
      ASSERT_TRUE(dec.Decode(frame, key, out).ok());
      const size_t during = in_use();
      EXPECT_LT(during, before + (64 << 10)) << DTypeName(t) << ": decoding a 1 MiB chunk took "
                                             << during - before << " bytes from malloc";
      dec.ReleaseMemory();
      EXPECT_LE(in_use(), before) << DTypeName(t);
    }
  }
#endif
}

// A decoder that cannot get memory, for its buffers or for the Zstandard
// context it makes on first use, returns NoMemory (and throws nothing): that
// says nothing about the frame, which callers must not take for damage
// (Corruption). Once memory is back, the same decoder decodes the frame.
// The memory runs out in a child process whose address space is capped
// (RLIMIT_AS) just above what it has mapped.
TEST(ChunkCodec, DecoderOutOfMemoryIsNoMemoryNotDamage) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || PSTORE_CLANG_SANITIZER
  GTEST_SKIP() << "the sanitizer's runtime maps memory of its own, which an address-space cap "
                  "would deny";
#else
  struct Case {
    const char* what;
    DType type;
    Profile profile;
  };
  // U8 under zstd: no transform, so the frame's one stream decodes straight
  // into the output and the context is the only thing decoding allocates.
  // F32 under dense: plane buffers of the chunk's size.
  for (const Case& c : {Case{"zstd context", DType::kU8, Profile::kZstd},
                        Case{"plane buffers", DType::kF32, Profile::kDense}}) {
    SCOPED_TRACE(c.what);
    const auto raw = WeightLike(c.type, 1 << 20, 5);
    const std::string frame = EncodeWith(raw, ChunkType{c.type, {}}, c.profile);
    auto info = InspectFrame(frame, raw.size());
    ASSERT_TRUE(info.ok());
    if (c.profile == Profile::kZstd) {
      ASSERT_EQ(info->transform, Transform::kNone);
      ASSERT_EQ(info->coders.at(0), Coder::kZstd);
    } else {
      ASSERT_NE(info->transform, Transform::kNone);
    }
    const ChunkKey key = HashBytes(raw.data(), raw.size());
    std::vector<uint8_t> out(raw.size());
    ChunkDecoder dec;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Room in malloc's arena for the error message, then a cap at what is
      // mapped now plus a little: no new mapping of a chunk's size fits.
      ::free(::malloc(64 << 10));
      long pages = 0;
      FILE* f = std::fopen("/proc/self/statm", "r");
      if (f == nullptr || std::fscanf(f, "%ld", &pages) != 1) ::_exit(10);
      std::fclose(f);
      struct rlimit lim;
      ::getrlimit(RLIMIT_AS, &lim);
      const rlim_t max = lim.rlim_max;
      lim.rlim_cur = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + (64 << 10);
      if (::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(11);
      Status st;
      try {
        st = dec.Decode(frame, key, out);
      } catch (...) {
        ::_exit(12);  // thrown: callers would not see a status
      }
      if (st.ok()) ::_exit(13);  // memory enough after all: nothing tested
      if (st.IsCorruption()) ::_exit(14);
      if (st.code() != Status::Code::kNoMemory) ::_exit(15);
      lim.rlim_cur = max;
      if (::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(11);
      ::_exit(dec.Decode(frame, key, out).ok() ? 0 : 16);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    ASSERT_TRUE(WIFEXITED(ws)) << "the child died of signal " << WTERMSIG(ws);
    EXPECT_EQ(WEXITSTATUS(ws), 0) << "12: threw; 13: decoded under the cap; 14: Corruption; "
                                     "15: another status; 16: no decode once memory was back";
  }
#endif
}

TEST(ChunkCodec, DenseCodesRealisticWeightsBelowTheirRawSize) {
  // Stream coders of the dense profile, by dtype: the class-window transform
  // for BF16/F32 in range, rANS on the exponent-bearing stream.
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32}) {
    auto raw = WeightLike(t, 1 << 18, 4);
    ChunkEncoder enc(EncodeOptions{});
    std::string frame;
    enc.Encode(raw, t, &frame);
    auto info = InspectFrame(frame, raw.size());
    ASSERT_TRUE(info.ok());
    // rANS on stream 0; its states carry the tail of stream 1 (raw or packed).
    EXPECT_EQ(info->coders[0], Coder::kRans2Carry) << DTypeName(t);
    EXPECT_EQ(info->coders[1], Coder::kBitsTail) << DTypeName(t);
    if (t == DType::kBF16) {
      EXPECT_EQ(info->transform, Transform::kBF16X);
    }
    if (t == DType::kF32) {
      EXPECT_EQ(info->transform, Transform::kF32X);
    }
  }
}

TEST(ChunkCodec, ExponentsOutsideTheClassWindowFallBackToThePlainSplit) {
  for (DType t : {DType::kBF16, DType::kF32}) {
    auto raw = WeightLike(t, 20000, 8);
    const size_t w = DTypeSize(t);
    // One huge value (exponent 200) in the middle.
    float big = 1e18f;
    uint32_t bits;
    std::memcpy(&bits, &big, 4);
    if (w == 4)
      std::memcpy(&raw[w * 100], &bits, 4);
    else {
      uint16_t h = uint16_t(bits >> 16);
      std::memcpy(&raw[w * 100], &h, 2);
    }
    for (Profile p : {Profile::kFast, Profile::kDense}) {
      std::string frame = EncodeWith(raw, t, p);
      auto info = InspectFrame(frame, raw.size());
      EXPECT_EQ(info->transform, w == 4 ? Transform::kF32 : Transform::kBF16);
      ExpectRoundTrip(raw, t, p);
    }
  }
}

TEST(ChunkCodec, ScalarAndVectorDecodersGiveTheSameBytes) {
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32, DType::kF8_E4M3})
    for (Profile p : {Profile::kFast, Profile::kDense}) {
      auto raw = WeightLike(t, 300001, 21);
      EncodeOptions opt;
      opt.profile = p;
      ChunkEncoder enc(opt);
      opt.simd_level = 0;
      ChunkEncoder enc_scalar(opt);
      std::string frame, frame_scalar;
      enc.Encode(raw, t, &frame);
      enc_scalar.Encode(raw, t, &frame_scalar);
      ChunkDecoder dec_scalar(DecodeOptions{.simd_level = 0});
      std::vector<uint8_t> out(raw.size());
      Status s = dec_scalar.Decode(frame, HashBytes(raw.data(), raw.size()), out);
      EXPECT_EQ(frame, frame_scalar) << "the encoders differ: " << DTypeName(t);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(out, raw);
      // And with the AVX2 decode loop (where the CPU has it).
      ChunkDecoder dec_avx2(DecodeOptions{.simd_level = 1});
      std::vector<uint8_t> out2(raw.size());
      Status s2 = dec_avx2.Decode(frame, HashBytes(raw.data(), raw.size()), out2);
      ASSERT_TRUE(s2.ok()) << s2.ToString();
      EXPECT_EQ(out2, raw);
    }
}

// F16 weights quantised to 64 levels: the low byte depends on the exponent
// (rans2-ctx), and a few outliers make rare high bytes (escapes).
std::vector<uint8_t> QuantisedF16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i + 2 <= n; i += 2) {
    float q = std::round(std::clamp(nd(rng) * 8.f, -31.f, 31.f)) * (0.05f / 8.f);
    if (rng() % 50000 == 0) q = float(rng() % 1000) + 100.f;  // rare outliers
    _Float16 h = _Float16(q);
    std::memcpy(&v[i], &h, 2);
  }
  return v;
}

TEST(ChunkCodec, ContextAndEscapeStreamsSurviveCorruption) {
  auto raw = QuantisedF16(1 << 20, 3);
  ChunkEncoder enc(EncodeOptions{});
  std::string frame;
  enc.Encode(raw, DType::kF16, &frame);
  auto info = InspectFrame(frame, raw.size());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->coders[1], Coder::kRans2Ctx);
  ASSERT_EQ(info->coders[0], Coder::kRans2);
  {
    // Stream 0's table has an escape.
    const size_t payload0 = frame.size() - info->stream_bytes[0] - info->stream_bytes[1];
    Reader r(reinterpret_cast<const uint8_t*>(frame.data()) + payload0, info->stream_bytes[0]);
    uint8_t hdr;
    ASSERT_TRUE(r.GetU8(&hdr));
    rans2::Table t;
    ASSERT_TRUE(rans2::ReadTables(&r, hdr >> 3, &t, 1));
    EXPECT_TRUE(t.has_escape);
  }
  ExpectRoundTrip(raw, DType::kF16, Profile::kDense);
  ChunkDecoder dec;
  ChunkKey key = HashBytes(raw.data(), raw.size());
  std::vector<uint8_t> out(raw.size());
  std::mt19937 rng(9);
  for (int trial = 0; trial < 400; trial++) {
    std::string bad = frame;
    // Mostly in the headers and tables, where the structure is.
    size_t at = trial % 2 ? rng() % std::min<size_t>(bad.size(), 600) : rng() % bad.size();
    bad[at] = char(bad[at] ^ (1 + rng() % 255));
    if (dec.Decode(bad, key, out).ok()) {
      EXPECT_EQ(out, raw) << "flip at " << at;
    }
  }
  for (size_t cut = 0; cut < frame.size(); cut += 1 + frame.size() / 97)
    EXPECT_FALSE(dec.Decode(frame.substr(0, cut), key, out).ok());
}

// Offsets of each stream's payload in a frame.
std::vector<size_t> PayloadOffsets(const std::string& frame, size_t raw_len) {
  auto info = InspectFrame(frame, raw_len);
  EXPECT_TRUE(info.ok());
  size_t total = 0;
  for (uint64_t b : info->stream_bytes) total += b;
  std::vector<size_t> at;
  size_t p = frame.size() - total;
  for (uint64_t b : info->stream_bytes) at.push_back(p), p += b;
  return at;
}

TEST(ChunkCodec, CarryingCodersOnlyAsAPairOnStreamsZeroAndOne) {
  ChunkDecoder dec;
  std::vector<uint8_t> out(100);
  // Transform 0 has one stream: rans2-carry there has no bits-tail (found by
  // the fuzzer: it divided by the zero carry width).
  for (uint8_t coders : {uint8_t(9), uint8_t(10)}) {
    std::string f = {char(kFrameVersion), char(coders), char(0x40), char(0x22), char(0)};
    EXPECT_TRUE(dec.DecodeUnchecked(f, out).IsCorruption());
  }
  // Planes2 (two streams, no carry width): the pair is still rejected.
  std::string f = {char(kFrameVersion | 1 << 4), char(9 | 10 << 4), char(0x40), char(0)};
  EXPECT_TRUE(dec.DecodeUnchecked(f, out).IsCorruption());
  // F32 (four streams): the pair on streams 2 and 3 is rejected.
  std::vector<uint8_t> out4(400);
  std::string g = {char(kFrameVersion | 6 << 4), char(0), char(9 | 10 << 4), char(0x40), char(0)};
  EXPECT_TRUE(dec.DecodeUnchecked(g, out4).IsCorruption());
}

TEST(ChunkCodec, CarriedValuesRoundTripAtEveryLaneCount) {
  // Lengths around each lane-count step of the dense profile, and the
  // smallest streams that can carry (5 values of 6 bits for one lane).
  ChunkDecoder dec;
  ChunkEncoder enc(EncodeOptions{});
  int carried = 0;
  for (DType t : {DType::kBF16, DType::kF16, DType::kF32, DType::kF8_E4M3})
    for (size_t m : {1, 4, 5, 6, 40, 255, 256, 511, 512, 2047, 2048, 4095, 4096, 16383, 16384,
                     65535, 65536, 70001}) {
      auto raw = WeightLike(t, m * DTypeSize(t), uint32_t(m));
      std::string frame;
      enc.Encode(raw, t, &frame);
      auto info = InspectFrame(frame, raw.size());
      ASSERT_TRUE(info.ok());
      carried += info->coders[0] == Coder::kRans2Carry;
      std::vector<uint8_t> out(raw.size());
      Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
      ASSERT_TRUE(s.ok()) << DTypeName(t) << " " << m << ": " << s.ToString();
      EXPECT_EQ(out, raw);
    }
  EXPECT_GT(carried, 40);
}

TEST(ChunkCodec, CarriedStatesAreChecked) {
  auto raw = WeightLike(DType::kBF16, 1 << 17, 12);
  ChunkEncoder enc(EncodeOptions{});
  std::string frame;
  enc.Encode(raw, DType::kBF16, &frame);
  auto info = InspectFrame(frame, raw.size());
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->coders[0], Coder::kRans2Carry);
  ASSERT_EQ(info->coders[1], Coder::kBitsTail);
  ChunkDecoder dec;
  ChunkKey key = HashBytes(raw.data(), raw.size());
  std::vector<uint8_t> out(raw.size());
  ASSERT_TRUE(dec.Decode(frame, key, out).ok());
  // Either coder alone, or the pair in the wrong order, is rejected by the
  // parser (coder nibbles: the byte after the version/transform byte).
  const size_t coder_at = 1;
  ASSERT_EQ(uint8_t(frame[coder_at]), uint8_t(9 | 10 << 4));
  for (uint8_t b : {uint8_t(6 | 10 << 4), uint8_t(9 | 8 << 4), uint8_t(10 | 9 << 4),
                    uint8_t(9 | 9 << 4), uint8_t(10 | 10 << 4), uint8_t(6 | 8 << 4)}) {
    std::string bad = frame;
    bad[coder_at] = char(b);
    EXPECT_FALSE(dec.DecodeUnchecked(bad, out).ok()) << int(b);
  }
  auto at = PayloadOffsets(frame, raw.size());
  // Another lane count in stream 0's header implies another bits-tail length.
  for (int l = 0; l < 8; l++) {
    std::string bad = frame;
    if ((uint8_t(bad[at[0]]) & 7) == l) continue;
    bad[at[0]] = char((uint8_t(bad[at[0]]) & ~7) | l);
    EXPECT_FALSE(dec.DecodeUnchecked(bad, out).ok()) << l;
  }
  // Stream 0 re-encoded from states wider than 30 carried bits: the stream
  // decodes, but its final states are rejected.
  {
    const size_t m = raw.size() / 2;
    std::vector<uint8_t> c(m), sm(m);
    uint8_t* w[2] = {c.data(), sm.data()};
    SplitStreams(info->transform, raw.data(), raw.size(), w);
    uint32_t hist[256] = {};
    for (uint8_t b : c) hist[b]++;
    rans2::Order0Plan plan;
    rans2::PlanOrder0(m, hist, rans2::kMaxLanesLog2, false, &plan);
    ASSERT_EQ(plan.lanes_log2, uint8_t(frame[at[0]]) & 7);
    std::vector<uint32_t> init(size_t(1) << plan.lanes_log2, rans2::kStateLow + (1u << 30));
    std::string s0;
    rans2::EncodeOrder0(c.data(), m, plan, &s0, {.init = init.data(), .compact = true});
    std::string bad = frame.substr(0, at[0]) + s0 + frame.substr(at[1]);
    Status st = dec.DecodeUnchecked(bad, out);
    EXPECT_TRUE(st.IsCorruption());
    EXPECT_NE(st.ToString().find("final state"), std::string::npos) << st.ToString();
    // The same with states in range decodes to the frame's bytes but for the tail.
    std::fill(init.begin(), init.end(), rans2::kStateLow);
    s0.clear();
    rans2::EncodeOrder0(c.data(), m, plan, &s0, {.init = init.data(), .compact = true});
    std::string zero_tail = frame.substr(0, at[0]) + s0 + frame.substr(at[1]);
    ASSERT_TRUE(dec.DecodeUnchecked(zero_tail, out).ok());
    const size_t carried = (size_t(1) << plan.lanes_log2) * 5;
    EXPECT_TRUE(std::equal(out.begin(), out.end() - 2 * carried, raw.begin()));
  }
  // Flipping bits of the states: an error or, at worst, the key check.
  std::mt19937 rng(4);
  for (int trial = 0; trial < 300; trial++) {
    std::string bad = frame;
    size_t pos = at[0] + 1 + rng() % 400;
    bad[pos] = char(bad[pos] ^ (1 << (rng() % 8)));
    if (dec.Decode(bad, key, out).ok()) {
      EXPECT_EQ(out, raw);
    }
  }
}

TEST(Bitpack, PortableAndBmi2PathsAgree) {
  std::mt19937 rng(2);
  for (int k = 1; k <= 8; k++)
    for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(63),
                     size_t(1000), size_t(4097)}) {
      std::vector<uint8_t> v(n);
      for (auto& b : v) b = uint8_t(rng() & ((1u << k) - 1));
      std::vector<uint8_t> a(PackedBytes(n, k) + 1, 0x55), b(PackedBytes(n, k) + 1, 0x55);
      PackBits(v.data(), n, k, a.data());
      PackBits(v.data(), n, k, b.data(), /*portable=*/true);
      std::vector<uint8_t> u1(n), u2(n);
      UnpackBits(a.data(), n, k, u1.data(), /*portable=*/true);
      UnpackBits(a.data(), n, k, u2.data());
      EXPECT_EQ(a, b) << k << " " << n;
      EXPECT_EQ(a.back(), 0x55) << "wrote past the end";
      EXPECT_EQ(u1, v);
      EXPECT_EQ(u2, v);
    }
}

// Frames written before coders 6-8 existed (v2 with the first rANS format,
// coders 4 and 5) must stay readable: build one by hand as the old encoder did.
TEST(ChunkCodec, FirstFormatRansFramesStayReadable) {
  auto raw = WeightLike(DType::kF16, 60000, 6);
  const size_t m = raw.size() / 2;
  std::vector<uint8_t> hi(m), lo(m);
  uint8_t* w[2] = {hi.data(), lo.data()};
  SplitStreams(Transform::kF16, raw.data(), raw.size(), w);
  // Stream 0: order-0 (coder 4).
  std::string s0;
  {
    uint32_t h[256] = {};
    for (uint8_t b : hi) h[b]++;
    rans::Table t;
    rans::Normalize(h, &t);
    rans::WriteTable(&s0, t);
    rans::EncodeBody(hi.data(), nullptr, m, &t, &s0);
  }
  // Stream 1: two exponent contexts (coder 5): [k][base][tables][body].
  std::string s1;
  {
    const int k = 2, base = 10;
    std::vector<uint8_t> ctx(m);
    uint32_t h[2][256] = {};
    for (size_t i = 0; i < m; i++) {
      ctx[i] = uint8_t(std::clamp(int(ExponentOf(Transform::kF16, hi[i])) - base, 0, k - 1));
      h[ctx[i]][lo[i]]++;
    }
    rans::Table t[2];
    s1.push_back(char(k));
    s1.push_back(char(base));
    for (int c = 0; c < k; c++) {
      rans::Normalize(h[c], &t[c]);
      rans::WriteTable(&s1, t[c]);
    }
    rans::EncodeBody(lo.data(), ctx.data(), m, t, &s1);
  }
  std::string frame;
  frame.push_back(char(kFrameVersion2));
  frame.push_back(char(Transform::kF16));
  PutVarint(&frame, raw.size());
  frame.push_back(char(Coder::kRans));
  PutVarint(&frame, s0.size());
  frame.push_back(char(Coder::kRansCtx));
  PutVarint(&frame, s1.size());
  frame += s0;
  frame += s1;
  ChunkDecoder dec;
  std::vector<uint8_t> out(raw.size());
  Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(out, raw);
}

TEST(ChunkCodec, ProfilesAndCodersHaveStableNames) {
  for (Profile p : kAllProfiles) EXPECT_EQ(ProfileFromName(ProfileName(p)), p);
  EXPECT_EQ(ProfileFromName("nope"), std::nullopt);
  EXPECT_EQ(CoderName(Coder::kRansCtx), "rans-ctx");
  EXPECT_EQ(CoderName(Coder::kRans2), "rans2");
  EXPECT_EQ(CoderName(Coder::kRans2Ctx), "rans2-ctx");
  EXPECT_EQ(CoderName(Coder::kBits), "bits");
  EXPECT_EQ(CoderName(Coder::kRans2Carry), "rans2-carry");
  EXPECT_EQ(CoderName(Coder::kBitsTail), "bits-tail");
  // Ids on disk.
  EXPECT_EQ(int(Coder::kRans2Carry), 9);
  EXPECT_EQ(int(Coder::kBitsTail), 10);
  EXPECT_EQ(int(Coder::kRans2), 6);
  EXPECT_EQ(int(Coder::kRans2Ctx), 7);
  EXPECT_EQ(int(Coder::kBits), 8);
  EXPECT_EQ(int(Transform::kBF16X), 9);
  EXPECT_EQ(int(Transform::kF32X), 10);
}

}  // namespace
}  // namespace pstore
