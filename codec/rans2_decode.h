// Internal to codec/: the vectorised rANS (format 2) decode loop and its dispatch.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore::rans2 {

struct DecodeState {
  uint32_t x[128];       // lane states
  const uint8_t* words;  // the little-endian u16 word stream (unaligned)
  size_t nwords;
  size_t pos;  // next word to read
};

// Decodes as many whole groups of 2^lanes_log2 symbols as it safely can (the
// word stream is never read past its end) with the widest vector unit this
// CPU has; returns how many symbols it decoded. The caller finishes the rest
// with the scalar loop from st, which gives the same bytes and states.
// REQUIRES: lanes_log2 >= 4. Returns 0 when no vector unit fits.
// lo, if not null: write out[2i] = lo[i], out[2i + 1] = symbol i instead
// (decoding fused with the merge of a byte stream stored raw).
// simd_level: the widest unit it may use, 2 AVX-512, 1 AVX2, 0 none.
size_t DecodeFast(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  int prob_bits, int lanes_log2, uint8_t* out, const uint8_t* lo, int simd_level);

// The AVX2 loop (codec/rans2_avx2.cc), the same contract as DecodeFast.
// REQUIRES: the CPU has AVX2.
size_t DecodeAvx2(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  int prob_bits, int lanes_log2, uint8_t* out, const uint8_t* lo);

// Encodes symbols [0, n) backwards (n a multiple of 2^lanes_log2, lanes >= 16)
// with the vector unit, from lane states x, writing words downwards from *wp;
// the same states and words as the scalar loop. enc_a[c*256+s] packs
// freq | bias << 13 | rcp_shift << 26, enc_rcp the reciprocal. Returns false
// (doing nothing) when no vector unit fits.
bool EncodeFast(const uint8_t* sym, const uint8_t* ctx, size_t n, const uint32_t* enc_a,
                const uint32_t* enc_rcp, int prob_bits, int lanes_log2, uint32_t* x, uint16_t** wp);

}  // namespace pstore::rans2
