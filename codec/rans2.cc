#include "codec/rans2.h"
#include "codec/rans_enc_sym.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codec/bitio.h"
#include "codec/rans2_decode.h"
#include "codec/rans_finish.h"
#include "common/target.h"

namespace pstore::rans2 {
namespace {

// log2(f) for f in [0, 4096] (encoder-side estimates only).
struct Log2Table {
  float v[4097];
  Log2Table() {
    v[0] = 0;
    for (int f = 1; f <= 4096; f++) v[f] = float(std::log2(double(f)));
  }
};
const float* Lg() {
  static const Log2Table t;
  return t.v;
}

// 256 * 2^(j/8), rounded: the mantissas of quantised weights.
constexpr uint32_t kPow2Frac[8] = {256, 279, 304, 332, 362, 395, 431, 470};

// Moves sum(freq) to exactly 2^P, one unit per symbol per pass, visiting
// symbols in the given order. Integer only; the decoder runs it too.
void FixSum(const uint8_t* order, int nsym, int prob_bits, uint16_t* freq) {
  int32_t diff = int32_t(1u << prob_bits);
  for (int i = 0; i < nsym; i++) diff -= freq[order[i]];
  while (diff != 0) {
    for (int i = 0; i < nsym && diff != 0; i++) {
      uint16_t& f = freq[order[i]];
      if (diff > 0) {
        f++;
        diff--;
      } else if (f > 1) {
        f--;
        diff++;
      }
    }
  }
}

void NormalizeExact(const uint32_t counts[256], int prob_bits, uint16_t* freq) {
  const uint32_t scale = 1u << prob_bits;
  uint8_t syms[256];
  int nsym = 0;
  uint64_t total = 0;
  for (int s = 0; s < 256; s++) {
    freq[s] = 0;
    if (counts[s]) syms[nsym++] = uint8_t(s), total += counts[s];
  }
  const float* lg = Lg();
  int32_t sum = 0;
  for (int i = 0; i < nsym; i++) {
    const int s = syms[i];
    uint64_t f = (uint64_t(counts[s]) * scale + total / 2) / total;
    f = std::clamp<uint64_t>(f, 1, scale);
    freq[s] = uint16_t(f);
    sum += int32_t(f);
  }
  // Greedy: each unit goes where it gains (or costs) the most (least) bits.
  while (sum != int32_t(scale)) {
    int best = -1;
    double best_delta = 0;
    for (int i = 0; i < nsym; i++) {
      const int s = syms[i];
      uint32_t f = freq[s];
      if (sum < int32_t(scale)) {
        double gain = double(counts[s]) * (lg[f + 1] - lg[f]);
        if (best < 0 || gain > best_delta) best = s, best_delta = gain;
      } else if (f > 1) {
        double loss = double(counts[s]) * (lg[f] - lg[f - 1]);
        if (best < 0 || loss < best_delta) best = s, best_delta = loss;
      }
    }
    if (sum < int32_t(scale))
      freq[best]++, sum++;
    else
      freq[best]--, sum--;
  }
}

// Bits of the symbol set: mode, nsym-2, first symbol, then gaps.
int SymbolSetBits(const uint8_t* syms, int nsym) {
  int bits = 2 + 8 + 8 + 1;
  for (int i = 1; i < nsym; i++) bits += BitWriter::ExpGolombBits(syms[i] - syms[i - 1] - 1u, 0);
  return bits;
}

}  // namespace

void Clear(Table* t) {
  std::memset(t->freq, 0, sizeof(t->freq));
  t->nsym = 0;
  t->mode = TableMode::kEmpty;
  t->has_escape = false;
}

void BuildQuantized(const uint8_t* syms, const uint8_t* q, int nsym, int r_log2, int prob_bits,
                    uint16_t* freq) {
  const uint32_t scale = 1u << prob_bits;
  const uint32_t rmask = (1u << r_log2) - 1;
  uint64_t w[256];
  uint64_t total = 0;
  int qmax = 0;
  for (int i = 0; i < nsym; i++) {
    w[i] = uint64_t(kPow2Frac[(q[i] & rmask) << (3 - r_log2)]) << (q[i] >> r_log2);
    total += w[i];
    qmax = std::max(qmax, int(q[i]));
  }
  for (int i = 0; i < nsym; i++) {
    uint64_t f = (w[i] * scale + total / 2) / total;
    freq[syms[i]] = uint16_t(std::clamp<uint64_t>(f, 1, scale));
  }
  // Rounding leaves the sum off by a little: fix it from the most probable
  // symbols down (descending code, then ascending symbol: a counting sort).
  uint16_t start[128] = {};
  for (int i = 0; i < nsym; i++) start[qmax - q[i]]++;
  for (int b = 0, acc = 0; b <= qmax; b++) {
    int c = start[b];
    start[b] = uint16_t(acc);
    acc += c;
  }
  uint8_t order[256];
  for (int i = 0; i < nsym; i++) order[start[qmax - q[i]]++] = syms[i];
  FixSum(order, nsym, prob_bits, freq);
}

double DataBits(const uint32_t counts[256], const Table& t, int prob_bits) {
  const float* lg = Lg();
  double bits = 0;
  for (int s = 0; s < 256; s++)
    if (counts[s]) bits += double(counts[s]) * (prob_bits - lg[t.freq[s]]);
  return bits;
}

double Choose(const uint32_t counts[256], int prob_bits, Table* t, int only_r) {
  Clear(t);
  uint8_t syms[256];
  int nsym = 0;
  uint64_t total = 0;
  for (int s = 0; s < 256; s++)
    if (counts[s]) syms[nsym++] = uint8_t(s), total += counts[s];
  t->nsym = nsym;
  if (nsym == 1) {
    t->mode = TableMode::kSingle;
    t->freq[syms[0]] = uint16_t(1u << prob_bits);
    return 2 + 8;
  }
  const int set_bits = SymbolSetBits(syms, nsym);
  const float* lg = Lg();
  auto data_bits = [&](const uint16_t* freq) {
    double bits = 0;
    for (int i = 0; i < nsym; i++)
      bits += double(counts[syms[i]]) * (prob_bits - lg[freq[syms[i]]]);
    return bits;
  };
  // Exact: Exp-Golomb codes of freq-1 for all but the last symbol. It can
  // beat the quantised forms only on the longest streams (on the corpus it
  // changes nothing measurable below 256 Ki symbols), so only those try it.
  double best = INFINITY;
  if (total >= 262144 && only_r < 0) {
    NormalizeExact(counts, prob_bits, t->freq);
    int best_k = 0, best_kbits = INT32_MAX;
    for (int k = 0; k < 8; k++) {
      int b = 0;
      for (int i = 0; i + 1 < nsym; i++) b += BitWriter::ExpGolombBits(t->freq[syms[i]] - 1u, k);
      if (b < best_kbits) best_kbits = b, best_k = k;
    }
    t->mode = TableMode::kExact;
    t->k = uint8_t(best_k);
    best = set_bits + 3 + best_kbits + data_bits(t->freq);
  }
  // Quantised: log-scale codes at 2^r steps per octave, delta-coded. Coarse
  // steps only pay in short streams.
  float l2[256];
  const double shift = double(prob_bits) - std::log2(double(total));
  for (int i = 0; i < nsym; i++) l2[i] = float(std::log2(double(counts[syms[i]])) + shift);
  Table cand;
  for (int r = only_r >= 0      ? only_r
               : total >= 16384 ? 2
                                : 0;
       r <= (only_r >= 0 ? only_r : 3); r++) {
    const int qmax = prob_bits << r;
    uint8_t q[256];
    for (int i = 0; i < nsym; i++) {
      float l = l2[i] * float(1 << r) + 0.5f;
      q[i] = uint8_t(l <= 0 ? 0 : std::min(int(l), qmax));
    }
    BuildQuantized(syms, q, nsym, r, prob_bits, cand.freq);
    // Bits of the deltas for every order k at once: EG_k(z) takes
    // 2*floor(log2((z >> k) + 1)) + 1 + k bits.
    int kbits[4] = {0, 0, 0, 0};
    for (int i = 1; i < nsym; i++) {
      const int32_t d = int32_t(q[i]) - q[i - 1];
      const uint32_t z = uint32_t(d < 0 ? -2 * d - 1 : 2 * d);
      for (int k = 0; k < 4; k++) kbits[k] += 2 * (31 - __builtin_clz((z >> k) + 1)) + 1 + k;
    }
    int best_k = 0, best_kbits = kbits[0];
    for (int k = 1; k < 4; k++)
      if (kbits[k] < best_kbits) best_kbits = kbits[k], best_k = k;
    double bits = set_bits + 2 + 2 + 7 + best_kbits + data_bits(cand.freq);
    if (bits < best) {
      best = bits;
      for (int i = 0; i < nsym; i++) t->freq[syms[i]] = cand.freq[syms[i]];
      std::memcpy(t->q, q, size_t(nsym));
      t->mode = TableMode::kQuantized;
      t->r_log2 = uint8_t(r);
      t->k = uint8_t(best_k);
    }
  }
  return best;
}

void WriteTables(std::string* out, const Table* tables, int ntables) {
  BitWriter w(out);
  for (int c = 0; c < ntables; c++) {
    const Table& t = tables[c];
    w.Put(uint32_t(t.mode), 2);
    if (t.mode == TableMode::kEmpty) continue;
    uint8_t syms[256];
    int nsym = 0;
    for (int s = 0; s < 256; s++)
      if (t.freq[s]) syms[nsym++] = uint8_t(s);
    if (t.mode == TableMode::kSingle) {
      w.Put(syms[0], 8);
      continue;
    }
    w.Put(uint32_t(nsym - 2), 8);
    w.Put(syms[0], 8);
    for (int i = 1; i < nsym; i++) w.PutExpGolomb(syms[i] - syms[i - 1] - 1u, 0);
    w.Put(t.has_escape, 1);
    if (t.has_escape) w.Put(t.escape, 8);
    if (t.mode == TableMode::kExact) {
      w.Put(t.k, 3);
      for (int i = 0; i + 1 < nsym; i++) w.PutExpGolomb(t.freq[syms[i]] - 1u, t.k);
    } else {
      w.Put(t.r_log2, 2);
      w.Put(t.k, 2);
      w.Put(t.q[0], 7);
      for (int i = 1; i < nsym; i++) w.PutSigned(int32_t(t.q[i]) - t.q[i - 1], t.k);
    }
  }
  w.Flush();
}

bool ReadTables(Reader* in, int prob_bits, Table* tables, int ntables) {
  BitReader r(in->pos(), in->remaining());
  const uint32_t scale = 1u << prob_bits;
  for (int c = 0; c < ntables; c++) {
    Table& t = tables[c];
    Clear(&t);
    uint32_t mode, v;
    if (!r.Get(2, &mode)) return false;
    t.mode = TableMode(mode);
    if (t.mode == TableMode::kEmpty) continue;
    if (t.mode == TableMode::kSingle) {
      if (!r.Get(8, &v)) return false;
      t.freq[v] = uint16_t(scale);
      t.nsym = 1;
      continue;
    }
    uint8_t syms[256];
    uint32_t nsym;
    if (!r.Get(8, &nsym) || !r.Get(8, &v)) return false;
    nsym += 2;
    if (nsym > scale) return false;
    syms[0] = uint8_t(v);
    for (uint32_t i = 1; i < nsym; i++) {
      uint32_t gap;
      if (!r.GetExpGolomb(0, &gap) || syms[i - 1] + gap + 1 > 255) return false;
      syms[i] = uint8_t(syms[i - 1] + gap + 1);
    }
    t.nsym = int(nsym);
    uint32_t has_esc, esc = 0;
    if (!r.Get(1, &has_esc) || (has_esc && !r.Get(8, &esc))) return false;
    t.has_escape = has_esc != 0;
    t.escape = uint8_t(esc);
    if (t.has_escape && !std::binary_search(syms, syms + nsym, uint8_t(esc))) return false;
    if (t.mode == TableMode::kExact) {
      uint32_t k, sum = 0;
      if (!r.Get(3, &k)) return false;
      for (uint32_t i = 0; i + 1 < nsym; i++) {
        uint32_t fm1;
        if (!r.GetExpGolomb(int(k), &fm1) || fm1 >= scale) return false;
        sum += fm1 + 1;
        if (sum >= scale) return false;  // the last symbol needs at least 1
        t.freq[syms[i]] = uint16_t(fm1 + 1);
      }
      t.freq[syms[nsym - 1]] = uint16_t(scale - sum);
    } else {
      uint32_t rl, k, q0;
      if (!r.Get(2, &rl) || !r.Get(2, &k) || !r.Get(7, &q0)) return false;
      const int32_t qmax = int32_t(prob_bits) << rl;
      uint8_t q[256];
      int32_t prev = int32_t(q0);
      if (prev > qmax) return false;
      q[0] = uint8_t(prev);
      for (uint32_t i = 1; i < nsym; i++) {
        int32_t d;
        if (!r.GetSigned(int(k), &d)) return false;
        prev += d;
        if (prev < 0 || prev > qmax) return false;
        q[i] = uint8_t(prev);
      }
      BuildQuantized(syms, q, int(nsym), int(rl), prob_bits, t.freq);
    }
  }
  std::string_view skip;
  return in->GetBytes(r.BytesUsed(), &skip);
}

int LanesLog2For(size_t n, int max_lanes_log2, bool fast) {
  int l;
  if (fast) {
    // Decode speed first: 16 lanes (one vector) from 256 symbols, 64 (four
    // vectors in flight) from 4 Ki, 128 from 64 Ki.
    l = n < 256 ? 0 : n < 4096 ? 4 : n < 65536 ? 6 : 7;
  } else {
    l = n < 512 ? 0 : n < 2048 ? 2 : n < 16384 ? 4 : n < 65536 ? 5 : 6;
  }
  return std::min(l, max_lanes_log2);
}

int ProbBitsFor(size_t n, int nsym) {
  // About n/8 slots: small streams set up small decoding tables. 2^P must
  // leave room for every symbol.
  int p = 64 - __builtin_clzll(uint64_t(n) | 1) - 3;
  int need = 32 - __builtin_clz(uint32_t(nsym) | 1) + 1;
  return std::clamp(std::max(p, need), 8, kMaxProbBits);
}

namespace {

using rans_internal::EncSym;
using rans_internal::InitEncSym;

// Symbols [0, n) of a block that starts at index `first` of the stream.
template <bool kCtx>
uint16_t* EncodeLoop(const uint8_t* sym, const uint8_t* ctx, size_t n, const EncSym* enc,
                     size_t lane_mask, uint32_t* x, uint16_t* wp, size_t first) {
  for (size_t i = n; i-- > 0;) {
    const EncSym& e = enc[(kCtx ? size_t(ctx[i]) * 256 : 0) + sym[i]];
    const size_t lane = (first + i) & lane_mask;
    uint32_t xs = x[lane];
    // Branch-free renormalisation (the branch is unpredictable): the word is
    // always stored, and kept only when the state is too large.
    const bool emit = xs >= e.x_max;
    wp[-1] = uint16_t(xs);
    wp -= emit;
    xs >>= emit ? 16 : 0;
    uint32_t q = uint32_t((uint64_t(xs) * e.rcp_freq) >> 32) >> e.rcp_shift;
    x[lane] = xs + e.bias + q * e.cmpl_freq;
  }
  return wp;
}

}  // namespace

void EncodeBody(const uint8_t* sym, const uint8_t* ctx, size_t n, const Table* tables,
                int prob_bits, int lanes_log2, std::string* out, const EncodeArgs& args) {
  const uint8_t* remap = args.remap;
  const uint32_t* init = args.init;
  const bool compact = args.compact;
  EncodeScratch local;
  EncodeScratch* scratch = args.scratch ? args.scratch : &local;
  const size_t lanes = size_t(1) << lanes_log2;
  int ntables = 1;
  if (ctx)
    for (size_t i = 0; i < n; i++) ntables = std::max(ntables, ctx[i] + 1);
  EncSym enc[kMaxContexts * 256];
  for (int k = 0; k < ntables; k++) {
    uint32_t start = 0;
    for (int s = 0; s < 256; s++) {
      uint32_t f = tables[k].freq[s];
      if (f) InitEncSym(&enc[k * 256 + s], start, f, prob_bits);
      start += f;
    }
  }
  if (remap)
    for (int s = 0; s < 256; s++)
      if (remap[s] != s) enc[s] = enc[remap[s]];
  // Words come out last symbol first; filling the buffer from its end leaves
  // them in the order the decoder reads them. At most one word per symbol, and
  // one spare slot for the store that the loop makes before it knows.
  std::vector<uint16_t>& words = scratch->words;
  words.resize(n + 1);
  uint16_t* end = words.data() + words.size();
  uint32_t x[1 << kMaxLanesLog2];
  for (size_t l = 0; l < lanes; l++) x[l] = init ? init[l] : kStateLow;
  // The last, partial step goes through the scalar loop first (encoding runs
  // backwards); the whole steps below it through the vector loop if there is one.
  const size_t n_full = lanes >= 16 && args.simd_level > 0 ? n - n % lanes : 0;
  uint16_t* wp = end;
  if (n_full < n) {
    wp = ctx ? EncodeLoop<true>(sym + n_full, ctx + n_full, n - n_full, enc, lanes - 1, x, wp,
                                n_full)
             : EncodeLoop<false>(sym + n_full, nullptr, n - n_full, enc, lanes - 1, x, wp, n_full);
  }
  if (n_full > 0) {
    std::vector<uint32_t>& va = scratch->enc_a;
    std::vector<uint32_t>& vr = scratch->enc_rcp;
    va.resize(size_t(ntables) * 256);
    vr.resize(size_t(ntables) * 256);
    for (int k = 0; k < ntables; k++)
      for (int s = 0; s < 256; s++) {
        const uint32_t f = tables[k].freq[remap && k == 0 ? remap[s] : s];
        const EncSym& e = enc[k * 256 + s];
        va[k * 256 + s] = f ? f | (e.bias << 13) | (uint32_t(e.rcp_shift) << 26) : 0;
        vr[k * 256 + s] = f ? e.rcp_freq : 0;
      }
    if (!EncodeFast(sym, ctx, n_full, va.data(), vr.data(), prob_bits, lanes_log2, x, &wp)) {
      wp = ctx ? EncodeLoop<true>(sym, ctx, n_full, enc, lanes - 1, x, wp, 0)
               : EncodeLoop<false>(sym, nullptr, n_full, enc, lanes - 1, x, wp, 0);
    }
  }
  size_t nwords = size_t(end - wp);
  if (compact) {
    for (size_t l = 0; l < lanes; l++) PutCompactState(out, x[l]);
  } else {
    const size_t at = out->size();
    out->resize(at + 4 * lanes);
    for (size_t l = 0; l < lanes; l++) std::memcpy(out->data() + at + 4 * l, &x[l], 4);  // LE host
  }
  out->append(reinterpret_cast<const char*>(wp), 2 * nwords);
}

void PutCompactState(std::string* out, uint32_t x) {
  const bool shrt = x < (1u << 23);
  const uint32_t v = x << 1 | uint32_t(shrt);
  for (int b = 0; b < (shrt ? 3 : 4); b++) out->push_back(char(uint8_t(v >> (8 * b))));
}

bool GetCompactState(Reader* in, uint32_t* x) {
  std::string_view b;
  if (!in->GetBytes(3, &b)) return false;
  uint32_t v =
      uint32_t(uint8_t(b[0])) | uint32_t(uint8_t(b[1])) << 8 | uint32_t(uint8_t(b[2])) << 16;
  if (!(v & 1)) {
    uint8_t hi;
    if (!in->GetU8(&hi)) return false;
    v |= uint32_t(hi) << 24;
    if ((v >> 1) < (1u << 23)) return false;  // the short form was due
  }
  *x = v >> 1;
  return *x >= kStateLow;
}

namespace {

// Entry per slot: symbol (8 bits) | freq-1 (12 bits) | slot - cum (12 bits).
// Written 8 entries at a time: d must have 8 spare entries past 2^P.
PSTORE_TARGET_CLONES("avx512f", "avx2", "default")
void BuildDecodeTable(const Table& t, int prob_bits, uint32_t* d) {
  const uint32_t scale = 1u << prob_bits;
  if (t.nsym == 0) {
    // An unused context: whatever claims it decodes to garbage with a state
    // that cannot return to its start, so the stream fails its checks.
    std::memset(d, 0, sizeof(uint32_t) * scale);
    return;
  }
  uint32_t slot = 0;
  for (uint32_t s = 0; s < 256; s++) {
    const uint32_t f = t.freq[s];
    if (!f) continue;
    const uint32_t base = s | ((f - 1) << 8);
    for (uint32_t j = 0; j < f; j += 8)
      for (uint32_t k = 0; k < 8; k++) d[slot + j + k] = base + ((j + k) << 20);
    slot += f;
  }
}

// The portable loop: symbols [i, n) from lane states x, words from wbytes.
// False if the words run out.
template <bool kCtx, bool kLo>
bool ScalarLoop(uint32_t* __restrict x, size_t lanes, const uint32_t* __restrict dtab,
                const uint8_t* __restrict ctx, size_t i, size_t n, int prob_bits,
                const uint8_t* __restrict wbytes, size_t nwords, size_t* pos_io,
                uint8_t* __restrict out, const uint8_t* __restrict lo) {
  const size_t lane_mask = lanes - 1;
  const uint32_t slot_mask = (1u << prob_bits) - 1;
  size_t pos = *pos_io;
  for (; i < n; i++) {
    uint32_t xs = x[i & lane_mask];
    uint32_t e = dtab[(kCtx ? size_t(ctx[i]) << prob_bits : 0) + (xs & slot_mask)];
    if (kLo) {
      out[2 * i] = lo[i];
      out[2 * i + 1] = uint8_t(e);
    } else {
      out[i] = uint8_t(e);
    }
    xs = (((e >> 8) & 0xfff) + 1) * (xs >> prob_bits) + (e >> 20);
    // Branch-free renormalisation (whether a state needs a word is not
    // predictable). A word is read only while one is left; running out shows
    // as pos > nwords at the end.
    const uint32_t need = xs < kStateLow;
    uint16_t w = 0;
    if (pos < nwords) std::memcpy(&w, wbytes + 2 * pos, 2);
    pos += need;
    // Arithmetic, not a select: compilers turn the select into a branch.
    x[i & lane_mask] = (xs << (need << 4)) | (uint32_t(w) & (0u - need));
  }
  *pos_io = pos;
  return pos <= nwords;
}

}  // namespace

Status DecodeBody(Reader* in, const uint8_t* ctx, size_t n, const Table* tables, int ntables,
                  int prob_bits, int lanes_log2, uint8_t* out, PageVector<uint32_t>* scratch,
                  const DecodeArgs& args) {
  const uint8_t* lo = args.lo;
  uint32_t* final = args.final;
  const bool compact = args.compact;
  const size_t lanes = size_t(1) << lanes_log2;
  DecodeState st;
  for (size_t l = 0; l < lanes; l++) {
    if (compact) {
      if (!GetCompactState(in, &st.x[l])) return Status::Corruption("rANS stream: bad state");
      continue;
    }
    if (!in->GetFixed32(&st.x[l])) return Status::Corruption("rANS stream: truncated states");
    if (st.x[l] < kStateLow || st.x[l] >= (1u << 31))
      return Status::Corruption("rANS stream: state out of range");
  }
  if (in->remaining() % 2) return Status::Corruption("rANS stream: odd word bytes");
  const size_t scale = size_t(1) << prob_bits;
  if (scratch->size() < size_t(ntables) * scale + 8) scratch->resize(size_t(ntables) * scale + 8);
  uint32_t* dtab = scratch->data();
  for (int k = 0; k < ntables; k++) BuildDecodeTable(tables[k], prob_bits, &dtab[k * scale]);

  const uint8_t* wbytes = in->pos();
  st.words = wbytes;
  st.nwords = in->remaining() / 2;
  st.pos = 0;
  size_t i = 0;
  if (lanes >= 16 && args.simd_level > 0) {
    i = DecodeFast(&st, dtab, ctx, n, prob_bits, lanes_log2, out, lo, args.simd_level);
    if (i + lanes <= n && st.pos <= st.nwords) {
      // The loop stops while a whole step could still read past the words.
      // Go on over a copy of the last words padded by one step, checking
      // before each step that the real words have not run out: valid streams
      // never read the padding, and the result is the same as the scalar loop's.
      const size_t left = st.nwords - st.pos;
      uint16_t tail[2 << kMaxLanesLog2] = {};
      std::memcpy(tail, wbytes + 2 * st.pos, 2 * left);
      DecodeState t2;
      std::memcpy(t2.x, st.x, sizeof(uint32_t) * lanes);
      t2.words = reinterpret_cast<const uint8_t*>(tail);
      t2.nwords = left + lanes;
      t2.pos = 0;
      const size_t done =
          DecodeFast(&t2, dtab, ctx ? ctx + i : nullptr, n - i, prob_bits, lanes_log2,
                     out + (lo ? 2 * i : i), lo ? lo + i : nullptr, args.simd_level);
      if (t2.pos > left) return Status::Corruption("rANS stream: truncated words");
      std::memcpy(st.x, t2.x, sizeof(uint32_t) * lanes);
      st.pos += t2.pos;
      i += done;
    }
  }
  bool ok;
  if (lo)
    ok = ctx ? ScalarLoop<true, true>(st.x, lanes, dtab, ctx, i, n, prob_bits, wbytes, st.nwords,
                                      &st.pos, out, lo)
             : ScalarLoop<false, true>(st.x, lanes, dtab, ctx, i, n, prob_bits, wbytes, st.nwords,
                                       &st.pos, out, lo);
  else
    ok = ctx ? ScalarLoop<true, false>(st.x, lanes, dtab, ctx, i, n, prob_bits, wbytes, st.nwords,
                                       &st.pos, out, lo)
             : ScalarLoop<false, false>(st.x, lanes, dtab, ctx, i, n, prob_bits, wbytes, st.nwords,
                                        &st.pos, out, lo);
  if (!ok) return Status::Corruption("rANS stream: truncated words");
  return rans_internal::FinishDecode(st.x, lanes, kStateLow, final, st.pos, st.nwords, in);
}

namespace {
int CountSymbols(const uint32_t hist[256]) {
  int k = 0;
  for (int s = 0; s < 256; s++) k += hist[s] != 0;
  return k;
}
}  // namespace

namespace {

// Every symbol of the table costs the others about n / 2^P / ln 2 bits of
// probability mass however rare it is: in long streams, symbols seen a few
// times are cheaper escaped (a slot shared by all of them, then 8 raw bits).
}  // namespace

void PlanOrder0(size_t n, const uint32_t hist[256], int max_lanes_log2, bool fast,
                Order0Plan* plan) {
  const int nsym = CountSymbols(hist);
  plan->prob_bits = ProbBitsFor(n, nsym);
  plan->lanes_log2 = LanesLog2For(n, max_lanes_log2, fast);
  const double fixed = double(StreamOverhead(plan->lanes_log2));
  plan->bytes = Choose(hist, plan->prob_bits, &plan->table) / 8 + fixed;
  plan->nesc = 0;
  std::memset(plan->rare, 0, sizeof(plan->rare));
  const size_t scale = size_t(1) << plan->prob_bits;
  if (fast || n < 4 * scale || nsym < 3) return;  // fast: no escape pass when decoding
  Table t;
  size_t last_nesc = 0;
  for (size_t divisor : {4, 1}) {
    uint32_t h[256];
    std::memcpy(h, hist, sizeof(h));
    bool rare[256] = {};
    int esc = -1, kept = 0;
    size_t nesc = 0;
    for (int s = 0; s < 256; s++) {
      if (!hist[s]) continue;
      if (uint64_t(hist[s]) * scale * divisor < n) {
        rare[s] = true;
        nesc += hist[s];
        if (esc < 0) esc = s;
        h[s] = 0;
      } else {
        kept++;
      }
    }
    if (esc < 0 || kept == 0 || nesc == last_nesc) continue;
    last_nesc = nesc;
    h[esc] = uint32_t(nesc);
    const int r = plan->table.mode == TableMode::kQuantized ? plan->table.r_log2 : -1;
    double bytes = Choose(h, plan->prob_bits, &t, r) / 8 + 1 + 5 + double(nesc) + fixed;
    if (bytes < plan->bytes) {
      plan->bytes = bytes;
      plan->table = t;
      plan->table.has_escape = true;
      plan->table.escape = uint8_t(esc);
      std::memcpy(plan->rare, rare, sizeof(rare));
      plan->nesc = nesc;
    }
  }
}

void EncodeOrder0(const uint8_t* sym, size_t n, const uint32_t hist[256], int max_lanes_log2,
                  bool fast, std::string* out) {
  Order0Plan plan;
  PlanOrder0(n, hist, max_lanes_log2, fast, &plan);
  EncodeOrder0(sym, n, plan, out);
}

void EncodeOrder0(const uint8_t* sym, size_t n, const Order0Plan& plan, std::string* out,
                  const EncodeArgs& args) {
  const int p = plan.prob_bits, l = plan.lanes_log2;
  out->clear();
  out->push_back(char((p << 3) | l));
  WriteTables(out, &plan.table, 1);
  if (plan.table.has_escape) {
    PutVarint(out, plan.nesc);
    uint8_t map[256];
    for (int s = 0; s < 256; s++) map[s] = plan.rare[s] ? plan.table.escape : uint8_t(s);
    const size_t at = out->size();
    out->resize(at + plan.nesc + 1);
    uint8_t* side = reinterpret_cast<uint8_t*>(out->data() + at);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {  // branch-free: rare symbols are rare
      const uint8_t s = sym[i];
      side[k] = s;
      k += plan.rare[s];
    }
    out->resize(at + plan.nesc);
    EncodeArgs with_map = args;
    with_map.remap = map;
    EncodeBody(sym, nullptr, n, &plan.table, p, l, out, with_map);
    return;
  }
  EncodeBody(sym, nullptr, n, &plan.table, p, l, out, args);
}

double EstimateOrder0(size_t n, const uint32_t hist[256], int max_lanes_log2, bool fast) {
  Order0Plan plan;
  PlanOrder0(n, hist, max_lanes_log2, fast, &plan);
  return plan.bytes + 1;
}

namespace {
PSTORE_TARGET_CLONES("avx2", "default")
void Interleave(const uint8_t* __restrict lo, const uint8_t* __restrict hi, size_t n,
                uint8_t* __restrict out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = lo[i];
    out[2 * i + 1] = hi[i];
  }
}
}  // namespace

Status DecodeOrder0(std::string_view in, size_t n, uint8_t* out, PageVector<uint32_t>* scratch,
                    const DecodeArgs& args) {
  const uint8_t* lo = args.lo;
  Reader r(in);
  uint8_t hdr;
  if (!r.GetU8(&hdr)) return Status::Corruption("rANS stream is empty");
  const int p = hdr >> 3, l = hdr & 7;
  if (args.lanes_log2) *args.lanes_log2 = l;
  if (p < 1 || p > kMaxProbBits) return Status::Corruption("rANS stream: bad precision");
  Table t;
  if (!ReadTables(&r, p, &t, 1) || t.nsym == 0)
    return Status::Corruption("rANS stream has a bad table");
  std::string_view esc;
  if (t.has_escape) {
    uint64_t k;
    if (!r.GetVarint(&k) || k > n || !r.GetBytes(size_t(k), &esc))
      return Status::Corruption("rANS stream has bad escapes");
  }
  if (lo && t.has_escape) {
    // Escapes are patched in the symbol stream, so decode it apart first.
    PageVector<uint8_t> local;
    PageVector<uint8_t>& syms = args.byte_scratch ? *args.byte_scratch : local;
    syms.resize(n);
    DecodeArgs apart = args;
    apart.lo = nullptr;
    PSTORE_RETURN_IF_ERROR(DecodeBody(&r, nullptr, n, &t, 1, p, l, syms.data(), scratch, apart));
    PSTORE_RETURN_IF_ERROR(PatchEscapes(t.escape, esc, syms.data(), n));
    Interleave(lo, syms.data(), n, out);
    return Status::OK();
  }
  PSTORE_RETURN_IF_ERROR(DecodeBody(&r, nullptr, n, &t, 1, p, l, out, scratch, args));
  if (t.has_escape) return PatchEscapes(t.escape, esc, out, n);
  return Status::OK();
}

Status PatchEscapes(uint8_t e, std::string_view esc, uint8_t* out, size_t n) {
  size_t k = 0;
  if (n > 0)
    for (uint8_t* q = out; (q = static_cast<uint8_t*>(std::memchr(q, e, size_t(out + n - q))));
         q++) {
      if (k == esc.size()) return Status::Corruption("rANS stream: more escapes than bytes");
      *q = uint8_t(esc[k++]);
      if (q + 1 == out + n) break;
    }
  if (k != esc.size()) return Status::Corruption("rANS stream: unused escape bytes");
  return Status::OK();
}

}  // namespace pstore::rans2
