// Carried values, the facts both coders of the carrying pair (rans2-carry on
// stream 0, bits-tail on stream 1) and the frame parser share: each lane of
// the rans2 stream starts from 2^15 + v, v holding the next stream's values of
// k bits packed into kCarryBits bits. 30 bits keep the start below 2^31 and
// cost about 13.6 bits of coded size for 30 carried ones: a net 16.4 bits a
// lane. (docs/codec.md, "Carried values".)
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>

#include "codec/transform.h"

namespace pstore {

constexpr int kCarryBits = 30;
inline int CarryPerLane(int k) {
  return kCarryBits / k;
}
// The values of stream 1 that the states of a rans2-carry stream of
// 2^lanes_log2 lanes carry (its last ones); bits-tail packs the others.
inline size_t CarriedValues(int lanes_log2, int k) {
  return (size_t(1) << lanes_log2) * size_t(CarryPerLane(k));
}

// The bits of the values of stream 1 of a float transform (what a bits-tail
// stream packs), or 0 where nothing is carried.
inline int CarryWidth(Transform t) {
  switch (t) {
    case Transform::kF16:
    case Transform::kBF16:
    case Transform::kF32:
      return 8;
    case Transform::kF8E4M3:
      return 4;
    case Transform::kF8E5M2:
      return 3;
    case Transform::kBF16X:
    case Transform::kF32X:
    case Transform::kBF16W:
    case Transform::kF32W:
      return 6;
    default:
      return 0;
  }
}

}  // namespace pstore
