// The rANS (format 2) decode loop with AVX-512: 2^L lanes as 2^L / 16 vectors
// of 16 states, all in flight at once so that the gathers of one vector
// overlap the arithmetic of the others. Bit-for-bit the same as the scalar
// loop in rans2.cc; it stops early, leaving the tail to that loop, when a
// whole group could read past the end of the words.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive in avx512fintrin.h
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include "codec/rans2.h"
#include "codec/rans2_decode.h"

namespace pstore::rans2 {

#define PSTORE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

namespace {

template <int V, bool kCtx, bool kLo>
PSTORE_AVX512 size_t Loop(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                          int prob_bits, uint8_t* out, const uint8_t* lo) {
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
      const __m128i sym = _mm512_cvtepi32_epi8(e[v]);
      if (kLo) {
        const __m128i l = _mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + i + 16 * v));
        uint8_t* o = out + 2 * (i + 16 * v);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_unpacklo_epi8(l, sym));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16), _mm_unpackhi_epi8(l, sym));
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 16 * v), sym);
      }
      __m512i f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e[v], 8), f_mask), one);
      __m512i b = _mm512_srli_epi32(e[v], 20);
      x[v] = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x[v], pshift)), b);
      need[v] = _mm512_cmplt_epu32_mask(x[v], low);
    }
    for (int v = 0; v < V; v++) {
      __m512i w =
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + pos)));
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
                           int prob_bits, uint8_t* out, const uint8_t* lo) {
  if (lo)
    return ctx ? Loop<V, true, true>(st, dtab, ctx, n, prob_bits, out, lo)
               : Loop<V, false, true>(st, dtab, ctx, n, prob_bits, out, lo);
  return ctx ? Loop<V, true, false>(st, dtab, ctx, n, prob_bits, out, lo)
             : Loop<V, false, false>(st, dtab, ctx, n, prob_bits, out, lo);
}

template <bool kCtx>
PSTORE_AVX512 void EncodeLoop(const uint8_t* sym, const uint8_t* ctx, size_t n,
                              const uint32_t* enc_a, const uint32_t* enc_rcp, int prob_bits,
                              size_t lanes, uint32_t* x, uint16_t** wp_io) {
  const __m512i m13 = _mm512_set1_epi32(0x1fff);
  const __m512i scale = _mm512_set1_epi32(1 << prob_bits);
  const __m128i xmax_shift = _mm_cvtsi32_si128(31 - prob_bits);
  uint16_t* wp = *wp_io;
  for (size_t step = n / lanes; step-- > 0;) {
    for (size_t v = lanes / 16; v-- > 0;) {
      const size_t i0 = step * lanes + 16 * v;
      __m512i idx =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sym + i0)));
      if (kCtx) {
        __m512i c =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ctx + i0)));
        idx = _mm512_add_epi32(idx, _mm512_slli_epi32(c, 8));
      }
      __m512i a = _mm512_i32gather_epi32(idx, enc_a, 4);
      __m512i rcp = _mm512_i32gather_epi32(idx, enc_rcp, 4);
      __m512i xs = _mm512_loadu_si512(x + 16 * v);
      __m512i freq = _mm512_and_si512(a, m13);
      __m512i bias = _mm512_and_si512(_mm512_srli_epi32(a, 13), m13);
      __m512i shift = _mm512_srli_epi32(a, 26);
      __m512i xmax = _mm512_sll_epi32(freq, xmax_shift);
      __mmask16 emit = _mm512_cmpge_epu32_mask(xs, xmax);
      // Words of the emitting lanes, lowest lane at the lowest address.
      const int cnt = __builtin_popcount(emit);
      __m256i words = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(emit, xs));
      wp -= cnt;
      _mm256_mask_storeu_epi16(wp, __mmask16((1u << cnt) - 1), words);
      xs = _mm512_mask_srli_epi32(xs, emit, xs, 16);
      // q = (xs * rcp) >> 32 >> shift, by even and odd lanes.
      __m512i pe = _mm512_mul_epu32(xs, rcp);
      __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(xs, 32), _mm512_srli_epi64(rcp, 32));
      __m512i q = _mm512_mask_blend_epi32(__mmask16(0xAAAA), _mm512_srli_epi64(pe, 32), po);
      q = _mm512_srlv_epi32(q, shift);
      __m512i cmpl = _mm512_sub_epi32(scale, freq);
      xs = _mm512_add_epi32(_mm512_add_epi32(xs, bias), _mm512_mullo_epi32(q, cmpl));
      _mm512_storeu_si512(x + 16 * v, xs);
    }
  }
  *wp_io = wp;
}

}  // namespace

bool EncodeFast(const uint8_t* sym, const uint8_t* ctx, size_t n, const uint32_t* enc_a,
                const uint32_t* enc_rcp, int prob_bits, int lanes_log2, uint32_t* x,
                uint16_t** wp) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl");
  if (!has_avx512 || lanes_log2 < 4) return false;
  const size_t lanes = size_t(1) << lanes_log2;
  if (ctx)
    EncodeLoop<true>(sym, ctx, n, enc_a, enc_rcp, prob_bits, lanes, x, wp);
  else
    EncodeLoop<false>(sym, ctx, n, enc_a, enc_rcp, prob_bits, lanes, x, wp);
  return true;
}

size_t DecodeFast(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  int prob_bits, int lanes_log2, uint8_t* out, const uint8_t* lo, int simd_level) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") &&
                                 __builtin_cpu_supports("avx512vl");
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  const int level = simd_level;
  if (!has_avx512 || level < 2) {
    if (has_avx2 && level >= 1) return DecodeAvx2(st, dtab, ctx, n, prob_bits, lanes_log2, out, lo);
    return 0;
  }
  switch (lanes_log2) {
    case 4:
      return LoopV<1>(st, dtab, ctx, n, prob_bits, out, lo);
    case 5:
      return LoopV<2>(st, dtab, ctx, n, prob_bits, out, lo);
    case 6:
      return LoopV<4>(st, dtab, ctx, n, prob_bits, out, lo);
    case 7:
      return LoopV<8>(st, dtab, ctx, n, prob_bits, out, lo);
  }
  return 0;
}

}  // namespace pstore::rans2
