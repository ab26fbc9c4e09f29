// The first-format rANS, read only: tables and the decoder (codec/legacy/rans.h).
#include "codec/legacy/rans.h"

#include <cstring>
#include <vector>

#include "codec/legacy/rans_decode.h"
#include "codec/rans_finish.h"

namespace pstore::rans {
namespace {}  // namespace

void Clear(Table* t) {
  std::memset(t->freq, 0, sizeof(t->freq));
  t->nsym = 0;
}

int LanesLog2For(size_t n) {
  if (n >= 8192) return 5;
  if (n >= 256) return 2;
  return 0;
}

namespace {
constexpr int kListMax = 32;  // up to this many symbols are listed, above it a bitmap
}  // namespace

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
                  uint8_t* out, PageVector<uint32_t>* scratch) {
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
  return rans_internal::FinishDecode(st.x, lanes, kStateLow, nullptr, st.pos, st.nwords, in);
}

}  // namespace pstore::rans
