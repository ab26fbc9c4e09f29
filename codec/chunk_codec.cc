#include "codec/chunk_codec.h"

#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codec/bitpack.h"
#include "codec/rans.h"
#include "codec/rans2.h"
#include "common/coding.h"

namespace pstore {

namespace {
// lut[b]: the exponent group, in [0, k), of byte b of a ctx-source stream.
void ExponentGroups(Transform t, int base, int k, uint8_t lut[256]) {
  for (int b = 0; b < 256; b++)
    lut[b] = uint8_t(std::clamp(int(ExponentOf(t, uint8_t(b))) - base, 0, k - 1));
}
}  // namespace

std::string_view CoderName(Coder c) {
  switch (c) {
    case Coder::kRaw: return "raw";
    case Coder::kConst: return "const";
    case Coder::kLz4: return "lz4";
    case Coder::kZstd: return "zstd";
    case Coder::kRans: return "rans";
    case Coder::kRansCtx: return "rans-ctx";
    case Coder::kRans2: return "rans2";
    case Coder::kRans2Ctx: return "rans2-ctx";
    case Coder::kBits: return "bits";
    case Coder::kRans2Carry: return "rans2-carry";
    case Coder::kBitsTail: return "bits-tail";
  }
  return "?";
}

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

// Carried values (coders rans2-carry + bits-tail): each lane of the rans2
// stream starts from 2^15 + v, v holding the next stream's values of k bits
// packed into kCarryBits bits. 30 bits keep the start below 2^31 and cost
// about 13.6 bits of coded size for 30 carried ones: a net 16.4 bits a lane.
constexpr int kCarryBits = 30;
inline int CarryPerLane(int k) { return kCarryBits / k; }
// The bits of the values of stream 1 of a float transform (what a bits-tail
// stream packs), or 0 where nothing is carried.
int CarryWidth(Transform t) {
  switch (t) {
    case Transform::kF16:
    case Transform::kBF16:
    case Transform::kF32: return 8;
    case Transform::kF8E4M3: return 4;
    case Transform::kF8E5M2: return 3;
    case Transform::kBF16X:
    case Transform::kF32X:
    case Transform::kBF16W:
    case Transform::kF32W: return 6;
    default: return 0;
  }
}

// Lanes cap of format-2 rANS streams (rans2::LanesLog2For picks per profile):
// 64 lanes decode 1.5x faster than 32 on AVX-512 (4 gathers in flight); 128
// gain a few percent more for 256 more state bytes, which only fast takes.
constexpr int kMaxLanesLog2 = 7;

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

// sum of c*log2(c) over a histogram, and its total, for entropy estimates.
struct Entropy {
  // c * log2(c), from a table below 4096 (the common case in estimates).
  static double NLog2N(uint32_t c) {
    static const std::vector<float> table = [] {
      std::vector<float> t(4096);
      for (uint32_t i = 1; i < 4096; i++) t[i] = float(double(i) * std::log2(double(i)));
      return t;
    }();
    if (c < 4096) return table[c];
    return double(c) * std::log2(double(c));
  }
  // Estimated coded bytes of a histogram with a table of its own.
  static double Bytes(const uint32_t* h) {
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
    // A compact rans2 table: about 4 bytes of header and 5 bits a symbol
    // (its gap and its quantised frequency).
    double table = 4 + 0.625 * nsym;
    return bits / 8 + table;
  }
};

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

// ---------------------------------------------------------------------------
// Encoder

struct ChunkEncoder::Impl {
  EncodeOptions opt;
  ZSTD_CCtx* zc = nullptr;
  std::vector<uint8_t> streams[kMaxStreams];
  std::vector<uint8_t> ctx;
  std::vector<uint32_t> joint;  // [exponent][symbol] counts
  std::string payload[kMaxStreams];
  std::string trial;
  rans2::EncodeScratch rans_scratch;

  explicit Impl(const EncodeOptions& o) : opt(o), zc(ZSTD_createCCtx()) {}
  ~Impl() { ZSTD_freeCCtx(zc); }

  bool TryZstd(const uint8_t* s, size_t m, std::string* out) {
    trial.resize(ZSTD_compressBound(m));
    size_t r = ZSTD_compressCCtx(zc, trial.data(), trial.size(), s, m, opt.zstd_level);
    if (ZSTD_isError(r)) return false;
    trial.resize(r);
    out->swap(trial);
    return true;
  }
  bool TryLz4(const uint8_t* s, size_t m, std::string* out) {
    if (m > size_t(LZ4_MAX_INPUT_SIZE)) return false;
    trial.resize(size_t(LZ4_compressBound(int(m))));
    int r = LZ4_compress_default(reinterpret_cast<const char*>(s), trial.data(), int(m),
                                 int(trial.size()));
    if (r <= 0) return false;
    trial.resize(size_t(r));
    out->swap(trial);
    return true;
  }

  // True if three 8 KiB samples of s have an order-0 entropy within 0.3% of
  // 8 bits per byte (every value about equally likely).
  static bool LooksUniform(const uint8_t* s, size_t m) {
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

  // LZ-style redundancy (repeats, runs) is what order-0 coding misses. LZ4 on
  // three 4 KiB samples tells cheaply whether a full LZ4/Zstandard pass could
  // beat `best` bytes.
  bool WorthLz(const uint8_t* s, size_t m, size_t best) {
    constexpr size_t kSample = 4096;
    if (m <= 3 * kSample) return TryLz4(s, m, &trial) && trial.size() < best + best / 16;
    size_t got = 0;
    for (size_t at : {size_t(0), m / 2, m - kSample}) {
      if (!TryLz4(s + at, kSample, &trial)) return false;
      got += trial.size();
    }
    return double(got) < double(best) / double(m) * double(3 * kSample) * 1.05;
  }

  // Chooses the exponent window (K contexts from `base`) that minimises the
  // estimated size of stream s given its ctx-source stream src; returns the
  // estimate, or infinity when no window helps.
  double PlanContext(Transform t, const uint8_t* s, const uint8_t* src, size_t m, int* best_k,
                     int* best_base) {
    joint.assign(256 * 256, 0);
    uint32_t exp_hist[256] = {};
    for (size_t i = 0; i < m; i++) {
      uint8_t e = ExponentOf(t, src[i]);
      joint[size_t(e) * 256 + s[i]]++;
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
            const uint32_t* row = &joint[size_t(e) * 256];
            for (int x = 0; x < 256; x++) h[x] += row[x];
          }
          total += Entropy::Bytes(h);
        }
        total += 2;
        if (total < best) best = total, *best_k = k, *best_base = base;
      }
    }
    return best;
  }

  void EncodeRansCtx(Transform t, const uint8_t* s, const uint8_t* src, size_t m, int k,
                     int base, std::string* out) {
    uint8_t lut[256];
    ExponentGroups(t, base, k, lut);
    ctx.resize(m);
    uint32_t hist[rans2::kMaxContexts][256] = {};
    for (size_t i = 0; i < m; i++) {
      ctx[i] = lut[src[i]];
      hist[ctx[i]][s[i]]++;
    }
    int nsym = 0;  // the most symbols any context uses
    for (int c = 0; c < k; c++) {
      int d = 0;
      for (int x = 0; x < 256; x++) d += hist[c][x] != 0;
      nsym = std::max(nsym, d);
    }
    const int p = rans2::ProbBitsFor(m, nsym), l = rans2::LanesLog2For(m, kMaxLanesLog2, false);
    rans2::Table tables[rans2::kMaxContexts];
    out->clear();
    out->push_back(char(k));
    out->push_back(char(uint8_t(base)));
    out->push_back(char((p << 3) | l));
    for (int c = 0; c < k; c++) {
      bool used = false;
      for (int x = 0; x < 256 && !used; x++) used = hist[c][x] != 0;
      if (used) rans2::Choose(hist[c], p, &tables[c]);
      else rans2::Clear(&tables[c]);
    }
    rans2::WriteTables(out, tables, k, p);
    rans2::EncodeBody(s, ctx.data(), m, tables, p, l, out, nullptr, &rans_scratch);
  }

  void EncodeBits(const uint8_t* s, size_t m, int k, std::string* out) {
    out->assign(1 + PackedBytes(m, k), '\0');
    (*out)[0] = char(k);
    PackBits(s, m, k, reinterpret_cast<uint8_t*>(out->data() + 1));
  }

  // carry, if not null, is the next stream, whose values fit carry_k bits: a
  // rans2 coding of this one may carry its last values (coder kRans2Carry).
  Coder EncodeStream(Transform t, const TransformInfo& info, int j, const uint8_t* s, size_t m,
                     const uint8_t* const* all, std::string* out,
                     const uint8_t* carry = nullptr, int carry_k = 0) {
    out->clear();
    if (m == 0 || opt.profile == Profile::kRaw) return Coder::kRaw;
    if (opt.profile == Profile::kDense && m >= 65536 && LooksUniform(s, m)) {
      // Low mantissa bytes: no order-0 or context coder gains here; only
      // repeats could.
      if (WorthLz(s, m, m)) {
        Coder best = Coder::kRaw;
        size_t best_size = m;
        if (TryLz4(s, m, &trial) && trial.size() < best_size)
          best = Coder::kLz4, best_size = trial.size(), out->swap(trial);
        if (TryZstd(s, m, &trial) && trial.size() < best_size)
          best = Coder::kZstd, best_size = trial.size(), out->swap(trial);
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
    if (kbits < 8 && opt.profile != Profile::kLz4 && opt.profile != Profile::kZstd &&
        1 + PackedBytes(m, kbits) < best_size) {
      EncodeBits(s, m, kbits, &trial);
      consider(Coder::kBits, &trial);
    }
    switch (opt.profile) {
      case Profile::kRaw: break;
      case Profile::kLz4:
        if (TryLz4(s, m, &trial)) consider(Coder::kLz4, &trial);
        break;
      case Profile::kZstd:
        if (TryZstd(s, m, &trial)) consider(Coder::kZstd, &trial);
        break;
      case Profile::kFast: {
        if (IsFloat(t) && j == 0) {
          rans2::Order0Plan plan;
          rans2::PlanOrder0(m, hist, kMaxLanesLog2, true, &plan);
          if (plan.bytes < double(best_size)) {
            rans2::EncodeOrder0(s, m, plan, &trial, &rans_scratch);
            consider(Coder::kRans2, &trial);
          }
        } else if (!IsFloat(t)) {
          if (TryLz4(s, m, &trial) && trial.size() < best_size * 9 / 10)
            consider(Coder::kLz4, &trial);
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
          EncodeRansCtx(t, s, all[info.ctx_source[j]], m, k, base, &trial);
          consider(Coder::kRans2Ctx, &trial);
        }
        if (est0 < double(best_size)) {
          const size_t lanes = size_t(1) << plan.lanes_log2;
          const int per = carry ? CarryPerLane(carry_k) : 0;
          if (carry && lanes * size_t(per) <= m) {
            // The next stream's last lanes * per values ride in the states: this
            // stream is measured by what the pair saves.
            const uint8_t* tail = carry + (m - lanes * size_t(per));
            uint32_t init[1 << kMaxLanesLog2];
            for (size_t l = 0; l < lanes; l++) {
              uint32_t v = 0;
              for (int q = 0; q < per; q++) v |= uint32_t(tail[l * per + q]) << (q * carry_k);
              init[l] = rans2::kStateLow + v;
            }
            rans2::EncodeOrder0(s, m, plan, &trial, &rans_scratch, init, true);
            const size_t credit = PackedBytes(m, carry_k) - PackedBytes(m - lanes * per, carry_k);
            if (trial.size() < best_size + credit) {
              best = Coder::kRans2Carry;
              best_size = trial.size() > credit ? trial.size() - credit : 0;
              out->swap(trial);
            }
          } else {
            rans2::EncodeOrder0(s, m, plan, &trial, &rans_scratch);
            consider(Coder::kRans2, &trial);
          }
        }
        if (m >= 64 && WorthLz(s, m, best_size)) {
          if (TryLz4(s, m, &trial)) consider(Coder::kLz4, &trial);
          if (TryZstd(s, m, &trial)) consider(Coder::kZstd, &trial);
        }
        break;
      }
    }
    if (best == Coder::kRaw) out->clear();
    return best;
  }
};

ChunkEncoder::ChunkEncoder(const EncodeOptions& options) : impl_(new Impl(options)) {}
ChunkEncoder::~ChunkEncoder() = default;

FrameDescription ChunkEncoder::Encode(std::span<const uint8_t> raw, DType dtype,
                                      std::string* frame) {
  Impl& I = *impl_;
  const size_t n = raw.size();
  Transform t = I.opt.profile == Profile::kRaw ? Transform::kNone : TransformFor(dtype, n);
  uint8_t bias = kXExponentBias;
  if (I.opt.profile == Profile::kFast || I.opt.profile == Profile::kDense)
    t = WindowedVariant(t, raw.data(), n, I.opt.profile == Profile::kDense, &bias);
  TransformInfo info = *GetTransformInfo(t);
  const size_t m = n / size_t(info.width);
  const uint8_t* s[kMaxStreams];
  if (t == Transform::kNone) {
    s[0] = raw.data();
  } else {
    uint8_t* w[kMaxStreams];
    for (int j = 0; j < info.nstreams; j++) {
      I.streams[j].resize(m);
      w[j] = I.streams[j].data();
      s[j] = w[j];
    }
    SplitStreams(t, raw.data(), n, w, bias);
  }
  Coder coders[kMaxStreams];
  int first = 0;
  if (I.opt.profile == Profile::kDense && IsFloat(t) && info.nstreams >= 2) {
    // Stream 1 first: if it ends up raw or bit-packed, stream 0's rANS states
    // can carry its last values.
    coders[1] = I.EncodeStream(t, info, 1, s[1], m, s, &I.payload[1]);
    // Only where stream 1 takes the transform's full width (raw or packed).
    const int k = CarryWidth(t);
    const bool carry = k && ((coders[1] == Coder::kRaw && k == 8) ||
                             (coders[1] == Coder::kBits && I.payload[1][0] == char(k)));
    coders[0] = I.EncodeStream(t, info, 0, s[0], m, s, &I.payload[0], carry ? s[1] : nullptr, k);
    if (coders[0] == Coder::kRans2Carry) {
      const size_t lanes = size_t(1) << (uint8_t(I.payload[0][0]) & 7);
      const size_t rest = m - lanes * size_t(CarryPerLane(k));
      std::string& p1 = I.payload[1];
      p1.assign(PackedBytes(rest, k), '\0');
      PackBits(s[1], rest, k, reinterpret_cast<uint8_t*>(p1.data()));
      coders[1] = Coder::kBitsTail;
    }
    first = 2;
  }
  for (int j = first; j < info.nstreams; j++)
    coders[j] = I.EncodeStream(t, info, j, s[j], m, s, &I.payload[j]);

  // Version 4: version and transform in one byte, the window's bias if the
  // transform has one; coder ids two to a byte; lengths only where they are not
  // implied (raw: m, const: 1, the last other stream: the rest of the frame).
  frame->clear();
  frame->push_back(char(kFrameVersion | uint8_t(t) << 4));
  if (HasWindowBias(t)) frame->push_back(char(bias));
  for (int j = 0; j < info.nstreams; j += 2) {
    uint8_t b = uint8_t(coders[j]);
    if (j + 1 < info.nstreams) b |= uint8_t(uint8_t(coders[j + 1]) << 4);
    frame->push_back(char(b));
  }
  auto implied = [&](Coder c) {
    return c == Coder::kRaw || c == Coder::kConst || c == Coder::kBitsTail;
  };
  int last = -1;
  for (int j = 0; j < info.nstreams; j++)
    if (!implied(coders[j])) last = j;
  for (int j = 0; j < last; j++)
    if (!implied(coders[j])) PutVarint(frame, I.payload[j].size());
  for (int j = 0; j < info.nstreams; j++) {
    if (coders[j] == Coder::kRaw)
      frame->append(reinterpret_cast<const char*>(s[j]), m);
    else
      frame->append(I.payload[j]);
  }
  return FrameDescription{kFrameVersion, t};
}

void ChunkEncoder::EncodeV1ForTesting(std::span<const uint8_t> raw, DType dtype, Coder coder,
                                      std::string* frame) {
  Impl& I = *impl_;
  const size_t n = raw.size();
  Transform t = TransformFor(dtype, n);
  TransformInfo info = *GetTransformInfo(t);
  const size_t m = n / size_t(info.width);
  std::vector<uint8_t> joined(n);
  uint8_t* w[kMaxStreams];
  for (int j = 0; j < info.nstreams; j++) w[j] = joined.data() + size_t(j) * m;
  SplitStreams(t, raw.data(), n, w);
  frame->clear();
  frame->push_back(char(kFrameVersion1));
  frame->push_back(char(t));
  frame->push_back(char(coder));
  PutVarint(frame, n);
  if (coder == Coder::kZstd && I.TryZstd(joined.data(), n, &I.trial)) {
    frame->append(I.trial);
  } else if (coder == Coder::kLz4 && I.TryLz4(joined.data(), n, &I.trial)) {
    frame->append(I.trial);
  } else {
    (*frame)[2] = char(Coder::kRaw);
    frame->append(reinterpret_cast<const char*>(joined.data()), n);
  }
}

// ---------------------------------------------------------------------------
// Parsing and decoding

namespace {

struct ParsedFrame {
  uint8_t version;
  uint8_t bias = kXExponentBias;
  Transform transform;
  TransformInfo info;
  uint64_t raw_len;
  int nstreams;
  Coder coders[kMaxStreams];
  std::string_view payloads[kMaxStreams];
};

// Carrying pair: rans2-carry only on stream 0 and bits-tail only on stream 1,
// always together, on a transform with a carry width.
Status CheckCarryPair(const ParsedFrame& p) {
  for (int j = 0; j < p.nstreams; j++) {
    const bool c0 = p.coders[j] == Coder::kRans2Carry, c1 = p.coders[j] == Coder::kBitsTail;
    if ((c0 && j != 0) || (c1 && j != 1))
      return Status::Corruption("chunk frame has a carrying coder on the wrong stream");
  }
  const bool c0 = p.coders[0] == Coder::kRans2Carry;
  const bool c1 = p.nstreams >= 2 && p.coders[1] == Coder::kBitsTail;
  if (c0 != c1) return Status::Corruption("chunk frame has half a carrying pair");
  if (!c0) return Status::OK();
  if (CarryWidth(p.transform) == 0)
    return Status::Corruption("chunk frame carries values on a transform without a width");
  return Status::OK();
}

// raw_len: the caller's length (version 4 frames do not hold it).
Status ParseFrame(std::string_view frame, ParsedFrame* p, std::optional<uint64_t> raw_len) {
  Reader r(frame);
  uint8_t t, b0;
  if (!r.GetU8(&b0)) return Status::Corruption("chunk frame is empty");
  p->version = b0 & 15;
  if (p->version == kFrameVersion) {
    t = b0 >> 4;
  } else {
    if (b0 >= 16 || (p->version != kFrameVersion1 && p->version != kFrameVersion2 &&
                     p->version != kFrameVersion3))
      return Status::Corruption("chunk frame has unknown version " + std::to_string(b0));
    if (!r.GetU8(&t)) return Status::Corruption("chunk frame truncated");
  }
  auto info = GetTransformInfo(Transform(t));
  if (!info) return Status::Corruption("chunk frame has unknown transform " + std::to_string(t));
  p->transform = Transform(t);
  p->info = *info;
  if (HasWindowBias(p->transform)) {
    if (p->version != kFrameVersion)
      return Status::Corruption("chunk frame of version " + std::to_string(p->version) +
                                " has a windowed transform");
    if (!r.GetU8(&p->bias) || p->bias > kMaxWindowBias)
      return Status::Corruption("chunk frame has a bad window bias");
  }
  if (p->version == kFrameVersion1) {
    uint8_t c;
    if (!r.GetU8(&c) || !r.GetVarint(&p->raw_len))
      return Status::Corruption("chunk frame header truncated");
    if (c != uint8_t(Coder::kRaw) && c != uint8_t(Coder::kLz4) && c != uint8_t(Coder::kZstd))
      return Status::Corruption("v1 chunk frame has unknown codec " + std::to_string(c));
    p->nstreams = 1;
    p->coders[0] = Coder(c);
    r.GetBytes(r.remaining(), &p->payloads[0]);
  } else if (p->version == kFrameVersion || p->version == kFrameVersion3) {
    if (p->version == kFrameVersion) {
      if (!raw_len) return Status::InvalidArgument("a version-4 frame needs its raw length");
      p->raw_len = *raw_len;
    } else if (!r.GetVarint(&p->raw_len)) {
      return Status::Corruption("chunk frame header truncated");
    }
    if (p->raw_len % uint64_t(p->info.width))
      return Status::Corruption("chunk frame raw length is not a whole number of elements");
    p->nstreams = info->nstreams;
    const uint64_t m = p->raw_len / uint64_t(p->info.width);
    for (int j = 0; j < p->nstreams; j += 2) {
      uint8_t b;
      if (!r.GetU8(&b)) return Status::Corruption("chunk frame header truncated");
      uint8_t c[2] = {uint8_t(b & 15), uint8_t(b >> 4)};
      for (int h = 0; h < 2; h++) {
        if (j + h >= p->nstreams) {
          if (c[h] != 0) return Status::Corruption("chunk frame has a stray coder");
          continue;
        }
        if (c[h] > uint8_t(Coder::kBitsTail))
          return Status::Corruption("chunk frame has unknown coder " + std::to_string(c[h]));
        p->coders[j + h] = Coder(c[h]);
      }
    }
    PSTORE_RETURN_IF_ERROR(CheckCarryPair(*p));
    int last = -1;
    for (int j = 0; j < p->nstreams; j++)
      if (p->coders[j] != Coder::kRaw && p->coders[j] != Coder::kConst &&
          p->coders[j] != Coder::kBitsTail)
        last = j;
    uint64_t lens[kMaxStreams];
    uint64_t sum = 0;
    for (int j = 0; j < p->nstreams; j++) {
      if (p->coders[j] == Coder::kRaw) lens[j] = m;
      else if (p->coders[j] == Coder::kConst) lens[j] = 1;
      else if (p->coders[j] == Coder::kBitsTail) lens[j] = 0;  // below
      else if (j < last && !r.GetVarint(&lens[j]))
        return Status::Corruption("chunk frame header truncated");
      else if (j == last) lens[j] = 0;  // the rest, below
      if (lens[j] > frame.size()) return Status::Corruption("chunk frame stream lengths exceed the frame");
      sum += lens[j];
    }
    if (p->coders[0] == Coder::kRans2Carry) {
      // Stream 1's length is implied by the lanes of stream 0 (the low bits of
      // its first byte) and the transform's carry width.
      uint8_t hdr;
      if (r.remaining() == 0) return Status::Corruption("chunk frame truncated");
      std::memcpy(&hdr, r.pos(), 1);
      const int k = CarryWidth(p->transform);
      const uint64_t carried = (uint64_t(1) << (hdr & 7)) * uint64_t(CarryPerLane(k));
      if (carried > m) return Status::Corruption("bits-tail stream is too short");
      lens[1] = PackedBytes(size_t(m - carried), k);
      sum += lens[1];
    }
    if (sum > r.remaining())
      return Status::Corruption("chunk frame stream lengths exceed the frame");
    if (last >= 0) lens[last] = r.remaining() - sum;
    else if (sum != r.remaining())
      return Status::Corruption("chunk frame stream lengths do not add up to its size");
    for (int j = 0; j < p->nstreams; j++) r.GetBytes(size_t(lens[j]), &p->payloads[j]);
  } else {
    if (!r.GetVarint(&p->raw_len)) return Status::Corruption("chunk frame header truncated");
    p->nstreams = info->nstreams;
    uint64_t lens[kMaxStreams];
    uint64_t sum = 0;
    for (int j = 0; j < p->nstreams; j++) {
      uint8_t c;
      if (!r.GetU8(&c) || !r.GetVarint(&lens[j]))
        return Status::Corruption("chunk frame header truncated");
      if (c > uint8_t(Coder::kBitsTail))
        return Status::Corruption("chunk frame has unknown coder " + std::to_string(c));
      p->coders[j] = Coder(c);
      sum += lens[j];
      if (lens[j] > frame.size() || sum > frame.size())
        return Status::Corruption("chunk frame stream lengths exceed the frame");
    }
    if (sum != r.remaining())
      return Status::Corruption("chunk frame stream lengths do not add up to its size");
    for (int j = 0; j < p->nstreams; j++) r.GetBytes(size_t(lens[j]), &p->payloads[j]);
  }
  if (p->raw_len % uint64_t(p->info.width))
    return Status::Corruption("chunk frame raw length is not a whole number of elements");
  return CheckCarryPair(*p);
}

}  // namespace

Result<FrameInfo> InspectFrame(std::string_view frame, std::optional<uint64_t> raw_len) {
  ParsedFrame p;
  PSTORE_RETURN_IF_ERROR(ParseFrame(frame, &p, raw_len));
  if (raw_len && p.raw_len != *raw_len)
    return Status::Corruption("chunk frame holds " + std::to_string(p.raw_len) +
                              " bytes where " + std::to_string(*raw_len) + " were expected");
  FrameInfo fi;
  fi.version = p.version;
  fi.window_bias = HasWindowBias(p.transform) ? p.bias : 0;
  fi.transform = p.transform;
  fi.raw_len = p.raw_len;
  for (int j = 0; j < p.nstreams; j++) {
    fi.coders.push_back(p.coders[j]);
    fi.stream_bytes.push_back(p.payloads[j].size());
  }
  return fi;
}

namespace {

// The context of each symbol of a ctx-coded stream: the exponent group, in
// [0, k), of the same element in its source stream.
void ExponentContexts(Transform t, int base, int k, const uint8_t* src, size_t m,
                      std::vector<uint8_t>* ctx) {
  uint8_t lut[256];
  ExponentGroups(t, base, k, lut);
  ctx->resize(m);
  for (size_t i = 0; i < m; i++) (*ctx)[i] = lut[src[i]];
}

}  // namespace

struct ChunkDecoder::Impl {
  ZSTD_DCtx* zd = ZSTD_createDCtx();
  std::vector<uint8_t> streams[kMaxStreams];
  std::vector<uint8_t> ctx;
  std::vector<uint32_t> dtab;
  // The final states of the last rans2-carry stream, for its bits-tail.
  uint32_t carry[1 << kMaxLanesLog2];
  int carry_lanes_log2 = -1;
  ~Impl() { ZSTD_freeDCtx(zd); }

  Status DecodeStream(const ParsedFrame& p, int j, std::string_view in, size_t m, uint8_t* dst,
                      const uint8_t* const* decoded) {
    const auto* src = reinterpret_cast<const uint8_t*>(in.data());
    switch (p.coders[j]) {
      case Coder::kRaw:
        if (in.size() != m) return Status::Corruption("raw stream has the wrong length");
        if (m) std::memcpy(dst, src, m);
        return Status::OK();
      case Coder::kConst:
        if (in.size() != 1) return Status::Corruption("const stream has the wrong length");
        if (m) std::memset(dst, src[0], m);
        return Status::OK();
      case Coder::kLz4: {
        if (m > size_t(LZ4_MAX_INPUT_SIZE) || in.size() > size_t(INT32_MAX))
          return Status::Corruption("lz4 stream too large");
        int r = LZ4_decompress_safe(in.data(), reinterpret_cast<char*>(dst), int(in.size()),
                                    int(m));
        if (r < 0 || size_t(r) != m) return Status::Corruption("lz4 stream does not decode");
        return Status::OK();
      }
      case Coder::kZstd: {
        size_t r = ZSTD_decompressDCtx(zd, dst, m, src, in.size());
        if (ZSTD_isError(r) || r != m)
          return Status::Corruption(std::string("zstd stream does not decode: ") +
                                    (ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong length"));
        return Status::OK();
      }
      case Coder::kRans: {
        Reader r(src, in.size());
        rans::Table t;
        if (!rans::ReadTable(&r, &t) || t.nsym == 0)
          return Status::Corruption("rANS stream has a bad table");
        return rans::DecodeBody(&r, nullptr, m, &t, 1, dst, &dtab);
      }
      case Coder::kRans2:
        return rans2::DecodeOrder0(in, m, dst, &dtab);
      case Coder::kRans2Carry:
        carry_lanes_log2 = -1;
        return rans2::DecodeOrder0(in, m, dst, &dtab, nullptr, nullptr, carry, &carry_lanes_log2,
                                   true);
      case Coder::kBitsTail: {
        // ParseFrame put the rans2-carry stream just before; decoding stops at
        // its first error, so its states are this frame's.
        if (carry_lanes_log2 < 0) return Status::Corruption("bits-tail stream without carry");
        const int k = CarryWidth(p.transform);
        const size_t lanes = size_t(1) << carry_lanes_log2;
        const int per = CarryPerLane(k);
        if (k == 0 || lanes * size_t(per) > m)
          return Status::Corruption("bits-tail stream is too short");
        const size_t rest = m - lanes * size_t(per);
        if (in.size() != PackedBytes(rest, k))
          return Status::Corruption("bits-tail stream has the wrong length");
        UnpackBits(src, rest, k, dst);
        const uint32_t kmask = (1u << k) - 1;
        for (size_t l = 0; l < lanes; l++) {
          // DecodeBody keeps states in [2^15, 2^31).
          const uint32_t v = carry[l] - rans2::kStateLow;
          if (v >> (per * k)) return Status::Corruption("rans2-carry stream: final state mismatch");
          for (int q = 0; q < per; q++) dst[rest + l * per + q] = uint8_t((v >> (q * k)) & kmask);
        }
        carry_lanes_log2 = -1;
        return Status::OK();
      }
      case Coder::kRans2Ctx: {
        int source = p.info.ctx_source[j];
        if (source < 0 || p.version == kFrameVersion1)
          return Status::Corruption("rANS-ctx stream where the transform has no context");
        Reader r(src, in.size());
        uint8_t k, base, hdr;
        if (!r.GetU8(&k) || !r.GetU8(&base) || !r.GetU8(&hdr) || k < 1 ||
            k > rans2::kMaxContexts)
          return Status::Corruption("rANS-ctx stream has a bad header");
        const int prob_bits = hdr >> 3, lanes_log2 = hdr & 7;
        if (prob_bits < 1 || prob_bits > rans2::kMaxProbBits)
          return Status::Corruption("rANS-ctx stream has a bad precision");
        rans2::Table tables[rans2::kMaxContexts];
        if (!rans2::ReadTables(&r, prob_bits, tables, k))
          return Status::Corruption("rANS-ctx stream has a bad table");
        ExponentContexts(p.transform, base, k, decoded[source], m, &ctx);
        return rans2::DecodeBody(&r, ctx.data(), m, tables, k, prob_bits, lanes_log2, dst, &dtab);
      }
      case Coder::kBits: {
        if (in.empty()) return Status::Corruption("bits stream is empty");
        const int k = src[0];
        if (k < 1 || k > 8 || in.size() != 1 + PackedBytes(m, k))
          return Status::Corruption("bits stream has the wrong length");
        UnpackBits(src + 1, m, k, dst);
        return Status::OK();
      }
      case Coder::kRansCtx: {
        int source = p.info.ctx_source[j];
        if (source < 0 || p.version == kFrameVersion1)
          return Status::Corruption("rANS-ctx stream where the transform has no context");
        Reader r(src, in.size());
        uint8_t k, base;
        if (!r.GetU8(&k) || !r.GetU8(&base) || k < 1 || k > rans::kMaxContexts)
          return Status::Corruption("rANS-ctx stream has a bad header");
        rans::Table tables[rans::kMaxContexts];
        for (int c = 0; c < k; c++)
          if (!rans::ReadTable(&r, &tables[c]))
            return Status::Corruption("rANS-ctx stream has a bad table");
        ExponentContexts(p.transform, base, k, decoded[source], m, &ctx);
        return rans::DecodeBody(&r, ctx.data(), m, tables, k, dst, &dtab);
      }
    }
    return Status::Corruption("unknown coder");
  }

  Status Decode(std::string_view frame, std::span<uint8_t> out) {
    ParsedFrame p;
    PSTORE_RETURN_IF_ERROR(ParseFrame(frame, &p, out.size()));
    if (p.raw_len != out.size())
      return Status::Corruption("chunk frame holds " + std::to_string(p.raw_len) +
                                " bytes where " + std::to_string(out.size()) + " were expected");
    const size_t n = out.size();
    const int width = p.info.width;
    const size_t m = n / size_t(width);
    if (p.version == kFrameVersion1) {
      // One coder over the streams laid end to end.
      uint8_t* joined = out.data();
      if (p.transform != Transform::kNone) {
        streams[0].resize(n);
        joined = streams[0].data();
      }
      const uint8_t* none[1] = {nullptr};
      PSTORE_RETURN_IF_ERROR(DecodeStream(p, 0, p.payloads[0], n, joined, none));
      if (p.transform != Transform::kNone) {
        const uint8_t* s[kMaxStreams];
        for (int j = 0; j < p.info.nstreams; j++) s[j] = joined + size_t(j) * m;
        MergeStreams(p.transform, s, n, out.data());
      }
      return Status::OK();
    }
    if (p.transform == Transform::kNone) {
      const uint8_t* none[1] = {nullptr};
      return DecodeStream(p, 0, p.payloads[0], n, out.data(), none);
    }
    if (p.transform == Transform::kF16 && p.coders[0] == Coder::kRans2 &&
        p.coders[1] == Coder::kRaw) {
      // The fast profile's F16 frame: decode the high bytes straight into
      // place beside the low bytes, read from the frame.
      if (p.payloads[1].size() != m) return Status::Corruption("raw stream has the wrong length");
      return rans2::DecodeOrder0(p.payloads[0], m, out.data(), &dtab,
                                 reinterpret_cast<const uint8_t*>(p.payloads[1].data()),
                                 &streams[0]);
    }
    const uint8_t* s[kMaxStreams];
    for (int j = 0; j < p.nstreams; j++) {
      if (p.coders[j] == Coder::kRaw) {
        // Merge straight from the frame: no copy.
        if (p.payloads[j].size() != m) return Status::Corruption("raw stream has the wrong length");
        s[j] = reinterpret_cast<const uint8_t*>(p.payloads[j].data());
        continue;
      }
      streams[j].resize(m);
      PSTORE_RETURN_IF_ERROR(DecodeStream(p, j, p.payloads[j], m, streams[j].data(), s));
      s[j] = streams[j].data();
    }
    MergeStreams(p.transform, s, n, out.data(), p.bias);
    return Status::OK();
  }
};

ChunkDecoder::ChunkDecoder() : impl_(new Impl) {}
ChunkDecoder::~ChunkDecoder() = default;

void ChunkDecoder::ReleaseMemory() {
  for (auto& v : impl_->streams) std::vector<uint8_t>().swap(v);
  std::vector<uint8_t>().swap(impl_->ctx);
  std::vector<uint32_t>().swap(impl_->dtab);
}

Status ChunkDecoder::DecodeUnchecked(std::string_view frame, std::span<uint8_t> out) {
  return impl_->Decode(frame, out);
}

Status ChunkDecoder::Decode(std::string_view frame, const ChunkKey& key, std::span<uint8_t> out) {
  PSTORE_RETURN_IF_ERROR(impl_->Decode(frame, out));
  if (HashBytes(out.data(), out.size()) != key)
    return Status::Corruption("chunk " + key.Hex() + " decodes to bytes whose hash is not its key");
  return Status::OK();
}

}  // namespace pstore
