// The chunk codec: raw tensor bytes <-> a self-describing frame.
//
// A frame records its format version, the transform that split the chunk into
// streams, the raw length and, per stream, the coder that stored it (raw, one
// repeated byte, LZ4, Zstandard, rANS, rANS with an exponent context). The
// encoder tries the coders its profile allows on each stream and keeps the
// smallest; a stream nothing shrinks is stored raw. Decoding checks the raw
// length and the XXH3-128 of the result against the chunk's key: a mismatch is
// a corruption error, and the caller's buffer must then be treated as garbage.
//
// Frame versions: 1 (one coder over all streams), 2 and 3 are still read; 4 (the
// streams of version 2 under a shorter header, the raw length left to the
// caller) is written.
// Byte layouts are in docs/codec.md.
//
// Thread-safety: a ChunkEncoder or ChunkDecoder holds scratch buffers and must
// be used by one thread at a time; use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/dtype.h"
#include "codec/hash.h"
#include "codec/transform.h"
#include "common/status.h"

namespace pstore {

// Per-stream coders. Ids are written to disk and never renumbered.
enum class Coder : uint8_t {
  kRaw = 0,
  kConst = 1,    // every byte the same; payload is that byte
  kLz4 = 2,
  kZstd = 3,
  kRans = 4,     // order-0 rANS
  kRansCtx = 5,  // rANS with one table per exponent group of a ctx-source stream
  kRans2 = 6,     // order-0 rANS, format 2: compact tables, up to 128 lanes
  kRans2Ctx = 7,  // format-2 rANS with one table per exponent group
  kBits = 8,      // values below 2^k, k bits each
  // A pair on streams j and j + 1: rans2 whose lanes start from states that
  // carry the last values of stream j + 1, and those k-bit values but the
  // carried ones (docs/codec.md, "Carried values").
  kRans2Carry = 9,
  kBitsTail = 10,
};
std::string_view CoderName(Coder c);

// What the encoder tries on each stream.
enum class Profile : uint8_t {
  kRaw,    // no transform, stored as is
  kLz4,    // streams split by dtype, each LZ4 or raw
  kZstd,   // streams split by dtype, each Zstandard (zstd_level) or raw
  kFast,   // rANS on the exponent-bearing stream, the rest raw or bit-packed:
           // tuned for decode speed
  kDense,  // every coder on every stream, smallest wins: tuned for ratio
};
std::optional<Profile> ProfileFromName(std::string_view name);
std::string_view ProfileName(Profile p);

struct EncodeOptions {
  Profile profile = Profile::kDense;
  int zstd_level = 3;  // used by kZstd and kDense
};

constexpr uint8_t kFrameVersion1 = 1;
constexpr uint8_t kFrameVersion2 = 2;  // per-stream coders, every length written
constexpr uint8_t kFrameVersion3 = 3;  // v2 with a compact header
constexpr uint8_t kFrameVersion = 4;   // what the encoder writes: v3 without the raw length,
                                       // version and transform in one byte

// What a written frame's header says: its version and transform, the fields a
// chunk record keeps (docs/format.md).
struct FrameDescription {
  uint8_t version = 0;
  Transform transform = Transform::kNone;
};

class ChunkEncoder {
 public:
  explicit ChunkEncoder(const EncodeOptions& options);
  ~ChunkEncoder();
  ChunkEncoder(const ChunkEncoder&) = delete;
  ChunkEncoder& operator=(const ChunkEncoder&) = delete;

  // Replaces *frame with the frame of raw, a piece of a tensor of dtype, and
  // returns the frame's version and transform.
  FrameDescription Encode(std::span<const uint8_t> raw, DType dtype, std::string* frame);

  // Writes a version-1 frame (one coder over the split streams); kept so the
  // reader of old frames stays tested. coder: kRaw, kLz4 or kZstd.
  void EncodeV1ForTesting(std::span<const uint8_t> raw, DType dtype, Coder coder,
                          std::string* frame);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ChunkDecoder {
 public:
  ChunkDecoder();
  ~ChunkDecoder();
  ChunkDecoder(const ChunkDecoder&) = delete;
  ChunkDecoder& operator=(const ChunkDecoder&) = delete;

  // Decodes frame into out, whose size must equal the frame's raw length, and
  // checks that XXH3-128(out) == key. On error out holds unspecified bytes.
  Status Decode(std::string_view frame, const ChunkKey& key, std::span<uint8_t> out);
  // The same without the key check (for tools that inspect frames).
  Status DecodeUnchecked(std::string_view frame, std::span<uint8_t> out);
  // Frees the scratch buffers (they grow again on the next decode).
  void ReleaseMemory();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct FrameInfo {
  uint8_t version = 0;
  Transform transform = Transform::kNone;
  uint64_t raw_len = 0;
  uint8_t window_bias = 0;              // kBF16W / kF32W only
  std::vector<Coder> coders;            // per stream
  std::vector<uint64_t> stream_bytes;   // payload bytes per stream
};
// Parses a frame's header without decoding it. Version-4 frames do not hold
// their raw length: raw_len must give it (for older versions it must match).
Result<FrameInfo> InspectFrame(std::string_view frame,
                               std::optional<uint64_t> raw_len = std::nullopt);

}  // namespace pstore
