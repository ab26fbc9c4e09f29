#include "codec/transform.h"
#include "common/target.h"

#include <algorithm>
#include <cstring>

namespace pstore {

// Hot loops are compiled twice, for AVX2 and for the baseline, and picked at
// load time.
#define PSTORE_CLONES PSTORE_TARGET_CLONES("avx2", "default")

std::optional<TransformInfo> GetTransformInfo(Transform t) {
  switch (t) {
    case Transform::kNone:
      return TransformInfo{1, 1, {-1}};
    case Transform::kPlanes2:
      return TransformInfo{2, 2, {-1, -1}};
    case Transform::kPlanes4:
      return TransformInfo{4, 4, {-1, -1, -1, -1}};
    case Transform::kPlanes8:
      return TransformInfo{8, 8, {-1, -1, -1, -1, -1, -1, -1, -1}};
    case Transform::kF16:
      return TransformInfo{2, 2, {-1, 0}};
    case Transform::kBF16:
      return TransformInfo{2, 2, {-1, 0}};
    case Transform::kF32:
      return TransformInfo{4, 4, {-1, 0, 0, -1}};
    case Transform::kF8E4M3:
      return TransformInfo{1, 2, {-1, 0}};
    case Transform::kF8E5M2:
      return TransformInfo{1, 2, {-1, 0}};
    case Transform::kBF16X:
      return TransformInfo{2, 2, {-1, 0}};
    case Transform::kF32X:
      return TransformInfo{4, 4, {-1, 0, -1, -1}};
    case Transform::kBF16W:
      return TransformInfo{2, 2, {-1, 0}};
    case Transform::kF32W:
      return TransformInfo{4, 4, {-1, 0, -1, -1}};
    case Transform::kBlockScales:
      return TransformInfo{1, 3, {-1, 0, -1}};
  }
  return std::nullopt;
}

Transform TransformFor(DType dtype, size_t raw_len) {
  Transform t;
  switch (dtype) {
    case DType::kF16:
      t = Transform::kF16;
      break;
    case DType::kBF16:
      t = Transform::kBF16;
      break;
    case DType::kF32:
      t = Transform::kF32;
      break;
    case DType::kF8_E4M3:
      t = Transform::kF8E4M3;
      break;
    case DType::kF8_E5M2:
      t = Transform::kF8E5M2;
      break;
    case DType::kI16:
    case DType::kU16:
      t = Transform::kPlanes2;
      break;
    case DType::kI32:
    case DType::kU32:
      t = Transform::kPlanes4;
      break;
    case DType::kI64:
    case DType::kU64:
    case DType::kF64:
      t = Transform::kPlanes8;
      break;
    default:
      return Transform::kNone;
  }
  if (raw_len % size_t(GetTransformInfo(t)->width)) return Transform::kNone;
  return t;
}

namespace {

PSTORE_CLONES void SplitPlanes(const uint8_t* raw, size_t n, int w, uint8_t* const* s) {
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < w; k++) s[k][i] = raw[i * size_t(w) + size_t(k)];
}
PSTORE_CLONES void MergePlanes(const uint8_t* const* s, size_t n, int w, uint8_t* raw) {
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < w; k++) raw[i * size_t(w) + size_t(k)] = s[k][i];
}

PSTORE_CLONES void SplitF16(const uint8_t* raw, size_t n, uint8_t* hi, uint8_t* lo) {
  for (size_t i = 0; i < n; i++) {
    lo[i] = raw[2 * i];
    hi[i] = raw[2 * i + 1];
  }
}
PSTORE_CLONES void MergeF16(const uint8_t* hi, const uint8_t* lo, size_t n, uint8_t* raw) {
  uint16_t* out = reinterpret_cast<uint16_t*>(raw);
  for (size_t i = 0; i < n; i++) out[i] = uint16_t(lo[i] | (hi[i] << 8));
}

PSTORE_CLONES void SplitBF16(const uint8_t* raw, size_t n, uint8_t* e, uint8_t* sm) {
  for (size_t i = 0; i < n; i++) {
    uint16_t v;
    std::memcpy(&v, raw + 2 * i, 2);
    e[i] = uint8_t(v >> 7);
    sm[i] = uint8_t(((v >> 8) & 0x80) | (v & 0x7f));
  }
}
PSTORE_CLONES void MergeBF16(const uint8_t* e, const uint8_t* sm, size_t n, uint8_t* raw) {
  uint16_t* out = reinterpret_cast<uint16_t*>(raw);
  for (size_t i = 0; i < n; i++)
    out[i] = uint16_t((uint16_t(sm[i] & 0x80) << 8) | (uint16_t(e[i]) << 7) | (sm[i] & 0x7f));
}

PSTORE_CLONES void SplitF32(const uint8_t* raw, size_t n, uint8_t* const* s) {
  for (size_t i = 0; i < n; i++) {
    uint32_t v;
    std::memcpy(&v, raw + 4 * i, 4);
    s[0][i] = uint8_t(v >> 23);
    s[1][i] = uint8_t(((v >> 24) & 0x80) | ((v >> 16) & 0x7f));
    s[2][i] = uint8_t(v >> 8);
    s[3][i] = uint8_t(v);
  }
}
PSTORE_CLONES void MergeF32(const uint8_t* const* s, size_t n, uint8_t* raw) {
  uint32_t* out = reinterpret_cast<uint32_t*>(raw);
  const uint8_t *e = s[0], *sm = s[1], *m1 = s[2], *m0 = s[3];
  for (size_t i = 0; i < n; i++)
    out[i] = (uint32_t(sm[i] & 0x80) << 24) | (uint32_t(e[i]) << 23) |
             (uint32_t(sm[i] & 0x7f) << 16) | (uint32_t(m1[i]) << 8) | m0[i];
}

// 8-bit floats: exponent of `ebits` bits above `mbits` mantissa bits.
void SplitF8(const uint8_t* raw, size_t n, int mbits, uint8_t* e, uint8_t* sm) {
  const int ebits = 7 - mbits;
  const uint8_t emask = uint8_t((1u << ebits) - 1), mmask = uint8_t((1u << mbits) - 1);
  for (size_t i = 0; i < n; i++) {
    uint8_t v = raw[i];
    e[i] = (v >> mbits) & emask;
    sm[i] = uint8_t(((v >> 7) << mbits) | (v & mmask));
  }
}
void MergeF8(const uint8_t* e, const uint8_t* sm, size_t n, int mbits, uint8_t* raw) {
  const int ebits = 7 - mbits;
  const uint8_t emask = uint8_t((1u << ebits) - 1), mmask = uint8_t((1u << mbits) - 1);
  for (size_t i = 0; i < n; i++)
    raw[i] = uint8_t(((sm[i] >> mbits & 1) << 7) | ((e[i] & emask) << mbits) | (sm[i] & mmask));
}

inline uint32_t ClassOf(uint32_t e, uint32_t bias) {
  return e == 0 ? 0 : e - bias;
}
inline uint32_t ExponentOfClass(uint32_t c, uint32_t bias) {
  return c == 0 ? 0 : c + bias;
}

PSTORE_CLONES void SplitBF16X(const uint8_t* raw, size_t n, uint8_t* c, uint8_t* sm,
                              uint32_t bias) {
  for (size_t i = 0; i < n; i++) {
    uint16_t v;
    std::memcpy(&v, raw + 2 * i, 2);
    c[i] = uint8_t(ClassOf((v >> 7) & 0xff, bias) << 2 | ((v >> 5) & 3));
    sm[i] = uint8_t(((v >> 15) << 5) | (v & 31));
  }
}
PSTORE_CLONES void MergeBF16X(const uint8_t* c, const uint8_t* sm, size_t n, uint8_t* raw,
                              uint32_t bias) {
  uint16_t* out = reinterpret_cast<uint16_t*>(raw);
  for (size_t i = 0; i < n; i++)
    out[i] = uint16_t((uint32_t((sm[i] >> 5) & 1) << 15) | (ExponentOfClass(c[i] >> 2, bias) << 7) |
                      ((c[i] & 3u) << 5) | (sm[i] & 31u));
}
PSTORE_CLONES void SplitF32X(const uint8_t* raw, size_t n, uint8_t* const* s, uint32_t bias) {
  for (size_t i = 0; i < n; i++) {
    uint32_t v;
    std::memcpy(&v, raw + 4 * i, 4);
    s[0][i] = uint8_t(ClassOf((v >> 23) & 0xff, bias) << 2 | ((v >> 21) & 3));
    s[1][i] = uint8_t(((v >> 31) << 5) | ((v >> 16) & 31));
    s[2][i] = uint8_t(v >> 8);
    s[3][i] = uint8_t(v);
  }
}
PSTORE_CLONES void MergeF32X(const uint8_t* const* s, size_t n, uint8_t* raw, uint32_t bias) {
  uint32_t* out = reinterpret_cast<uint32_t*>(raw);
  const uint8_t *c = s[0], *sm = s[1], *m1 = s[2], *m0 = s[3];
  for (size_t i = 0; i < n; i++)
    out[i] = (uint32_t((sm[i] >> 5) & 1) << 31) | (ExponentOfClass(c[i] >> 2, bias) << 23) |
             ((c[i] & 3u) << 21) | (uint32_t(sm[i] & 31) << 16) | (uint32_t(m1[i]) << 8) | m0[i];
}

// Elements read in place (raw may be unaligned).
typedef uint16_t U16 __attribute__((aligned(1), may_alias));
typedef uint32_t U32 __attribute__((aligned(1), may_alias));

// Smallest and largest nonzero exponent (lo > hi when there is none).
PSTORE_CLONES void ExponentRange16(const uint8_t* raw, size_t n, uint32_t* lo, uint32_t* hi) {
  const U16* p = reinterpret_cast<const U16*>(raw);
  uint32_t a = 255, b = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t e = (uint32_t(p[i]) >> 7) & 0xff;
    a = std::min(a, e == 0 ? 255u : e);
    b = std::max(b, e);
  }
  *lo = a, *hi = b;
}
PSTORE_CLONES void ExponentRange32(const uint8_t* raw, size_t n, uint32_t* lo, uint32_t* hi) {
  const U32* p = reinterpret_cast<const U32*>(raw);
  uint32_t a = 255, b = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t e = (p[i] >> 23) & 0xff;
    a = std::min(a, e == 0 ? 255u : e);
    b = std::max(b, e);
  }
  *lo = a, *hi = b;
}

}  // namespace

Transform WindowedVariant(Transform t, const uint8_t* raw, size_t raw_len, bool shifted,
                          uint8_t* bias) {
  if (t != Transform::kBF16 && t != Transform::kF32) return t;
  uint32_t lo, hi;
  if (t == Transform::kBF16)
    ExponentRange16(raw, raw_len / 2, &lo, &hi);
  else
    ExponentRange32(raw, raw_len / 4, &lo, &hi);
  if (hi == 0 || (lo >= uint32_t(kXExponentMin) && hi <= uint32_t(kXExponentMax)))
    return t == Transform::kBF16 ? Transform::kBF16X : Transform::kF32X;
  if (shifted && hi - lo <= 62) {
    // Classes 1..63 stand for exponents bias + 1 .. bias + 63.
    if (bias) *bias = uint8_t(std::min<uint32_t>(lo - 1, kMaxWindowBias));
    return t == Transform::kBF16 ? Transform::kBF16W : Transform::kF32W;
  }
  return t;
}

void SplitStreams(Transform t, const uint8_t* raw, size_t raw_len, uint8_t* const* s, int bias) {
  switch (t) {
    case Transform::kNone:
      if (raw_len) std::memcpy(s[0], raw, raw_len);
      return;
    case Transform::kPlanes2:
      SplitPlanes(raw, raw_len / 2, 2, s);
      return;
    case Transform::kPlanes4:
      SplitPlanes(raw, raw_len / 4, 4, s);
      return;
    case Transform::kPlanes8:
      SplitPlanes(raw, raw_len / 8, 8, s);
      return;
    case Transform::kF16:
      SplitF16(raw, raw_len / 2, s[0], s[1]);
      return;
    case Transform::kBF16:
      SplitBF16(raw, raw_len / 2, s[0], s[1]);
      return;
    case Transform::kF32:
      SplitF32(raw, raw_len / 4, s);
      return;
    case Transform::kF8E4M3:
      SplitF8(raw, raw_len, 3, s[0], s[1]);
      return;
    case Transform::kF8E5M2:
      SplitF8(raw, raw_len, 2, s[0], s[1]);
      return;
    case Transform::kBF16X:
      SplitBF16X(raw, raw_len / 2, s[0], s[1], kXExponentBias);
      return;
    case Transform::kF32X:
      SplitF32X(raw, raw_len / 4, s, kXExponentBias);
      return;
    case Transform::kBF16W:
      SplitBF16X(raw, raw_len / 2, s[0], s[1], uint32_t(bias));
      return;
    case Transform::kF32W:
      SplitF32X(raw, raw_len / 4, s, uint32_t(bias));
      return;
    case Transform::kBlockScales:
      return;  // SplitBlocks (codec/block_transform.h)
  }
}

void MergeStreams(Transform t, const uint8_t* const* s, size_t raw_len, uint8_t* raw, int bias) {
  switch (t) {
    case Transform::kNone:
      if (raw_len) std::memcpy(raw, s[0], raw_len);
      return;
    case Transform::kPlanes2:
      MergePlanes(s, raw_len / 2, 2, raw);
      return;
    case Transform::kPlanes4:
      MergePlanes(s, raw_len / 4, 4, raw);
      return;
    case Transform::kPlanes8:
      MergePlanes(s, raw_len / 8, 8, raw);
      return;
    case Transform::kF16:
      MergeF16(s[0], s[1], raw_len / 2, raw);
      return;
    case Transform::kBF16:
      MergeBF16(s[0], s[1], raw_len / 2, raw);
      return;
    case Transform::kF32:
      MergeF32(s, raw_len / 4, raw);
      return;
    case Transform::kF8E4M3:
      MergeF8(s[0], s[1], raw_len, 3, raw);
      return;
    case Transform::kF8E5M2:
      MergeF8(s[0], s[1], raw_len, 2, raw);
      return;
    case Transform::kBF16X:
      MergeBF16X(s[0], s[1], raw_len / 2, raw, kXExponentBias);
      return;
    case Transform::kF32X:
      MergeF32X(s, raw_len / 4, raw, kXExponentBias);
      return;
    case Transform::kBF16W:
      MergeBF16X(s[0], s[1], raw_len / 2, raw, uint32_t(bias));
      return;
    case Transform::kF32W:
      MergeF32X(s, raw_len / 4, raw, uint32_t(bias));
      return;
    case Transform::kBlockScales:
      return;  // MergeBlocks (codec/block_transform.h)
  }
}

}  // namespace pstore
