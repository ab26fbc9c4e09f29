// The block transform's split and merge (codec/block_transform.h).
#include "codec/block_transform.h"

#include <cstring>

namespace pstore {

namespace {

struct Geometry {
  size_t head, blocks, tail;
};

Geometry GeometryOf(const BlockParams& b, uint64_t raw_len) {
  const uint64_t bb = b.layout.bytes;
  uint64_t head = (bb - b.phase) % bb;
  if (head > raw_len) head = raw_len;
  const uint64_t blocks = (raw_len - head) / bb;
  return Geometry{size_t(head), size_t(blocks), size_t(raw_len - head - blocks * bb)};
}

// The whole blocks of a layout with one scale at byte 0 (Q8_0, Q4_0, IQ4_NL)
// with the block size known at compile time, so that each copy is a few
// vector moves rather than a call.
template <size_t kBytes>
const uint8_t* MergeLeadingScale(const uint8_t* hi, const uint8_t* lo, const uint8_t* rest,
                                 size_t blocks, uint8_t* p) {
  for (size_t i = 0; i < blocks; i++, p += kBytes, rest += kBytes - 2) {
    p[0] = lo[i];
    p[1] = hi[i];
    std::memcpy(p + 2, rest, kBytes - 2);
  }
  return rest;
}

}  // namespace

bool BlockParamsValid(const BlockParams& b) {
  const BlockLayout& l = b.layout;
  return l.scales >= 1 && l.bytes <= kMaxBlockBytes &&
         uint32_t(l.scale_offset) + 2u * l.scales <= l.bytes && 2u * l.scales < l.bytes &&
         b.phase < l.bytes;  // some bytes besides the scales
}

void BlockStreamLengths(const BlockParams& b, uint64_t raw_len, uint64_t lens[3]) {
  const Geometry g = GeometryOf(b, raw_len);
  lens[0] = lens[1] = uint64_t(g.blocks) * b.layout.scales;
  lens[2] = raw_len - 2 * lens[0];
}

void StreamLengths(Transform t, const BlockParams& block, uint64_t raw_len,
                   uint64_t lens[kMaxStreams]) {
  if (t == Transform::kBlockScales) return BlockStreamLengths(block, raw_len, lens);
  const TransformInfo info = *GetTransformInfo(t);
  for (int j = 0; j < info.nstreams; j++) lens[j] = raw_len / uint64_t(info.width);
}

void SplitBlocks(const BlockParams& b, const uint8_t* raw, size_t raw_len, uint8_t* const* s) {
  const Geometry g = GeometryOf(b, raw_len);
  const size_t bb = b.layout.bytes, off = b.layout.scale_offset, ns = b.layout.scales;
  const size_t after = bb - off - 2 * ns;  // bytes after the scales
  uint8_t *hi = s[0], *lo = s[1], *rest = s[2];
  if (g.head) std::memcpy(rest, raw, g.head), rest += g.head;
  const uint8_t* p = raw + g.head;
  for (size_t i = 0; i < g.blocks; i++, p += bb) {
    if (off) std::memcpy(rest, p, off), rest += off;
    for (size_t k = 0; k < ns; k++) {
      *lo++ = p[off + 2 * k];
      *hi++ = p[off + 2 * k + 1];
    }
    if (after) std::memcpy(rest, p + off + 2 * ns, after);
    rest += after;
  }
  if (g.tail) std::memcpy(rest, p, g.tail);
}

void MergeBlocks(const BlockParams& b, const uint8_t* const* s, size_t raw_len, uint8_t* raw) {
  const Geometry g = GeometryOf(b, raw_len);
  const size_t bb = b.layout.bytes, off = b.layout.scale_offset, ns = b.layout.scales;
  const size_t after = bb - off - 2 * ns;
  const uint8_t *hi = s[0], *lo = s[1], *rest = s[2];
  if (g.head) std::memcpy(raw, rest, g.head), rest += g.head;
  uint8_t* p = raw + g.head;
  if (off == 0 && ns == 1 && (bb == 34 || bb == 18)) {
    rest = bb == 34 ? MergeLeadingScale<34>(hi, lo, rest, g.blocks, p)
                    : MergeLeadingScale<18>(hi, lo, rest, g.blocks, p);
    p += g.blocks * bb;
    if (g.tail) std::memcpy(p, rest, g.tail);
    return;
  }
  for (size_t i = 0; i < g.blocks; i++, p += bb) {
    if (off) std::memcpy(p, rest, off), rest += off;
    for (size_t k = 0; k < ns; k++) {
      p[off + 2 * k] = *lo++;
      p[off + 2 * k + 1] = *hi++;
    }
    if (after) std::memcpy(p + off + 2 * ns, rest, after);
    rest += after;
  }
  if (g.tail) std::memcpy(p, rest, g.tail);
}

}  // namespace pstore
