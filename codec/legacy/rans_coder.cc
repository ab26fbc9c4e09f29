// Coder rans (4), read only: order-0 rANS of the first format
// (codec/legacy/rans.h). Frames written before format-2 rANS still use it.
#include "codec/coders/registry.h"
#include "codec/legacy/rans.h"

namespace pstore {
namespace {

class RansCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRans; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs&,
                CoderDecodeScratch* scratch) const override {
    Reader r(in);
    rans::Table t;
    if (!rans::ReadTable(&r, &t) || t.nsym == 0)
      return Status::Corruption("rANS stream has a bad table");
    return rans::DecodeBody(&r, nullptr, m, &t, 1, dst, &scratch->dtab);
  }
  bool TryEncode(const uint8_t*, size_t, const StreamEncodeArgs&, CoderEncodeScratch*,
                 std::string*) const override {
    return false;  // no longer written
  }
};

}  // namespace

const StreamCoder* RansStreamCoder() {
  static const RansCoder c;
  return &c;
}

}  // namespace pstore
