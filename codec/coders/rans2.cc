// Coder rans2 (6): order-0 rANS of the second format (codec/rans2.h), coded
// from the plan the profile made for the stream.
#include "codec/coders/registry.h"

namespace pstore {
namespace {

class Rans2Coder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kRans2; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch* scratch) const override {
    rans2::DecodeArgs d;
    d.simd_level = a.options.simd_level;
    return rans2::DecodeOrder0(in, m, dst, &scratch->dtab, d);
  }
  // a.plan: the stream's plan (rans2::PlanOrder0).
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch* scratch,
                 std::string* out) const override {
    if (!a.plan || m == 0) return false;
    rans2::EncodeArgs e;
    e.scratch = &scratch->rans;
    e.simd_level = a.simd_level;
    rans2::EncodeOrder0(s, m, *a.plan, out, e);
    return true;
  }
};

}  // namespace

const StreamCoder* Rans2StreamCoder() {
  static const Rans2Coder c;
  return &c;
}

}  // namespace pstore
