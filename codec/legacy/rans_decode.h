// Internal to codec/: the vectorised rANS decode loop and its dispatch.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pstore::rans {

struct DecodeState {
  uint32_t x[32];         // lane states
  const uint16_t* words;  // the word stream (may be unaligned; read with memcpy/loadu)
  size_t nwords;
  size_t pos;  // next word to read
};

// Decodes as many whole groups of 32 symbols as it can do safely (the word
// stream is never read past its end) with the widest instructions this CPU has,
// and returns how many symbols it decoded; the caller finishes the rest with the
// scalar loop from st. REQUIRES: 32 lanes. Returns 0 when no vector unit fits.
size_t DecodeFast(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                  uint8_t* out);

// The AVX-512 loop (codec/rans_avx512.cc); call only where the CPU has it.
size_t DecodeAvx512(DecodeState* st, const uint32_t* dtab, const uint8_t* ctx, size_t n,
                    uint8_t* out);

}  // namespace pstore::rans
