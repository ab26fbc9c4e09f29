// libFuzzer target over the chunk codec (built with PSTORE_BUILD_FUZZERS=ON and
// clang; run with tests/run_codec_fuzz.sh).
//
// Input byte 0 picks the mode:
//   even: bytes 1..3 are a raw length L (little-endian, for version-4 frames,
//         which do not hold theirs), bytes 4.. are a frame. It is decoded into a
//         buffer of the length its header claims (when that is at most 4 MiB) or
//         of L, and of a wrong length, with and without a key: any result is
//         fine except a crash, a sanitizer report, or a success whose bytes
//         differ between the two decoders.
//   odd:  byte 1 picks a dtype and a profile, bytes 2.. are a chunk's raw
//         bytes: encode, decode, and abort unless the bytes come back exactly.
//         With bit 1 of byte 0 set, byte 2 picks a GGML block layout and byte
//         3 the chunk's phase in it, and the raw bytes start at byte 4.
//
// With PSTORE_FUZZ_WRITE_SEEDS=DIR in the environment the binary writes a seed
// corpus (real frames of every dtype and profile, from synthetic weights and,
// if PSTORE_CODEC_CORPUS names a directory of .safetensors files, from the
// first chunks of each) into DIR and exits.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "codec/chunk_codec.h"
#include "tests/legacy_frames.h"
#include "tests/quant_blocks.h"

using namespace pstore;

namespace {

constexpr DType kTypes[] = {DType::kBool,    DType::kU8,  DType::kI8,  DType::kF8_E5M2,
                            DType::kF8_E4M3, DType::kI16, DType::kU16, DType::kF16,
                            DType::kBF16,    DType::kI32, DType::kU32, DType::kF32,
                            DType::kF64,     DType::kI64, DType::kU64};
constexpr Profile kProfiles[] = {Profile::kRaw, Profile::kLz4, Profile::kZstd, Profile::kFast,
                                 Profile::kDense};
// Q8_0, Q4_0, Q4_K, Q6_K.
constexpr BlockLayout kLayouts[] = {{34, 0, 1}, {18, 0, 1}, {144, 0, 2}, {210, 208, 1}};

std::vector<uint8_t> Weights(DType t, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<uint8_t> v(n);
  const size_t w = DTypeSize(t);
  for (size_t i = 0; i + w <= n; i += w) {
    float f = nd(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (t == DType::kF32)
      std::memcpy(&v[i], &bits, 4);
    else if (t == DType::kBF16 || t == DType::kF16) {
      uint16_t h = uint16_t(bits >> 16);
      std::memcpy(&v[i], &h, 2);
    } else {
      for (size_t k = 0; k < w; k++) v[i + k] = uint8_t(k == 0 ? int(f * 1000) : 0);
    }
  }
  return v;
}

void WriteSeed(const std::filesystem::path& dir, int* count, uint8_t mode, const std::string& body,
               size_t raw_len = 0) {
  std::ofstream out(dir / ("seed-" + std::to_string((*count)++)), std::ios::binary);
  out.put(char(mode));
  if (mode == 0)
    for (int b = 0; b < 3; b++) out.put(char(uint8_t(raw_len >> (8 * b))));
  out.write(body.data(), std::streamsize(body.size()));
}

void WriteSeeds(const char* dir_name) {
  std::filesystem::path dir(dir_name);
  std::filesystem::create_directories(dir);
  int count = 0;
  std::string frame;
  for (Profile p : kProfiles) {
    EncodeOptions opt;
    opt.profile = p;
    ChunkEncoder enc(opt);
    for (DType t : kTypes)
      for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(100), size_t(5000), size_t(70000)}) {
        auto raw = Weights(t, n, uint32_t(n) + uint32_t(t));
        enc.Encode(raw, t, &frame);
        WriteSeed(dir, &count, 0, frame, raw.size());
        if (n <= 5000 && p == Profile::kDense) {
          std::string body(1, char(uint8_t(t) | (uint8_t(p) << 4)));
          body.append(raw.begin(), raw.end());
          WriteSeed(dir, &count, 1, body);
        }
      }
    if (p == Profile::kZstd) {
      auto raw = Weights(DType::kF16, 3000, 5);
      for (Coder c : {Coder::kRaw, Coder::kLz4, Coder::kZstd}) {
        frame = EncodeVersion1Frame(raw, DType::kF16, c);
        WriteSeed(dir, &count, 0, frame, raw.size());
      }
    }
  }
  // Quantized blocks at a few phases, split by the block transform.
  {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 0.02f);
    std::vector<float> x(32 * 2048);
    for (float& f : x) f = nd(rng);
    const std::vector<uint8_t> q[2] = {quant::QuantQ8_0(x), quant::QuantQ4_0(x)};
    for (Profile p : {Profile::kFast, Profile::kDense, Profile::kZstd}) {
      EncodeOptions opt;
      opt.profile = p;
      ChunkEncoder enc(opt);
      for (int k = 0; k < 2; k++)
        for (uint32_t phase : {0u, 4u, 13u})
          for (size_t n : {size_t(40), size_t(5000), size_t(60000)}) {
            // A chunk that starts `phase` bytes into a block, as import cuts them.
            const size_t at = phase % kLayouts[k].bytes;
            std::span<const uint8_t> raw(q[k].data() + at, std::min(n, q[k].size() - at));
            enc.Encode(raw, ChunkType{DType::kU8, {kLayouts[k], phase}}, &frame);
            WriteSeed(dir, &count, 0, frame, n);
            if (n == 5000 && p == Profile::kDense) {
              std::string body = {char(3), char(uint8_t(DType::kU8) | (uint8_t(p) << 4)), char(k),
                                  char(phase)};
              body.append(raw.begin(), raw.end());
              std::ofstream out(dir / ("seed-" + std::to_string(count++)), std::ios::binary);
              out.write(body.data(), std::streamsize(body.size()));
            }
          }
    }
  }
  // Real frames: the first chunk (up to 64 KiB) of the first tensors of each file.
  if (const char* corpus = std::getenv("PSTORE_CODEC_CORPUS")) {
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(corpus, ec)) {
      if (e.path().extension() != ".safetensors") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::string d((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (d.size() < 8) continue;
      uint64_t hlen;
      std::memcpy(&hlen, d.data(), 8);
      if (hlen > d.size() - 8) continue;
      // Take dtype and offsets from the JSON by hand: enough for seeds.
      std::string h = d.substr(8, hlen);
      size_t at = 0;
      for (int taken = 0; taken < 4; taken++) {
        size_t dt = h.find("\"dtype\":\"", at);
        size_t off = h.find("\"data_offsets\":[", at);
        if (dt == std::string::npos || off == std::string::npos) break;
        std::string name = h.substr(dt + 9, h.find('"', dt + 9) - dt - 9);
        unsigned long long a = 0, b = 0;
        if (std::sscanf(h.c_str() + off + 16, "%llu,%llu", &a, &b) != 2) break;
        at = std::max(dt, off) + 1;
        auto type = DTypeFromName(name);
        if (!type || b < a || 8 + hlen + b > d.size()) continue;
        size_t n = std::min<size_t>(b - a, 64 << 10);
        const auto* p = reinterpret_cast<const uint8_t*>(d.data()) + 8 + hlen + a;
        for (Profile pr : {Profile::kFast, Profile::kDense}) {
          EncodeOptions opt;
          opt.profile = pr;
          ChunkEncoder enc(opt);
          enc.Encode({p, n}, *type, &frame);
          WriteSeed(dir, &count, 0, frame, n);
        }
      }
    }
  }
  std::fprintf(stderr, "wrote %d seeds to %s\n", count, dir_name);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("PSTORE_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static ChunkDecoder dec;
  if ((data[0] & 1) == 0) {
    if (size < 4) return 0;
    const size_t hint = size_t(data[1]) | size_t(data[2]) << 8 | size_t(data[3]) << 16;
    std::string_view frame(reinterpret_cast<const char*>(data + 4), size - 4);
    auto info = InspectFrame(frame);
    size_t n = hint;
    if (info.ok() && info->raw_len <= (4u << 20)) n = size_t(info->raw_len);
    (void)InspectFrame(frame, n);
    std::vector<uint8_t> a(n), b(n);
    Status sa = dec.DecodeUnchecked(frame, a);
    ChunkKey key = HashBytes(a.data(), a.size());
    Status sb = dec.Decode(frame, key, b);
    if (sa.ok() != sb.ok() || (sa.ok() && a != b)) std::abort();  // decoding is deterministic
    std::vector<uint8_t> c(n + 3);
    (void)dec.DecodeUnchecked(frame, c);
    return 0;
  }
  if (size < 2) return 0;
  ChunkType type{kTypes[(data[1] & 15) % std::size(kTypes)], {}};
  const Profile p = kProfiles[(data[1] >> 4) % std::size(kProfiles)];
  std::span<const uint8_t> raw(data + 2, size - 2);
  if (data[0] & 2) {
    if (size < 4) return 0;
    type.block.layout = kLayouts[data[2] % std::size(kLayouts)];
    type.block.phase = data[3] % type.block.layout.bytes;
    raw = raw.subspan(2);
  }
  EncodeOptions opt;
  opt.profile = p;
  static ChunkEncoder* encoders[std::size(kProfiles)] = {};
  if (!encoders[int(p)]) encoders[int(p)] = new ChunkEncoder(opt);
  std::string frame;
  encoders[int(p)]->Encode(raw, type, &frame);
  std::vector<uint8_t> out(raw.size());
  Status s = dec.Decode(frame, HashBytes(raw.data(), raw.size()), out);
  if (!s.ok() || !std::equal(out.begin(), out.end(), raw.begin())) {
    std::fprintf(stderr, "round trip failed: %s\n", s.ToString().c_str());
    std::abort();
  }
  return 0;
}
