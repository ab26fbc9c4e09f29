// Coder rans2-ctx (7): rANS of the second format with one table per exponent
// group of the stream's context source (codec/coders/exponent_groups.h). The
// payload is [u8 k][u8 base][u8 P<<3 | L][k tables][states][words].
#include <algorithm>

#include "codec/coders/exponent_groups.h"
#include "codec/coders/registry.h"

namespace pstore {
namespace {

class Rans2CtxCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRans2Ctx; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch* scratch) const override {
    Reader r(in);
    int source = -1;
    uint8_t k = 0, base = 0, hdr = 0;
    PSTORE_RETURN_IF_ERROR(ReadContextHeader(&r, a, rans2::kMaxContexts, &source, &k, &base));
    if (!r.GetU8(&hdr)) return Status::Corruption("rANS-ctx stream has a bad header");
    const int prob_bits = hdr >> 3, lanes_log2 = hdr & 7;
    if (prob_bits < 1 || prob_bits > rans2::kMaxProbBits)
      return Status::Corruption("rANS-ctx stream has a bad precision");
    rans2::Table tables[rans2::kMaxContexts];
    if (!rans2::ReadTables(&r, prob_bits, tables, k))
      return Status::Corruption("rANS-ctx stream has a bad table");
    ExponentContexts(a.transform, base, k, a.decoded[source], m, &scratch->ctx);
    rans2::DecodeArgs d;
    d.simd_level = a.options.simd_level;
    return rans2::DecodeBody(&r, scratch->ctx.data(), m, tables, k, prob_bits, lanes_log2, dst,
                             &scratch->dtab, d);
  }
  // a.ctx_source, a.ctx_groups (k) and a.ctx_base: the window the profile chose.
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch* scratch,
                 std::string* out) const override {
    const int k = a.ctx_groups, base = a.ctx_base;
    if (!a.ctx_source || m == 0 || k < 1 || k > rans2::kMaxContexts) return false;
    uint8_t lut[256];
    ExponentGroups(a.transform, base, k, lut);
    std::vector<uint8_t>& ctx = scratch->ctx;
    ctx.resize(m);
    uint32_t hist[rans2::kMaxContexts][256] = {};
    for (size_t i = 0; i < m; i++) {
      ctx[i] = lut[a.ctx_source[i]];
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
      if (used)
        rans2::Choose(hist[c], p, &tables[c]);
      else
        rans2::Clear(&tables[c]);
    }
    rans2::WriteTables(out, tables, k);
    rans2::EncodeArgs e;
    e.scratch = &scratch->rans;
    e.simd_level = a.simd_level;
    rans2::EncodeBody(s, ctx.data(), m, tables, p, l, out, e);
    return true;
  }
};

}  // namespace

const StreamCoder* Rans2CtxStreamCoder() {
  static const Rans2CtxCoder c;
  return &c;
}

}  // namespace pstore
