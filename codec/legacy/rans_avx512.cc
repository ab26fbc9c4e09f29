// The rANS decode loop with AVX-512: 32 lanes as two vectors of 16 states.
// Bit-for-bit the same as the scalar loop in rans.cc; it only stops early,
// leaving the tail to that loop, when fewer than 16 words remain to read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive in avx512fintrin.h
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "codec/legacy/rans.h"
#include "codec/legacy/rans_decode.h"

namespace pstore::rans {

#define PSTORE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

namespace {

PSTORE_AVX512 inline __m512i Step(__m512i x, const uint32_t* dtab, const uint8_t* ctx, uint8_t* out,
                                  const uint16_t* words, size_t* pos) {
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1);
  __m512i idx = _mm512_and_si512(x, slot_mask);
  if (ctx) {
    __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ctx)));
    idx = _mm512_add_epi32(idx, _mm512_slli_epi32(c, kProbBits));
  }
  __m512i e = _mm512_i32gather_epi32(idx, dtab, 4);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(e));
  __m512i f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 8), _mm512_set1_epi32(0xfff)),
                               _mm512_set1_epi32(1));
  __m512i b = _mm512_srli_epi32(e, 20);
  x = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srli_epi32(x, kProbBits)), b);
  __mmask16 need = _mm512_cmplt_epu32_mask(x, _mm512_set1_epi32(kStateLow));
  __m512i w =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + *pos)));
  w = _mm512_maskz_expand_epi32(need, w);
  x = _mm512_mask_or_epi32(x, need, _mm512_slli_epi32(x, 16), w);
  *pos += size_t(__builtin_popcount(need));
  return x;
}

}  // namespace

PSTORE_AVX512 size_t DecodeAvx512(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx,
                                  size_t n, uint8_t* out) {
  __m512i a = _mm512_loadu_si512(st->x);
  __m512i b = _mm512_loadu_si512(st->x + 16);
  size_t pos = st->pos;
  size_t i = 0;
  // Each step reads at most 16 words; two steps per group of 32 symbols.
  while (i + 32 <= n && pos + 32 <= st->nwords) {
    a = Step(a, dtab, ctx ? ctx + i : nullptr, out + i, st->words, &pos);
    b = Step(b, dtab, ctx ? ctx + i + 16 : nullptr, out + i + 16, st->words, &pos);
    i += 32;
  }
  _mm512_storeu_si512(st->x, a);
  _mm512_storeu_si512(st->x + 16, b);
  st->pos = pos;
  return i;
}

size_t DecodeFast(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  uint8_t* out) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl");
  if (has_avx512) return DecodeAvx512(st, dtab, ctx, n, out);
  return 0;
}

}  // namespace pstore::rans
