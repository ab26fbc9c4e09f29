#include "codec/bitpack.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positives in its AVX-512 intrinsics headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstring>

namespace pstore {
namespace {

// k bits set at the bottom of each byte.
uint64_t Spread(int k) {
  return 0x0101010101010101ull * ((1u << k) - 1);
}

// Groups of 8 values are k whole bytes; the last partial group goes bit by bit.
void PackTail(const uint8_t* in, size_t from, size_t n, int k, uint8_t* out) {
  const size_t first = from * size_t(k) / 8;  // from is a multiple of 8
  std::memset(out + first, 0, PackedBytes(n, k) - first);
  for (size_t i = from; i < n; i++)
    for (int b = 0; b < k; b++) {
      size_t bit = i * size_t(k) + size_t(b);
      out[bit >> 3] |= uint8_t(((in[i] >> b) & 1) << (bit & 7));
    }
}
void UnpackTail(const uint8_t* in, size_t from, size_t n, int k, uint8_t* out) {
  for (size_t i = from; i < n; i++) {
    uint32_t v = 0;
    for (int b = 0; b < k; b++) {
      size_t bit = i * size_t(k) + size_t(b);
      v |= uint32_t((in[bit >> 3] >> (bit & 7)) & 1) << b;
    }
    out[i] = uint8_t(v);
  }
}

void PackPortable(const uint8_t* in, size_t n, int k, uint8_t* out) {
  const size_t groups = n / 8;
  for (size_t g = 0; g < groups; g++) {
    uint64_t w = 0;
    for (int j = 0; j < 8; j++) w |= uint64_t(in[8 * g + j]) << (j * k);
    std::memcpy(out + g * size_t(k), &w, size_t(k));  // little-endian host
  }
  PackTail(in, groups * 8, n, k, out);
}
void UnpackPortable(const uint8_t* in, size_t n, int k, uint8_t* out) {
  const size_t groups = n / 8;
  const uint64_t mask = (1u << k) - 1;
  for (size_t g = 0; g < groups; g++) {
    uint64_t w = 0;
    std::memcpy(&w, in + g * size_t(k), size_t(k));
    for (int j = 0; j < 8; j++) out[8 * g + j] = uint8_t((w >> (j * k)) & mask);
  }
  UnpackTail(in, groups * 8, n, k, out);
}

__attribute__((target("bmi2"))) void PackBmi2(const uint8_t* in, size_t n, int k, uint8_t* out) {
  const size_t groups = n / 8;
  const uint64_t m = Spread(k);
  size_t g = 0;
  // 8-byte stores while a whole word fits before the last group's end.
  for (; g * size_t(k) + 8 <= groups * size_t(k); g++) {
    uint64_t v;
    std::memcpy(&v, in + 8 * g, 8);
    uint64_t w = _pext_u64(v, m);
    std::memcpy(out + g * size_t(k), &w, 8);
  }
  for (; g < groups; g++) {
    uint64_t v;
    std::memcpy(&v, in + 8 * g, 8);
    uint64_t w = _pext_u64(v, m);
    std::memcpy(out + g * size_t(k), &w, size_t(k));
  }
  PackTail(in, groups * 8, n, k, out);
}
__attribute__((target("bmi2"))) void UnpackBmi2(const uint8_t* in, size_t n, int k, uint8_t* out) {
  const size_t groups = n / 8;
  const size_t bytes = PackedBytes(n, k);
  const uint64_t m = Spread(k);
  size_t g = 0;
  // 8-byte loads while they stay inside the input.
  for (; g < groups && g * size_t(k) + 8 <= bytes; g++) {
    uint64_t w;
    std::memcpy(&w, in + g * size_t(k), 8);
    uint64_t v = _pdep_u64(w, m);
    std::memcpy(out + 8 * g, &v, 8);
  }
  for (; g < groups; g++) {
    uint64_t w = 0;
    std::memcpy(&w, in + g * size_t(k), size_t(k));
    uint64_t v = _pdep_u64(w, m);
    std::memcpy(out + 8 * g, &v, 8);
  }
  UnpackTail(in, groups * 8, n, k, out);
}

// 64 values per step: each group of 8 values (k bytes) is moved into a
// quadword of its own, then vpmultishiftqb pulls value j out of bits
// [j*k, j*k + 8) of its quadword.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void UnpackVbmi(const uint8_t* in, size_t n,
                                                                       int k, uint8_t* out) {
  alignas(64) uint8_t perm[64], shifts[64];
  for (int g = 0; g < 8; g++)
    for (int j = 0; j < 8; j++) {
      perm[8 * g + j] = uint8_t(g * k + (j < k ? j : k - 1));
      shifts[8 * g + j] = uint8_t(j * k);
    }
  const __m512i vperm = _mm512_load_si512(perm), vshift = _mm512_load_si512(shifts);
  const __m512i mask = _mm512_set1_epi8(char((1u << k) - 1));
  const size_t blocks = n / 64;
  const __mmask64 load_mask = (k == 8) ? ~__mmask64(0) : (__mmask64(1) << (8 * k)) - 1;
  for (size_t b = 0; b < blocks; b++) {
    __m512i v = _mm512_maskz_loadu_epi8(load_mask, in + b * 8 * size_t(k));
    v = _mm512_permutexvar_epi8(vperm, v);
    v = _mm512_multishift_epi64_epi8(vshift, v);
    _mm512_storeu_si512(out + 64 * b, _mm512_and_si512(v, mask));
  }
  // The rest (< 64 values) through the portable loops, from a whole group.
  UnpackPortable(in + blocks * 8 * size_t(k), n - blocks * 64, k, out + blocks * 64);
}

bool UseVbmi() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vbmi");
  return has;
}

bool UseBmi2() {
  static const bool has = __builtin_cpu_supports("bmi2");
  return has;
}

}  // namespace

int BitsNeeded(const uint8_t* v, size_t n) {
  uint8_t m = 0;
  for (size_t i = 0; i < n; i++) m |= v[i];
  return m ? 32 - __builtin_clz(m) : 0;
}

void PackBits(const uint8_t* in, size_t n, int k, uint8_t* out, bool portable) {
  if (n == 0) return;
  if (k == 8) {
    std::memcpy(out, in, n);
    return;
  }
  if (!portable && UseBmi2())
    PackBmi2(in, n, k, out);
  else
    PackPortable(in, n, k, out);
}

void UnpackBits(const uint8_t* in, size_t n, int k, uint8_t* out, bool portable) {
  if (n == 0) return;
  if (k == 8) {
    std::memcpy(out, in, n);
    return;
  }
  if (portable)
    UnpackPortable(in, n, k, out);
  else if (UseVbmi())
    UnpackVbmi(in, n, k, out);
  else if (UseBmi2())
    UnpackBmi2(in, n, k, out);
  else
    UnpackPortable(in, n, k, out);
}

}  // namespace pstore
