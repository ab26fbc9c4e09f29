#include "codec/rans.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "codec/rans_decode.h"
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

void Clear(Table* t) {
  std::memset(t->freq, 0, sizeof(t->freq));
  t->nsym = 0;
}

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

size_t VarintBytes(uint32_t v) { return v < 128 ? 1 : 2; }
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

int LanesLog2For(size_t n) {
  if (n >= 8192) return 5;
  if (n >= 256) return 2;
  return 0;
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

bool ReadTable(Reader* in, Table* t) {
  Clear(t);
  uint64_t nsym;
  if (!in->GetVarint(&nsym) || nsym > 256) return false;
  t->nsym = int(nsym);
  if (nsym == 0) return true;
  uint8_t syms[256];
  if (nsym <= kListMax) {
    for (uint64_t i = 0; i < nsym; i++) {
      if (!in->GetU8(&syms[i])) return false;
      if (i > 0 && syms[i] <= syms[i - 1]) return false;  // must ascend strictly
    }
  } else {
    std::string_view bm;
    if (!in->GetBytes(32, &bm)) return false;
    uint64_t k = 0;
    for (int s = 0; s < 256; s++)
      if (uint8_t(bm[s >> 3]) & (1u << (s & 7))) {
        if (k == nsym) return false;
        syms[k++] = uint8_t(s);
      }
    if (k != nsym) return false;
  }
  uint32_t sum = 0;
  for (uint64_t i = 0; i + 1 < nsym; i++) {
    uint64_t fm1;
    if (!in->GetVarint(&fm1) || fm1 >= kProbScale) return false;
    sum += uint32_t(fm1) + 1;
    if (sum >= kProbScale) return false;  // the last symbol needs at least 1
    t->freq[syms[i]] = uint16_t(fm1 + 1);
  }
  t->freq[syms[nsym - 1]] = uint16_t(kProbScale - sum);
  return true;
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

namespace {

// Decoder entry per slot: symbol (8 bits) | freq-1 (12 bits) | slot - cum (12 bits).
void BuildDecodeTable(const Table& t, uint32_t* d) {
  if (t.nsym == 0) {
    // An unused context: any symbol that claims it decodes to garbage with a
    // state that can never return to its start, so the stream fails its checks.
    std::memset(d, 0, sizeof(uint32_t) * kProbScale);
    return;
  }
  uint32_t slot = 0;
  for (uint32_t s = 0; s < 256; s++) {
    uint32_t f = t.freq[s];
    for (uint32_t j = 0; j < f; j++, slot++) d[slot] = s | ((f - 1) << 8) | (j << 20);
  }
}

}  // namespace

Status DecodeBody(Reader* in, const uint8_t* ctx, size_t n, const Table* tables, int ntables,
                  uint8_t* out, std::vector<uint32_t>* scratch) {
  uint8_t lanes_log2;
  if (!in->GetU8(&lanes_log2) || lanes_log2 > kMaxLanesLog2)
    return Status::Corruption("rANS stream: bad lane count");
  if (lanes_log2 != LanesLog2For(n))
    return Status::Corruption("rANS stream: lane count does not match its length");
  const size_t lanes = size_t(1) << lanes_log2;
  uint32_t x[32];
  for (size_t l = 0; l < lanes; l++) {
    if (!in->GetFixed32(&x[l])) return Status::Corruption("rANS stream: truncated states");
    if (x[l] < kStateLow || x[l] >= (1u << 31))
      return Status::Corruption("rANS stream: state out of range");
  }
  if (in->remaining() % 2) return Status::Corruption("rANS stream: odd word bytes");
  if (scratch->size() < size_t(ntables) * kProbScale) scratch->resize(size_t(ntables) * kProbScale);
  uint32_t* dtab = scratch->data();
  for (int k = 0; k < ntables; k++) BuildDecodeTable(tables[k], &dtab[size_t(k) * kProbScale]);

  DecodeState st;
  st.words = reinterpret_cast<const uint16_t*>(in->pos());  // unaligned reads via memcpy below
  st.nwords = in->remaining() / 2;
  st.pos = 0;
  std::memcpy(st.x, x, sizeof(x));
  size_t i = 0;
  if (lanes == 32) i = DecodeFast(&st, dtab, ctx, n, out);
  const size_t lane_mask = lanes - 1;
  const uint8_t* wbytes = in->pos();
  for (; i < n; i++) {
    uint32_t xs = st.x[i & lane_mask];
    uint32_t e = dtab[(ctx ? size_t(ctx[i]) * kProbScale : 0) + (xs & (kProbScale - 1))];
    out[i] = uint8_t(e);
    xs = (((e >> 8) & 0xfff) + 1) * (xs >> kProbBits) + (e >> 20);
    if (xs < kStateLow) {
      if (st.pos == st.nwords) return Status::Corruption("rANS stream: truncated words");
      uint16_t w;
      std::memcpy(&w, wbytes + 2 * st.pos, 2);
      st.pos++;
      xs = (xs << 16) | w;
    }
    st.x[i & lane_mask] = xs;
  }
  for (size_t l = 0; l < lanes; l++)
    if (st.x[l] != kStateLow) return Status::Corruption("rANS stream: final state mismatch");
  if (st.pos != st.nwords) return Status::Corruption("rANS stream: trailing words");
  std::string_view rest;
  in->GetBytes(in->remaining(), &rest);
  return Status::OK();
}

}  // namespace pstore::rans
