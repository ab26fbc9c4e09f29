// Coder rans-ctx (5), read only: first-format rANS (codec/legacy/rans.h) with
// one table per exponent group of the stream's context source. The payload is
// [u8 k][u8 base][k tables][lanes][states][words].
#include "codec/coders/exponent_groups.h"
#include "codec/coders/registry.h"
#include "codec/legacy/rans.h"

namespace pstore {
namespace {

class RansCtxCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRansCtx; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch* scratch) const override {
    Reader r(in);
    int source = -1;
    uint8_t k = 0, base = 0;
    PSTORE_RETURN_IF_ERROR(ReadContextHeader(&r, a, rans::kMaxContexts, &source, &k, &base));
    rans::Table tables[rans::kMaxContexts];
    for (int c = 0; c < k; c++)
      if (!rans::ReadTable(&r, &tables[c]))
        return Status::Corruption("rANS-ctx stream has a bad table");
    ExponentContexts(a.transform, base, k, a.decoded[source], m, &scratch->ctx);
    return rans::DecodeBody(&r, scratch->ctx.data(), m, tables, k, dst, &scratch->dtab);
  }
  bool TryEncode(const uint8_t*, size_t, const StreamEncodeArgs&, CoderEncodeScratch*,
                 std::string*) const override {
    return false;  // no longer written
  }
};

}  // namespace

const StreamCoder* RansCtxStreamCoder() {
  static const RansCtxCoder c;
  return &c;
}

}  // namespace pstore
