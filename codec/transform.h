// Transforms: how a chunk's bytes are split into streams before coding.
//
// Floating-point types are split by field so that the exponent, the part of a
// weight with the most structure, lands in a stream of its own (or, for F16,
// in the high byte with the sign and two mantissa bits, which codes smaller
// than any finer split of it); integer types are split into byte planes. Every
// stream of a transform holds raw_len / width bytes. The ids are written to
// disk and never renumbered (docs/codec.md).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "codec/dtype.h"

namespace pstore {

enum class Transform : uint8_t {
  kNone = 0,     // one stream: the bytes as they are
  kPlanes2 = 1,  // byte planes of 2-byte integers, least significant first
  kPlanes4 = 2,
  kPlanes8 = 3,
  kF16 = 4,     // [hi: sign, 5 exponent bits, 2 mantissa bits] [lo: 8 mantissa bits]
  kBF16 = 5,    // [exponent 8 bits] [sign, 7 mantissa bits]
  kF32 = 6,     // [exponent] [sign, mantissa 22..16] [mantissa 15..8] [mantissa 7..0]
  kF8E4M3 = 7,  // [exponent 4 bits] [sign, 3 mantissa bits]
  kF8E5M2 = 8,  // [exponent 5 bits] [sign, 2 mantissa bits]
  // Exponent class and the top two mantissa bits as one symbol, the rest apart.
  // The class is 0 for exponent 0 and exponent - 79 for exponents 80..142
  // (magnitudes 2^-47 to 2^16); a chunk with any other exponent cannot use it.
  kBF16X = 9,  // [class<<2 | mantissa 6..5] [sign<<5 | mantissa 4..0]
  kF32X = 10,  // [class<<2 | mantissa 22..21] [sign<<5 | mantissa 20..16] [15..8] [7..0]
  // The same streams with the class window where the chunk's exponents are:
  // class = exponent - bias for nonzero exponents, bias (<= kMaxWindowBias) written
  // in the frame (version 4 only).
  kBF16W = 11,
  kF32W = 12,
  // Quantized blocks: F16 scales (high bytes, low bytes) apart from the rest,
  // with the block layout and the chunk's phase written in the frame (version
  // 4 only; codec/block_transform.h). Split and merged by SplitBlocks and
  // MergeBlocks, not by SplitStreams and MergeStreams.
  kBlockScales = 13,
};
constexpr int kXExponentBias = 79;  // class = exponent - 79
constexpr int kXExponentMin = 80, kXExponentMax = 142;
constexpr int kMaxWindowBias = 192;  // class 63 + 192 = exponent 255
inline bool HasWindowBias(Transform t) {
  return t == Transform::kBF16W || t == Transform::kF32W;
}
constexpr int kMaxStreams = 8;

struct TransformInfo {
  int width;     // bytes per element
  int nstreams;  // streams the transform produces (each of raw_len / width
                 // bytes, but for kBlockScales: BlockStreamLengths)
  // For each stream, the earlier stream whose bytes give its coding context
  // (the exponent), or -1. Only exponent-bearing streams are sources.
  int ctx_source[kMaxStreams];
};

// nullopt for an id that names no transform (corrupt input).
std::optional<TransformInfo> GetTransformInfo(Transform t);
// The transform pstore uses for a chunk of raw_len bytes of dtype (kNone when
// raw_len is not a whole number of elements).
Transform TransformFor(DType dtype, size_t raw_len);
// The exponent field held in byte b of a ctx-source stream of transform t.
inline uint8_t ExponentOf(Transform t, uint8_t b) {
  if (t == Transform::kF16 || t == Transform::kBlockScales) return uint8_t((b >> 2) & 0x1f);
  if (t == Transform::kBF16X || t == Transform::kF32X || t == Transform::kBF16W ||
      t == Transform::kF32W)
    return uint8_t(b >> 2);
  return b;
}
// The class-window variant of a float transform (kBF16 -> kBF16X, kF32 -> kF32X)
// if every exponent in raw fits its window; otherwise, if shifted and the
// nonzero exponents span at most 63 values, kBF16W / kF32W with *bias set;
// otherwise t itself.
Transform WindowedVariant(Transform t, const uint8_t* raw, size_t raw_len, bool shifted = false,
                          uint8_t* bias = nullptr);

// streams[k] must hold raw_len / width bytes; raw_len must be a multiple of width.
// bias: the window of kBF16W / kF32W (ignored by the others).
void SplitStreams(Transform t, const uint8_t* raw, size_t raw_len, uint8_t* const* streams,
                  int bias = kXExponentBias);
void MergeStreams(Transform t, const uint8_t* const* streams, size_t raw_len, uint8_t* raw,
                  int bias = kXExponentBias);

}  // namespace pstore
