// rANS, second format: the entropy coder behind coders rans2 and rans2-ctx
// (codec/chunk_codec.h). Compared with codec/legacy/rans.h (still read for old
// frames) it has compact tables, a per-stream probability precision and up to
// 128 interleaved states, so that small streams carry little overhead and large
// ones decode with several independent vectors in flight.
//
// Fixed parameters (on-disk format, docs/codec.md): states in [2^15, 2^31),
// 16-bit renormalisation, precision P in [1, 12] bits, 2^L lanes (L <= 7;
// symbol i uses lane i mod 2^L). A stream is
//   [u8 P<<3 | L][tables: one bit block, padded to a byte]
//   [escapes: order 0 only, if its table has an escape symbol]
//   [2^L u32 states][u16 words]
// and the caller stores how many tables there are and what selects them.
//
// Tables never need floating point to decode: quantised tables are rebuilt
// from log-scale codes by one integer routine (BuildQuantized) that the
// encoder runs too.
//
// Thread-safety: all functions are reentrant (scratch buffers are the
// caller's); tables are plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/coding.h"
#include "common/page_allocator.h"
#include "common/status.h"

namespace pstore::rans2 {

constexpr int kMaxProbBits = 12;
constexpr uint32_t kStateLow = 1u << 15;
constexpr int kMaxLanesLog2 = 7;
constexpr int kMaxContexts = 8;

// How a table is written (docs/codec.md, "rANS tables").
enum class TableMode : uint8_t { kEmpty = 0, kSingle = 1, kQuantized = 2, kExact = 3 };

// Frequencies of one context at precision P: freq[s] >= 1 for symbols in use,
// summing to 2^P; all zero for an empty (unused) context.
struct Table {
  uint16_t freq[256];
  int nsym = 0;
  // How WriteTables codes it (filled by Choose, or by ReadTables).
  TableMode mode = TableMode::kEmpty;
  uint8_t r_log2 = 0;  // quantised: 2^r_log2 steps per octave
  uint8_t k = 0;       // Exp-Golomb order of the frequency codes
  uint8_t q[256];      // quantised: log-scale code per symbol
  // Order-0 streams only: a symbol that stands for "the next escaped byte"
  // (rare symbols cost less as 8 raw bits than as a slot of the table).
  bool has_escape = false;
  uint8_t escape = 0;
};

// Builds the table that minimises (table bits + coded bits) for counts at
// precision prob_bits, trying exact and quantised forms. Returns that total in
// bits. counts must not be all zero; prob_bits must allow every symbol >= 1.
// only_r >= 0 restricts the quantised forms to that resolution (and skips
// the exact form).
double Choose(const uint32_t counts[256], int prob_bits, Table* t, int only_r = -1);
// An empty table, for an unused context.
void Clear(Table* t);
// The estimated coded bits of counts under table t.
double DataBits(const uint32_t counts[256], const Table& t, int prob_bits);
// Frequencies from quantised codes: the integer routine both sides run.
// syms ascending, nsym >= 2.
void BuildQuantized(const uint8_t* syms, const uint8_t* q, int nsym, int r_log2, int prob_bits,
                    uint16_t* freq);

// Appends the tables as one bit block padded to a byte (the precision they
// were built at is not written: the reader is told it).
void WriteTables(std::string* out, const Table* t, int ntables);
// Reads ntables tables; false if the bytes are not valid tables.
bool ReadTables(Reader* in, int prob_bits, Table* t, int ntables);

// Interleaved lanes the encoder uses for n symbols: more lanes decode faster
// (up to 64) but cost 4 bytes each. fast: lean to speed. max_lanes_log2 caps it.
int LanesLog2For(size_t n, int max_lanes_log2, bool fast);
// Precision for n symbols of which nsym distinct: small streams use fewer
// bits, so that their decoding tables are quick to set up.
int ProbBitsFor(size_t n, int nsym);
// Bytes of a stream besides tables and words.
inline size_t StreamOverhead(int lanes_log2) {
  return 1 + 4u * (1u << lanes_log2);
}

// Appends [states][words] for n symbols. ctx may be null (tables[0] for every
// symbol); otherwise symbol i uses tables[ctx[i]], which must contain sym[i].
// Buffers the encoder reuses between calls (one per thread, like the encoder
// that owns it). Without one, each call allocates its own.
struct EncodeScratch {
  std::vector<uint16_t> words;
  std::vector<uint32_t> enc_a, enc_rcp;
};

// How a stream is encoded beyond its symbols and tables (all optional).
struct EncodeArgs {
  // Maps every byte to the symbol it is coded as (tables[0] only: the escape
  // of an order-0 stream).
  const uint8_t* remap = nullptr;
  EncodeScratch* scratch = nullptr;
  // The state each lane starts from (in [2^15, 2^31); 2^15 otherwise): a
  // start above 2^15 carries its excess to the decoder, which finds it in the
  // lane's final state (coder rans2-carry).
  const uint32_t* init = nullptr;
  bool compact = false;  // states in 3 or 4 bytes (see PutCompactState)
  int simd_level = 2;    // 0: the scalar loop only (the same bytes)
};
void EncodeBody(const uint8_t* sym, const uint8_t* ctx, size_t n, const Table* tables,
                int prob_bits, int lanes_log2, std::string* out, const EncodeArgs& args = {});

// How a stream is decoded beyond its bytes (all optional).
struct DecodeArgs {
  // Fuses a merge: out (2n bytes) gets out[2i] = lo[i], out[2i + 1] = symbol i.
  const uint8_t* lo = nullptr;
  // DecodeOrder0 with lo: holds the symbols of a stream with escapes before
  // they are merged (n bytes, reused).
  PageVector<uint8_t>* byte_scratch = nullptr;
  // 2^lanes_log2 entries (DecodeOrder0: 2^kMaxLanesLog2): receives the final
  // states instead of their being checked against 2^15; the caller checks
  // them (they hold what the encoder's init carried).
  uint32_t* final = nullptr;
  int* lanes_log2 = nullptr;  // DecodeOrder0: receives the stream's lane count
  bool compact = false;       // as EncodeArgs::compact
  // 2: AVX-512 where the CPU has it, 1: AVX2 at most, 0: the scalar loop only.
  int simd_level = 2;
};

// Decodes n symbols from in (positioned at the states) into out. ctx values
// must be < ntables. Consumes all of in; every read is bounds-checked, every
// state must end at 2^15 and every word must be used, or it is kCorruption.
// scratch: reused between calls for the decoding tables.
Status DecodeBody(Reader* in, const uint8_t* ctx, size_t n, const Table* tables, int ntables,
                  int prob_bits, int lanes_log2, uint8_t* out, PageVector<uint32_t>* scratch,
                  const DecodeArgs& args = {});

// Compact states (coder rans2-carry): state x is written as the 3 bytes of
// x << 1 | 1 if x < 2^23, else the 4 bytes of x << 1, little-endian.
void PutCompactState(std::string* out, uint32_t x);
// False if truncated, out of [2^15, 2^31) or not in its shortest form.
bool GetCompactState(Reader* in, uint32_t* x);

// How an order-0 stream will be coded: precision, lanes, the table and which
// symbols escape; bytes is the estimated size of the stream.
struct Order0Plan {
  int prob_bits = 0, lanes_log2 = 0;
  Table table;
  bool rare[256] = {};
  size_t nesc = 0;
  double bytes = 0;
};
void PlanOrder0(size_t n, const uint32_t hist[256], int max_lanes_log2, bool fast,
                Order0Plan* plan);
// args.init: 2^plan.lanes_log2 entries; args.remap is the plan's.
void EncodeOrder0(const uint8_t* sym, size_t n, const Order0Plan& plan, std::string* out,
                  const EncodeArgs& args = {});

// The whole order-0 stream: [hdr][table][escapes][states][words], where
// escapes (only if the table has an escape symbol) are [varint k][k bytes].
void EncodeOrder0(const uint8_t* sym, size_t n, const uint32_t hist[256], int max_lanes_log2,
                  bool fast, std::string* out);
// Its estimated size in bytes (without encoding).
double EstimateOrder0(size_t n, const uint32_t hist[256], int max_lanes_log2, bool fast);
Status DecodeOrder0(std::string_view in, size_t n, uint8_t* out, PageVector<uint32_t>* scratch,
                    const DecodeArgs& args = {});
// Replaces, in order, every byte e of out[0, n) with the next byte of esc;
// kCorruption unless their counts match.
Status PatchEscapes(uint8_t e, std::string_view esc, uint8_t* out, size_t n);

}  // namespace pstore::rans2
