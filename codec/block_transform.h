// The block transform: quantized tensors (GGUF's Q8_0, Q4_0, the K-quants
// ...) are runs of fixed-size blocks, each holding one or two F16 scale
// fields beside its quants. Transform::kBlockScales separates the scales from
// the rest so that the profile codes them as a 16-bit stream (high bytes, with
// the exponent, apart from low bytes) and the quants as bytes.
//
// A frame of this transform records the block layout (bytes per block, where
// the scales sit, how many) and the chunk's phase (the offset of its first
// byte within its block), so a chunk that starts or ends inside a block still
// round-trips: the partial blocks at either end go whole into the rest
// stream. Unlike the element transforms, the streams have different lengths
// (BlockStreamLengths). Byte layout: docs/codec.md, "The block transform".
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "codec/transform.h"

namespace pstore {

// Blocks of `bytes` bytes, each with `scales` little-endian F16 fields
// starting at byte `scale_offset`. bytes == 0: no block layout.
struct BlockLayout {
  uint32_t bytes = 0;
  uint8_t scale_offset = 0;
  uint8_t scales = 0;
};
constexpr uint32_t kMaxBlockBytes = 4096;

// A layout and where a chunk starts within it.
struct BlockParams {
  BlockLayout layout;
  uint32_t phase = 0;  // the chunk's first byte is byte `phase` of a block
};

// True for a layout the transform takes: 1 <= scales, scale_offset + 2 *
// scales <= bytes <= kMaxBlockBytes, and phase < bytes.
bool BlockParamsValid(const BlockParams& b);

// The streams of a chunk of raw_len bytes: [0] the scales' high bytes, [1]
// their low bytes (one each per scale of every whole block), [2] the rest
// (the partial block before the first whole one, the other bytes of each
// whole block, the partial block after the last).
void BlockStreamLengths(const BlockParams& b, uint64_t raw_len, uint64_t lens[3]);

// The length of each stream of transform t over raw_len bytes: raw_len /
// width for the element transforms, BlockStreamLengths(block, ...) for
// kBlockScales. REQUIRES: raw_len is a whole number of t's elements.
void StreamLengths(Transform t, const BlockParams& block, uint64_t raw_len,
                   uint64_t lens[kMaxStreams]);

// REQUIRES: BlockParamsValid(b); s[j] holds lens[j] bytes of BlockStreamLengths.
void SplitBlocks(const BlockParams& b, const uint8_t* raw, size_t raw_len, uint8_t* const* s);
void MergeBlocks(const BlockParams& b, const uint8_t* const* s, size_t raw_len, uint8_t* raw);

}  // namespace pstore
