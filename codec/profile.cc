// The profiles' choices of transform and coders (codec/profile.h).
#include "codec/profile.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "codec/bitpack.h"
#include "codec/coders/carry.h"
#include "codec/coders/registry.h"

namespace pstore {

namespace {
constexpr std::pair<Profile, std::string_view> kProfiles[] = {
    {Profile::kRaw, "raw"},   {Profile::kLz4, "lz4"},     {Profile::kZstd, "zstd"},
    {Profile::kFast, "fast"}, {Profile::kDense, "dense"},
};

bool IsFloat(Transform t) {
  return t == Transform::kF16 || t == Transform::kBF16 || t == Transform::kF32 ||
         t == Transform::kF8E4M3 || t == Transform::kF8E5M2 || t == Transform::kBF16X ||
         t == Transform::kF32X || t == Transform::kBF16W || t == Transform::kF32W;
}

// Byte histogram with four tables, so that runs of one byte do not stall on
// the same counter.
void Histogram(const uint8_t* s, size_t m, uint32_t* hist) {
  uint32_t h[4][256] = {};
  size_t i = 0;
  for (; i + 4 <= m; i += 4) {
    h[0][s[i]]++;
    h[1][s[i + 1]]++;
    h[2][s[i + 2]]++;
    h[3][s[i + 3]]++;
  }
  for (; i < m; i++) h[0][s[i]]++;
  for (int x = 0; x < 256; x++) hist[x] = h[0][x] + h[1][x] + h[2][x] + h[3][x];
}

// c * log2(c), from a table below 4096 (the common case in estimates).
double NLog2N(uint32_t c) {
  static const std::vector<float> table = [] {
    std::vector<float> t(4096);
    for (uint32_t i = 1; i < 4096; i++) t[i] = float(double(i) * std::log2(double(i)));
    return t;
  }();
  if (c < 4096) return table[c];
  return double(c) * std::log2(double(c));
}

// Estimated coded bytes of a histogram with a table of its own.
double EntropyBytes(const uint32_t* h) {
  uint64_t total = 0;
  double s = 0;
  int nsym = 0;
  for (int i = 0; i < 256; i++) {
    if (!h[i]) continue;
    total += h[i];
    s += NLog2N(h[i]);
    nsym++;
  }
  if (total == 0) return 1;
  double bits = NLog2N(uint32_t(std::min<uint64_t>(total, UINT32_MAX))) - s;
  // A compact rans2 table: about 4 bytes of header and 5 bits a symbol (its
  // gap and its quantised frequency).
  double table = 4 + 0.625 * nsym;
  return bits / 8 + table;
}

// True if three 8 KiB samples of s have an order-0 entropy within 0.3% of 8
// bits per byte (every value about equally likely).
bool LooksUniform(const uint8_t* s, size_t m) {
  constexpr size_t kSample = 8192;
  uint32_t h[256] = {};
  for (size_t at : {size_t(0), m / 2, m - kSample}) {
    uint32_t part[256];
    Histogram(s + at, kSample, part);
    for (int x = 0; x < 256; x++) h[x] += part[x];
  }
  double bits = 0;
  const double total = 3.0 * kSample;
  for (uint32_t c : h)
    if (c) bits -= double(c) * std::log2(double(c) / total);
  return bits > 0.997 * 8 * total;
}

}  // namespace

std::optional<Profile> ProfileFromName(std::string_view name) {
  for (auto& [p, n] : kProfiles)
    if (n == name) return p;
  return std::nullopt;
}

std::string_view ProfileName(Profile p) {
  for (auto& [q, n] : kProfiles)
    if (q == p) return n;
  return "?";
}

Transform ProfilePolicy::ChooseTransform(std::span<const uint8_t> raw, const ChunkType& type,
                                         uint8_t* bias) const {
  *bias = kXExponentBias;
  if (opt_.profile == Profile::kRaw) return Transform::kNone;
  if (type.block.layout.bytes && BlockParamsValid(type.block)) {
    uint64_t lens[kMaxStreams];
    BlockStreamLengths(type.block, raw.size(), lens);
    if (lens[0] > 0) return Transform::kBlockScales;
  }
  Transform t = TransformFor(type.dtype, raw.size());
  if (opt_.profile == Profile::kFast || opt_.profile == Profile::kDense)
    t = WindowedVariant(t, raw.data(), raw.size(), opt_.profile == Profile::kDense, bias);
  return t;
}

StreamEncodeArgs ProfilePolicy::Args(Transform t) const {
  StreamEncodeArgs a;
  a.transform = t;
  a.zstd_level = opt_.zstd_level;
  a.simd_level = opt_.simd_level;
  return a;
}

bool ProfilePolicy::TryCoder(Coder c, const uint8_t* s, size_t m, const StreamEncodeArgs& a,
                             std::string* out) {
  return CoderFor(c).TryEncode(s, m, a, &scratch_, out);
}

// LZ-style redundancy (repeats, runs) is what order-0 coding misses. LZ4 on
// three 4 KiB samples tells cheaply whether a full LZ4/Zstandard pass could
// beat `best` bytes.
bool ProfilePolicy::WorthLz(const uint8_t* s, size_t m, size_t best) {
  constexpr size_t kSample = 4096;
  const StreamEncodeArgs a = Args(Transform::kNone);
  if (m <= 3 * kSample)
    return TryCoder(Coder::kLz4, s, m, a, &trial_) && trial_.size() < best + best / 16;
  size_t got = 0;
  for (size_t at : {size_t(0), m / 2, m - kSample}) {
    if (!TryCoder(Coder::kLz4, s + at, kSample, a, &trial_)) return false;
    got += trial_.size();
  }
  return double(got) < double(best) / double(m) * double(3 * kSample) * 1.05;
}

// Chooses the exponent window (K contexts from `base`) that minimises the
// estimated size of stream s given its ctx-source stream src; returns the
// estimate, or infinity when no window helps.
double ProfilePolicy::PlanContext(Transform t, const uint8_t* s, const uint8_t* src, size_t m,
                                  int* best_k, int* best_base) {
  joint_.assign(256 * 256, 0);
  uint32_t exp_hist[256] = {};
  for (size_t i = 0; i < m; i++) {
    uint8_t e = ExponentOf(t, src[i]);
    joint_[size_t(e) * 256 + s[i]]++;
    exp_hist[e]++;
  }
  int lo = 255, hi = 0, mode = 0;
  for (int e = 0; e < 256; e++) {
    if (!exp_hist[e]) continue;
    lo = std::min(lo, e);
    hi = std::max(hi, e);
    if (exp_hist[e] > exp_hist[mode]) mode = e;
  }
  double best = INFINITY;
  uint32_t h[256];
  for (int k : {2, 4, 8}) {
    for (int d = 0; d < 4; d++) {
      int base = mode - k + 2 + d;
      if (base < 0 || base + k - 1 < lo || base > hi) continue;
      double total = 0;
      for (int c = 0; c < k; c++) {
        std::memset(h, 0, sizeof(h));
        int e0 = c == 0 ? lo : base + c;
        int e1 = c == k - 1 ? hi : base + c;
        for (int e = std::max(e0, lo); e <= std::min(e1, hi); e++) {
          if (!exp_hist[e]) continue;
          const uint32_t* row = &joint_[size_t(e) * 256];
          for (int x = 0; x < 256; x++) h[x] += row[x];
        }
        total += EntropyBytes(h);
      }
      total += 2;
      if (total < best) best = total, *best_k = k, *best_base = base;
    }
  }
  return best;
}

// carry, if not null, is the next stream, whose values fit carry_k bits: a
// rans2 coding of this one may carry its last values (coder rans2-carry).
Coder ProfilePolicy::CodeStream(Transform t, const TransformInfo& info, int j, const uint8_t* s,
                                size_t m, const uint8_t* const* all, std::string* out,
                                const uint8_t* carry, int carry_k) {
  out->clear();
  if (m == 0 || opt_.profile == Profile::kRaw) return Coder::kRaw;
  const StreamEncodeArgs plain = Args(t);
  if (opt_.profile == Profile::kDense && m >= 65536 && LooksUniform(s, m)) {
    // Low mantissa bytes: no order-0 or context coder gains here; only
    // repeats could.
    if (WorthLz(s, m, m)) {
      Coder best = Coder::kRaw;
      size_t best_size = m;
      if (TryCoder(Coder::kLz4, s, m, plain, &trial_) && trial_.size() < best_size)
        best = Coder::kLz4, best_size = trial_.size(), out->swap(trial_);
      if (TryCoder(Coder::kZstd, s, m, plain, &trial_) && trial_.size() < best_size)
        best = Coder::kZstd, best_size = trial_.size(), out->swap(trial_);
      if (best != Coder::kRaw) return best;
      out->clear();
    }
    return Coder::kRaw;
  }
  uint32_t hist[256];
  Histogram(s, m, hist);
  int distinct = 0, top = 0;
  for (int x = 0; x < 256; x++)
    if (hist[x]) distinct++, top = x;
  if (distinct == 1) {
    out->push_back(char(s[0]));
    return Coder::kConst;
  }
  const int kbits = 32 - __builtin_clz(uint32_t(top));
  Coder best = Coder::kRaw;
  size_t best_size = m;
  auto consider = [&](Coder c, std::string* r) {
    if (r->size() < best_size) best = c, best_size = r->size(), out->swap(*r);
  };
  if (kbits < 8 && opt_.profile != Profile::kLz4 && opt_.profile != Profile::kZstd &&
      1 + PackedBytes(m, kbits) < best_size) {
    StreamEncodeArgs a = plain;
    a.bits = kbits;
    if (TryCoder(Coder::kBits, s, m, a, &trial_)) consider(Coder::kBits, &trial_);
  }
  switch (opt_.profile) {
    case Profile::kRaw:
      break;
    case Profile::kLz4:
      if (TryCoder(Coder::kLz4, s, m, plain, &trial_)) consider(Coder::kLz4, &trial_);
      break;
    case Profile::kZstd:
      if (TryCoder(Coder::kZstd, s, m, plain, &trial_)) consider(Coder::kZstd, &trial_);
      break;
    case Profile::kFast: {
      if ((IsFloat(t) || t == Transform::kBlockScales) && j == 0) {
        rans2::Order0Plan plan;
        rans2::PlanOrder0(m, hist, kMaxLanesLog2, true, &plan);
        if (plan.bytes < double(best_size)) {
          StreamEncodeArgs a = plain;
          a.plan = &plan;
          if (TryCoder(Coder::kRans2, s, m, a, &trial_)) consider(Coder::kRans2, &trial_);
        }
      } else if (!IsFloat(t)) {
        if (TryCoder(Coder::kLz4, s, m, plain, &trial_) && trial_.size() < best_size * 9 / 10)
          consider(Coder::kLz4, &trial_);
      }
      break;
    }
    case Profile::kDense: {
      rans2::Order0Plan plan;
      rans2::PlanOrder0(m, hist, kMaxLanesLog2, false, &plan);
      const double est0 = plan.bytes;
      int k = 0, base = 0;
      double estc = INFINITY;
      // Exponent contexts pay where the stream has structure to find at all
      // (quantised tensors' low bytes); near-uniform streams skip the planning.
      if (info.ctx_source[j] >= 0 && m >= 4096 && est0 < 0.97 * double(best_size))
        estc = PlanContext(t, s, all[info.ctx_source[j]], m, &k, &base) +
               double(rans2::StreamOverhead(rans2::LanesLog2For(m, kMaxLanesLog2, false))) + 3;
      if (estc < est0 * 0.99 && estc < double(best_size)) {
        StreamEncodeArgs a = plain;
        a.ctx_source = all[info.ctx_source[j]];
        a.ctx_groups = k;
        a.ctx_base = base;
        if (TryCoder(Coder::kRans2Ctx, s, m, a, &trial_)) consider(Coder::kRans2Ctx, &trial_);
      }
      if (est0 < double(best_size)) {
        StreamEncodeArgs a = plain;
        a.plan = &plan;
        a.carry = carry;
        a.carry_bits = carry_k;
        if (carry && TryCoder(Coder::kRans2Carry, s, m, a, &trial_)) {
          // The next stream's last values ride in the states: this stream is
          // measured by what the pair saves.
          const size_t credit = CarryCredit(m, plan.lanes_log2, carry_k);
          if (trial_.size() < best_size + credit) {
            best = Coder::kRans2Carry;
            best_size = trial_.size() > credit ? trial_.size() - credit : 0;
            out->swap(trial_);
          }
        } else if (TryCoder(Coder::kRans2, s, m, a, &trial_)) {
          consider(Coder::kRans2, &trial_);
        }
      }
      if (m >= 64 && WorthLz(s, m, best_size)) {
        if (TryCoder(Coder::kLz4, s, m, plain, &trial_)) consider(Coder::kLz4, &trial_);
        if (TryCoder(Coder::kZstd, s, m, plain, &trial_)) consider(Coder::kZstd, &trial_);
      }
      break;
    }
  }
  if (best == Coder::kRaw) out->clear();
  return best;
}

void ProfilePolicy::CodeStreams(Transform t, const uint8_t* const* s, const uint64_t* lens,
                                Coder* coders, std::string* payloads) {
  const TransformInfo info = *GetTransformInfo(t);
  int first = 0;
  if (opt_.profile == Profile::kDense && IsFloat(t) && info.nstreams >= 2) {
    const size_t m = size_t(lens[0]);  // the float transforms' streams have one length
    // Stream 1 first: if it ends up raw or bit-packed, stream 0's rANS states
    // can carry its last values.
    coders[1] = CodeStream(t, info, 1, s[1], m, s, &payloads[1]);
    // Only where stream 1 takes the transform's full width (raw or packed).
    const int k = CarryWidth(t);
    const bool carry = k && ((coders[1] == Coder::kRaw && k == 8) ||
                             (coders[1] == Coder::kBits && payloads[1][0] == char(k)));
    coders[0] = CodeStream(t, info, 0, s[0], m, s, &payloads[0], carry ? s[1] : nullptr, k);
    if (coders[0] == Coder::kRans2Carry) {
      StreamEncodeArgs a = Args(t);
      a.carry_bits = k;
      a.carry_lanes_log2 = uint8_t(payloads[0][0]) & 7;
      TryCoder(Coder::kBitsTail, s[1], m, a, &payloads[1]);
      coders[1] = Coder::kBitsTail;
    }
    first = 2;
  }
  int last = info.nstreams;
  if (t == Transform::kBlockScales) {
    // The quants: LZ4 where it saves a tenth (it finds runs and repeats and
    // decodes faster than a file reads), else raw (or const), in every
    // profile. Entropy coding would save more but decodes at a fraction of
    // the speed of reading the bytes, and a quantized model must load at
    // least as fast as its file reads (docs/codec.md, "The block transform").
    const size_t m = size_t(lens[2]);
    payloads[2].clear();
    coders[2] = Coder::kRaw;
    if (m > 1 && std::memcmp(s[2], s[2] + 1, m - 1) == 0) {
      payloads[2].push_back(char(s[2][0]));
      coders[2] = Coder::kConst;
    } else if (m >= 64 && TryCoder(Coder::kLz4, s[2], m, Args(t), &trial_) &&
               trial_.size() < m / 10 * 9) {
      payloads[2].swap(trial_);
      coders[2] = Coder::kLz4;
    }
    last = 2;
  }
  for (int j = first; j < last; j++)
    coders[j] = CodeStream(t, info, j, s[j], size_t(lens[j]), s, &payloads[j]);
}

}  // namespace pstore
