// Static interleaved rANS over bytes, order-0 or with a small per-symbol
// context: the first format of the chunk codec's entropy coder (coders 4 and
// 5), read only: frames that use it stay readable; the encoder writes the
// second format (codec/rans2.h). The tests' encoder of this format is
// tests/legacy_rans_encoder.h.
//
// Parameters (fixed; part of the on-disk format, see docs/codec.md):
//   probability precision 12 bits (frequencies sum to 4096), 32-bit states in
//   [2^15, 2^31), renormalisation in 16-bit words, 1 to 32 interleaved states
//   (symbol i uses state i mod lanes).
//
// A stream is [u8 lanes_log2][K tables][lanes u32 final states][u16 words...];
// the caller stores K and the context map. Decoding checks that every read stays
// inside the stream, that every state ends where encoding began and that the
// words are used up exactly: a corrupted stream gives kCorruption, never a crash
// and never a read outside the input.
//
// Thread-safety: all functions are reentrant; tables are plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/coding.h"
#include "common/page_allocator.h"
#include "common/status.h"

namespace pstore::rans {

constexpr int kProbBits = 12;
constexpr uint32_t kProbScale = 1u << kProbBits;
constexpr uint32_t kStateLow = 1u << 15;
constexpr int kMaxLanesLog2 = 5;
constexpr int kMaxContexts = 8;

// Normalised frequencies of one context: freq[s] in [1, 4096] for symbols that
// occur, 0 otherwise, summing to 4096; or all zero for an unused context.
struct Table {
  uint16_t freq[256];
  int nsym = 0;  // symbols with freq > 0
};

// An empty (unused) table.
void Clear(Table* t);

// Fixed bytes of a stream besides tables and words: lanes byte and states.
inline size_t StreamOverhead(int lanes_log2) {
  return 1 + 4u * (1u << lanes_log2);
}

// The number of interleaved states a stream of n symbols has.
int LanesLog2For(size_t n);
// Reads a table (docs/codec.md); false if the bytes are not a valid table.
bool ReadTable(Reader* in, Table* t);

// Decodes n symbols from in (positioned after the tables) into out, which holds
// n bytes. ctx may be null (every symbol uses tables[0]); otherwise symbol i
// uses tables[ctx[i]], ctx values < ntables. Consumes all of in.
// scratch: reused between calls to hold the decoding tables.
Status DecodeBody(Reader* in, const uint8_t* ctx, size_t n, const Table* tables, int ntables,
                  uint8_t* out, PageVector<uint32_t>* scratch);

}  // namespace pstore::rans
