// The rANS (format 2) decode loop with AVX-512: 2^L lanes as 2^L / 16 vectors
// of 16 states, all in flight at once so that the gathers of one vector
// overlap the arithmetic of the others. Bit-for-bit the same as the scalar
// loop in rans2.cc; it stops early, leaving the tail to that loop, when a
// whole group could read past the end of the words.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive in avx512fintrin.h
#include <immintrin.h>

#include "codec/rans2.h"
#include "codec/rans2_decode.h"

namespace pstore::rans2 {

#define PSTORE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

namespace {

template <int V, bool kCtx>
PSTORE_AVX512 size_t Loop(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                          int prob_bits, uint8_t* out) {
  __m512i x[V];
  for (int v = 0; v < V; v++) x[v] = _mm512_loadu_si512(st->x + 16 * v);
  const __m512i slot_mask = _mm512_set1_epi32((1 << prob_bits) - 1);
  const __m128i pshift = _mm_cvtsi32_si128(prob_bits);
  const __m512i f_mask = _mm512_set1_epi32(0xfff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i low = _mm512_set1_epi32(kStateLow);
  const uint16_t* words = reinterpret_cast<const uint16_t*>(st->words);
  size_t pos = st->pos;
  size_t i = 0;
  // Each vector reads at most 16 words per step.
  while (i + 16 * V <= n && pos + 16 * V <= st->nwords) {
    __m512i e[V];
    for (int v = 0; v < V; v++) {
      __m512i idx = _mm512_and_si512(x[v], slot_mask);
      if (kCtx) {
        __m512i c = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(ctx + i + 16 * v)));
        idx = _mm512_add_epi32(idx, _mm512_sll_epi32(c, pshift));
      }
      e[v] = _mm512_i32gather_epi32(idx, dtab, 4);
    }
    __mmask16 need[V];
    for (int v = 0; v < V; v++) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 16 * v), _mm512_cvtepi32_epi8(e[v]));
      __m512i f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e[v], 8), f_mask), one);
      __m512i b = _mm512_srli_epi32(e[v], 20);
      x[v] = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x[v], pshift)), b);
      need[v] = _mm512_cmplt_epu32_mask(x[v], low);
    }
    for (int v = 0; v < V; v++) {
      __m512i w = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + pos)));
      w = _mm512_maskz_expand_epi32(need[v], w);
      x[v] = _mm512_mask_or_epi32(x[v], need[v], _mm512_slli_epi32(x[v], 16), w);
      pos += size_t(__builtin_popcount(need[v]));
    }
    i += 16 * V;
  }
  for (int v = 0; v < V; v++) _mm512_storeu_si512(st->x + 16 * v, x[v]);
  st->pos = pos;
  return i;
}

template <int V>
PSTORE_AVX512 size_t LoopV(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                           int prob_bits, uint8_t* out) {
  return ctx ? Loop<V, true>(st, dtab, ctx, n, prob_bits, out)
             : Loop<V, false>(st, dtab, ctx, n, prob_bits, out);
}

}  // namespace

size_t DecodeFast(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  int prob_bits, int lanes_log2, uint8_t* out) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl");
  if (!has_avx512) return 0;
  switch (lanes_log2) {
    case 4: return LoopV<1>(st, dtab, ctx, n, prob_bits, out);
    case 5: return LoopV<2>(st, dtab, ctx, n, prob_bits, out);
    case 6: return LoopV<4>(st, dtab, ctx, n, prob_bits, out);
    case 7: return LoopV<8>(st, dtab, ctx, n, prob_bits, out);
  }
  return 0;
}

}  // namespace pstore::rans2
