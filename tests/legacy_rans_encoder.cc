// The encoder of the first-format rANS (codec/legacy/rans.h), which pstore
// only reads now: the tests build old streams and frames with it.
#include "tests/legacy_rans_encoder.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "codec/rans_enc_sym.h"

namespace pstore::rans {
namespace {

// log2(f) for f in [0, 4096], f = 0 unused.
struct Log2Table {
  float v[kProbScale + 1];
  Log2Table() {
    v[0] = 0;
    for (uint32_t f = 1; f <= kProbScale; f++) v[f] = float(std::log2(double(f)));
  }
};
const Log2Table& Log2() {
  static const Log2Table t;
  return t;
}

using rans_internal::EncSym;

}  // namespace

void Normalize(const uint32_t counts[256], Table* t) {
  Clear(t);
  uint64_t total = 0;
  for (int s = 0; s < 256; s++) total += counts[s];
  if (total == 0) return;
  const float* lg = Log2().v;
  int32_t sum = 0;
  for (int s = 0; s < 256; s++) {
    if (!counts[s]) continue;
    uint64_t f = (uint64_t(counts[s]) * kProbScale + total / 2) / total;
    if (f < 1) f = 1;
    if (f > kProbScale) f = kProbScale;
    t->freq[s] = uint16_t(f);
    sum += int32_t(f);
    t->nsym++;
  }
  // Move the sum to exactly 4096 one step at a time, each time changing the
  // frequency whose change costs least (or gains most) in coded bits.
  while (sum != int32_t(kProbScale)) {
    int best = -1;
    double best_delta = 0;
    for (int s = 0; s < 256; s++) {
      uint32_t f = t->freq[s];
      if (!f) continue;
      if (sum < int32_t(kProbScale)) {
        double gain = double(counts[s]) * (lg[f + 1] - lg[f]);
        if (best < 0 || gain > best_delta) best = s, best_delta = gain;
      } else if (f > 1) {
        double loss = double(counts[s]) * (lg[f] - lg[f - 1]);
        if (best < 0 || loss < best_delta) best = s, best_delta = loss;
      }
    }
    if (sum < int32_t(kProbScale)) {
      t->freq[best]++;
      sum++;
    } else {
      t->freq[best]--;
      sum--;
    }
  }
}

double CostBits(const uint32_t counts[256], const Table& t) {
  const float* lg = Log2().v;
  double bits = 0;
  for (int s = 0; s < 256; s++)
    if (counts[s]) bits += double(counts[s]) * (kProbBits - lg[t.freq[s]]);
  return bits;
}

namespace {
constexpr int kListMax = 32;  // up to this many symbols are listed, above it a bitmap

size_t VarintBytes(uint32_t v) {
  return v < 128 ? 1 : 2;
}
}  // namespace

size_t TableBytes(const Table& t) {
  size_t n = VarintBytes(uint32_t(t.nsym));
  if (t.nsym == 0) return n;
  n += t.nsym <= kListMax ? size_t(t.nsym) : 32;
  int seen = 0;
  for (int s = 0; s < 256 && seen < t.nsym - 1; s++)
    if (t.freq[s]) n += VarintBytes(t.freq[s] - 1u), seen++;
  return n;
}

void WriteTable(std::string* out, const Table& t) {
  PutVarint(out, uint64_t(t.nsym));
  if (t.nsym == 0) return;
  if (t.nsym <= kListMax) {
    for (int s = 0; s < 256; s++)
      if (t.freq[s]) out->push_back(char(s));
  } else {
    uint8_t bitmap[32] = {};
    for (int s = 0; s < 256; s++)
      if (t.freq[s]) bitmap[s >> 3] |= uint8_t(1u << (s & 7));
    out->append(reinterpret_cast<const char*>(bitmap), 32);
  }
  int seen = 0;
  for (int s = 0; s < 256 && seen < t.nsym - 1; s++)
    if (t.freq[s]) PutVarint(out, t.freq[s] - 1u), seen++;
}

void EncodeBody(const uint8_t* sym, const uint8_t* ctx, size_t n, const Table* tables,
                std::string* out) {
  const int lanes_log2 = LanesLog2For(n);
  const size_t lanes = size_t(1) << lanes_log2;
  const size_t lane_mask = lanes - 1;
  int ntables = 1;
  if (ctx) {
    for (size_t i = 0; i < n; i++)
      if (ctx[i] + 1 > ntables) ntables = ctx[i] + 1;
  }
  std::vector<EncSym> enc(size_t(ntables) * 256);
  for (int k = 0; k < ntables; k++) {
    uint32_t start = 0;
    for (int s = 0; s < 256; s++) {
      uint32_t f = tables[k].freq[s];
      if (f) rans_internal::InitEncSym(&enc[size_t(k) * 256 + s], start, f, kProbBits);
      start += f;
    }
  }
  // Words are produced last-symbol-first; filling the buffer from its end
  // leaves them in the order the decoder reads them.
  std::vector<uint16_t> words(n + 1);
  uint16_t* end = words.data() + words.size();
  uint16_t* wp = end;
  uint32_t x[32];
  for (size_t l = 0; l < lanes; l++) x[l] = kStateLow;
  for (size_t i = n; i-- > 0;) {
    const EncSym& e = enc[(ctx ? size_t(ctx[i]) * 256 : 0) + sym[i]];
    uint32_t xs = x[i & lane_mask];
    if (xs >= e.x_max) {
      *--wp = uint16_t(xs);
      xs >>= 16;
    }
    uint32_t q = uint32_t((uint64_t(xs) * e.rcp_freq) >> 32) >> e.rcp_shift;
    x[i & lane_mask] = xs + e.bias + q * e.cmpl_freq;
  }
  out->push_back(char(lanes_log2));
  for (size_t l = 0; l < lanes; l++) PutFixed32(out, x[l]);
  size_t nwords = size_t(end - wp);
  size_t at = out->size();
  out->resize(at + 2 * nwords);
  std::memcpy(out->data() + at, wp, 2 * nwords);  // little-endian host
}

}  // namespace pstore::rans
