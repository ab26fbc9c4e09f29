// The contexts of the exponent-context coders (rans2-ctx, and rans-ctx of the
// first format): each symbol's context is the exponent group, in [0, k), of
// the same element in its source stream, groups being k exponents from base
// with everything below or above folded into the first or last. Both start
// their payload with [u8 k][u8 base].
//
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/coders/coder.h"
#include "codec/transform.h"
#include "common/coding.h"
#include "common/status.h"

namespace pstore {

// lut[b]: the exponent group of byte b of a ctx-source stream.
inline void ExponentGroups(Transform t, int base, int k, uint8_t lut[256]) {
  for (int b = 0; b < 256; b++)
    lut[b] = uint8_t(std::clamp(int(ExponentOf(t, uint8_t(b))) - base, 0, k - 1));
}

// (*ctx)[i]: the group of src[i], for i < m.
template <class ByteVector>
void ExponentContexts(Transform t, int base, int k, const uint8_t* src, size_t m, ByteVector* ctx) {
  uint8_t lut[256];
  ExponentGroups(t, base, k, lut);
  ctx->resize(m);
  for (size_t i = 0; i < m; i++) (*ctx)[i] = lut[src[i]];
}

// The start of a context stream's payload, from r: its context source (the
// stream a.stream's transform names), the group count k in [1, max_k] and
// the base exponent. kCorruption where the transform has no context for the
// stream, in a version-1 frame, or for a bad header.
inline Status ReadContextHeader(Reader* r, const StreamDecodeArgs& a, int max_k, int* source,
                                uint8_t* k, uint8_t* base) {
  *source = a.info->ctx_source[a.stream];
  if (*source < 0 || a.one_coder_frame)
    return Status::Corruption("rANS-ctx stream where the transform has no context");
  if (!r->GetU8(k) || !r->GetU8(base) || *k < 1 || *k > max_k)
    return Status::Corruption("rANS-ctx stream has a bad header");
  return Status::OK();
}

}  // namespace pstore
