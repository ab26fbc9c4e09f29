// The stream coders of chunk frames: their on-disk ids, and the one interface
// every coder implements (its id, name, the payload length it implies, how it
// decodes a payload and how it tries to encode a stream). Each coder lives in a
// file of its own under codec/coders/ (the first-format rANS ones, read only,
// under codec/legacy/); CoderFor finds one by id. What the encoder tries on
// which stream is the profile's business (codec/profile.h), not the coders'.
//
// Thread-safety: coders are stateless singletons, safe from any thread; the
// scratch structs belong to one encoder or decoder, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codec/rans2.h"
#include "codec/transform.h"
#include "common/page_allocator.h"
#include "common/status.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace pstore {

// Per-stream coders. Ids are written to disk and never renumbered.
enum class Coder : uint8_t {
  kRaw = 0,
  kConst = 1,  // every byte the same; payload is that byte
  kLz4 = 2,
  kZstd = 3,
  kRans = 4,      // order-0 rANS, first format (read only)
  kRansCtx = 5,   // first-format rANS with one table per exponent group (read only)
  kRans2 = 6,     // order-0 rANS, format 2: compact tables, up to 128 lanes
  kRans2Ctx = 7,  // format-2 rANS with one table per exponent group
  kBits = 8,      // values below 2^k, k bits each
  // A pair on streams 0 and 1: rans2 whose lanes start from states that carry
  // the last values of stream 1, and those k-bit values but the carried ones
  // (docs/codec.md, "Carried values"; codec/coders/carry.h).
  kRans2Carry = 9,
  kBitsTail = 10,
};
constexpr uint8_t kMaxCoderId = 10;
std::string_view CoderName(Coder c);

// Where the length of a coder's payload comes from in a version-3/4 frame.
enum class ImpliedLength : uint8_t {
  kNone,     // written in the header (or the rest of the frame, for the last)
  kStream,   // the stream's length m (raw)
  kOneByte,  // 1 (const)
  kCarried,  // from the rans2-carry stream before it (bits-tail)
};

// Lanes cap of format-2 rANS streams (rans2::LanesLog2For picks per profile):
// 64 lanes decode 1.5x faster than 32 on AVX-512 (4 gathers in flight); 128
// gain a few percent more for 256 more state bytes, which only fast takes.
constexpr int kMaxLanesLog2 = 7;

// How decoding may run: which vector units it may use (tests compare them).
struct DecodeOptions {
  // 2: AVX-512 where the CPU has it, 1: AVX2 at most, 0: scalar loops only.
  int simd_level = 2;
};

// A decoder's buffers, reused from stream to stream and chunk to chunk.
struct CoderDecodeScratch {
  CoderDecodeScratch();
  ~CoderDecodeScratch();
  CoderDecodeScratch(const CoderDecodeScratch&) = delete;
  CoderDecodeScratch& operator=(const CoderDecodeScratch&) = delete;
  // The Zstandard context, made on first use (in memory of its own mapping,
  // as the buffers' is); throws std::bad_alloc if it cannot be made, as the
  // buffers do.
  ZSTD_DCtx_s* Zstd();
  // Gives back every buffer and the Zstandard context (made again on use).
  void Release();
  ZSTD_DCtx_s* zd = nullptr;
  PageVector<uint8_t> ctx;    // a stream's contexts (chunk-sized)
  PageVector<uint32_t> dtab;  // decoding tables
  // The final states of the last rans2-carry stream, for its bits-tail.
  uint32_t carry[1 << kMaxLanesLog2];
  int carry_lanes_log2 = -1;
};

// What a stream's decoding may need besides its payload.
struct StreamDecodeArgs {
  Transform transform = Transform::kNone;
  const TransformInfo* info = nullptr;
  int stream = 0;
  bool one_coder_frame = false;             // version 1: one coder over all streams
  const uint8_t* const* decoded = nullptr;  // the streams before this one
  DecodeOptions options;
};

// An encoder's buffers.
struct CoderEncodeScratch {
  CoderEncodeScratch();
  ~CoderEncodeScratch();
  CoderEncodeScratch(const CoderEncodeScratch&) = delete;
  CoderEncodeScratch& operator=(const CoderEncodeScratch&) = delete;
  ZSTD_CCtx_s* zc;
  std::vector<uint8_t> ctx;
  rans2::EncodeScratch rans;
};

// What a coder's encoding may need besides the stream. The profile fills in
// what the coder it calls uses.
struct StreamEncodeArgs {
  Transform transform = Transform::kNone;
  int zstd_level = 3;                       // zstd
  int bits = 0;                             // bits: the width k
  const rans2::Order0Plan* plan = nullptr;  // rans2, rans2-carry
  const uint8_t* ctx_source = nullptr;      // rans2-ctx: the exponent stream
  int ctx_groups = 0, ctx_base = 0;         // rans2-ctx: the window
  const uint8_t* carry = nullptr;           // rans2-carry: the next stream
  int carry_bits = 0;                       // rans2-carry, bits-tail: its values' width
  int carry_lanes_log2 = -1;                // bits-tail: the lanes of stream 0
  int simd_level = 2;                       // as DecodeOptions::simd_level
};

class StreamCoder {
 public:
  virtual ~StreamCoder() = default;
  virtual Coder id() const = 0;
  std::string_view name() const { return CoderName(id()); }
  virtual ImpliedLength implied() const { return ImpliedLength::kNone; }
  // Decodes payload in into dst (m bytes). Every read is bounds-checked: a bad
  // payload is kCorruption, and dst then holds unspecified bytes.
  virtual Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                        CoderDecodeScratch* scratch) const = 0;
  // Replaces *out with the payload of s[0, m) and returns true, or returns
  // false (out unspecified) where this coder cannot take it or only decodes.
  virtual bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a,
                         CoderEncodeScratch* scratch, std::string* out) const = 0;
};

// The coder with that id, or null for an id no coder has.
const StreamCoder* CoderFor(uint8_t id);
inline const StreamCoder& CoderFor(Coder c) {
  return *CoderFor(uint8_t(c));
}

}  // namespace pstore
