// The rANS (format 2) decode loop with AVX2, for CPUs without AVX-512: 2^L
// lanes as 2^L / 8 vectors of 8 states. AVX2 has no expand, so the words a
// vector reads are spread to its lanes with a permutation looked up by the
// mask of lanes that need one. Bit-for-bit the same as the scalar loop.
#include <immintrin.h>

#include <array>

#include "codec/rans2.h"
#include "codec/rans2_decode.h"

namespace pstore::rans2 {

#define PSTORE_AVX2 __attribute__((target("avx2,popcnt")))

namespace {

// For each 8-bit mask, lane j takes word popcount(mask & ((1 << j) - 1)).
struct ExpandTable {
  alignas(32) std::array<std::array<int32_t, 8>, 256> idx;
  ExpandTable() {
    for (int m = 0; m < 256; m++) {
      int k = 0;
      for (int j = 0; j < 8; j++) idx[m][j] = (m >> j) & 1 ? k++ : 0;
    }
  }
};
const ExpandTable& Expand() {
  static const ExpandTable t;
  return t;
}

template <int V, bool kCtx, bool kLo>
PSTORE_AVX2 size_t Loop(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                        int prob_bits, uint8_t* out, const uint8_t* lo) {
  const auto& ex = Expand().idx;
  __m256i x[V];
  for (int v = 0; v < V; v++)
    x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st->x + 8 * v));
  const __m256i slot_mask = _mm256_set1_epi32((1 << prob_bits) - 1);
  const __m128i pshift = _mm_cvtsi32_si128(prob_bits);
  const __m256i f_mask = _mm256_set1_epi32(0xfff);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i low = _mm256_set1_epi32(int32_t(kStateLow));
  // Byte 0 of each 32-bit lane to the bottom of its 128-bit half.
  const __m256i pick =
      _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                       -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const uint16_t* words = reinterpret_cast<const uint16_t*>(st->words);
  size_t pos = st->pos;
  size_t i = 0;
  while (i + 8 * V <= n && pos + 8 * V <= st->nwords) {
    __m256i e[V];
    for (int v = 0; v < V; v++) {
      __m256i idx = _mm256_and_si256(x[v], slot_mask);
      if (kCtx) {
        __m256i c = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ctx + i + 8 * v)));
        idx = _mm256_add_epi32(idx, _mm256_sll_epi32(c, pshift));
      }
      e[v] = _mm256_i32gather_epi32(reinterpret_cast<const int*>(dtab), idx, 4);
    }
    int need[V];
    for (int v = 0; v < V; v++) {
      const __m256i b4 = _mm256_shuffle_epi8(e[v], pick);
      const __m128i sym =
          _mm_unpacklo_epi32(_mm256_castsi256_si128(b4), _mm256_extracti128_si256(b4, 1));
      if (kLo) {
        const __m128i l = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(lo + i + 8 * v));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * (i + 8 * v)),
                         _mm_unpacklo_epi8(l, sym));
      } else {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i + 8 * v), sym);
      }
      __m256i f = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e[v], 8), f_mask), one);
      __m256i b = _mm256_srli_epi32(e[v], 20);
      x[v] = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srl_epi32(x[v], pshift)), b);
      need[v] = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(low, x[v])));
    }
    for (int v = 0; v < V; v++) {
      __m256i w =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words + pos)));
      w = _mm256_permutevar8x32_epi32(
          w, _mm256_load_si256(reinterpret_cast<const __m256i*>(ex[need[v]].data())));
      const __m256i sel = _mm256_cmpgt_epi32(low, x[v]);
      x[v] = _mm256_blendv_epi8(x[v], _mm256_or_si256(_mm256_slli_epi32(x[v], 16), w), sel);
      pos += size_t(__builtin_popcount(unsigned(need[v])));
    }
    i += 8 * V;
  }
  for (int v = 0; v < V; v++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(st->x + 8 * v), x[v]);
  st->pos = pos;
  return i;
}

template <int V>
PSTORE_AVX2 size_t LoopV(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                         int prob_bits, uint8_t* out, const uint8_t* lo) {
  if (lo)
    return ctx ? Loop<V, true, true>(st, dtab, ctx, n, prob_bits, out, lo)
               : Loop<V, false, true>(st, dtab, ctx, n, prob_bits, out, lo);
  return ctx ? Loop<V, true, false>(st, dtab, ctx, n, prob_bits, out, lo)
             : Loop<V, false, false>(st, dtab, ctx, n, prob_bits, out, lo);
}

}  // namespace

size_t DecodeAvx2(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  int prob_bits, int lanes_log2, uint8_t* out, const uint8_t* lo) {
  switch (lanes_log2) {
    case 4:
      return LoopV<2>(st, dtab, ctx, n, prob_bits, out, lo);
    case 5:
      return LoopV<4>(st, dtab, ctx, n, prob_bits, out, lo);
    case 6:
      return LoopV<8>(st, dtab, ctx, n, prob_bits, out, lo);
    case 7:
      return LoopV<16>(st, dtab, ctx, n, prob_bits, out, lo);
  }
  return 0;
}

}  // namespace pstore::rans2
