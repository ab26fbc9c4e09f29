// The encoder of the first-format rANS (codec/legacy/rans.h), which pstore
// only reads now: the tests build old streams and frames with it.
//
// Thread-safety: all functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "codec/legacy/rans.h"

namespace pstore::rans {

// Normalises counts (whose sum must be > 0) so that every symbol that occurs
// keeps a frequency >= 1 and the estimated coded size is close to minimal.
void Normalize(const uint32_t counts[256], Table* t);
// Estimated bits to code `counts` with table t (which must cover every symbol
// that occurs in counts).
double CostBits(const uint32_t counts[256], const Table& t);
// Bytes that WriteTable will append for t.
size_t TableBytes(const Table& t);
// Appends t as ReadTable reads it.
void WriteTable(std::string* out, const Table& t);
// Appends [lanes_log2][states][words] for n symbols to out; the caller writes
// the tables first. ctx may be null (every symbol uses tables[0]); otherwise
// symbol i is coded with tables[ctx[i]], which must contain sym[i].
void EncodeBody(const uint8_t* sym, const uint8_t* ctx, size_t n, const Table* tables,
                std::string* out);

}  // namespace pstore::rans
