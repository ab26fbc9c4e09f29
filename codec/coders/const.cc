// Coder const (1): every byte of the stream the same; the payload is that byte.
#include <cstring>

#include "codec/coders/registry.h"

namespace pstore {
namespace {

class ConstCoder final : public StreamCoder {
 public:
  Coder id() const override { return Coder::kConst; }
  ImpliedLength implied() const override { return ImpliedLength::kOneByte; }
  Status Decode(std::string_view in, size_t m, uint8_t* dst, const StreamDecodeArgs&,
                CoderDecodeScratch*) const override {
    if (in.size() != 1) return Status::Corruption("const stream has the wrong length");
    if (m) std::memset(dst, in[0], m);
    return Status::OK();
  }
  bool TryEncode(const uint8_t* s, size_t m, const StreamEncodeArgs&, CoderEncodeScratch*,
                 std::string* out) const override {
    if (m == 0) return false;
    for (size_t i = 1; i < m; i++)
      if (s[i] != s[0]) return false;
    out->assign(1, char(s[0]));
    return true;
  }
};

}  // namespace

const StreamCoder* ConstStreamCoder() {
  static const ConstCoder c;
  return &c;
}

}  // namespace pstore
