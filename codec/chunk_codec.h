// The chunk codec: raw tensor bytes <-> a self-describing frame.
//
// A frame records its format version, the transform that split the chunk into
// streams, the raw length (up to version 3) and, per stream, the coder that
// stored it (codec/coders/coder.h: raw, one repeated byte, LZ4, Zstandard,
// rANS, rANS with an exponent context, bit-packing). The encoder's profile
// (codec/profile.h) tries the coders it allows on each stream and keeps the
// smallest; a stream nothing shrinks is stored raw. The frame's header is
// codec/frame.h's. Decoding checks the raw length and the XXH3-128 of the
// result against the chunk's key: a mismatch is a corruption error, and the
// caller's buffer must then be treated as garbage.
//
// Frame versions: 1 (one coder over all streams), 2 and 3 are still read
// (codec/legacy/); 4 (the streams of version 2 under a shorter header, the raw
// length left to the caller) is written. Byte layouts are in docs/codec.md.
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

#include "codec/coders/coder.h"
#include "codec/dtype.h"
#include "codec/frame.h"
#include "codec/hash.h"
#include "codec/profile.h"
#include "codec/transform.h"
#include "common/page_allocator.h"
#include "common/status.h"

namespace pstore {

class ChunkEncoder {
 public:
  explicit ChunkEncoder(const EncodeOptions& options);
  ~ChunkEncoder();
  ChunkEncoder(const ChunkEncoder&) = delete;
  ChunkEncoder& operator=(const ChunkEncoder&) = delete;

  // Replaces *frame with the frame of raw, a piece of a tensor of type, and
  // returns the frame's version and transform (what a chunk record keeps).
  FrameDescription Encode(std::span<const uint8_t> raw, const ChunkType& type, std::string* frame);
  FrameDescription Encode(std::span<const uint8_t> raw, DType dtype, std::string* frame) {
    return Encode(raw, ChunkType{dtype, {}}, frame);
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ChunkDecoder {
 public:
  ChunkDecoder() : ChunkDecoder(DecodeOptions{}) {}
  explicit ChunkDecoder(const DecodeOptions& options);
  ~ChunkDecoder();
  ChunkDecoder(const ChunkDecoder&) = delete;
  ChunkDecoder& operator=(const ChunkDecoder&) = delete;

  // Decodes frame into out, whose size must equal the frame's raw length, and
  // checks that XXH3-128(out) == key. On error out holds unspecified bytes.
  // Corruption: the frame is damaged or not key's. NoMemory: the decoder
  // could not get its scratch (returned, not thrown as std::bad_alloc),
  // which says nothing about the frame.
  Status Decode(std::string_view frame, const ChunkKey& key, std::span<uint8_t> out);
  // The same without the key check (for tools that inspect frames).
  Status DecodeUnchecked(std::string_view frame, std::span<uint8_t> out);
  // Frees the scratch buffers (they grow again on the next decode), and
  // input_buffer's.
  void ReleaseMemory();
  // A buffer for the caller to read frames into before decoding them (the
  // local store reads chunks from its blob files so): kept with the decoder
  // from one read to the next, mapped apart from malloc's arenas
  // (common/page_allocator.h), freed by ReleaseMemory.
  PageVector<uint8_t>& input_buffer();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The longest frame of a chunk of raw_len bytes, in any version: a header of
// at most a few hundred bytes and streams that add up to raw_len, each stored
// raw when no coder shrinks it (version 1's one LZ4 or Zstandard payload may
// grow by up to 1/255 of its length). A longer frame is no chunk's: a reader
// that takes frame lengths from elsewhere (a remote's locations) bounds them
// by this.
constexpr uint64_t MaxFrameBytes(uint64_t raw_len) {
  return raw_len + raw_len / 128 + 1024;
}

struct FrameInfo {
  uint8_t version = 0;
  Transform transform = Transform::kNone;
  uint64_t raw_len = 0;
  uint8_t window_bias = 0;             // kBF16W / kF32W only
  BlockParams block;                   // kBlockScales only
  std::vector<Coder> coders;           // per stream
  std::vector<uint64_t> stream_bytes;  // payload bytes per stream
};
// Parses a frame's header without decoding it. Version-4 frames do not hold
// their raw length: raw_len must give it (for older versions it must match).
Result<FrameInfo> InspectFrame(std::string_view frame,
                               std::optional<uint64_t> raw_len = std::nullopt);

}  // namespace pstore
