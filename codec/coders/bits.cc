// Coder bits (8): values below 2^k, k bits each, after a byte holding k.
#include "codec/bitpack.h"
#include "codec/coders/registry.h"

namespace pstore {
namespace {

class BitsCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kBits; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs& a,
                CoderDecodeScratch*) const override {
    if (in.empty()) return Status::Corruption("bits stream is empty");
    const auto* src = reinterpret_cast<const uint8_t*>(in.data());
    const int k = src[0];
    if (k < 1 || k > 8 || in.size() != 1 + PackedBytes(m, k))
      return Status::Corruption("bits stream has the wrong length");
    UnpackBits(src + 1, m, k, dst, a.options.simd_level == 0);
    return Status::OK();
  }
  // a.bits: k, which every value must fit.
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs& a, CoderEncodeScratch*,
                 std::string* out) const override {
    const int k = a.bits;
    if (k < 1 || k > 8) return false;
    out->assign(1 + PackedBytes(m, k), '\0');
    (*out)[0] = char(k);
    PackBits(s, m, k, reinterpret_cast<uint8_t*>(out->data() + 1), a.simd_level == 0);
    return true;
  }
};

}  // namespace

const StreamCoder* BitsStreamCoder() {
  static const BitsCoder c;
  return &c;
}

}  // namespace pstore
